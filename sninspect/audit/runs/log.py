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

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from sninspect.audit.checks import judge
from sninspect.errors import InputError
from sninspect.io.files import printable
from sninspect.io.monitor_log import read_records
from sninspect.results.check import Rules, Verdict
from sninspect.results.jsonable import json_safe
from sninspect.results.report import Report, report_from_dict
from sninspect.results.trend import step_number

__all__ = ["LOG_SCHEMA", "log_record", "reports_from_log"]

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
        if not _whole_step(step):
            raise InputError(f"{shown}: line {number}: field 'step' holds {_shown(step)}, expected a whole number "
                             f"from 0 to {STEP_MAX} (SNMonitor's step)")
        try:
            report = report_from_dict(record["report"], checkpoint=f"{shown}@{step_number(float(step))}",
                                      extras={"step": step})
            for entry in (*report.layers, *(m.lipschitz for m in report.models)):
                _check_kinds(entry)
            _check_texts(report)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{shown}: line {number}: a malformed report ({type(err).__name__}: {err})") from None
        reports.append(judge(report, rules or Rules()))
    return reports, notes


STEP_MAX = 2**63 - 1
"""The largest step a record may hold (an int64, as training loops count)."""

NON_NEGATIVE = frozenset({
    "sigma_exact", "singular_values", "spectral_gap", "stable_rank", "operator_bound", "operator_lower",
    "operator_at_input", "u_norm", "v_norm", "matrix_product", "operator_product", "cumulative_matrix",
    "cumulative_operator",
})
"""Fields that are norms, singular values or products of them: never below 0 (σ̂, σ_eff and the
relative error can be, when a stored u flips the weight's sign)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -STEP_MAX - 1 <= value <= STEP_MAX


def _finite(value: Any) -> bool:
    """A number that is a finite float (JSON stores the non-finite ones as null; a 400-digit int is
    not a float)."""
    try:
        return _is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


_KINDS = {
    "float | None": lambda v: v is None or _finite(v),
    "int": _is_int64,
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "tuple[float, ...]": lambda v: isinstance(v, tuple) and all(x is None or _finite(x) for x in v),
    "tuple[int, ...]": lambda v: isinstance(v, tuple) and all(_is_int64(x) and x >= 0 for x in v),
    "tuple[str, ...]": lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
    "tuple[str, ...] | None": lambda v: v is None or (isinstance(v, tuple) and all(isinstance(x, str) for x in v)),
}
_EXPECTED = {
    "float | None": "a finite number or null",
    "int": "an integer within int64",
    "tuple[float, ...]": "a list of finite numbers or nulls",
    "tuple[int, ...]": "a list of non-negative integers within int64",
}


def _check_kinds(entry: Any) -> None:
    """Each field of a layer or bound read from JSON holds the kind its dataclass declares, in range: a
    finite number where a number goes (a string there made the renderers raise TypeError, a 400-digit
    integer OverflowError), never below 0 for a norm (:data:`NON_NEGATIVE`)."""
    where = f"layer {entry.name!r} " if isinstance(getattr(entry, "name", None), str) else ""
    for item in fields(entry):
        kind = str(item.type)
        accepts = _KINDS.get(kind)
        value = getattr(entry, item.name)
        if accepts is not None and not accepts(value):
            raise TypeError(f"{where}field {item.name!r} holds {_shown(value)}, expected "
                            f"{_EXPECTED.get(kind, kind)}")
        if item.name in NON_NEGATIVE:
            values = value if isinstance(value, tuple) else (value,)
            if any(v is not None and v < 0 for v in values):
                raise ValueError(f"{where}field {item.name!r} holds {_shown(value)}, expected a number ≥ 0 "
                                 "(a norm)")


def _check_texts(report: Report) -> None:
    """The report's own text fields and warnings are strings (the renderers join them)."""
    for name in ("format", "device", "dtype", "layer_order"):
        if not isinstance(getattr(report, name), str):
            raise TypeError(f"field {name!r} holds {_shown(getattr(report, name))}, expected a string")
    for model in report.models:
        if not isinstance(model.name, str):
            raise TypeError(f"a model's field 'name' holds {_shown(model.name)}, expected a string")
    if not all(isinstance(w, str) for m in report.models for w in (*report.warnings, *m.warnings)):
        raise TypeError("field 'warnings' holds something other than strings")


def _whole_step(step: int | float) -> bool:
    if isinstance(step, float):
        return math.isfinite(step) and step.is_integer() and 0 <= step <= STEP_MAX
    return 0 <= step <= STEP_MAX


def _shown(value: Any) -> str:
    """A value as a message shows it: a long number by its size, anything else cut to 40 characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"a {len(str(abs(value)))}-digit integer"
    if isinstance(value, float) and math.isinf(value):
        return f"{'' if value > 0 else 'minus '}infinity (or a number too large for a float)"
    return repr(str(value)[:40]) if isinstance(value, str) else str(value)[:40]
