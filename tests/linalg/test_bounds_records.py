"""The frequency bound's record step (issue 11): a record frequency's σ is bounded from below by
Lanczos (a Rayleigh quotient) and checked by a Cholesky, an eigen-solve only where the check fails.
Oracles: numpy's dense eigenvalues, an SVD at every frequency (FFT of the zero-padded kernel) on the
grid and on a much finer one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sninspect.linalg import conv_bounds, lanczos
from sninspect.linalg.conv_bounds import conv_operator_bound, grid_max, grid_sizes


def fft_sigmas(weight: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """σ_max(K̂(ω)) at every point of ``grid`` by FFT + SVD (independent of the screening code)."""
    d = weight.dim() - 2
    symbol = torch.fft.fftn(weight, s=grid, dim=tuple(range(2, 2 + d)))  # (c_out, c_in, *grid)
    return torch.linalg.svdvals(symbol.movedim(0, -1).movedim(0, -1))[..., 0]  # (*grid)


def hermitian(n: int, kind: str, seed: int) -> np.ndarray:
    """A Hermitian PSD matrix with a chosen top: random, near-degenerate (λ2/λ1 > 0.999), rank-1."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    values = rng.uniform(0.0, 1.0, n)
    if kind == "near-degenerate":
        values[:3] = [1.0, 0.9995, 0.9991][:n]
    elif kind == "rank-1":
        values[:] = 0.0
        values[0] = 3.0
    return (q * values) @ q.conj().T


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 90), kind=st.sampled_from(["random", "near-degenerate", "rank-1"]),
       seed=st.integers(0, 2**16))
def test_lanczos_rayleigh_quotient_is_a_tight_lower_bound(n: int, kind: str, seed: int) -> None:
    """The record step's value is ≤ λ_max (a Rayleigh quotient) and, converged, equal to it to 1e-9."""
    matrix = hermitian(n, kind, seed)
    top = float(np.linalg.eigvalsh(matrix)[-1])
    value = lanczos.top_rayleigh(torch.from_numpy(matrix))
    assert value <= top * (1 + 1e-12) + 1e-15
    assert value == pytest.approx(top, rel=1e-9, abs=1e-14)


def kernels() -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(11)
    random = torch.randn(24, 20, 3, 3, generator=gen, dtype=torch.float64)
    low_pass = random.abs() + 0.5  # a peak at ω = 0
    u = torch.randn(24, 1, 1, 1, generator=gen, dtype=torch.float64)
    rank1 = u * torch.randn(1, 20, 1, 1, generator=gen, dtype=torch.float64) * torch.randn(1, 1, 3, 3, generator=gen,
                                                                                          dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    tied = 1e-3 * torch.randn(20, 20, 3, 3, generator=gen, dtype=torch.float64)
    tied[:, :, 1, 1] = q  # an orthogonal centre tap: σ(ω) ≈ 1 at every frequency, all values tied
    return [("random", random), ("low-pass", low_pass), ("rank-1", rank1), ("near-degenerate", tied)]


@pytest.mark.parametrize(("name", "weight"), kernels())
def test_grid_max_and_bracket_against_fft_oracles(name: str, weight: torch.Tensor) -> None:
    """The grid maximum equals an SVD at every frequency; the certified bracket contains the maximum on
    a grid 4× finer per axis (a near-exact σ*), and is no wider than asked."""
    tol = 0.01
    bound = conv_operator_bound(weight, tol=tol)
    grid = grid_sizes(weight.shape[2:], tol)
    assert bound.grid == grid
    oracle = float(fft_sigmas(weight, grid).max())
    assert bound.lower == pytest.approx(oracle, rel=1e-12), name
    fine = float(fft_sigmas(weight, tuple(4 * n for n in grid)).max())
    assert bound.lower <= fine * (1 + 1e-12) and fine <= bound.upper, name
    assert bound.upper <= bound.lower * (1 + tol), name


@pytest.mark.parametrize("bad", [0.0, 0.5, "nan"])
def test_a_wrong_lanczos_value_is_caught_by_its_cholesky(bad: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Lanczos returns less than the top (not converged, a lower eigenvalue) or fails, the Cholesky
    check fails and the eigen-solve gives the exact value: the same grid maximum."""
    calls = {"eigh": 0}
    original = torch.linalg.eigvalsh

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls["eigh"] += 1
        return original(*args, **kwargs)

    def wrong(gram: torch.Tensor, **_: object) -> float:
        if bad == "nan":
            raise np.linalg.LinAlgError("tridiagonal solver failed")
        return float(bad) * float(original(gram)[-1])

    name, weight = kernels()[0]
    grid = grid_sizes(weight.shape[2:], 0.01)
    oracle = float(fft_sigmas(weight, grid).max())
    monkeypatch.setattr(conv_bounds, "top_rayleigh", wrong)
    monkeypatch.setattr(torch.linalg, "eigvalsh", counted)
    assert grid_max(weight, grid) == pytest.approx(oracle, rel=1e-12)
    assert calls["eigh"] > 0  # the fallback ran


def test_records_use_no_eigen_solve_when_lanczos_converges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the record step: no dense eigen-solve on a wide kernel (each costs ~25 Cholesky)."""
    def forbidden(*_: object, **__: object) -> torch.Tensor:
        raise AssertionError("eigen-solve called")

    weight = torch.randn(48, 40, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = grid_sizes(weight.shape[2:], 0.01)
    oracle = float(fft_sigmas(weight, grid).max())
    monkeypatch.setattr(torch.linalg, "eigvalsh", forbidden)
    assert grid_max(weight, grid) == pytest.approx(oracle, rel=1e-12)
    assert math.isfinite(oracle)
