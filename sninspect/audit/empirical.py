"""A certified lower bound on a network's Lipschitz constant, by searching for inputs where it is steep.

For any two inputs, ‖f(x) − f(y)‖ / ‖x − y‖ ≤ L by the definition of L: every pair tried is a lower
bound, and the best one is reported (recomputed in float64, less a 1e-9 relative allowance for the
rounding of the difference). The pairs come from

1. several deterministic starts at the real input size: Gaussian noise and smooth, image-like noise
   (low-resolution Gaussian upsampled bilinearly, unit variance);
2. at each start, power iteration on J(x)ᵀJ(x) with ``torch.func.jvp``/``vjp``, giving the steepest
   direction v and ‖J(x)v‖ (a lower bound of ‖J(x)‖ ≤ L wherever f is differentiable);
3. gradient ascent (Adam) on the secant quotient over the point and the direction, which keeps
   moving on piecewise-linear (ReLU) networks, where ‖J(x)‖ is piecewise constant and its gradient 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sninspect.results.graph import EmpiricalLower

__all__ = ["empirical_lower"]

ROUNDING = 1e-9
"""Relative allowance taken off a secant quotient for the rounding of f(x + t·d) − f(x) in float64."""


def _starts(shape: tuple[int, ...], count: int, seed: int) -> list[tuple[str, Tensor]]:
    """``count`` inputs: alternately Gaussian and smooth (image-like where the input has ≥ 1 spatial
    axis), deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    spatial = shape[2:] if len(shape) >= 3 else ()
    for index in range(count):
        if index % 2 == 1 and 1 <= len(spatial) <= 3:
            coarse = tuple(max(1, n // 8) for n in spatial)
            low = torch.randn(*shape[:2], *coarse, generator=generator, dtype=torch.float64)
            mode = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
            x = F.interpolate(low, size=spatial, mode=mode, align_corners=True)
            x = (x - x.mean()) / x.std().clamp_min(1e-12)
            out.append((f"smooth {index // 2}", x))
        else:
            out.append((f"gaussian {index // 2}",
                        torch.randn(*shape, generator=generator, dtype=torch.float64)))
    return out


def _power(f: Callable[[Tensor], Tensor], x: Tensor, v: Tensor, steps: int) -> tuple[Tensor, float]:
    """The top right singular vector of J(x) by power iteration on JᵀJ, and ‖J(x)v‖ for it (unit)."""
    _, pullback = torch.func.vjp(f, x)
    value = 0.0
    for _ in range(steps):
        _, jv = torch.func.jvp(f, (x,), (v,))
        value = float(torch.linalg.vector_norm(jv))
        w = pullback(jv)[0]
        norm = torch.linalg.vector_norm(w)
        if not bool(norm > 0):
            break
        v = w / norm
    _, jv = torch.func.jvp(f, (x,), (v,))
    return v, max(value, float(torch.linalg.vector_norm(jv)))


def _secant(f: Callable[[Tensor], Tensor], x: Tensor, direction: Tensor, t: float) -> float:
    """‖f(x + t·d̂) − f(x)‖ / t, in float64, less the rounding allowance."""
    with torch.no_grad():
        d = direction / torch.linalg.vector_norm(direction)
        diff = f(x + t * d) - f(x)
    return float(torch.linalg.vector_norm(diff)) / t * (1.0 - ROUNDING)


def empirical_lower(f: Callable[[Tensor], Tensor], shape: tuple[int, ...], *, starts: int = 4,
                    steps: int = 30, power_steps: int = 20, seed: int = 0) -> EmpiricalLower:
    """The best lower bound of f's Lipschitz constant found from ``starts`` inputs of ``shape``."""
    began = time.perf_counter()
    best, best_start, best_jacobian = 0.0, "", 0.0
    generator = torch.Generator().manual_seed(seed + 1)
    for label, x0 in _starts(shape, starts, seed):
        v0 = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        v0 = v0 / torch.linalg.vector_norm(v0)
        v, jacobian = _power(f, x0, v0, power_steps)
        best_jacobian = max(best_jacobian, jacobian)
        t = 1e-3 * max(1.0, float(torch.linalg.vector_norm(x0)) / math.sqrt(x0.numel()))
        found = _secant(f, x0, v, t)
        x = x0.clone().requires_grad_(True)
        d = v.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x, d], lr=1e-2)
        for _ in range(steps):
            optimizer.zero_grad()
            unit = d / torch.linalg.vector_norm(d)
            quotient = torch.linalg.vector_norm(f(x + t * unit) - f(x)) / t
            (-quotient).backward()
            optimizer.step()
            found = max(found, _secant(f, x.detach(), d.detach(), t))
        if steps:  # a last power iteration where the ascent ended
            v_end, jacobian = _power(f, x.detach(), d.detach() / torch.linalg.vector_norm(d.detach()),
                                     power_steps)
            best_jacobian = max(best_jacobian, jacobian)
            found = max(found, _secant(f, x.detach(), v_end, t))
        if found > best:
            best, best_start = found, label
    return EmpiricalLower(best, best_jacobian, starts, steps, best_start, time.perf_counter() - began)
