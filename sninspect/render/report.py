"""Show reports: rich tables and a summary panel for the terminal; JSON, CSV and Markdown text.

Reads only ``report``; computes nothing beyond picking the worst values to highlight.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sninspect.render.escape import for_csv_cell, for_json, for_markdown, for_terminal
from sninspect.results.report import LayerAudit, Report
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
# Terminal


WIDE = 150
"""Below this console width the table drops the descriptive columns (dialect, kind, shape, gap)."""

_COLUMNS = ("σ exact", "σ̂", "rel err", "σ eff", "cos err u", "cos err v", "σ2/σ1", "op bound")
_NARROW_DROP = {"dialect", "kind", "shape", "rel err", "σ2/σ1"}


def layer_table(report: Report, width: int = 200) -> Table:
    """The per-layer table; layers above 1 in red, unconverged vectors in yellow, worst in bold.

    On a console narrower than ``WIDE`` the descriptive columns go, so that names and numbers stay
    whole (``--format markdown`` or ``json`` give everything)."""
    layers = report.layers
    narrow = width < WIDE
    caption = f"{report.format} · {report.device} · {report.dtype}"
    if narrow:
        caption += " · narrow terminal: dialect, kind, shape, rel err and σ2/σ1 hidden"
    table = Table(box=box.SIMPLE_HEAVY, title=for_terminal(f"sninspect · {report.checkpoint}"), title_justify="left",
                  caption=caption, caption_justify="left")
    titles = ["layer", "dialect", "kind", "shape", *_COLUMNS]
    keep = [t not in _NARROW_DROP for t in titles] if narrow else [True] * len(titles)
    table.add_column("layer", overflow="fold", min_width=12, ratio=1)
    for title, shown in zip(titles[1:], keep[1:], strict=True):
        if shown:
            table.add_column(title, justify="left" if title in _NARROW_DROP and title in
                             {"dialect", "kind", "shape"} else "right", no_wrap=True)
    worst_eff = _worst(layers, "sigma_effective")
    worst_cos = _worst_cos(layers)
    for la in layers:
        cells: list[Text | str] = [for_terminal(la.name), la.dialect, la.kind, shape_text(la.shape)]
        if la.error is not None:
            cells += [for_terminal(f"not audited: {la.error}", style="bold red")] + [""] * 7
        else:
            eff_style = "red" if (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE and la.has_sn else ""
            if la is worst_eff and la.has_sn:
                eff_style += " bold"
            cos_cells = []
            for value in (la.cos_error_u, la.cos_error_v):
                style = "yellow" if value is not None and value > COS_TOLERANCE else ""
                if worst_cos is not None and la is worst_cos[0] and value == worst_cos[1]:
                    style += " bold"
                cos_cells.append(Text(fmt(value, 3), style=style.strip()))
            rel = la.sigma_rel_error
            cells += [
                fmt(la.sigma_exact),
                fmt(la.sigma_estimate),
                Text(fmt(rel, 3), style="red" if rel is not None and rel < -SIGMA_TOLERANCE else ""),
                Text(fmt(la.sigma_effective), style=eff_style.strip()),
                *cos_cells,
                fmt(la.spectral_gap, 4),
                fmt(la.operator_bound),
            ]
        if la.error is not None and narrow:
            row = [cells[0], cells[4]] + [""] * (sum(keep) - 2)
        else:
            row = [c for c, shown in zip(cells, keep, strict=True) if shown]
        table.add_row(*row)
    return table


def summary_panel(report: Report) -> Panel:
    """Layer counts, the worst values with their layers, network bounds and warnings."""
    layers = report.layers
    sn = [la for la in layers if la.has_sn and la.error is None]
    errors = [la for la in layers if la.error is not None]
    lines: list[Text] = [
        Text(f"layers: {len(layers)} shown ({len(sn)} with SN, {len(layers) - len(sn) - len(errors)} without, "
             f"{len(errors)} not audited) in {len(report.models)} model(s)")
    ]
    worst_eff = _worst(sn, "sigma_effective")
    if worst_eff is not None:
        style = "red" if (worst_eff.sigma_effective or 0) > 1 + SIGMA_TOLERANCE else "green"
        lines.append(for_terminal(f"worst σ_eff: {fmt(worst_eff.sigma_effective)} ({worst_eff.name})", style))
        above = [la for la in sn if (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE]
        if above:
            lines.append(Text(f"layers above 1: {len(above)} of {len(sn)}", style="red"))
    worst_cos = _worst_cos(sn)
    if worst_cos is not None:
        style = "yellow" if worst_cos[1] > COS_TOLERANCE else "green"
        lines.append(for_terminal(f"worst cosine error: {fmt(worst_cos[1], 3)} ({worst_cos[0].name})", style))
    for model in report.models:
        bound = model.lipschitz
        label = f"[{model.name}] " if model.name and len(report.models) > 1 else ""
        lines.append(for_terminal(f"{label}network bound: matrix product {fmt(bound.matrix_product)}, "
                                  f"certified operator product {fmt(bound.operator_product)} "
                                  f"over {len(bound.layers)} factors"))
    lines.append(Text(f"valid for: {report.primary.lipschitz.assumptions}", style="dim"))
    for warning in report.all_warnings:
        lines.append(for_terminal(f"warning: {warning}", "yellow"))
    return Panel(Group(*lines), title="summary", title_align="left")


def terminal_console() -> Console:
    """stdout console: the terminal's width, or a wide page when output goes to a file or pipe."""
    import sys

    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)


def print_report(report: Report, console: Console) -> None:
    """The table and the summary panel."""
    console.print(layer_table(report, console.width))
    console.print(summary_panel(report))


def table_text(report: Report, *, width: int = 160, color: bool = False) -> str:
    """The terminal rendering as a string (golden tests, ``-o file.txt``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="standard" if color else None,
                      force_terminal=color, legacy_windows=False)
    print_report(report, console)
    return buffer.getvalue()


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
    """A GitHub-flavoured Markdown table per checkpoint, with the network bound and warnings."""
    out: list[str] = []
    header = ("layer", "dialect", "kind", "shape", "σ exact", "σ̂", "rel err", "σ eff",
              "cos err u", "cos err v", "σ2/σ1", "op bound")
    for report in reports:
        out.append(f"## {for_markdown(report.checkpoint)}\n")
        out.append(f"`{report.format}` · device `{report.device}` · `{report.dtype}`\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * 4 + ["---:"] * 8) + "|")
        for la in report.layers:
            if la.error is not None:
                row = [la.name, la.dialect, la.kind, shape_text(la.shape), f"not audited: {la.error}"] + [""] * 7
            else:
                row = [la.name, la.dialect, la.kind, shape_text(la.shape), fmt(la.sigma_exact),
                       fmt(la.sigma_estimate), fmt(la.sigma_rel_error, 3), fmt(la.sigma_effective),
                       fmt(la.cos_error_u, 3), fmt(la.cos_error_v, 3), fmt(la.spectral_gap, 4),
                       fmt(la.operator_bound)]
            out.append("| " + " | ".join(for_markdown(c) for c in row) + " |")
        for model in report.models:
            bound = model.lipschitz
            label = f" ({for_markdown(model.name)})" if model.name and len(report.models) > 1 else ""
            out.append(f"\n**Network bound{label}:** matrix product {fmt(bound.matrix_product)}, "
                       f"certified operator product {fmt(bound.operator_product)}.")
        out.append(f"\n_Valid for a {report.primary.lipschitz.assumptions}._\n")
        for warning in report.all_warnings:
            out.append(f"- ⚠ {for_markdown(warning)}")
        out.append("")
    return "\n".join(out) + "\n"
