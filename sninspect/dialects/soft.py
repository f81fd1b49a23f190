"""Soft SN (Behrmann et al. 2019 invertible ResNets; DUE / DDU / SNGP uncertainty models): divide only
what is above a coefficient.

State: ``P_orig``, ``P_u``, ``P_v`` as torch's hook SN, plus a logged ``P_sigma`` buffer (1,). Eval
mode computes σ = u · (W v) from the stored vectors and divides W by max(1, σ / coeff). The coefficient
is a constructor argument, not stored: it comes from the user (``--coeff``, default 1.0).
The σ̂ reported is that eval divisor, so σ_eff = σ1 / max(1, σ / coeff) is the eval weight's norm.
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
    Vectors,
    module_and_param,
    split_key,
    vector,
)
from sninspect.dialects.dims import resolve_dim
from sninspect.errors import LayerError, option
from sninspect.linalg.spectral import bilinear_sigma

DEFAULT_COEFF = 1.0
"""The coefficient assumed when the user gives none (the common choice: a 1-Lipschitz layer)."""


def soft_divisor(sigma: float, coeff: float) -> float:
    """What soft SN divides the weight by: max(1, σ / coeff)."""
    return max(1.0, sigma / coeff)


class Soft(Dialect):
    name = DialectName.soft
    summary = "soft SN (i-ResNet, DUE, SNGP): P_orig, P_u, P_v, buffer P_sigma; eval ÷ max(1, σ/coeff)"
    takes_coeff = True

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            base = split_key(key, "_orig")
            if base is None or any(base + s not in shapes for s in ("_u", "_v", "_sigma")):
                continue
            if len(shapes[base + "_u"]) > 2 or len(shapes[base + "_v"]) > 2 or base in shapes:
                continue  # feature-map-shaped vectors, or a stored eval weight: another layout
            module, param = module_and_param(base)
            layers.append(SNLayer(self.name, module, param, key, base, base + "_u", base + "_v",
                                  extra_keys=(base + "_sigma",)))
        return layers

    def resolve(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> SNLayer:
        return resolve_dim(layer, tensors, tuple(tensors[layer.weight_key].shape))

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        assert layer.u_key is not None and layer.v_key is not None  # Precondition: detected with both
        u = vector(tensors, layer.u_key, matrix)
        v = vector(tensors, layer.v_key, matrix)
        sigma = bilinear_sigma(matrix, u, v)
        coeff = layer_coeff(layer, DEFAULT_COEFF, "soft SN's coefficient")
        divisor = soft_divisor(sigma, coeff)
        notes = soft_rule_notes("soft SN", divisor, "u·(W v)", sigma, coeff, layer.coeff is not None, "the default")
        return Estimate(divisor, u, v, notes=tuple(notes))

    def power_sigma(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
        """max(1, σ / coeff) with σ after ``steps`` power steps (torch's order, as the training forward)."""
        return soft_divisor(super().power_sigma(layer, matrix, tensors, steps),
                            layer_coeff(layer, DEFAULT_COEFF, "soft SN's coefficient"))

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        raise LayerError("soft SN divides by max(1, σ/coeff), which PyTorch SN cannot express — use "
                         f"`sninspect strip` (or {option('exclude')} it)")


def layer_coeff(layer: SNLayer, default: float, what: str) -> float:
    """The soft rule's coefficient: the user's (``--coeff``) or the layout's ``default``; > 0."""
    coeff = layer.coeff if layer.coeff is not None else default
    if not coeff > 0.0:
        raise LayerError(f"{option('coeff', f'{coeff:g}')}: {what} must be > 0")
    return coeff


def soft_rule_notes(family: str, divisor: float, how: str, sigma: float, coeff: float, given: bool,
                    default_said: str) -> list[str]:
    """The notes of a layer under the soft rule: the divisor and where σ and coeff came from (the
    coefficient is never stored), and when the weight is used as stored."""
    flag = option("coeff").rstrip("=")
    told = f"from {flag}" if given else f"{default_said}; not stored in the checkpoint, set {flag}"
    notes = [f"{family}: eval divides by max(1, σ/coeff) = {divisor:.6g} with σ = {how} = {sigma:.6g} and "
             f"coeff = {coeff:g} ({told})"]
    if divisor == 1.0:
        notes.append("σ ≤ coeff: the weight is used as stored (σ̂ = 1)")
    return notes
