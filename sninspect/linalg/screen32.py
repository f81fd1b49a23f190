"""Sound float32 screening of "A ⪰ 0" for the frequency bound's Cholesky tests, where n is small.

Pure math: no I/O, no printing.

The frequency bound proves σ_max(K̂(ω)) ≤ s by a Cholesky factorization of A = s²I − G(ω) (n × n,
Hermitian, G ⪰ 0). In float32 that test is twice as fast, and sound once the shift c it is run with
covers every rounding error:

- B = fl32(A − cI) = A − cI + E₁, |E₁|ᵢⱼ ≤ u·|A − cI|ᵢⱼ (u = 2⁻²⁴; complex entries round each part), so
  ‖E₁‖₂ ≤ ‖E₁‖_F ≤ u·(‖A‖_F + c√n) and ‖A‖_F ≤ s²√n + ‖G‖_F ≤ s²√n + tr G (G ⪰ 0);
- a Cholesky factorization that completes in precision u gives RᴴR = B + ΔB with
  |ΔB| ≤ γ|Rᴴ||R| (Demmel 1989; Higham 2002, Thm 10.5, γ = γ_{n+1} for real data; γ = 4(n+1)u/(1 − 4(n+1)u)
  here, ample for complex arithmetic), so ‖ΔB‖₂ ≤ γ‖R‖_F² = γ·tr(B + ΔB) ≤ γ/(1 − γ)·tr B, and
  tr B ≤ (tr A − nc)(1 + u) + nu·c ≤ (1 + u)·tr A for tr A = n s² − tr G (Rump 2006, "Verification of
  positive definiteness", BIT 46, uses the same argument);
- then A = RᴴR + cI − E₁ − ΔB ⪰ (c − ‖E₁‖₂ − ‖ΔB‖₂) I ⪰ 0 whenever
  c ≥ [γ/(1 − γ)·(1 + u)·tr A + u·(s²√n + tr G) + u·2s²] / (1 − u√n)
  (the last u·2s² covers the rounding of the diagonal subtraction).

A success proves σ_max ≤ s exactly as the float64 test does; a failure proves nothing and the caller
tests that matrix in float64. The shift is about 1.6e-7·n²·s² relative (7.5e-4 at n = 64), so only the
frequencies within that of the running maximum fall through; above n ≈ 100 the shift outgrows a typical
symbol's spread and the screen is not tried (:data:`MAX_RELATIVE_SHIFT`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MAX_RELATIVE_SHIFT", "below32", "shift32"]

UNIT = 2.0**-24
"""float32 unit roundoff."""

MAX_RELATIVE_SHIFT = 2e-3
"""Largest shift c/s² the screen is run with: beyond it too many frequencies would fall through."""


def shift32(n: int, square: float, traces: Tensor) -> Tensor:
    """The certified shift c per matrix (module docstring) for A = s²I − G with tr G = ``traces``, (b,)."""
    gamma = 4.0 * (n + 1) * UNIT
    gamma = gamma / (1.0 - gamma)
    trace_a = (n * square - traces).clamp(min=0.0)  # (b,) tr A
    extra = UNIT * (square * math.sqrt(n) + traces.abs() + 2.0 * square)
    return 1.01 * (gamma * (1.0 + UNIT) * trace_a + extra) / (1.0 - UNIT * math.sqrt(n))


def below32(matrices: Tensor, square: float, traces: Tensor, scratch: Tensor | None = None) -> Tensor | None:
    """(b,) bool: True where A = ``matrices`` (b, n, n) complex128, equal to s²I − G with s² = ``square``
    and tr G = ``traces``, is proved ⪰ 0 by a float32 Cholesky of A − cI. ``None`` where the shift
    would exceed :data:`MAX_RELATIVE_SHIFT` (then run the float64 test on all). ``scratch``: a reused
    complex64 buffer of at least b matrices (else one is allocated)."""
    b, n, _ = matrices.shape
    if b == 0 or not square > 0.0:
        return None
    shift = shift32(n, square, traces.to(torch.float64))  # (b,)
    if not float(shift.max()) <= MAX_RELATIVE_SHIFT * square:
        return None
    if scratch is None or scratch.shape[0] < b:
        low = matrices.to(torch.complex64)  # (b, n, n)
    else:
        low = scratch[:b]
        low.copy_(matrices)
    low.diagonal(dim1=-2, dim2=-1).sub_(shift.to(torch.float32)[:, None])
    info = torch.empty(b, dtype=torch.int32, device=low.device)
    # in place (the factor is not needed), as the column-major conj A: see conv_bounds._ShiftedBlock._factor
    torch.linalg.cholesky_ex(low.mT, out=(low.mT, info))
    return info == 0
