"""Show reports: rich tables and a summary panel for the terminal; JSON, CSV and Markdown text.

Reads only ``report``; computes nothing beyond picking the worst values. What is highlighted is what
the report's ``verdict`` fields say (judged once, by ``check``'s rules): no threshold of its own.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sninspect.errors import option
from sninspect.render.bound_story import model_story
from sninspect.render.escape import for_terminal
from sninspect.render.fit import name_cell, name_limit
from sninspect.render.grouping import group_notes, group_warnings
from sninspect.results.check import Rule, Rules
from sninspect.results.report import (
    CHAINED_ORDER,
    NATURAL_ORDER,
    WIDTH_LADDER,
    LayerAudit,
    ModelAudit,
    Report,
    bound_not_computed,
    verdict_text,
)

REL_NOISE_ULPS = 8
"""A relative error within this many units of the working precision's resolution is rounding noise
(σ̂ and σ1 agree to the last bits): printed as 0."""


def fmt(value: float | None, digits: int = 6) -> str:
    """A number for a table cell: ``-`` for None, compact scientific for tiny or huge values."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def fmt_rel(value: float | None, dtype: str = "float64") -> str:
    """A relative error to the digits it holds: ``0`` when it is within :data:`REL_NOISE_ULPS` units of
    ``dtype``'s resolution (the last bits of two equal numbers), else :func:`fmt` to 3 digits."""
    if value is not None and math.isfinite(value) and abs(value) <= REL_NOISE_ULPS * _EPS.get(dtype, _EPS["float64"]):
        return "0"
    return fmt(value, 3)


_EPS = {"float64": 2.0**-52, "float32": 2.0**-23}


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


def fmt_sized(value: float | None, width: float | None, digits: int = 6) -> str:
    """A number that is the certified lower end L of a bracket [L, L·(1 + ``width``)] (a conv norm at a
    size): the most significant digits, up to ``digits``, on which both ends round alike — so the digits
    shown hold for every value in the bracket — with trailing zeros kept (they are digits too); where
    not even one digit is shared, the bracket itself. ``width`` None: :func:`fmt`."""
    if value is None or width is None or not math.isfinite(value) or not math.isfinite(width) or value == 0:
        return fmt(value, digits)
    upper = value * (1.0 + max(width, 0.0))
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        for d in range(digits, 0, -1):
            if f"{value:.{d - 1}e}" == f"{upper:.{d - 1}e}":
                return f"{value:.{d - 1}e}"
    else:
        for d in range(digits, 0, -1):
            low, high = f"{value:#.{d}g}", f"{upper:#.{d}g}"
            if low == high and "e" not in low:
                return low.rstrip(".")
    return f"[{fmt(value, 3)}, {fmt(upper, 3)}]"


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


def _worst_cos(layers: Sequence[LayerAudit], gap: bool = True) -> tuple[LayerAudit, float] | None:
    """The largest gap-aware (``gap``) or raw cosine error and its layer."""
    best: tuple[LayerAudit, float] | None = None
    for la in layers:
        pair = (la.gap_cos_error_u, la.gap_cos_error_v) if gap else (la.cos_error_u, la.cos_error_v)
        for value in pair:
            if value is not None and math.isfinite(value) and (best is None or value > best[1]):
                best = (la, value)
    return best


# ----------------------------------------------------------------------------------------------
# The verdict: the same lines in the terminal panel, Markdown and HTML


def order_text(report: Report) -> str:
    """Which order the layers (and the network chain) are in: ``Report.layer_order`` in words."""
    if report.layer_order == NATURAL_ORDER:
        return "layers in natural name order (main.2 before main.10; safetensors does not store module order)"
    if report.layer_order == CHAINED_ORDER:
        return "layers ordered by chaining shapes (the stored order is not a forward chain)"
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


def widths_text(model: ModelAudit) -> str | None:
    """``certified widths ≤ 1% on 14 layers, ≤ 20% on 3, ≤ 101% on 3; --bound-tol 0.01 for 1% everywhere,
    about 62 s here``: each layer's ``operator_width`` counted under the smallest of the target and the
    wider rungs of ``WIDTH_LADDER`` at or above it; the finite widths above them all counted together
    under the widest of them, rounded up (an infinite one on its own); None where no layer has a bound."""
    bounds = model.bounds
    widths = [la.operator_width for la in model.layers if la.operator_width is not None]
    if bounds is None or not widths:
        return None
    levels = [bounds.target] + [w for w in WIDTH_LADDER if w > bounds.target]
    wider = [w for w in widths if w > levels[-1] and math.isfinite(w)]
    if wider:  # above the ladder (the cheap rung's brackets): one bucket, under the widest of them
        levels.append(_rounded_up(max(wider)))
    counts: dict[float, int] = {}
    for width in widths:
        level = next((lv for lv in levels if width <= lv), _rounded_up(width))
        counts[level] = counts.get(level, 0) + 1
    whole = len(counts) == 1
    text = "certified widths " + ", ".join(
        f"≤ {percent(level)} on {'all ' if whole and n > 1 else ''}{n} layer{'s' if n > 1 else ''}"
        for level, n in sorted(counts.items()))
    if not bounds.budgeted:
        return text + f" ({option('bound_tol', f'{bounds.target:g}')})"
    if max(counts) > bounds.target:
        text += f"; {option('bound_tol', f'{bounds.target:g}')} for {percent(bounds.target)} everywhere"
        if bounds.seconds_at_target is not None:
            text += f", about {bounds.seconds_at_target:.0f} s here"
    return text


def percent(width: float) -> str:
    """0.01 → ``1%``, 0.005 → ``0.5%``."""
    return "∞%" if math.isinf(width) else f"{100 * width:.3g}%"


def _rounded_up(width: float) -> float:
    """``width`` rounded up to two significant digits, or to a whole percent above 10% (a bucket that still
    bounds it: 1.0063 is ≤ 101%, not ≤ 110%)."""
    if not math.isfinite(width) or width <= 0.0:
        return width
    step = min(0.01, 10.0 ** (math.floor(math.log10(width)) - 1))
    return math.ceil(width / step) * step


def verdict_lines(report: Report) -> list[tuple[str, str]]:
    """(line, style) pairs: layer counts, worst σ_eff and cosine error with their layers, layers above 1,
    network bounds, what they assume, warnings and the layer notes. Styles: ``red``, ``yellow``,
    ``green``, ``dim`` or ``""``."""
    layers = report.layers
    sn = [la for la in layers if la.has_sn and la.error is None]
    errors = [la for la in layers if la.error is not None]
    lines = [(f"layers: {len(layers)} shown ({len(sn)} with SN, {len(layers) - len(sn) - len(errors)} without, "
              f"{len(errors)} not audited) in {len(report.models)} model(s)", "")]
    rules = report.rules
    if rules is not None and report.verdict is not None:
        lines.append(check_line(report, rules))
    worst_eff = _worst(sn, "sigma_effective")
    if worst_eff is not None:
        above = [la for la in sn if la.breaks(Rule.max_sigma)]
        lines.append((f"worst σ_eff: {fmt_sized(worst_eff.sigma_effective, worst_eff.bracket_width)} "
                       f"({worst_eff.name})",
                      "red" if above else "green"))
        if above and rules is not None:
            limit = "off" if rules.max_sigma is None else f"{rules.max_sigma:g}"
            lines.append((f"layers above the limit (max_sigma {limit}, or σ̂ ≤ 0): {len(above)} of {len(sn)}",
                          "red"))
    strict = rules is not None and rules.strict_cos
    worst_cos = _worst_cos(sn, gap=not strict)
    if worst_cos is not None:
        la, value = worst_cos
        unconverged = any(x.breaks(Rule.max_cos_error) for x in sn)
        if strict:
            text = f"worst raw cosine error: {fmt(value, 3)} ({la.name})"
        else:
            raw = max(x for x in (la.cos_error_u, la.cos_error_v) if x is not None)
            text = (f"worst gap-aware cosine error: {fmt(value, 3)} ({la.name}; raw cosine error {fmt(raw, 3)} "
                    f"at σ2/σ1 = {fmt(la.spectral_gap, 4)})")
        lines.append((text, "yellow" if unconverged else "green"))
    for model in report.models:
        label = f"[{model.name}] " if model.name and len(report.models) > 1 else ""
        lines.append((f"{label}network bound: {bound_text(model)}",
                      "red" if model.lipschitz.unavailable else ""))
        lines += [(label + line, style) for line, style in model_story(model)]
        widths = widths_text(model)
        if widths is not None:
            lines.append((f"{label}{widths}", ""))
    lines.append((f"valid for: {report.primary.lipschitz.assumptions}", "dim"))
    lines += [(f"warning: {warning}", "yellow") for warning in group_warnings(report.all_warnings)]
    lines += [(f"note: {note}", "dim") for note in layer_notes(report)]
    return lines


def rules_text(rules: Rules) -> str:
    """``max_sigma 1.1, max_cos_error 0.05 (gap-aware), max_norm_error 0.01``: the rules in force."""
    def limit(value: float | None) -> str:
        return "off" if value is None else f"{value:g}"

    parts = [f"max_sigma {limit(rules.max_sigma)}",
             f"max_cos_error {limit(rules.max_cos_error)} ({'raw' if rules.strict_cos else 'gap-aware'})",
             f"max_norm_error {limit(rules.max_norm_error)}"]
    if rules.max_lipschitz is not None:
        parts.append(f"max_lipschitz {limit(rules.max_lipschitz)}")
    if rules.fail_on_warning:
        parts.append("fail_on_warning")
    return ", ".join(parts)


def check_line(report: Report, rules: Rules) -> tuple[str, str]:
    """The verdict ``check`` gives this report, with the rules and how many layers break each."""
    judged = [la for la in report.layers if la.verdict is not None]
    flagged = [la for la in judged if la.flagged]
    head = f"check ({rules_text(rules)}): "
    if not report.verdict:
        return head + f"every rule holds ({len(judged)} layers judged)", "green"
    counts = {rule: sum(rule in (la.verdict or ()) for la in flagged) for rule in report.verdict}
    parts = []
    if flagged:
        broken = ", ".join(f"{rule} {n}" for rule, n in counts.items() if n)
        parts.append(f"{len(flagged)} of {len(judged)} layers judged break a rule ({broken})")
    parts += [f"{rule}: {_CHECKPOINT_RULES.get(rule, 'broken')}" for rule, n in counts.items() if not n]
    return head + "; ".join(parts), "red"


_CHECKPOINT_RULES = {
    Rule.no_sn_layers.value: "no SN layer found, nothing to judge",
    Rule.max_lipschitz.value: "the certified operator product is above the limit (or not available)",
    Rule.warning.value: "the report has warnings (fail_on_warning)",
}
"""What a broken checkpoint-wide rule means, for the summary line."""


def layer_notes(report: Report) -> list[str]:
    """Each distinct layer note once, with the layers it is about (dim choice, size used, ...); notes
    that differ only in their measured numbers are one line (:mod:`sninspect.render.grouping`)."""
    return group_notes((note, la.name) for la in report.layers for note in la.notes)


# ----------------------------------------------------------------------------------------------
# Terminal

_DESCRIPTIVE = ("dialect", "kind", "shape")
_NUMBERS = ("σ exact", "σ̂", "rel err", "σ eff", "cos err u", "gap cos u", "cos err v", "gap cos v", "σ2/σ1",
            "op bound")
VERDICT = "verdict"
"""The last column: ``ok``, the rules the layer breaks, or ``-`` (not judged: no SN)."""
HIDE_ORDER = ("kind", "dialect", "shape", "σ2/σ1", "rel err", "cos err v", "cos err u", "σ̂", "op bound",
              "gap cos v", "gap cos u", "σ exact")
"""On a narrow console, whole columns go in this order until the table fits; the layer name, σ eff and
the verdict always stay (``--format markdown`` or ``json`` give everything). The raw cosine errors go
before the gap-aware ones ``check`` judges. Below about 30 columns lines are cut."""


def _cells(la: LayerAudit, rules: Rules | None, dtype: str, worst_eff: LayerAudit | None,
           worst_cos: tuple[LayerAudit, float] | None) -> dict[str, Text | str]:
    flag = "red" if la.flagged else ("dim" if la.verdict is None else "green")
    cells: dict[str, Text | str] = {"dialect": la.dialect, "kind": la.kind, "shape": shape_text(la.shape),
                                    VERDICT: Text(verdict_text(la.verdict), style=flag)}
    if la.error is not None:
        return cells | dict.fromkeys(_NUMBERS, "-")
    above = la.breaks(Rule.max_sigma)
    eff_style = "red" if above else ""
    if la is worst_eff and la.has_sn:
        eff_style += " bold"
    over = cos_over(la, rules)
    for title, quantity in (("cos err u", "cos_error_u"), ("cos err v", "cos_error_v"),
                            ("gap cos u", "gap_cos_error_u"), ("gap cos v", "gap_cos_error_v")):
        value = getattr(la, quantity)
        style = "yellow" if over[quantity] else ""
        if worst_cos is not None and la is worst_cos[0] and value == worst_cos[1]:
            style += " bold"
        cells[title] = Text(fmt(value, 3), style=style.strip())
    return cells | {
        "σ exact": fmt_sized(la.sigma_exact, la.bracket_width),
        "σ̂": fmt(la.sigma_estimate),
        "rel err": Text(fmt_rel(la.sigma_rel_error, dtype), style="red" if above else ""),
        "σ eff": Text(fmt_sized(la.sigma_effective, la.bracket_width), style=eff_style.strip()),
        "σ2/σ1": fmt(la.spectral_gap, 4),
        "op bound": bound_cell(la),
    }


def _build_table(report: Report, hidden: Sequence[str], width: int) -> Table:
    layers = report.layers
    table = Table(box=box.SIMPLE_HEAVY, title=for_terminal(f"sninspect · {report.checkpoint}"), title_justify="left",
                  caption=f"{report.format} · {report.device} · {report.dtype} · {order_text(report)}",
                  caption_justify="left")
    # The name breaks between its parts onto more lines rather than lose a character (or take more
    # than a third of the width from the numbers); it is never hidden.
    limit = name_limit([la.name for la in layers], width)
    table.add_column("layer", overflow="fold", min_width=min(limit, 16), max_width=limit)
    shown = [t for t in (*_DESCRIPTIVE, *_NUMBERS) if t not in hidden]
    for title in shown:  # no_wrap: a cell that does not fit ends in "…", never silently cut
        table.add_column(title, justify="left" if title in _DESCRIPTIVE else "right", no_wrap=True,
                         overflow="ellipsis")
    table.add_column(VERDICT, justify="left", no_wrap=True)
    worst_eff = _worst(layers, "sigma_effective")
    worst_cos = _worst_cos(layers, gap=not (report.rules is not None and report.rules.strict_cos))
    for la in layers:
        cells = _cells(la, report.rules, report.dtype, worst_eff, worst_cos)
        table.add_row(name_cell(la.name, limit), *(cells[t] for t in shown), cells[VERDICT])
        if la.error is not None:  # its own row: the whole reason, folded under the name
            table.add_row(for_terminal(f"↳ not audited: {la.error}", "bold red"), *([""] * (len(shown) + 1)))
    return table


def layer_table(report: Report, width: int = 200, console: Console | None = None) -> tuple[Table, list[str]]:
    """The per-layer table and the columns hidden to fit ``width``; what the layer's verdict says it
    breaks in red (σ_eff, the verdict) or yellow (the cosine error judged), the worst in bold."""
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
    return Text(f"hidden at {width} columns: {', '.join(hidden)} (-f markdown shows them)", style="dim")


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
    width = min(console.measure(table).maximum, console.width)
    table.title = name_cell(f"sninspect · {report.checkpoint}", width)  # a long path breaks at its "/"
    console.print(table)
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


def number_cells(la: LayerAudit, dtype: str) -> list[str]:
    """The texts of the number columns (``_NUMBERS``) of an audited layer, in order (Markdown, HTML)."""
    return [fmt_sized(la.sigma_exact, la.bracket_width), fmt(la.sigma_estimate), fmt_rel(la.sigma_rel_error, dtype),
            fmt_sized(la.sigma_effective, la.bracket_width),
            fmt(la.cos_error_u, 3), fmt(la.gap_cos_error_u, 3), fmt(la.cos_error_v, 3), fmt(la.gap_cos_error_v, 3),
            fmt(la.spectral_gap, 4), bound_cell(la)]


NUMBER_COLUMNS = _NUMBERS
"""The titles of the number columns, in the order of :func:`number_cells`."""
