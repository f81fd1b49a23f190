"""Certified bounds on the operator norm of a convolution, from its frequency symbol.

Pure math: no I/O, no printing. σ* = sup_ω σ_max(K̂(ω)) bounds every layer built on the kernel (any
zero padding, stride, dilation, input size, transposed or not). The exact maximum over an N-grid,
found by Cholesky screening and Lanczos on the symbol's Gram matrices, is a certified lower bound;
divided by ∏ cos(π(k_i − 1)/(2N_i)) (Duffin–Schaeffer) it is a certified upper bound, which the
reshape bound of Singla & Feizi 2021 can only lower. The proof, the search and the references:
docs/conv-bound.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy
import torch
from torch import Tensor

from sninspect.errors import OperandError
from sninspect.linalg.cheap_bound import reshape_bracket
from sninspect.linalg.failures import typed_solver_errors
from sninspect.linalg.lanczos import top_rayleigh
from sninspect.linalg.reshape_bound import reshape_bound_below, reshapes, sigma1
from sninspect.linalg.screen32 import below32
from sninspect.linalg.symbol import UpperGrams, autocorrelation, half_grid, hermitian, phases

CHUNK_BYTES = 64 * 2**20
"""Block of frequency matrices G(ω) formed at once, in two reused buffers: caps memory, and streams
the autocorrelation (25 n² floats for 3×3) once per block."""

FACTOR_BYTES = 16 * 2**20
"""Matrices per Cholesky or eigen-solve call: small enough that their workspaces are recycled by
the allocator instead of page-faulted anew on every call."""

CHEAP = math.inf
"""``tol`` asking for the cheapest certified bracket, whatever its width: no frequency grid, the reshape
bound over a few frequencies' σ_max from below (:mod:`sninspect.linalg.cheap_bound`)."""

CHEAP_SAMPLES = 0.2
"""The width whose grid (8×8 for 3×3 kernels) the cheap bracket's lower end samples frequencies of."""

ROUNDING_SLACK = 1e-9
"""Relative allowance added to certified bounds for floating-point rounding: the Cholesky backward
error γ_{n+1}·tr (Higham 2002, Thm 10.5) and the rounding of G(ω); grows as n²·eps beyond n ≈ 4000."""


@dataclass(frozen=True)
class ConvBound:
    """Certified bracket of a convolution kernel's operator 2-norm σ* (any stride, zero or circular
    padding, dilation, input size, transposed or not; grouped kernels read as dense)."""

    upper: float
    """Certified upper bound min(tight, cheap) (``tight`` where ``cheap`` is None): the layer's
    ``operator_bound``."""
    lower: float
    """Exact grid maximum of σ_max(K̂(ω)) = norm of the circular convolution at size ``grid``
    (``operator_lower``), or the caller's floor where that is higher. It bounds σ* from below, not a
    particular small or strided layer."""
    tight: float
    """Certified frequency bound lower / ∏ cos(π(k−1)/(2N)), within ``tol`` of ``lower``."""
    cheap: float | None
    """√(∏ k) · min σ1 over the kernel's reshapes (Singla & Feizi 2021) where it is below ``tight``;
    ``None`` where it is not (then it is not computed in full: see the module docstring)."""
    grid: tuple[int, ...]
    """Frequency grid size N per spatial axis (1 along axes with k = 1)."""
    method: str
    """Which bound gave ``upper``: ``exact (1x1)``, ``fft-certified`` or ``reshape``."""


def grid_sizes(kernel_size: Sequence[int], tol: float) -> tuple[int, ...]:
    """Smallest N per axis with ``certification_factor(kernel_size, N) ≤ 1 + tol``.

    The budget is split evenly (in log) over the axes with k > 1; axes with k = 1 need one sample.
    """
    if not tol > 0.0:
        raise OperandError(f"tol must be positive, got {tol}")
    moving = sum(1 for k in kernel_size if k > 1)
    per_axis = (1.0 + tol) ** (1.0 / max(1, moving))
    sizes = []
    for k in kernel_size:
        if k == 1:
            sizes.append(1)
            continue
        # cos(π(k−1)/(2N)) ≥ 1/per_axis  ⇔  N ≥ π(k−1) / (2 acos(1/per_axis))
        n = max(k, math.ceil(math.pi * (k - 1) / (2.0 * math.acos(1.0 / per_axis))) - 1)
        while _axis_factor(k, n) > per_axis:
            n += 1
        sizes.append(n)
    return tuple(sizes)


def _axis_factor(k: int, n: int) -> float:
    """1 / cos(π(k−1)/(2N)) for one axis (sharp; see the module docstring)."""
    return 1.0 / math.cos(math.pi * (k - 1) / (2 * n))


def certification_factor(kernel_size: Sequence[int], grid: Sequence[int]) -> float:
    """∏_i 1 / cos(π(k_i − 1)/(2 N_i)): σ* ≤ factor · max over the grid of σ_max(K̂(ω))."""
    factor = 1.0
    for k, n in zip(kernel_size, grid, strict=True):
        if k > 1:
            if n <= k - 1:
                raise OperandError(f"a grid of {n} points cannot certify kernel size {k}: need N > {k - 1}")
            factor *= _axis_factor(k, n)
    return factor


@typed_solver_errors
def reshape_bounds(kernel: Tensor) -> list[float]:
    """√(∏ k) · σ1 of each reshape (c_out·∏_{i∈S} k_i, c_in·∏_{i∉S} k_i), S ⊆ spatial axes.

    Each bounds the operator norm: for S = ∅ the output at p is R applied to the input patch at p,
    and each input entry lies in ∏ k patches; for S = all the same holds for the adjoint; a mixed S
    applies the first argument along the axes outside S and Cauchy–Schwarz over the taps of the
    axes in S (Singla & Feizi 2021 for 2-D; the same proof for any d).
    """
    weight = as_kernel(kernel, None)
    scale = math.sqrt(math.prod(weight.shape[2:]))
    return [scale * sigma1(matrix) for matrix in reshapes(weight)]


class _ShiftedBlock:
    """s²I − G(ω) for a block of frequencies, held in place: moving s only touches the diagonal."""

    def __init__(self, negated_grams: Tensor, batch: int, traces: Tensor, factors: Tensor, low: Tensor) -> None:
        self.matrices = negated_grams  # (b, n, n): upper triangles formed (linalg.symbol), nothing below to be read
        self.batch = batch
        self.traces = traces  # (b,) tr G(ω)
        self.factors = factors  # (≥ batch, n, n) complex: the Cholesky factors land here (reused, unread)
        self.low = low  # (≥ b, n, n) complex64: the float32 screen's copy (reused)
        self.shift = 0.0

    def _shift_to(self, square: float) -> None:
        self.matrices.diagonal(dim1=-2, dim2=-1).add_(square - self.shift)
        self.shift = square

    def below(self, rows: Tensor | None, s: float) -> Tensor:
        """True where σ_max(K̂(ω)) ≤ s: the Cholesky factorization of s²I − G succeeds (up to its
        backward error, covered by the slack). ``rows`` None: the whole block. (rows,) bool."""
        self._shift_to(s * s)
        if rows is None:  # small n: a sound float32 screen first (linalg.screen32), float64 for the rest
            proved = below32(self.matrices, s * s, self.traces, self.low)
            if proved is not None:
                rest = torch.nonzero(~proved).flatten()
                if rest.numel() > 0:
                    proved[rest] = self.below(rest, s)
                return proved
            # slices are views: no gather before Cholesky's own column-major copy
            parts = [self.matrices[i : i + self.batch] for i in range(0, self.matrices.shape[0], self.batch)]
        else:
            parts = [self.matrices[part] for part in rows.split(self.batch)]
        return torch.cat([self._factor(part) for part in parts]) == 0

    def _factor(self, part: Tensor) -> Tensor:
        """LAPACK's info per matrix; the factors go to the reused buffer (a fresh buffer per call is a
        page-faulted mapping each time: a third of a DnCNN report's system time).

        LAPACK wants column-major matrices: the row-major A read as column-major is Aᵀ = conj A (A is
        Hermitian), whose factorization is the exact conjugate of A's (conjugation is exact in every
        operation), so it succeeds exactly when A's does. Handing it over as ``.mT`` views, input and
        output, spares torch a transposing copy in and a copy out (18–30% of the call at n = 256–1024)."""
        out = self.factors[: part.shape[0]]
        info = torch.empty(part.shape[0], dtype=torch.int32, device=part.device)
        torch.linalg.cholesky_ex(part.mT, out=(out.mT, info))
        return info

    def sigma(self, row: int) -> float:
        """Exact σ_max(K̂(ω)) = sqrt(s² − λ_min(s²I − G)) (an eigen-solve: ~25 Cholesky at n = 1024)."""
        lowest = torch.linalg.eigvalsh(self.matrices[row : row + 1], UPLO="U")[0, 0]
        return math.sqrt(max(self.shift - float(lowest), 0.0))

    def ritz_sigma(self, row: int) -> float:
        """A lower bound on σ_max(K̂(ω)): √ of a Rayleigh quotient of G(ω) = s²I − (the block's matrix)
        at the top Ritz vector of a Lanczos run (:func:`~sninspect.linalg.lanczos.top_rayleigh`). Near
        exact where Lanczos converged; the caller checks it with a Cholesky, :meth:`sigma` if not."""
        gram = hermitian(self.matrices[row]).neg_()  # (n, n): G − s²I
        gram.diagonal().add_(self.shift)  # G(ω)
        try:
            return math.sqrt(max(top_rayleigh(gram), 0.0))
        except numpy.linalg.LinAlgError:  # the small tridiagonal's solver: 0 bounds anything from below
            return 0.0


def grid_blocks(n: int, offsets: int, frequencies: int) -> tuple[int, int]:
    """(frequencies formed at once, matrices per Cholesky call) for n × n Gram matrices of a symbol
    with ``offsets`` autocorrelation terms. Blocks of at most CHUNK_BYTES, but no larger than needed to
    stream A (offsets·n² floats) rarely: small kernels get small blocks, whose buffers are not
    page-faulted in anew at every call."""
    block_bytes = min(CHUNK_BYTES, max(4 * 2**20, 4 * 8 * offsets * n * n))
    step = min(frequencies, max(1, block_bytes // (16 * n * n)))
    return step, max(1, FACTOR_BYTES // (16 * n * n))


@typed_solver_errors
def grid_max(kernel: Tensor, grid: Sequence[int], *, slack: float = ROUNDING_SLACK, floor: float = 0.0) -> float:
    """max over the frequency grid of σ_max(K̂(ω)): the exact norm of the circular convolution at
    size ``grid`` (to within ``slack`` relative).

    ``floor``: a value known not to exceed that maximum (e.g. a Rayleigh quotient of an operator the
    circulant contains), where the running maximum starts, so that only the frequencies above it need
    more than one Cholesky. Whatever the floor, every frequency is proved ≤ the result (1 + slack):
    a floor above the maximum returns the floor, still an upper bound.

    Half the grid (conjugate pairs), G(ω) from the autocorrelation, frequencies in decreasing tr G,
    one Cholesky per frequency against the running maximum; where it fails, a Lanczos Rayleigh
    quotient checked by a Cholesky (an eigen-solve only where that check fails).
    """
    weight = as_kernel(kernel, None)
    if weight.shape[0] < weight.shape[1]:
        weight = weight.transpose(0, 1)  # K̂ᵀ has the same singular values; Gram on the smaller side
    offsets, autocorr = autocorrelation(weight)  # (M, d), (M, n, n)
    index = half_grid(grid, weight.device)  # (F, d)
    cos, sin = phases(index, grid, offsets)  # (F, M)
    trace = cos @ autocorr.diagonal(dim1=-2, dim2=-1).sum(-1)  # (F,) ‖K̂(ω)‖_F²
    order = torch.argsort(trace, descending=True)
    if not float(trace[order[0]]) > 0.0:
        return 0.0  # K̂ = 0 on the whole grid
    m, n, _ = autocorr.shape
    step, batch = grid_blocks(n, m, order.numel())
    grams = UpperGrams(autocorr, step)  # buffers reused by every block
    del autocorr  # packed into grams
    factors = torch.empty(min(step, batch), n, n, dtype=torch.complex128, device=weight.device)
    low = torch.empty(step, n, n, dtype=torch.complex64, device=weight.device)  # untouched unless screened
    best = max(0.0, float(floor))
    for start in range(0, order.numel(), step):
        chunk = order[start : start + step]
        block = _ShiftedBlock(grams.negated(cos[chunk], sin[chunk]), batch, trace[chunk], factors, low)
        pending = torch.arange(chunk.numel(), device=weight.device)
        if best > 0.0:
            pending = pending[~block.below(None, best * (1.0 + slack))]
        # A running-maximum record process: bound the highest-trace failure from below by Lanczos,
        # check that bound with its Cholesky (an eigen-solve where it fails), re-test the others.
        while pending.numel() > 0:
            row = pending[:1]
            best = max(best, block.ritz_sigma(int(row)))
            if not bool(block.below(row, best * (1.0 + slack))[0]):
                best = max(best, block.sigma(int(row)))
            rest = pending[1:]
            pending = rest[~block.below(rest, best * (1.0 + slack))] if rest.numel() else rest
    return best


@typed_solver_errors
def conv_operator_bound(
    kernel: Tensor, *, tol: float = 0.01, device: torch.device | str | None = None, floor: float = 0.0
) -> ConvBound:
    """Certified bracket [lower, upper] of the operator 2-norm of a convolution with this kernel.

    ``kernel`` is a conv weight (c_out, c_in, k1[, k2[, k3]]) as stored; a ConvTranspose weight
    (c_in, c_out/groups, k...) is the adjoint's kernel: same norm. A grouped conv is block diagonal,
    norm max_j ‖C_j‖, and reading its weight as dense stacks the blocks [C_1; …; C_g], whose norm is
    at least every ‖C_j‖: an upper bound (up to √groups loose; depthwise convs the most).
    ``upper / lower − 1 ≤ tol``. Computed in float64 on ``device`` (default: the kernel's).
    All 1-sized kernels are matrices: upper = lower = σ1 exactly.
    ``floor``: a known lower bound of σ* (e.g. the norm of a circular convolution with this kernel at
    another size): the grid maximum's running maximum starts there, so a flat symbol costs one
    Cholesky per frequency; ``lower`` is then the larger of the two, still ≤ σ*, and ``upper`` its
    certified multiple.
    """
    weight = as_kernel(kernel, device, finite=False)  # checked below, on the taps' peaks: one pass less
    slack = _slack(min(weight.shape[:2]))
    if not tol > 4.0 * slack:
        raise OperandError(f"tol must be positive and above the rounding allowance {4.0 * slack:.1g}, got {tol}")
    peaks = weight.abs().amax(dim=(0, 1))  # (k...): each tap's largest |w|, read once
    scale = float(peaks.max())
    if not math.isfinite(scale):  # a NaN or an infinity anywhere makes the largest |w| one
        raise OperandError("conv kernel has NaN or infinite entries")
    if scale == 0.0:
        return ConvBound(0.0, 0.0, 0.0, 0.0, (1,) * (weight.dim() - 2), "exact (zero kernel)")
    # The norm scales with the kernel and ignores a shift: bound max|w| = 1 (no under- or overflow at
    # 1e-170 or 1e154) with all-zero border taps trimmed (a 3×3 kernel using its centre only is 1×1).
    bound = _normalized_bound(trim_zero_taps(weight, peaks) / scale, tol, slack, max(0.0, floor) / scale)
    return ConvBound(bound.upper * scale, bound.lower * scale, bound.tight * scale,
                     None if bound.cheap is None else bound.cheap * scale, bound.grid, bound.method)


def bound_from_circulant(kernel_shape: Sequence[int], grid: Sequence[int], circulant: float,
                         tol: float) -> ConvBound | None:
    """The certified bracket of σ* from a circular convolution's norm found elsewhere: ``circulant``
    is :func:`grid_max` of this kernel on ``grid`` (every frequency proved ≤ it · (1 + ROUNDING_SLACK)),
    e.g. the padded size of a conv-operator layer's bracket. No more work: lower = circulant,
    upper = circulant · certification factor · (1 + 2 slack). ``None`` where that grid is too coarse
    for ``tol``, the kernel is 1×1 (solved exactly instead), or so wide that the rounding allowance
    exceeds ROUNDING_SLACK."""
    c_out, c_in, *ks = kernel_shape
    if all(k == 1 for k in ks) or any(n <= k - 1 for n, k in zip(grid, ks, strict=True)):
        return None
    if _slack(min(c_out, c_in)) > ROUNDING_SLACK or not circulant > 0.0:
        return None
    upper = circulant * certification_factor(ks, grid) * (1.0 + 2.0 * ROUNDING_SLACK)
    if upper > circulant * (1.0 + tol):
        return None
    return ConvBound(upper, circulant, upper, None, tuple(grid), "fft-certified (grid of the stored size)")


def _slack(n: int) -> float:
    """Relative rounding allowance of the frequency bound for a symbol of n × n Gram matrices."""
    return max(ROUNDING_SLACK, 4.0 * torch.finfo(torch.float64).eps * (n + 1) ** 2)


def _normalized_bound(weight: Tensor, tol: float, slack: float, floor: float = 0.0) -> ConvBound:
    """:func:`conv_operator_bound` of a scaled, trimmed kernel."""
    c_out, c_in, *ks = weight.shape
    if all(k == 1 for k in ks):
        sigma = sigma1(weight.reshape(c_out, c_in))  # (c_out, c_in)
        return ConvBound(sigma, sigma, sigma, sigma, (1,) * len(ks), "exact (1x1)")
    if math.isinf(tol):  # CHEAP: no frequency grid at all (linalg.cheap_bound)
        upper, lower = reshape_bracket(weight, grid_sizes(ks, CHEAP_SAMPLES), slack, floor)
        return ConvBound(upper, lower, upper, upper, (1,) * len(ks), "reshape (no frequency grid)")
    grid = grid_sizes(ks, (1.0 + tol) / (1.0 + 2.0 * slack) - 1.0)
    try:
        lower = grid_max(weight, grid, slack=slack, floor=floor)
    except torch.linalg.LinAlgError:  # an eigen-solve that does not converge: the reshape bound holds
        lower = max(floor, sigma1(weight.sum(dim=tuple(range(2, weight.dim())))))  # σ_max(K̂(0)): a grid point
        upper = min(reshape_bounds(weight))
        return ConvBound(upper, lower, upper, upper, grid, "reshape (frequency eigen-solver failed)")
    tight = lower * certification_factor(ks, grid) * (1.0 + 2.0 * slack)
    below = reshape_bound_below(weight, tight)
    cheap = None if below is None else below * (1.0 + slack)
    if cheap is None or tight <= cheap:
        return ConvBound(tight, lower, tight, cheap, grid, "fft-certified")
    return ConvBound(cheap, lower, tight, cheap, grid, "reshape")


def trim_zero_taps(weight: Tensor, peaks: Tensor | None = None) -> Tensor:
    """The kernel without its all-zero border slices along each spatial axis (at least one tap kept).
    The operator norm over all input sizes is shift-invariant, so these taps change nothing but cost:
    a 3×3 kernel with only its centre tap is bounded as the 1×1 it is, exactly. ``peaks``: the taps'
    largest |w| (k...), where the caller has them."""
    if peaks is None:
        peaks = weight.abs().amax(dim=(0, 1))  # (k...)
    for axis in range(peaks.dim()):
        others = tuple(a for a in range(peaks.dim()) if a != axis)
        used = torch.nonzero((peaks.amax(dim=others) if others else peaks) > 0).flatten()
        if used.numel() == 0:
            return weight
        first, last = int(used[0]), int(used[-1])
        weight = weight.narrow(2 + axis, first, last - first + 1)
        peaks = peaks.narrow(axis, first, last - first + 1)
    return weight


def as_kernel(kernel: Tensor, device: torch.device | str | None, *, finite: bool = True) -> Tensor:
    """A detached real float64 conv kernel (c_out, c_in, k1[, k2[, k3]]) on ``device``; ``finite`` False:
    the caller checks for NaN and infinite entries itself."""
    if kernel.dim() not in (3, 4, 5):
        raise OperandError(f"expected a conv kernel (c_out, c_in, k1[, k2[, k3]]), got {list(kernel.shape)}")
    if kernel.is_complex():
        raise OperandError("expected a real conv kernel, got a complex one")
    if kernel.numel() == 0:
        raise OperandError(f"expected a non-empty conv kernel, got shape {list(kernel.shape)}")
    weight = kernel.detach().to(device=device if device is not None else kernel.device, dtype=torch.float64)
    if finite and not bool(torch.isfinite(weight).all()):
        raise OperandError("conv kernel has NaN or infinite entries")
    return weight
