"""Conv-operator SN (Ryu et al. 2019 "real SN"; Gouk et al. 2021): the power iteration runs on the
convolution itself, not on the reshaped kernel.

State: ``P_orig``, the normalized eval weight as a buffer ``P``, and ``P_u`` shaped like one feature
map (1, C, H, W): an input map (C = in-channels) or, as the RealSN code of the plug-and-play
denoisers stores it (u = n(conv(v, W))), an output map (C = out-channels). The stored buffer is the
eval weight; σ is the norm of the zero-padded 'same' convolution at H×W. σ̂ is fitted from
W_orig ≈ σ̂ · buffer by least squares. For a square layer the channels cannot tell the side: the
stored u is a near-fixed point of the power iteration on its own side, so the side whose residual
‖u − n(AAᵀu)‖ (output) or ‖u − n(AᵀAu)‖ (input) is smaller is taken, and named in the notes.
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
    module_and_param,
    split_key,
)
from sninspect.errors import LayerError, option
from sninspect.linalg.conv_same import same_conv_pair
from sninspect.linalg.spectral import to_matrix


class ConvOperator(Dialect):
    name = DialectName.conv_operator
    summary = "conv-operator SN: P_orig, buffer P, P_u shaped (1, C, H, W) on the input or output side"

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            base = split_key(key, "_orig")
            if base is None or base not in shapes or base + "_u" not in shapes:
                continue
            if len(shapes[base + "_u"]) <= 2 or base + "_v" in shapes:
                continue
            module, param = module_and_param(base)
            layers.append(SNLayer(self.name, module, param, key, base, base + "_u", None, base, dim=0))
        return layers

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        """σ̂ = the divisor that turned the stored weight into the eval buffer, fitted by least squares
        (:func:`fit_divisor`), with the fit's relative residual in the notes."""
        assert layer.buffer_key is not None  # Precondition: detected with the buffer
        buffer = tensors[layer.buffer_key].detach().to(device=matrix.device, dtype=matrix.dtype)
        if tuple(buffer.shape) != tuple(tensors[layer.weight_key].shape):
            raise LayerError(f"buffer '{layer.buffer_key}' has shape {list(buffer.shape)}, unlike the weight")
        eval_matrix = to_matrix(buffer, 0)
        if not bool(torch.isfinite(eval_matrix).all()):
            raise LayerError(f"buffer '{layer.buffer_key}' holds NaN or infinite values (the eval weight is unusable)")
        if not bool((eval_matrix != 0).any()):
            raise LayerError(f"buffer '{layer.buffer_key}' is all zeros")
        sigma_hat, residual = fit_divisor(matrix, eval_matrix)
        note = (f"σ̂ = ⟨W, B⟩/⟨B, B⟩ (least squares, W = P_orig, B = the eval buffer): relative residual "
                f"‖W − σ̂B‖/‖W‖ = {residual:.2e}")
        return Estimate(sigma_hat, None, None, eval_matrix=eval_matrix, notes=(note,))

    def operator_view(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> OperatorView:
        """The 'same' convolution at u's H×W, the eval kernel the stored buffer, u on the side
        :func:`stored_side` finds."""
        assert layer.u_key is not None and layer.buffer_key is not None  # Precondition: detected layout
        weight = tensors[layer.weight_key].detach().to(device="cpu", dtype=torch.float64)
        u = tensors[layer.u_key].detach().to(device="cpu", dtype=torch.float64)
        if u.dim() != weight.dim() or u.shape[0] != 1 or u.shape[1] not in (weight.shape[0], weight.shape[1]):
            raise LayerError(f"u of shape {list(u.shape)} fits neither side of the kernel {list(weight.shape)} "
                             "(expected (1, C, *spatial))")
        side, why = stored_side(weight, u)
        return OperatorView(tuple(u.shape[2:]), layer.buffer_key, u, side, notes=(why,))

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        raise LayerError("conv-operator SN iterates on the convolution (stride, padding unknown here): "
                         f"use {option('sigma', 'eval')} or exact")

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        raise LayerError("conv-operator SN divides by the convolution's norm, which PyTorch SN cannot "
                         f"express — use `sninspect strip` (or {option('exclude')} it)")


def fit_divisor(weight: Tensor, buffer: Tensor) -> tuple[float, float]:
    """The σ̂ with W ≈ σ̂ B in least squares, σ̂ = ⟨W, B⟩ / ⟨B, B⟩, and the relative residual
    ‖W − σ̂ B‖ / ‖W‖.

    The element-wise mean of W / B is biased: W moved one optimizer step after B was written, and the
    ratio at an entry where B is near zero can be anything (−8.3 to 1.97 on a published layer, which
    moved the mean 3% off the fit). The least-squares fit weighs each entry by B², so those entries
    barely count."""
    w, b = weight.reshape(-1), buffer.reshape(-1)  # (n,), (n,)
    sigma_hat = float(torch.dot(w, b) / torch.dot(b, b))
    w_norm = float(torch.linalg.vector_norm(w))
    residual = float(torch.linalg.vector_norm(w - sigma_hat * b)) / w_norm if w_norm > 0.0 else math.inf
    return sigma_hat, residual


def stored_side(weight: Tensor, u: Tensor) -> tuple[str, str]:
    """The side of the conv operator A (zero-padded 'same', stride 1, at u's size) a stored power-iteration
    vector u (1, C, *size) lives on, ``input`` or ``output``, and why.

    Where in- and out-channels differ, C decides. A square layer allows both: a converged u is a fixed
    point of its own side's step, u = n(AAᵀu) on the output side, u = n(AᵀAu) on the input side, so the
    smaller residual decides (measured on published RealSN denoisers: 0.004–0.025 on the side the
    code stores, 0.64–0.89 on the other)."""
    c_out, c_in = weight.shape[0], weight.shape[1]
    if c_out != c_in:
        side = "input" if u.shape[1] == c_in else "output"
        which = "in" if side == "input" else "out"
        return side, f"u on the {side} side ({u.shape[1]} channels = the conv's {which}-channels)"
    norm = float(torch.linalg.vector_norm(u))
    if not norm > 0.0 or not math.isfinite(norm):
        return "input", "u on the input side (assumed: u is zero or not finite, and the layer is square)"
    forward, adjoint = same_conv_pair(weight, tuple(u.shape[2:]))
    unit = u / norm
    out_res = _residual(unit, forward(adjoint(unit)))
    in_res = _residual(unit, adjoint(forward(unit)))
    side = "output" if out_res < in_res else "input"
    return side, (f"u on the {side} side (square layer: residual ‖u − n(AAᵀu)‖ = {out_res:.3g} on the output "
                  f"side, ‖u − n(AᵀAu)‖ = {in_res:.3g} on the input side)")


def _residual(unit: Tensor, image: Tensor) -> float:
    """‖unit − image/‖image‖‖ (2 where the image is zero)."""
    norm = float(torch.linalg.vector_norm(image))
    return float(torch.linalg.vector_norm(unit - image / norm)) if norm > 0.0 else 2.0
