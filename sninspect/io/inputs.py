"""Every file a command read, resolved to real files: what no writer may replace, ``--force`` or not.

A command names its inputs as the user gave them; the files it really reads are more: the shards
behind a ``*.index.json``, the files directly in a folder argument, the checkpoints a monitor log
(``*.jsonl``) names, the source files of a ``--model`` factory. :class:`InputSet` is that whole set,
built once per command (:meth:`InputSet.of`) and handed to every writer (:mod:`sninspect.io.write`:
reports, figures, JUnit files, rewritten checkpoints), which refuses a target that is any of them:
the same path once links and ``..`` are resolved, or the same inode (a hard link).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = ["InputSet", "as_input_set"]

PathLike = str | os.PathLike[str]

_MAX_INDEX_BYTES = 100_000_000
"""A shard index larger than this is not read for its shard names (the loader refuses it anyway)."""
_MAX_LOG_BYTES = 1 << 30
"""A monitor log larger than this is not read for the checkpoints it names."""


class InputSet:
    """The real files behind a command's inputs (module docstring); :meth:`find` tells whether a
    target is one of them."""

    def __init__(self, files: Iterable[PathLike] = ()) -> None:
        self._files: list[Path] = []
        self._real: dict[str, Path] = {}
        self._inodes: dict[tuple[int, int], Path] = {}
        self.add(files)

    @classmethod
    def of(cls, paths: Iterable[PathLike]) -> InputSet:
        """The inputs ``paths`` and every file behind them: shards of an index, files directly in a
        folder, checkpoints a monitor log names (as given, or relative to the log's folder)."""
        found = cls()
        found.add(expand(paths))
        return found

    def add(self, files: Iterable[PathLike]) -> InputSet:
        """Add ``files`` as they are (no expansion); returns ``self``."""
        for raw in files:
            path = Path(os.fspath(raw))
            try:
                real = os.path.realpath(path)
            except ValueError:  # a NUL in the name: no such file
                continue
            if real in self._real:
                continue
            self._files.append(path)
            self._real[real] = path
            try:
                info = os.stat(path)
            except (OSError, ValueError):
                continue
            self._inodes.setdefault((info.st_dev, info.st_ino), path)
        return self

    def find(self, target: PathLike) -> Path | None:
        """The input ``target`` is (through any link or hard link), or None."""
        path = Path(os.fspath(target))
        try:
            hit = self._real.get(os.path.realpath(path))
            if hit is not None:
                return hit
            info = os.stat(path)
        except (OSError, ValueError):
            return None
        return self._inodes.get((info.st_dev, info.st_ino))

    def __iter__(self) -> Iterator[Path]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __repr__(self) -> str:
        return f"InputSet({[os.fspath(p) for p in self._files]!r})"


def as_input_set(inputs: InputSet | Sequence[PathLike]) -> InputSet:
    """``inputs`` as an :class:`InputSet` (a plain list is expanded: :meth:`InputSet.of`)."""
    return inputs if isinstance(inputs, InputSet) else InputSet.of(inputs)


def expand(paths: Iterable[PathLike]) -> list[Path]:
    """``paths`` and the files behind them (see :meth:`InputSet.of`)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(os.fspath(raw))
        out.append(path)
        try:
            if path.is_dir():
                inside = sorted(p for p in path.iterdir() if p.is_file())
                out += inside
                out += [more for p in inside for more in _behind(p)]
                continue
        except OSError:
            continue
        out += _behind(path)
    return out


def _behind(path: Path) -> list[Path]:
    name = path.name.lower()
    if name.endswith(".json"):
        return shards_of(path)
    if name.endswith(".jsonl"):
        return checkpoints_named_by(path)
    return []


def shards_of(index: Path) -> list[Path]:
    """The shard files a shard index names (none when it is not an index that can be read)."""
    try:
        with open(index, "rb") as f:
            weight_map = json.loads(f.read(_MAX_INDEX_BYTES)).get("weight_map", {})
        return [index.parent / str(name) for name in dict.fromkeys(weight_map.values())]
    except Exception:  # not an index we can read: nothing more to protect
        return []


def checkpoints_named_by(log: Path) -> list[Path]:
    """Existing files a monitor log's records name as a ``"checkpoint"`` (the audited source), as
    given and relative to the log's folder. Found by a linear scan, not by parsing every record: in
    JSON a ``"checkpoint":`` key cannot occur inside a string, whose quotes are escaped."""
    try:
        if os.stat(log).st_size > _MAX_LOG_BYTES:
            return []
        with open(log, "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return []
    names: dict[str, None] = {}
    for found in _CHECKPOINT_FIELD.finditer(data):
        try:
            name = json.loads(b'"' + found.group(1) + b'"')
        except ValueError:
            continue
        if isinstance(name, str) and name and "\x00" not in name:
            names[name] = None
    out = []
    for name in names:
        for candidate in (Path(name), log.parent / name):
            try:
                if candidate.is_file():
                    out.append(candidate)
            except (OSError, ValueError):
                continue
    return out


_CHECKPOINT_FIELD = re.compile(rb'"checkpoint"\s*:\s*"((?:[^"\\]|\\.){1,4096})"')
