"""The training monitor's log as data: the record one audit appends, and a log read back as a run.

One record per audit, one JSON object per line::

    {"sninspect_monitor": 1, "step": 1200, "time": 1733070000.5, "audit_seconds": 0.21,
     "violations": [{"rule": "max_sigma", "layer": "main.2.weight", ...}],
     "report": {... the ``report --format json`` object of the live model ...}}

``report.layers[*]`` holds each layer's ``sigma_effective``, ``sigma_rel_error``, ``cos_error_u``,
``cos_error_v``, ``sigma_exact`` (and every other JSON field); ``report.lipschitz`` the network
bound. Read back, each record is a :class:`Report` named ``run.jsonl@1200`` with ``extras["step"]``,
so a log orders by step exactly as checkpoints saved with their step do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from sninspect.audit import trend
from sninspect.audit.checks import judge
from sninspect.errors import InputError
from sninspect.io.files import printable
from sninspect.io.monitor_log import read_records
from sninspect.results.check import Rules, Verdict
from sninspect.results.report import Report, json_safe, report_from_dict
from sninspect.results.trend import Trend, step_number

__all__ = ["LOG_SCHEMA", "log_record", "read_log", "reports_from_log", "tell"]

LOG_SCHEMA = 1
"""The ``sninspect_monitor`` field of every record: the version of this layout."""


def log_record(step: int | float, report: Report, verdict: Verdict | None, *, time: float,
               audit_seconds: float) -> dict[str, Any]:
    """The record of one audit at ``step`` (``time``: wall clock, seconds since the epoch)."""
    return {
        "sninspect_monitor": LOG_SCHEMA,
        "step": step_number(float(step)),
        "time": time,
        "audit_seconds": audit_seconds,
        "violations": [v.to_dict() for v in verdict.violations] if verdict is not None else [],
        "report": json_safe(report.to_dict()),
    }


def reports_from_log(path: str | os.PathLike[str], rules: Rules | None = None) -> tuple[list[Report], list[str]]:
    """The reports of a monitor log in file order, judged by ``rules`` (check's defaults when None) as
    a checkpoint's report is, and notes about skipped torn lines."""
    file = Path(os.fspath(path))
    shown = printable(file)
    records, notes = read_records(file)
    reports = []
    for number, record in records:
        step = record.get("step")
        if record.get("sninspect_monitor") != LOG_SCHEMA or not isinstance(step, (int, float)) \
                or isinstance(step, bool) or not isinstance(record.get("report"), dict):
            raise InputError(f"{shown}: line {number} is not an SNMonitor record (expected "
                             f"sninspect_monitor: {LOG_SCHEMA}, a numeric step and a report object)")
        try:
            report = report_from_dict(record["report"], checkpoint=f"{shown}@{step_number(float(step))}",
                                      extras={"step": step})
            for entry in (*report.layers, *(m.lipschitz for m in report.models)):
                _check_kinds(entry)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{shown}: line {number}: a malformed report ({type(err).__name__}: {err})") from None
        reports.append(judge(report, rules or Rules()))
    return reports, notes


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KINDS = {
    "float | None": lambda v: v is None or _is_number(v),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "tuple[float, ...]": lambda v: isinstance(v, tuple) and all(x is None or _is_number(x) for x in v),
    "tuple[int, ...]": lambda v: isinstance(v, tuple) and all(isinstance(x, int) for x in v),
    "tuple[str, ...]": lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
    "tuple[str, ...] | None": lambda v: v is None or (isinstance(v, tuple) and all(isinstance(x, str) for x in v)),
}


def _check_kinds(entry: Any) -> None:
    """Each field of a layer or bound read from JSON holds the kind its dataclass declares: a number
    where a number goes (a string there made the renderers raise TypeError)."""
    for item in fields(entry):
        accepts = _KINDS.get(str(item.type))
        value = getattr(entry, item.name)
        if accepts is not None and not accepts(value):
            raise TypeError(f"field {item.name!r} holds {str(value)[:40]!r}, expected {item.type}")


def read_log(path: str | os.PathLike[str], notes: list[str] | None = None, rules: Rules | None = None) -> Trend:
    """A monitor log as a training run, ordered by step, judged by ``rules``; ``notes`` (when given)
    collects the skipped torn lines, else each is a :class:`UserWarning`."""
    reports, found = reports_from_log(path, rules)
    tell(found, notes)
    return trend.build(reports)


def tell(found: Sequence[str], notes: list[str] | None) -> None:
    if notes is not None:
        notes.extend(found)
        return
    import warnings

    for note in found:
        warnings.warn(note, UserWarning, stacklevel=3)
