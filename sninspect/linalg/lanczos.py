"""Top eigenvalue of a symmetric positive semidefinite operator as a bracket, by thick-restart Lanczos.

Stops on the bracket, not on the vector: [θ, θ + ‖Mx − θx‖] for the top Ritz pair (θ, x). θ is a
Rayleigh quotient, so θ ≤ λ_max (certified: a lower bound). θ + ‖r‖ bounds the eigenvalue nearest θ
(Krylov–Weinstein), which is λ_max once the Krylov space holds a component along the top eigenvector
(the start mixes in a random vector: true with probability 1). Near-degenerate top eigenvalues slow the
vector, not the value: the bracket closes when the residual does, whatever vector of the top cluster x is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy
import torch
from torch import Tensor


@dataclass(frozen=True)
class EigenBracket:
    lower: float
    """θ: a Rayleigh quotient of M, ≤ λ_max."""
    upper: float
    """θ + ‖Mx − θx‖: the a-posteriori bound of the eigenvalue nearest θ."""
    vector: Tensor
    """The top Ritz vector x (unit)."""
    products: int
    converged: bool
    """The bracket met its tolerance (else: the best bracket found within the product budget)."""
    second: float = 0.0
    """The second Ritz value θ2 (≤ λ2 by interlacing): an estimate of the next eigenvalue from below;
    0 when the Krylov space has one vector."""


def top_eigen_bracket(
    apply: Callable[[Tensor], Tensor], start: Tensor, *, rtol: float, max_products: int,
    basis: int = 24, keep: int = 6,
) -> EigenBracket:
    """Lanczos on M (``apply``: (D,) → (D,), in ``start``'s dtype) until (upper − lower) ≤ rtol·lower.

    Rayleigh–Ritz on an orthonormal basis Q (with W = M Q); each step adds the residual of the top
    Ritz pair, which spans the next Krylov direction (so this is Lanczos), orthogonalized twice; a full
    basis restarts from the top ``keep`` Ritz vectors (Wu & Simon 2000, SIAM J. Matrix Anal. Appl. 22).
    Only the new row of the projected matrix Q M Qᵀ is computed per step. The returned bracket comes
    from one fresh product with the top Ritz vector (the recurrence drifts slowly); when the budget
    runs out it is the bracket reached so far, ``converged`` False — never an exception. (Only the top
    Ritz pair's residual bounds λ_max: an earlier, lower Ritz value's interval may hold another
    eigenvalue, so no "best so far" is kept.)
    """
    dim = start.numel()
    basis = min(basis, dim)
    keep = max(1, min(keep, basis - 1))
    q_mat = start.new_zeros(basis, dim)  # (basis, D) orthonormal rows
    w_mat = start.new_zeros(basis, dim)  # (basis, D) M applied to each row
    h_mat = start.new_zeros(basis, basis, dtype=torch.float64)  # projected matrix Q M Qᵀ, grown by one row
    q_mat[0] = start / torch.linalg.vector_norm(start)
    w_mat[0] = apply(q_mat[0])
    h_mat[0, 0] = float(q_mat[0] @ w_mat[0])
    size, products = 1, 1
    generator = torch.Generator(device="cpu").manual_seed(1)
    while True:
        theta, ritz = torch.linalg.eigh(h_mat[:size, :size])  # ascending
        theta, ritz = theta.flip(0), ritz.flip(1)
        top = float(theta[0])
        coeff = ritz[:, 0].to(start.dtype)
        x = coeff @ q_mat[:size]  # (D,)
        residual = coeff @ w_mat[:size] - top * x  # (D,)
        if top <= 0.0:
            return EigenBracket(0.0, 0.0, x, products, True)  # M = 0 on the Krylov space, M ⪰ 0
        rnorm = float(torch.linalg.vector_norm(residual))
        if rnorm <= rtol * top or products >= max_products:
            return _final(apply, x, products, rtol, float(theta[1]) if size > 1 else 0.0)
        if size == basis:  # thick restart: keep the top Ritz vectors; the residual stays ⟂ to them
            rot = ritz[:, :keep].to(start.dtype)
            q_mat[:keep] = rot.T @ q_mat[:size]
            w_mat[:keep] = rot.T @ w_mat[:size]
            h_mat.zero_()
            h_mat[:keep, :keep] = torch.diag(theta[:keep])
            size = keep
        direction = residual
        for _ in range(2):  # classical Gram–Schmidt, twice
            direction = direction - (direction @ q_mat[:size].T) @ q_mat[:size]
        norm = float(torch.linalg.vector_norm(direction))
        if norm <= 1e-10 * max(rnorm, 1e-300):  # breakdown: an invariant subspace
            direction = torch.randn(dim, generator=generator, dtype=torch.float64).to(start)
            for _ in range(2):
                direction = direction - (direction @ q_mat[:size].T) @ q_mat[:size]
            norm = float(torch.linalg.vector_norm(direction))
        q_mat[size] = direction / norm
        w_mat[size] = apply(q_mat[size])
        products += 1
        # Only the new row and column of the projected matrix: Q M qₙ (M symmetric).
        column = (q_mat[: size + 1] @ w_mat[size]).to(torch.float64)
        h_mat[: size + 1, size] = column
        h_mat[size, : size + 1] = column
        size += 1


def _final(apply: Callable[[Tensor], Tensor], x: Tensor, products: int, rtol: float,
           second: float) -> EigenBracket:
    """The bracket from one fresh product with ``x``: the recurrence drifts slowly."""
    x = x / torch.linalg.vector_norm(x)
    mx = apply(x)
    theta = float(x @ mx)
    rnorm = float(torch.linalg.vector_norm(mx - theta * x))
    lower, upper = max(theta, 0.0), theta + rnorm
    return EigenBracket(lower, upper, x, products + 1, upper - lower <= rtol * max(lower, 1e-300), second)


LANCZOS_STEPS = 160
"""Most Krylov vectors of one frequency's Lanczos run (full reorthogonalization): n² work per step, so
160 steps at n = 1024 cost about a tenth of an eigen-solve."""


def top_rayleigh(gram: Tensor, *, rtol: float = 1e-8) -> float:
    """zᴴGz for the unit top Ritz vector z of Lanczos on the Hermitian G (n, n), stopped when the
    Ritz residual is below ``rtol``·θ (the Ritz value is then good to about rtol²/gap). A Rayleigh
    quotient: ≤ λ_max(G) up to rounding, whatever the convergence (recomputed from a fresh product).

    Runs on the real form of G (z ↦ Gz on ℂⁿ as a symmetric map of ℝ²ⁿ: the same values, each twice),
    so that the reorthogonalization is real GEMV; the small tridiagonal is solved by numpy (LAPACK on
    a 100×100 matrix through torch pays a thread start-up per call)."""
    n = gram.shape[0]
    steps = min(2 * n, LANCZOS_STEPS)

    def apply(x: Tensor) -> Tensor:  # (2n,) real ↦ (2n,) real
        return torch.view_as_real(gram @ torch.view_as_complex(x.view(n, 2))).reshape(-1)

    generator = torch.Generator(device="cpu").manual_seed(2)
    basis = torch.zeros(steps, 2 * n, dtype=torch.float64, device=gram.device)  # (m, 2n) orthonormal rows
    start = torch.randn(2 * n, generator=generator, dtype=torch.float64).to(gram.device)  # (2n,)
    basis[0] = start / torch.linalg.vector_norm(start)
    alpha: list[float] = []
    beta: list[float] = []
    top = basis[0]
    for j in range(steps):
        w = apply(basis[j])  # (2n,)
        alpha.append(float(basis[j] @ w))
        for _ in range(2):  # full reorthogonalization, twice
            w = w - (basis[: j + 1] @ w) @ basis[: j + 1]
        norm = float(torch.linalg.vector_norm(w))
        if (j + 1) % 8 == 0 or j + 1 == steps or norm == 0.0:  # the small tridiagonal's top pair
            theta, vecs = numpy.linalg.eigh(numpy.diag(alpha) + numpy.diag(beta, 1) + numpy.diag(beta, -1))
            # Residual of the top Ritz pair: β_j · |last entry of its eigenvector|.
            done = norm * abs(vecs[-1, -1]) <= rtol * max(theta[-1], 1e-300)
            if done or j + 1 == steps or norm == 0.0:
                top = torch.from_numpy(vecs[:, -1].copy()).to(basis) @ basis[: j + 1]  # (2n,)
                break
        beta.append(norm)
        basis[j + 1] = w / norm
    top = top / torch.linalg.vector_norm(top)
    return float(top @ apply(top))
