"""Load state dicts from checkpoint files without trusting them, and write checkpoints atomically.

Loading never runs code from the file (unless the caller passes ``unsafe_load``): torch files are
checked by :mod:`sninspect.torch_check` (size claims; which global a refused pickle would call) and go
through ``torch.load(weights_only=True, map_location="cpu")``, memory-mapped when the file is a zip
archive; safetensors headers are checked by :mod:`sninspect.safetensors_check` before ``safetensors``
sees them. Every failure becomes one :class:`~sninspect.errors.InputError` line
``<file>: <what is wrong> (<what to do>)``.

A checkpoint often wraps its state dicts (``{"state_dict": ...}``, ``{"netG": ..., "netD": ...,
"optG": ...}``); :mod:`sninspect.wrappers` finds them (or follows ``key``) and :func:`load_checkpoint`
returns each as a :class:`ModelState`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sninspect.errors import InputError, OutputError, UnsafeCheckpointError, UsageError
from sninspect.io import safetensors_check, torch_check, wrappers
from sninspect.io.safetensors_check import LazyTensors, one_line

__all__ = [
    "TORCH_SUFFIXES", "Checkpoint", "ModelState", "display_name", "load_checkpoint", "save_checkpoint",
]

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
"""Suffixes written by ``torch.save``; any suffix but ``.safetensors``/``.json`` is tried as torch too."""

_DISPLAY_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class ModelState:
    """One state dict found in a checkpoint."""

    name: str
    """``""`` when the checkpoint holds one model; else its path joined by ``.`` (``netD``, ``models.D``)."""
    path: tuple[str, ...]
    """Keys from the container root to this state dict; ``()`` when the root is the state dict."""
    tensors: Mapping[str, torch.Tensor]
    """Raw keys as stored (prefixes kept), tensor values only, in stored order; lazy for safetensors."""
    torch_metadata: Any | None = None
    """The ``_metadata`` attribute of a torch state dict (module versions), or None."""


@dataclass
class Checkpoint:
    """A loaded checkpoint file."""

    path: Path
    format: str
    """``torch-zip``, ``torch-legacy``, ``torch-sharded`` (a ``.bin.index.json``), ``safetensors``,
    ``safetensors-sharded``, or ``pickle`` (a plain ``pickle.dump`` file, read only with ``unsafe_load``)."""
    models: list[ModelState]
    container: Any
    """The whole loaded object for torch files (to write back with changes); None for safetensors."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The safetensors ``__metadata__`` (``{}`` for torch files)."""
    extras: dict[str, int | float | str | bool] = field(default_factory=dict)
    """Scalar top-level entries of a wrapper dict (``step``, ``epoch``, ...)."""


def display_name(raw_key: str) -> str:
    """``raw_key`` without DataParallel/compile prefixes: ``module._orig_mod.fc.weight`` → ``fc.weight``."""
    name = raw_key
    while True:
        for prefix in _DISPLAY_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
                break
        else:
            return name


# ----------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(
    path: str | os.PathLike[str], *, key: str | None = None, unsafe_load: bool = False
) -> Checkpoint:
    """Load the state dict(s) of a checkpoint file: ``load_checkpoint("D.pt", key="netD")``.

    Raises :class:`InputError` (one line) for anything unreadable, :class:`UnsafeCheckpointError` for a
    pickle that would run code (unless ``unsafe_load``), :class:`UsageError` for a ``key`` not present.
    """
    file = Path(os.fspath(path))
    shown = _shown(file)
    magic = _open_regular(file, shown)
    name = file.name.lower()
    if name.endswith(".json"):
        return _load_index(file, shown, key=key, unsafe_load=unsafe_load)
    torch_magic = magic.startswith(torch_check.ZIP_MAGIC) or torch_check.LEGACY_MAGIC in magic
    if not torch_magic and (name.endswith(".safetensors") or _looks_like_safetensors(magic)):
        return _load_safetensors(file, shown, key)
    fmt, container = _load_torch(file, shown, magic, unsafe_load=unsafe_load)
    models = _find_models(container, shown, key)
    return Checkpoint(file, fmt, models, container, {}, wrappers.extras(container))


def _shown(file: Path) -> str:
    text = os.fspath(file)
    return text if text.isprintable() else ascii(text)


def _open_regular(file: Path, shown: str) -> bytes:
    """The first 32 bytes of ``file`` after making sure it is a readable, non-empty regular file.

    ``os.stat`` comes first and the open is non-blocking: opening a FIFO for reading would wait forever.
    """
    try:
        info = os.stat(file)
    except FileNotFoundError:
        raise InputError(f"{shown}: no such file (check the path)") from None
    except PermissionError:
        raise InputError(f"{shown}: permission denied (cannot look up the file; check the folder's "
                         "permissions)") from None
    except OSError as err:
        raise InputError(f"{shown}: cannot access: {err.strerror or err}") from None
    _require_regular(info.st_mode, shown)
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise InputError(f"{shown}: permission denied (make the file readable, e.g. chmod u+r)") from None
    except OSError as err:
        raise InputError(f"{shown}: cannot open: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        _require_regular(info.st_mode, shown)  # replaced between stat and open
        if info.st_size == 0:
            raise InputError(f"{shown}: empty file (0 bytes; expected a checkpoint written by torch.save or "
                             "safetensors)")
        return os.read(fd, 32)
    except OSError as err:
        raise InputError(f"{shown}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)


def _require_regular(mode: int, shown: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO)"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    else:
        what = "not a regular file"
    raise InputError(f"{shown}: is {what}, not a checkpoint file (pass the path of a .pt/.pth/.ckpt/.bin, "
                     ".safetensors or .safetensors.index.json file)")


def _looks_like_safetensors(magic: bytes) -> bool:
    """A safetensors file under another suffix: a small header length followed by ``{``."""
    if len(magic) < 9:
        return False
    n = int.from_bytes(magic[:8], "little")
    return 2 <= n <= 100_000_000 and magic[8:9] == b"{"


_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNSAFE_HINTS = ("GLOBAL", "Unsupported class", "Trying to call reduce", "was not an allowed global")
_NOISE = ("Weights only load failed", "In PyTorch 2.6", "Re-running", "Please file an issue",
          "Check the documentation", "(1)", "(2)", "WeightsUnpickler error:")


def _load_torch(file: Path, shown: str, magic: bytes, *, unsafe_load: bool) -> tuple[str, Any]:
    """``(format, object)`` of a torch.save file; plain pickles need ``unsafe_load``, unknown bytes are
    refused unread."""
    if magic.startswith(torch_check.ZIP_MAGIC):
        torch_check.check_zip_claims(file, shown)
        return "torch-zip", _torch_load(file, shown, zip_format=True, unsafe_load=unsafe_load)
    if torch_check.LEGACY_MAGIC in magic:
        torch_check.check_legacy_claims(file, shown)
        return "torch-legacy", _torch_load(file, shown, zip_format=False, unsafe_load=unsafe_load)
    culprit, is_pickle = torch_check.scan_file(file, pickles=1)
    if unsafe_load and (is_pickle or culprit is not None):
        return "pickle", _pickle_load(file, shown)
    if culprit is not None and not culprit.startswith("torch."):
        raise _unsafe(shown, culprit)
    if culprit is not None:  # tensors written with pickle.dump rebuild through torch.storage._load_from_bytes
        raise UnsafeCheckpointError(f"{shown}: refused to load: a plain pickle of tensors (pickle.dump), "
                                    "not a torch.save checkpoint; unpickling it could run code (pass "
                                    "--unsafe-load only if you trust this file, or re-save it with "
                                    "torch.save)")
    if is_pickle:
        raise InputError(f"{shown}: a plain pickle, not a torch.save checkpoint (sninspect reads files "
                         "written by torch.save or safetensors)")
    if magic.startswith(b"PK\x05\x06"):
        raise InputError(f"{shown}: an empty zip archive, no records (expected a file written by torch.save)")
    raise InputError(f"{shown}: not a checkpoint: unknown format, starts with {magic[:8]!r} (expected a zip "
                     "archive or legacy file written by torch.save, or a safetensors file)")


def _pickle_load(file: Path, shown: str) -> Any:
    """A plain pickle (``pickle.dump``), read only with ``--unsafe-load``: this runs whatever it holds."""
    try:
        with open(file, "rb") as f:
            return pickle.load(f)
    except Exception as err:
        raise InputError(f"{shown}: cannot read as a pickle: {one_line(err)} (is it truncated or "
                         "corrupt?)") from None


def _unsafe(shown: str, culprit: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{shown}: refused to load: the pickle calls '{culprit}', which could run code; sninspect loads "
        "tensors only (pass --unsafe-load only if you trust this file)")


def _torch_load(file: Path, shown: str, *, zip_format: bool, unsafe_load: bool) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol and mmap notes are not the user's concern
            return torch.load(file, map_location="cpu", weights_only=not unsafe_load, mmap=zip_format)
    except Exception as err:  # torch raises anything from RuntimeError to UnicodeDecodeError on bad input
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        if not unsafe_load and isinstance(err, pickle.UnpicklingError):
            # Name the global from the pickle itself (torch's message spells some oddly, e.g. commands.call
            # for subprocess.call), falling back to torch's words; protocol-4 pickles stop torch early.
            culprit = torch_check.scan_zip(file) if zip_format else torch_check.scan_file(file, 4)[0]
            found = _TORCH_GLOBAL.search(text)
            if culprit is None and found and any(h in text for h in _UNSAFE_HINTS):
                culprit = found.group(1)
            if culprit is not None:
                raise _unsafe(shown, culprit) from None
        if "TorchScript" in text:
            raise InputError(f"{shown}: a TorchScript archive (torch.jit.save), not a torch.save "
                             "checkpoint (pass --unsafe-load to read its weights, only if you trust the "
                             "file)") from None
        kind = "zip-format" if zip_format else "legacy"
        raise InputError(f"{shown}: cannot read as a {kind} PyTorch checkpoint: {_torch_detail(err, text)} "
                         "(expected a file written by torch.save; is it truncated or corrupt?)") from None


def _torch_detail(err: Exception, text: str) -> str:
    """The informative line of a torch error (weights-only errors wrap it in advice meant for coders)."""
    if isinstance(err, EOFError) or "unexpected EOF" in text:
        return "the file ends too early"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_NOISE)]
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    line = found.group(1).strip() if found else (useful or lines or [type(err).__name__])[0]
    line = line.split(" This is an internal miniz error")[0]
    return line if len(line) <= 160 else line[:157] + "..."


# ----------------------------------------------------------------------------------------------
# Safetensors and shard indexes


def _select(tensors: LazyTensors, key: str | None, shown: str) -> tuple[LazyTensors, tuple[str, ...]]:
    """``--key netD`` on a flat file: the tensors named ``netD.*``, prefix removed (as sninspect writes
    several models into one safetensors file)."""
    if key is None:
        return tensors, ()
    selected = tensors.select(key.rstrip(".") + ".")
    if not selected:
        heads = list(dict.fromkeys(k.split(".")[0] for k in tensors))
        raise UsageError(f"{shown}: no tensors under {key!r} (top-level names: {wrappers.short(heads)}; "
                         "--key selects the tensors named KEY.*)")
    return selected, (key.rstrip("."),)


def _load_safetensors(file: Path, shown: str, key: str | None) -> Checkpoint:
    tensors, header = safetensors_check.open_file(file, shown)
    if not tensors:
        raise InputError(f"{shown}: no tensors found (the safetensors header lists none)")
    tensors, path = _select(tensors, key, shown)
    return Checkpoint(file, "safetensors", [ModelState("", path, tensors)], None, header.metadata, {})


def _load_index(file: Path, shown: str, *, key: str | None, unsafe_load: bool) -> Checkpoint:
    """A sharded checkpoint: ``{"metadata": {...}, "weight_map": {tensor: shard file}}``."""
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
            raise InputError(f"{shown}: shard {name!r} is missing (expected {_shown(shards[name])}; copy all "
                             "the shards next to the index)")
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
        shard_shown = _shown(shard)
        _open_regular(shard, shard_shown)
        held[name], header = safetensors_check.open_file(shard, shard_shown)
        merged.update(header.metadata)
    sources: dict[str, safetensors_check.Source] = {}
    for tensor, name in weight_map.items():
        if tensor not in held[name]:
            raise InputError(f"{shown}: tensor {tensor!r} is mapped to {name} but that shard does not hold "
                             "it (the index and the shards disagree)")
        sources[tensor] = safetensors_check.Source(shards[name], _shown(shards[name]), tensor)
    merged.update(metadata)
    tensors, path = _select(LazyTensors(sources), key, shown)
    return Checkpoint(file, "safetensors-sharded", [ModelState("", path, tensors)], None, merged, {})


def _load_torch_shards(
    file: Path, shown: str, weight_map: dict[str, str], shards: dict[str, Path], key: str | None,
    unsafe_load: bool,
) -> Checkpoint:
    loaded: dict[str, Mapping[str, Any]] = {}
    for name, shard in shards.items():
        shard_shown = _shown(shard)
        magic = _open_regular(shard, shard_shown)
        _, obj = _load_torch(shard, shard_shown, magic, unsafe_load=unsafe_load)
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
    return Checkpoint(file, "torch-sharded", _find_models(merged, shown, key), merged, {}, {})


# ----------------------------------------------------------------------------------------------
# Models in a loaded object


def _find_models(container: object, shown: str, key: str | None) -> list[ModelState]:
    found = wrappers.find_state_dicts(container, shown, key)
    return [_model(path, state, named=len(found) > 1) for path, state in found]


def _model(path: tuple[str, ...], state: Mapping[str, Any], named: bool) -> ModelState:
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return ModelState(".".join(path) if named else "", path, tensors, getattr(state, "_metadata", None))


# ----------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    out: str | os.PathLike[str], payload: Any, *, inputs: Sequence[str | os.PathLike[str]] = (),
    force: bool = False, metadata: dict[str, str] | None = None,
) -> None:
    """Write ``payload`` to ``out`` atomically: ``.safetensors`` (a dict of tensors + ``metadata``) or torch.

    Refuses (:class:`OutputError`) to write over any of ``inputs`` (even with ``force``), over an
    existing file without ``force``, or into a folder that does not exist. The data goes to a temporary
    file in the target folder, is fsynced and renamed over ``out``; on any failure the temporary file is
    removed and ``out`` is left as it was.
    """
    target = Path(os.fspath(out))
    shown = _shown(target)
    folder = target.parent
    _check_target(target, shown, folder, inputs, force)
    safetensors = target.name.lower().endswith(".safetensors")
    tensors = _safetensors_payload(payload, shown) if safetensors else None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"{shown}: cannot create a file in {_shown(folder)}: {err.strerror or err} (check "
                          "the folder's permissions and free space)") from None
    os.close(fd)
    try:
        if tensors is not None:
            from safetensors.torch import save_file

            save_file(tensors, tmp, metadata=_metadata_strings(metadata, shown))
        else:
            torch.save(payload, tmp)
        _fsync_file(tmp)
        os.chmod(tmp, _new_mode(target))
        os.replace(tmp, target)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(err, Exception) or isinstance(err, OutputError):
            raise
        detail = err.strerror if isinstance(err, OSError) and err.strerror else one_line(err)
        kept = "; the existing file is intact" if target.exists() else ""
        raise OutputError(f"{shown}: could not write: {detail} (nothing was changed{kept})") from None
    _fsync_folder(folder)


def _check_target(
    target: Path, shown: str, folder: Path, inputs: Sequence[str | os.PathLike[str]], force: bool
) -> None:
    if not folder.is_dir():
        if os.path.lexists(folder):
            raise OutputError(f"{shown}: {_shown(folder)} is not a folder (give a path inside a folder)")
        raise OutputError(f"{shown}: folder {_shown(folder)} does not exist (create it first)")
    for source in _protected(inputs):
        if _same_file(target, source):
            raise OutputError(f"{shown}: is the input {_shown(source)}; refusing to overwrite an input even "
                              "with --force (choose another output path)")
    if target.is_dir():
        raise OutputError(f"{shown}: is a directory (give a file name)")
    if (target.exists() or target.is_symlink()) and not force:
        raise OutputError(f"{shown}: already exists (pass --force to overwrite it)")


def _protected(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The inputs, plus the shard files of any shard index among them."""
    paths = [Path(os.fspath(p)) for p in inputs]
    for index in [p for p in paths if p.name.lower().endswith(".json")]:
        try:
            with open(index, "rb") as f:
                weight_map = json.loads(f.read(100_000_000)).get("weight_map", {})
            paths += [index.parent / str(name) for name in set(weight_map.values())]
        except Exception:  # not an index we can read: nothing more to protect
            continue
    return paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _safetensors_payload(payload: Any, shown: str) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with its own storage (safetensors refuses shared storage)."""
    if not isinstance(payload, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise OutputError(f"{shown}: a .safetensors file holds a flat dict of name -> tensor only (write a "
                          ".pt file to keep other objects)")
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for k, tensor in payload.items():
        t = tensor.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        storage = (str(t.device), t.untyped_storage().data_ptr())
        t = t.clone(memory_format=torch.contiguous_format) if storage in seen else t.contiguous()
        if t.numel() > 0:
            seen.add(storage)
        out[k] = t
    return out


def _metadata_strings(metadata: dict[str, str] | None, shown: str) -> dict[str, str] | None:
    if metadata is None:
        return None
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise OutputError(f"{shown}: safetensors metadata must be strings (not so for "
                          f"{', '.join(map(str, bad))})")
    return dict(metadata)


def _new_mode(target: Path) -> int:
    """The mode of the file being replaced, else what ``open`` would give (mkstemp's 0600 is too tight)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not every file system lets a folder be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
