"""The cheap certified bound on a convolution's operator norm: √(∏ k) times the smallest σ1 over the
kernel's reshapes that put each spatial axis with the output or the input channels (Singla & Feizi
2021, "Fantastic Four: Differentiable Bounds on Singular Values of Convolution Layers", ICLR; 2^d
reshapes, four in 2-D). Used by :mod:`sninspect.linalg.conv_bounds` where it is below the frequency
bound. Pure math: no I/O, no printing.
"""

from __future__ import annotations

import math
from itertools import product

import torch
from torch import Tensor

from sninspect.linalg.spectral import power_step

__all__ = ["reshape_bound_below", "reshapes", "sigma1"]


def reshapes(weight: Tensor) -> list[Tensor]:
    """The 2^d matrices (c_out·∏_{i∈S} k_i, c_in·∏_{i∉S} k_i) of a kernel, S ⊆ spatial axes."""
    c_out, _, *ks = weight.shape
    d = len(ks)
    out = []
    for subset in product((False, True), repeat=d):
        rows = [2 + i for i in range(d) if subset[i]]
        cols = [2 + i for i in range(d) if not subset[i]]
        rows_n = c_out * math.prod(ks[i] for i in range(d) if subset[i])
        out.append(weight.permute(0, *rows, 1, *cols).reshape(rows_n, -1))  # (c_out·∏k_S, c_in·∏k_S̄)
    return out


def reshape_bound_below(weight: Tensor, ceiling: float, steps: int = 6) -> float | None:
    """min over the reshapes of √(∏ k)·σ1 (as :func:`~sninspect.linalg.conv_bounds.reshape_bounds`)
    where it is ≤ ``ceiling``, else None. A reshape is solved exactly only if power iteration fails
    to prove it above: each step's σ̂ = ‖Mv‖ (unit v) is ≤ σ1(M) (up to rounding, allowed for by the
    factor 1 − 1e-12)."""
    scale = math.sqrt(math.prod(weight.shape[2:]))
    generator = torch.Generator(device="cpu").manual_seed(0)
    best: float | None = None
    for matrix in reshapes(weight):
        u = torch.randn(matrix.shape[0], generator=generator, dtype=matrix.dtype).to(matrix.device)  # (rows,)
        for _ in range(steps):
            sigma_hat, u, _ = power_step(matrix, u)
            if scale * sigma_hat * (1.0 - 1e-12) > ceiling:
                break
        else:
            value = scale * sigma1(matrix)
            best = value if best is None else min(best, value)
    return best if best is not None and best <= ceiling else None


def sigma1(matrix: Tensor) -> float:
    """Exact largest singular value, from the top eigenvalue of the smaller Gram matrix."""
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix  # (s, s)
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))
