"""The network: eval-mode BatchNorm factors, the chain of layers in checkpoint order and the products
that bound its Lipschitz constant, and the layers no bound covers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sninspect.audit.layers.layer import LAYER_FAILURES, failure_reason
from sninspect.io.load import display_name
from sninspect.linalg.network import batchnorm_factor
from sninspect.results.report import FACTOR_BATCHNORM, FACTOR_PLAIN, FACTOR_SN, ChainFactor, LayerAudit, NetworkBound

ASSUMPTIONS = (
    "feed-forward chain of the weight layers in the order shown with 1-Lipschitz activations; "
    "residual additions, attention, pooling other than average, and embeddings are not covered"
)

def norm_layer_warnings(norm_modules: Sequence[str], prefix: str) -> list[str]:
    """LayerNorm / GroupNorm-like layers (:func:`~sninspect.audit.layers.tensors.normalisation_modules`)
    divide by a data-dependent scale: not globally Lipschitz, so they are no factor of the chain and
    no bound covers them; said in one warning."""
    found = [prefix + display_name(module.rstrip(".")) for module in norm_modules]
    if not found:
        return []
    return [f"normalisation layers ({', '.join(found[:6])}{' ...' if len(found) > 6 else ''}) are "
            "LayerNorm/GroupNorm-like, not globally Lipschitz: not audited as weight layers and left out "
            "of the network products, which do not cover them"]


@dataclass(frozen=True)
class BatchNorm:
    """An eval-mode BatchNorm: its running_var key, display name and Lipschitz factor."""

    key: str
    name: str
    factor: float | None
    """None when the BatchNorm's tensors cannot give one (``error`` says why): no certified product."""
    error: str | None = None
    channels: tuple[int, ...] = ()
    """The running_var's shape."""


def batchnorm_factors(
    tensors: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]], device: torch.device
) -> list[BatchNorm]:
    """Eval-mode BatchNorm layers (a module with running_mean and running_var) and their factors; a
    BatchNorm whose tensors are broken (γ of the wrong length, an empty running_var, a refused tensor
    kind) gets its reason instead, through the same boundary as a weight layer."""
    found = []
    for key in shapes:
        if not key.endswith("running_var"):
            continue
        module = key[: -len("running_var")]
        name = display_name(module.rstrip("."))
        try:
            weight = tensors[module + "weight"] if module + "weight" in tensors else None
            var = tensors[key].detach().to(device=device, dtype=torch.float64)
            gamma = weight.detach().to(device=device, dtype=torch.float64) if weight is not None else None
            found.append(BatchNorm(key, name, batchnorm_factor(gamma, var), channels=tuple(var.shape)))
        except LAYER_FAILURES as err:
            found.append(BatchNorm(key, name, None, failure_reason(err)))
    return found


def batchnorm_warnings(batchnorms: Sequence[BatchNorm], prefix: str) -> list[str]:
    """One line per BatchNorm that could not be read: the certified operator product cannot cover it."""
    return [f"BatchNorm '{prefix}{bn.name}' not audited: {bn.error}; no certified operator product"
            for bn in batchnorms if bn.error is not None]


@dataclass(frozen=True)
class ChainEntry:
    """One factor of the network chain: a weight layer or a BatchNorm, at its checkpoint position."""

    position: int
    name: str
    matrix: float | None
    """Reshaped-matrix norm (σ_eff); a BatchNorm's scaling (None when it cannot be read)."""
    operator: float | None
    """Certified operator bound; None when the layer has none."""
    role: str = FACTOR_SN
    kind: str = "linear"
    shape: tuple[int, ...] = ()


def network_bound(chain: Sequence[ChainEntry], excluded: Sequence[str]) -> NetworkBound:
    """∏ of per-factor norms over the chain, in chain order (``position``), with the running products.
    Both products run over the same factors: a BatchNorm is a per-channel scaling whose matrix norm and
    operator norm are the same number, so it enters both (one it cannot give leaves the matrix product
    without it and the certified product None)."""
    ordered = sorted(chain, key=lambda e: e.position)
    matrix: float = 1.0
    operator: float | None = 1.0
    cumulative_matrix, cumulative_operator = [], []
    for entry in ordered:
        matrix *= entry.matrix if entry.matrix is not None else 1.0
        operator = operator * entry.operator if (operator is not None and entry.operator is not None) else None
        cumulative_matrix.append(matrix)
        cumulative_operator.append(operator if operator is not None else math.nan)
    has_layers = any(e.matrix is not None and e.role != FACTOR_BATCHNORM for e in ordered)
    flipped = [e.name for e in ordered if e.matrix is not None and e.role != FACTOR_BATCHNORM
               and not e.matrix > 0.0]
    unavailable = None
    if flipped:  # σ_eff = σ1/σ̂ ≤ 0: σ̂ ≤ 0 flips the weight's sign; no product through it bounds anything
        unavailable = f"σ̂ ≤ 0 in {', '.join(flipped)} (the weight's sign is flipped; no bound holds)"
        has_layers = False
        cumulative_matrix = cumulative_operator = [math.nan] * len(ordered)
    return NetworkBound(
        matrix_product=matrix if has_layers else None,
        operator_product=operator if has_layers else None,
        cumulative_matrix=tuple(cumulative_matrix),
        cumulative_operator=tuple(cumulative_operator),
        layers=tuple(e.name for e in ordered),
        excluded=tuple(excluded),
        assumptions=ASSUMPTIONS,
        unavailable=unavailable,
        factors=tuple(ChainFactor(e.name, e.role, e.kind, e.shape, e.matrix, e.operator) for e in ordered),
    )


def in_chain(audit: LayerAudit) -> bool:
    """Whether the layer is a factor of the chain (embeddings, 1-D weights and broken layers are not)."""
    return audit.error is None and audit.kind not in {"embedding", "vector"} and audit.sigma_effective is not None


def chain_of(audits: Sequence[tuple[LayerAudit, str]], batchnorms: Sequence[BatchNorm],
             order: Mapping[str, int], prefix: str) -> tuple[list[ChainEntry], list[str]]:
    """The chain's factors and the layers left out of it."""
    chain, excluded = [], []
    for audit, key in audits:
        if not in_chain(audit):
            excluded.append(audit.name)
            continue
        chain.append(ChainEntry(order[key], audit.name, audit.sigma_effective, audit.operator_bound,
                                FACTOR_SN if audit.has_sn else FACTOR_PLAIN, audit.kind, audit.shape))
    for bn in batchnorms:  # factor None: no certified product
        chain.append(ChainEntry(order[bn.key], prefix + bn.name, bn.factor, bn.factor, FACTOR_BATCHNORM,
                                FACTOR_BATCHNORM, bn.channels))
    return chain, excluded
