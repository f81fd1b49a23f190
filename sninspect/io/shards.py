"""Sharded checkpoints: a JSON index ``{"metadata": {...}, "weight_map": {tensor: shard file}}`` next
to its shards, all safetensors or all torch files. Shards must lie beside the index."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sninspect.errors import InputError
from sninspect.io import safetensors_check
from sninspect.io.checkpoint import Checkpoint, ModelState, find_models
from sninspect.io.files import one_line, open_regular, printable
from sninspect.io.safetensors_check import LazyTensors
from sninspect.io.safetensors_io import select
from sninspect.io.torch_io import load_torch

__all__ = ["load_index"]


def load_index(file: Path, shown: str, *, key: str | None, unsafe_load: bool) -> Checkpoint:
    """A sharded checkpoint, read through its index ``file``."""
    try:
        with open(file, "rb") as f:
            index = json.loads(f.read(safetensors_check.MAX_HEADER_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{shown}: not a valid shard index: {one_line(err)} (expected JSON with a "
                         "'weight_map')") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(v, str) for v in weight_map.values())):
        raise InputError(f"{shown}: not a shard index (expected a JSON object with a non-empty "
                         "'weight_map' of tensor name -> shard file)")
    shards: dict[str, Path] = {}
    for name in dict.fromkeys(weight_map.values()):
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise InputError(f"{shown}: shard {name!r} is not a file next to the index (refusing paths that "
                             "leave the index's folder)")
        shards[name] = file.parent / name
        if not os.path.lexists(shards[name]):
            raise InputError(f"{shown}: shard {name!r} is missing (expected {printable(shards[name])}; copy "
                             "all the shards next to the index)")
    raw_meta = index.get("metadata")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_meta.items()} \
        if isinstance(raw_meta, dict) else {}
    kinds = {name.lower().endswith(".safetensors") for name in shards}
    if kinds == {True}:
        return _load_safetensors_shards(file, shown, weight_map, shards, metadata, key)
    if kinds == {False}:
        return _load_torch_shards(file, shown, weight_map, shards, key, unsafe_load)
    raise InputError(f"{shown}: the index mixes safetensors and torch shards (expected one kind)")


def _load_safetensors_shards(
    file: Path, shown: str, weight_map: dict[str, str], shards: dict[str, Path], metadata: dict[str, str],
    key: str | None,
) -> Checkpoint:
    held: dict[str, LazyTensors] = {}
    merged: dict[str, str] = {}
    for name, shard in shards.items():
        shard_shown = printable(shard)
        open_regular(shard, shard_shown)
        held[name], header = safetensors_check.open_file(shard, shard_shown)
        merged.update(header.metadata)
    sources: dict[str, safetensors_check.Source] = {}
    for tensor, name in weight_map.items():
        if tensor not in held[name]:
            raise InputError(f"{shown}: tensor {tensor!r} is mapped to {name} but that shard does not hold "
                             "it (the index and the shards disagree)")
        sources[tensor] = safetensors_check.Source(shards[name], printable(shards[name]), tensor)
    merged.update(metadata)
    tensors, path = select(LazyTensors(sources), key, shown)
    return Checkpoint(file, "safetensors-sharded", [ModelState("", path, tensors)], None, merged, {})


def _load_torch_shards(
    file: Path, shown: str, weight_map: dict[str, str], shards: dict[str, Path], key: str | None,
    unsafe_load: bool,
) -> Checkpoint:
    loaded: dict[str, Mapping[str, Any]] = {}
    for name, shard in shards.items():
        shard_shown = printable(shard)
        magic = open_regular(shard, shard_shown)
        _, obj = load_torch(shard, shard_shown, magic, unsafe_load=unsafe_load)
        if not isinstance(obj, Mapping):
            raise InputError(f"{shard_shown}: shard holds a {type(obj).__name__}, expected a dict of tensors")
        loaded[name] = obj
    merged: OrderedDict[str, torch.Tensor] = OrderedDict()
    for tensor, name in weight_map.items():
        value = loaded[name].get(tensor)
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{shown}: tensor {tensor!r} is mapped to {name} but that shard does not hold "
                             "it (the index and the shards disagree)")
        merged[tensor] = value
    return Checkpoint(file, "torch-sharded", find_models(merged, shown, key), merged, {}, {})
