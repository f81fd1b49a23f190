"""Pure tensor math: matrices of SN weights, exact spectra, power steps, cosine errors.

No I/O, no printing. Spectral normalization after Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks" (arXiv:1802.05957): W_SN = W / σ̂ with σ̂ from power iteration.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

DEGENERATE_GAP = 1e-6
"""σ1 and σ2 closer than this (relative) make the top singular vector ill-defined for a cosine."""

BATCH_BYTES = 256 * 2**20
"""Largest batch of equal-shape matrices solved at once (bounds peak memory)."""


@dataclass(frozen=True)
class Spectrum:
    """Singular values (descending) and the top singular pair of one matrix."""

    values: Tensor  # (k,)
    u1: Tensor  # (m,) top left singular vector
    v1: Tensor  # (n,) top right singular vector

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


def to_matrix(weight: Tensor, dim: int) -> Tensor:
    """Reshape a weight the way SN does: axis ``dim`` first, the rest flattened.

    (out, in, kh, kw) with dim=0 → (out, in*kh*kw); ConvTranspose (in, out, kh, kw) with dim=1 →
    (out, in*kh*kw). A 1-D weight becomes a single row.
    """
    if weight.dim() == 1:
        return weight.reshape(1, -1)  # (1, n)
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.reshape(weight.shape[0], -1)  # (shape[dim], prod(rest))


GRAM_MIN_ASPECT = 1.5
"""The Gram path is tried only for matrices at least this far from square (long side / short side)."""
GRAM_VECTOR_TOL = 1e-11
"""Largest accepted bound on sin∠(computed, exact) of the top singular vectors on the Gram path."""
GRAM_VALUE_TOL = 1e-12
"""Largest accepted absolute error bound on the singular values on the Gram path, relative to σ1."""


def exact_spectra(
    matrices: Sequence[Tensor], *, batch_bytes: int = BATCH_BYTES, gram: bool = True
) -> list[Spectrum]:
    """Exact singular values and top singular pairs of many matrices.

    Matrices of equal shape are stacked and solved as one batch of at most ``batch_bytes``, in the
    dtype and on the device of their input. Rectangular float64 matrices go through the Gram matrix
    of their short side (``eigh``, several times faster than an SVD) where that path is provably
    accurate (see :func:`gram_spectra`); the others, and any matrix the Gram path cannot certify, get
    a full SVD.
    """
    groups: dict[tuple[tuple[int, int], torch.dtype, torch.device], list[int]] = defaultdict(list)
    for index, matrix in enumerate(matrices):
        groups[(tuple(matrix.shape), matrix.dtype, matrix.device)].append(index)  # type: ignore[index]
    results: list[Spectrum | None] = [None] * len(matrices)
    for (shape, dtype, _device), indices in groups.items():
        per_matrix = max(1, shape[0] * shape[1] * torch.finfo(dtype).bits // 8)
        step = max(1, batch_bytes // per_matrix)
        use_gram = gram and dtype == torch.float64 and max(shape) >= GRAM_MIN_ASPECT * min(shape)
        for start in range(0, len(indices), step):
            chunk = indices[start : start + step]
            batch = torch.stack([matrices[i] for i in chunk])  # (b, m, n)
            solved = gram_spectra(batch) if use_gram else [None] * len(chunk)
            missing = [j for j, spectrum in enumerate(solved) if spectrum is None]
            if missing:
                for j, spectrum in zip(missing, svd_spectra(batch[missing])):
                    solved[j] = spectrum
            for j, i in enumerate(chunk):
                results[i] = solved[j]
    return [r for r in results if r is not None]


def svd_spectra(batch: Tensor) -> list[Spectrum]:
    """Full (thin) SVD of a batch (b, m, n)."""
    u, s, vh = torch.linalg.svd(batch, full_matrices=False)  # (b,m,k) (b,k) (b,k,n)
    return [Spectrum(values=s[j], u1=u[j, :, 0], v1=vh[j, 0, :]) for j in range(batch.shape[0])]


def gram_spectra(batch: Tensor) -> list[Spectrum | None]:
    """Spectra through the Gram matrix of the short side, each with an a-posteriori certificate.

    For W (m, n), m ≤ n: W Wᵀ = U Λ Uᵀ gives σ_i = sqrt(λ_i) and u1; v1 = Wᵀ u1 / ‖Wᵀ u1‖, then one
    refinement u1 = n(W v1), σ1 = ‖W v1‖. Certificates, else ``None`` (the caller falls back to SVD):
    - vectors: with r = ‖W v1 − σ1 u1‖ and ‖Wᵀ u1 − σ1 v1‖, sin∠ ≤ r / (σ1 − σ2) (Wedin) must be
      ≤ ``GRAM_VECTOR_TOL``;
    - values: eigh is backward stable, |δλ_i| ≲ m·ε·σ1², so |δσ_i| ≤ |δλ_i| / (σ_i + sqrt(λ_i − δ))
      ≈ m·ε·σ1² / (2σ_i); the smallest σ must keep that ≤ ``GRAM_VALUE_TOL``·σ1, which holds for
      well-conditioned matrices (trained weights far from square) and fails for nearly rank-deficient
      ones — exactly where squaring the condition number would hurt.
    """
    wide = batch.shape[1] <= batch.shape[2]
    w = batch if wide else batch.mT  # (b, m, n), m ≤ n
    gram = w @ w.mT  # (b, m, m)
    lam, vecs = torch.linalg.eigh(gram)  # ascending
    lam = lam.flip(-1).clamp(min=0.0)  # (b, m) descending
    u1 = vecs[:, :, -1]  # (b, m)
    v1 = w.mT @ u1.unsqueeze(-1)  # (b, n, 1)
    v1 = (v1 / torch.linalg.vector_norm(v1, dim=1, keepdim=True)).squeeze(-1)  # (b, n)
    wv = (w @ v1.unsqueeze(-1)).squeeze(-1)  # (b, m)
    sigma1 = torch.linalg.vector_norm(wv, dim=1)  # (b,)
    u1 = wv / sigma1.unsqueeze(-1)
    res_left = torch.linalg.vector_norm(wv - sigma1.unsqueeze(-1) * u1, dim=1)
    wtu = (w.mT @ u1.unsqueeze(-1)).squeeze(-1)  # (b, n)
    res_right = torch.linalg.vector_norm(wtu - sigma1.unsqueeze(-1) * v1, dim=1)
    values = lam.sqrt()
    values[:, 0] = sigma1
    eps = torch.finfo(batch.dtype).eps
    m = w.shape[1]
    out: list[Spectrum | None] = []
    for j in range(batch.shape[0]):
        s1 = float(sigma1[j])
        if s1 == 0.0 or not math.isfinite(s1):
            out.append(None)
            continue
        s2 = float(values[j, 1]) if m > 1 else 0.0
        gap = s1 - s2
        vector_bound = max(float(res_left[j]), float(res_right[j])) / gap if gap > 0 else math.inf
        eig_error = m * eps * s1 * s1  # eigh backward error bound p(m)·ε·‖G‖ with p(m) = m
        smallest = float(values[j, -1])
        value_bound = eig_error / max(2.0 * smallest, math.sqrt(eig_error))
        if vector_bound > GRAM_VECTOR_TOL or value_bound > GRAM_VALUE_TOL * s1:
            out.append(None)
            continue
        u, v = (u1[j], v1[j]) if wide else (v1[j], u1[j])
        out.append(Spectrum(values=values[j], u1=u, v1=v))
    return out


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``F.normalize`` for a vector: x / max(‖x‖, eps) (PyTorch SN, mimicry, BigGAN)."""
    return x / torch.clamp(torch.linalg.vector_norm(x), min=eps)


def normalize_plus(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / (‖x‖ + eps) (the l2normalize of the cosgrove wrapper)."""
    return x / (torch.linalg.vector_norm(x) + eps)


def bilinear_sigma(matrix: Tensor, u: Tensor, v: Tensor) -> float:
    """σ̂ = u · (W v): what PyTorch SN divides by in eval mode from stored u, v."""
    return float(torch.dot(u, matrix @ v))


def power_step(matrix: Tensor, u: Tensor, *, plus_eps: bool = False) -> tuple[float, Tensor, Tensor]:
    """One power-iteration step from u: v = n(Wᵀu), u' = n(W v), σ̂ = u' · (W v).

    This is what mimicry, BigGAN and the cosgrove wrapper compute at every forward (eval included).
    Returns (σ̂, u', v).
    """
    norm = normalize_plus if plus_eps else normalize
    v = norm(matrix.T @ u)  # (n,)
    wv = matrix @ v  # (m,)
    u_new = norm(wv)  # (m,)
    return float(torch.dot(u_new, wv)), u_new, v


def cos_error(stored: Tensor, exact: Tensor) -> float:
    """1 − |cos(stored, exact)| without cancellation at small angles.

    With unit a, b and s = sign(a·b): ‖a − s b‖² = 2 − 2|cos θ|, so 1 − |cos θ| = ‖a − s b‖² / 2,
    which keeps full relative precision when θ is tiny (θ = 1e-5 gives 5e-11, not 0).
    """
    a = stored / torch.linalg.vector_norm(stored)
    b = exact / torch.linalg.vector_norm(exact)
    sign = 1.0 if float(torch.dot(a, b)) >= 0.0 else -1.0
    diff = float(torch.linalg.vector_norm(a - sign * b))
    return min(1.0, 0.5 * diff * diff)


def uv_residual(matrix: Tensor, u: Tensor, v: Tensor) -> float:
    """‖u − normalize(W v)‖: 0 when the stored pair satisfies SN's invariant u = n(W v)."""
    return float(torch.linalg.vector_norm(u - normalize(matrix @ v)))


def stable_rank(matrix: Tensor, sigma1: float) -> float | None:
    """‖W‖_F² / σ1² (``None`` for a zero matrix)."""
    if sigma1 == 0.0:
        return None
    frob = float(torch.linalg.matrix_norm(matrix, ord="fro"))
    return (frob / sigma1) ** 2


def is_finite(tensor: Tensor) -> bool:
    """True when no entry is NaN or infinite."""
    return bool(torch.isfinite(tensor).all())


def relative_error(estimate: float, exact: float) -> float:
    """(estimate − exact) / exact; NaN when exact is 0."""
    return (estimate - exact) / exact if exact != 0.0 else math.nan
