"""The exact norm of a zero-padded 'same' convolution at one input size, by thick-restart Lanczos.

What conv-operator SN (Ryu et al. 2019, "Plug-and-Play Methods Provably Converge with Properly
Trained Denoisers"; Gouk et al. 2021) normalizes by, and the ``--input-size`` figure of any conv.
Pure math: no I/O, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sninspect.errors import NotConvergedError, OperandError
from sninspect.linalg.conv_bounds import as_kernel
from sninspect.linalg.failures import typed_solver_errors

__all__ = ["NotConvergedError", "conv_same_operator_norm"]

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
    pads = _same_padding(weight.shape[2:])
    conv, conv_t = _CONV[d - 1], _CONV_T[d - 1]
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


def _top_eigenpair(
    apply: Callable[[Tensor], Tensor], start: Tensor, *, tol: float, max_iter: int, basis: int = 24,
    keep: int = 6,
) -> tuple[float, Tensor]:
    """Largest eigenpair of a symmetric positive semidefinite operator: thick-restart Lanczos.

    Rayleigh–Ritz on an orthonormal basis Q (with W = M Q); each step adds the residual of the top
    Ritz pair, which spans the next Krylov direction (so this is Lanczos), orthogonalized twice; a
    full basis restarts from the top ``keep`` Ritz vectors (Wu & Simon 2000, SIAM J. Matrix Anal.
    Appl. 22). Stops when ‖Mx − θx‖ ≤ tol·θ, re-checked with a fresh product: then θ is within
    tol·θ of an eigenvalue — the largest, since the start has a component along every eigenvector.
    ``max_iter`` counts products with M.
    """
    dim = start.numel()
    basis = min(basis, dim)
    keep = max(1, min(keep, basis - 1))
    q_mat = start.new_zeros(basis, dim)  # (basis, D) orthonormal rows
    w_mat = start.new_zeros(basis, dim)  # (basis, D) M applied to each row
    q_mat[0] = start / torch.linalg.vector_norm(start)
    w_mat[0] = apply(q_mat[0])
    size, products = 1, 1
    generator = torch.Generator(device="cpu").manual_seed(1)
    while True:
        projected = q_mat[:size] @ w_mat[:size].T  # (size, size)
        theta, ritz = torch.linalg.eigh(0.5 * (projected + projected.T))  # ascending
        theta, ritz = theta.flip(0), ritz.flip(1)
        top = float(theta[0])
        x = ritz[:, 0] @ q_mat[:size]  # (D,)
        residual = ritz[:, 0] @ w_mat[:size] - top * x  # (D,)
        if top <= 0.0:
            return 0.0, x  # M = 0 on the start's Krylov space, and M ⪰ 0
        if float(torch.linalg.vector_norm(residual)) <= tol * top:
            mx = apply(x)  # fresh product: the recurrence for W drifts slowly
            products += 1
            top = float(x @ mx)
            if float(torch.linalg.vector_norm(mx - top * x)) <= tol * top:
                return top, x
            q_mat[0], w_mat[0], size = x, mx, 1  # drifted: restart from x
            continue
        if products >= max_iter:
            raise NotConvergedError(
                f"Lanczos did not reach a relative residual of {tol:g} in {max_iter} products "
                f"(now {float(torch.linalg.vector_norm(residual)) / top:.3g})"
            )
        if size == basis:  # thick restart: keep the top Ritz vectors; the residual stays ⟂ to them
            q_mat[:keep] = ritz[:, :keep].T @ q_mat[:size]
            w_mat[:keep] = ritz[:, :keep].T @ w_mat[:size]
            size = keep
        direction = residual
        for _ in range(2):  # classical Gram–Schmidt, twice
            direction = direction - (direction @ q_mat[:size].T) @ q_mat[:size]
        norm = float(torch.linalg.vector_norm(direction))
        if norm <= 1e-10 * float(torch.linalg.vector_norm(residual)):  # breakdown: an invariant subspace
            direction = torch.randn(dim, generator=generator, dtype=start.dtype).to(start.device)
            for _ in range(2):
                direction = direction - (direction @ q_mat[:size].T) @ q_mat[:size]
            norm = float(torch.linalg.vector_norm(direction))
        q_mat[size] = direction / norm
        w_mat[size] = apply(q_mat[size])
        size += 1
        products += 1


@typed_solver_errors
def conv_same_operator_norm(
    kernel: Tensor,
    input_size: tuple[int, ...],
    *,
    transposed: bool = False,
    tol: float = 1e-12,
    max_iter: int = 10_000,
    u0: Tensor | None = None,
) -> tuple[float, Tensor]:
    """Exact 2-norm of the zero-padded 'same' stride-1 convolution at ``input_size`` and its top right
    singular vector, shaped (1, c_in, *input_size) with c_in the operator's input channels.

    Padding per axis: (k−1)//2 before, the rest after (PyTorch's padding='same'; for odd k that is
    (k−1)/2 per side). ``transposed``: ``kernel`` is a ConvTranspose weight (c_in, c_out, k...) and the
    operator is the exact adjoint of that 'same' convolution (ConvTranspose with padding (k−1)/2 for
    odd k). σ² is the top eigenvalue of AᵀA (conv, then its transpose), found by thick-restart
    Lanczos to a relative residual ``tol``: σ is then accurate to ~tol/2 relative whatever the gap,
    and the vector to ~tol·σ1²/(σ1² − σ2²) in angle. When σ1 ≈ σ2 the value is still right but the
    vector is some unit vector of the near-degenerate top subspace: it is not unique. ``u0`` (e.g. a
    stored conv-operator u) warm-starts the iteration; 1% of a fixed random vector is mixed in so that
    a start with no component along the top vector cannot stall on the second. float64.
    """
    weight = as_kernel(kernel, None)
    d = weight.dim() - 2
    if len(input_size) != d or any(n < 1 for n in input_size):
        raise OperandError(f"input_size must be {d} positive sizes for a {d}-D kernel, got {tuple(input_size)}")
    forward, adjoint = _same_conv_pair(weight, input_size)
    if transposed:
        forward, adjoint = adjoint, forward
    c_in = weight.shape[0] if transposed else weight.shape[1]
    shape = (1, c_in, *input_size)

    def gram(x: Tensor) -> Tensor:
        return adjoint(forward(x.reshape(shape))).reshape(-1)  # AᵀA x, (D,)

    generator = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(math.prod(shape), generator=generator, dtype=torch.float64).to(weight.device)  # (D,)
    noise = noise / torch.linalg.vector_norm(noise)
    if u0 is None:
        start = noise
    else:
        if u0.numel() != noise.numel():
            raise OperandError(f"u0 has {u0.numel()} entries, expected {noise.numel()} = prod{shape}")
        guess = u0.detach().reshape(-1).to(device=weight.device, dtype=torch.float64)  # (D,)
        norm = torch.linalg.vector_norm(guess)
        start = guess / norm + 0.01 * noise if float(norm) > 0.0 else noise
    eigenvalue, vector = _top_eigenpair(gram, start, tol=tol, max_iter=max_iter)
    vector = vector / torch.linalg.vector_norm(vector)
    vector = vector * torch.sign(vector[torch.argmax(vector.abs())])  # largest entry positive
    return math.sqrt(max(eigenvalue, 0.0)), vector.reshape(shape)
