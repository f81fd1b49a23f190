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

from sninspect.dialects.base import (
    EPS,
    Dialect,
    DialectName,
    Estimate,
    Metadata,
    Shapes,
    SNLayer,
    Vectors,
    vector,
)
from sninspect.dialects.dims import resolve_dim
from sninspect.errors import LayerError, option
from sninspect.linalg.spectral import bilinear_sigma, normalize

_ORIGINAL = re.compile(r"^(?P<module>(?:.*\.)?)parametrizations\.(?P<param>[^.]+)\.original$")
_BUFFER = re.compile(r"^(?P<index>\d+)\._(?P<which>[uv])$")


LOOKALIKE_NOTE = ("parametrized without SN state (no _u/_v next to parametrizations.{param}.original): a "
                  "plain layer, audited as stored; the parametrization (code, not state) is not applied")


def lookalikes(shapes: Shapes, claimed: set[str]) -> dict[str, str]:
    """``parametrizations.P.original`` keys that no SN layer claimed (a zero-mean, orthogonal or other
    parametrization without SN's ``_u``/``_v``) → the key P has in the model (``a.weight``)."""
    found = {}
    for key in shapes:
        match = _ORIGINAL.match(key)
        if match is not None and key not in claimed:
            found[key] = match["module"] + match["param"]
    return found


class Parametrize(Dialect):
    name = DialectName.parametrize
    summary = "torch.nn.utils.parametrizations.spectral_norm: parametrizations.P.original, .<i>._u, .<i>._v"
    one_d_by_norm = True

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
            return Estimate(max(float(torch.linalg.vector_norm(matrix)), EPS), None, None)
        u = vector(tensors, layer.u_key, matrix)
        v = vector(tensors, layer.v_key, matrix)
        return Estimate(bilinear_sigma(matrix, u, v), u, v)

    def check_rewritable(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> None:
        """SN must be the only parametrization of P: the others are code, not state, and cannot be baked."""
        head = f"{layer.module}parametrizations.{layer.param}."
        others = [k for k in tensors if k.startswith(head) and k not in layer.keys]
        index = None if layer.u_key is None else layer.u_key[len(head) :].split(".")[0]
        if others or (index is not None and index != "0"):
            raise LayerError(
                f"'{layer.param}' has other parametrizations besides SN ({', '.join(others) or 'before it'}); "
                f"their effect is not in the state dict, so it cannot be rewritten — {option('exclude')} this layer"
            )

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        """parametrize's order: u = n(W v), then v = n(Wᵀ u); a 1-D weight: its exact L2 norm."""
        if layer.u_key is None:  # what every step gives
            return max(float(torch.linalg.vector_norm(matrix)), EPS)
        assert layer.v_key is not None  # Precondition: detected with both vectors
        left, u = self.left_matrix(layer, matrix, tensors)
        v = vector(tensors, layer.v_key, matrix)
        for _ in range(steps):
            u = normalize(left @ v)
            v = normalize(left.T @ u)
        return float(torch.dot(u, left @ v))

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        """u, v kept; a 1-D weight (no u, v) as a legacy column: u = W/‖W‖, v = [1]."""
        weight, _ = self.weight_matrix(layer, tensors)  # checked usable
        if layer.u_key is not None and layer.v_key is not None:
            u, v = tensors[layer.u_key].detach(), tensors[layer.v_key].detach()
            return Vectors(u.reshape(-1).clone(), v.reshape(-1).clone(), "u, v kept")
        dtype = tensors[layer.weight_key].dtype
        norm = max(float(torch.linalg.vector_norm(weight)), EPS)
        u_col = (weight / norm).to(dtype)  # (n,)
        v_col = torch.ones(1, dtype=dtype)  # (1,): legacy SN views a 1-D weight as an (n, 1) column
        return Vectors(u_col, v_col, f"1-D: u = W/‖W‖, v = [1] (σ̂ = ‖W‖ = {norm:.6g})")

    def emit(
        self, module: str, param: str, weight: Tensor, u: Tensor | None, v: Tensor | None
    ) -> list[tuple[str, Tensor]]:
        """``parametrizations.P.original`` and, unless 1-D, ``parametrizations.P.0._u`` / ``._v``."""
        head = f"{module}parametrizations.{param}."
        entries = [(head + "original", weight)]
        if u is not None and v is not None:
            entries += [(head + "0._u", u), (head + "0._v", v)]
        return entries

    def clear_metadata(self, metadata: Metadata, layer: SNLayer, remaining: Mapping[str, object]) -> None:
        """Also the entries of the parametrization submodules (the container when no other is left)."""
        super().clear_metadata(metadata, layer, remaining)
        head = f"{layer.module}parametrizations"
        still = any(k.startswith(head + ".") for k in remaining)
        for key in list(metadata):
            if key == f"{head}.{layer.param}" or key.startswith(f"{head}.{layer.param}."):
                del metadata[key]
            elif key == head and not still:
                del metadata[key]
