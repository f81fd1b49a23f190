"""Real SN checkpoints for the plots / check / trend / html tests: tiny torch models under
``torch.nn.utils.spectral_norm``, trained a few steps, saved under ``tmp_path``.

``exact_uv`` puts each SN layer's stored u, v on the exact top singular vectors (σ̂ = σ1, σ_eff = 1,
cosine errors ~0: a checkpoint that passes ``check``); ``skew_u`` then breaks one layer by a known
amount, so the tests know exactly which rules break.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

SKEW = 0.5
"""``skew_u`` stores u = normalize(u1 + SKEW·u2): σ̂ = σ1/√(1+SKEW²), so σ_eff = √1.25 ≈ 1.118 and
cos_error_u = 1 − 1/√1.25 ≈ 0.106 while v stays exact."""
SKEWED_SIGMA = math.sqrt(1 + SKEW**2)
SKEWED_COS = 1 - 1 / math.sqrt(1 + SKEW**2)


def sn_chain(widths: list[int], *, seed: int = 0, steps: int = 3, conv: bool = False) -> nn.Sequential:
    """SN Linear layers ``widths[0] → widths[1] → ...`` with LeakyReLU between (a small SN Conv2d in
    front when ``conv``), trained ``steps`` SGD steps."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    if conv:
        layers += [spectral_norm(nn.Conv2d(1, 2, 3, padding=1)), nn.LeakyReLU(0.2), nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(spectral_norm(nn.Linear(a, b)))
        if i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.2))
    model = nn.Sequential(*layers)
    x = torch.randn(8, 1, 2, 2) if conv else torch.randn(8, widths[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    return model


def sn_modules(model: nn.Module) -> list[nn.Module]:
    """The modules carrying legacy SN buffers, in order."""
    return [m for m in model.modules() if hasattr(m, "weight_orig")]


def tensor(module: nn.Module, name: str) -> Tensor:
    """A parameter or buffer of ``module`` (``weight_orig``, ``weight_u``, ``weight_v``)."""
    return cast(Tensor, getattr(module, name))


def exact_uv(model: nn.Module) -> nn.Module:
    """Store the exact top singular vectors as u, v in every SN layer (σ̂ = σ1)."""
    with torch.no_grad():
        for module in sn_modules(model):
            weight = tensor(module, "weight_orig")
            matrix = weight.reshape(weight.shape[0], -1)  # (out, in·kh·kw)
            u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
            tensor(module, "weight_u").copy_(u[:, 0])
            tensor(module, "weight_v").copy_(vh[0])
    return model


def skew_u(module: nn.Module, mix: float = SKEW) -> None:
    """u = normalize(u1 + mix·u2), v = v1: σ_eff = √(1+mix²) and cos_error_u = 1 − 1/√(1+mix²)."""
    with torch.no_grad():
        weight = tensor(module, "weight_orig")
        u, _, vh = torch.linalg.svd(weight.reshape(weight.shape[0], -1), full_matrices=False)
        mixed = u[:, 0] + mix * u[:, 1]
        tensor(module, "weight_u").copy_(mixed / mixed.norm())
        tensor(module, "weight_v").copy_(vh[0])


def save(model: nn.Module, path: Path, **extras: Any) -> Path:
    """``torch.save({"state_dict": ..., **extras})`` (``step=...``, ``epoch=...``)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, **extras}, path)
    return path
