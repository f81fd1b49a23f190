"""BigGAN-PyTorch's ``layers.SN`` (Brock et al. 2019): SNLinear, SNConv2d, SNEmbedding.

State: the plain ``weight``, ``u0`` .. ``u{k-1}`` of shape (1, out) and logged ``sv0`` ... The
weight is viewed as (out, -1) (transposed when the layer was built with ``transpose=True``: u then
has the input's length). Every forward runs a fresh power step from each u (Gram–Schmidt against the
earlier ones) and divides by the first singular value estimate, from ``u0``; eval does not save it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from sninspect.dialects.base import Dialect, DialectName, Estimate, Shapes, SNLayer, split_key, vector
from sninspect.errors import LayerError

_EXTRA = re.compile(r"^(u|sv)\d+$")


class BigGAN(Dialect):
    name = DialectName.biggan
    summary = "BigGAN-PyTorch layers.SN: weight, u0..uN (1, out), sv0..svN"

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            module = split_key(key, "u0")
            if module is None or not (module == "" or module.endswith(".")):
                continue
            if module + "weight" not in shapes or module + "sv0" not in shapes:
                continue
            extra = tuple(
                k for k in shapes
                if k.startswith(module) and k != key and _EXTRA.match(k[len(module):])
            )
            layers.append(SNLayer(self.name, module, "weight", module + "weight", module + "weight",
                                  key, None, extra_keys=extra, dim=0))
        return layers

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        assert layer.u_key is not None  # Precondition: detected with u0
        u = vector(tensors, layer.u_key, matrix)
        note = "eval runs one fresh power step from u0 (not saved); sv0 is only a log"
        if u.numel() == matrix.shape[0]:
            sigma, _, _ = self.power_step(matrix, u)
            return Estimate(sigma, u, None, notes=(note,))
        if u.numel() == matrix.shape[1]:
            # transpose=True: the power iteration runs on Wᵀ, so u0 lives on the input side.
            sigma, _, _ = self.power_step(matrix.T, u)
            return Estimate(sigma, None, u, notes=(note, "transpose=True: u0 is the right (input) vector"))
        raise LayerError(
            f"u0 has {u.numel()} entries, expected {matrix.shape[0]} (out) or {matrix.shape[1]} (transpose)"
        )

    def left_matrix(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """transpose=True stores the right vector in u0: the power iteration then runs on Wᵀ."""
        assert layer.u_key is not None  # Precondition: detected with u0
        u = vector(tensors, layer.u_key, matrix)
        if u.numel() != matrix.shape[0] and u.numel() == matrix.shape[1]:
            return matrix.T, u
        return super().left_matrix(layer, matrix, tensors)
