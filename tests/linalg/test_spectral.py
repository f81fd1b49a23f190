"""linalg/spectral.py and linalg/exact.py against numpy's SVD and closed forms."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sninspect.linalg.exact import exact_spectra
from sninspect.linalg.spectral import (
    cos_error,
    matrix_vector,
    normalize,
    power_step,
    stable_rank,
    to_matrix,
    uv_residual,
)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    dim=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_to_matrix_matches_pytorch_spectral_norm_reshape(shape: list[int], dim: int, seed: int) -> None:
    torch.manual_seed(seed)
    weight = torch.randn(*shape)
    # PyTorch's SpectralNorm.reshape_weight_to_matrix: permute dim first, then reshape(out, -1).
    permuted = weight.permute(dim, *[d for d in range(weight.dim()) if d != dim])
    expected = permuted.reshape(permuted.size(0), -1)
    assert torch.equal(to_matrix(weight, dim), expected)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), count=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_exact_spectra_match_numpy(rows: int, cols: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mats = [rng.standard_normal((rows, cols)) for _ in range(count)]
    mats.append(rng.standard_normal((cols, rows + 1)))  # another shape in the same call
    spectra = exact_spectra([torch.from_numpy(m) for m in mats], batch_bytes=rows * cols * 8 * 2)
    for matrix, spectrum in zip(mats, spectra, strict=True):
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        np.testing.assert_allclose(spectrum.values.numpy(), s, rtol=1e-12, atol=1e-12 * s[0])
        if len(s) > 1 and s[1] / s[0] < 1 - 1e-6:
            assert abs(abs(float(spectrum.u1.numpy() @ u[:, 0])) - 1) < 1e-10
            assert abs(abs(float(spectrum.v1.numpy() @ vt[0])) - 1) < 1e-10


def test_cos_error_keeps_precision_at_tiny_angles() -> None:
    for theta in (1e-3, 1e-5, 1e-7):
        a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        b = torch.tensor([math.cos(theta), math.sin(theta), 0.0], dtype=torch.float64)
        expected = 2 * math.sin(theta / 2) ** 2  # = 1 − cos θ without cancellation
        assert math.isclose(cos_error(a, b), expected, rel_tol=1e-6)
        assert math.isclose(cos_error(a, -b), expected, rel_tol=1e-6)  # sign does not matter
    assert math.isclose(cos_error(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])), 1.0, rel_tol=1e-6)


def test_power_step_matches_hand_computation() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 7, dtype=torch.float64)
    u = torch.randn(5, dtype=torch.float64)
    sigma, u_new, v = power_step(w, u)
    v_ref = w.T @ u / torch.linalg.norm(w.T @ u)
    u_ref = w @ v_ref / torch.linalg.norm(w @ v_ref)
    assert torch.allclose(v, v_ref) and torch.allclose(u_new, u_ref)
    assert math.isclose(sigma, float(u_ref @ w @ v_ref), rel_tol=1e-14)
    sigma_plus, _, _ = power_step(w, u, plus_eps=True)
    assert math.isclose(sigma_plus, sigma, rel_tol=1e-10)


def test_stable_rank_and_residual() -> None:
    w = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert math.isclose(stable_rank(w, 3.0) or 0, 10 / 9)
    assert stable_rank(torch.zeros(2, 2), 0.0) is None
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    v = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert uv_residual(w, u, v) == 0.0
    assert torch.allclose(normalize(torch.zeros(3)), torch.zeros(3))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    dim_pick=st.integers(0, 4),
    transpose=st.booleans(),
    piece_bytes=st.sampled_from([1, 40, 4 * 2**20]),
    seed=st.integers(0, 2**16),
)
def test_matrix_vector_matches_the_formed_matrix(
    shape: list[int], dim_pick: int, transpose: bool, piece_bytes: int, seed: int
) -> None:
    """Piecewise W·x and Wᵀ·x (any dim, float32 weight read in float64) equal numpy on the formed matrix."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(*shape, generator=generator)  # float32, as stored
    dim = dim_pick % len(shape) if len(shape) > 1 else 0
    dense = to_matrix(weight, dim).double().numpy()
    size = dense.shape[0] if transpose else dense.shape[1]
    x = torch.randn(size, generator=generator, dtype=torch.float64)
    expected = (dense.T if transpose else dense) @ x.numpy()
    got = matrix_vector(weight, dim, x, transpose=transpose, piece_bytes=piece_bytes)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
