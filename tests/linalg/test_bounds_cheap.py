"""The cheap rung of the certified conv bound (linalg/cheap_bound.py, ``tol=CHEAP``): no frequency grid,
a bracket of σ* = sup_ω σ_max(K̂(ω)) whatever its width, checked against independent oracles (a fine FFT
grid with its certified multiple, dense Jacobians of real layers, numpy SVDs of the reshapes)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sninspect.audit.bounds.cache import BoundCache, cached_bound
from sninspect.audit.memory import conv_bound_bytes
from sninspect.linalg import conv_bounds
from sninspect.linalg.conv_bounds import CHEAP, certification_factor, conv_operator_bound, grid_max, grid_sizes

SETTINGS = settings(deadline=None, derandomize=True, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])
CERTIFIED = 1.0 - 1e-12
"""An upper bound may undershoot the oracle by rounding only."""


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fine_grid(kernel: torch.Tensor) -> tuple[float, float]:
    """(max over a fine FFT grid of σ_max(K̂), that times the grid's certification factor): numpy FFT and
    SVD, nothing of sninspect's math. σ* lies between the two."""
    k = kernel.numpy()
    ks = k.shape[2:]
    grid = tuple({1: 512, 2: 48, 3: 16}[len(ks)] if n > 1 else 1 for n in ks)
    symbol = np.fft.fftn(k, s=grid, axes=tuple(range(2, k.ndim)))  # (c_out, c_in, *grid)
    mats = np.moveaxis(np.moveaxis(symbol, 0, -1), 0, -1).reshape(-1, k.shape[0], k.shape[1])
    low = float(np.linalg.svd(mats, compute_uv=False)[:, 0].max())
    return low, low * certification_factor(ks, grid)


def kernels(draw: st.DrawFn) -> torch.Tensor:
    d = draw(st.sampled_from([1, 2, 2, 3]))
    c_out, c_in = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    ks = tuple(draw(st.integers(1, {1: 7, 2: 5, 3: 3}[d])) for _ in range(d))
    if all(k == 1 for k in ks):
        ks = (2, *ks[1:])
    shape = (c_out, c_in, *ks)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["gaussian", "lowpass", "one tap", "modulated"]))
    weight = torch.randn(shape, generator=gen, dtype=torch.float64)
    if kind == "lowpass":  # every tap the same matrix: the symbol peaks at ω = 0 (√K·reshape is sharp there)
        weight = weight[:, :, *([slice(0, 1)] * d)].expand(shape).contiguous()
    elif kind == "one tap":  # a shifted 1×1: σ* = σ1 of that tap
        weight = torch.zeros(shape, dtype=torch.float64)
        weight[(slice(None), slice(None), *(k - 1 for k in ks))] = torch.randn(c_out, c_in, generator=gen,
                                                                               dtype=torch.float64)
    elif kind == "modulated":  # the symbol peaks between the grid points of the lower end's samples
        x = torch.arange(ks[0], dtype=torch.float64).reshape(1, 1, ks[0], *([1] * (d - 1)))
        weight = weight[:, :, :1].expand(shape) * torch.cos(2 * math.pi * 0.37 * x)
    return weight.contiguous()


@SETTINGS
@given(data=st.data())
def test_cheap_bracket_contains_the_fft_truth(data: st.DataObject) -> None:
    weight = kernels(data.draw)
    low, high = fine_grid(weight)
    bound = conv_operator_bound(weight, tol=CHEAP)
    assert bound.upper >= low * CERTIFIED  # certified upper end
    assert bound.lower <= high * (1.0 + 1e-12)  # a lower end of σ* (within rounding)
    assert 0.0 < bound.lower <= bound.upper and math.isfinite(bound.upper)
    # the upper end is √K · σ1 of one outer reshape, computed exactly (numpy) up to the allowance
    c_out, c_in, *ks = weight.shape
    taps = math.prod(ks)
    outer = [weight.reshape(c_out, -1).numpy(), weight.movedim(1, -1).reshape(-1, c_in).numpy()]
    values = [math.sqrt(taps) * float(np.linalg.svd(m, compute_uv=False)[0]) for m in outer]
    trimmed = all(k > 1 for k in ks) and bound.method.startswith("reshape")
    if trimmed and weight.abs().amax(dim=(0, 1)).min() > 0:  # no zero border taps: nothing trimmed
        assert any(v <= bound.upper <= v * (1.0 + 1e-6) for v in values)


@SETTINGS
@given(data=st.data())
def test_a_pixel_input_bounds_the_norm_from_below(data: st.DataObject) -> None:
    """σ* ≥ σ1 of each outer reshape (a unit input at one pixel, and the adjoint's): the lower end's claim."""
    weight = kernels(data.draw)
    _, high = fine_grid(weight)
    c_out, c_in = weight.shape[:2]
    for matrix in (weight.reshape(c_out, -1), weight.movedim(1, -1).reshape(-1, c_in)):
        assert float(np.linalg.svd(matrix.numpy(), compute_uv=False)[0]) <= high * (1.0 + 1e-12)


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_cheap_upper_is_above_real_layers(mode: str) -> None:
    """Dense Jacobians of real conv layers (zero and circular padding, stride 1 and 2) stay below."""
    gen = torch.Generator().manual_seed(5)
    for shape, size, stride in [((3, 2, 3, 3), (6, 6), 1), ((4, 4, 3, 3), (7, 5), 2), ((2, 3, 5), (11,), 1)]:
        weight = torch.randn(shape, generator=gen, dtype=torch.float64)
        d = len(size)
        conv = (F.conv1d, F.conv2d)[d - 1]
        pad = [k // 2 for k in shape[2:]]
        dim = shape[1] * math.prod(size)
        basis = torch.eye(dim, dtype=torch.float64).reshape(dim, shape[1], *size)
        if mode == "circular":
            padded = F.pad(basis, [p for p in reversed(pad) for _ in range(2)], mode="circular")
            out = conv(padded, weight, stride=stride)
        else:
            out = conv(basis, weight, stride=stride, padding=pad)
        oracle = float(np.linalg.svd(out.reshape(dim, -1).T.numpy(), compute_uv=False)[0])
        assert conv_operator_bound(weight, tol=CHEAP).upper >= oracle * CERTIFIED


def test_cheap_rung_keeps_the_floor_and_the_scale() -> None:
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64)
    circulant = grid_max(weight, (11, 11))  # a circular convolution's norm: ≤ σ*
    bound = conv_operator_bound(weight, tol=CHEAP, floor=circulant)
    assert bound.lower >= circulant
    for scale in (1e-150, 1e150):
        scaled = conv_operator_bound(weight * scale, tol=CHEAP)
        assert scaled.upper == pytest.approx(conv_operator_bound(weight, tol=CHEAP).upper * scale, rel=1e-12)
    assert conv_operator_bound(torch.zeros(3, 3, 3, 3), tol=CHEAP).upper == 0.0
    one_tap = torch.zeros(3, 2, 3, 3, dtype=torch.float64)
    one_tap[:, :, 1, 1] = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    exact = conv_operator_bound(one_tap, tol=CHEAP)  # trimmed to 1×1: solved exactly, whatever the rung
    assert exact.method == "exact (1x1)" and exact.upper == exact.lower


def test_lower_end_finds_a_peaked_symbol() -> None:
    """A low-pass kernel (every tap the same matrix A): σ* = K·σ1(A) at ω = 0, and the bracket is exact
    there up to the Lanczos tolerance: the reshape bound √K·σ1([A … A]) = K·σ1(A) is sharp."""
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    weight = a[:, :, None, None].expand(6, 5, 3, 3).contiguous()
    truth = 9 * float(np.linalg.svd(a.numpy(), compute_uv=False)[0])
    bound = conv_operator_bound(weight, tol=CHEAP)
    assert bound.lower <= truth * (1 + 1e-12) <= bound.upper * (1 + 1e-12)
    assert bound.upper / bound.lower - 1.0 < 1e-3


def test_cheap_rung_is_cheaper_in_memory_and_cached(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (1024, 1024, 3, 3)
    assert conv_bound_bytes(shape, None) < conv_bound_bytes(shape, grid_sizes((3, 3), 0.2))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    weight = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cache = BoundCache()
    first = cached_bound(cache, weight, tol=CHEAP, device=torch.device("cpu"))
    calls = []
    monkeypatch.setattr(conv_bounds, "reshape_bracket", lambda *a, **k: calls.append(a))
    again = cached_bound(cache, weight, tol=CHEAP, device=torch.device("cpu"))
    cache.close()
    assert again == first and not calls  # read back, not recomputed
    assert first != conv_operator_bound(weight, tol=0.2)  # another key than the frequency rungs
