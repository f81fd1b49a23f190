"""Read the training monitor's log: JSON lines, one audit record per line (written by
:func:`sninspect.io.write.append_line`).

A log is often read while the training still writes it, so a last line without its newline is a
record being written (or torn by a crash): it is skipped with a note, not refused. Anything else
that is not a JSON object (a bad line in the middle, an empty file, no record at all) is one
:class:`~sninspect.errors.InputError` naming the file and the line.

A line is hostile input too: nesting deeper than :data:`MAX_NESTING` is refused (Python's JSON reader
recurses once per level), and an integer too long for a float reads as an infinite float, which the
record's range checks (:mod:`sninspect.audit.runs.log`) then refuse by field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sninspect.errors import InputError
from sninspect.io.files import open_regular, printable

__all__ = ["LOG_SUFFIX", "is_log", "read_records"]

MAX_NESTING = 32
"""How deep a record's JSON may nest (an audit record nests five: record, report, layers, a layer, its shape;
the room above is for fields a later version adds)."""

_LONGEST_INT = 40
"""Digits beyond which a JSON integer is read as a float (infinite past 1e308) instead of an int: an int
of thousands of digits takes quadratic time to read, and no field of a record holds one."""

LOG_SUFFIX = ".jsonl"
"""The monitor log's suffix: ``sninspect report run.jsonl`` reads it as a training run."""


def is_log(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a monitor log (by its suffix)."""
    return os.fspath(path).lower().endswith(LOG_SUFFIX)


def read_records(path: str | os.PathLike[str]) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """``([(line number, record), ...], notes)`` of a monitor log; a note per skipped torn last line."""
    file = Path(os.fspath(path))
    shown = printable(file)
    open_regular(file, shown)  # missing, a folder, empty: one line each
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{shown}: not a monitor log: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{shown}: cannot read: {err.strerror or err}") from None
    lines = text.split("\n")
    complete, last = lines[:-1], lines[-1]  # ``last`` is "" when the file ends with a newline
    records: list[tuple[int, dict[str, Any]]] = []
    notes: list[str] = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_int=_int)
        except RecursionError:
            raise InputError(f"{shown}: line {number} nests JSON deeper than it can be read; an audit record "
                             "nests five levels") from None
        except ValueError as err:
            if _torn_then_closed(complete, number):
                notes.append(f"{shown}: line {number} is an incomplete record (cut off by a crash?); skipped")
                continue
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            raise InputError(f"{shown}: line {number} is not JSON ({reason}); expected one audit record per "
                             "line, as SNMonitor writes") from None
        if not isinstance(record, dict):
            raise InputError(f"{shown}: line {number} holds a {type(record).__name__}, not an audit record "
                             "(a JSON object)")
        if _deeper_than(record, MAX_NESTING):
            raise InputError(f"{shown}: line {number} nests JSON more than {MAX_NESTING} levels deep; an audit "
                             "record nests five")
        records.append((number, record))
    if last.strip():
        notes.append(f"{shown}: the last line (line {len(lines)}) has no end yet (still being written?); skipped")
    if not records:
        raise InputError(f"{shown}: no audit record in the log (expected JSON lines written by "
                         "sninspect.monitor.SNMonitor)")
    return records, notes


def _torn_then_closed(lines: list[str], number: int) -> bool:
    """A record torn by a crash: the next append closed it with a newline, so it is a prefix of a
    record (starts like one) followed by a complete one. Only such lines are skipped mid-file."""
    line = lines[number - 1]
    return line.startswith("{") and not line.rstrip().endswith("}")


def _int(text: str) -> int | float:
    """A JSON integer: an int, or past :data:`_LONGEST_INT` digits a float (``inf`` past 1e308)."""
    return int(text) if len(text) <= _LONGEST_INT else float(text)


def _deeper_than(value: object, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels in a parsed JSON value (iterative)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        parts = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if parts is None:
            continue
        if level > limit:
            return True
        stack.extend((part, level + 1) for part in parts)
    return False
