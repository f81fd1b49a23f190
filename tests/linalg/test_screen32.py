"""The float32 screen of the frequency bound's Cholesky tests (linalg/screen32.py): it never proves
s²I − G ⪰ 0 where that is false, it proves it where there is room, and the grid maximum is the same
with or without it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from sninspect.linalg import conv_bounds, screen32


def _hermitian(eigenvalues: np.ndarray, seed: int) -> Tensor:
    """V diag(λ) Vᴴ for a random unitary V, complex128 (n, n)."""
    rng = np.random.default_rng(seed)
    n = eigenvalues.size
    q, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    g = (q * eigenvalues) @ q.conj().T
    return torch.from_numpy((g + g.conj().T) / 2)


def _block(grams: list[Tensor], square: float) -> tuple[Tensor, Tensor]:
    """(s²I − G for each G, tr G for each G)."""
    stack = torch.stack(grams)  # (b, n, n)
    shifted = -stack
    shifted.diagonal(dim1=-2, dim2=-1).add_(square)
    return shifted, stack.diagonal(dim1=-2, dim2=-1).real.sum(-1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 100), seed=st.integers(0, 2**31 - 1), excess=st.sampled_from([1e-13, 1e-10, 1e-7, 1e-5]),
       spread=st.sampled_from(["flat", "marchenko", "one"]), scale=st.sampled_from([1e-6, 1.0, 37.0]))
def test_never_proves_a_false_bound(n: int, seed: int, excess: float, spread: str, scale: float) -> None:
    """λ_max(G) = s²(1 + excess), just above: the screen must not pass it, however the rest of the
    spectrum sits (all of it just below s², where tr(s²I − G) and so the shift are smallest)."""
    rng = np.random.default_rng(seed)
    square = scale
    if spread == "flat":
        rest = square * (1.0 - 1e-6 * rng.random(n - 1))
    elif spread == "marchenko":
        rest = square * rng.random(n - 1) ** 2
    else:
        rest = np.zeros(n - 1)
    eigenvalues = np.concatenate([rest, [square * (1.0 + excess)]])
    shifted, traces = _block([_hermitian(eigenvalues, seed)], square)
    proved = screen32.below32(shifted, square, traces)
    assert proved is None or not bool(proved[0])


@pytest.mark.parametrize("n", [8, 32, 64, 100])
def test_proves_where_there_is_room(n: int) -> None:
    """λ_max(G) = s²(1 − 4c/s²): proved in float32 (the screen is worth running)."""
    square = 2.5
    rng = np.random.default_rng(n)
    base = square * rng.random(n - 1) ** 2
    trace = float(base.sum())
    relative = float(screen32.shift32(n, square, torch.tensor([trace + square]))[0]) / square
    assert relative <= screen32.MAX_RELATIVE_SHIFT
    eigenvalues = np.concatenate([base, [square * (1.0 - 4.0 * relative)]])
    shifted, traces = _block([_hermitian(eigenvalues, n)], square)
    proved = screen32.below32(shifted, square, traces)
    assert proved is not None and bool(proved[0])


def test_not_tried_where_the_shift_is_too_large() -> None:
    """n = 512: the certified shift (about 4% of s²) would let most frequencies fall through."""
    n, square = 512, 1.0
    relative = float(screen32.shift32(n, square, torch.tensor([n * square / 4]))[0]) / square
    assert relative > screen32.MAX_RELATIVE_SHIFT
    shifted = torch.eye(n, dtype=torch.complex128)[None] * 0.75
    assert screen32.below32(shifted, square, torch.tensor([n * square / 4])) is None


@pytest.mark.parametrize(("shape", "grid"), [((16, 12, 3, 3), (20, 20)), ((64, 64, 3, 3), (42, 42)),
                                             ((8, 8, 5, 5), (16, 16)), ((6, 5, 3), (30,))])
def test_grid_maximum_is_unchanged_by_the_screen(shape: tuple[int, ...], grid: tuple[int, ...],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The same maximum with and without the screen, from no floor and from a floor near the top (the
    conv-operator case), and the screen really ran."""
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64)
    weight = weight / math.sqrt(math.prod(shape[1:]))
    with_screen = conv_bounds.grid_max(weight, grid)
    floor = with_screen * (1 - 1e-3)
    with_floor = conv_bounds.grid_max(weight, grid, floor=floor)
    calls: list[int] = []
    original = screen32.below32

    def counted(*args: object) -> Tensor | None:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(conv_bounds, "below32", counted)
    assert conv_bounds.grid_max(weight, grid, floor=floor) == with_floor
    assert calls
    monkeypatch.setattr(screen32, "MAX_RELATIVE_SHIFT", 0.0)
    assert conv_bounds.grid_max(weight, grid) == with_screen
    assert conv_bounds.grid_max(weight, grid, floor=floor) == with_floor
