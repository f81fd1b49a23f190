"""The CSV format: a report's layers as their JSON fields (one row per layer, a ``checkpoint`` column
first; a run: every checkpoint's rows), the graph bound's node table; text cells made safe for
spreadsheets (:func:`~sninspect.render.escape.for_csv_cell`)."""

from __future__ import annotations

import csv
import io

from sninspect.render.escape import for_csv_cell
from sninspect.render.formats import View
from sninspect.render.table import graph_nodes
from sninspect.results.graph import GraphReport
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend


def render(result: Report | Trend | Separate | GraphReport, view: View) -> str:
    """One row per layer of every report (the full numbers, as JSON has them); the graph bound: one row
    per operator of its node table."""
    if isinstance(result, GraphReport):
        table = graph_nodes(result)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(table.header)
        writer.writerows([for_csv_cell(cell) for cell in row] for row in table.texts())
        return buffer.getvalue()
    import pandas as pd

    frames = []
    for report in [result] if isinstance(result, Report) else result.reports:
        frame = report.to_dataframe()
        frame.insert(0, "checkpoint", report.checkpoint)
        frames.append(frame.apply(lambda column: column.map(for_csv_cell)))  # formula-safe text cells
    return str(pd.concat(frames, ignore_index=True).to_csv(index=False))
