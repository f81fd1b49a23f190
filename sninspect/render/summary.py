"""The verdict in words: the same lines in the terminal's summary panel, Markdown and HTML.

Reads only the report; computes nothing beyond picking the worst values. What is highlighted is what
the report's ``verdict`` fields say (judged once, by ``check``'s rules): no threshold of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sninspect.errors import option
from sninspect.render.bound_story import model_story
from sninspect.render.grouping import group_notes, group_warnings
from sninspect.render.numbers import NOT_COMPUTED, fmt, fmt_sized, percent
from sninspect.results.check import Rule, Rules
from sninspect.results.report import (
    CHAINED_ORDER,
    NATURAL_ORDER,
    WIDTH_LADDER,
    LayerAudit,
    ModelAudit,
    Report,
    bound_not_computed,
)
from sninspect.results.trend import Separate


def worst(layers: Sequence[LayerAudit], attr: str) -> LayerAudit | None:
    candidates = [la for la in layers if getattr(la, attr) is not None and math.isfinite(getattr(la, attr))]
    return max(candidates, key=lambda la: getattr(la, attr)) if candidates else None


def worst_cos(layers: Sequence[LayerAudit], gap: bool = True) -> tuple[LayerAudit, float] | None:
    """The largest gap-aware (``gap``) or raw cosine error and its layer."""
    best: tuple[LayerAudit, float] | None = None
    for la in layers:
        pair = (la.gap_cos_error_u, la.gap_cos_error_v) if gap else (la.cos_error_u, la.cos_error_v)
        for value in pair:
            if value is not None and math.isfinite(value) and (best is None or value > best[1]):
                best = (la, value)
    return best


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
    worst_eff = worst(sn, "sigma_effective")
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
    top_cos = worst_cos(sn, gap=not strict)
    if top_cos is not None:
        la, value = top_cos
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


def separate_line(result: Separate) -> str:
    """The line that says why several checkpoints are reported one by one."""
    return f"{len(result.reports)} checkpoints, each reported on its own: {result.why}"
