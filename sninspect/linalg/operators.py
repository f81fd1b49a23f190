"""Norms of the linear pieces of a network at their real input size, and Lipschitz constants of
activations: the factors of a graph bound. Pure math: no I/O, no printing, no graph.

Every upper end here is certified without assumptions on an iteration: a convolution's is the smaller
of its size-free frequency bound and its circulant bound at the real size; a non-negative operator's
(pooling, means, sums) the Schur test; a matrix's its σ1 from an SVD. The lower end of each bracket
is a Rayleigh quotient from Lanczos on AᵀA (:mod:`sninspect.linalg.lanczos`), with the adjoint from
``torch.func.vjp`` at 0 (for a linear map the pullback *is* Aᵀ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sninspect.errors import OperandError
from sninspect.linalg.conv_bounds import ROUNDING_SLACK, conv_operator_bound, grid_max
from sninspect.linalg.failures import typed_solver_errors
from sninspect.linalg.lanczos import top_eigen_bracket

__all__ = ["OperatorNorm", "activation_lipschitz", "circulant_bound", "conv_norm_at", "grouped_conv_bound",
           "matrix_norm",
           "max_pool_lipschitz", "nonnegative_norm_at", "sized_norm"]

SLACK = 1e-12
"""Relative allowance for the rounding of float64 Rayleigh quotients, residuals and SVDs."""


@dataclass(frozen=True)
class OperatorNorm:
    """A bracket [lower, upper] of a linear operator's 2-norm at one input size."""

    lower: float
    upper: float
    method: str
    """How ``upper`` was obtained: ``lanczos``, ``frequency``, ``schur``, ``svd``."""


@typed_solver_errors
def sized_norm(
    forward: Callable[[Tensor], Tensor], shape: Sequence[int], *, ceiling: float, ceiling_method: str,
    rtol: float = 1e-4, max_products: int = 300,
) -> OperatorNorm:
    """The 2-norm of the linear map ``forward`` on float64 tensors of ``shape``: [√θ, ceiling].

    √θ is the top Ritz value of Lanczos on AᵀA (a Rayleigh quotient: certified from below; the start
    is a fixed-seed Gaussian vector). The upper end is the caller's certified ``ceiling``, never the
    Lanczos end √(θ + ‖r‖): that bounds the eigenvalue *nearest* θ, which need not be the top one
    (the tests found a grouped transposed conv whose bracket closed 3e-5 below its true norm)."""
    zero = torch.zeros(tuple(shape), dtype=torch.float64)
    _, pullback = torch.func.vjp(forward, zero)

    def gram(flat: Tensor) -> Tensor:
        return pullback(forward(flat.reshape(zero.shape)))[0].reshape(-1)  # AᵀA x, (D,)

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(zero.numel(), generator=generator, dtype=torch.float64)
    bracket = top_eigen_bracket(gram, start, rtol=2.0 * rtol, max_products=max_products)
    lower = math.sqrt(max(bracket.lower, 0.0)) * (1.0 - SLACK)
    return OperatorNorm(min(lower, ceiling), ceiling, ceiling_method)


def matrix_norm(weight: Tensor) -> OperatorNorm:
    """σ1 of a matrix (a linear layer's weight, (out, in)), exact to rounding (SVD in float64)."""
    if weight.dim() != 2 or weight.numel() == 0:
        raise OperandError(f"expected a non-empty matrix, got shape {list(weight.shape)}")
    sigma = float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))
    return OperatorNorm(sigma * (1.0 - SLACK), sigma * (1.0 + SLACK), "svd")


def grouped_conv_bound(weight: Tensor, groups: int, *, transposed: bool, tol: float = 0.01) -> float:
    """Certified size-free bound of a grouped convolution: max over groups of each group's frequency
    bound (the operator is block diagonal over groups; any stride, padding, dilation, size)."""
    blocks = weight.detach().double().chunk(groups, dim=0)  # conv: out channels; transposed: in channels
    del transposed  # either way the weight's first axis is split by group
    return max(conv_operator_bound(block, tol=tol).upper for block in blocks)


def circulant_bound(weight: Tensor, padded: Sequence[int], dilation: Sequence[int], groups: int) -> float:
    """Certified bound of a zero-padded convolution on inputs of ``padded`` size (input plus both
    paddings), any stride: the layer is E (zero padding, an isometry), then the circular convolution
    of size N = ``padded`` (its valid outputs are rows of that circulant: no output wraps), then a
    selection of rows (stride, cropping: norm ≤ 1), so its norm is at most the circulant's, which is
    exactly max over the N-grid of σ_max(K̂(ω)) (Sedghi et al. 2019). Dilation inserts zeros in the
    kernel; groups are diagonal blocks (max over blocks)."""
    kernel = weight.detach().double()
    d = kernel.dim() - 2
    if any(x > 1 for x in dilation):
        size = [dil * (k - 1) + 1 for dil, k in zip(dilation, kernel.shape[2:], strict=True)]
        sparse = kernel.new_zeros(*kernel.shape[:2], *size)
        sparse[(slice(None), slice(None), *[slice(None, None, dil) for dil in dilation])] = kernel
        kernel = sparse
    grid = [max(int(n), int(k)) for n, k in zip(padded, kernel.shape[2:], strict=True)]
    best = 0.0
    for block in kernel.chunk(groups, dim=0):
        scale = float(block.abs().max())
        if scale > 0.0:
            best = max(best, scale * grid_max(block / scale, grid[:d]))
    return best * (1.0 + 2.0 * ROUNDING_SLACK)


def conv_norm_at(
    weight: Tensor, input_shape: Sequence[int], *, stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], groups: int, transposed: bool = False, output_padding: Sequence[int] = (),
    rtol: float = 1e-4, max_products: int = 300,
) -> OperatorNorm:
    """The 2-norm of a convolution with its real stride, padding, dilation and groups on inputs of
    ``input_shape`` (one sample, (1, C, *spatial)); no bias (a shift changes no Lipschitz constant).
    Upper end: min(size-free frequency bound, the circulant bound at this size); lower end: Lanczos."""
    kernel = weight.detach().double()
    d = kernel.dim() - 2
    out_pad = list(output_padding) or [0] * d

    def forward(x: Tensor) -> Tensor:
        return torch.ops.aten.convolution(x, kernel, None, list(stride), list(padding), list(dilation),
                                          transposed, out_pad, groups)

    frequency = grouped_conv_bound(kernel, groups, transposed=transposed)
    with torch.no_grad():  # a transposed conv is the adjoint of a conv reading its output's size
        spatial = forward(torch.zeros(tuple(input_shape), dtype=torch.float64)).shape[2:] if transposed \
            else tuple(input_shape)[2:]
    padded = [n + 2 * p for n, p in zip(spatial, padding, strict=True)]
    circulant = circulant_bound(kernel, padded, dilation, groups)
    ceiling, method = (circulant, f"circulant {'x'.join(map(str, padded))}") if circulant < frequency \
        else (frequency, "frequency")
    return sized_norm(forward, input_shape, ceiling=ceiling, ceiling_method=method, rtol=rtol,
                      max_products=max_products)


def nonnegative_norm_at(forward: Callable[[Tensor], Tensor], shape: Sequence[int], *, rtol: float = 1e-4,
                        max_products: int = 300) -> OperatorNorm:
    """The 2-norm of a linear map with non-negative entries (average pooling, a mean or sum over
    axes). Ceiling: the Schur test ‖A‖ ≤ √(‖A‖₁‖A‖∞), the largest column and row sums read off Aᵀ1
    and A1 (exact for non-overlapping pooling: 1/√k for a window of k)."""
    ones = torch.ones(tuple(shape), dtype=torch.float64)
    rows, pullback = torch.func.vjp(forward, ones)
    cols = pullback(torch.ones_like(rows))[0]
    if bool((rows < 0).any()) or bool((cols < 0).any()):
        raise OperandError("the operator has negative entries; the Schur test does not apply")
    schur = math.sqrt(float(rows.max()) * float(cols.max())) * (1.0 + SLACK) if rows.numel() else 0.0
    return sized_norm(forward, shape, ceiling=schur, ceiling_method="schur", rtol=rtol,
                      max_products=max_products)


def max_pool_lipschitz(input_size: Sequence[int], output_size: Sequence[int], kernel: Sequence[int],
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> float:
    """Lipschitz constant bound of max pooling: √(most windows any input lies in).

    |max a − max b| ≤ max |a − b| ≤ ‖a − b‖ over one window, so ‖y − y'‖² ≤ Σ_windows ‖Δ_window‖² ≤
    c ‖Δ‖² with c the largest number of windows sharing an input (a product over axes)."""
    count = 1
    for n, m, k, s, p, d in zip(input_size, output_size, kernel, stride, padding, dilation, strict=True):
        if s < 1 or d < 1:
            raise ValueError(f"stride {s} and dilation {d} must be positive")
        if m < 1 or k < 1 or n < 1:
            return 0.0  # no window: no output entry depends on the input
        # cover[i] = #{(o, j): o·s + j·d = i + p}: the window starts (every s-th of m) convolved with the
        # taps (every d-th of k), by FFT (exact after rounding: the counts are small integers)
        starts, taps = (m - 1) * s + 1, (k - 1) * d + 1
        if starts + taps > 2**27:
            raise ValueError(f"pooling windows spanning {starts + taps} entries")
        size = starts + taps - 1
        a = torch.zeros(starts, dtype=torch.float64)
        a[::s] = 1.0
        b = torch.zeros(taps, dtype=torch.float64)
        b[::d] = 1.0
        cover = torch.fft.irfft(torch.fft.rfft(a, size) * torch.fft.rfft(b, size), size).round()
        seen = cover[max(p, 0): max(min(p + n, size), 0)]
        count *= int(seen.max()) if seen.numel() else 0
    return math.sqrt(count)


def _grid_sup(derivative: Callable[[Tensor], Tensor], lo: float, hi: float, second: float) -> float:
    """sup |f'| on [lo, hi] from a grid of step h, plus the certified margin second·h/2 (|f''| ≤ second)."""
    h = 1e-4
    grid = torch.arange(lo, hi + h, h, dtype=torch.float64)
    return float(derivative(grid).abs().max()) + second * h / 2.0


def _gelu_lipschitz() -> float:
    """GELU(x) = xΦ(x): f' = Φ(x) + xφ(x), f'' = φ(x)(2 − x²); the extremes of f' are at ±√2 and
    |f'(−√2)| < f'(√2) = Φ(√2) + √2 φ(√2) ≈ 1.1289."""
    root = math.sqrt(2.0)
    return 0.5 * (1.0 + math.erf(1.0)) + root * math.exp(-1.0) / math.sqrt(2.0 * math.pi)


def _silu_lipschitz() -> float:
    """SiLU(x) = xσ(x): f' = σ(1 + x(1 − σ)) has its maximum ≈ 1.0998 near x ≈ 2.40 (|f''| ≤ 1/2,
    and f' → 1 for |x| beyond 20)."""
    def derivative(x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    return max(1.0, _grid_sup(derivative, -20.0, 20.0, 0.5))


def activation_lipschitz(name: str, args: Sequence[object]) -> float | None:
    """The Lipschitz constant of an elementwise activation (``name`` as the aten op's base name, with
    its non-tensor arguments), or None when sninspect has no certified constant for it."""
    match name:
        case "relu" | "relu_" | "relu6" | "hardtanh" | "hardtanh_" | "tanh" | "tanh_" | "softsign":
            return 1.0
        case "sigmoid" | "sigmoid_":
            return 0.25
        case "hardsigmoid" | "hardsigmoid_":
            return 1.0 / 6.0
        case "leaky_relu" | "leaky_relu_":
            slope = float(args[0]) if args else 0.01  # type: ignore[arg-type]
            return max(1.0, abs(slope))
        case "elu" | "elu_":
            alpha = float(args[0]) if args else 1.0  # type: ignore[arg-type]
            scale = float(args[1]) if len(args) > 1 else 1.0  # type: ignore[arg-type]
            input_scale = float(args[2]) if len(args) > 2 else 1.0  # type: ignore[arg-type]
            return abs(scale) * max(1.0, abs(alpha * input_scale))
        case "softplus":
            return 1.0  # f' = σ(βx) for every β
        case "gelu" | "gelu_":
            return _gelu_lipschitz() if not args or args[0] == "none" else None
        case "silu" | "silu_":
            return _silu_lipschitz()
    return None
