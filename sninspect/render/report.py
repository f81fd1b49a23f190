"""Show reports: rich tables and a summary panel for the terminal; JSON, CSV and Markdown text.

Reads only ``report``; computes nothing beyond picking the worst values to highlight.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sninspect.render.escape import for_csv_cell, for_json, for_markdown, for_terminal
from sninspect.results.report import NATURAL_ORDER, LayerAudit, ModelAudit, Report, bound_not_computed
from sninspect.results.trend import Trend

SIGMA_TOLERANCE = 1e-3
"""σ_eff above 1 + this is highlighted as a layer running above 1."""
COS_TOLERANCE = 1e-2
"""Cosine errors above this are highlighted as unconverged."""


def fmt(value: float | None, digits: int = 6) -> str:
    """A number for a table cell: ``-`` for None, compact scientific for tiny or huge values."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


NOT_COMPUTED = "not computed"
"""The op bound cell of a layer whose certified bound was not computed (not asked for, interrupted)."""


def bound_cell(la: LayerAudit) -> str:
    """A layer's ``operator_bound`` for a table cell: the number, ``-``, or ``not computed``."""
    return NOT_COMPUTED if bound_not_computed(la) else fmt(la.operator_bound)


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _worst(layers: Sequence[LayerAudit], attr: str) -> LayerAudit | None:
    candidates = [la for la in layers if getattr(la, attr) is not None and math.isfinite(getattr(la, attr))]
    return max(candidates, key=lambda la: getattr(la, attr)) if candidates else None


def _worst_cos(layers: Sequence[LayerAudit]) -> tuple[LayerAudit, float] | None:
    best: tuple[LayerAudit, float] | None = None
    for la in layers:
        for value in (la.cos_error_u, la.cos_error_v):
            if value is not None and (best is None or value > best[1]):
                best = (la, value)
    return best


# ----------------------------------------------------------------------------------------------
# The verdict: the same lines in the terminal panel, Markdown and HTML


def order_text(report: Report) -> str:
    """Which order the layers (and the network chain) are in: ``Report.layer_order`` in words."""
    if report.layer_order == NATURAL_ORDER:
        return "layers in natural name order (main.2 before main.10; safetensors does not store module order)"
    return "layers in stored order"


def bound_text(model: ModelAudit) -> str:
    """``matrix product 1.03, certified operator product 64.7 over 5 factors``, or why there is none."""
    bound = model.lipschitz
    if bound.matrix_product is None and bound.operator_product is None:
        return f"none: {bound.unavailable or 'no weight layer in the chain'}"
    missing = sum(bound_not_computed(la) for la in model.layers)
    if bound.operator_product is None and missing:
        return (f"matrix product {fmt(bound.matrix_product)}, certified operator product not claimed "
                f"({missing} layer bound{'s' if missing > 1 else ''} {NOT_COMPUTED}) over {len(bound.layers)} factors")
    return (f"matrix product {fmt(bound.matrix_product)}, certified operator product "
            f"{fmt(bound.operator_product)} over {len(bound.layers)} factors")


def verdict_lines(report: Report) -> list[tuple[str, str]]:
    """(line, style) pairs: layer counts, worst σ_eff and cosine error with their layers, layers above 1,
    network bounds, what they assume, warnings and the layer notes. Styles: ``red``, ``yellow``,
    ``green``, ``dim`` or ``""``."""
    layers = report.layers
    sn = [la for la in layers if la.has_sn and la.error is None]
    errors = [la for la in layers if la.error is not None]
    lines = [(f"layers: {len(layers)} shown ({len(sn)} with SN, {len(layers) - len(sn) - len(errors)} without, "
              f"{len(errors)} not audited) in {len(report.models)} model(s)", "")]
    worst_eff = _worst(sn, "sigma_effective")
    if worst_eff is not None:
        above = [la for la in sn if (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE]
        lines.append((f"worst σ_eff: {fmt(worst_eff.sigma_effective)} ({worst_eff.name})",
                      "red" if above else "green"))
        if above:
            lines.append((f"layers above 1: {len(above)} of {len(sn)}", "red"))
    worst_cos = _worst_cos(sn)
    if worst_cos is not None:
        lines.append((f"worst cosine error: {fmt(worst_cos[1], 3)} ({worst_cos[0].name})",
                      "yellow" if worst_cos[1] > COS_TOLERANCE else "green"))
    for model in report.models:
        label = f"[{model.name}] " if model.name and len(report.models) > 1 else ""
        lines.append((f"{label}network bound: {bound_text(model)}",
                      "red" if model.lipschitz.unavailable else ""))
    lines.append((f"valid for: {report.primary.lipschitz.assumptions}", "dim"))
    lines += [(f"warning: {warning}", "yellow") for warning in report.all_warnings]
    lines += [(f"note: {note}", "dim") for note in layer_notes(report)]
    return lines


def layer_notes(report: Report) -> list[str]:
    """Each distinct layer note once, with the layers it is about (dim choice, size used, ...)."""
    where: dict[str, list[str]] = {}
    for la in report.layers:
        for note in la.notes:
            where.setdefault(note, []).append(la.name)
    return [f"{note} ({', '.join(names)})" for note, names in where.items()]


# ----------------------------------------------------------------------------------------------
# Terminal

_DESCRIPTIVE = ("dialect", "kind", "shape")
_NUMBERS = ("σ exact", "σ̂", "rel err", "σ eff", "cos err u", "cos err v", "σ2/σ1", "op bound")
HIDE_ORDER = ("kind", "dialect", "shape", "σ2/σ1", "rel err", "cos err v", "σ̂", "op bound", "cos err u",
              "σ exact")
"""On a narrow console, whole columns go in this order until the table fits; the layer name and σ eff
always stay (``--format markdown`` or ``json`` give everything). Below about 30 columns lines are cut."""


def _cells(la: LayerAudit, worst_eff: LayerAudit | None,
           worst_cos: tuple[LayerAudit, float] | None) -> dict[str, Text | str]:
    cells: dict[str, Text | str] = {"dialect": la.dialect, "kind": la.kind, "shape": shape_text(la.shape)}
    if la.error is not None:
        return cells | dict.fromkeys(_NUMBERS, "-")
    eff_style = "red" if (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE and la.has_sn else ""
    if la is worst_eff and la.has_sn:
        eff_style += " bold"
    for title, value in (("cos err u", la.cos_error_u), ("cos err v", la.cos_error_v)):
        style = "yellow" if value is not None and value > COS_TOLERANCE else ""
        if worst_cos is not None and la is worst_cos[0] and value == worst_cos[1]:
            style += " bold"
        cells[title] = Text(fmt(value, 3), style=style.strip())
    rel = la.sigma_rel_error
    return cells | {
        "σ exact": fmt(la.sigma_exact),
        "σ̂": fmt(la.sigma_estimate),
        "rel err": Text(fmt(rel, 3), style="red" if rel is not None and rel < -SIGMA_TOLERANCE else ""),
        "σ eff": Text(fmt(la.sigma_effective), style=eff_style.strip()),
        "σ2/σ1": fmt(la.spectral_gap, 4),
        "op bound": bound_cell(la),
    }


def _build_table(report: Report, hidden: Sequence[str], width: int) -> Table:
    layers = report.layers
    table = Table(box=box.SIMPLE_HEAVY, title=for_terminal(f"sninspect · {report.checkpoint}"), title_justify="left",
                  caption=f"{report.format} · {report.device} · {report.dtype} · {order_text(report)}",
                  caption_justify="left")
    longest = max((len(la.name) for la in layers), default=5)
    # The name folds onto more lines rather than lose a character (or take a third of the width from
    # the numbers); it is never hidden.
    table.add_column("layer", overflow="fold", min_width=min(longest, 16),
                     max_width=max(min(longest, width // 3), 16, 5))
    shown = [t for t in (*_DESCRIPTIVE, *_NUMBERS) if t not in hidden]
    for title in shown:  # no_wrap: a cell that does not fit ends in "…", never silently cut
        table.add_column(title, justify="left" if title in _DESCRIPTIVE else "right", no_wrap=True,
                         overflow="ellipsis")
    worst_eff = _worst(layers, "sigma_effective")
    worst_cos = _worst_cos(layers)
    for la in layers:
        cells = _cells(la, worst_eff, worst_cos)
        table.add_row(for_terminal(la.name), *(cells[t] for t in shown))
        if la.error is not None:  # its own row: the whole reason, folded under the name
            table.add_row(for_terminal(f"↳ not audited: {la.error}", "bold red"), *([""] * len(shown)))
    return table


def layer_table(report: Report, width: int = 200, console: Console | None = None) -> tuple[Table, list[str]]:
    """The per-layer table and the columns hidden to fit ``width``; layers above 1 in red, unconverged
    vectors in yellow, worst in bold."""
    return fit_table(lambda hidden: _build_table(report, hidden, width), HIDE_ORDER, width, console)


def fit_table(build: Callable[[Sequence[str]], Table], hide_order: Sequence[str], width: int,
              console: Console | None = None) -> tuple[Table, list[str]]:
    """``build(hidden)`` with whole columns hidden, in ``hide_order``, until it fits ``width`` on one
    line per row; returns the table and the titles hidden."""
    console = console or Console(width=width, color_system=None, legacy_windows=False)
    hidden: list[str] = []
    table = build(hidden)
    for title in hide_order:
        if _natural_width(table, console) <= width:
            break
        hidden.append(title)
        table = build(hidden)
    return table, hidden


def hidden_line(hidden: Sequence[str], width: int) -> Text:
    """The one line saying which columns went to fit."""
    return Text(f"hidden at {width} columns: {', '.join(hidden)} (see -f md)", style="dim")


def _natural_width(table: Table, console: Console) -> int:
    """The width the table takes with every cell on one line (error rows aside: they fold)."""
    return console.measure(table, options=console.options.update(width=10_000)).maximum


def summary_panel(report: Report, width: int | None = None) -> Panel:
    """The verdict (:func:`verdict_lines`) in a box ``width`` wide (the table's)."""
    lines = [for_terminal(line, style) for line, style in verdict_lines(report)]
    return Panel(Group(*lines), title="summary", title_align="left", width=width)


def terminal_console() -> Console:
    """stdout console: the terminal's width; into a file or pipe, ``COLUMNS`` when set, else a wide page."""
    import os
    import sys

    width = None
    if not sys.stdout.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH
    return Console(highlight=False, emoji=False, width=width)


PIPE_WIDTH = 200
"""Width of the table written into a pipe or file when ``COLUMNS`` is not set."""


def print_report(report: Report, console: Console) -> None:
    """The table, a line naming the columns hidden to fit, and the summary panel as wide as the table."""
    table, hidden = layer_table(report, console.width, console)
    console.print(table)
    width = min(console.measure(table).maximum, console.width)
    if hidden:
        console.print(hidden_line(hidden, console.width))
    console.print(summary_panel(report, width=max(width, 40)))


def strip_trailing(text: str) -> str:
    """Every line without trailing spaces (rich pads to the table width), colour codes kept."""
    return "\n".join(_TRAILING.sub(r"\1", line) for line in text.split("\n"))


_TRAILING = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$")


def table_text(report: Report, *, width: int = 160, color: bool = False) -> str:
    """The terminal rendering as a string (golden tests, ``-o file.txt``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="standard" if color else None,
                      force_terminal=color, legacy_windows=False)
    print_report(report, console)
    return strip_trailing(buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# Text formats


def to_json(result: Report | Trend, *, spectra: bool = False) -> str:
    """One report: its object; a run: ``{"checkpoints": [...], "trend": {...}}``, the checkpoints in
    run order."""
    if isinstance(result, Report):
        return json.dumps(for_json(result.to_dict(spectra=spectra)), indent=2, allow_nan=False) + "\n"
    trend = result
    payload = {"checkpoints": [r.to_dict(spectra=spectra) for r in trend.reports], "trend": trend.to_dict()}
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


def to_markdown(reports: Sequence[Report]) -> str:
    """A GitHub-flavoured Markdown table per checkpoint, then the verdict of the terminal's summary panel."""
    out: list[str] = []
    header = ("layer", "dialect", "kind", "shape", "σ exact", "σ̂", "rel err", "σ eff",
              "cos err u", "cos err v", "σ2/σ1", "op bound")
    for report in reports:
        out.append(f"## {for_markdown(report.checkpoint)}\n")
        out.append(f"`{report.format}` · device `{report.device}` · `{report.dtype}` · {order_text(report)}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * 4 + ["---:"] * 8) + "|")
        for la in report.layers:
            row = [la.name, la.dialect, la.kind, shape_text(la.shape)]
            if la.error is not None:
                row += ["-"] * 8
            else:
                row += [fmt(la.sigma_exact), fmt(la.sigma_estimate), fmt(la.sigma_rel_error, 3),
                        fmt(la.sigma_effective), fmt(la.cos_error_u, 3), fmt(la.cos_error_v, 3),
                        fmt(la.spectral_gap, 4), bound_cell(la)]
            out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            if la.error is not None:  # its own row, the reason whole
                out.append(f"| ↳ not audited: {_md_cell(la.error)} |" + " |" * 11)
        out.append("\n**Summary**\n")
        out += [f"- {_md_cell(line)}" for line, _ in verdict_lines(report)]
        out.append("")
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return for_markdown(text)
