"""JSON and CSV text of reports: the result objects' fields, non-finite numbers as null, text cells
made safe for spreadsheets."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sninspect.render.escape import for_csv_cell, for_json
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend


def to_json(result: Report | Trend | Separate, *, spectra: bool = False) -> str:
    """One report: its object; a run: ``{"checkpoints": [...], "trend": {...}}``, the checkpoints in
    run order; unrelated checkpoints: ``{"checkpoints": [...], "trend": null, "not_a_run": why}``."""
    if isinstance(result, Report):
        return json.dumps(for_json(result.to_dict(spectra=spectra)), indent=2, allow_nan=False) + "\n"
    checkpoints = [r.to_dict(spectra=spectra) for r in result.reports]
    payload: dict[str, object] = {"checkpoints": checkpoints}
    if isinstance(result, Separate):
        payload |= {"trend": None, "not_a_run": result.why}
    else:
        payload["trend"] = result.to_dict()
    return json.dumps(for_json(payload), indent=2, allow_nan=False) + "\n"


def to_csv(reports: Sequence[Report]) -> str:
    """One row per layer; a ``checkpoint`` column first."""
    import pandas as pd

    frames = []
    for report in reports:
        frame = report.to_dataframe()
        frame.insert(0, "checkpoint", report.checkpoint)
        frames.append(frame.apply(lambda column: column.map(for_csv_cell)))  # formula-safe text cells
    return str(pd.concat(frames, ignore_index=True).to_csv(index=False))
