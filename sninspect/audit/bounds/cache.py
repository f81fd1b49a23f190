"""No certified bound computed twice: a content-addressed cache of conv bounds in the user's cache folder.

A bound depends only on the kernel's values and the arguments of
:func:`~sninspect.linalg.conv_bounds.conv_operator_bound` (width, starting floor, device kind), so a
second ``report`` of the same file (another ``--format``, ``--plots``, ``check --max-lipschitz``) reads
them back instead of recomputing. The key is the SHA-256 of the float64 kernel's bytes with its shape,
dtype, the requested width, the floor, the device type and :func:`algorithm_version`: a digest of the
source of the bound's modules, sninspect's and torch's versions, so a changed algorithm never reads an
old entry (it misses, and adds its own).

The store is SQLite from the standard library, ``$XDG_CACHE_HOME/sninspect/bounds.sqlite3`` (else
``~/.cache/sninspect/``): WAL journal and a busy timeout, so concurrent runs read and write it safely
(one writer at a time, each insert its own transaction; the same key written twice holds the same
value). A cache that cannot be opened, read or written (corrupt, read-only, locked past the timeout,
another program's database) is bypassed for the rest of the run with one warning line: the bounds are
then computed, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from sninspect._version import __version__
from sninspect.linalg import cheap_bound, conv_bounds, lanczos, reshape_bound, screen32, symbol
from sninspect.linalg.conv_bounds import ConvBound

__all__ = ["APPLICATION_ID", "BoundCache", "algorithm_version", "cache_path", "cached_bound"]

APPLICATION_ID = 0x534E4243
"""``PRAGMA application_id`` of sninspect's bound cache ("SNBC"): another program's database is foreign."""

SCHEMA = 1
"""``PRAGMA user_version`` of the table layout below."""

BUSY_MS = 10_000
"""How long a run waits for another run's write before it calls the cache locked."""

_ALGORITHM = (conv_bounds, cheap_bound, symbol, lanczos, reshape_bound, screen32)
"""The modules whose code decides a bound's value."""

_version: str | None = None


def algorithm_version() -> str:
    """A digest of the bound's source code, sninspect's and torch's versions: part of every key."""
    global _version
    if _version is None:
        digest = hashlib.sha256(f"{__version__}|{torch.__version__}".encode())
        for module in _ALGORITHM:
            digest.update(Path(module.__file__ or "").read_bytes())
        _version = digest.hexdigest()[:32]
    return _version


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/sninspect/bounds.sqlite3``, else ``~/.cache/sninspect/bounds.sqlite3``."""
    root = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(root) if root and os.path.isabs(root) else Path.home() / ".cache"
    return base / "sninspect" / "bounds.sqlite3"


def bound_key(kernel: Tensor, tol: float, floor: float, device: torch.device) -> str:
    """The content address of the bound of ``kernel`` (float64, as it will be bounded) at ``tol``."""
    data = kernel.detach().to(device="cpu", dtype=torch.float64).contiguous()
    digest = hashlib.sha256(data.numpy().tobytes())
    digest.update(json.dumps([list(data.shape), "float64", tol.hex(), float(floor).hex(), device.type,
                              algorithm_version()]).encode())
    return digest.hexdigest()


class BoundCache:
    """The cache of one run: opened on first use, bypassed after the first failure (one warning)."""

    def __init__(self, path: Path | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.path = cache_path() if path is None else path
        self._warn = warn
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._broken = False
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ConvBound | None:
        """The stored bound, or None (absent, or the cache unusable)."""
        with self._lock:
            db = self._connect()
            if db is None:
                return None
            try:
                row = db.execute("SELECT value FROM bounds WHERE key = ?", (key,)).fetchone()
                found = None if row is None else _decode(row[0])
            except (sqlite3.Error, ValueError, TypeError, KeyError) as err:
                self._give_up(f"cannot be read ({_reason(err)})")
                return None
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def put(self, key: str, bound: ConvBound) -> None:
        """Store ``bound`` (a failure to write bypasses the cache from here on)."""
        with self._lock:
            db = self._connect()
            if db is None:
                return
            try:
                with db:
                    db.execute("INSERT OR REPLACE INTO bounds (key, value) VALUES (?, ?)", (key, _encode(bound)))
            except sqlite3.Error as err:
                self._give_up(f"cannot be written ({_reason(err)})")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        if self._db is not None:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, check_same_thread=False,
                                 isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            self._give_up(f"cannot be opened ({_reason(err)})")
            return None
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            application, version = (db.execute("PRAGMA application_id").fetchone()[0],
                                    db.execute("PRAGMA user_version").fetchone()[0])
            if application == 0 and version == 0:
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise _Foreign("another program's database")
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    # Re-read inside the write lock: another run may have made it meanwhile.
                    if db.execute("PRAGMA application_id").fetchone()[0] == 0:
                        db.execute("CREATE TABLE IF NOT EXISTS bounds (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                        db.execute(f"PRAGMA user_version = {SCHEMA}")
                application = db.execute("PRAGMA application_id").fetchone()[0]
                version = db.execute("PRAGMA user_version").fetchone()[0]
            if application != APPLICATION_ID:
                raise _Foreign("another program's database")
            if version != SCHEMA:
                raise _Foreign(f"layout {version}, this sninspect reads {SCHEMA}")
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")  # readers never block the writer; best effort
        except (sqlite3.Error, _Foreign) as err:
            db.close()
            self._give_up(f"is not usable ({_reason(err)})")
            return None
        self._db = db
        return db

    def _give_up(self, why: str) -> None:
        self._broken = True
        if self._db is not None:
            self._db.close()
            self._db = None
        line = f"bound cache {self.path} {why}: bypassed, bounds computed afresh (--no-cache to silence)"
        if self._warn is not None:
            self._warn(line)
        else:
            warnings.warn(line, RuntimeWarning, stacklevel=4)


class _Foreign(Exception):
    """The file is a database, but not this cache (or a layout this version does not read)."""


def cached_bound(cache: BoundCache | None, kernel: Tensor, *, tol: float, device: torch.device,
                 floor: float = 0.0, before: Callable[[], None] | None = None) -> ConvBound:
    """:func:`~sninspect.linalg.conv_bounds.conv_operator_bound` of ``kernel``, read from ``cache`` when
    it holds it, else computed (``before()`` first: the memory guard) and added."""
    if cache is not None:
        key = bound_key(kernel, tol, floor, device)
        found = cache.get(key)
        if found is not None:
            return found
    if before is not None:
        before()
    if cache is None:
        return conv_bounds.conv_operator_bound(kernel, tol=tol, device=device, floor=floor)
    bound = conv_bounds.conv_operator_bound(kernel, tol=tol, device=device, floor=floor)
    cache.put(key, bound)
    return bound


def _encode(bound: ConvBound) -> str:
    """Floats as hex: exact round trip."""
    return json.dumps({"upper": bound.upper.hex(), "lower": bound.lower.hex(), "tight": bound.tight.hex(),
                       "cheap": None if bound.cheap is None else bound.cheap.hex(), "grid": list(bound.grid),
                       "method": bound.method})


def _decode(text: str) -> ConvBound:
    data = json.loads(text)
    values = [float.fromhex(data[k]) for k in ("upper", "lower", "tight")]
    if not all(math.isfinite(v) and v >= 0.0 for v in values):
        raise ValueError("a stored bound is not a finite non-negative number")
    cheap = None if data["cheap"] is None else float.fromhex(data["cheap"])
    return ConvBound(values[0], values[1], values[2], cheap, tuple(int(n) for n in data["grid"]), str(data["method"]))


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
