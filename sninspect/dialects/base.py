"""The small interface every SN dialect implements, and the helpers they share.

A dialect knows how one SN implementation lays its state out in a state dict: which keys hold the
un-normalized weight and the power-iteration vectors, how the weight is reshaped, and what the
model divides by in eval mode (DESIGN.md, "SN dialects").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

import torch
from torch import Tensor

from sninspect.errors import LayerError
from sninspect.linalg.spectral import matrix_vector, normalize

Shapes = Mapping[str, tuple[int, ...]]


class DialectName(StrEnum):
    """Every SN layout sninspect knows, by the name the reports and JSON use; ``none`` = no SN."""

    torch = "torch"
    parametrize = "torch-parametrize"
    mimicry = "mimicry"
    biggan = "biggan"
    cosgrove = "cosgrove"
    conv_operator = "conv-operator"
    none = "none"


@dataclass(frozen=True)
class SNLayer:
    """One spectrally normalized parameter as found in a state dict (raw keys, nothing loaded)."""

    dialect: str
    module: str
    """Raw key prefix of the owning module, with its trailing dot (``""`` at the root)."""
    param: str
    """Name of the normalized parameter (usually ``weight``)."""
    weight_key: str
    """Raw key of the un-normalized weight."""
    plain_key: str
    """Key the parameter has in the same model without SN (what ``strip`` writes)."""
    u_key: str | None = None
    v_key: str | None = None
    buffer_key: str | None = None
    """Stored normalized weight (torch version None, conv-operator)."""
    extra_keys: tuple[str, ...] = ()
    """Other SN state (``sn_sigma``, ``sv0``, ``u1`` ...) that goes with the layer."""
    dim: int | None = None
    """Axis SN puts first; ``None`` until resolved from the stored vectors."""
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """Display name: the plain key (module path and parameter)."""
        return self.plain_key

    @property
    def keys(self) -> tuple[str, ...]:
        """Every raw key of this layer's SN state, the weight included."""
        own = (self.weight_key, self.u_key, self.v_key, self.buffer_key)
        return tuple(k for k in own if k is not None) + self.extra_keys


@dataclass(frozen=True)
class Estimate:
    """What a dialect's eval forward does with one layer."""

    sigma_hat: float
    """The eval-mode divisor σ̂."""
    u: Tensor | None
    """Stored left vector (length = rows of the matrix), as stored; ``None`` if not stored."""
    v: Tensor | None
    """Stored right vector (length = columns), as stored; ``None`` if not stored."""
    eval_matrix: Tensor | None = None
    """When the eval weight is a stored buffer rather than W / σ̂: that buffer as a matrix."""
    notes: tuple[str, ...] = ()


class Dialect(ABC):
    """One SN implementation's state layout. Subclasses are registered in ``dialects/__init__``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    operator_sized: ClassVar[bool] = False
    """True where σ is the norm of the convolution itself at the stored vector's input size, not of
    the reshaped kernel: the audit then reports that operator's numbers."""

    @abstractmethod
    def detect(self, shapes: Shapes) -> list[SNLayer]:
        """The layers of this dialect among ``shapes`` (raw key → shape), with ``dim`` resolved when
        the shapes alone decide it."""

    def resolve(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> SNLayer:
        """Return ``layer`` with ``dim`` decided (using values where shapes are ambiguous)."""
        return layer

    @abstractmethod
    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        """σ̂ and the stored vectors, for ``matrix`` = to_matrix(weight, layer.dim) in the working
        dtype and device."""


def vector(tensors: Mapping[str, Tensor], key: str, like: Tensor) -> Tensor:
    """A stored vector flattened to 1-D, in the dtype and device of ``like``; checked finite."""
    value = tensors[key].detach().reshape(-1).to(device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(value).all()):
        raise LayerError(f"'{key}' holds NaN or infinite values")
    return value


def split_key(key: str, suffix: str) -> str | None:
    """``module.conv.weight_orig`` with suffix ``_orig`` → ``module.conv.weight``; else None."""
    return key[: -len(suffix)] if key.endswith(suffix) and len(key) > len(suffix) else None


def module_and_param(key: str) -> tuple[str, str]:
    """``a.b.weight`` → (``a.b.``, ``weight``)."""
    head, _, param = key.rpartition(".")
    return (head + "." if head else ""), param


def candidate_dims(shape: tuple[int, ...], u_len: int, v_len: int | None) -> list[int]:
    """Axes d for which reshaping with d first gives a (u_len, v_len) matrix."""
    if len(shape) < 2:
        return [0]
    total = math.prod(shape)
    dims = []
    for d in range(len(shape)):
        if shape[d] == u_len and (v_len is None or total // shape[d] == v_len):
            dims.append(d)
    return dims


def resolve_dim(
    layer: SNLayer, tensors: Mapping[str, Tensor], weight_shape: tuple[int, ...]
) -> SNLayer:
    """Infer SN's ``dim`` from the u/v lengths; when several fit (a square ConvTranspose), pick the
    one for which the stored pair satisfies u ≈ normalize(W v), and say so in the notes."""
    from dataclasses import replace

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
        best = min(errors, key=lambda d: errors[d])
        detail = ", ".join(f"dim={d}: {e:.1e}" for d, e in errors.items())
        note = f"dim={best} chosen by the power-step residual ‖n(W Wᵀ u) − u‖ ({detail})"
        return replace(layer, dim=best, notes=layer.notes + (note,))
    v = tensors[layer.v_key].detach().reshape(-1).to(torch.float64)
    residuals = {d: _signless_residual(weight, d, u, v) for d in dims}
    # dim 0 unless another dim fits clearly better (a 2-D weight is nearly always dim 0).
    best = min(residuals, key=lambda d: (residuals[d] > 0.5 * residuals[dims[0]] if d else False, residuals[d]))
    detail = ", ".join(f"dim={d}: {r:.1e}" for d, r in residuals.items())
    note = f"dim={best} chosen by the residual ‖u − normalize(W v)‖ ({detail})"
    return replace(layer, dim=best, notes=layer.notes + (note,))


def _power_step_residual(weight: Tensor, dim: int, u: Tensor) -> float:
    """‖normalize(W Wᵀ u) − u‖ up to sign: how far u is from a fixed point of the power iteration."""
    step = normalize(matrix_vector(weight, dim, matrix_vector(weight, dim, u, transpose=True)))
    unit = normalize(u)
    return min(float(torch.linalg.vector_norm(step - unit)), float(torch.linalg.vector_norm(step + unit)))


def _signless_residual(weight: Tensor, dim: int, u: Tensor, v: Tensor) -> float:
    """min over the sign of ‖u ∓ normalize(W v)‖ (a flipped u, σ̂ < 0, still fits its dim)."""
    target = normalize(matrix_vector(weight, dim, v))
    return min(float(torch.linalg.vector_norm(u - target)), float(torch.linalg.vector_norm(u + target)))
