"""Torch files: look at what a pickle would do, and what a file claims, before ``torch.load`` reads it.

``torch.load(weights_only=True)`` already refuses pickles that import anything but tensors and plain
containers; this module adds what it does not do:

- name the global a refused pickle would call (``posix.system``), read statically with
  :mod:`pickletools`, which parses opcodes and never executes them;
- refuse files whose size claims would make ``torch.load`` allocate more memory than the file holds:
  a legacy (pre-1.6) storage claiming terabytes, or a zip record that would unpack to more than the
  archive's size (a compression bomb; ``torch.save`` writes records uncompressed).

Everything here reads at most the file's size (and at most :data:`SCAN_BYTES` of a pickle).
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickletools
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from sninspect.errors import InputError

SCAN_BYTES = 64 * 2**20
"""How much of a pickle the static scan reads at most, to name what it would import."""

SCAN_OPCODES = 2_000_000
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
    """Refuse a zip whose records claim to unpack to more bytes than the whole file has.

    ``torch.load`` allocates a record (``data.pkl``, ``version``, ...) at its claimed unpacked size
    before inflating it. Only the central directory is read here; an archive ``zipfile`` cannot parse
    is left to ``torch.load``, which says what is wrong with it.
    """
    try:
        size = os.path.getsize(file)
        with zipfile.ZipFile(file) as archive:
            records = archive.infolist()
    except Exception:  # not parseable here: torch.load will report it
        return
    for info in records:
        if info.file_size > size:
            raise InputError(f"{shown}: zip record {info.filename[:80]!r} claims {info.file_size} bytes "
                             f"unpacked but the whole file has {size} (torch.save writes records "
                             "uncompressed; is the file corrupt or crafted?)")


def check_legacy_claims(file: Path, shown: str) -> None:
    """Refuse a legacy file whose pickle claims more tensor bytes than the file holds.

    ``torch.load`` allocates every legacy storage at the size the pickle claims before reading it, so a
    few edited bytes could ask for terabytes. This dry run reads only the pickles, with torch's own
    weights-only unpickler, and answers storages with meta (unallocated) ones. Anything it cannot follow
    (custom classes in an ``--unsafe-load`` file, a broken pickle) is left to ``torch.load``.
    """
    claimed: dict[object, int] = {}

    def persistent_load(saved_id: Any) -> Any:
        storage_type, root_key, _, numel, _ = saved_id[1:]
        nbytes = int(numel) * torch._utils._element_size(storage_type.dtype)
        claimed[root_key] = max(claimed.get(root_key, 0), nbytes)
        meta = torch.UntypedStorage(0, device="meta")
        return torch.storage.TypedStorage(wrap_storage=meta, dtype=storage_type.dtype, _internal=True)

    try:
        from torch import _weights_only_unpickler as wou

        size = os.path.getsize(file)
        with open(file, "rb") as raw, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = Bounded(raw, size)
            for _ in range(3):  # magic number, protocol version, system info
                wou.Unpickler(f, encoding="utf-8").load()
            unpickler = wou.Unpickler(f, encoding="utf-8")
            unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
            unpickler.load()
    except Exception:  # not followable here: torch.load will say what is wrong
        return
    total = sum(claimed.values())
    if total > size:
        raise InputError(f"{shown}: the legacy checkpoint claims {total} bytes of tensor data but the file "
                         f"has {size} (is it truncated or corrupt?)")


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
    """``(first refused global, parsed as a complete pickle)`` for up to ``pickles`` pickles in a row at
    the start of ``file`` (a legacy torch file is several pickles, a raw pickle one)."""
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
    names: list[str] = []
    complete = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickletools warns about odd escapes in garbage
        try:
            for _ in range(pickles):
                before = len(names)
                names.extend(_pickle_globals(stream))
                complete = True
                culprit = _first_refused(names[before:])
                if culprit is not None:
                    return culprit, complete
        except Exception:  # not a pickle, or truncated: report what was seen so far
            pass
    return _first_refused(names), complete


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


def _pickle_globals(stream: IO[bytes]) -> Iterator[str]:
    """``module.name`` of every global one pickle in ``stream`` imports (GLOBAL, INST, STACK_GLOBAL).

    STACK_GLOBAL takes its two names from the stack: the strings pushed last, directly or from the memo.
    Stops with :class:`ScanLimit` after :data:`SCAN_OPCODES` opcodes; memory stays bounded too.
    """
    strings: deque[str] = deque(maxlen=2)
    memo: dict[int, str] = {}
    next_slot = 0  # where MEMOIZE puts the top of the stack (the memo's size, strings or not)
    top: str | None = None  # the string on top of the stack, if the last opcode left one there
    for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
        if count >= SCAN_OPCODES:
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
