"""The cheapest certified bracket of a convolution's operator norm: the rung below every frequency grid.

Pure math: no I/O, no printing.

σ* = sup_ω σ_max(K̂(ω)) as in :mod:`sninspect.linalg.conv_bounds`. The coarsest frequency bound that
certifies anything useful (a 3×3 kernel on an 8×8 grid, 20% wide) costs the kernel's autocorrelation
(2·45·n³ operations) and one complex Cholesky per frequency: about ten times the layer's own exact
spectrum at n = 1024. This bracket costs about one spectrum, and is as wide as it comes out:

- **upper**: √(∏k) · σ1 of one reshape of the kernel (Singla & Feizi 2021, "Fantastic Four", ICLR;
  :func:`~sninspect.linalg.conv_bounds.reshape_bounds` says why each reshape bounds σ*): of the two
  outer reshapes (c_out, c_in·∏k) and (c_out·∏k, c_in), the one a few power steps show smaller, its
  σ1 certified by one Cholesky of s²I − RRᵀ on the smaller side (the Gram matrix's lower triangle:
  about n²·∏k·m operations, half the spectrum's), s a converged Lanczos value nudged up by 1e-9. The
  mixed reshapes (3n × 3n Gram matrices for 3×3 kernels, three times the work) are left to the finer rungs.
- **lower**: the largest of the caller's floor, the power steps' estimates of the outer reshapes' σ1
  (a unit input at one pixel comes out as the stacked taps times it, so σ* ≥ σ1 of either reshape),
  and σ_max(K̂(ω)) from below at the :data:`FREQUENCIES` frequencies of the coarsest grid with the
  largest ‖K̂(ω)‖_F (found from the taps' Gram matrix): a Rayleigh quotient of K̂(ω)ᴴK̂(ω) by Lanczos on
  its real form, each product four n × m matrix-vector products. Any frequency's σ_max is the norm of a
  circular convolution with this kernel, ≤ σ*: the same meaning as the frequency bound's ``lower`` (the
  grid maximum).

The width upper / lower − 1 is certified whatever it is: about 100% on He-initialized Gaussian kernels
(the reshape bound is loose on flat symbols), less on trained kernels whose symbol peaks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sninspect.linalg.lanczos import top_eigen_bracket
from sninspect.linalg.spectral import power_step

FREQUENCIES = 2
"""Frequencies whose σ_max gives the lower end (those of the grid with the largest ‖K̂(ω)‖_F)."""

SYMBOL_PRODUCTS = 16
"""Most products of the Lanczos run at one frequency (two n × m complex matrix-vector products each)."""

SYMBOL_RTOL = 1e-3
"""Relative bracket at which a frequency's Lanczos run stops: its value is then within ~1e-3 of that
frequency's σ_max² (the lower end's quality only; any Rayleigh quotient is a lower bound)."""

POWER_STEPS = 2
"""Power steps on each outer reshape, to choose the one to certify."""

SIGMA_PRODUCTS = 60
"""Most products of the Lanczos run on a reshape's Gram matrix (its σ1² estimate, then certified)."""

GRAM_BLOCKS = 8
"""Row blocks of the reshape's Gram matrix (its lower triangle only: 9/16 of the full product's work)."""

GRAM_ROWS = 64
"""Fewest rows of a block (smaller GEMMs run below the BLAS's pace)."""

NUDGE = 1e-9
"""Relative step above the Lanczos estimate of σ1² where the Cholesky certificate is tried first."""


def reshape_bracket(weight: Tensor, grid: tuple[int, ...], slack: float, floor: float = 0.0) -> tuple[float, float]:
    """(upper, lower) of σ* for a real float64 kernel (c_out, c_in, k...) with some k > 1 (see the module
    docstring). ``grid``: the frequency grid whose points the lower end samples; ``slack``: the relative
    rounding allowance (as the frequency bound's, raised for large Gram matrices); ``floor``: a known
    lower bound of σ*.

    Both outer reshapes also bound σ* from below: a unit input at one pixel, z ⊗ δ, comes out as the
    stacked taps (c_out·K, c_in) times z, and the adjoint does the same with (c_out, c_in·K)ᵀ, so
    σ* ≥ σ1 of either (their power estimates are lower ends too)."""
    c_out, c_in, *ks = weight.shape
    taps = math.prod(ks)
    # (c_out, c_in·K) and (c_out·K, c_in), each laid out with its smaller side as contiguous rows
    stacked = (weight.transpose(0, 1).reshape(c_in, -1) if c_in <= c_out * taps  # its transpose, one copy
               else weight.movedim(1, -1).reshape(-1, c_in))
    outer = [_wide(weight.reshape(c_out, -1)), stacked.contiguous()]
    estimates = [_power_estimate(matrix) for matrix in outer]
    chosen = outer[0] if estimates[0] <= estimates[1] else outer[1]
    side, long = chosen.shape
    eps = torch.finfo(torch.float64).eps
    allowance = max(slack, 8.0 * eps * ((side + 1) ** 2 + long * side))  # Cholesky and Gram rounding
    upper = math.sqrt(taps) * certified_sigma1(chosen) * (1.0 + allowance)
    lower = max(floor, max(max(estimates), frequency_lower(weight, grid)) * (1.0 - allowance))
    return upper, min(lower, upper)


def _wide(matrix: Tensor) -> Tensor:
    """The matrix, or its transpose, with no more rows than columns, contiguous (the Gram matrix's row
    blocks then run at the BLAS's pace: a transposed operand cost a third more)."""
    return matrix.contiguous() if matrix.shape[0] <= matrix.shape[1] else matrix.T.contiguous()


def _power_estimate(matrix: Tensor) -> float:
    """A lower estimate of σ1(matrix): ‖Wv‖ for a unit v after :data:`POWER_STEPS` power steps from a
    seeded start."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    u = torch.randn(matrix.shape[0], generator=generator, dtype=matrix.dtype).to(matrix.device)  # (rows,)
    sigma = 0.0
    for _ in range(POWER_STEPS):
        sigma, u, _ = power_step(matrix, u)
    return sigma


def certified_sigma1(matrix: Tensor) -> float:
    """s ≥ σ1(matrix) (up to the Gram matrix's rounding and the Cholesky's backward error, the caller's
    allowance): the Gram matrix G on the smaller side (its lower triangle: :func:`lower_gram`), a Lanczos
    bracket of its top eigenvalue, and a Cholesky of s²I − G that succeeds (s² the lower end raised by
    1e-9 relative, else the bracket's upper end so raised; an eigen-solve where both fail)."""
    gram = lower_gram(_wide(matrix))  # (s, s), zeros above
    diagonal = gram.diagonal().clone()

    def apply(x: Tensor) -> Tensor:  # G x from the lower triangle L: L x + Lᵀ x − diag(G) x
        return gram @ x + gram.T @ x - diagonal * x

    generator = torch.Generator(device="cpu").manual_seed(1)
    start = torch.randn(gram.shape[0], generator=generator, dtype=gram.dtype).to(gram.device)
    found = top_eigen_bracket(apply, start, rtol=1e-12, max_products=SIGMA_PRODUCTS)
    for square in (found.lower * (1.0 + NUDGE), found.upper * (1.0 + NUDGE)):
        if square > 0.0 and _below(gram, square):
            return math.sqrt(square)
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram, UPLO="L")[-1]), 0.0) * (1.0 + NUDGE))


def lower_gram(rows: Tensor) -> Tensor:
    """The lower triangle (diagonal included) of rows·rowsᵀ (s, s), zeros above: :data:`GRAM_BLOCKS` row
    blocks, each one GEMM against the rows up to its end (about (1 + 1/blocks)/2 of the full product's
    work). The Cholesky and eigen-solves read only this triangle."""
    s = rows.shape[0]
    gram = rows.new_zeros(s, s)
    step = max(GRAM_ROWS, -(-s // GRAM_BLOCKS))
    for r0 in range(0, s, step):
        r1 = min(s, r0 + step)
        gram[r0:r1, :r1] = rows[r0:r1] @ rows[:r1].T
    return gram.tril_()


def _below(gram: Tensor, square: float) -> bool:
    """Whether square·I − G is positive definite: its Cholesky (of the lower triangle) succeeds."""
    shifted = -gram
    shifted.diagonal().add_(square)
    return int(torch.linalg.cholesky_ex(shifted).info) == 0


def frequency_lower(weight: Tensor, grid: tuple[int, ...]) -> float:
    """max over :data:`FREQUENCIES` points ω of ``grid`` (those with the largest ‖K̂(ω)‖_F²) of a lower
    bound of σ_max(K̂(ω)): √ of a Rayleigh quotient of K̂ᴴK̂, ≤ σ_max(K̂(ω)) ≤ σ* (before rounding)."""
    c_out, c_in, *ks = weight.shape
    flat = weight.reshape(c_out * c_in, -1)  # (n·m, K): one column per tap
    position = torch.stack(torch.meshgrid(*(torch.arange(k, dtype=torch.float64) for k in ks), indexing="ij"),
                           dim=-1).reshape(-1, len(ks)).to(weight.device)  # (K, d)
    points = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij"),
                         dim=-1).reshape(-1, len(grid)).to(weight.device)  # (P, d)
    sizes = torch.tensor(grid, dtype=torch.float64, device=weight.device)
    angle = 2.0 * math.pi * (points / sizes) @ position.T  # (P, K): ω·x
    cos, sin = torch.cos(angle), torch.sin(angle)
    taps = flat.T @ flat  # (K, K): ⟨K_x, K_y⟩
    # ‖K̂(ω)‖_F² = Σ_{x,y} ⟨K_x, K_y⟩ cos(ω·(x − y))
    traces = ((cos @ taps) * cos).sum(-1) + ((sin @ taps) * sin).sum(-1)  # (P,)
    top = torch.argsort(traces, descending=True)[:FREQUENCIES]
    parts = torch.cat([cos[top], sin[top]]) @ flat.T  # (2F, n·m): the symbols' real and imaginary parts, one pass
    count = top.numel()
    best = 0.0
    for j in range(count):  # K̂(ω) = Σ_x K_x e^{−iω·x} = real − i·imag; rows of `parts`: contiguous
        real, imag = parts[j].view(c_out, c_in), parts[count + j].view(c_out, c_in)
        best = max(best, _symbol_sigma(real, imag))
    return best


def _symbol_sigma(real: Tensor, imag: Tensor) -> float:
    """A lower bound of σ_max(R − iS) (``real``, ``imag``; up to rounding): √ of a Lanczos Rayleigh
    quotient of MᵀM or MMᵀ (the smaller), M = [[R, S], [−S, R]] the complex matrix's real form (its
    singular values, each twice). Four real matrix-vector products per step, no complex copies."""
    c_out, c_in = real.shape

    def forward(a: Tensor, b: Tensor) -> Tensor:  # M (a, b)
        return torch.cat([real @ a + imag @ b, real @ b - imag @ a])

    def adjoint(p: Tensor, q: Tensor) -> Tensor:  # Mᵀ (p, q)
        return torch.cat([real.T @ p - imag.T @ q, imag.T @ p + real.T @ q])

    if c_in <= c_out:
        def apply(x: Tensor) -> Tensor:  # (2·c_in,): MᵀM x
            return adjoint(*forward(x[:c_in], x[c_in:]).split(c_out))
        dim = 2 * c_in
    else:
        def apply(x: Tensor) -> Tensor:  # (2·c_out,): MMᵀ x
            return forward(*adjoint(x[:c_out], x[c_out:]).split(c_in))
        dim = 2 * c_out
    generator = torch.Generator(device="cpu").manual_seed(3)
    start = torch.randn(dim, generator=generator, dtype=real.dtype).to(real.device)
    found = top_eigen_bracket(apply, start, rtol=SYMBOL_RTOL, max_products=SYMBOL_PRODUCTS)
    return math.sqrt(max(found.lower, 0.0))
