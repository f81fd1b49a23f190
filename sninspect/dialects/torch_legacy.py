"""``torch.nn.utils.spectral_norm`` (the hook-based API), versions 1 and None.

Version 1 stores ``P_orig``, ``P_u`` and ``P_v``; eval mode divides by u · (W v) from the stored
vectors, without iterating. Version None (PyTorch 0.4.x) stored ``P_orig``, ``P_u`` and the
normalized weight ``P`` as a buffer, which *is* the eval weight; PyTorch's load hook recovers v by
solving W x = u and rescaling so that u · (W v) = mean(W_orig / P).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from sninspect.dialects.base import (
    Dialect,
    DialectName,
    Estimate,
    Metadata,
    Shapes,
    SNLayer,
    Vectors,
    meta_key,
    module_and_param,
    split_key,
    vector,
)
from sninspect.dialects.dims import candidate_dims, resolve_dim
from sninspect.errors import LayerError
from sninspect.linalg.spectral import bilinear_sigma, to_matrix


class TorchLegacy(Dialect):
    name = DialectName.torch
    summary = "torch.nn.utils.spectral_norm: P_orig, P_u, P_v (version None: P_orig, P_u, buffer P)"
    writes_metadata = True

    def detect(self, shapes: Shapes) -> list[SNLayer]:
        layers = []
        for key in shapes:
            base = split_key(key, "_orig")
            if base is None or base + "_u" not in shapes:
                continue
            if len(shapes[base + "_u"]) > 2:
                continue  # a feature-map-shaped u: the conv-operator dialect
            module, param = module_and_param(base)
            if base + "_v" in shapes:
                layers.append(SNLayer(self.name, module, param, key, base, base + "_u", base + "_v"))
            elif base in shapes:
                note = "version None (PyTorch 0.4): the stored buffer is the eval weight"
                layers.append(
                    SNLayer(self.name, module, param, key, base, base + "_u", None, base, notes=(note,))
                )
        return layers

    def resolve(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> SNLayer:
        return resolve_dim(layer, tensors, tuple(tensors[layer.weight_key].shape))

    def estimate(self, layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
        assert layer.u_key is not None and layer.dim is not None  # Precondition: detected and resolved
        u = vector(tensors, layer.u_key, matrix)
        if layer.v_key is not None:
            v = vector(tensors, layer.v_key, matrix)
            return Estimate(bilinear_sigma(matrix, u, v), u, v)
        assert layer.buffer_key is not None  # Precondition: version None has the buffer
        return _version_none(layer, matrix, u, tensors)

    def guessable_dims(self, layer: SNLayer, tensors: Mapping[str, Tensor]) -> list[int]:
        """Version None stores no v: a square ConvTranspose fits both dims and u alone decides,
        unreliably before u has converged."""
        if layer.u_key is None or layer.v_key is not None:
            return []
        return candidate_dims(tuple(tensors[layer.weight_key].shape), tensors[layer.u_key].numel(), None)

    def pytorch_vectors(self, layer: SNLayer, tensors: Mapping[str, Tensor], target: Dialect) -> Vectors:
        """Version 1: u, v kept. Version None: v as PyTorch's load hook recovers it."""
        assert layer.u_key is not None  # Precondition: detected with u
        weight, matrix = self.weight_matrix(layer, tensors)
        if layer.v_key is not None:
            if target.one_d_by_norm and weight.dim() == 1:
                # Legacy SN on a 1-D weight (a column); parametrize divides a 1-D weight by its exact norm.
                sigma_hat = self.estimate(layer, matrix, tensors).sigma_hat
                norm = float(torch.linalg.vector_norm(weight))
                return Vectors(None, None, "1-D: parametrize divides by the exact L2 norm",
                               f"1-D weight: eval divisor changes from σ̂ = {sigma_hat:.6g} to ‖W‖ = {norm:.6g}")
            u, v = tensors[layer.u_key].detach(), tensors[layer.v_key].detach()
            return Vectors(u.reshape(-1).clone(), v.reshape(-1).clone(), "u, v kept")
        estimate = self.estimate(layer, matrix, tensors)
        assert estimate.u is not None  # Precondition: version None stores u
        v = recover_v(matrix, estimate.u, estimate.sigma_hat)
        detail = f"version None → 1: v recovered as PyTorch's load hook does (σ̂ = {estimate.sigma_hat:.6g})"
        note = next((n for n in estimate.notes if n.startswith("buffer vs")), None)
        warning = f"the stored eval buffer is replaced by W/σ̂ ({note})" if note else None
        u_stored = tensors[layer.u_key].detach().reshape(-1).clone()
        return Vectors(u_stored, v.to(tensors[layer.weight_key].dtype), detail, warning)

    def emit(
        self, module: str, param: str, weight: Tensor, u: Tensor | None, v: Tensor | None
    ) -> list[tuple[str, Tensor]]:
        """``P_orig``, ``P_u``, ``P_v``."""
        assert u is not None and v is not None  # Precondition: legacy SN always stores both
        base = module + param
        return [(base + "_orig", weight), (base + "_u", u), (base + "_v", v)]

    def mark_metadata(self, metadata: Metadata, module: str, param: str) -> None:
        """What ``SpectralNormStateDictHook`` saves: ``_metadata[module]['spectral_norm'][P.version] = 1``."""
        entry = metadata.setdefault(meta_key(module), {})
        entry.setdefault("spectral_norm", {})[f"{param}.version"] = 1


def _version_none(layer: SNLayer, matrix: Tensor, u: Tensor, tensors: Mapping[str, Tensor]) -> Estimate:
    """σ̂ = mean(W_orig / P) as PyTorch's load hook computes it, over the entries where P ≠ 0."""
    assert layer.buffer_key is not None and layer.dim is not None
    buffer = tensors[layer.buffer_key].detach().to(device=matrix.device, dtype=matrix.dtype)
    if buffer.shape != tensors[layer.weight_key].shape:
        raise LayerError(
            f"buffer '{layer.buffer_key}' has shape {list(buffer.shape)}, "
            f"expected {list(tensors[layer.weight_key].shape)} like the weight"
        )
    eval_matrix = to_matrix(buffer, layer.dim)  # (rows, cols)
    if not bool(torch.isfinite(eval_matrix).all()):
        raise LayerError(f"buffer '{layer.buffer_key}' holds NaN or infinite values (the eval weight is unusable)")
    nonzero = eval_matrix != 0
    if not bool(nonzero.any()):
        raise LayerError(f"buffer '{layer.buffer_key}' is all zeros")
    sigma_hat = float((matrix[nonzero] / eval_matrix[nonzero]).mean())
    # How far the stored buffer is from W_orig / σ̂ (0 for a checkpoint saved right after a forward).
    gap = float((eval_matrix - matrix / sigma_hat).abs().max() / eval_matrix.abs().max())
    v = recover_v(matrix, u, sigma_hat)
    notes = (f"buffer vs W_orig/σ̂: max relative deviation {gap:.2e}; v recovered as PyTorch's load hook does",)
    return Estimate(sigma_hat, u, None, eval_matrix=eval_matrix, notes=notes + (_recovered(v),))


def recover_v(matrix: Tensor, u: Tensor, sigma_hat: float) -> Tensor:
    """v as PyTorch's version-None load hook recovers it: x = pinv(WᵀW) Wᵀ u, rescaled so that
    u · (W v) = σ̂ (``SpectralNorm._solve_v_and_rescale``)."""
    x = torch.linalg.pinv(matrix.T @ matrix) @ (matrix.T @ u)  # (cols,)
    return x * (sigma_hat / float(torch.dot(u, matrix @ x)))


def _recovered(v: Tensor) -> str:
    return f"‖recovered v‖ = {float(torch.linalg.vector_norm(v)):.6g}"
