"""Clustered tops of 'same' convolutions (issue 26): the lower end reaches σ1, not σ2; σ2/σ1 and
`degenerate` are decided from the block's Ritz pairs or unknown; the printed digits hold.

Oracles: the dense Jacobian of PyTorch's padding='same' conv (torch.autograd) and numpy's SVD (every
singular value) at up to 16×16, and ARPACK (scipy) for the 40×40, 64-channel RealSN layout.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import sninspect
from sninspect.audit.checks import check, gap_cos_error
from sninspect.linalg import conv_same
from sninspect.linalg.conv_same import conv_same_operator_norm
from sninspect.linalg.exact import DEGENERATE_GAP
from sninspect.linalg.lanczos import ClusterBracket
from sninspect.render.markdown import reports_markdown
from sninspect.render.numbers import fmt_sized
from sninspect.results.check import Rules


def dense_singular(weight: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """All singular values (descending) and the right singular vectors (rows) of the 'same' conv."""
    c_in = weight.shape[1]
    dim = c_in * size[0] * size[1]
    basis = torch.eye(dim, dtype=torch.float64).reshape(dim, c_in, *size)  # the conv of each basis vector
    jac = F.conv2d(basis, weight, padding="same").reshape(dim, -1).T  # (out, in): column j = A e_j
    _, singular, vh = np.linalg.svd(jac.numpy())
    return singular, vh


def _random(channels: int, seed: int) -> Tensor:
    return torch.randn(channels, channels, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _near_orthogonal(channels: int, seed: int) -> Tensor:
    """Centre tap a random orthogonal matrix, the rest 1e-3: every singular value ≈ 1."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=gen, dtype=torch.float64))
    weight = 1e-3 * torch.randn(channels, channels, 3, 3, generator=gen, dtype=torch.float64)
    weight[:, :, 1, 1] = q
    return weight


def _split_pair(split: float) -> Tensor:
    """Two channels, each the same positive 3×3 stencil, the second scaled by 1 − split: the operator is
    block diagonal, so σ2/σ1 = 1 − split exactly (the stencil's own second value is far below)."""
    stencil = torch.tensor([[0.0, 0.1, 0.0], [0.1, 1.0, 0.1], [0.0, 0.1, 0.0]], dtype=torch.float64)
    weight = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    weight[0, 0] = stencil
    weight[1, 1] = stencil * (1.0 - split)
    return weight


# (kernel, size): random kernels whose top pair is split by 4e-6 … 1e-4 (a single Krylov vector stopped
# up to 1e-4 low on them), a near-orthogonal one, and a pair split by exactly 1e-8.
CASES = {
    "pair_1e-4": (lambda: _random(1, 0), (16, 16)),
    "pair_5e-6": (lambda: _random(2, 4), (12, 12)),
    "pair_4e-6": (lambda: _random(2, 5), (16, 16)),
    "pair_1e-5": (lambda: _random(4, 7), (12, 12)),
    "near_orthogonal": (lambda: _near_orthogonal(8, 3), (8, 8)),
    "split_1e-8": (lambda: _split_pair(1e-8), (10, 10)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("start", ["random", "second_vector"])
def test_lower_end_reaches_sigma1_and_gap_matches_dense(case: str, start: str) -> None:
    make, size = CASES[case]
    weight = make()
    singular, vh = dense_singular(weight, size)
    u0 = None if start == "random" else torch.from_numpy(vh[1].copy()).reshape(1, weight.shape[1], *size)
    norm = conv_same_operator_norm(weight, size, u0=u0)
    s1, s2 = singular[0], singular[1]
    assert norm.converged
    assert norm.lower <= s1 * (1 + 1e-12) <= norm.upper * (1 + 1e-12)
    # σ1, not σ2 (they differ by up to 1e-4 here): the lower end within 2e-8 of the dense σ1 (1.3e-8 on
    # the near-orthogonal kernel, whose every value is ≈ 1), or within a degenerate pair's own split.
    assert norm.lower == pytest.approx(s1, rel=max(2e-8, 2.0 * (1.0 - singular[1] / s1)))
    truth_gap = s2 / s1
    assert norm.gap is not None
    assert norm.gap <= truth_gap * (1 + 1e-12)  # the lower end of its interval, within its width
    assert truth_gap - norm.gap <= 2e-4
    assert norm.degenerate == (1.0 - truth_gap < DEGENERATE_GAP)


def test_split_pair_is_degenerate_and_separated_pair_is_not() -> None:
    tight = conv_same_operator_norm(_split_pair(1e-8), (10, 10))
    assert tight.degenerate and tight.gap is not None and 1.0 - tight.gap < DEGENERATE_GAP
    assert tight.cluster >= 2
    loose = conv_same_operator_norm(_split_pair(1e-4), (10, 10))
    assert not loose.degenerate and loose.gap == pytest.approx(1.0 - 1e-4, abs=2e-5)


def _bracket(values: tuple[float, ...], residuals: tuple[float, ...], pair: float) -> ClusterBracket:
    return ClusterBracket(values, residuals, pair, torch.zeros(len(values), 4), 10, True, 2)


def test_gap_interval_decides_or_says_unknown() -> None:
    """The decision rule itself: the interval [√(θ2/(θ1+ε)), √((θ2+ε)/θ1)] against 1 − 1e-6."""
    # Well separated: decided, not degenerate, the lower end given.
    gap, degenerate = conv_same._certified_gap(_bracket((1.0, 0.9), (1e-5, 1e-5), 1e-5))
    assert not degenerate and gap == pytest.approx(math.sqrt(0.9 / (1 + 1e-5)), rel=1e-12)
    # θ2 = θ1 with a residual far below the line: degenerate.
    gap, degenerate = conv_same._certified_gap(_bracket((1.0, 1.0), (1e-9, 1e-9), 1e-9))
    assert degenerate and gap is not None and gap >= 1 - DEGENERATE_GAP
    # The same pair with a residual of 1e-5 and no third pair: unknown.
    assert conv_same._certified_gap(_bracket((1.0, 1.0 - 1e-6), (1e-5, 1e-5), 1e-5)) == (None, False)
    # A third pair far below tightens ε to ‖R‖²/η: decided.
    gap, degenerate = conv_same._certified_gap(_bracket((1.0, 1.0 - 1e-7, 0.9), (1e-5, 1e-5, 1e-5), 1e-5))
    assert degenerate
    # One Ritz value: nothing to say.
    assert conv_same._certified_gap(_bracket((1.0,), (0.0,), 0.0)) == (None, False)


def test_fmt_sized_shows_only_digits_both_ends_share() -> None:
    assert fmt_sized(1.0122473, 1e-12) == "1.01225"
    assert fmt_sized(1.0122473, 1.7e-3) == "1.01"  # [1.01225, 1.01397]: 1.012 vs 1.014, 1.01 alike
    assert fmt_sized(1.01154, 3e-4) == "1.012"  # [1.01154, 1.01184]
    assert fmt_sized(1.0, 1e-7) == "1.00000"  # trailing zeros are digits
    assert fmt_sized(1.4999, 2e-4) == "1.500"  # [1.4999, 1.50020]: both round to 1.500
    assert fmt_sized(1.4, 0.15) == "[1.4, 1.61]"  # 1 vs 2: no digit shared, the bracket
    assert fmt_sized(None, 1e-3) == "-" and fmt_sized(2.5, None) == "2.5"
    for value, width in ((7.92359123, 4e-5), (12.669812, 3e-4), (0.99999, 1e-3), (3.1e-4, 1e-2)):
        shown = fmt_sized(value, width)
        if not shown.startswith("["):
            digits = len(re.sub(r"e.*|[^0-9]", "", shown).lstrip("0")) or 1
            for inside in np.linspace(value, value * (1 + width), 7):
                assert float(shown) == pytest.approx(float(f"{inside:.{digits}g}"), rel=1e-12)


def _realsn_state(channels: list[int], size: int, seed: int) -> dict[str, Tensor]:
    """A RealSN (conv-operator) state: weight_orig, the eval buffer W/σ (σ from 40 power steps on the
    operator), u (1, C_in, size, size) on the input side, the way benchmarks/bench_report.py builds it."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for i, (a, b) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        key = f"dncnn.{2 * i}.weight"
        w = torch.randn(b, a, 3, 3, generator=gen, dtype=torch.float64) * (2 / (9 * a)) ** 0.5
        u = torch.randn(1, a, size, size, generator=gen, dtype=torch.float64)
        for _ in range(40):
            u = F.conv_transpose2d(F.conv2d(u, w, padding=1), w, padding=1)
            u = u / u.norm()
        sigma = float(F.conv2d(u, w, padding=1).norm())
        state[key + "_orig"] = w
        state[key] = w / sigma
        state[key + "_u"] = u
    return state


def test_realsn_layout_printed_digits_gap_and_check(tmp_path: Path) -> None:
    """A small RealSN layout (u at 12×12, 1 → 3 → 3 → 1 channels): every σ exact and σ_eff printed in the
    Markdown table is the dense truth rounded to the digits shown; gap and degenerate follow the dense
    spectrum; clustered layers carry one note and pass the default check."""
    state = _realsn_state([1, 3, 3, 1], 12, seed=1)
    torch.save(state, tmp_path / "realsn.pt")
    report = sninspect.analyze(tmp_path / "realsn.pt", device="cpu")
    table = reports_markdown([report])
    for layer in report.layers:
        key = layer.name
        exact = dense_singular(state[key + "_orig"], (12, 12))[0]
        effective = dense_singular(state[key], (12, 12))[0]
        assert layer.bracket_width is not None
        row = next(line for line in table.splitlines() if line.startswith(f"| {key} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        for shown, truth in ((cells[4], exact[0]), (cells[7], effective[0])):
            digits = len(re.sub(r"[^0-9]", "", shown).lstrip("0"))
            assert shown == f"{truth:#.{digits}g}".rstrip("."), (key, shown, truth)
        assert layer.sigma_exact == pytest.approx(exact[0], rel=2e-9)
        assert layer.sigma_effective == pytest.approx(effective[0], rel=2e-9)
        truth_gap = exact[1] / exact[0]
        assert layer.spectral_gap is not None and 0.0 <= truth_gap - layer.spectral_gap <= 2e-4
        assert layer.degenerate == (1.0 - truth_gap < DEGENERATE_GAP)
    verdict = check(report, Rules())
    assert not [v for v in verdict.violations if v.quantity and "cos" in v.quantity], verdict.violations


def test_realsn_40x40_against_arpack(tmp_path: Path) -> None:
    """At the published size, u at 40×40 (8 channels, so that ARPACK's top three values at tol 1e-12 take
    seconds): σ exact to 2e-8, σ2/σ1 and `degenerate` as ARPACK finds them."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    state = _realsn_state([8, 8], 40, seed=2)
    torch.save(state, tmp_path / "realsn40.pt")
    (layer,) = sninspect.analyze(tmp_path / "realsn40.pt", device="cpu").layers
    weight = state["dncnn.0.weight_orig"]
    dim = 8 * 40 * 40

    def gram(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(1, 8, 40, 40)
        return F.conv_transpose2d(F.conv2d(t, weight, padding=1), weight, padding=1).reshape(-1).numpy()

    values = np.sort(eigsh(LinearOperator((dim, dim), matvec=gram, dtype=np.float64), k=3, which="LA",
                           tol=1e-12, ncv=40, v0=np.ones(dim), return_eigenvectors=False))[::-1]
    s1, s2 = math.sqrt(values[0]), math.sqrt(values[1])
    assert layer.sigma_exact == pytest.approx(s1, rel=2e-8)
    truth_gap = s2 / s1
    assert layer.degenerate == (1.0 - truth_gap < DEGENERATE_GAP)
    assert layer.spectral_gap is not None and 0.0 <= truth_gap - layer.spectral_gap * (1 - 1e-12) <= 2e-4


def test_realsn_40x40_64_channels_cluster_is_flagged_and_passes_check(tmp_path: Path) -> None:
    """The published layout (64 → 64, u at 40×40, whose top pair is split by ~1e-7): σ2/σ1 decided
    degenerate, the raw cosine error of one vector of the pair given with one note on how to read it,
    and the default check passes it; the printed σ exact shows only digits its bracket holds."""
    state = _realsn_state([64, 64], 40, seed=3)
    torch.save(state, tmp_path / "realsn64.pt")
    report = sninspect.analyze(tmp_path / "realsn64.pt", device="cpu")
    (layer,) = report.layers
    assert layer.degenerate and layer.spectral_gap is not None and layer.spectral_gap >= 1 - DEGENERATE_GAP
    assert layer.cos_error_u is not None and gap_cos_error(layer.cos_error_u, layer.spectral_gap) < 1e-5
    notes = [n for n in layer.notes if "operator's top is" in n]
    assert len(notes) == 1 and "gap-aware" in notes[0]
    assert not check(report, Rules()).violations
    assert layer.bracket_width is not None
    shown = fmt_sized(layer.sigma_exact, layer.bracket_width)
    digits = len(re.sub(r"[^0-9]", "", shown).lstrip("0"))
    upper = layer.sigma_exact * (1 + layer.bracket_width)
    assert shown == f"{upper:#.{digits}g}".rstrip(".") and digits < 6  # a 1e-4 bracket: not 6 digits
