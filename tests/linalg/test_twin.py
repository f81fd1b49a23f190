"""The cheap twin of a clustered top (issue 26's time limit): one Krylov vector first, then its twin as the
block's second row — the quarter-period shift of a complex top wave, a random row where a real wave's
symbol has tied top channels, the given second row of a warm block.

Oracles: numpy's SVD of the dense 'same' convolution (every singular value and vector) at up to 16×16,
numpy's SVD of the symbol K̂(ω) built from the kernel taps, numpy's eigh of small symmetric matrices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sninspect.dialects import conv_operator
from sninspect.linalg import conv_same
from sninspect.linalg.conv_same import conv_same_operator_norm
from sninspect.linalg.exact import DEGENERATE_GAP
from sninspect.linalg.lanczos import top_block_bracket


def _dense(weight: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """All singular values (descending) and right singular vectors (rows) of the 'same' conv at ``size``."""
    c_in = weight.shape[1]
    dim = c_in * size[0] * size[1]
    basis = torch.eye(dim, dtype=torch.float64).reshape(dim, c_in, *size)
    jac = F.conv2d(basis, weight, padding="same").reshape(dim, -1).T  # column j = A e_j
    _, singular, vh = np.linalg.svd(jac.numpy())
    return singular, vh


def _random(channels: int, seed: int) -> Tensor:
    return torch.randn(channels, channels, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _tied_channels(split: float) -> Tensor:
    """Two channels with the same positive stencil (a real wave, ω* = 0), the second scaled by 1 − split."""
    stencil = torch.tensor([[0.0, 0.1, 0.0], [0.1, 1.0, 0.1], [0.0, 0.1, 0.0]], dtype=torch.float64)
    weight = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    weight[0, 0], weight[1, 1] = stencil, stencil * (1.0 - split)
    return weight


def _symbol_values(weight: Tensor, freqs: tuple[float, float]) -> np.ndarray:
    """Singular values of K̂(ω) = Σ W[:, :, a, b]·e^{−i(ω₁a + ω₂b)}, summed tap by tap in numpy."""
    w = weight.numpy()
    symbol = sum(w[:, :, a, b] * np.exp(-1j * (freqs[0] * a + freqs[1] * b))
                 for a in range(w.shape[2]) for b in range(w.shape[3]))
    return np.linalg.svd(symbol, compute_uv=False)


@pytest.mark.parametrize(("channels", "seed", "size"), [(1, 0, (16, 16)), (2, 6, (16, 16)), (2, 4, (12, 12))])
def test_partner_of_a_complex_wave_lies_in_the_dense_top_pair(channels: int, seed: int, size: tuple[int, int]) -> None:
    """The quarter-period shift of the dense top vector has most of its norm in the span of the dense top
    two right singular vectors (the frequency twin), and is ⟂ to the top vector itself."""
    weight = _random(channels, seed)
    singular, vh = _dense(weight, size)
    assert 1.0 - singular[1] / singular[0] < 1e-3  # a near pair: what the twin is for
    partner = conv_same._Partner((1, channels, *size))
    top = torch.from_numpy(vh[0].copy())
    twin = partner(top)
    assert twin is not None and partner.freqs is not None
    twin = twin.numpy() / np.linalg.norm(twin.numpy())
    pair = vh[:2]
    inside = np.linalg.norm(pair @ twin)
    assert inside > 0.9  # the shift of x is (mostly) its twin, not x and not the rest of the spectrum
    assert abs(vh[0] @ twin) < 0.2


def test_real_wave_has_no_partner_and_tied_channels_are_found() -> None:
    """A positive stencil peaks at ω = 0: no ± twin (``None``); the symbol there has two tied channels,
    which _channel_twin sees as the dense symbol's SVD does; an untied kernel is not flagged."""
    tied = _tied_channels(1e-8)
    _, vh = _dense(tied, (10, 10))
    partner = conv_same._Partner((1, 2, 10, 10))
    assert partner(torch.from_numpy(vh[0].copy())) is None
    assert partner.freqs is not None and all(f == 0.0 for f in partner.freqs)
    values = _symbol_values(tied, (0.0, 0.0))
    assert values[1] / values[0] > 1 - conv_same._CHANNEL_TWIN
    assert conv_same._channel_twin(tied, partner.freqs)
    untied = tied.clone()
    untied[1, 1] *= 0.5
    assert _symbol_values(untied, (0.0, 0.0))[1] / _symbol_values(untied, (0.0, 0.0))[0] < 0.6
    assert not conv_same._channel_twin(untied, [0.0, 0.0])


@pytest.mark.parametrize("split", [1e-8, 1e-5])
def test_tied_channels_from_a_random_start_reach_sigma1_and_the_gap(split: float) -> None:
    """The random-row fallback: two tied channels (a twin no shift can give) — σ1 and σ2/σ1 as the
    dense spectrum has them, `degenerate` on the right side of 1 − 1e-6."""
    weight = _tied_channels(split)
    singular, _ = _dense(weight, (10, 10))
    norm = conv_same_operator_norm(weight, (10, 10))
    assert norm.lower <= singular[0] * (1 + 1e-12) <= norm.upper
    assert norm.lower == pytest.approx(singular[0], rel=2e-8)
    assert norm.gap is not None and 0.0 <= singular[1] / singular[0] - norm.gap <= 2e-4
    assert norm.degenerate == (1.0 - singular[1] / singular[0] < DEGENERATE_GAP)


@pytest.mark.parametrize(("channels", "seed", "size"), [(2, 4, (12, 12)), (2, 5, (16, 16)), (4, 7, (12, 12))])
def test_warm_block_without_gap_reaches_sigma1(channels: int, seed: int, size: tuple[int, int]) -> None:
    """The σ_eff path: a warm block from a nearby kernel's result (rows: its top two Ritz vectors) and no
    gap decision (one float64 product where the top vector meets the tolerance) — still σ1 to 2e-8, not
    the second value of the near pair."""
    weight = _random(channels, seed)
    exact = conv_same_operator_norm(weight, size)
    assert exact.block is not None and exact.block.shape[0] >= 2
    nearby = weight * (1.0 + 1e-3 * _random(channels, seed + 100))  # an optimizer-sized step
    singular, _ = _dense(nearby, size)
    norm = conv_same_operator_norm(nearby, size, u0=exact.block[:2], certify_gap=False)
    assert norm.converged and norm.gap is None
    assert norm.lower <= singular[0] * (1 + 1e-12) <= norm.upper
    assert norm.lower == pytest.approx(singular[0], rel=2e-8)


def test_block_grows_by_the_given_twin_and_skips_early_gram_schmidt() -> None:
    """top_block_bracket on a symmetric matrix with a tied top (λ1 − λ2 = 1e-9): one vector, then the
    twin returned by ``partner`` joins; the top Ritz value is λ1 (numpy eigh) to 1e-12 and the second λ2,
    though the float32-style early steps skip the Gram–Schmidt pass (here float64: every pass runs, and
    float32 gives the same λ1 to its rounding)."""
    gen = torch.Generator().manual_seed(11)
    dim = 300
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    spectrum = torch.linspace(0.0, 0.9, dim, dtype=torch.float64)
    spectrum[-1], spectrum[-2] = 1.0, 1.0 - 1e-9
    matrix = (q * spectrum) @ q.T
    truth = np.linalg.eigh(matrix.numpy())[0][::-1]
    twin_direction = q[:, -2].clone()  # the twin a single vector cannot hold
    calls: list[int] = []

    def twin(x: Tensor) -> Tensor:
        calls.append(1)
        return (twin_direction + 1e-3 * torch.randn(dim, generator=gen, dtype=torch.float64)).to(x)

    start = q[:, -1] * 1e-6 + q[:, -2] + 1e-2 * torch.randn(dim, generator=gen, dtype=torch.float64)  # on λ2
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        calls.clear()
        m = matrix.to(dtype)
        found = top_block_bracket(lambda rows, m=m: rows @ m, start.to(dtype)[None], rtol=1e-7,
                                  max_products=2000, block=1, pairs=2, loose=10.0, partner=twin)
        assert calls == [1]
        assert found.values[0] == pytest.approx(truth[0], abs=tol)
        assert found.values[1] == pytest.approx(truth[1], abs=tol)
        assert found.values[0] <= truth[0] + 64 * torch.finfo(dtype).eps  # a Rayleigh quotient: ≤ λ1


def test_stored_side_is_remembered_until_the_tensors_change() -> None:
    """The side of a square layer's u, asked three times per report, is computed once per unchanged (W, u)
    and again after an in-place change; the answer is stored_side's."""
    weight = _random(3, 1)
    forward_u = F.conv2d(torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
                         weight, padding=1)  # an output-side map
    u = forward_u.clone()
    for _ in range(20):  # converge u on the output side: u = n(A Aᵀ u)
        u = F.conv2d(F.conv_transpose2d(u, weight, padding=1), weight, padding=1)
        u = u / u.norm()
    expected = conv_operator.stored_side(weight, u)
    conv_operator._SIDES.clear()
    first = conv_operator._side_of(weight, u, weight, u)
    second = conv_operator._side_of(weight, u, weight, u)
    assert first == second == expected and first[0] == "output" and len(conv_operator._SIDES) == 1
    u.copy_(torch.randn(u.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    again = conv_operator._side_of(weight, u, weight, u)
    assert again == conv_operator.stored_side(weight, u) and len(conv_operator._SIDES) == 2
    assert math.isfinite(float(u.norm()))
