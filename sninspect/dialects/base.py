"""The small interface every SN dialect implements, and the helpers they share.

A dialect knows how one SN implementation lays its state out in a state dict: which keys hold the
un-normalized weight and the power-iteration vectors, how the weight is reshaped, and what the
model divides by in eval mode (the README's table of SN layouts). It also owns what the rewrites need to know
about that layout: the eval weight ``strip`` bakes, its power step, the vectors a PyTorch SN needs to
keep its eval output (``convert``), and, for the two PyTorch layouts, the keys a target writes (``emit``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import torch
from torch import Tensor

from sninspect.errors import LayerError, TensorKindError
from sninspect.linalg.spectral import power_step, to_matrix

Shapes = Mapping[str, tuple[int, ...]]
Metadata = dict[str, dict[str, Any]]
"""torch's ``state_dict._metadata``: module path (``a.b``, ``""`` at the root) → that module's entries."""

EPS = 1e-12
"""The eps of PyTorch's SN (``F.normalize``)."""


class DialectName(StrEnum):
    """Every SN layout sninspect knows, by the name the reports and JSON use; ``none`` = no SN."""

    torch = "torch"
    parametrize = "torch-parametrize"
    mimicry = "mimicry"
    biggan = "biggan"
    cosgrove = "cosgrove"
    conv_operator = "conv-operator"
    soft = "soft"
    residual_flows = "residual-flows"
    projection = "projection"
    none = "none"


@dataclass(frozen=True)
class SNLayer:
    """One spectrally normalized parameter as found in a state dict (raw keys, nothing loaded)."""

    dialect: DialectName
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
    coeff: float | None = None
    """Soft SN's coefficient, which the state does not store: the user's ``--coeff``; ``None``: the
    dialect's default (only dialects with ``takes_coeff`` read it)."""

    @property
    def name(self) -> str:
        """Display name: the plain key (module path and parameter)."""
        return self.plain_key

    @property
    def keys(self) -> tuple[str, ...]:
        """Every raw key of this layer's SN state, the weight included (what ``strip`` removes)."""
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


@dataclass(frozen=True)
class Vectors:
    """u, v (1-D, the weight's stored dtype) for a PyTorch SN whose eval divisor u · (W v) equals the
    source dialect's σ̂; both ``None`` where the target divides a 1-D weight by its norm."""

    u: Tensor | None
    v: Tensor | None
    detail: str
    """What was done, for the rewrite summary."""
    warning: str | None = None
    """Set when the eval output cannot be kept exactly."""


@dataclass(frozen=True)
class OperatorView:
    """A layer whose σ is a convolution operator's, not the reshaped kernel's: what the audit needs to
    report that operator's numbers (zero-padded 'same' stride-1 convolution)."""

    size: tuple[int, ...] | None
    """Spatial input size the layer normalizes at; ``None``: not stored (the numbers are then the
    certified frequency bracket, which holds at every size)."""
    eval_key: str | None = None
    """Stored eval kernel; ``None``: the eval kernel is W / σ̂."""
    u: Tensor | None = None
    """Stored vector as a feature map (1, C, *size), on the side ``u_side``."""
    u_side: str = "input"
    """``input`` (C = the conv's in-channels) or ``output``."""
    v: Tensor | None = None
    """Stored input-side feature map where a second vector is stored (u then on the output side)."""
    notes: tuple[str, ...] = ()


class Dialect(ABC):
    """One SN implementation's state layout. Subclasses are registered in ``dialects/__init__``."""

    name: ClassVar[DialectName]
    summary: ClassVar[str]
    one_d_by_norm: ClassVar[bool] = False
    """A 1-D weight is divided by its exact L2 norm and stores no u, v (parametrize)."""
    assumes_dim0: ClassVar[bool] = False
    """The state cannot tell a ConvTranspose: every weight is normalized along dim 0 (cosgrove)."""
    takes_coeff: ClassVar[bool] = False
    """σ̂ depends on a constant the state does not store (soft SN's coefficient, ``SNLayer.coeff``)."""

    # -- reading ---------------------------------------------------------------------------------

    @abstractmethod
    def detect(self, shapes: Shapes) -> list[SNLayer]:
        """The layers of this dialect among ``shapes`` (raw key → shape), with ``dim`` resolved when
        the shapes alone decide it."""

    def operator_view(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> OperatorView | None:
        """For a layer whose σ is the convolution operator's: what the audit compares; ``None`` (the
        default) where σ is the reshaped matrix's."""
        return None

    def resolve(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> SNLayer:
        """Return ``layer`` with ``dim`` decided (using values where shapes are ambiguous)."""
        return layer

    @abstractmethod
    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        """σ̂ and the stored vectors, for ``matrix`` = to_matrix(weight, layer.dim) in the working
        dtype and device."""

    def guessable_dims(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> list[int]:
        """The dims the shapes allow when ``resolve`` could only guess among them (no v stored);
        empty when the stored state decides the dim."""
        return []

    # -- what strip needs ------------------------------------------------------------------------

    def check_rewritable(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> None:
        """Raise a LayerError when the state dict does not hold all that decides the layer's output."""
        return None

    def weight_matrix(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The stored weight in float64 (checked usable) and the matrix this dialect normalizes."""
        weight = weight64(tensors, layer.weight_key)
        return weight, to_matrix(weight, layer.dim or 0)  # (rows, cols); a 1-D weight is a column

    def stored_eval_weight(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> Tensor | None:
        """The stored tensor that *is* the eval weight (a normalized buffer), in the weight's dtype;
        ``None`` where the eval weight is W / σ̂."""
        if layer.buffer_key is None:
            return None
        stored, buffer = tensors[layer.weight_key], tensors[layer.buffer_key]
        if tuple(buffer.shape) != tuple(stored.shape):
            raise LayerError(f"buffer '{layer.buffer_key}' has shape {list(buffer.shape)}, unlike the weight")
        weight64(tensors, layer.buffer_key)  # finite
        return buffer.detach().clone().to(stored.dtype)

    def left_matrix(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The matrix whose left vector the stored u is, and that u."""
        assert layer.u_key is not None  # Precondition: called for dialects that store u
        u = vector(tensors, layer.u_key, matrix)
        if u.numel() == matrix.shape[0]:
            return matrix, u
        raise LayerError(f"u has {u.numel()} entries, expected {matrix.shape[0]} (rows of the weight matrix)")

    def power_step(self, matrix: Tensor, u: Tensor) -> tuple[float, Tensor, Tensor]:
        """One step of this dialect's power iteration from u: (σ̂, u', v)."""
        return power_step(matrix, u)

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        """σ̂ = u · (W v) after ``steps`` power steps from the stored vectors, in this dialect's order
        (here legacy's, mimicry's, BigGAN's: v = n(Wᵀ u), then u = n(W v))."""
        left, u = self.left_matrix(layer, matrix, tensors)
        sigma = 0.0
        for _ in range(steps):
            sigma, u, _v = self.power_step(left, u)
        return sigma

    # -- what convert needs from a source --------------------------------------------------------

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        """u, v for ``target`` (a PyTorch dialect) such that its eval divisor equals this dialect's σ̂.

        Here: the dialects whose eval forward runs one fresh power step from the stored u (mimicry,
        BigGAN, cosgrove) bake that step into the stored u, v."""
        dtype = tensors[layer.weight_key].dtype
        _, matrix = self.weight_matrix(layer, tensors)
        left, u0 = self.left_matrix(layer, matrix, tensors)
        sigma, u_new, v_new = self.power_step(left, u0)
        if left is matrix:
            u, v = u_new, v_new
        else:  # the step ran on Wᵀ (BigGAN's transpose=True), so its (u', v) are W's (v, u)
            u, v = v_new, u_new
        return Vectors(u.to(dtype), v.to(dtype), f"eval's power step baked into u, v (σ̂ = {sigma:.6g})")

    def unwrapped(self, layer: SNLayer) -> str | None:
        """The module prefix once a wrapper level this dialect adds is removed; ``None`` if none."""
        return None

    def clear_metadata(self, metadata: Metadata, layer: SNLayer, remaining: Mapping[str, object]) -> None:
        """Remove what SN left in ``_metadata`` for ``layer`` (a legacy version entry for its parameter),
        so that the module without SN loads with ``strict=True``; ``remaining``: the keys kept."""
        entry = metadata.get(meta_key(layer.module))
        if entry is not None and isinstance(entry.get("spectral_norm"), dict):
            entry["spectral_norm"].pop(f"{layer.param}.version", None)
            if not entry["spectral_norm"]:
                del entry["spectral_norm"]

    # -- what apply and convert need from a target -----------------------------------------------

    writes_metadata: ClassVar[bool] = False
    """State in this dialect carries a ``_metadata`` entry (legacy SN's version)."""

    def emit(
        self, module: str, param: str, weight: Tensor, u: Tensor | None, v: Tensor | None
    ) -> list[tuple[str, Tensor]]:
        """The keys and tensors of one SN parameter in this layout (only the PyTorch ones are targets)."""
        raise NotImplementedError(f"sninspect does not write {self.name} SN")

    def mark_metadata(self, metadata: Metadata, module: str, param: str) -> None:
        """Add what this layout's state-dict hook saves for one parameter to ``metadata``."""
        return None


def vector(tensors: Mapping[str, Tensor], key: str, like: Tensor) -> Tensor:
    """A stored vector flattened to 1-D, in the dtype and device of ``like``; checked finite."""
    value = tensors[key].detach().reshape(-1).to(device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(value).all()):
        raise LayerError(f"'{key}' holds NaN or infinite values")
    return value


def weight64(tensors: Mapping[str, Tensor], key: str) -> Tensor:
    """A stored weight in float64 on the CPU, checked usable (a complex, integer, boolean or meta
    weight is refused: casting it would silently give another weight)."""
    stored = tensors[key]
    if stored.is_complex() or stored.device.type == "meta" or not (stored.is_floating_point() or stored.is_quantized):
        raise TensorKindError(f"'{key}' is a {str(stored.dtype).removeprefix('torch.')} "
                              f"{'meta ' if stored.device.type == 'meta' else ''}tensor, not real "
                              "floating-point weights")
    if stored.is_quantized:
        stored = stored.dequantize()
    weight = stored.detach().to(device="cpu", dtype=torch.float64)
    if weight.numel() == 0:
        raise LayerError(f"'{key}' is empty (shape {list(weight.shape)})")
    if not bool(torch.isfinite(weight).all()):
        raise LayerError(f"'{key}' holds {int((~torch.isfinite(weight)).sum())} NaN or infinite values")
    return weight


def split_key(key: str, suffix: str) -> str | None:
    """``module.conv.weight_orig`` with suffix ``_orig`` → ``module.conv.weight``; else None."""
    return key[: -len(suffix)] if key.endswith(suffix) and len(key) > len(suffix) else None


def module_and_param(key: str) -> tuple[str, str]:
    """``a.b.weight`` → (``a.b.``, ``weight``)."""
    head, _, param = key.rpartition(".")
    return (head + "." if head else ""), param


def meta_key(module: str) -> str:
    """Raw key prefix ``a.b.`` → the ``_metadata`` key ``a.b`` (``""`` for the root)."""
    return module[:-1] if module.endswith(".") else module
