"""The JSON format of every result, under the one policy of :mod:`sninspect.results.jsonable`
(``"schema"`` first, non-finite numbers as null, UTF-8 text): a report, a run, unrelated checkpoints,
the graph bound and ``check``'s verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sninspect.render.formats import View
from sninspect.results.check import Rules, Verdict
from sninspect.results.graph import GraphReport
from sninspect.results.jsonable import dumps, with_schema
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend


def render(result: Report | Trend | Separate | GraphReport, view: View) -> str:
    """One report: its object; a run: ``{"schema", "checkpoints": [...], "trend": {...}}``, the
    checkpoints in run order; unrelated checkpoints: ``{"schema", "checkpoints": [...], "trend": null,
    "not_a_run": why}``; the graph bound: its fields. ``view.spectra``: each layer's singular values."""
    payload: dict[str, Any]
    if isinstance(result, GraphReport):
        payload = asdict(result)
    elif isinstance(result, Report):
        payload = result.to_dict(spectra=view.spectra)
    else:
        payload = {"checkpoints": [r.to_dict(spectra=view.spectra) for r in result.reports]}
        if isinstance(result, Separate):
            payload |= {"trend": None, "not_a_run": result.why}
        else:
            payload["trend"] = result.to_dict()
    return dumps(with_schema(payload)) + "\n"


def render_check(verdicts: Sequence[Verdict], rules: Rules, width: int | None = None) -> str:
    """``{"schema", "passed", "rules", "checkpoints": [{checkpoint, passed, layers_checked}],
    "violations": [...]}``."""
    payload = {
        "passed": all(v.passed for v in verdicts),
        "rules": asdict(rules),
        "checkpoints": [
            {"checkpoint": v.checkpoint, "passed": v.passed, "layers_checked": v.layers_checked}
            for v in verdicts
        ],
        "violations": [violation.to_dict() for v in verdicts for violation in v.violations],
    }
    return dumps(with_schema(payload)) + "\n"
