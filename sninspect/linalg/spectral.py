"""Pure tensor math of SN itself: weight matrices, power steps, normalizations, error measures.

No I/O, no printing. Spectral normalization after Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks" (arXiv:1802.05957): W_SN = W / σ̂ with σ̂ from power iteration.
Exact spectra are in :mod:`sninspect.linalg.exact`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def to_matrix(weight: Tensor, dim: int) -> Tensor:
    """Reshape a weight the way SN does: axis ``dim`` first, the rest flattened.

    (out, in, kh, kw) with dim=0 → (out, in*kh*kw); ConvTranspose (in, out, kh, kw) with dim=1 →
    (out, in*kh*kw). A 1-D weight becomes a single column.
    """
    if weight.dim() == 1:
        return weight.reshape(-1, 1)  # (n, 1), as torch.nn.utils.spectral_norm reshapes it
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.reshape(weight.shape[0], -1)  # (shape[dim], prod(rest))


def matrix_vector(weight: Tensor, dim: int, x: Tensor, *, transpose: bool = False,
                  piece_bytes: int = 4 * 2**20) -> Tensor:
    """``to_matrix(weight, dim) @ x`` (or ``.T @ x``) in x's dtype and on x's device, without forming
    the matrix: the weight is read in pieces along its first axis, each converted on its own (a whole
    float64 copy of a 1024×1024×3×3 weight is 72 MiB, and the dim ≠ 0 matrix one more).

    A piece W[a:b] is a block of rows of the matrix for dim 0, a block of columns for dim ≠ 0 (the
    matrix's columns run over axis 0 first). x: (cols,), or (rows,) with ``transpose``."""
    if weight.dim() <= 1:
        matrix = to_matrix(weight, dim).to(dtype=x.dtype, device=x.device)
        return matrix.T @ x if transpose else matrix @ x
    step = max(1, piece_bytes // max(1, weight[0].numel() * x.element_size()))
    stacked: list[Tensor] = []  # output pieces, in order
    summed: Tensor | None = None  # or the sum of the pieces' contributions
    for start in range(0, weight.shape[0], step):
        piece = weight[start : start + step].to(dtype=x.dtype, device=x.device)
        if dim == 0:
            block = piece.reshape(piece.shape[0], -1)  # (b, cols): rows start:start+b
            if transpose:
                part = block.T @ x[start : start + block.shape[0]]
                summed = part if summed is None else summed + part
            else:
                stacked.append(block @ x)
        else:
            block = piece.movedim(dim, 0).reshape(weight.shape[dim], -1)  # (rows, b·rest): a column block
            offset = start * (block.shape[1] // piece.shape[0])
            if transpose:
                stacked.append(block.T @ x)
            else:
                part = block @ x[offset : offset + block.shape[1]]
                summed = part if summed is None else summed + part
    if stacked:
        return torch.cat(stacked)
    assert summed is not None  # Precondition: weight.shape[0] > 0
    return summed


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
