"""The ``SpectralNorm`` wrapper of christiancosgrove/pytorch-spectral-normalization-gan.

State: the wrapped module's ``module.P_bar`` (the un-normalized weight) and the vectors
``module.P_u``, ``module.P_v`` (saved as parameters). Every forward, eval included, runs one power
step from the stored u (l2normalize: x / (‖x‖ + 1e-12)) on W viewed as (out, -1) and divides by
u' · (W v).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from sninspect.dialects.base import (
    Dialect,
    DialectName,
    Estimate,
    Shapes,
    SNLayer,
    module_and_param,
    split_key,
    vector,
)
from sninspect.errors import LayerError
from sninspect.linalg.spectral import power_step


class Cosgrove(Dialect):
    name = DialectName.cosgrove
    summary = "SpectralNorm wrapper (pytorch-spectral-normalization-gan): module.P_bar, module.P_u, module.P_v"
    assumes_dim0 = True

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            base = split_key(key, "_bar")
            if base is None or base + "_u" not in shapes or base + "_v" not in shapes:
                continue
            module, param = module_and_param(base)
            layers.append(SNLayer(self.name, module, param, key, base, base + "_u", base + "_v", dim=0))
        return layers

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        assert layer.u_key is not None and layer.v_key is not None  # Precondition: detected with both
        u = vector(tensors, layer.u_key, matrix)
        v = vector(tensors, layer.v_key, matrix)
        if u.numel() != matrix.shape[0] or v.numel() != matrix.shape[1]:
            raise LayerError(
                f"u/v have {u.numel()}/{v.numel()} entries, expected {matrix.shape[0]}/{matrix.shape[1]}"
            )
        sigma, _, _ = self.power_step(matrix, u)
        return Estimate(sigma, u, v, notes=("every forward runs one power step from the stored u",))

    def power_step(self, matrix: Tensor, u: Tensor) -> tuple[float, Tensor, Tensor]:
        """l2normalize divides by ‖x‖ + 1e-12, not by max(‖x‖, eps)."""
        return power_step(matrix, u, plus_eps=True)

    def unwrapped(self, layer: SNLayer) -> str | None:
        """The wrapper's inner prefix ``X.module.`` → the plain module's ``X.``."""
        return layer.module[: -len("module.")] if layer.module.endswith("module.") else None
