"""The HTML format: one self-contained page a person can open offline and share, for a report, a run,
unrelated checkpoints or the graph bound; and the tables of a notebook cell.

Everything is inside the file: the CSS in a ``<style>`` element, every figure a PNG ``data:`` URI, no
script, no link to anything outside. Every table is :func:`html_table` of a table of
:mod:`sninspect.render.table` (a cell's mark is its class); the figures come from
:mod:`sninspect.render.plots`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import PurePath
from typing import TYPE_CHECKING

from sninspect._version import __version__
from sninspect.render import table as tables
from sninspect.render.escape import for_html as escape
from sninspect.render.formats import View
from sninspect.render.grouping import group_warnings
from sninspect.render.legend import SUMMARY
from sninspect.render.summary import order_text, verdict_lines
from sninspect.render.table import Cell, Column, Table
from sninspect.results.graph import GraphReport
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend

if TYPE_CHECKING:  # matplotlib is imported where figures are drawn: the notebook table draws none
    from matplotlib.figure import Figure

DPI = 90
"""Resolution of the embedded PNGs (sharp on screen, a few hundred kB per checkpoint)."""

FIGURED_CHECKPOINTS = 10
"""A run's page draws the per-checkpoint figures of its last ten checkpoints only: they take seconds per
checkpoint to draw (a folder of a thousand took over an hour) and grow the page by about 180 kB each,
while the run's own figures and tables cover every checkpoint."""

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta, .assume { color: #666; } .assume { font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f6f6f6; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
.above { color: #c0392b; font-weight: 600; } .warn { color: #b7791f; font-weight: 600; }
.err { color: #c0392b; } .absent { color: #b7791f; } .ok { color: #2e7d32; }
.verdict { border: 1px solid #ddd; border-radius: 4px; padding: 0.4em 1em; margin: 0.8em 0; }
.verdict ul { margin: 0.3em 0; padding-left: 1.2em; }
ul.warnings li { color: #b7791f; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.9em; }
details > summary { cursor: pointer; font-size: 1.2em; font-weight: 600; margin: 1em 0 0.5em; }
.scroll { overflow-x: auto; }
"""

_CAPTIONS = {
    "sigma": "Above: (σ̂ − σ1)/σ1, the relative error of the estimate the model divides by. Below: σ_eff, "
             "the norm of the weight in use, as a bar from 1; red: the layer breaks check's max_sigma "
             "(the dotted line).",
    "cos_error": "Cosine errors of the stored u and v against the exact top singular vectors (log scale): "
                 "large marks, the gap-aware error check judges (the relative σ̂ deficit the angle forces "
                 "given σ2/σ1); small hollow marks, the raw 1 − |cos|. Beyond the dotted line (shaded) a "
                 "vector breaks check's max_cos_error.",
    "spectra": "Singular values divided by σ1 (log scale).",
    "lipschitz_depth": "Running product of the per-layer bounds by depth (log scale).",
    "trend_sigma": "σ_eff of each layer over the run; the dashed line is 1, the dotted one check's max_sigma.",
    "trend_cos_error": "The worse of the u/v cosine errors check judges, per layer over the run (log scale); "
                       "the dotted line is check's max_cos_error.",
}
"""Every caption says what its figure draws; a red layer name in any figure: the layer breaks a rule."""


def render(result: Report | Trend | Separate | GraphReport, view: View) -> str:
    """The page of ``result``; ``view.on_checkpoint`` is called with each checkpoint's name once its
    figures are drawn (a progress hook)."""
    if isinstance(result, GraphReport):
        return graph_page(result)
    return to_html(result, on_checkpoint=view.on_checkpoint)


def to_html(result: Report | Trend | Separate, *, on_checkpoint: Callable[[str], None] | None = None) -> str:
    """The page for one checkpoint, a training run, or unrelated checkpoints each on its own.
    ``on_checkpoint`` is called with each checkpoint's name once its figures are drawn (a progress hook)."""
    trend = result if isinstance(result, Trend) else None
    ordered = [result] if isinstance(result, Report) else list(result.reports)
    title = (f"training run: {len(ordered)} checkpoints" if trend is not None
             else f"{len(ordered)} checkpoints" if isinstance(result, Separate)
             else PurePath(ordered[0].checkpoint).name if ordered else "no checkpoint")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>sninspect · {escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>sninspect · {escape(title)}</h1>",
        f'<p class="meta">spectral normalization audit, sninspect {escape(__version__)}</p>',
    ]
    figured = len(ordered) - FIGURED_CHECKPOINTS  # the last ones drawn: a page of 1000 stays minutes, not hours
    if trend is not None:
        parts.append(_run_section(trend))
    if isinstance(result, Separate):
        parts.append(f'<p class="warnings">Each checkpoint on its own: {escape(result.why)}</p>')
    if figured > 0:
        covered = " (the run's figures above cover all)" if trend is not None else ""
        parts.append(f'<p class="assume">Figures of each checkpoint: the last {FIGURED_CHECKPOINTS} of '
                     f"{len(ordered)} only{covered}; <code>sninspect report "
                     "CHECKPOINT -o page.html</code> draws another's.</p>")
    for i, report in enumerate(ordered):
        section = _report_section(report, level=3 if trend is not None else 2, figures=i >= figured)
        if trend is not None:
            opened = " open" if i == len(ordered) - 1 else ""
            section = (f'<details{opened}><summary>{escape(PurePath(report.checkpoint).name)}</summary>'
                       f"{section}</details>")
        parts.append(section)
        if on_checkpoint is not None:
            on_checkpoint(PurePath(report.checkpoint).name)
    parts.append(_legend())
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _legend() -> str:
    """The "Columns" section: what each column and summary term means (:mod:`sninspect.render.legend`)."""
    terms = "".join(f"<li><b>{escape(t)}</b>: {escape(m)}</li>" for t, m in SUMMARY)
    return f"<section><h2>Columns</h2>{html_table(tables.legend_table())}<ul>{terms}</ul></section>"


def figure_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """A PNG ``data:`` URI of the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------------------------


def _run_section(trend: Trend) -> str:
    from sninspect.render import plots

    out = [f"<h2>Training run: {len(trend.reports)} checkpoints ordered by {escape(trend.order_by)}</h2>",
           '<div class="scroll">', html_table(tables.summary_table(trend)), "</div>"]
    out += [_figure(name, fig) for name, fig in plots.trend_figures(trend).items()]
    out += ["<h3>Per-layer trend</h3>", '<div class="scroll">', html_table(tables.trend_table(trend)), "</div>"]
    if trend.changes:
        items = "".join(f"<li>{escape(c)}</li>" for c in group_warnings(trend.changes, measured=False))
        out.append(f'<ul class="warnings">{items}</ul>')
    return "<section>" + "\n".join(out) + "</section>"


def _report_section(report: Report, *, level: int, figures: bool = True) -> str:
    from sninspect.render import plots

    name = PurePath(report.checkpoint).name
    extras = ", ".join(f"{k} {v}" for k, v in report.extras.items() if not isinstance(v, str))
    out = [f"<h{level}>{escape(name)}</h{level}>",
           f'<p class="meta">{escape(report.checkpoint)} · {escape(report.format)} · device '
           f"{escape(report.device)} · {escape(report.dtype)}{' · ' + escape(extras) if extras else ''} · "
           f"{escape(order_text(report))}</p>",
           '<div class="scroll">', html_table(tables.layer_table(report)), "</div>"]
    out.append(_verdict(report))
    if figures:
        out += [_figure(key, fig) for key, fig in plots.report_figures(report).items()]
    else:
        out.append(f'<p class="assume">No figures for this checkpoint (drawn for the last {FIGURED_CHECKPOINTS} '
                   "of the run only).</p>")
    return "<section>" + "\n".join(out) + "</section>"


def _verdict(report: Report) -> str:
    """The terminal's summary panel: the same lines (:func:`verdict_lines`), coloured the same way."""
    items = "".join(f'<li class="{_STYLE_CLASS[style]}">{escape(line)}</li>' if _STYLE_CLASS.get(style)
                    else f"<li>{escape(line)}</li>" for line, style in verdict_lines(report))
    return f'<div class="verdict"><b>Summary</b><ul>{items}</ul></div>'


_STYLE_CLASS = {"red": "above", "yellow": "warn", "green": "ok", "dim": "assume"}
"""The CSS class of each style of a verdict line."""


def html_table(table: Table) -> str:
    """``table`` as an HTML table: left-aligned columns ``class="l"``, a cell's mark its class, a row's
    note (why a layer was not audited) across its number columns."""
    head = "".join(f"<th>{escape(c.title)}</th>" if c.right else f'<th class="l">{escape(c.title)}</th>'
                   for c in table.columns)
    spanned = sum(c.right for c in table.columns)
    body = []
    for row in table.rows:
        cells, noted = [], False
        for column, cell in zip(table.columns, row.cells, strict=True):
            if row.note is None or not column.right:
                cells.append(_td(column, cell))
            elif not noted:  # the number columns of a layer not audited: one cell with the reason
                cells.append(f'<td class="l err" colspan="{spanned}">not audited: {escape(row.note)}</td>')
                noted = True
        opening = f'<tr class="{_CLASSES[row.mark]}">' if row.mark else "<tr>"
        body.append(opening + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _td(column: Column, cell: Cell) -> str:
    classes = " ".join(k for k in ("" if column.right else "l", _CLASSES.get(cell.mark, "")) if k)
    text = f"<code>{escape(cell.text)}</code>" if column.code else escape(cell.text)
    return f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>"


_CLASSES = {tables.ABOVE: "above", tables.WARN: "warn", tables.OK: "ok", tables.DIM: "assume",
            tables.ERROR: "err", tables.ABSENT: "absent"}
"""The CSS class of each cell and row mark."""


def _figure(name: str, fig: Figure) -> str:
    caption = _CAPTIONS.get(name, "")
    title = fig.get_suptitle() or name
    return (f'<figure><img src="{figure_data_uri(fig)}" alt="{escape(title)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------------------------
# Notebooks: ``Report._repr_html_`` / ``Trend._repr_html_`` (tables only: no figure is drawn)

_NOTEBOOK_CSS = (".sninspect table { border-collapse: collapse; font-size: 0.9em; } "
                 ".sninspect th, .sninspect td { padding: 2px 8px; text-align: right; white-space: nowrap; } "
                 ".sninspect td.l, .sninspect th.l { text-align: left; } "
                 ".sninspect .above, .sninspect .err { color: #c0392b; font-weight: 600; } "
                 ".sninspect .warn, .sninspect .absent { color: #b7791f; } .sninspect .ok { color: #2e7d32; } "
                 ".sninspect .assume { color: #666; }")


def notebook_html(result: Report | Trend) -> str:
    """The page's tables for a notebook cell: the layer table and summary of a report, or the run's
    summary and per-layer trend tables; styles scoped to the cell, no figure (``.plot()`` draws them)."""
    if isinstance(result, Trend):
        body = (f"<b>training run: {len(result.reports)} checkpoints ordered by {escape(result.order_by)}</b>"
                + html_table(tables.summary_table(result)) + html_table(tables.trend_table(result)))
    else:
        body = (f"<b>{escape(result.checkpoint)}</b> "
                f'<span class="assume">{escape(result.format)} · {escape(result.device)} · '
                f"{escape(result.dtype)}</span>" + html_table(tables.layer_table(result)) + _verdict(result))
    return f'<div class="sninspect"><style>{_NOTEBOOK_CSS}</style>{body}</div>'


# ----------------------------------------------------------------------------------------------
# ``graph``: the sandwich, the bound-by-depth figure, the blocks and the nodes


def graph_page(report: GraphReport) -> str:
    """The graph bound's page."""
    from sninspect.render.plots.graph import graph_depth_figure  # matplotlib: only when drawing

    figure = figure_data_uri(graph_depth_figure(report))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sninspect graph · {escape(report.file)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>sninspect graph · {escape(report.file)}</h1>",
        f'<p class="meta">Lipschitz sandwich of an exported network, sninspect {escape(__version__)}</p>',
        html_table(tables.graph_summary(report)),
        f'<figure><img alt="bound by depth" src="{figure}"><figcaption>Upper bound of the Lipschitz '
        "constant from the input to each operator along the graph (log scale), with the certified lower "
        "bound and the chain product.</figcaption></figure>",
        "<h2>Blocks</h2>", html_table(tables.graph_blocks(report)),
        "<h2>Graph</h2>", '<div class="scroll">', html_table(tables.graph_nodes(report)),
        "</div>", f'<p class="assume">Covers: {escape(report.assumptions)}.</p>', "</body></html>",
    ]
    return "\n".join(parts) + "\n"
