"""One table model for every format: the terminal (rich), Markdown, HTML, CSV and plain text all read
the same :class:`Table` — its columns, its cells as strings (the digits rule of
:mod:`sninspect.render.numbers`) and what each cell marks — and differ only in syntax.

The builders here make the tables of each result: a report's layers, a run's summary and per-layer
trend, the graph bound's summary, blocks and nodes, the ``layers`` inventory and the column legend.
A mark says why a cell stands out (what the verdict says it breaks), never how: the terminal shows
:data:`ABOVE` red, HTML as ``class="above"``; Markdown and CSV show none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

from sninspect.render.legend import COLUMNS as LEGEND_COLUMNS
from sninspect.render.numbers import bound_cell, fmt, fmt_rel, fmt_sized, plain, shape_text
from sninspect.render.summary import order_text, worst, worst_cos
from sninspect.results.check import Rule, Rules
from sninspect.results.graph import GraphReport
from sninspect.results.report import LayerAudit, Report, verdict_text
from sninspect.results.trend import MODIFICATION_TIME, Trend

if TYPE_CHECKING:
    from sninspect.audit.layers.inventory import LayerInfo

ABOVE = "above"
"""A number that breaks a rule (σ_eff over ``max_sigma``), a verdict that names broken rules."""
WARN = "warn"
"""A cosine error over ``max_cos_error``; a layer missing from some checkpoints of a run."""
OK = "ok"
"""A verdict with every rule holding."""
DIM = "dim"
"""Not judged (a layer without SN)."""
ERROR = "error"
"""A count of layers that could not be audited."""
ABSENT = "absent"
"""A row mark: a layer missing from some checkpoints of a run."""


@dataclass(frozen=True)
class Column:
    """A column: its title, how it aligns, whether it holds names or code."""

    title: str
    right: bool = False
    """Right-aligned (numbers)."""
    name_floor: int | None = None
    """A name column: its names break between their parts, never hidden; the terminal gives it at
    least this many cells (or the longest name). None: not a name column."""
    min_width: bool = False
    """The terminal keeps the column at least 16 cells wide (or its widest name)."""
    code: bool = False
    """The cells are code (JSON field names)."""


@dataclass(frozen=True)
class Cell:
    text: str
    mark: str = ""
    """Why it stands out: :data:`ABOVE`, :data:`WARN`, :data:`OK`, :data:`DIM`, :data:`ERROR` or ``""``."""
    strong: bool = False
    """The worst value of its column (bold in the terminal)."""


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    note: str | None = None
    """Why the row's numbers are missing (a layer not audited), shown whole under or across them."""
    mark: str = ""
    """A mark of the whole row (:data:`ABSENT`)."""


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    title: str = ""
    caption: str | None = None
    hide_order: tuple[str, ...] = ()
    """On a narrow console whole columns go in this order until the table fits."""

    @property
    def header(self) -> tuple[str, ...]:
        return tuple(c.title for c in self.columns)

    def texts(self) -> list[tuple[str, ...]]:
        """Every row's cell texts."""
        return [tuple(cell.text for cell in row.cells) for row in self.rows]


def _cells(*texts: str) -> tuple[Cell, ...]:
    return tuple(Cell(t) for t in texts)


# ----------------------------------------------------------------------------------------------
# A report's layers

DESCRIPTIVE = ("dialect", "kind", "shape")
NUMBER_COLUMNS = ("σ exact", "σ̂", "rel err", "σ eff", "cos err u", "gap cos u", "cos err v", "gap cos v", "σ2/σ1",
                  "op bound")
VERDICT = "verdict"
"""The last column: ``ok``, the rules the layer breaks, or ``-`` (not judged: no SN)."""
LAYER_HIDE = ("kind", "dialect", "shape", "σ2/σ1", "rel err", "cos err v", "cos err u", "σ̂", "op bound",
              "gap cos v", "gap cos u", "σ exact")
"""On a narrow console, whole columns go in this order until the table fits; the layer name, σ eff and
the verdict always stay (``--format markdown`` or ``json`` give everything). The raw cosine errors go
before the gap-aware ones ``check`` judges. Below about 30 columns lines are cut."""


def cos_over(la: LayerAudit, rules: Rules | None) -> dict[str, bool]:
    """Which of the layer's four cosine numbers broke ``max_cos_error`` (``cos_error_u``, ...,
    ``gap_cos_error_v``): only where its verdict says the rule is broken, the number that rule judged."""
    out = dict.fromkeys(("cos_error_u", "cos_error_v", "gap_cos_error_u", "gap_cos_error_v"), False)
    if rules is None or rules.max_cos_error is None or not la.breaks(Rule.max_cos_error):
        return out
    for side in ("u", "v"):
        judged = f"cos_error_{side}" if rules.strict_cos else f"gap_cos_error_{side}"
        value = getattr(la, judged)
        out[judged] = value is not None and value > rules.max_cos_error
    return out


def layer_table(report: Report) -> Table:
    """One row per layer: what its verdict says it breaks marked (σ_eff, the verdict: :data:`ABOVE`;
    the cosine error judged: :data:`WARN`), the worst σ_eff and cosine error strong."""
    columns = (Column("layer", name_floor=16, min_width=True), *(Column(t) for t in DESCRIPTIVE),
               *(Column(t, right=True) for t in NUMBER_COLUMNS), Column(VERDICT))
    worst_eff = worst(report.layers, "sigma_effective")
    top_cos = worst_cos(report.layers, gap=not (report.rules is not None and report.rules.strict_cos))
    rows = []
    for la in report.layers:
        mark = ABOVE if la.flagged else (DIM if la.verdict is None else OK)
        cells = (*_cells(la.name, la.dialect, la.kind, shape_text(la.shape)),
                 *_number_cells(la, report, worst_eff, top_cos), Cell(verdict_text(la.verdict), mark))
        rows.append(Row(cells, note=la.error))
    return Table(tuple(columns), tuple(rows), title=f"sninspect · {report.checkpoint}",
                 caption=f"{report.format} · {report.device} · {report.dtype} · {order_text(report)}",
                 hide_order=LAYER_HIDE)


def _number_cells(la: LayerAudit, report: Report, worst_eff: LayerAudit | None,
                  top_cos: tuple[LayerAudit, float] | None) -> tuple[Cell, ...]:
    if la.error is not None:
        return _cells(*["-"] * len(NUMBER_COLUMNS))
    above = ABOVE if la.breaks(Rule.max_sigma) else ""
    over = cos_over(la, report.rules)

    def cos(quantity: str) -> Cell:
        value = getattr(la, quantity)
        strong = top_cos is not None and la is top_cos[0] and value == top_cos[1]
        return Cell(fmt(value, 3), WARN if over[quantity] else "", strong)

    return (Cell(fmt_sized(la.sigma_exact, la.bracket_width)), Cell(fmt(la.sigma_estimate)),
            Cell(fmt_rel(la.sigma_rel_error, report.dtype), above),
            Cell(fmt_sized(la.sigma_effective, la.bracket_width), above, la is worst_eff and la.has_sn),
            cos("cos_error_u"), cos("gap_cos_error_u"), cos("cos_error_v"), cos("gap_cos_error_v"),
            Cell(fmt(la.spectral_gap, 4)), Cell(bound_cell(la)))


# ----------------------------------------------------------------------------------------------
# A training run

SUMMARY_HIDE = ("in layer", "layers", "errors", "∏ σ eff", "step")
"""On a narrow console the summary table's columns go in this order (never the checkpoint's name)."""
TREND_HIDE = ("in", "σ eff first", "gap cos first", "gap cos last", "gap cos max (at)", "σ eff max (at)")
"""On a narrow console the trend table's columns go in this order (never the layer's name)."""


def summary_table(trend: Trend) -> Table:
    """One row per checkpoint: name, step, layers, worst σ_eff and its layer, worst gap-aware cosine
    error and its layer, ∏σ_eff, certified ∏, layers not audited, the rules ``check`` finds broken
    (marked as the report's verdict says: no threshold of its own)."""
    columns = (Column("checkpoint", name_floor=16), Column("step", right=True), Column("layers", right=True),
               Column("worst σ eff", right=True), Column("in layer", name_floor=10),
               Column("worst gap cos", right=True), Column("in layer", name_floor=10),
               *(Column(t, right=True) for t in ("∏ σ eff", "certified ∏", "errors", "verdict")))
    rows = []
    for s in trend.summary:
        broken = s.verdict or ()
        rows.append(Row((
            Cell(PurePath(s.checkpoint).name), Cell(step_text(s.step, trend)), Cell(str(s.layers)),
            Cell(fmt(s.worst_sigma_effective), ABOVE if Rule.max_sigma in broken else ""),
            Cell(s.worst_sigma_layer or "-"),
            Cell(fmt(s.worst_gap_cos_error, 3), WARN if Rule.max_cos_error in broken else ""),
            Cell(s.worst_gap_cos_layer or "-"), Cell(fmt(s.matrix_product)), Cell(fmt(s.operator_product)),
            Cell(str(s.not_audited), ERROR if s.not_audited else ""),
            Cell("-" if s.verdict is None else ", ".join(s.verdict) or "ok", ABOVE if broken else OK))))
    return Table(columns, tuple(rows), hide_order=SUMMARY_HIDE,
                 title=f"training run · {len(trend.reports)} checkpoints ordered by {trend.order_by}")


def trend_table(trend: Trend) -> Table:
    """One row per layer: present in k/n checkpoints, σ_eff and gap-aware cosine error first, last, worst."""
    columns = (Column("layer", name_floor=16, min_width=True), Column("in", right=True),
               *(Column(t, right=True) for t in ("σ eff first", "σ eff last", "σ eff max (at)", "gap cos first",
                                                 "gap cos last", "gap cos max (at)")))
    rows = []
    for series in trend.layers:
        present = all(series.present)
        eff = _first_last_max(series.sigma_effective, trend, digits=6)
        cos = _first_last_max(series.gap_cos_error, trend, digits=3)
        rows.append(Row((
            Cell(series.name), Cell(f"{sum(series.present)}/{len(series.present)}", "" if present else WARN),
            Cell(eff[0]), Cell(eff[1], ABOVE if series.breaks_last(Rule.max_sigma) else ""), Cell(eff[2]),
            Cell(cos[0]), Cell(cos[1], WARN if series.breaks_last(Rule.max_cos_error) else ""), Cell(cos[2])),
            mark="" if present else ABSENT))
    return Table(columns, tuple(rows), title="per-layer trend", hide_order=TREND_HIDE)


def step_text(step: float, trend: Trend) -> str:
    if trend.order_by == MODIFICATION_TIME:
        return "-"
    return str(int(step)) if float(step).is_integer() else f"{step:g}"


def _first_last_max(values: Sequence[float | None], trend: Trend, digits: int) -> list[str]:
    known = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not known:
        return ["-", "-", "-"]
    top, at = max(known)
    where = PurePath(trend.checkpoints[at]).name if trend.order_by == MODIFICATION_TIME \
        else step_text(trend.steps[at], trend)
    return [fmt(known[0][0], digits), fmt(known[-1][0], digits), f"{fmt(top, digits)} ({where})"]


# ----------------------------------------------------------------------------------------------
# The graph bound


def graph_summary(report: GraphReport) -> Table:
    """The sandwich: (quantity, value) rows."""
    emp = report.empirical
    rows = [("input shape", "x".join(map(str, report.input_shape))),
            ("upper bound (certified, graph rules)", plain(report.upper)),
            ("lower bound (certified, best input pair)", plain(report.lower) if emp else "skipped"),
            ("upper / lower", plain(report.ratio)),
            ("chain product of per-layer bounds", plain(report.chain_product)),
            ("chain product / upper", plain(report.chain_over_upper))]
    if emp is not None:
        rows += [("best ‖J(x)v‖ (power iteration)", plain(emp.jacobian)),
                 ("search", f"{emp.starts} starts x {emp.steps} ascent steps, best: {emp.best_start}, "
                            f"{emp.seconds:.1f} s")]
    rows.append(("upper bound time", f"{report.seconds:.1f} s"))
    return Table((Column("quantity"), Column("value", right=True)), tuple(Row(_cells(*r)) for r in rows))


def graph_blocks(report: GraphReport) -> Table:
    """Top-level modules: the bound entering and leaving each, and their ratio."""
    columns = (Column("block", name_floor=8), *(Column(t, right=True) for t in ("bound in", "bound out", "factor")))
    rows = [Row(_cells(b.module, plain(b.bound_in), plain(b.bound_out), plain(b.factor))) for b in report.blocks]
    return Table(columns, tuple(rows), hide_order=("factor", "bound in"))


def graph_nodes(report: GraphReport) -> Table:
    """Each operator on the input's path, its rule, and the bound up to it."""
    columns = (Column("depth", right=True), Column("node", name_floor=8), Column("module", name_floor=8),
               Column("rule", name_floor=8), Column("factor", right=True), Column("bound", right=True))
    rows = [Row(_cells(str(n.depth), n.name, n.module or "-", n.rule, plain(n.factor), plain(n.bound)))
            for n in report.nodes]
    return Table(columns, tuple(rows), hide_order=("module", "depth", "factor"))


# ----------------------------------------------------------------------------------------------
# The ``layers`` inventory and the column legend

INVENTORY_HIDE = ("SN keys", "dtype", "dim", "kind", "shape")
"""On a narrow console whole columns go in this order; the layer name and its dialect always stay."""


def inventory_table(title: str, rows: Sequence[LayerInfo]) -> Table:
    """One row per layer: name, dialect, kind, shape, SN dim, dtype and the SN keys found."""
    columns = (Column("layer", name_floor=16),
               *(Column(t) for t in ("dialect", "kind", "shape", "dim", "dtype", "SN keys")))
    cells = [Row(_cells(row.name, row.dialect, row.kind, shape_text(row.shape),
                        "-" if row.dim is None else str(row.dim), row.dtype, ", ".join(row.sn_keys))) for row in rows]
    return Table(columns, tuple(cells), title=title, hide_order=INVENTORY_HIDE)


def legend_table() -> Table:
    """What each column of the layer table means: its title, JSON field and meaning."""
    return Table((Column("column"), Column("JSON field", code=True), Column("meaning")),
                 tuple(Row(_cells(*entry)) for entry in LEGEND_COLUMNS))
