"""Conv-operator SN (Ryu et al. 2019 "real SN"; Gouk et al. 2021): the power iteration runs on the
convolution itself, not on the reshaped kernel.

State: ``P_orig``, the normalized eval weight as a buffer ``P``, and ``P_u`` shaped like one input
feature map (1, C, H, W). The stored buffer is the eval weight; σ is the norm of the zero-padded
'same' convolution at H×W.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from sninspect.dialects.base import (
    Dialect,
    DialectName,
    Estimate,
    Shapes,
    SNLayer,
    Vectors,
    module_and_param,
    split_key,
)
from sninspect.errors import LayerError
from sninspect.linalg.spectral import to_matrix


class ConvOperator(Dialect):
    name = DialectName.conv_operator
    summary = "conv-operator SN: P_orig, buffer P, P_u shaped (1, C, H, W)"
    operator_sized = True

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
        """σ̂ = mean(W_orig / P), the divisor that turned the stored weight into the eval buffer."""
        assert layer.buffer_key is not None  # Precondition: detected with the buffer
        buffer = tensors[layer.buffer_key].detach().to(device=matrix.device, dtype=matrix.dtype)
        if tuple(buffer.shape) != tuple(tensors[layer.weight_key].shape):
            raise LayerError(f"buffer '{layer.buffer_key}' has shape {list(buffer.shape)}, unlike the weight")
        eval_matrix = to_matrix(buffer, 0)
        if not bool(torch.isfinite(eval_matrix).all()):
            raise LayerError(f"buffer '{layer.buffer_key}' holds NaN or infinite values (the eval weight is unusable)")
        nonzero = eval_matrix != 0
        if not bool(nonzero.any()):
            raise LayerError(f"buffer '{layer.buffer_key}' is all zeros")
        sigma_hat = float((matrix[nonzero] / eval_matrix[nonzero]).mean())
        return Estimate(sigma_hat, None, None, eval_matrix=eval_matrix)

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        raise LayerError("conv-operator SN iterates on the convolution (stride, padding unknown here): "
                         "use --sigma eval or exact")

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        raise LayerError("conv-operator SN divides by the convolution's norm, which PyTorch SN cannot "
                         "express — use `sninspect strip` (or --exclude it)")
