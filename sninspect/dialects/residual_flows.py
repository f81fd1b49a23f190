"""Residual-flows SN (Chen et al. 2019 "Residual Flows"; Behrmann et al. 2019 i-ResNets): Lipschitz
layers that keep the raw weight as the module's own parameter and divide only what is above a
coefficient. The same layout is copied by other normalizing-flow libraries.

State of one layer (``SpectralNormLinear`` / ``InducedNormLinear``, ``SpectralNormConv2d`` /
``InducedNormConv2d``): the parameter ``weight`` (raw), buffers ``u``, ``v`` (1-D) and ``scale`` (the
last σ, a log); the conv variants add ``spatial_dims`` (h, w: the input size the iteration runs at)
and, for the induced-norm ones, ``initialized``; with a learned norm order, parameters ``domain`` and
``codomain``. A linear layer or 1×1 conv stores u (out,), v (in,). A k×k conv stores feature maps
flattened: v (in·h·w,), u (out·h·w,) for the stride-1 conv with padding k//2 those models use (the
operator at h×w, u on the output side). Eval mode computes σ = u · (A v) from the stored vectors (A
the weight matrix, or the convolution) and divides the weight by max(1, σ / coeff). The coefficient
is a constructor argument, not stored: it comes from ``--coeff``, default 0.97 (the layers' default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from sninspect.dialects.base import (
    Dialect,
    DialectName,
    Estimate,
    OperatorView,
    Shapes,
    SNLayer,
    Vectors,
    vector,
)
from sninspect.dialects.soft import layer_coeff, soft_divisor, soft_rule_notes
from sninspect.errors import LayerError, option
from sninspect.linalg.conv_same import same_conv_pair
from sninspect.linalg.spectral import bilinear_sigma

DEFAULT_COEFF = 0.97
"""The coefficient of the residual-flows layers' constructors (their training scripts pass 0.97–0.98)."""

_BOOKKEEPING = ("scale", "spatial_dims", "initialized", "domain", "codomain")
"""The module's other SN state, dropped by ``strip``."""


class ResidualFlows(Dialect):
    name = DialectName.residual_flows
    summary = "residual-flows SN: weight (raw), buffers u, v, scale [, spatial_dims]; eval ÷ max(1, σ/coeff)"
    takes_coeff = True

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            if key != "u" and not key.endswith(".u"):
                continue
            module = key[:-1]
            weight, v, scale = module + "weight", module + "v", module + "scale"
            if weight not in shapes or v not in shapes or scale not in shapes:
                continue  # u, v without the scale log (or without a weight): not this layout
            if len(shapes[key]) != 1 or len(shapes[v]) != 1 or math.prod(shapes[scale]) != 1:
                continue
            if _layout(shapes[weight], shapes[key][0], shapes[v][0], module + "spatial_dims" in shapes) is None:
                continue
            extras = tuple(module + k for k in _BOOKKEEPING if module + k in shapes)
            layers.append(SNLayer(self.name, module, "weight", weight, weight, key, v, extra_keys=extras, dim=0))
        return layers

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        assert layer.u_key is not None and layer.v_key is not None  # Precondition: detected with both
        _check_initialized(layer, tensors)
        size = _operator_size(layer, tensors)
        u = vector(tensors, layer.u_key, matrix)
        v = vector(tensors, layer.v_key, matrix)
        if size is None:
            sigma = bilinear_sigma(matrix, u, v)
            how = "u·(W v)"
        else:
            weight = tensors[layer.weight_key].detach().to(device=matrix.device, dtype=matrix.dtype)
            c_in = weight.shape[1]
            forward, _adjoint = same_conv_pair(weight, size)
            sigma = float(torch.dot(u, forward(v.reshape(1, c_in, *size)).reshape(-1)))
            how = f"u·conv(v) at {'×'.join(map(str, size))}"
            u = v = None  # feature maps, compared with the operator's vectors by the audit
        coeff = _coeff(layer)
        divisor = soft_divisor(sigma, coeff)
        notes = soft_rule_notes("residual-flows SN", divisor, how, sigma, coeff, layer.coeff is not None,
                                "the layers' default")
        if layer.module + "domain" in tensors or layer.module + "codomain" in tensors:
            notes.append("learned norm orders (domain/codomain stored): σ = u·(W v) estimates an induced "
                         "p-norm, not the spectral norm; the divisor is still what eval uses")
        return Estimate(divisor, u, v, notes=tuple(notes))

    def operator_view(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> OperatorView | None:
        """A k×k conv: the 'same' convolution at ``spatial_dims``, u its output map, v its input map."""
        assert layer.u_key is not None and layer.v_key is not None  # Precondition: detected with both
        size = _operator_size(layer, tensors)
        if size is None:
            return None
        c_out, c_in = tensors[layer.weight_key].shape[:2]
        u = tensors[layer.u_key].detach().to(device="cpu", dtype=torch.float64).reshape(1, c_out, *size)
        v = tensors[layer.v_key].detach().to(device="cpu", dtype=torch.float64).reshape(1, c_in, *size)
        return OperatorView(size, None, u, "output", v)

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        """max(1, σ / coeff) with σ after ``steps`` power steps (linear and 1×1 layers)."""
        if _operator_size(layer, tensors) is not None:
            raise LayerError("this residual-flows conv iterates on the convolution at spatial_dims: use "
                             f"{option('sigma', 'eval')} or exact")
        return soft_divisor(super().power_sigma(layer, matrix, tensors, steps), _coeff(layer))

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        raise LayerError("residual-flows SN divides by max(1, σ/coeff), which PyTorch SN cannot express — "
                         f"use `sninspect strip` (or {option('exclude')} it)")


def _layout(weight: tuple[int, ...], n_u: int, n_v: int, has_size: bool) -> str | None:
    """``matrix`` (u: out, v: in·k...), ``operator`` (u, v: flattened output and input maps of a k×k
    conv at a stored size) or ``None`` where the lengths fit neither."""
    if len(weight) < 2:
        return None
    c_out, c_in, taps = weight[0], weight[1], math.prod(weight[2:])
    if n_u == c_out and n_v == c_in * taps and (len(weight) == 2 or taps == 1):
        return "matrix"
    if len(weight) == 4 and has_size and n_u % c_out == 0 and n_v % c_in == 0 and n_u // c_out == n_v // c_in:
        return "operator"
    return None


def _operator_size(layer: SNLayer, tensors: Mapping[str, Tensor]) -> tuple[int, int] | None:
    """(h, w) for a k×k conv stored with feature-map vectors; ``None`` for a matrix layout."""
    assert layer.u_key is not None and layer.v_key is not None  # Precondition: detected with both
    shape = tuple(tensors[layer.weight_key].shape)
    n_u, n_v = tensors[layer.u_key].numel(), tensors[layer.v_key].numel()
    if _layout(shape, n_u, n_v, layer.module + "spatial_dims" in tensors) != "operator":
        return None
    dims = _bookkeeping(tensors, layer.module + "spatial_dims").detach().reshape(-1).to(torch.float64)
    if dims.numel() != 2 or not bool(torch.isfinite(dims).all()) or bool((dims < 1).any()) \
            or bool((dims != dims.round()).any()):
        raise LayerError(f"'{layer.module}spatial_dims' = {dims.tolist()} is not an input size (h, w)")
    h, w = int(dims[0]), int(dims[1])
    kernel = shape[2:]
    if n_v != shape[1] * h * w or n_u != shape[0] * h * w or any(k % 2 == 0 for k in kernel):
        raise LayerError(f"u has {n_u} and v {n_v} entries; the stride-1, padding-k//2 conv at spatial_dims "
                         f"{h}×{w} with kernel {list(kernel)} needs u = {shape[0] * h * w} and v = "
                         f"{shape[1] * h * w} (odd k): another stride or padding, which the state does not store")
    return h, w


def _bookkeeping(tensors: Mapping[str, Tensor], key: str) -> Tensor:
    """A counter, flag or size buffer as stored: the layers register ``initialized`` as an integer
    tensor (``torch.tensor(0)``), and an integer ``spatial_dims`` is a size all the same. The audit's
    mapping hands out weights as real floating point and refuses integers (a weight saved as integers
    is not one), so these are read from its raw tensors."""
    raw = getattr(tensors, "raw", tensors)
    tensor = raw[key]
    if tensor.device.type == "meta" or tensor.is_complex():
        return tensors[key]  # refused there with the reason
    return tensor.to_dense() if tensor.layout != torch.strided else tensor


def _check_initialized(layer: SNLayer, tensors: Mapping[str, Tensor]) -> None:
    """An induced-norm conv saved before its first forward holds uninitialised u, v (its first forward
    replaces them): nothing stored says what eval divides by."""
    flag = _bookkeeping(tensors, layer.module + "initialized") if layer.module + "initialized" in tensors else None
    if flag is not None and flag.numel() == 1 and not bool(flag.reshape(-1)[0]):
        raise LayerError("'initialized' is 0: u, v were saved before the layer's first forward, which "
                         "replaces them; the eval divisor is not in the checkpoint")


def _coeff(layer: SNLayer) -> float:
    return layer_coeff(layer, DEFAULT_COEFF, "the coefficient")
