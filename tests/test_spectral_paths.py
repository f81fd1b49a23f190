"""The Gram (eigh) path of exact_spectra against numpy's SVD, and its fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sninspect.spectral import exact_spectra, gram_spectra


def check_against_numpy(matrix: torch.Tensor, spectrum) -> None:  # type: ignore[no-untyped-def]
    u, s, vt = np.linalg.svd(matrix.numpy(), full_matrices=False)
    # singular values: ~1e-12·σ1 absolute; σ1: ~1e-12 relative; vectors: 1 − |cos| ≤ 1e-12
    assert np.abs(spectrum.values.numpy() - s).max() <= 1e-12 * s[0]
    assert abs(float(spectrum.values[0]) - s[0]) <= 1e-12 * s[0]
    assert 1 - abs(float(spectrum.u1.numpy() @ u[:, 0])) <= 1e-12
    assert 1 - abs(float(spectrum.v1.numpy() @ vt[0])) <= 1e-12


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), aspect=st.floats(1.5, 12), wide=st.booleans(), seed=st.integers(0, 2**16))
def test_gram_path_matches_svd_on_random_matrices(m: int, aspect: float, wide: bool, seed: int) -> None:
    torch.manual_seed(seed)
    n = int(m * aspect) + 1
    matrix = torch.randn(m, n, dtype=torch.float64) if wide else torch.randn(n, m, dtype=torch.float64)
    spectrum = gram_spectra(matrix[None])[0]
    if spectrum is None:  # a random gap too small to certify the vectors: the fallback handles it
        return
    check_against_numpy(matrix, spectrum)


def ill_conditioned(m: int, n: int, condition: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(n, m, dtype=torch.float64, generator=gen))
    s = torch.logspace(0, -np.log10(condition), m, dtype=torch.float64) * 3.0
    return u @ torch.diag(s) @ v.T  # (m, n)


@pytest.mark.parametrize("condition", [1e1, 1e6, 1e12])
def test_ill_conditioned_matrices_fall_back_or_stay_accurate(condition: float) -> None:
    matrix = ill_conditioned(48, 300, condition)
    gram = gram_spectra(matrix[None])[0]
    if condition >= 1e6:
        assert gram is None  # squaring the condition number would lose the small singular values
    else:
        assert gram is not None
        check_against_numpy(matrix, gram)
    # exact_spectra is accurate either way
    check_against_numpy(matrix, exact_spectra([matrix])[0])


def test_degenerate_top_pair_falls_back_to_svd() -> None:
    matrix = torch.zeros(4, 20, dtype=torch.float64)
    matrix[0, 0] = matrix[1, 1] = 2.0
    matrix[2, 2] = matrix[3, 3] = 1.0
    assert gram_spectra(matrix[None])[0] is None
    spectrum = exact_spectra([matrix])[0]
    assert float(spectrum.values[0]) == pytest.approx(2.0) and spectrum.degenerate


def test_both_paths_agree_in_a_mixed_batch() -> None:
    torch.manual_seed(1)
    mats = [torch.randn(32, 288, dtype=torch.float64) for _ in range(5)] + [ill_conditioned(32, 288, 1e10)]
    fast = exact_spectra(mats)
    slow = exact_spectra(mats, gram=False)
    for a, b, matrix in zip(fast, slow, mats):
        check_against_numpy(matrix, a)
        check_against_numpy(matrix, b)


def test_float32_uses_the_svd_and_is_accurate_to_single_precision() -> None:
    torch.manual_seed(2)
    matrix = torch.randn(16, 200)
    spectrum = exact_spectra([matrix])[0]
    s = np.linalg.svd(matrix.double().numpy(), compute_uv=False)
    assert np.abs(spectrum.values.double().numpy() - s).max() <= 1e-5 * s[0]
