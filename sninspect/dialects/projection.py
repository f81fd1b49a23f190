"""Projection SN (the averaged-CNN denoisers published with Goujon et al.'s convex-ridge-regularizer
code; "learning firmly nonexpansive operators"): each training forward projects the raw weight onto
the Lipschitz ball and stores the result as a second parameter.

State of one layer (``LipschitzConv2d``): ``weight`` (raw), ``bias``, and ``lipschitz_weight`` of the
same shape = L · weight / σ, with σ = u · conv(v) from a power iteration on the zero-padded 'same'
convolution at the training signal size (u an output map kept in a dict, not stored) and L the
Lipschitz goal (1 in the published models; a constructor argument, not stored). Eval convolves with
``lipschitz_weight`` as stored. σ̂ is fitted from weight ≈ σ̂ · lipschitz_weight by least squares
(= σ / L), σ_eff is the operator norm of ``lipschitz_weight``; ``strip`` bakes ``lipschitz_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from sninspect.dialects.base import Dialect, DialectName, Estimate, OperatorView, Shapes, SNLayer, Vectors
from sninspect.dialects.conv_operator import fit_divisor
from sninspect.errors import LayerError, option
from sninspect.linalg.spectral import to_matrix

SUFFIX = "lipschitz_weight"

MAX_RESIDUAL = 0.1
"""Above this relative residual of weight ≈ σ̂ · lipschitz_weight the pair is not a projection (an
optimizer step moves a published layer's weight ~1e-3 off): the layer is refused, not audited as SN."""


class Projection(Dialect):
    name = DialectName.projection
    summary = "projection SN (averaged CNNs): weight (raw) + lipschitz_weight (the eval weight, = L·weight/σ)"

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            if key != SUFFIX and not key.endswith("." + SUFFIX):
                continue
            module = key[: -len(SUFFIX)]
            weight = module + "weight"
            if weight not in shapes or shapes[weight] != shapes[key] or len(shapes[key]) < 2:
                continue  # a tensor of another shape that happens to be named so: not this layout
            layers.append(SNLayer(self.name, module, "weight", weight, weight, buffer_key=key, dim=0))
        return layers

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        """σ̂ = ⟨W, B⟩/⟨B, B⟩ (least squares, B = lipschitz_weight), its relative residual in the notes."""
        assert layer.buffer_key is not None  # Precondition: detected with the projected weight
        buffer = tensors[layer.buffer_key].detach().to(device=matrix.device, dtype=matrix.dtype)
        eval_matrix = to_matrix(buffer, 0)  # (out, in·k...)
        if not bool(torch.isfinite(eval_matrix).all()):
            raise LayerError(f"'{layer.buffer_key}' holds NaN or infinite values (the eval weight is unusable)")
        if not bool((eval_matrix != 0).any()):
            raise LayerError(f"'{layer.buffer_key}' is all zeros")
        sigma_hat, residual = fit_divisor(matrix, eval_matrix)
        if not residual <= MAX_RESIDUAL or sigma_hat <= 0.0:
            raise LayerError(f"'{layer.buffer_key}' is not a positive multiple of '{layer.weight_key}' "
                             f"(σ̂ = {sigma_hat:.4g}, relative residual {residual:.2g} > {MAX_RESIDUAL:g}): "
                             f"not projection SN — rename the tensor or {option('exclude')} the layer")
        notes = (f"projection SN: eval uses the stored lipschitz_weight B = L·W/σ; σ̂ = ⟨W, B⟩/⟨B, B⟩ = σ/L "
                 f"(least squares; L, the Lipschitz goal, is not stored: 1 in the published models), "
                 f"relative residual ‖W − σ̂B‖/‖W‖ = {residual:.2e}",)
        return Estimate(sigma_hat, None, None, eval_matrix=eval_matrix, notes=notes)

    def operator_view(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> OperatorView | None:
        """A conv: normalized at a signal size the state does not store."""
        shape = tuple(tensors[layer.weight_key].shape)
        if len(shape) < 3 or all(k == 1 for k in shape[2:]):
            return None  # a matrix: its σ is the reshaped one
        return OperatorView(None, layer.buffer_key)

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        raise LayerError(f"projection SN stores no power-iteration vector: use {option('sigma', 'eval')} or exact")

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        raise LayerError("projection SN divides by the convolution's norm, which PyTorch SN cannot express — "
                         f"use `sninspect strip` (or {option('exclude')} it)")
