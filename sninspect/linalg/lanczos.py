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
    """The second Ritz value θ2 (≤ λ2 by interlacing; lowered by 64 ulp of the products' dtype, which is
    how far rounding can lift a Ritz value of a float32 run): an estimate of the next eigenvalue from below;
    0 when the Krylov space has one vector."""


def top_eigen_bracket(
    apply: Callable[[Tensor], Tensor], start: Tensor, *, rtol: float, max_products: int,
    basis: int = 24, keep: int = 6,
) -> EigenBracket:
    """Lanczos on M (``apply``: (D,) → (D,), in ``start``'s dtype) until (upper − lower) ≤ rtol·lower.

    Thick-restart Lanczos (Wu & Simon 2000, SIAM J. Matrix Anal. Appl. 22): from each product
    w = M qⱼ the recurrence's known terms are removed first (αqⱼ, βqⱼ₋₁, or after a restart the
    arrow Σ sᵢxᵢ), then one classical Gram–Schmidt pass against the basis Q takes what rounding left,
    repeated only where that pass cancelled most of the rest (Daniel, Gragg, Kaufman & Stewart 1976);
    the rest, of norm β, is the next basis vector, and the terms found make the new column of the
    projected matrix H = Q M Qᵀ. The top Ritz pair (θ, y) of H has residual β·|y_last|
    (M Q = Q H + β q e_lastᵀ), read off without touching the basis; a full basis restarts from the top
    ``keep`` Ritz vectors. Per product: about two passes over the basis, against seven before.
    The returned bracket comes from one fresh product with the top Ritz vector (the recurrence drifts
    slowly) — from the first product itself where the start already meets the tolerance; when the
    budget runs out it is the bracket reached so far, ``converged`` False — never an exception. (Only
    the top Ritz pair's residual bounds λ_max: an earlier, lower Ritz value's interval may hold another
    eigenvalue, so no "best so far" is kept.)
    """
    dim = start.numel()
    basis = min(basis, dim)
    keep = max(1, min(keep, basis - 1))
    q_mat = start.new_empty(basis, dim)  # (basis, D) orthonormal rows; only the first `size` are read
    h_mat = numpy.zeros((basis, basis))  # projected matrix Q M Qᵀ, one column per product
    q_mat[0] = start / torch.linalg.vector_norm(start)
    couple = numpy.zeros(0)  # H[:j, j] of the newest vector, known from the recurrence (β, or the restart's arrow)
    size, products = 1, 0
    generator = torch.Generator(device="cpu").manual_seed(1)
    while True:
        j = size - 1  # the newest basis vector: its column of H is still missing
        product = apply(q_mat[j])  # (D,)
        products += 1
        alpha = float(q_mat[j] @ product)
        w = product - alpha * q_mat[j]  # (D,)
        if size == 1:  # the start itself: its bracket is this product's
            rnorm = float(torch.linalg.vector_norm(w))
            if alpha <= 0.0:
                return EigenBracket(0.0, 0.0, q_mat[0].clone(), products, True)  # M ⪰ 0: M q = 0
            if rnorm <= rtol * alpha or products >= max_products:
                return EigenBracket(alpha, alpha + rnorm, q_mat[0].clone(), products, rnorm <= rtol * alpha)
        nonzero = numpy.flatnonzero(couple)
        if nonzero.size == 1:  # the three-term recurrence: − β qⱼ₋₁
            w.sub_(q_mat[int(nonzero[0])], alpha=float(couple[nonzero[0]]))
        else:  # after a restart: − Σ sᵢ xᵢ over the kept Ritz vectors (no gathered copy of them)
            for i in nonzero:
                w.sub_(q_mat[int(i)], alpha=float(couple[i]))
        before = float(torch.linalg.vector_norm(w))
        coeff = q_mat[:size] @ w  # (size,) what rounding left along the basis
        w = w - coeff @ q_mat[:size]
        beta = float(torch.linalg.vector_norm(w))
        if beta < 0.7 * before:  # cancellation: once more (twice is enough)
            again = q_mat[:size] @ w
            w = w - again @ q_mat[:size]
            coeff = coeff + again
            beta = float(torch.linalg.vector_norm(w))
        column = coeff.double().cpu().numpy()
        column[:j] += couple
        column[j] += alpha
        h_mat[:size, j] = column
        h_mat[j, :size] = column
        values, ritz = numpy.linalg.eigh(h_mat[:size, :size])  # ascending
        top = float(values[-1])
        if top <= 0.0:
            x = torch.from_numpy(ritz[:, -1].copy()).to(q_mat) @ q_mat[:size]
            return EigenBracket(0.0, 0.0, x, products, True)  # M = 0 on the Krylov space, M ⪰ 0
        rnorm = beta * abs(float(ritz[-1, -1]))
        if size > 1 and (rnorm <= rtol * top or products >= max_products):
            x = torch.from_numpy(ritz[:, -1].copy()).to(q_mat) @ q_mat[:size]  # (D,)
            second = float(values[-2]) * (1.0 - 64.0 * torch.finfo(q_mat.dtype).eps)
            return _final(apply, x, products, rtol, second)
        if beta <= 1e-10 * max(top, 1e-300):  # breakdown: an invariant subspace; go on in a new direction
            w = torch.randn(dim, generator=generator, dtype=torch.float64).to(start)
            for _ in range(2):
                w = w - (q_mat[:size] @ w) @ q_mat[:size]
            beta, couple = float(torch.linalg.vector_norm(w)), numpy.zeros(size)  # no coupling to the basis
        elif size == basis:  # thick restart: keep the top Ritz vectors; w stays ⟂ to them
            top_first = ritz[:, ::-1][:, :keep]  # (basis, keep)
            rot = torch.from_numpy(numpy.ascontiguousarray(top_first)).to(q_mat)
            q_mat[:keep] = rot.T @ q_mat[:size]
            h_mat[:] = 0.0
            h_mat[:keep, :keep] = numpy.diag(values[::-1][:keep])
            couple = beta * top_first[-1]  # ⟨xᵢ, M q⟩ = β·(last entry of yᵢ)
            size = keep
        else:
            couple = numpy.zeros(size)
            couple[j] = beta
        q_mat[size] = w / beta
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



CLUSTER_WINDOW = 2e-4
"""Ritz values within this relative distance of the top one count as its cluster: the block grows to
as many vectors as the cluster has (a single vector cannot tell eigenvalues apart whose distance is
below its residual, and a block of b vectors holds at most b of them at once)."""


@dataclass(frozen=True)
class ClusterBracket:
    """The top of a symmetric positive semidefinite spectrum by block Lanczos: the top Ritz values of
    one fresh block product with the top Ritz vectors, and their residual bounds."""

    values: tuple[float, ...]
    """θ1 ≥ θ2 ≥ … of the final Rayleigh–Ritz step: θᵢ ≤ λᵢ (Courant–Fischer, certified)."""
    residuals: tuple[float, ...]
    """‖M x_i − θ_i x_i‖ for each Ritz pair: an eigenvalue lies within it of θ_i (Krylov–Weinstein)."""
    pair_residual: float
    """The spectral norm of the residual block of the top two Ritz pairs: two eigenvalues (λ1 and λ2,
    with probability one) lie within it of θ1 and θ2 (Kahan); 0 where only one vector was kept."""
    vectors: Tensor
    """(len(values), D) the Ritz vectors, orthonormal rows, top first."""
    products: int
    converged: bool
    """The top Ritz pair met its tolerance (else: the budget ran out)."""
    cluster: int
    """How many Ritz values lie within :data:`CLUSTER_WINDOW` of θ1 (θ1 included)."""

    @property
    def lower(self) -> float:
        return self.values[0]

    @property
    def upper(self) -> float:
        return self.values[0] + self.residuals[0]


def top_block_bracket(
    apply: Callable[[Tensor], Tensor], start: Tensor, *, rtol: float, max_products: int,
    block: int = 2, basis: int = 24, max_block: int = 6, pairs: int = 1, loose: float = 1.0,
) -> ClusterBracket:
    """Block Lanczos on M (``apply``: (b, D) → (b, D), rows in ``start``'s dtype) until the top Ritz pair's
    residual is below rtol·θ1 (and the next ``pairs`` − 1 pairs' below ``loose``·rtol·θ1), with a block of
    one more vector than the top cluster has.

    A single Krylov vector cannot separate eigenvalues closer than its residual: on a near-degenerate
    pair (σ2/σ1 = 1 − 1e-6 on trained 'same' convolutions) its Ritz value is a mixture of λ1 and λ2 and
    can stop on λ2. A block of b vectors holds b directions of the top cluster at once (a random block
    has a full-rank component along it with probability one), so its top Ritz value converges to λ1 at
    the rate of the gap below the cluster. The block starts at ``block`` rows (``start`` (k, D), its rows
    taken first, then fixed random ones) and grows, up to ``max_block``, whenever the Ritz values within
    :data:`CLUSTER_WINDOW` of θ1 fill it. The projected matrix Q M Qᵀ is formed from explicit inner
    products with every new product (full reorthogonalization, twice), so a thick restart (keeping
    the top Ritz vectors when the basis is full) and a growing block need no recurrence bookkeeping;
    the residual of a Ritz vector y is ‖B·y_last‖ with B the triangular factor of the newest remainder.
    The result comes from one fresh block product with the top Ritz vectors. Never raises for lack of
    convergence: see ``converged``.
    """
    dim = start.shape[-1]
    start = start.reshape(-1, dim)
    generator = torch.Generator(device="cpu").manual_seed(3)
    block = max(1, min(block, max_block, dim))
    basis = max(basis, 4 * max_block)
    rows = _orthonormal_rows(start[:block], start[:0], block, generator)
    store = start.new_empty(basis + max_block, dim)  # the basis Q as its first s rows
    h_mat = numpy.zeros((0, 0))
    s = products = 0
    known: numpy.ndarray | None = None  # (s, b) ⟨q_i, M w_j⟩ known from the last remainder (None: not known)
    while True:
        b = rows.shape[0]
        image = apply(rows)  # (b, D)
        products += b
        store[s:s + b] = rows
        both = store[:s + b]  # (s + b, D)
        if known is None:  # every coupling from inner products, two Gram–Schmidt passes
            column = both @ image.T  # (s + b, b): ⟨q_i, M w_j⟩
            rest = image - column.T @ both
            rest = rest - (both @ rest.T).T @ both  # twice is enough
        else:  # the known couplings first (the last block's, or the restart's arrow), then one pass
            coupled = numpy.flatnonzero(numpy.abs(known).sum(axis=1))
            couple = torch.from_numpy(known[coupled]).to(store)  # (c, b)
            rest = image - couple.T @ store[coupled]
            alpha = rows @ rest.T  # (b, b)
            rest = rest - alpha.T @ rows
            before = torch.linalg.vector_norm(rest, dim=1)
            column = both @ rest.T  # what rounding left along the basis
            rest = rest - column.T @ both
            if bool((torch.linalg.vector_norm(rest, dim=1) < 0.7 * before).any()):  # cancellation: again
                again = both @ rest.T
                rest = rest - again.T @ both
                column = column + again
            column[s:] += alpha
            column[coupled] += couple
        grown = numpy.zeros((s + b, s + b))
        grown[:s, :s] = h_mat
        col = column.double().cpu().numpy()
        grown[:, s:] = col
        grown[s:, :] = col.T
        grown[s:, s:] = 0.5 * (col[s:] + col[s:].T)
        h_mat, last = grown, s
        s += b
        values, ritz = numpy.linalg.eigh(h_mat)  # ascending
        values, ritz = values[::-1].copy(), ritz[:, ::-1].copy()
        top = max(float(values[0]), 1e-300)
        # The next block: the remainder, orthonormalized (its triangular factor couples it to the last block).
        nxt, tri = torch.linalg.qr(rest.T)  # (D, b), (b, b)
        resid = numpy.linalg.norm(tri.double().cpu().numpy() @ ritz[last:, :], axis=0)  # each Ritz pair's
        cluster = int(numpy.sum(values >= top * (1.0 - CLUSTER_WINDOW)))
        want = min(max(block, cluster), max_block, dim)
        tols = numpy.full(min(pairs, resid.size), rtol * top * loose)
        tols[0] = rtol * top
        done = bool(numpy.all(resid[:tols.size] <= tols)) and want <= block
        if done or products >= max_products or s + want > dim:
            keep = min(want + 1, s)  # one beyond the block: the third pair bounds the rest of the spectrum
            if last == 0 and keep == b:  # one block product: its Rayleigh–Ritz is already fresh
                return _final_block(apply, rows, products, rtol, pairs, loose, image)
            x = torch.from_numpy(ritz[:, :keep]).to(store).T @ store[:s]  # (keep, D)
            return _final_block(apply, x, products, rtol, pairs, loose)
        # A remainder row of norm ~0 (an invariant subspace) leaves QR noise: re-orthogonalized here, or a
        # random direction where nothing is left; its coupling in the next residual is below that noise.
        weak = tri.diagonal().abs() <= 1e-6 * float(torch.linalg.vector_norm(rest, dim=1).max())
        tri_np = tri.double().cpu().numpy()
        if want > b or bool(weak.any()):  # new directions or a broken-down row: orthogonalized afresh
            rows = _orthonormal_rows(nxt.T[~weak], store[:s], want, generator)
            known = None
        else:  # the remainder was orthogonalized twice already: its QR factor is the next block
            rows = nxt.T.contiguous()
            known = numpy.zeros((s, b))
            known[last:] = tri_np.T  # ⟨w_i, M nxt_k⟩ = tri[k, i]
        block = want
        if s + block > basis:  # thick restart: the top Ritz vectors, diagonal H
            keep = max(block + 1, min(basis // 2, s - block))
            store[:keep] = torch.from_numpy(ritz[:, :keep].copy()).to(store).T @ store[:s]
            h_mat, s = numpy.diag(values[:keep]), keep
            if known is not None:  # the arrow: ⟨x_j, M nxt_k⟩ = (tri · y_j,last)_k
                known = (tri_np @ ritz[last:last + b, :keep]).T.copy()


def _orthonormal_rows(candidates: Tensor, basis: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` orthonormal rows ⟂ ``basis``: the candidates first, random rows for the rest or for any
    candidate that is (nearly) in the span already."""
    dim = candidates.shape[-1]

    def noise(n: int) -> Tensor:
        return torch.randn(n, dim, generator=generator, dtype=torch.float64).to(candidates)

    extra = max(0, count - candidates.shape[0])
    rows = torch.cat([candidates[:count], noise(extra)]) if extra else candidates[:count].clone()
    for attempt in range(3):
        for _ in range(2):
            if basis.shape[0]:
                rows = rows - (rows @ basis.T) @ basis
        before = torch.linalg.vector_norm(rows, dim=1)
        ortho, tri = torch.linalg.qr(rows.T)  # (D, count)
        weak = tri.diagonal().abs() <= 1e-6 * before.clamp(min=1e-300)
        if not bool(weak.any()) or attempt == 2:
            return ortho.T.contiguous()
        rows = ortho.T.clone()
        rows[weak] = noise(int(weak.sum()))  # a candidate already in the span: a random direction instead
    return rows


def _final_block(apply: Callable[[Tensor], Tensor], x: Tensor, products: int, rtol: float, pairs: int,
                 loose: float, image: Tensor | None = None) -> ClusterBracket:
    """Rayleigh–Ritz with one fresh block product (the recurrence drifts slowly), or with ``image`` = M x
    for orthonormal rows x when the caller has it."""
    if image is None:
        x, _ = torch.linalg.qr(x.T)
        x = x.T.contiguous()  # (k, D) orthonormal rows
        image = apply(x)  # (k, D)
        products += x.shape[0]
    small = (x @ image.T).double().cpu().numpy()
    values, rot = numpy.linalg.eigh(0.5 * (small + small.T))
    values, rot = values[::-1].copy(), rot[:, ::-1].copy()
    rot_t = torch.from_numpy(rot).to(x)
    vectors, images = rot_t.T @ x, rot_t.T @ image  # (k, D)
    residual = images - torch.from_numpy(values.copy()).to(x)[:, None] * vectors
    norms = torch.linalg.vector_norm(residual, dim=1).double().cpu().numpy()
    pair = float(torch.linalg.matrix_norm(residual[:2].double(), ord=2)) if x.shape[0] > 1 else 0.0
    top = max(float(values[0]), 1e-300)
    cluster = int(numpy.sum(values >= top * (1.0 - CLUSTER_WINDOW)))
    tols = numpy.full(min(pairs, norms.size), rtol * top * loose)
    tols[0] = rtol * top
    done = bool(numpy.all(norms[:tols.size] <= tols))  # the fresh residuals decide
    return ClusterBracket(tuple(float(v) for v in values), tuple(float(r) for r in norms), pair,
                          vectors, products, done, cluster)
