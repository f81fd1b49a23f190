"""Certified Lipschitz bounds: convolutions as operators, BatchNorm, the network. Pure math.

A convolution's operator 2-norm is not the spectral norm of its reshaped kernel. For a kernel K
(c_out, c_in, k_1..k_d) the multichannel symbol K̂(ω) = Σ_x K[:, :, x] e^{-i ω·x} gives

    σ* = sup_ω σ_max(K̂(ω)),

the norm of the convolution on ℓ2(Z^d). Every concrete layer — zero padding of any amount, circular
'same' padding, any stride (a subsampling, norm ≤ 1), dilation (K̂(dω): same sup), any input size (a
compression of the infinite operator), transposed (the adjoint: same norm) — has norm ≤ σ*; a grouped
convolution is block diagonal, and its blocks are sub-blocks of the dense (c_out, c_in/groups) symbol,
so reading the stored kernel as dense still bounds it.

σ* is approximated on an N-point frequency grid; the grid maximum is the exact norm of the circular
convolution at size N (a lower estimate) and is certified into an upper bound with the inequality for
trigonometric polynomials of degree n sampled at N > 2n equispaced points,
max_ω |p(ω)| ≤ max_j |p(ω_j)| / cos(π n / N) (Ehlich & Zeller 1964), applied per axis to
p(ω) = |yᴴ K̂(ω) x|², which has degree k_i − 1 along axis i:

    σ* ≤ max_grid / sqrt(∏_i cos(π (k_i − 1) / N_i)).

The cheap bound is Singla & Feizi 2021 ("Fantastic Four"): √(∏ k) · min of the exact σ1 of the
kernel's reshapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK_BYTES = 256 * 2**20
"""Largest block of frequency matrices held at once."""


@dataclass(frozen=True)
class ConvBound:
    """Certified bracket of a convolution kernel's operator 2-norm."""

    upper: float
    """Certified upper bound: min(tight, cheap). The layer's ``operator_bound``."""
    lower: float
    """Grid maximum = exact norm of the circular convolution at the grid size (``operator_lower``)."""
    tight: float
    """Certified frequency bound max_grid / sqrt(∏ cos(π(k−1)/N))."""
    cheap: float
    """√(∏ k) · min σ1 over the kernel's reshapes (Singla & Feizi 2021)."""
    grid: tuple[int, ...]
    """Frequency grid size per spatial axis."""
    method: str
    """``exact (1x1)`` or ``fft-certified``."""


def grid_sizes(kernel_size: Sequence[int], tol: float) -> tuple[int, ...]:
    """Smallest N per axis (N > 2(k−1)) with ∏ 1/sqrt(cos(π(k−1)/N)) ≤ 1 + tol."""
    moving = [k for k in kernel_size if k > 1]
    per_axis = (1.0 + tol) ** (1.0 / max(1, len(moving))) - 1.0
    sizes = []
    for k in kernel_size:
        if k == 1:
            sizes.append(1)
            continue
        n = 2 * (k - 1) + 1
        while 1.0 / math.sqrt(math.cos(math.pi * (k - 1) / n)) - 1.0 > per_axis:
            n += 1
        sizes.append(n)
    return tuple(sizes)


def certification_factor(kernel_size: Sequence[int], grid: Sequence[int]) -> float:
    """1 / sqrt(∏ cos(π(k−1)/N)): what the grid maximum is multiplied by to be certified."""
    product = 1.0
    for k, n in zip(kernel_size, grid):
        if k > 1:
            # Precondition: the inequality needs N > 2(k−1)
            assert n > 2 * (k - 1)
            product *= math.cos(math.pi * (k - 1) / n)
    return 1.0 / math.sqrt(product)


def grid_max(kernel: Tensor, grid: Sequence[int]) -> float:
    """max over the N-grid of σ_max(K̂(ω)), via the FFT of the zero-padded kernel.

    K is real, so K̂(−ω) = conj K̂(ω) has the same singular values: half the grid suffices (rfft).
    σ_max² is the top eigenvalue of the smaller Gram matrix K̂ K̂ᴴ or K̂ᴴ K̂.
    """
    c_out, c_in = kernel.shape[:2]
    spatial = tuple(range(2, kernel.dim()))
    symbol = torch.fft.rfftn(kernel, s=tuple(grid), dim=spatial)  # (c_out, c_in, N1, .., Nd//2+1)
    mats = symbol.movedim(0, -1).movedim(0, -1).reshape(-1, c_out, c_in)  # (F, c_out, c_in)
    side = min(c_out, c_in)
    step = max(1, CHUNK_BYTES // max(1, 16 * (c_out * c_in + side * side)))
    best = 0.0
    for start in range(0, mats.shape[0], step):
        block = mats[start : start + step]  # (f, c_out, c_in)
        gram = block @ block.mH if c_out <= c_in else block.mH @ block  # (f, side, side)
        top = torch.linalg.eigvalsh(gram)[:, -1]  # (f,)
        best = max(best, float(top.max().clamp(min=0.0)))
    return math.sqrt(best)


def reshape_bound(kernel: Tensor) -> float:
    """√(∏ k) · min σ1 over the kernel's reshapes (Singla & Feizi 2021).

    (c_out, c_in·∏k) and (c_out·∏k, c_in) hold in any dimension: the output is R applied to the
    stack of the ∏k shifted inputs, whose norm is at most √(∏k)‖x‖ (and the adjoint argument for the
    second). For 2-D kernels also (c_out·k_h, c_in·k_w) and (c_out·k_w, c_in·k_h).
    """
    c_out, c_in = kernel.shape[:2]
    ks = tuple(kernel.shape[2:])
    reshapes = [kernel.reshape(c_out, -1), kernel.permute(0, *range(2, kernel.dim()), 1).reshape(-1, c_in)]
    if len(ks) == 2:
        reshapes.append(kernel.permute(0, 2, 1, 3).reshape(c_out * ks[0], c_in * ks[1]))
        reshapes.append(kernel.permute(0, 3, 1, 2).reshape(c_out * ks[1], c_in * ks[0]))
    norms = [float(torch.linalg.matrix_norm(r, ord=2)) for r in reshapes]
    return math.sqrt(math.prod(ks)) * min(norms)


def conv_operator_bound(kernel: Tensor, *, tol: float = 0.01, device: torch.device | str | None = None) -> ConvBound:
    """Certified bracket [lower, upper] of the operator norm of a convolution with this kernel,
    valid for any stride, padding, dilation, groups, input size, transposed or not."""
    if kernel.dim() < 3:
        raise ValueError(f"expected a conv kernel (c_out, c_in, k...), got shape {list(kernel.shape)}")
    kernel = kernel.detach()
    if device is not None:
        kernel = kernel.to(device)
    if not kernel.is_floating_point():
        kernel = kernel.double()
    ks = tuple(kernel.shape[2:])
    if all(k == 1 for k in ks):
        exact = float(torch.linalg.matrix_norm(kernel.reshape(kernel.shape[0], kernel.shape[1]), ord=2))
        return ConvBound(exact, exact, exact, exact, (1,) * len(ks), "exact (1x1)")
    grid = grid_sizes(ks, tol)
    lower = grid_max(kernel, grid)
    tight = lower * certification_factor(ks, grid)
    cheap = reshape_bound(kernel)
    return ConvBound(min(tight, cheap), lower, tight, cheap, grid, "fft-certified")


def _same_padding(ks: Sequence[int]) -> list[int]:
    """F.pad amounts (last axis first) for PyTorch's padding='same' at stride 1 and dilation 1."""
    pads: list[int] = []
    for k in reversed(ks):
        total = k - 1
        pads += [total // 2, total - total // 2]
    return pads


def _conv(x: Tensor, kernel: Tensor, transposed: bool) -> Tensor:
    """Zero-padded 'same' stride-1 convolution (or its transpose) of the right dimension."""
    d = kernel.dim() - 2
    if transposed:
        # The transpose of 'same' conv: full conv_transpose, then crop what the padding added.
        y = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[d - 1](x, kernel)
        pads = _same_padding(kernel.shape[2:])
        slices = [slice(None), slice(None)]
        for axis in range(d):
            lo = pads[2 * (d - 1 - axis)]
            slices.append(slice(lo, lo + x.shape[2 + axis]))
        return y[tuple(slices)]
    x = F.pad(x, _same_padding(kernel.shape[2:]))
    return (F.conv1d, F.conv2d, F.conv3d)[d - 1](x, kernel)


def conv_same_operator_norm(
    kernel: Tensor,
    input_size: tuple[int, ...],
    *,
    transposed: bool = False,
    tol: float = 1e-9,
    max_iter: int = 20_000,
    u0: Tensor | None = None,
) -> tuple[float, Tensor]:
    """Exact 2-norm of the zero-padded 'same' stride-1 convolution at ``input_size``, and its top
    right singular vector (1, c_in, *input_size), by power iteration on AᵀA (Aᵀ through autograd).

    Converges like (σ2/σ1)² per step; stops when the residual ‖AᵀAx − λx‖ ≤ tol·λ, so σ is accurate
    to about tol² relative and the vector to about tol. With σ1 ≈ σ2 the value still converges (from
    below) but the vector is any in the top subspace, and ``max_iter`` may end the iteration first.
    """
    kernel = kernel.detach()
    c_in = kernel.shape[0] if transposed else kernel.shape[1]
    shape = (1, c_in, *input_size)
    if u0 is not None:
        x = u0.detach().to(kernel).reshape(shape).clone()
    else:
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(shape, generator=generator, dtype=kernel.dtype).to(kernel.device)
    x = x / torch.linalg.vector_norm(x)
    lam = 0.0
    for _ in range(max_iter):
        ata_x = _gram_apply(x, kernel, transposed)  # AᵀA x
        lam = float(torch.sum(x * ata_x))  # Rayleigh quotient ≈ σ²
        residual = float(torch.linalg.vector_norm(ata_x - lam * x))
        norm = torch.linalg.vector_norm(ata_x)
        if float(norm) == 0.0:
            return 0.0, x
        x = ata_x / norm
        # ‖AᵀA x − λ x‖ ≤ tol·λ: the vector has converged, and λ to about tol² relative.
        if residual <= tol * max(lam, 1e-300):
            break
    return math.sqrt(max(lam, 0.0)), x.detach()


def _gram_apply(x: Tensor, kernel: Tensor, transposed: bool) -> Tensor:
    """AᵀA x for the 'same' convolution A, the adjoint through autograd (exact, any padding)."""
    x = x.detach().requires_grad_(True)
    y = _conv(x, kernel, transposed)
    (ata_x,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
    return ata_x.detach()


def batchnorm_factor(weight: Tensor | None, running_var: Tensor, eps: float = 1e-5) -> float:
    """Eval-mode BatchNorm is a per-channel affine map: its Lipschitz constant is
    max |γ| / sqrt(running_var + ε) (γ = 1 without affine weights)."""
    var = running_var.detach().double()
    gamma = weight.detach().double().abs() if weight is not None else torch.ones_like(var)
    return float((gamma / torch.sqrt(var + eps)).max())


def cumulative_product(factors: Sequence[float]) -> list[float]:
    """Running product of the factors (the network bound by depth)."""
    out, running = [], 1.0
    for factor in factors:
        running *= factor
        out.append(running)
    return out
