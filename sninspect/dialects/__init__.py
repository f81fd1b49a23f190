"""SN dialects: one file per state layout, found through ``REGISTRY``.

Adding a dialect = one new file with a :class:`Dialect` subclass + one entry here + a test fixture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from sninspect.dialects.base import Dialect, DialectName, Estimate, OperatorView, Shapes, SNLayer, Vectors
from sninspect.dialects.biggan import BigGAN
from sninspect.dialects.conv_operator import ConvOperator
from sninspect.dialects.cosgrove import Cosgrove
from sninspect.dialects.mimicry import Mimicry
from sninspect.dialects.parametrize import LOOKALIKE_NOTE, Parametrize, lookalikes
from sninspect.dialects.projection import Projection
from sninspect.dialects.residual_flows import ResidualFlows
from sninspect.dialects.soft import Soft
from sninspect.dialects.torch_legacy import TorchLegacy

__all__ = ["REGISTRY", "Dialect", "DialectName", "Estimate", "OperatorView", "SNLayer", "Vectors", "by_name",
           "detect", "of", "plain_names", "resolve"]

REGISTRY: tuple[Dialect, ...] = (ConvOperator(), Soft(), TorchLegacy(), Parametrize(), Mimicry(), BigGAN(), Cosgrove(),
                                 ResidualFlows(), Projection())
"""Order matters where layouts overlap: conv-operator and soft are tried before torch (all use ``P_orig``)."""

_SN_LIKE = re.compile(r"(_orig|_u|_v|_bar|(^|\.)sn_u|(^|\.)sn_sigma|(^|\.)u0|(^|\.)sv0)$|(^|\.)parametrizations\.")


def by_name(name: str) -> Dialect:
    """The registered dialect called ``name``."""
    for dialect in REGISTRY:
        if dialect.name == name:
            return dialect
    raise KeyError(name)


def of(layer: SNLayer) -> Dialect:
    """The dialect that detected ``layer``."""
    return by_name(layer.dialect)


def detect(shapes: Shapes, *, coeff: float | None = None) -> tuple[list[SNLayer], list[str]]:
    """All SN layers in a state dict's ``shapes`` (raw key → shape), in key order, and warnings for
    keys that look like SN state but fit no dialect. ``coeff``: soft SN's coefficient (not stored),
    given to the layers of dialects that take one."""
    layers: list[SNLayer] = []
    claimed: set[str] = set()
    for dialect in REGISTRY:
        for layer in dialect.detect(shapes):
            if claimed.isdisjoint(layer.keys):
                layers.append(replace(layer, coeff=coeff) if dialect.takes_coeff else layer)
                claimed.update(layer.keys)
    order = {key: i for i, key in enumerate(shapes)}
    layers.sort(key=lambda layer: order[layer.weight_key])
    lookalike_heads = tuple(k.removesuffix("original") for k in lookalikes(shapes, claimed))
    stray = [k for k in shapes if k not in claimed and _SN_LIKE.search(k) and not k.startswith(lookalike_heads)]
    warnings = []
    if stray:
        shown = ", ".join(stray[:8]) + (f" and {len(stray) - 8} more" if len(stray) > 8 else "")
        warnings.append(f"keys that look like SN state but fit no known dialect (left out): {shown}")
    return layers, warnings


def plain_names(shapes: Shapes, claimed: set[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """For keys no SN layer claimed that look like SN state but are not SN (a parametrized weight
    without ``_u``/``_v``): raw key → (the key the parameter has in the model, notes saying so)."""
    return {key: (plain, (LOOKALIKE_NOTE.format(param=plain.rsplit(".", 1)[-1]),))
            for key, plain in lookalikes(shapes, claimed).items()}


def resolve(layer: SNLayer, tensors: Mapping[str, object]) -> SNLayer:
    """``layer`` with its dim decided by its dialect."""
    return of(layer).resolve(layer, tensors)  # type: ignore[arg-type]
