"""One model's state dict as the rewrites see it, and the surgery they share: finding and resolving
the SN layers, rebuilding the key order, torch's ``_metadata``, a wrapper level to remove."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from sninspect import dialects
from sninspect.audit.options import Selector
from sninspect.dialects import SNLayer
from sninspect.dialects.base import Metadata, meta_key
from sninspect.errors import LayerError, option
from sninspect.io.load import display_name
from sninspect.rewrite.summary import LayerChange


@dataclass
class State:
    """One model's state dict: raw key → tensor (in order) and torch's ``_metadata`` (module → dict)."""

    tensors: dict[str, Tensor]
    metadata: Metadata | None = None

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> State:
        """From ``module.state_dict()`` (its ``_metadata`` included)."""
        return cls(dict(state_dict), copy_metadata(getattr(state_dict, "_metadata", None)))

    def to_state_dict(self) -> OrderedDict[str, Tensor]:
        """What ``module.load_state_dict`` takes (with ``_metadata`` when there is one)."""
        out: OrderedDict[str, Tensor] = OrderedDict(self.tensors)
        if self.metadata is not None:
            out._metadata = self.metadata  # type: ignore[attr-defined]
        return out


@dataclass
class StateRewrite:
    """The result of rewriting one state dict."""

    state: State
    changes: list[LayerChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things the user should know (keys dropped or renamed)."""
    warnings: list[str] = field(default_factory=list)
    """Things that may be wrong (a layer that looks transposed, σ̂ ≤ 0)."""


def copy_metadata(metadata: Mapping[str, Mapping[str, Any]] | None) -> Metadata | None:
    """A copy of ``_metadata`` deep enough to edit (module → entry → dict)."""
    if metadata is None:
        return None
    return {module: {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in entry.items()}
            for module, entry in metadata.items()}


@contextmanager
def named(name: str) -> Iterator[None]:
    """A LayerError raised inside gets the layer's name in front."""
    try:
        yield
    except LayerError as err:
        raise LayerError(f"layer '{name}': {err}") from err


def rebuild(
    tensors: Mapping[str, Tensor], replace_at: Mapping[str, list[tuple[str, Tensor]]], drop: set[str]
) -> dict[str, Tensor]:
    """``tensors`` with the entries in ``replace_at`` swapped in at their key's position and ``drop``
    left out; a new key that collides with a kept one is an error."""
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if key in replace_at:
            for new_key, new_value in replace_at[key]:
                taken = new_key in tensors and new_key not in drop and new_key not in replace_at
                if new_key in out or taken:
                    raise LayerError(f"cannot write '{new_key}': the state dict already has that key")
                out[new_key] = new_value
        elif key not in drop:
            out[key] = value
    return out


def detect(state: State, coeff: float | None = None) -> tuple[list[SNLayer], list[str]]:
    """The SN layers of ``state`` and the warnings about keys that fit no dialect; ``coeff``: soft
    SN's coefficient (not stored)."""
    shapes = {k: tuple(t.shape) for k, t in state.tensors.items()}
    return dialects.detect(shapes, coeff=coeff)


def scope(layers: Iterable[SNLayer], selector: Selector, prefix: str) -> list[SNLayer]:
    """The layers ``--include`` / ``--exclude`` select."""
    return [layer for layer in layers if selector(prefix + display_name(layer.name))]


def resolved(
    layer: SNLayer, tensors: Mapping[str, Tensor], name: str, transposed: re.Pattern[str] | None = None
) -> tuple[SNLayer, str | None]:
    """``layer`` with its dim decided (``transposed`` forces dim=1 where the u length allows it), and
    a warning when the dialect could only guess the dim."""
    dialect = dialects.of(layer)
    with named(name):
        layer = dialect.resolve(layer, tensors)
        dialect.check_rewritable(layer, tensors)
    dims = dialect.guessable_dims(layer, tensors)
    if transposed is not None and transposed.search(name) and 1 in dims:
        return replace(layer, dim=1), None
    if len(dims) < 2:
        return layer, None
    shape = list(tensors[layer.weight_key].shape)
    return layer, (f"layer '{name}': SN dim={layer.dim} guessed from u alone (no v stored, and both "
                   f"dims fit the shape {shape}); if this is a ConvTranspose, pass {option('transposed')}")


def clear_sn_metadata(metadata: Metadata | None, layers: Iterable[SNLayer], keys: Mapping[str, object]) -> None:
    """Remove what SN left in ``_metadata`` for each of ``layers``; ``keys``: the state kept."""
    if metadata is None:
        return
    for layer in layers:
        dialects.of(layer).clear_metadata(metadata, layer, keys)


def unwrap(state: State, layers: Iterable[SNLayer], prefix: str = "") -> list[str]:
    """Move every key under a wrapper's ``X.module.`` to ``X.`` (the plain architecture has no wrapper
    level; the cosgrove wrapper adds one); returns a note."""
    wrapped = [(layer, outer) for layer in layers if (outer := dialects.of(layer).unwrapped(layer)) is not None]
    wrappers = {layer.module: outer for layer, outer in wrapped}
    if not wrappers:
        return []
    renamed: dict[str, Tensor] = {}
    for key, tensor in state.tensors.items():
        new = key
        for inner, outer in wrappers.items():
            if key.startswith(inner):
                new = outer + key[len(inner) :]
                break
        if new in renamed:
            raise LayerError(f"cannot move '{key}' to '{new}': that key exists already")
        renamed[new] = tensor
    state.tensors = renamed
    if state.metadata is not None:
        state.metadata = _unwrap_metadata(state.metadata, wrappers)
    shown = ", ".join(f"'{prefix}{inner}*' → '{prefix}{outer}*'" for inner, outer in wrappers.items())
    kinds = "/".join(sorted({layer.dialect for layer, _ in wrapped}))
    return [f"{kinds} wrapper level removed so the unwrapped module loads strictly: {shown}"]


def _unwrap_metadata(metadata: Metadata, wrappers: Mapping[str, str]) -> Metadata:
    out: Metadata = {}
    wrapper_entries = {meta_key(outer) for outer in wrappers.values()}
    for key, value in metadata.items():
        if key in wrapper_entries:
            continue  # the wrapper module itself is gone
        new = key
        for inner, outer in wrappers.items():
            inner_meta = meta_key(inner)
            if key == inner_meta or key.startswith(inner):
                new = meta_key(outer) + key[len(inner_meta) :]
                break
        out[new] = value
    return out
