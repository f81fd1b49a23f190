"""torch-mimicry's SNLinear / SNConv2d / SNEmbedding (Lee & Town 2020).

State: the plain ``weight``, ``sn_u`` of shape (1, out) and a logged ``sn_sigma``. The weight is
viewed as (out, -1); every forward, eval included, runs one fresh power step from the stored u
(``F.normalize``) and divides by u' · (W v). The step is not saved in eval mode, and the stored
``sn_sigma`` is not what the model divides by.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from sninspect.dialects.base import Dialect, DialectName, Estimate, Shapes, SNLayer, split_key, vector
from sninspect.errors import LayerError


class Mimicry(Dialect):
    name = DialectName.mimicry
    summary = "torch-mimicry SN layers: weight, sn_u (1, out), sn_sigma"

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            module = split_key(key, "sn_u")
            if module is None or not (module == "" or module.endswith(".")):
                continue
            if module + "weight" not in shapes:
                continue
            extra = tuple(k for k in (module + "sn_sigma",) if k in shapes)
            layers.append(SNLayer(self.name, module, "weight", module + "weight", module + "weight",
                                  key, None, extra_keys=extra, dim=0))
        return layers

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        assert layer.u_key is not None  # Precondition: detected with sn_u
        u = vector(tensors, layer.u_key, matrix)
        if u.numel() != matrix.shape[0]:
            raise LayerError(f"sn_u has {u.numel()} entries, expected {matrix.shape[0]} (out features)")
        sigma, _, _ = self.power_step(matrix, u)
        return Estimate(sigma, u, None, notes=("eval runs one fresh power step from sn_u (not saved)",))
