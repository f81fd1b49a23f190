"""The norm of a zero-padded 'same' convolution at one input size, by thick-restart Lanczos.

What conv-operator SN (Ryu et al. 2019, "Plug-and-Play Methods Provably Converge with Properly
Trained Denoisers"; Gouk et al. 2021) normalizes by, and the ``--input-size`` figure of any conv.
Pure math: no I/O, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from sninspect.errors import OperandError
from sninspect.linalg.conv_bounds import ROUNDING_SLACK, as_kernel, grid_max
from sninspect.linalg.exact import DEGENERATE_GAP
from sninspect.linalg.failures import typed_solver_errors
from sninspect.linalg.lanczos import ClusterBracket, top_block_bracket

__all__ = ["SizedNorm", "conv_same_operator_norm", "same_conv_pair"]

_CONV = (F.conv1d, F.conv2d, F.conv3d)
_CONV_T = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


def _same_padding(kernel_size: Sequence[int]) -> list[int]:
    """F.pad amounts (last axis first) of PyTorch's padding='same' at stride 1: (k−1)//2 before,
    the rest (one more for even k) after."""
    pads: list[int] = []
    for k in reversed(kernel_size):
        pads += [(k - 1) // 2, (k - 1) - (k - 1) // 2]
    return pads


def _same_conv_pair(
    weight: Tensor, input_size: Sequence[int]
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """(A, Aᵀ) for the zero-padded 'same' stride-1 conv with weight (b, a, k...): (1, a, *n) ↔ (1, b, *n)."""
    d = weight.dim() - 2
    conv, conv_t = _CONV[d - 1], _CONV_T[d - 1]
    if all(k % 2 == 1 for k in weight.shape[2:]):  # symmetric padding: the conv pads itself; the adjoint
        half = [(k - 1) // 2 for k in weight.shape[2:]]  # is the conv with the flipped, transposed kernel
        flipped = weight.flip(list(range(2, d + 2))).transpose(0, 1).contiguous()  # (a, b, k...)
        return (lambda x: conv(x, weight, padding=half)), (lambda y: conv(y, flipped, padding=half))
    pads = _same_padding(weight.shape[2:])
    before = [pads[2 * (d - 1 - i)] for i in range(d)]

    def forward(x: Tensor) -> Tensor:
        return conv(F.pad(x, pads), weight)  # (1, b, *n)

    def adjoint(y: Tensor) -> Tensor:
        # The adjoint of a valid conv is the full transposed conv; of zero-padding, cropping.
        full = conv_t(y, weight)  # (1, a, *(n + k − 1))
        for axis in range(d):
            full = full.narrow(2 + axis, before[axis], input_size[axis])
        return full  # (1, a, *n)

    return forward, adjoint


SIZED_RTOL = 1e-5
"""Default relative a-posteriori width of a 'same'-conv norm bracket. The lower end is a Ritz value,
whose error shrinks like the square of the residual that sets the width (|λ − θ| ≲ ‖r‖²/gap, the gap
below the top cluster that the block holds): measured against dense SVDs at up to 16×16 it is within
2e-9 of σ1 on random, near-degenerate (σ2/σ1 = 1 − 4e-6) and near-orthogonal kernels, from random and
σ2-vector starts (a single Krylov vector was up to 1e-4 low there). The digits printed follow the
certified width (the circulant end), not this one."""

_FLOAT32_FLOOR = 2e-6
"""float32 products carry ~1e-7 relative rounding: float32 iterations go no tighter than this width on
the eigenvalue (a σ width of 1e-6, a tenth of the default), float64 takes any rest and gives the
final bracket."""


@dataclass(frozen=True)
class SizedNorm:
    """A bracket [lower, upper] of the 2-norm of one convolution operator at one input size."""

    lower: float
    """√θ for a float64 Rayleigh quotient θ of AᵀA: a certified lower bound (to rounding)."""
    upper: float
    """A certified upper bound: the norm of the circular convolution on the padded size n + k − 1
    (the 'same' layer is a zero extension, that circulant, then a selection of rows — no output
    wraps — so its norm is at most the circulant's: the exact grid maximum of σ_max(K̂(ω)), Sedghi et
    al. 2019), or ``ceiling`` where that is lower. Not the Lanczos end: θ + ‖r‖ bounds the eigenvalue
    nearest θ, which need not be the top one (a strided, dilated, grouped conv was found where it
    closed 3e-5 below the true norm)."""
    vector: Tensor
    """The top Ritz vector, unit, shaped (1, c_in, *input_size)."""
    products: int
    """Products with AᵀA spent (float32 and float64)."""
    converged: bool
    """The Lanczos a-posteriori width met the request (else the budget ran out first)."""
    estimate_width: float = 0.0
    """√(θ + ‖AᵀAx − θx‖)/√θ − 1: the a-posteriori (Krylov–Weinstein) width of the Lanczos bracket,
    how far the printed lower end is from the top eigenvalue it has converged to (with probability one:
    the start holds a random component along every eigenvector) — the stopping rule, not a certificate."""
    gap: float | None = None
    """σ2/σ1 as the lower end of its interval from the top two Ritz pairs (:func:`_certified_gap`), given
    only where that interval lies wholly on one side of 1 − 1e-6 (``None``: undecided, or one vector)."""
    degenerate: bool = False
    """σ2/σ1 ≥ 1 − 1e-6 by that interval: the top singular vector is not unique."""
    cluster: int = 1
    """How many Ritz values lie within 2e-4 (relative, on σ²) of the top one: the block ran with one more."""
    block: Tensor | None = field(default=None, repr=False)
    """The final Ritz vectors (k, D), top first: a warm start (``u0``) for a nearby kernel's bracket."""
    circulant: float = 0.0
    """The padded circulant's norm as found (the grid maximum, no rounding allowance): the norm of a
    circular convolution with this kernel, so a lower bound of its norm over all input sizes — the
    floor that spares the frequency bound of the same kernel most of its work."""

    @property
    def width(self) -> float:
        """upper / lower − 1 (0 for a zero operator)."""
        return self.upper / self.lower - 1.0 if self.lower > 0.0 else 0.0


@typed_solver_errors
def conv_same_operator_norm(
    kernel: Tensor,
    input_size: tuple[int, ...],
    *,
    transposed: bool = False,
    rtol: float = SIZED_RTOL,
    max_products: int = 3000,
    u0: Tensor | None = None,
    ceiling: float | None = None,
    certify_gap: bool = True,
) -> SizedNorm:
    """The 2-norm of the zero-padded 'same' stride-1 convolution at ``input_size``, as a bracket of
    relative width ``rtol``, and its top right singular vector, shaped (1, c_in, *input_size) with
    c_in the operator's input channels.

    Padding per axis: (k−1)//2 before, the rest after (PyTorch's padding='same'; for odd k that is
    (k−1)/2 per side). ``transposed``: ``kernel`` is a ConvTranspose weight (c_in, c_out, k...) and the
    operator is the exact adjoint of that 'same' convolution (ConvTranspose with padding (k−1)/2 for
    odd k). σ² is the top eigenvalue of AᵀA, bracketed by block Lanczos (linalg.lanczos): a 'same'
    convolution's top singular values come in near pairs (σ2/σ1 = 1 − 1e-7 on trained kernels at
    40×40, 1 − 3e-5 at 8×8), which one Krylov vector cannot tell apart — it stopped on σ2 or a mixture
    of the two, up to 3e-5 low — so the block holds as many vectors as the Ritz values within 2e-4 of
    the top (two at least), and the second pair converges too (loosely), which lifts a top vector the
    start lacked into the block. The vector is the top Ritz vector, one vector of the cluster where
    the top is degenerate. Products run in float32 (to 90% of the width asked, at least 1e-6), then in
    float64, and the final bracket comes from float64 products. ``certify_gap``: decide σ2/σ1 against
    the degeneracy line (:func:`_certified_gap`), with tighter float64 runs where the first leaves it
    open; without it ``gap`` is given only where the first run decides it. The kernel is scaled to max |w| = 1 first
    (1e-170 or 1e154 kernels neither underflow nor overflow). ``u0`` (e.g. a stored conv-operator u) warm-starts the
    iteration (rows (k, D): a block, e.g. the ``block`` of a nearby kernel's result); 1% of a fixed random
    vector is mixed in, and the block's other rows are random. Never raises for lack of convergence: see ``converged``.
    ``ceiling``: a certified upper bound the caller has (e.g. the frequency bound, which holds at
    every size), used where it is below the padded circulant's norm.
    """
    weight = as_kernel(kernel, None)
    d = weight.dim() - 2
    if len(input_size) != d or any(n < 1 for n in input_size):
        raise OperandError(f"input_size must be {d} positive sizes for a {d}-D kernel, got {tuple(input_size)}")
    c_in = weight.shape[0] if transposed else weight.shape[1]
    shape = (1, c_in, *input_size)
    generator = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(math.prod(shape), generator=generator, dtype=torch.float64).to(weight.device)  # (D,)
    noise = noise / torch.linalg.vector_norm(noise)
    start = noise
    if u0 is not None:
        if u0.numel() == 0 or u0.numel() % noise.numel():
            raise OperandError(f"u0 has {u0.numel()} entries, expected {noise.numel()} = prod{shape} (or a multiple)")
        guess = u0.detach().reshape(-1, noise.numel()).to(device=weight.device, dtype=torch.float64)  # (k, D)
        norm = torch.linalg.vector_norm(guess, dim=1, keepdim=True)  # (k, 1)
        if bool(torch.isfinite(norm).all()) and bool((norm > 0.0).all()):
            start = guess / norm + 0.01 * noise
    scale = float(weight.abs().max())
    if scale == 0.0:
        return SizedNorm(0.0, 0.0, start.reshape(shape), 0, True)
    unit = weight / scale  # the norm scales with the kernel: bracket ‖A(w/s)‖, multiply by s

    gram64 = _gram(unit, input_size, transposed, shape)
    gram32 = _gram(unit.float(), input_size, transposed, shape)
    products = 0
    if unit.dtype == torch.float64 and max_products > 1:  # most products in float32, 3× cheaper on a CPU
        # The float64 check below accepts an eigen-residual of 2·rtol (a σ width of rtol): float32 stops
        # at 90% of that, the rest a margin for its rounding (9% fewer products than stopping at rtol).
        coarse = top_block_bracket(gram32, start.float(),
                                   rtol=max(1.8 * rtol, _FLOAT32_FLOOR), max_products=max_products // 2,
                                   pairs=2, loose=_SECOND_LOOSE)
        start, products = coarse.vectors.double(), coarse.products
    fine = top_block_bracket(gram64, start, rtol=2.0 * rtol, max_products=max(1, max_products - products),
                             block=max(2, start.reshape(-1, start.shape[-1]).shape[0]))
    products += fine.products
    gap, degenerate = _certified_gap(fine)
    for _ in range(_REFINES if certify_gap else 0):  # near the 1e-6 line: tighter residuals until decided
        if gap is not None or products >= max_products or len(fine.values) < 2:
            break
        target, begin = _refine_rtol(fine), fine.vectors
        if unit.dtype == torch.float64 and target >= _FLOAT32_FLOOR:  # the residual float32 can reach: 3× cheaper
            coarse = top_block_bracket(gram32, begin.float(), rtol=target, block=begin.shape[0],
                                       max_products=max(1, (max_products - products) // 2), pairs=2)
            begin, products = coarse.vectors.double(), products + coarse.products
        fine = top_block_bracket(gram64, begin, rtol=target, block=begin.shape[0],
                                 max_products=max(1, max_products - products), pairs=2)
        products += fine.products
        gap, degenerate = _certified_gap(fine)
    vector = fine.vectors[0] / torch.linalg.vector_norm(fine.vectors[0])
    vector = vector * torch.sign(vector[torch.argmax(vector.abs())])  # largest entry positive
    slack = 1e-12  # rounding of the float64 Rayleigh quotient and residual
    lower = scale * math.sqrt(max(fine.lower, 0.0)) * (1.0 - slack)
    upper = scale * math.sqrt(max(fine.upper, 0.0)) * (1.0 + slack)
    converged = upper <= lower * (1.0 + rtol) or upper == 0.0
    circulant = scale * _circulant_max(unit, input_size, floor=lower / scale)
    certified = circulant * (1.0 + 2.0 * ROUNDING_SLACK)
    if ceiling is not None:
        certified = min(certified, ceiling)
    return SizedNorm(lower, max(certified, lower), vector.reshape(shape), products, converged,
                     gap=gap, circulant=circulant, estimate_width=upper / lower - 1.0 if lower > 0.0 else 0.0,
                     degenerate=degenerate, cluster=fine.cluster, block=fine.vectors)


_SECOND_LOOSE = 10.0
"""The second Ritz pair stops at 10× the first's residual: converged enough that a top eigenvalue the
start lacked (a stored u on σ2's vector) has surfaced in the block, not to the printed digits."""

_REFINES = 2
"""Float64 block runs after the first (:func:`_refine_rtol`), spent only where the top pair's interval
straddles the degeneracy line (σ2/σ1 within about the residual of 1 − 1e-6)."""


def _refine_rtol(fine: ClusterBracket) -> float:
    """The residual (relative to θ1) of the top pair that should decide σ2/σ1 against the degeneracy line:
    small enough that its quadratic bound ‖R‖²/η is half the distance of θ2 from the line, and at least
    3× below the present one (never below float64's reach)."""
    theta1, theta2, spread = fine.values[0], fine.values[1], fine.pair_residual
    distance = abs(theta2 - (1.0 - DEGENERATE_GAP) ** 2 * theta1)
    eta = theta2 - fine.values[2] - fine.residuals[2] if len(fine.values) > 2 else 0.0
    target = spread / 3.0
    if eta > 0.0:
        target = min(target, math.sqrt(0.5 * distance * eta))
    return max(target / max(theta1, 1e-300), 1e-13)


def _certified_gap(fine: ClusterBracket) -> tuple[float | None, bool]:
    """(σ2/σ1, degenerate) from the top Ritz pairs, or (None, False) where they do not decide.

    θ2 ≤ λ2 (Courant–Fischer: certified). Above: ‖R‖, the residual block of the top two pairs, puts two
    eigenvalues, λ1 and λ2 (with probability one, as for the a-posteriori end of the bracket), within
    ‖R‖ of θ1 and θ2 (Kahan), and within ‖R‖²/η where the third pair shows the rest of the spectrum η
    below θ2 (η = θ2 − θ3 − r3; Mathias 1998, quadratic residual bounds). So σ2/σ1 lies in
    [√(θ2/(θ1 + ε)), √((θ2 + ε)/θ1)], ε the smaller bound. The lower end is the gap given, and only where
    the interval lies on one side of the degeneracy line 1 − DEGENERATE_GAP, which decides ``degenerate``."""
    if len(fine.values) < 2 or fine.values[0] <= 0.0:
        return None, False
    theta1, theta2, spread = fine.values[0], max(fine.values[1], 0.0), fine.pair_residual
    if len(fine.values) > 2:
        eta = theta2 - fine.values[2] - fine.residuals[2]
        if eta > 0.0:
            spread = min(spread, spread * spread / eta)
    low = math.sqrt(theta2 / (theta1 + spread))
    high = min(1.0, math.sqrt((theta2 + spread) / theta1))
    line = 1.0 - DEGENERATE_GAP
    if low >= line:
        return low, True
    if high < line:
        return low, False
    return None, False


def _circulant_max(weight: Tensor, input_size: Sequence[int], *, floor: float) -> float:
    """The grid maximum of σ_max(K̂(ω)) on the padded size n + k − 1 (or ``floor`` where higher)."""
    padded = [n + k - 1 for n, k in zip(input_size, weight.shape[2:], strict=True)]
    return grid_max(weight, padded, floor=floor)


def same_conv_pair(weight: Tensor, input_size: Sequence[int], *, transposed: bool = False
                   ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """(A, Aᵀ) of the zero-padded 'same' stride-1 convolution at ``input_size`` (padding as in
    :func:`conv_same_operator_norm`), on feature maps (1, C, *size); ``transposed``: ``weight`` is a
    ConvTranspose weight and A that conv's adjoint."""
    forward, adjoint = _same_conv_pair(weight, input_size)
    return (adjoint, forward) if transposed else (forward, adjoint)


def _gram(weight: Tensor, input_size: Sequence[int], transposed: bool,
          shape: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    """X ↦ AᵀA X on the rows of X (b, D), as one batch, in ``weight``'s dtype."""
    forward, adjoint = _same_conv_pair(weight, input_size)
    if transposed:
        forward, adjoint = adjoint, forward

    def gram(x: Tensor) -> Tensor:  # AᵀA on rows: (b, D) → (b, D)
        rows = x.reshape(-1, *shape[1:])
        return adjoint(forward(rows)).reshape(rows.shape[0], -1)

    return gram
