"""What a checkpoint holds, without any SVD: its weight layers in module order, their dialects,
kinds, shapes and dtypes (``sninspect layers``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from torch import Tensor

from sninspect import dialects
from sninspect.audit.layers.tensors import UsableTensors, is_weight_candidate, normalisation_modules
from sninspect.audit.memory import NO_LIMIT, budget
from sninspect.errors import LayerError
from sninspect.io.load import ModelState, display_name, load_checkpoint
from sninspect.results.report import PLAIN


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``sninspect layers``: what a layer is, without any SVD."""

    name: str
    model: str
    dialect: str
    kind: str
    shape: tuple[int, ...]
    dim: int | None
    dtype: str
    sn_keys: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def inventory(path: str | os.PathLike[str], *, key: str | None = None, unsafe_load: bool = False,
              max_memory: int | None = None) -> list[LayerInfo]:
    """The weight layers of a checkpoint with their dialects, shapes and dtypes (no SVD); a ``.pt2``
    archive's tensors are read within ``max_memory`` bytes (else the memory available now)."""
    checkpoint = load_checkpoint(path, key=key, unsafe_load=unsafe_load, budget=budget(max_memory))
    several = len(checkpoint.models) > 1
    rows: list[LayerInfo] = []
    for model in checkpoint.models:
        prefix = model.name + "." if several else ""
        tensors = model_tensors(model, checkpoint.format)
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        sn_layers, warnings = dialects.detect(shapes)
        claimed = {k for layer in sn_layers for k in layer.keys}
        entries: list[tuple[str, LayerInfo]] = []
        norms = frozenset(normalisation_modules(shapes))
        lookalike = dialects.plain_names(shapes, claimed)
        for layer in sn_layers:
            dim: int | None
            try:
                dim = dialects.resolve(layer, UsableTensors(tensors, NO_LIMIT)).dim
            except LayerError as err:
                dim, warnings = None, warnings + [f"layer '{display_name(layer.name)}': {err}"]
            name = display_name(layer.name)
            shape = shapes[layer.weight_key]
            entries.append((layer.weight_key, LayerInfo(
                prefix + name, model.name, layer.dialect, layer_kind(name, shape, dim or 0), shape, dim,
                str(tensors[layer.weight_key].dtype).removeprefix("torch."),
                tuple(k.removeprefix(layer.module) for k in layer.keys))))
        for raw, shape in shapes.items():
            if raw in claimed or not is_weight_candidate(raw, tensors[raw], norms):
                continue
            name = display_name(lookalike[raw][0] if raw in lookalike else raw)
            entries.append((raw, LayerInfo(prefix + name, model.name, PLAIN, layer_kind(name, shape, 0), shape,
                                           None, str(tensors[raw].dtype).removeprefix("torch."), ())))
        order = {k: i for i, k in enumerate(shapes)}
        entries.sort(key=lambda e: order[e[0]])
        rows.extend(replace(info, warnings=tuple(warnings)) for _, info in entries)
    return rows


def layer_kind(name: str, shape: tuple[int, ...], dim: int) -> str:
    """``linear``, ``embedding``, ``conv2d``, ``conv_transpose2d`` (SN dim=1), ``vector``."""
    if len(shape) <= 1:
        return "vector"
    if len(shape) == 2:
        return "embedding" if "emb" in name.lower() else "linear"
    spatial = len(shape) - 2
    return f"conv_transpose{spatial}d" if dim == 1 else f"conv{spatial}d"


def model_tensors(model: ModelState, file_format: str) -> Mapping[str, Tensor]:
    """The model's tensors in module order. safetensors files store keys sorted by dtype and name,
    not in module order, so their keys are put in natural order (``2`` before ``10``)."""
    if file_format.startswith("safetensors"):
        return _Reordered(model.tensors, sorted(model.tensors, key=_natural))
    return model.tensors


class _Reordered(Mapping[str, Tensor]):
    """A read-only view of a (possibly lazy) tensor mapping with another key order."""

    def __init__(self, tensors: Mapping[str, Tensor], keys: list[str]) -> None:
        self._tensors, self._keys = tensors, keys

    def __getitem__(self, key: str) -> Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _natural(key: str) -> tuple[tuple[int, int | str], ...]:
    """``main.10.weight`` after ``main.2.weight``: numeric path segments compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in key.split("."))
