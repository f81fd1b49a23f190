"""The Gram matrices of a convolution's frequency symbol, G(ω) = K̂(ω)ᴴK̂(ω), on sets of frequencies.

Pure math: no I/O, no printing.

G(ω) = Σ_m A_m e^{−iω·m} with the kernel's autocorrelation A_m = Σ_x K_xᵀ K_{x+m} over the (2k−1)^d
offsets m, so G on a block of frequencies is a small phase matrix times the A_m: one GEMM streams A
once per block. Only the upper triangle of each matrix is formed (rows j, columns ≥ j; below it, zeros
or parts of the diagonal blocks): the Cholesky and eigen-solvers that consume them read one triangle
(:mod:`sninspect.linalg.conv_bounds` hands LAPACK the column-major conj A, whose lower triangle is
A's upper one). That halves the GEMM and the copies, a large part of the frequency bound's time at
n ≈ 1000 (figures in BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import torch
from torch import Tensor

ROW_BLOCK_COUNT = 8
"""The upper triangle is formed as row blocks (rows r0..r1, columns r0..n): each block is one GEMM over
a packed copy of A's entries, and the wasted corner below the diagonal is n²/(2·count) in all."""


def row_block(n: int) -> int:
    """Rows per block of the upper triangle of n × n matrices (at least 32: fewer, smaller GEMMs)."""
    return min(n, max(32, -(-n // ROW_BLOCK_COUNT)))


def autocorrelation(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Offsets m ∈ ∏(−k_i, k_i) and A_m = Σ_x K_xᵀ K_{x+m}, so that K̂(ω)ᴴK̂(ω) = Σ_m A_m e^{−iω·m}.

    Half of the offsets are computed (one GEMM each over the overlapping taps); A_{−m} = A_mᵀ.
    """
    c_in = weight.shape[1]
    ks = weight.shape[2:]
    offsets = list(product(*(range(-(k - 1), k) for k in ks)))
    # input channels last, once: each overlap below is then a copy of whole c_in rows (gathering c_in
    # at a stride of k^d for every offset costs 40% of this function at n = 1024)
    taps = weight.movedim(1, -1).contiguous()  # (c_out, *ks, c_in)
    blocks: dict[tuple[int, ...], Tensor] = {}
    for m in offsets:
        if tuple(-v for v in m) in blocks:
            continue
        left_mat = _overlap(taps, m, -1).reshape(-1, c_in)  # (c_out·overlap, c_in): K_x
        right_mat = _overlap(taps, m, 1).reshape(-1, c_in)  # (c_out·overlap, c_in): K_{x+m}
        blocks[m] = left_mat.T @ right_mat  # (c_in, c_in)
    mats = [blocks[m] if m in blocks else blocks[tuple(-v for v in m)].T for m in offsets]
    return torch.tensor(offsets, device=weight.device), torch.stack(mats)  # (M, d), (M, c_in, c_in)


def _overlap(taps: Tensor, shift: Sequence[int], sign: int) -> Tensor:
    """The taps x (sign −1) or x + shift (sign +1) over the x where both are inside the kernel, of a
    kernel laid out (c_out, *ks, c_in)."""
    for axis, v in enumerate(shift):
        k = taps.shape[1 + axis]
        taps = taps.narrow(1 + axis, max(0, sign * v), k - abs(v))
    return taps  # (c_out, *overlap, c_in)


def half_grid(grid: Sequence[int], device: torch.device) -> Tensor:
    """Grid indices j, one of each pair {j, −j mod N}: a real kernel has K̂(−ω) = conj K̂(ω)."""
    axes = [torch.arange(n, device=device) for n in grid]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))  # (∏N, d)
    sizes = torch.tensor(grid, device=device)
    strides = torch.tensor([math.prod(grid[i + 1 :]) for i in range(len(grid))], device=device)
    flat, mirror = index @ strides, ((-index) % sizes) @ strides  # (∏N,), (∏N,)
    return index[flat <= mirror]  # (F, d)


def phases(index: Tensor, grid: Sequence[int], offsets: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of ω·m for ω = 2π j / N: (F, M) each, the angle reduced exactly in integers."""
    sizes = torch.tensor(grid, device=index.device)
    turns = torch.zeros(index.shape[0], offsets.shape[0], dtype=torch.float64, device=index.device)
    for axis in range(len(grid)):
        steps = (index[:, axis, None] * offsets[None, :, axis]) % sizes[axis]  # (F, M)
        turns += steps.double() / grid[axis]
    angle = 2.0 * math.pi * torch.remainder(turns, 1.0)  # (F, M)
    return torch.cos(angle), torch.sin(angle)


class UpperGrams:
    """−G(ω) for blocks of up to ``step`` frequencies: upper triangles of (b, n, n) complex128 matrices
    (below them zeros, and the corners of the row blocks: not to be read), in one reused buffer; the
    packed A and the GEMM's planes reused too."""

    def __init__(self, autocorr: Tensor, step: int) -> None:
        m, n, _ = autocorr.shape
        rows = row_block(n)
        self.n = n
        self.bounds = [(r0, min(n, r0 + rows)) for r0 in range(0, n, rows)]
        # owned copies (clone), so that the caller's full autocorrelation can be freed
        self.packed = [autocorr[:, r0:r1, r0:].reshape(m, -1).clone() for r0, r1 in self.bounds]  # (M, R·(n−r0))
        self.planes = autocorr.new_empty(2 * step * self.packed[0].shape[1])
        self.out = torch.zeros(step, n, n, dtype=torch.complex128, device=autocorr.device)

    def negated(self, cos: Tensor, sin: Tensor) -> Tensor:
        """−G(ω) = −Σ_m A_m e^{−iω·m} for the b frequencies of ``cos``, ``sin`` (b, M): a contiguous
        (b, n, n) view of the buffer, upper triangles formed.

        One GEMM (2b, M) @ (M, R·(n−r0)) per row block into real and imaginary planes, interleaved into
        the matrices one after another, so each matrix is contiguous for its Cholesky (matrices
        interleaved element by element, as a transposed product leaves them, cost it 16–24% more).
        """
        b = cos.shape[0]
        signs = torch.cat([cos, sin]).neg_()  # (2b, M): −cos, −sin
        signs[b:].neg_()  # −e^{−iω·m} = −cos(ω·m) + i sin(ω·m)
        mats = self.out[:b]
        pairs = torch.view_as_real(mats)  # (b, n, n, 2)
        for (r0, r1), packed in zip(self.bounds, self.packed, strict=True):
            width = packed.shape[1]
            parts = torch.mm(signs, packed, out=self.planes[: 2 * b * width].view(2 * b, width))
            target = pairs[:, r0:r1, r0:]  # (b, R, n − r0, 2)
            target[..., 0].copy_(parts[:b].view(b, r1 - r0, self.n - r0))
            target[..., 1].copy_(parts[b:].view(b, r1 - r0, self.n - r0))
        return mats  # (b, n, n)


def hermitian(upper: Tensor) -> Tensor:
    """The Hermitian matrix whose upper triangle (diagonal included) is that of ``upper`` (n, n),
    whatever lies below it: a new tensor, with a real diagonal."""
    full = torch.triu(upper)
    full += torch.triu(upper, 1).mH
    full.diagonal().imag.zero_()  # G's diagonal is real; its formed imaginary part is rounding
    return full
