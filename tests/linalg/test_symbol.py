"""The symbol's Gram matrices formed as upper triangles in row blocks (linalg.symbol), against an FFT
oracle, and the frequency bound that consumes them, at widths with several row blocks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from sninspect.linalg import conv_bounds
from sninspect.linalg.symbol import UpperGrams, autocorrelation, half_grid, hermitian, phases


def fft_grams(kernel: Tensor, grid: tuple[int, ...], index: Tensor) -> Tensor:
    """G(ω) = K̂(ω)ᴴK̂(ω) from the FFT of the zero-padded kernel, at the grid indices ``index`` (F, d)."""
    symbol = torch.fft.fftn(kernel, s=grid, dim=tuple(range(2, kernel.dim())))  # (c_out, c_in, *grid)
    mats = symbol.movedim(0, -1).movedim(0, -1)  # (*grid, c_out, c_in)
    picked = mats[tuple(index.T)]  # (F, c_out, c_in)
    return picked.mH @ picked  # (F, c_in, c_in)


@pytest.mark.parametrize(("shape", "grid"), [((70, 70, 3, 3), (6, 5)), ((90, 33, 2), (7,)), ((40, 300, 3), (4,))])
def test_upper_triangles_match_the_fft_grams(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    """Every row block's entries on and above the diagonal equal −G(ω) of the FFT oracle, for widths
    that need two or three row blocks (the last one short); hermitian() rebuilds the whole matrix."""
    kernel = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    weight = kernel if shape[0] >= shape[1] else kernel.transpose(0, 1)  # as grid_max: Gram on the smaller side
    offsets, autocorr = autocorrelation(weight)
    index = half_grid(grid, weight.device)
    cos, sin = phases(index, grid, offsets)
    grams = UpperGrams(autocorr, step=index.shape[0])
    assert len(grams.bounds) == -(-weight.shape[1] // max(32, -(-weight.shape[1] // 8)))
    negated = grams.negated(cos, sin)  # (F, n, n)
    oracle = fft_grams(weight, grid, index)
    scale = float(oracle.abs().max())
    upper = torch.triu(torch.ones_like(oracle[0], dtype=torch.bool))
    assert float((negated + oracle)[:, upper].abs().max()) <= 1e-12 * scale
    for row in range(index.shape[0]):
        assert float((hermitian(-negated[row]) - oracle[row]).abs().max()) <= 1e-12 * scale
        assert float(hermitian(negated[row]).diagonal().imag.abs().max()) == 0.0


@pytest.mark.parametrize(("shape", "grid"), [((72, 72, 3, 3), (9, 9)), ((48, 100, 3, 3), (8, 7))])
def test_grid_max_with_several_row_blocks_matches_svd(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    """The running maximum (Cholesky of the formed triangle, Lanczos on hermitian(), eigvalsh on 'U')
    equals every frequency's σ_max from SVDs of the FFT symbol, also with a floor above the answer."""
    kernel = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    symbol = torch.fft.fftn(kernel, s=grid, dim=(2, 3)).movedim(0, -1).movedim(0, -1)
    truth = float(torch.linalg.svdvals(symbol.reshape(-1, shape[0], shape[1]))[:, 0].max())
    assert conv_bounds.grid_max(kernel, grid) == pytest.approx(truth, rel=1e-12)
    assert conv_bounds.grid_max(kernel, grid, floor=0.999 * truth) == pytest.approx(truth, rel=1e-12)


def test_eigen_solve_reads_the_formed_triangle(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Lanczos made useless (a zero lower bound), every record goes through the eigen-solve, which
    must read the upper triangle: the result is still the exact grid maximum."""
    monkeypatch.setattr(conv_bounds._ShiftedBlock, "ritz_sigma", lambda self, row: 0.0)
    kernel = torch.randn((66, 66, 3, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grid = (6, 6)
    symbol = torch.fft.fftn(kernel, s=grid, dim=(2, 3)).movedim(0, -1).movedim(0, -1)
    truth = float(torch.linalg.svdvals(symbol.reshape(-1, 66, 66))[:, 0].max())
    assert conv_bounds.grid_max(kernel, grid) == pytest.approx(truth, rel=1e-12)
