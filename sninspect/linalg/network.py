"""Lipschitz factors that are not weight matrices, and running products over a chain of layers.

Pure math: no I/O, no printing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sninspect.errors import OperandError


def batchnorm_factor(weight: Tensor | None, running_var: Tensor, eps: float = 1e-5) -> float:
    """Lipschitz constant of eval-mode BatchNorm, a per-channel affine map x ↦ γ (x − μ)/sqrt(var + ε) + β:
    max |γ| / sqrt(running_var + ε), γ = 1 when there is no affine weight."""
    var = running_var.detach().to(torch.float64).reshape(-1)  # (C,)
    if var.numel() == 0:
        raise OperandError("running_var is empty")
    gamma = torch.ones_like(var) if weight is None else weight.detach().to(var).reshape(-1).abs()  # (C,)
    if gamma.shape != var.shape:
        raise OperandError(f"BatchNorm weight has {gamma.numel()} entries, running_var {var.numel()}")
    return float((gamma / torch.sqrt(var + eps)).max())


def cumulative_product(factors: Sequence[float]) -> list[float]:
    """Running product of per-layer factors: the network bound by depth."""
    out, running = [], 1.0
    for factor in factors:
        running *= factor
        out.append(running)
    return out
