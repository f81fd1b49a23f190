"""Read a ``torch.export.save`` archive (``.pt2``) as data: the graph, its tensors, its input shapes.

``torch.export.load`` is not used: in torch 2.13 it unpickles with ``torch.load(weights_only=False)``
every weight saved "with pickle" (tensor subclasses) and with ``pickle.loads`` every pickled constant,
so a crafted archive runs code when loaded. This reader executes nothing from the file:

- the archive is a zip; a name listed twice, or a record claiming to unpack to more bytes than the
  whole file holds, is refused before anything is read;
- ``<root>/models/<model>.json`` (the graph, in torch's JSON schema) and the two payload configs
  (``data/weights/model_weights_config.json``, ``data/constants/model_constants_config.json``) are
  parsed with :func:`json.loads` (data only);
- tensors are rebuilt from raw little-endian records with the dtype, sizes, strides and offset the
  config gives, after checking that the view lies inside its record and, before any tensor is built,
  every size claim: a view claiming more bytes than its record holds (stride 0, or an empty record
  standing for zeros) may do so by :data:`~sninspect.io.torch_check.VIEW_ALLOWANCE` or the file's size
  at most, all of them together; the bytes the tensors will take are then put to the caller's memory
  ``budget`` (``--max-memory``) before one is allocated; a payload marked ``use_pickle``
  (a pickled tensor or object), custom objects (torchbind), dynamic shapes (symbolic sizes) and
  argument kinds outside the plain-data ones are refused, naming the entry;
- ``data/sample_inputs`` (a pickle) and ``extra_files`` are never read; input shapes come from the
  graph's own tensor metadata.

Operators are kept as their names (``torch.ops.aten.conv2d.default``): nothing here looks them up or
calls them. Every failure is one :class:`~sninspect.errors.InputError` line.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from sninspect.errors import InputError, UnsafeCheckpointError
from sninspect.io.files import open_regular, printable
from sninspect.io.torch_check import VIEW_ALLOWANCE

__all__ = ["ExportedGraph", "GraphNode", "Ref", "load_exported", "looks_like_pt2"]

_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
           7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}
"""torch._export.serde.schema.ScalarType codes of the dtypes read (complex and float8 are refused)."""

MAX_SIZE = 2**48
"""Largest size, stride or storage offset read from a record (a tensor that large fits no memory)."""

_MEMORY_FORMATS = {1: torch.contiguous_format, 2: torch.channels_last, 3: torch.channels_last_3d,
                   4: torch.preserve_format}


@dataclass(frozen=True)
class Ref:
    """A tensor value of the graph, by name (a placeholder or a node's output)."""

    name: str


@dataclass(frozen=True)
class GraphNode:
    """One operator call: ``outputs = target(*args, **kwargs)``; tensors appear as :class:`Ref`."""

    name: str
    target: str
    """The operator's name as torch writes it, e.g. ``torch.ops.aten.conv2d.default``."""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: tuple[str | None, ...]
    """The names of the values it produces (None for an output the graph does not name)."""
    module: str
    """The module path that made the call (from ``nn_module_stack``), '' at the top."""


@dataclass(frozen=True)
class ExportedGraph:
    """An exported program as data."""

    file: str
    """The archive's printable name."""
    nodes: tuple[GraphNode, ...]
    inputs: tuple[str, ...]
    """Placeholders fed by the user, in order."""
    outputs: tuple[str, ...]
    """Values returned to the user, in order."""
    tensors: dict[str, Tensor]
    """Placeholders fed from the archive (parameters, buffers, tensor constants), by graph name."""
    shapes: dict[str, tuple[int, ...]]
    """Every tensor value's shape, as recorded at export (the user inputs' are the example inputs')."""
    state_dict: dict[str, Tensor] = field(default_factory=dict)
    """Parameters and buffers by their module names (``block1.c1.weight_orig``): the checkpoint."""


class MemoryBudget(Protocol):
    """What the reader asks before allocating (:class:`sninspect.audit.memory.Budget`)."""

    def require(self, needed: int, what: str) -> None: ...


@dataclass(frozen=True)
class _Entry:
    """A payload tensor as its config describes it, checked before anything is read."""

    fqn: str
    record: str
    dtype: torch.dtype
    sizes: list[int]
    strides: list[int]
    offset: int
    claimed: int
    """Bytes the rebuilt tensor takes (numel × item size)."""
    stored: int
    """Bytes its record holds."""


def looks_like_pt2(file: Path) -> bool:
    """Whether ``file`` is a zip holding a torch.export model (``*/models/*.json``)."""
    try:
        with zipfile.ZipFile(file) as archive:
            return any(_model_record(name) for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError):  # e.g. "zip file version 9.3"
        return False


def _model_record(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 3 and parts[1] == "models" and parts[2].endswith(".json")


def load_exported(path: str | os.PathLike[str] | io.BytesIO, *, shown: str | None = None,
                  budget: MemoryBudget | None = None) -> ExportedGraph:
    """The graph and tensors of a ``torch.export.save`` archive (a file, or its bytes in memory), read
    without running code from it. ``budget``: asked for the bytes the tensors will take before any is
    built (:class:`~sninspect.errors.MemoryBudgetError` when over)."""
    if isinstance(path, io.BytesIO):
        file: Path | io.BytesIO = path
        shown = shown or "<exported module>"
        size = len(path.getbuffer())
    else:
        file = Path(os.fspath(path))
        shown = printable(file)
        open_regular(file, shown)
        size = os.path.getsize(file)
    try:
        with zipfile.ZipFile(file) as archive:
            return _read(archive, size, shown, budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        # NotImplementedError: a zip version or compression zipfile lacks; RuntimeError: an encrypted member
        raise InputError(f"{shown}: cannot read as a torch.export archive: {err} (expected a .pt2 file "
                         "written by torch.export.save; is it truncated or corrupt?)") from None


def _read(archive: zipfile.ZipFile, size: int, shown: str, budget: MemoryBudget | None) -> ExportedGraph:
    records = {info.filename: info for info in archive.infolist()}
    twice = [name for name, count in Counter(i.filename for i in archive.infolist()).items() if count > 1]
    if twice:
        raise InputError(f"{shown}: zip records appear more than once ({', '.join(map(repr, twice[:5]))}); "
                         "the archive has no one meaning (is it corrupt or crafted?)")
    for info in records.values():
        if info.file_size > size:
            raise InputError(f"{shown}: zip record {info.filename[:80]!r} claims {info.file_size} bytes "
                             f"unpacked but the whole file has {size} (is it corrupt or crafted?)")
    models = [name for name in records if _model_record(name)]
    if not models:
        old = any(name.endswith("serialized_exported_program.json") for name in records)
        raise InputError(f"{shown}: not a torch.export archive: no models/*.json record" + (
            " (an archive from torch < 2.8; re-export it with a newer torch.export.save)" if old else
            " (expected a .pt2 file written by torch.export.save)"))
    model = next((m for m in models if m.endswith("/models/model.json")), models[0])
    if len(models) > 1 and not model.endswith("/models/model.json"):
        raise InputError(f"{shown}: the archive holds {len(models)} programs and none is named 'model' "
                         "(sninspect reads the one torch.export.save writes)")
    root, name = model.split("/")[0], model.split("/")[-1][: -len(".json")]
    if root + "/byteorder" in records and archive.read(root + "/byteorder").strip() != b"little":
        raise InputError(f"{shown}: tensors are stored big-endian; sninspect reads little-endian archives")
    program = _json(archive, model, shown)
    payloads = [_entries(archive, f"{root}/data/{kind}/", f"{name}_{kind}_config.json", records, shown)
                for kind in ("weights", "constants")]
    _check_claims([e for entries in payloads for e in entries], size, shown, budget)
    weights, constants = ({e.fqn: _tensor(archive.read(e.record), e) for e in entries} for entries in payloads)
    try:
        return _graph(program, weights, constants, shown)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):  # JSON of the wrong structure
        raise InputError(f"{shown}: the model record has entries of the wrong kind (a list where torch "
                         "writes an object, a number for a name...): is the archive corrupt or crafted?") from None


def _json(archive: zipfile.ZipFile, name: str, shown: str) -> Any:
    try:
        return json.loads(archive.read(name))
    except (ValueError, RecursionError) as err:
        raise InputError(f"{shown}: record {name!r} is not valid JSON: {str(err)[:120]} (is the archive "
                         "corrupt?)") from None


def _entries(archive: zipfile.ZipFile, folder: str, config: str, records: dict[str, zipfile.ZipInfo],
             shown: str) -> list[_Entry]:
    """The tensors of one payload config, described and checked (nothing read but the config);
    pickled entries are refused."""
    if folder + config not in records:
        return []
    entries = _json(archive, folder + config, shown)
    entries = entries.get("config", {}) if isinstance(entries, dict) else None
    if not isinstance(entries, dict):
        raise InputError(f"{shown}: {folder + config!r} is not a payload config (is the archive corrupt?)")
    described = []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle"):
            raise UnsafeCheckpointError(f"{shown}: refused to load: entry {fqn[:80]!r} is a pickled object "
                                        "(a tensor subclass or a Python constant); unpickling it could run "
                                        "code, and sninspect reads raw tensors only")
        record = folder + str(meta.get("path_name", ""))
        if record not in records:
            raise InputError(f"{shown}: entry {fqn[:80]!r} names record {record[:80]!r}, which the archive "
                             "does not hold (is it truncated?)")
        described.append(_describe(str(fqn), record, records[record].file_size, meta.get("tensor_meta"), shown))
    return described


def _describe(fqn: str, record: str, stored: int, meta: Any, shown: str) -> _Entry:
    """One entry's tensor as its metadata says, after checking the view fits its record."""
    what = f"entry {fqn[:80]!r}"
    if not isinstance(meta, dict):
        raise InputError(f"{shown}: {what} has no tensor metadata (is the archive corrupt?)")
    code = meta.get("dtype")
    dtype = _DTYPES.get(code) if isinstance(code, int) else None
    if dtype is None:
        raise InputError(f"{shown}: {what} has dtype code {str(code)[:40]}, which sninspect does not "
                         "read (float, integer and bool tensors only)")
    sizes = _ints(meta.get("sizes"), what, shown)
    strides = _ints(meta.get("strides"), what, shown)
    offset = _ints([meta.get("storage_offset")], what, shown)[0]
    if len(strides) != len(sizes) or min([offset, *sizes, *strides], default=0) < 0:
        raise InputError(f"{shown}: {what} has sizes {sizes}, strides {strides}, offset {offset} that "
                         "describe no tensor (is the archive corrupt?)")
    item = torch.empty((), dtype=dtype).element_size()
    count = stored // item
    numel = math.prod(sizes)
    need = 0 if numel == 0 else offset + 1 + sum((n - 1) * s for n, s in zip(sizes, strides, strict=True))
    if need > count and stored > 0:
        raise InputError(f"{shown}: {what} needs {need} elements but its record holds {count} (is the "
                         "archive truncated or corrupt?)")
    return _Entry(fqn, record, dtype, sizes, strides, offset, numel * item, stored)


def _check_claims(entries: list[_Entry], size: int, shown: str, budget: MemoryBudget | None) -> None:
    """Refuse tensors made from far more bytes than the file holds (records unpacking to more than the
    file, views and empty records building more than their records), then ask the budget for them all.

    A stride-0 view, or an empty record (torch.export.save writes one for a fake tensor: zeros), builds
    more bytes than it reads; a 22 kB archive could otherwise claim a 30000² weight."""
    stored = sum({e.record: e.stored for e in entries}.values())
    if stored > size:  # each record fits the file, but together they unpack to more: compressed records
        raise InputError(f"{shown}: the tensor records unpack to {stored} bytes in total but the whole file has "
                         f"{size} (torch.export.save stores records uncompressed; is the archive crafted?)")
    allowance = max(size, VIEW_ALLOWANCE)
    made = 0
    for entry in entries:
        excess = entry.claimed - entry.stored
        if excess <= 0:
            continue
        made += excess
        if made > allowance:
            how = "an empty record (zeros)" if entry.stored == 0 else "a view over its record (stride 0 or overlapping)"
            before = f" ({made} with the entries before it)" if made != excess else ""
            raise InputError(f"{shown}: entry {entry.fqn[:80]!r} of shape {entry.sizes} claims {entry.claimed} "
                             f"bytes from {how} of {entry.stored} bytes: {excess} bytes made from nothing{before} "
                             f"in a file of {size} bytes (is the archive crafted?)")
    if budget is not None:
        largest = max((e.stored for e in entries), default=0)
        budget.require(sum(e.claimed for e in entries) + 2 * largest, f"{shown}: reading the archive's tensors ")


def _tensor(data: bytes, entry: _Entry) -> Tensor:
    """A tensor viewed from a raw record as its (checked) entry says."""
    if len(data) == 0:  # torch.export.save writes empty records for fake tensors and empty ones
        return torch.zeros(entry.sizes, dtype=entry.dtype)
    item = torch.empty((), dtype=entry.dtype).element_size()
    count = len(data) // item
    flat = torch.frombuffer(bytearray(data[: count * item]), dtype=entry.dtype)  # (count,)
    return torch.as_strided(flat, entry.sizes, entry.strides, entry.offset).clone()


def _ints(values: Any, what: str, shown: str) -> list[int]:
    """Concrete sizes; a symbolic one (dynamic shapes) is refused."""
    out = []
    for value in values if isinstance(values, list) else [None]:
        number = value.get("as_int") if isinstance(value, dict) else None
        if not isinstance(number, int) or isinstance(number, bool):
            raise InputError(f"{shown}: {what} has a symbolic or missing size {str(value)[:60]} (dynamic "
                             "shapes are not supported: export with static example inputs)")
        if number < 0:
            raise InputError(f"{shown}: {what} has a negative size {number} (is the archive corrupt or crafted?)")
        if number > MAX_SIZE:
            raise InputError(f"{shown}: {what} has a size, stride or offset of {number}, more than any tensor "
                             "has (is the archive corrupt or crafted?)")
        out.append(number)
    return out


def _graph(program: Any, weights: dict[str, Tensor], constants: dict[str, Tensor], shown: str) -> ExportedGraph:
    try:
        module = program["graph_module"]
        graph, signature = module["graph"], module["signature"]
        values = graph["tensor_values"]
        specs, out_specs = signature["input_specs"], signature["output_specs"]
    except (KeyError, TypeError):
        raise InputError(f"{shown}: the model record lacks graph_module/graph/signature (not a "
                         "torch.export program, or from an unsupported torch version)") from None
    if graph.get("custom_obj_values"):
        raise UnsafeCheckpointError(f"{shown}: refused to load: the graph holds custom (torchbind) objects, "
                                    "which are pickled code-bearing values; sninspect reads tensors only")
    shapes = {str(name): tuple(_ints(meta.get("sizes") if isinstance(meta, dict) else None,
                                     f"value {str(name)[:60]!r}", shown))
              for name, meta in values.items()}
    inputs: list[str] = []
    tensors: dict[str, Tensor] = {}
    state: dict[str, Tensor] = {}
    for spec in specs:
        kind, body = _union(spec, "input spec", shown)
        if kind == "user_input":
            inputs.append(_tensor_name(body.get("arg"), "a user input", shown))
            continue
        if kind not in ("parameter", "buffer", "tensor_constant"):
            raise InputError(f"{shown}: the graph takes a {kind} input, which sninspect does not read "
                             "(parameters, buffers, tensor constants and tensor inputs only)")
        node_name = body["arg"]["name"]
        fqn = body.get(f"{kind}_name")
        source = constants if kind == "tensor_constant" else weights
        if fqn not in source and kind == "buffer" and fqn in constants:
            source = constants  # non-persistent buffers are saved with the constants
        if fqn not in source:
            raise InputError(f"{shown}: {kind} {str(fqn)[:80]!r} is not in the archive's payload (is it "
                             "truncated or corrupt?)")
        tensors[node_name] = source[fqn]
        if kind != "tensor_constant":
            state[str(fqn)] = source[fqn]
    outputs = []
    for spec in out_specs:
        kind, body = _union(spec, "output spec", shown)
        if kind != "user_output":
            raise InputError(f"{shown}: the graph has a {kind} output (a mutated buffer or a loss); "
                             "sninspect bounds eval-mode programs whose outputs are plain tensors")
        outputs.append(_tensor_name(body.get("arg"), "a user output", shown))
    if not inputs:
        raise InputError(f"{shown}: the exported program takes no tensor input: nothing to bound")
    unknown = [name for name in (*inputs, *outputs) if name not in shapes and name not in tensors]
    if unknown:
        raise InputError(f"{shown}: input or output {unknown[0][:60]!r} has no recorded tensor metadata (is the "
                         "archive corrupt or crafted?)")
    nodes = tuple(_node(raw, shown) for raw in graph.get("nodes", []))
    return ExportedGraph(shown, nodes, tuple(inputs), tuple(outputs), tensors, shapes, state)


def _union(value: Any, what: str, shown: str) -> tuple[str, Any]:
    if not isinstance(value, dict) or len(value) != 1:
        raise InputError(f"{shown}: a malformed {what} in the model record (is the archive corrupt?)")
    kind, body = next(iter(value.items()))
    return str(kind), body


def _tensor_name(arg: Any, what: str, shown: str) -> str:
    if isinstance(arg, dict) and isinstance(arg.get("as_tensor"), dict):
        return str(arg["as_tensor"]["name"])
    raise InputError(f"{shown}: {what} is not a tensor ({str(arg)[:60]}); sninspect bounds functions of "
                     "tensors")


def _node(raw: Any, shown: str) -> GraphNode:
    try:
        target, name = str(raw["target"]), str(raw.get("name", ""))
        args, kwargs = [], {}
        for named in raw["inputs"]:
            value = _argument(named["arg"], target, shown)
            if named.get("kind") == 2:
                kwargs[str(named["name"])] = value
            else:
                args.append(value)
        outputs = tuple(_outputs(raw["outputs"], target, shown))
        metadata = raw.get("metadata") or {}
    except (KeyError, TypeError, AttributeError):
        raise InputError(f"{shown}: a malformed node in the model record (is the archive corrupt?)") from None
    stack = str(metadata.get("nn_module_stack", "")) if isinstance(metadata, dict) else ""
    last = stack.split(";")[-1].split(",") if stack else []
    return GraphNode(name or (outputs[0] or ""), target, tuple(args), kwargs, outputs,
                     last[1] if len(last) >= 3 else "")


def _outputs(raw: list[Any], target: str, shown: str) -> list[str | None]:
    names: list[str | None] = []
    for out in raw:
        kind, body = _union(out, "node output", shown)
        if kind == "as_tensor":
            names.append(str(body["name"]))
        elif kind == "as_tensors":
            names.extend(str(t["name"]) for t in body)
        elif kind == "as_none":
            names.append(None)
        else:
            raise InputError(f"{shown}: operator {target[:80]} returns a {kind}, which sninspect does not "
                             "follow (tensor outputs only)")
    return names


_PLAIN = ("as_int", "as_ints", "as_float", "as_floats", "as_bool", "as_bools", "as_string", "as_strings")


def _argument(arg: Any, target: str, shown: str) -> Any:
    """A node argument as a Python value; tensors become :class:`Ref`."""
    kind, body = _union(arg, "argument", shown)
    if kind in _PLAIN:
        return list(body) if isinstance(body, list) else body
    if kind == "as_none":
        return None
    if kind == "as_tensor":
        return Ref(str(body["name"]))
    if kind == "as_tensors":
        return [Ref(str(t["name"])) for t in body]
    if kind == "as_optional_tensors":
        return [Ref(str(t["as_tensor"]["name"])) if "as_tensor" in t else None for t in body]
    if kind == "as_optional_tensor":
        return Ref(str(body["as_tensor"]["name"])) if "as_tensor" in body else None
    if kind == "as_scalar_type" and body in _DTYPES:
        return _DTYPES[body]
    if kind == "as_memory_format" and body in _MEMORY_FORMATS:
        return _MEMORY_FORMATS[body]
    if kind == "as_layout" and body == 7:
        return torch.strided
    if kind == "as_device":
        return torch.device("cpu")  # bounds are computed where sninspect runs
    raise InputError(f"{shown}: operator {target[:80]} takes a {kind} argument, which sninspect does not "
                     "read (dynamic shapes, subgraphs and custom objects are not supported)")
