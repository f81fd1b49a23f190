"""Exact singular values and top singular pairs of batches of matrices, to a stated accuracy.

Two paths: the plain SVD (LAPACK / cuSOLVER), and the Gram path — eigenvalues of W Wᵀ on the short
side, the top pair refined through W and certified by its residual, small singular values as Ritz
values — several times faster, with an SVD fallback wherever its accuracy cannot be vouched for.
Pure math: no I/O, no printing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sninspect.linalg.failures import typed_solver_errors

DEGENERATE_GAP = 1e-6
"""σ1 and σ2 closer than this (relative) make the top singular vector ill-defined for a cosine."""

BATCH_BYTES = 32 * 2**20
"""Largest batch of equal-shape matrices solved at once. A CPU solves a batch one matrix after the
other, so batching only saves per-call overhead on small matrices; a layer this large is solved alone,
and peak memory follows the largest layer, not the file."""

TARGET_ULPS = 4096
"""Accuracy contract of :func:`exact_spectra` in units of the working dtype's eps (9.1e-13 in float64,
4.9e-4 in float32): every singular value to TARGET_ULPS·eps·σ1 absolute, σ1 to TARGET_ULPS·eps
relative, and the top pair with ‖Wᵀu1 − σ1 v1‖ ≤ TARGET_ULPS·eps·σ1, so that the angle of u1 and v1
to the exact vectors is at most that over (σ1 − σ2)/σ1 — what an SVD gives, up to a constant."""

GRAM_FACTOR = 16.0
"""The Gram path allows |λ̂_i − λ_i| ≤ c·eps·λ1 with c = GRAM_FACTOR·√m for the eigenvalues of the
computed G = W Wᵀ (m × m): forming G rounds each entry by about √n·eps of its row norms, and a
backward stable eigensolver adds about eps·‖G‖. Not a proven worst case (that grows like
n·eps·‖W‖_F²): a margin of about 4 over the largest c measured (3.8·√m on a flat spectrum, 2.2·√m
on gaussian matrices up to 1024 × 4096; tests/linalg/test_spectral_paths.py, BENCHMARKS.md), and of 15 to
1000 on the small singular values where it matters. The top pair does not rely on it: its residual
certifies it."""


def gram_allowance(rows: int) -> float:
    """c = GRAM_FACTOR·√m in |λ̂ − λ| ≤ c·eps·λ1 (see :data:`GRAM_FACTOR`)."""
    return GRAM_FACTOR * math.sqrt(rows)


def sqrt_trust(rows: int) -> float:
    """σ_i = √λ_i is kept when σ_i ≥ sqrt_trust·σ1 (0.0625 for m = 1024): its error c·eps·σ1²/(2σ_i)
    is then within the contract. Smaller ones get Ritz values or, failing those, an SVD."""
    return gram_allowance(rows) / (2 * TARGET_ULPS)


SQUARE_ISH = 0.9
"""Short side / long side above which singular values below sqrt_trust·σ1 are expected (a random
square matrix has σ_min/σ1 ≈ 1/(2n)), so the eigenvectors needed for Ritz values are computed at once."""

SVD_BELOW = 2**21
"""Batches with less work than this (count × short side² × long side) take the SVD: on small matrices
the Gram path's few dozen tensor operations cost more than the LAPACK call (under 1 ms either way)."""

Method = Literal["auto", "gram", "svd"]


@dataclass(frozen=True)
class Spectrum:
    """Singular values (descending) and the top singular pair of one matrix."""

    values: Tensor  # (k,)
    u1: Tensor  # (m,) top left singular vector
    v1: Tensor  # (n,) top right singular vector
    method: str = "svd"
    """How it was solved: ``gram`` (eigenvalues of the Gram matrix), ``gram+ritz`` (small singular
    values as Ritz values), ``gram+svdvals`` (singular values from an SVD, the pair from the Gram
    matrix) or ``svd``; all meet the :data:`TARGET_ULPS` contract."""

    @property
    def sigma1(self) -> float:
        return float(self.values[0])

    @property
    def gap(self) -> float | None:
        """σ2 / σ1, ``None`` when there is no σ2 (a single row or column)."""
        if self.values.numel() < 2 or self.sigma1 == 0.0:
            return None
        return float(self.values[1]) / self.sigma1

    @property
    def degenerate(self) -> bool:
        """σ1 ≈ σ2: the top singular vectors are not unique."""
        gap = self.gap
        return gap is not None and 1.0 - gap < DEGENERATE_GAP


@typed_solver_errors
def exact_spectra(
    matrices: Sequence[Tensor], *, batch_bytes: int = BATCH_BYTES, method: Method = "auto"
) -> list[Spectrum]:
    """Exact singular values and top singular pairs of many matrices, to the :data:`TARGET_ULPS`
    contract, each in the dtype and on the device of its input.

    Matrices of equal shape are solved as one batch of at most ``batch_bytes`` (matrices that are
    consecutive slices of one block, as the audit loads them, are used in place; others are
    stacked). ``auto`` goes through the Gram matrix of the short side (:func:`_gram_spectra`), which
    is several times faster than an SVD, and falls back to the SVD matrix by matrix wherever its
    accuracy cannot be vouched for (small batches, below :data:`SVD_BELOW`, take the SVD at once);
    ``gram`` takes the Gram path whatever the size (fallbacks included); ``svd`` is the plain SVD.
    """
    groups: dict[tuple[tuple[int, int], torch.dtype, torch.device], list[int]] = defaultdict(list)
    for index, matrix in enumerate(matrices):
        groups[(tuple(matrix.shape), matrix.dtype, matrix.device)].append(index)  # type: ignore[index]
    results: list[Spectrum | None] = [None] * len(matrices)
    for (shape, dtype, _device), indices in groups.items():
        per_matrix = max(1, shape[0] * shape[1] * torch.finfo(dtype).bits // 8)
        step = max(1, batch_bytes // per_matrix)
        for start in range(0, len(indices), step):
            chunk = indices[start : start + step]
            batch = _as_batch([matrices[i] for i in chunk])  # (b, m, n)
            work = len(chunk) * min(shape) ** 2 * max(shape)
            plain = method == "svd" or (method == "auto" and work < SVD_BELOW) or 0 in shape
            solved = _svd_spectra(batch) if plain else _auto_spectra(batch)
            for i, spectrum in zip(chunk, solved, strict=True):
                results[i] = spectrum
    return [r for r in results if r is not None]


def _as_batch(matrices: Sequence[Tensor]) -> Tensor:
    """(b, m, n) without a copy when the matrices are consecutive slices of one contiguous block."""
    first = matrices[0]
    if len(matrices) == 1:
        return first.unsqueeze(0)
    rows, cols = first.shape
    size = rows * cols
    in_place = all(
        m.is_contiguous()
        and m.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        and m.storage_offset() == first.storage_offset() + j * size
        for j, m in enumerate(matrices)
    )
    if in_place:
        return first.as_strided((len(matrices), rows, cols), (size, cols, 1), first.storage_offset())
    return torch.stack(list(matrices))


def _svd_spectra(batch: Tensor) -> list[Spectrum]:
    """The reference path: LAPACK/cuSOLVER SVD of the whole batch."""
    u, s, vh = torch.linalg.svd(batch, full_matrices=False)  # (b,m,k) (b,k) (b,k,n)
    return [Spectrum(s[j], u[j, :, 0].clone(), vh[j, 0, :].clone(), "svd") for j in range(batch.shape[0])]


def _auto_spectra(batch: Tensor) -> list[Spectrum]:
    """The Gram path on the short side (a tall W is solved as Wᵀ, its pair swapped back)."""
    tall = batch.shape[-2] > batch.shape[-1]
    solved = _gram_spectra(batch.mT if tall else batch)
    if not tall:
        return solved
    return [Spectrum(s.values, s.v1, s.u1, s.method) for s in solved]


def _gram_spectra(wide: Tensor) -> list[Spectrum]:
    """Singular values and top pairs of a batch of wide matrices (b, m, n), m ≤ n, through the
    eigenvalues λ of G = W Wᵀ (m × m): σ_i = √λ_i.

    Forming G squares the condition number: λ_i carries an absolute error c·eps·λ1, so √λ_i is off by
    about c·eps·σ1²/(2σ_i) — fine for large σ_i, not for small ones. Hence, per matrix:

    1. the top pair comes from shifted inverse iteration on G (or G's eigenvectors), refined by one
       power step through W itself, and is certified by its residual r = ‖Wᵀu1 − σ1 v1‖ ≤
       TARGET_ULPS·eps·σ1 and by σ1 agreeing with √λ1 (else: SVD);
    2. σ_i ≥ sqrt_trust(m)·σ1 are √λ_i;
    3. smaller ones are Ritz values ‖Wᵀû_i‖ from G's eigenvectors û_i, whose error is second order
       in the eigenvector error: Σ_j (c·eps·λ1)²/|λ_i − λ_j| over 2σ_i (near-equal λ included), used
       where that bound is within the contract, else the matrix's values come from an SVD.
    """
    dtype, (rows, cols) = wide.dtype, wide.shape[1:]
    eps = torch.finfo(dtype).eps
    tol = TARGET_ULPS * eps
    wide, scale, finite = _scaled(wide)
    formed = _gram(wide)  # (b, m, m)
    gram: Tensor | None = formed  # None once factored in place: the rare paths below form it again
    vectors: Tensor | None = None
    if rows >= SQUARE_ISH * cols:
        lam, vectors = torch.linalg.eigh(formed)  # (b, m) ascending, (b, m, m)
        top = vectors[..., -1]  # (b, m)
    else:
        lam = torch.linalg.eigvalsh(formed)  # (b, m) ascending
        top = _top_eigenvectors(formed, lam[:, -1])
        gram = None
        del formed  # its memory holds the factor now
    sigma1, u1, v1, residual = _refine(wide, top)
    values = lam.flip(-1).clamp(min=0).sqrt()  # (b, m) descending
    certified = (
        finite & (sigma1 > 0) & torch.isfinite(residual)
        & (residual <= tol * sigma1) & ((sigma1 - values[:, 0]).abs() <= tol * sigma1)
    )
    if vectors is None:  # the eigenvector route failed to certify: one more try with G's eigenvectors
        retry = (finite & ~certified).nonzero().flatten().tolist()
        if retry:
            _, vecs = torch.linalg.eigh(_gram(wide[retry]))
            s1, a, b, r = _refine(wide[retry], vecs[..., -1])
            good = (s1 > 0) & (r <= tol * s1) & ((s1 - values[retry, 0]).abs() <= tol * s1)
            for k, j in enumerate(retry):
                if bool(good[k]):
                    sigma1[j], u1[j], v1[j], certified[j] = s1[k], a[k], b[k], True
    values[:, 0] = sigma1
    values = torch.minimum(values, sigma1[:, None])  # √λ2 may round above the refined σ1
    tail = (values < sqrt_trust(rows) * sigma1[:, None]).sum(-1)  # (b,) values that need more than √λ
    flags = torch.stack([certified.to(tail.dtype), tail]).tolist()  # the one host sync of the batch

    out: list[Spectrum] = []
    for j, (ok, small) in enumerate(zip(*flags, strict=True)):
        if not ok:
            (spectrum,) = _svd_spectra(wide[j : j + 1] * scale[j])
            out.append(spectrum)
            continue
        method, vals = "gram", values[j]
        if small:
            gram_j = _gram(wide[j : j + 1])[0] if gram is None else gram[j]  # (m, m)
            ritz = _ritz_tail(wide[j], gram_j, None if vectors is None else (lam[j], vectors[j]),
                              small, float(sigma1[j]), eps, tol)
            if ritz is not None:
                vals = torch.cat([vals[: rows - small], ritz]).sort(descending=True).values
                method = "gram+ritz"
            else:
                method, vals = "gram+svdvals", torch.linalg.svdvals(wide[j])
        out.append(Spectrum(vals * scale[j], u1[j], v1[j], method))
    return out


GRAM_PANELS = 4
"""Row panels of W for :func:`_gram` on matrices with at least :data:`GRAM_PANELS_FROM` rows: the
products on and above the diagonal only, (p + 1)/(2p) of the GEMM's work (1024×4096: 0.13 → 0.08 s)."""

GRAM_PANELS_FROM = 512


def _gram(wide: Tensor) -> Tensor:
    """W Wᵀ of a batch (b, m, n) → (b, m, m), in full precision: panel i of rows times the panels
    i.. (a block row of the upper triangle), the lower triangle mirrored from it, so the result is
    exactly symmetric off the diagonal blocks."""
    rows = wide.shape[-2]
    with full_precision_matmul():
        if rows < GRAM_PANELS_FROM:
            return wide @ wide.mT
        gram = wide.new_empty(wide.shape[0], rows, rows)  # (b, m, m)
        step = -(-rows // GRAM_PANELS)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            gram[:, start:stop, start:] = wide[:, start:stop] @ wide[:, start:].mT
            gram[:, stop:, start:stop] = gram[:, start:stop, stop:].mT
        return gram


def _scaled(wide: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """W / 2^e with e chosen so that W Wᵀ neither overflows nor underflows (exact: a power of two;
    no copy when every matrix is already in range), the per-matrix factor 2^e, and which are finite."""
    low, high = torch.aminmax(wide.reshape(wide.shape[0], -1), dim=1)  # (b,) each, no |W| temporary
    peak = torch.maximum(low.abs(), high.abs())
    finite = torch.isfinite(peak)
    limit = 100 if wide.dtype == torch.float64 else 20
    exponent = torch.where(finite & (peak > 0), torch.frexp(peak).exponent, 0)  # peak ∈ [2^(e−1), 2^e)
    scale = torch.ldexp(torch.ones_like(peak), exponent)
    if bool(((exponent.abs() > limit) & finite).any()):
        return wide / scale[:, None, None], scale, finite
    return wide, torch.ones_like(scale), finite


@contextmanager
def full_precision_matmul() -> Iterator[None]:
    """TF32 or bf16 products (``torch.set_float32_matmul_precision("high")``, ``allow_tf32``) keep
    10 or 8 mantissa bits: fine for training, ruinous for W Wᵀ. Full float32 while forming it."""
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _top_eigenvectors(gram: Tensor, lam1: Tensor) -> Tensor:
    """Top eigenvectors of a batch of Gram matrices by shifted inverse iteration: Cholesky of
    μI − G with μ = λ1(1 + δ) (positive definite), then x ← (μI − G)⁻¹x, which shrinks every other
    component by δλ1/(λ1 − λ_i + δλ1) per step. Cost: a third of an m³ factorization, against the
    full eigenvector solve; a failed factorization (λ1 = 0, non-finite) gives NaN, caught by the
    certificate. ``gram`` is consumed: μI − G and then its factor are written over it (G is
    symmetric, so its transpose view is the same matrix in the column-major layout LAPACK factors in
    place), which keeps the solve to one m×m matrix (8 MiB at m = 1024)."""
    count, rows, _ = gram.shape
    eps = torch.finfo(gram.dtype).eps
    delta = max(1e-10, 64 * rows * eps)  # above the Cholesky backward error, far below any real gap
    steps = 4 if gram.dtype == torch.float64 else 8
    pick = gram.diagonal(dim1=-2, dim2=-1).argmax(-1)  # column with the largest norm² of W's rows
    x = gram[torch.arange(count, device=gram.device), :, pick].unsqueeze(-1)  # (b, m, 1): G e_j (a copy)
    shifted = gram.neg_().mT  # (b, m, m) column-major view of −G
    shifted.diagonal(dim1=-2, dim2=-1).add_((lam1 * (1 + delta))[:, None])
    info = torch.empty(count, dtype=torch.int32, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(shifted, out=(shifted, info))
    for _ in range(steps):
        x = torch.cholesky_solve(x, factor)
        x = x / torch.linalg.vector_norm(x, dim=-2, keepdim=True)
    x = x.squeeze(-1)
    return torch.where((info == 0)[:, None], x, torch.nan)


def _refine(wide: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One power step through W from u: v1 = n(Wᵀu), u1 = n(W v1), σ1 = ‖W v1‖, and the residual
    ‖Wᵀu1 − σ1 v1‖. With unit (u1, v1) and W v1 = σ1 u1, (u1, v1)/√2 has residual r/√2 for
    [[0, W], [Wᵀ, 0]], so some singular value lies within r/√2 of σ1 and the angles to the top pair
    are at most r/(σ1 − σ2) (Wedin 1972)."""
    y = (wide.mT @ u.unsqueeze(-1)).squeeze(-1)  # (b, n)
    v1 = y / torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    z = (wide @ v1.unsqueeze(-1)).squeeze(-1)  # (b, m)
    sigma1 = torch.linalg.vector_norm(z, dim=-1)  # (b,)
    u1 = z / sigma1[:, None]
    back = (wide.mT @ u1.unsqueeze(-1)).squeeze(-1)  # (b, n)
    residual = torch.linalg.vector_norm(back - sigma1[:, None] * v1, dim=-1)
    return sigma1, u1, v1, residual


def _ritz_tail(
    wide: Tensor, gram: Tensor, eigen: tuple[Tensor, Tensor] | None, small: int, sigma1: float,
    eps: float, tol: float,
) -> Tensor | None:
    """The ``small`` smallest singular values of one wide W (m, n) as Ritz values ‖Wᵀû_i‖ (û_i the
    eigenvectors of G = W Wᵀ), or None where their error bound exceeds the contract.

    With û_i an exact eigenvector of G + E, ‖E‖ ≤ c·eps·λ1, the Rayleigh quotient ‖Wᵀû_i‖² differs
    from λ_i by about Σ_j (c·eps·λ1)²/|λ_i − λ_j| — second order — and by at most c·eps·λ1 within
    a cluster of λ_j closer than that; over 2σ_i for σ_i. Exact zeros (rank deficiency) fail the
    bound and go to the SVD, as do values below about 2.4e-5·σ1 in float64 (m = 1024)."""
    lam, vectors = eigen if eigen is not None else torch.linalg.eigh(gram)  # ascending
    basis = vectors[:, :small]  # (m, k) eigenvectors of the k smallest eigenvalues
    ritz = torch.linalg.vector_norm(basis.mT @ wide, dim=-1)  # (k,)
    spread = gram_allowance(wide.shape[0]) * eps * sigma1 * sigma1  # c·eps·λ1
    gaps = (lam[:small, None] - lam[None, :]).abs().clamp(min=spread)  # (k, m)
    gaps[torch.arange(small, device=gaps.device), torch.arange(small, device=gaps.device)] = math.inf
    error = (spread * spread / gaps).sum(-1) / (2 * ritz)  # (k,) bound on |σ̂_i − σ_i|
    if not bool((error <= tol * sigma1).all()):
        return None
    return ritz
