"""``torch.nn.utils.parametrizations.spectral_norm``.

State: ``parametrizations.P.original`` plus ``parametrizations.P.<i>._u`` / ``._v`` for the i-th
parametrization of P. Eval mode divides by u · (W v) from the stored vectors. A 1-D weight has no
u/v and is divided by its exact L2 norm (``F.normalize``, eps 1e-12).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from sninspect.dialects.base import Dialect, Estimate, Shapes, SNLayer, resolve_dim, vector
from sninspect.linalg.spectral import bilinear_sigma

_ORIGINAL = re.compile(r"^(?P<module>(?:.*\.)?)parametrizations\.(?P<param>[^.]+)\.original$")
_BUFFER = re.compile(r"^(?P<index>\d+)\._(?P<which>[uv])$")


class Parametrize(Dialect):
    name = "torch-parametrize"
    summary = "torch.nn.utils.parametrizations.spectral_norm: parametrizations.P.original, .<i>._u, .<i>._v"

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key, shape in shapes.items():
            match = _ORIGINAL.match(key)
            if match is None:
                continue
            module, param = match["module"], match["param"]
            head = f"{module}parametrizations.{param}."
            rest = {k[len(head) :] for k in shapes if k.startswith(head) and k != key}
            buffers: dict[str, dict[str, str]] = {}
            for tail in rest:
                found = _BUFFER.match(tail)
                if found:
                    buffers.setdefault(found["index"], {})[found["which"]] = head + tail
            pairs = {i: b for i, b in buffers.items() if set(b) == {"u", "v"}}
            if pairs:
                index = min(pairs, key=int)
                notes: tuple[str, ...] = ()
                if int(index) > 0:
                    notes = (f"SN is parametrization #{index}; earlier ones in the chain are not applied",)
                layers.append(
                    SNLayer(self.name, module, param, key, module + param,
                            pairs[index]["u"], pairs[index]["v"], notes=notes)
                )
            elif not rest and len(shape) == 1:
                note = "1-D weight: divided by its exact L2 norm (no u/v stored)"
                layers.append(SNLayer(self.name, module, param, key, module + param, dim=0, notes=(note,)))
        return layers

    def resolve(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> SNLayer:
        if layer.u_key is None:
            return layer
        return resolve_dim(layer, tensors, tuple(tensors[layer.weight_key].shape))

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        if layer.u_key is None or layer.v_key is None:
            # F.normalize(weight, dim=0, eps=1e-12): weight / max(‖weight‖, eps)
            return Estimate(max(float(torch.linalg.vector_norm(matrix)), 1e-12), None, None)
        u = vector(tensors, layer.u_key, matrix)
        v = vector(tensors, layer.v_key, matrix)
        return Estimate(bilinear_sigma(matrix, u, v), u, v)
