"""``report --format html``: one self-contained page a person can open offline and share.

Everything is inside the file: the CSS in a ``<style>`` element, every figure a PNG ``data:`` URI, no
script, no link to anything outside. Reads ``report`` and ``trend``; the figures come from
:mod:`sninspect.render.plots`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

from sninspect._version import __version__
from sninspect.render.escape import for_html as escape
from sninspect.render.report import (
    COS_TOLERANCE,
    SIGMA_TOLERANCE,
    bound_cell,
    fmt,
    order_text,
    shape_text,
    verdict_lines,
)
from sninspect.render.run_view import SUMMARY_HEADER, SUMMARY_LEFT, TREND_HEADER, summary_rows, trend_rows
from sninspect.results.report import LayerAudit, Report
from sninspect.results.trend import Trend

if TYPE_CHECKING:  # matplotlib is imported where figures are drawn: the notebook table draws none
    from matplotlib.figure import Figure

DPI = 90
"""Resolution of the embedded PNGs (sharp on screen, a few hundred kB per checkpoint)."""

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

_LAYER_HEADER = ("layer", "dialect", "kind", "shape", "σ exact", "σ̂", "rel err", "σ eff", "cos err u",
                 "cos err v", "σ2/σ1", "op bound")

_CAPTIONS = {
    "sigma": "Exact σ1 and the stored estimate σ̂ of each layer; below, σ_eff = σ1/σ̂ against 1 "
             "(red: the layer runs above 1).",
    "cos_error": "1 − |cos| between the stored u, v and the exact top singular vectors (log scale); "
                 "above the dashed tolerance the power iteration has not converged.",
    "spectra": "Singular values divided by σ1 (log scale).",
    "lipschitz_depth": "Running product of the per-layer bounds by depth (log scale).",
    "trend_sigma": "σ_eff of each layer over the run; the dashed line is 1.",
    "trend_cos_error": "The worse of the u/v cosine errors of each layer over the run (log scale).",
}


def to_html(result: Report | Trend, *, on_checkpoint: Callable[[str], None] | None = None) -> str:
    """The page for one checkpoint, or for a training run. ``on_checkpoint`` is called with each
    checkpoint's name once its figures are drawn (a progress hook)."""
    trend = result if isinstance(result, Trend) else None
    ordered = list(result.reports) if isinstance(result, Trend) else [result]
    title = (f"training run: {len(ordered)} checkpoints" if trend is not None
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
    if trend is not None:
        parts.append(_run_section(trend))
    for i, report in enumerate(ordered):
        section = _report_section(report, level=3 if trend is not None else 2)
        if trend is not None:
            opened = " open" if i == len(ordered) - 1 else ""
            section = (f'<details{opened}><summary>{escape(PurePath(report.checkpoint).name)}</summary>'
                       f"{section}</details>")
        parts.append(section)
        if on_checkpoint is not None:
            on_checkpoint(PurePath(report.checkpoint).name)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def figure_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """A PNG ``data:`` URI of the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------------------------


def _run_section(trend: Trend) -> str:
    from sninspect.render import plots

    out = [f"<h2>Training run: {len(trend.reports)} checkpoints ordered by {escape(trend.order_by)}</h2>",
           '<div class="scroll">', _table(SUMMARY_HEADER, summary_rows(trend), left=SUMMARY_LEFT), "</div>"]
    out += [_figure(name, fig) for name, fig in plots.trend_figures(trend).items()]
    out += ["<h3>Per-layer trend</h3>", '<div class="scroll">',
            _table(TREND_HEADER, trend_rows(trend), left={0},
                   row_class=["" if all(s.present) else "absent" for s in trend.layers]), "</div>"]
    if trend.changes:
        items = "".join(f"<li>{escape(c)}</li>" for c in trend.changes)
        out.append(f'<ul class="warnings">{items}</ul>')
    return "<section>" + "\n".join(out) + "</section>"


def _report_section(report: Report, *, level: int) -> str:
    from sninspect.render import plots

    name = PurePath(report.checkpoint).name
    extras = ", ".join(f"{k} {v}" for k, v in report.extras.items() if not isinstance(v, str))
    out = [f"<h{level}>{escape(name)}</h{level}>",
           f'<p class="meta">{escape(report.checkpoint)} · {escape(report.format)} · device '
           f"{escape(report.device)} · {escape(report.dtype)}{' · ' + escape(extras) if extras else ''} · "
           f"{escape(order_text(report))}</p>",
           '<div class="scroll">', _layer_table(report.layers), "</div>"]
    out.append(_verdict(report))
    out += [_figure(key, fig) for key, fig in plots.report_figures(report).items()]
    return "<section>" + "\n".join(out) + "</section>"


def _verdict(report: Report) -> str:
    """The terminal's summary panel: the same lines (:func:`verdict_lines`), coloured the same way."""
    items = "".join(f'<li class="{_STYLE_CLASS[style]}">{escape(line)}</li>' if _STYLE_CLASS.get(style)
                    else f"<li>{escape(line)}</li>" for line, style in verdict_lines(report))
    return f'<div class="verdict"><b>Summary</b><ul>{items}</ul></div>'


_STYLE_CLASS = {"red": "above", "yellow": "warn", "green": "ok", "dim": "assume"}


def _layer_table(layers: Sequence[LayerAudit]) -> str:
    head = "".join(f'<th class="l">{escape(h)}</th>' if i < 4 else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(_LAYER_HEADER))
    rows = []
    for la in layers:
        cells = [f'<td class="l">{escape(text)}</td>' for text in (la.name, la.dialect, la.kind,
                                                                   shape_text(la.shape))]
        if la.error is not None:
            cells.append(f'<td class="l err" colspan="8">not audited: {escape(la.error)}</td>')
        else:
            above = la.has_sn and (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE
            under = la.sigma_rel_error is not None and la.sigma_rel_error < -SIGMA_TOLERANCE
            cells += [
                _td(fmt(la.sigma_exact)), _td(fmt(la.sigma_estimate)),
                _td(fmt(la.sigma_rel_error, 3), "above" if under else ""),
                _td(fmt(la.sigma_effective), "above" if above else ""),
                _td(fmt(la.cos_error_u, 3), _cos_class(la.cos_error_u)),
                _td(fmt(la.cos_error_v, 3), _cos_class(la.cos_error_v)),
                _td(fmt(la.spectral_gap, 4)), _td(bound_cell(la)),
            ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: set[int],
           row_class: Sequence[str] | None = None) -> str:
    head = "".join(f'<th class="l">{escape(h)}</th>' if i in left else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        klass = row_class[r] if row_class else ""
        cells = "".join(f'<td class="l">{escape(c)}</td>' if i in left else f"<td>{escape(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _td(text: str, klass: str = "") -> str:
    return f'<td class="{klass}">{escape(text)}</td>' if klass else f"<td>{escape(text)}</td>"


def _cos_class(value: float | None) -> str:
    return "warn" if value is not None and math.isfinite(value) and value > COS_TOLERANCE else ""


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
                + _table(SUMMARY_HEADER, summary_rows(result), left=SUMMARY_LEFT)
                + _table(TREND_HEADER, trend_rows(result), left={0},
                         row_class=["" if all(s.present) else "absent" for s in result.layers]))
    else:
        body = (f"<b>{escape(result.checkpoint)}</b> "
                f'<span class="assume">{escape(result.format)} · {escape(result.device)} · '
                f"{escape(result.dtype)}</span>" + _layer_table(result.layers) + _verdict(result))
    return f'<div class="sninspect"><style>{_NOTEBOOK_CSS}</style>{body}</div>'
