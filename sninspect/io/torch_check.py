"""Torch files: look at what a pickle would do, and what a file claims, before ``torch.load`` reads it.

``torch.load(weights_only=True)`` already refuses pickles that import anything but tensors and plain
containers; this module adds what it does not do:

- name the global a refused pickle would call (``posix.system``), read statically with
  :mod:`pickletools`, which parses opcodes and never executes them;
- refuse files whose size claims would make ``torch.load`` allocate more memory than the file holds
  (a legacy, pre-1.6 storage claiming terabytes; a zip record that would unpack to more than the
  archive's size) or read tensor bytes from outside their record (a short or compressed zip record).

Everything here reads at most the file's size (and at most :data:`SCAN_BYTES` of a pickle).
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import itertools
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from sninspect.errors import InputError
from sninspect.io import limits

SCAN_BYTES = 64 * 2**20
"""How much of a pickle the static scan reads at most, to name what it would import."""

SCAN_OPCODES = 1_000_000
"""How many opcodes the scan parses at most (about a second; a real ``data.pkl`` has ~20 per tensor)."""

MEMO_STRINGS = 100_000
"""How many memoized strings the scan remembers (for STACK_GLOBAL names fetched from the memo)."""

ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of a zip-format ``torch.save`` file."""

LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
"""The magic number legacy ``torch.save`` pickles first (found within the file's first 32 bytes)."""


# ----------------------------------------------------------------------------------------------
# Size claims


def check_zip_claims(file: Path, shown: str) -> None:
    """Refuse a zip-format file whose size claims would make ``torch.load`` misbehave.

    - a record that claims to unpack to more bytes than the whole file has (a compression bomb):
      ``torch.load`` allocates a record such as ``data.pkl`` at its claimed size before inflating it;
    - a compressed tensor record: ``torch.load`` memory-maps tensor records in place, which only works
      for the stored (uncompressed) records ``torch.save`` writes;
    - a tensor record shorter than the tensor its pickle describes: the memory-mapped tensor would
      silently take its last bytes from whatever follows the record in the file;
    - two records of the same name: which one a reader takes is up to the reader (torch's can read
      the bytes of zip headers as weights), so the file has no one meaning.

    Reads the central directory and ``data.pkl`` only; an archive or pickle that cannot be followed
    here is left to ``torch.load``, which says what is wrong with it.
    """
    try:
        size = os.path.getsize(file)
        with zipfile.ZipFile(file) as archive:
            records = archive.infolist()
            _check_records(records, size, shown)
            claimed, views = _zip_storage_claims(archive, records)
    except InputError:
        raise
    except limits.TooManyTensors:
        raise limits.too_many_tensors(shown) from None
    except Exception:  # not followable here: torch.load will report it
        return
    _check_views(views, size, shown)
    record_sizes = {match.group(2): info.file_size for info in records
                    if (match := _TENSOR_RECORD.search(info.filename))}
    for key, nbytes in claimed.items():
        have = record_sizes.get(key)
        if have is not None and nbytes > have:
            raise InputError(f"{shown}: tensor record 'data/{key[:40]}' holds {have} bytes but its tensor "
                             f"needs {nbytes} (is the file truncated or corrupt?)")


_TENSOR_RECORD = re.compile(r"(^|/)data/([^/]+)$")
"""Zip records holding tensor storages: ``<archive>/data/<key>``."""


def _check_records(records: list[zipfile.ZipInfo], size: int, shown: str) -> None:
    names = Counter(info.filename for info in records)
    twice = [name for name, count in names.items() if count > 1]
    if twice:
        listed = ", ".join(repr(name[:80]) for name in twice[:5]) + (f" and {len(twice) - 5} more"
                                                                     if len(twice) > 5 else "")
        raise InputError(f"{shown}: zip records appear more than once ({listed}); torch.save writes each "
                         "record once, so which copy holds the data is ambiguous (is the file corrupt or "
                         "crafted? re-save it from a trusted copy)")
    for info in records:
        name = repr(info.filename[:80])
        if info.compress_type != zipfile.ZIP_STORED and _TENSOR_RECORD.search(info.filename):
            raise InputError(f"{shown}: zip record {name} is compressed, but tensor data must be stored as "
                             "torch.save writes it, to be memory-mapped (re-save it: torch.save(torch.load("
                             "path, weights_only=True), new_path))")
        if info.file_size > size:
            raise InputError(f"{shown}: zip record {name} claims {info.file_size} bytes unpacked but the "
                             f"whole file has {size} (torch.save writes records uncompressed; is the file "
                             "corrupt or crafted?)")


def _zip_storage_claims(archive: zipfile.ZipFile,
                        records: list[zipfile.ZipInfo]) -> tuple[dict[str, int], list[View]]:
    """Bytes each storage key needs, and the tensor views over them, from a dry run of ``data.pkl``."""
    pickles = [i for i in records if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
    if len(pickles) != 1:
        return {}, []
    with archive.open(pickles[0]) as member:
        data = member.read(pickles[0].file_size)  # bounded by the file size (checked above)
    claimed: dict[str, int] = {}
    views: list[View] = []
    _dry_run(io.BytesIO(data), claimed, views)
    return claimed, views


VIEW_ALLOWANCE = 64 * 2**20
"""A tensor view may claim more bytes than its storage holds (stride 0: ``expand``) up to this many,
or up to the file's size; beyond both, the file is refused before ``torch.load`` reads it."""


@dataclass(frozen=True)
class View:
    """A tensor as ``data.pkl`` rebuilds it: its shape, the bytes it claims and its storage's bytes."""

    shape: tuple[int, ...]
    claimed: int
    storage: int
    key: str


def _check_views(views: list[View], size: int, shown: str) -> None:
    """Refuse a tensor that claims far more bytes than its storage and the whole file hold: a stride-0
    or overlapping view (a 3 kB file claiming a 20000² weight) that any copy would materialise."""
    for view in views:
        if view.key.startswith(_BUILTIN_PREFIX) and view.claimed > max(size, VIEW_ALLOWANCE):
            raise InputError(
                f"{shown}: the pickle asks for {view.key.removeprefix(_BUILTIN_PREFIX)}({view.claimed}), "
                f"{view.claimed} bytes made from nothing in a file of {size} bytes; refused (a checkpoint's "
                "data lives in its storages, not in buffers built at load time)")
        if view.claimed > view.storage and view.claimed > max(size, VIEW_ALLOWANCE):
            raise InputError(
                f"{shown}: a tensor of shape {list(view.shape)} claims {view.claimed} bytes but is a view "
                f"over {view.storage} bytes of storage '{view.key[:40]}' (stride 0 or overlapping "
                f"strides) in a file of {size} bytes; refused (a saved weight holds its own data: re-save "
                "it with .contiguous())")


def check_legacy_claims(file: Path, shown: str) -> None:
    """Refuse a legacy file whose pickle claims more tensor bytes than the file holds.

    ``torch.load`` allocates every legacy storage at the size the pickle claims before reading it, so a
    few edited bytes could ask for terabytes. Anything the dry run cannot follow (custom classes in an
    ``--unsafe-load`` file, a broken pickle) is left to ``torch.load``.
    """
    claimed: dict[str, int] = {}
    views: list[View] = []
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as raw:
            f = Bounded(raw, size)
            for _ in range(3):  # magic number, protocol version, system info
                _dry_run(f, {})  # type: ignore[arg-type]
            _dry_run(f, claimed, views)  # type: ignore[arg-type]
    except limits.TooManyTensors:
        raise limits.too_many_tensors(shown) from None
    except Exception:  # not followable here: torch.load will say what is wrong
        return
    _check_views(views, size, shown)
    total = sum(claimed.values())
    if total > size:
        raise InputError(f"{shown}: the legacy checkpoint claims {total} bytes of tensor data but the file "
                         f"has {size} (is it truncated or corrupt?)")


def _dry_run(f: IO[bytes], claimed: dict[str, int], views: list[View] | None = None) -> None:
    """Unpickle one pickle from ``f`` with every global replaced by an inert :class:`_Placeholder`, and
    record in ``claimed`` how many bytes each storage key needs.

    This is Python's "restricting globals" pattern taken to the end: ``find_class`` never returns
    anything real, so nothing is imported or run, custom classes included; the C unpickler keeps it
    fast (a fraction of ``torch.load``'s own unpickling time).
    """
    _PlaceholderUnpickler(f, claimed, views if views is not None else []).load()


class _Placeholder:
    """What every global becomes in a dry run: callable, constructible and fillable with anything, and
    doing nothing. ``itemsize`` is set on the stand-ins for torch storage classes."""

    __slots__ = ()
    itemsize = 0

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:  # NEWOBJ needs a class with __new__
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return _Placeholder()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _StorageRef(_Placeholder):
    """A storage in a dry run: its key and size in bytes, for the views built on it."""

    __slots__ = ("key", "nbytes", "itemsize_")

    def __new__(cls, *args: Any, **kwargs: Any) -> _StorageRef:
        return object.__new__(cls)

    def __init__(self, key: str = "", nbytes: int = 0, itemsize: int = 1) -> None:
        self.key, self.nbytes, self.itemsize_ = key, nbytes, itemsize


class _PlaceholderUnpickler(pickle.Unpickler):
    def __init__(self, f: IO[bytes], claimed: dict[str, int], views: list[View]) -> None:
        super().__init__(f, encoding="latin1")  # Python 2 strings in old legacy files
        self.claimed, self.views = claimed, views

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module in ("builtins", "__builtin__") and name in ("bytearray", "bytes"):
            return functools.partial(self._sized_builtin, name)
        itemsize = _storage_itemsizes().get(name, 0) if module in _STORAGE_MODULES else 0
        return _placeholder_class(itemsize)

    def persistent_load(self, saved_id: Any) -> _Placeholder:
        """A torch storage reference: ``("storage", type, key, location, numel[, view])``."""
        storage_type, key, _, numel = saved_id[1:5]
        if not (isinstance(storage_type, type) and issubclass(storage_type, _Placeholder)
                and storage_type.itemsize > 0 and isinstance(numel, int) and numel >= 0):
            raise pickle.UnpicklingError("not a torch storage reference")
        self.claimed[str(key)] = max(self.claimed.get(str(key), 0), numel * storage_type.itemsize)
        return _StorageRef(str(key), numel * storage_type.itemsize, storage_type.itemsize)

    def _sized_builtin(self, name: str, *args: Any, **kwargs: Any) -> _Placeholder:
        """``bytearray(n)`` / ``bytes(n)`` (weights_only allows both): n zero bytes made at load time,
        recorded as a claim so that a tiny file cannot ask ``torch.load`` for gigabytes."""
        if args and isinstance(args[0], int) and not isinstance(args[0], bool) and args[0] > 0:
            self.views.append(View((args[0],), args[0], 0, _BUILTIN_PREFIX + name))
        return _Placeholder()

    def _rebuild_tensor(self, storage: Any, offset: Any = 0, size: Any = (), *args: Any) -> _Placeholder:
        """Record the view ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` builds."""
        if len(self.views) >= limits.MAX_TENSORS:  # a rebuild that records no view fails in torch.load
            raise limits.TooManyTensors
        if isinstance(storage, _StorageRef) and isinstance(size, tuple) and all(
                isinstance(n, int) and n >= 0 for n in size):
            numel = 1
            for n in size:
                numel *= n
            self.views.append(View(tuple(size), numel * storage.itemsize_, storage.nbytes, storage.key))
        return _Placeholder()


_STORAGE_MODULES = ("torch", "torch.cuda", "torch.storage")
_BUILTIN_PREFIX = "builtins."


@functools.cache
def _placeholder_class(itemsize: int) -> type[_Placeholder]:
    """One class per element size (a handful), however many globals a pickle names."""
    return _Placeholder if itemsize == 0 else type("StoragePlaceholder", (_Placeholder,),
                                                   {"__slots__": (), "itemsize": itemsize})


@functools.cache
def _storage_itemsizes() -> dict[str, int]:
    """Bytes per element of each torch storage class name (``FloatStorage``: 4; ``UntypedStorage``: 1)."""
    sizes = {"UntypedStorage": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is deprecated
        for name in dir(torch):
            dtype = getattr(getattr(torch, name), "dtype", None) if name.endswith("Storage") else None
            if isinstance(dtype, torch.dtype):
                sizes[name] = dtype.itemsize
    return sizes


class Bounded(io.RawIOBase):
    """A file whose reads never ask for more than what is left: a pickle's length fields are claims."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        super().__init__()
        self._f, self._left = f, size

    def read(self, n: int | None = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.readline(limit)
        self._left -= len(data)
        return data

    def tell(self) -> int:
        return self._f.tell()


# ----------------------------------------------------------------------------------------------
# Static pickle scan: which globals would a pickle import?


def scan_file(file: Path, pickles: int) -> tuple[str | None, bool]:
    """``(first refused global, looks like a pickle)`` for up to ``pickles`` pickles in a row at the
    start of ``file`` (a legacy torch file is several pickles, a raw pickle one)."""
    try:
        with open(file, "rb") as f:
            size = min(os.fstat(f.fileno()).st_size, SCAN_BYTES)
            return _scan_stream(Bounded(f, size), pickles)  # type: ignore[arg-type]
    except OSError:
        return None, False


def scan_zip(file: Path) -> str | None:
    """The first refused global in the ``data.pkl`` of a zip-format torch file, if readable."""
    try:
        with zipfile.ZipFile(file) as archive:
            limit = min(os.path.getsize(file), SCAN_BYTES)
            for info in archive.infolist():
                if info.filename.endswith("data.pkl") and info.file_size <= limit:
                    with archive.open(info) as member:
                        return _scan_stream(io.BytesIO(member.read(limit)), 1)[0]
    except Exception:  # a broken archive: torch's own message is all there is
        return None
    return None


def _scan_stream(stream: IO[bytes], pickles: int) -> tuple[str | None, bool]:
    """``(first refused global, looks like a pickle)``: a pickle once one parsed to its end, or parsed
    without error until the scan stopped at :data:`SCAN_OPCODES`."""
    names: list[str] = []
    is_pickle = False
    opcodes = itertools.count()  # shared by the pickles in a row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickletools warns about odd escapes in garbage
        try:
            for _ in range(pickles):
                before = len(names)
                names.extend(_pickle_globals(stream, opcodes))
                is_pickle = True
                culprit = _first_refused(names[before:])
                if culprit is not None:
                    return culprit, is_pickle
        except ScanLimit:
            is_pickle = True
        except Exception:  # not a pickle, or truncated: report what was seen so far
            pass
    return _first_refused(names), is_pickle


def _allowed_globals() -> set[str]:
    try:
        from torch import _weights_only_unpickler as wou

        return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except Exception:  # private API moved: fall back to a conservative rule in _first_refused
        return set()


def _first_refused(names: list[str]) -> str | None:
    """The global to name in a refusal: the first one outside torch if any (``posix.system`` says more
    than ``torch.storage._load_from_bytes``), else the first one torch's weights-only loader refuses."""
    allowed = _allowed_globals()
    refused = [n for n in names if n not in allowed
               and (allowed or not n.startswith(("torch.", "collections.OrderedDict")))]
    return next((n for n in refused if not n.startswith("torch.")), refused[0] if refused else None)


def _pickle_globals(stream: IO[bytes], opcodes: Iterator[int]) -> Iterator[str]:
    """``module.name`` of every global one pickle in ``stream`` imports (GLOBAL, INST, STACK_GLOBAL).

    STACK_GLOBAL takes its two names from the stack: the strings pushed last, directly or from the memo.
    Raises :class:`ScanLimit` once ``opcodes`` (a shared counter) passes :data:`SCAN_OPCODES`; memory
    stays bounded too.
    """
    strings: deque[str] = deque(maxlen=2)
    memo: dict[int, str] = {}
    next_slot = 0  # where MEMOIZE puts the top of the stack (the memo's size, strings or not)
    top: str | None = None  # the string on top of the stack, if the last opcode left one there
    for opcode, arg, _ in pickletools.genops(stream):
        if next(opcodes) >= SCAN_OPCODES:
            raise ScanLimit(f"more than {SCAN_OPCODES} opcodes")
        name, pushed = opcode.name, None
        if name in ("GLOBAL", "INST") and isinstance(arg, str):
            yield _py3_name(*arg.partition(" ")[::2])
        elif name == "STACK_GLOBAL":
            yield _py3_name(*strings) if len(strings) == 2 else "(a computed global)"
        elif name in _STRING_OPCODES and isinstance(arg, str):
            pushed = arg
        elif name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            index = next_slot if name == "MEMOIZE" else arg
            if isinstance(index, int):
                next_slot = max(next_slot, index + 1)
                if top is not None and len(memo) < MEMO_STRINGS:
                    memo[index] = top
            continue  # the stack is unchanged
        elif name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int):
            pushed = memo.get(arg)
        if pushed is not None:
            strings.append(pushed)
        top = pushed


class ScanLimit(Exception):
    """The pickle is longer than the static scan is willing to read."""


_STRING_OPCODES = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                   "BINSTRING", "STRING")


def _py3_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 spells it (protocol-2 pickles use Python 2 names: ``__builtin__.eval``)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"
