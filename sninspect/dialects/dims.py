"""Which axis SN puts first: inferred from the stored vectors' lengths, and from their values when a
square ConvTranspose fits both axes (a state dict does not say whether a layer was a ConvTranspose)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from sninspect.dialects.base import SNLayer
from sninspect.errors import LayerError
from sninspect.linalg.spectral import matrix_vector, normalize


def candidate_dims(shape: tuple[int, ...], u_len: int, v_len: int | None) -> list[int]:
    """Axes d for which reshaping with d first gives a (u_len, v_len) matrix. Only the channel axes
    are candidates: SN puts the output channels (dim 0) or, for a ConvTranspose, the input channels
    (dim 1) first; a spatial axis of the same length (a 2×2×2×2 kernel) would otherwise compete
    whenever u, v are short enough to fit it by chance."""
    if len(shape) < 2:
        return [0]
    total = math.prod(shape)
    dims = []
    for d in range(2):
        if shape[d] == u_len and (v_len is None or total // shape[d] == v_len):
            dims.append(d)
    return dims


def resolve_dim(
    layer: SNLayer, tensors: Mapping[str, Tensor], weight_shape: tuple[int, ...]
) -> SNLayer:
    """Infer SN's ``dim`` from the u/v lengths; when several fit (a square ConvTranspose), pick the
    one for which the stored pair satisfies u ≈ normalize(W v), and say so in the notes."""
    assert layer.u_key is not None  # Precondition: only called for dialects that store u
    u_len = math.prod(tensors[layer.u_key].shape)
    v_len = math.prod(tensors[layer.v_key].shape) if layer.v_key is not None else None
    dims = candidate_dims(weight_shape, u_len, v_len)
    if not dims:
        expected = f"{weight_shape[0]} (dim 0)" + (
            f" or {weight_shape[1]} (dim 1, ConvTranspose)" if len(weight_shape) > 1 else ""
        )
        v_part = f" and v has {v_len}" if v_len is not None else ""
        raise LayerError(
            f"u has {u_len} entries{v_part}, which fits no axis of the weight {list(weight_shape)}: "
            f"expected u of length {expected}"
        )
    if len(dims) == 1:
        return replace(layer, dim=dims[0])
    weight = tensors[layer.weight_key].detach()  # stored dtype: read piece by piece in float64
    u = tensors[layer.u_key].detach().reshape(-1).to(torch.float64)
    if layer.v_key is None:
        # No v stored (version None): the stored u came from a power step u = n(W Wᵀ u_prev), so the
        # right dim is the one for which one more step moves it least.
        errors = {d: _power_step_residual(weight, d, u) for d in dims}
        return _decide(layer, dims, errors, u_len, "the power-step residual ‖n(W Wᵀ u) − u‖")
    v = tensors[layer.v_key].detach().reshape(-1).to(torch.float64)
    residuals = {d: _signless_residual(weight, d, u, v) for d in dims}
    return _decide(layer, dims, residuals, u_len, "the residual ‖u − normalize(W v)‖")


EVIDENCE = 100.0
"""How much better another dim must fit than the first candidate (a Conv's dim 0) to be chosen, as the
ratio of chance probabilities (r_first / r_other)^(m − 2) for u of m entries: a random direction in
R^m comes within angle r of a given line with probability ∝ r^(m − 1), so that ratio is the
likelihood ratio of the two fits when the optimizer's drift is alike for both. Square ConvTransposes
are rare beside square Convs, so the evidence must be strong; with m = 2 a fit says nothing."""


def _decide(layer: SNLayer, dims: list[int], residuals: dict[int, float], m: int, measure: str) -> SNLayer:
    """The first candidate dim (0: a Conv) unless another fits decisively better (:data:`EVIDENCE`),
    with the residuals and the reason in the notes."""
    first = dims[0]
    detail = ", ".join(f"dim={d}: {r:.1e}" for d, r in residuals.items())
    other = min((d for d in dims if d != first), key=lambda d: residuals[d])
    r_first, r_other = residuals[first], residuals[other]
    if r_other < 0.5 * r_first and (r_other == 0.0 or (r_first / r_other) ** (m - 2) >= EVIDENCE):
        return replace(layer, dim=other, notes=layer.notes + (f"dim={other} chosen by {measure} ({detail})",))
    if r_other < r_first:
        note = (f"dim={first} assumed (a Conv): {measure} ({detail}) cannot tell the dims apart with u of "
                f"{m} entries; were it a ConvTranspose, σ̂ and σ_eff would be dim {other}'s")
    else:
        note = f"dim={first} chosen by {measure} ({detail})"
    return replace(layer, dim=first, notes=layer.notes + (note,))


def _power_step_residual(weight: Tensor, dim: int, u: Tensor) -> float:
    """‖normalize(W Wᵀ u) − u‖ up to sign: how far u is from a fixed point of the power iteration."""
    step = normalize(matrix_vector(weight, dim, matrix_vector(weight, dim, u, transpose=True)))
    unit = normalize(u)
    return min(float(torch.linalg.vector_norm(step - unit)), float(torch.linalg.vector_norm(step + unit)))


def _signless_residual(weight: Tensor, dim: int, u: Tensor, v: Tensor) -> float:
    """min over the sign of ‖u ∓ normalize(W v)‖ (a flipped u, σ̂ < 0, still fits its dim)."""
    target = normalize(matrix_vector(weight, dim, v))
    return min(float(torch.linalg.vector_norm(u - target)), float(torch.linalg.vector_norm(u + target)))
