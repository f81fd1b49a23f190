"""The four figures of one checkpoint: σ per layer, cosine errors, singular value spectra, the
Lipschitz bound by depth."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure, FigureBase
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from sninspect.render.plots.layout import (
    ABOVE,
    BELOW,
    DEEP,
    ESTIMATE_COLOR,
    ONE,
    PLAIN,
    SMALL_MULTIPLES,
    U_COLOR,
    V_COLOR,
    as_array,
    center_on_one,
    colormap,
    deep_height,
    flagged_handle,
    label_values,
    layer_axis,
    left_out_line,
    log_axis,
    mark_flagged,
    model_groups,
    new_figure,
    note,
    nothing_drawn,
    panels,
    place_legend,
    plot_points,
    rules_of,
    say_nothing,
    set_value_scale,
    short_names,
    short_number,
    suptitle,
    wide_width,
)
from sninspect.results.check import Rule, Rules
from sninspect.results.report import LayerAudit, ModelAudit, Report

REL_ERROR_LABEL = "(σ̂ − σ1) / σ1"
"""The label of the relative-error series of the σ figure."""


def report_figures(report: Report) -> dict[str, Figure]:
    """The four figures of one checkpoint, by file stem: sigma, cos_error, spectra, lipschitz_depth.
    Limits and red marks are the report's rules and verdicts (``Report.rules``, ``LayerAudit.verdict``)."""
    return {
        "sigma": sigma_figure(report),
        "cos_error": cos_error_figure(report),
        "spectra": spectra_figure(report),
        "lipschitz_depth": lipschitz_figure(report),
    }

def sigma_figure(report: Report) -> Figure:
    """Per model with SN layers (one panel each): the relative error (σ̂ − σ1)/σ1 of the estimate the
    model divides by, and σ_eff as a bar from the line at 1, red where the verdict breaks max_sigma,
    with the limit drawn. A model without SN is not drawn, and said under the panels."""
    title = "σ per layer"
    groups = [g for g in model_groups(report) if any(la.has_sn for la in g[1])]
    left_out = [f"model {m.name or '(unnamed)'} (no SN layer; its σ is in the table with --all)"
                for m in report.models if m.layers and not any(la.has_sn for la in m.layers)]
    if not groups:
        reason = "no SN layer: nothing to compare σ̂ with" if report.layers else \
            "no layer to show (none in the file, or all filtered out)"
        return nothing_drawn(new_figure(6.4, 3.0), title, report, reason)
    rules = rules_of(report)
    deep = max(len(layers) for _, layers in groups) > DEEP
    heights = [deep_height(len(layers)) if deep else 6.4 for _, layers in groups]
    width = 12.0 if deep else wide_width(max(len(layers) for _, layers in groups)) + 3.0  # + the legend
    fig = new_figure(width, sum(heights) + 0.5 * (len(groups) > 1) + 0.3 * bool(left_out))
    suptitle(fig, title, report)
    for panel, (_, layers) in zip(panels(fig, [g[0] for g in groups], heights), groups, strict=True):
        _sigma_panel(panel, layers, deep, rules)
    left_out_line(fig, left_out)
    return fig

def _sigma_panel(panel: FigureBase, layers: Sequence[LayerAudit], deep: bool, rules: Rules) -> None:
    labels, cut = short_names([la.name for la in layers])
    n = len(layers)
    axes = panel.subplots(1, 2, sharey=True) if deep else panel.subplots(2, 1, sharex=True)
    ax_rel, ax_eff = axes[0], axes[1]
    pos = np.arange(n)

    rel = as_array([la.sigma_rel_error for la in layers])
    (ax_rel.axvline if deep else ax_rel.axhline)(0.0, color=ONE, linestyle="--", linewidth=1.0,
                                                 label="0: σ̂ = σ1 (σ_eff = 1)")
    plot_points(ax_rel, pos, rel, deep, marker="o", color=ESTIMATE_COLOR, label=REL_ERROR_LABEL)
    finite = np.abs(rel[np.isfinite(rel)])
    top = float(finite.max()) if finite.size else 0.0
    if top > 0 and float(finite[finite > 0].min()) < top / 100:  # tiny and large: log beyond top/1000
        (ax_rel.set_xscale if deep else ax_rel.set_yscale)("symlog", linthresh=top / 1000)
    label_values(ax_rel, deep, "(σ̂ − σ1) / σ1 (relative error of σ̂)")
    side = "left of" if deep else "below"
    ax_rel.set_title(f"σ̂ (what the model divides by) against the exact σ1\n"
                     f"{side} 0: σ̂ too small, the layer runs above 1", fontsize=9)
    place_legend(ax_rel)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax_rel, i, deep, "not audited", ABOVE)
        elif la.sigma_estimate is not None and la.sigma_estimate <= 0:
            note(ax_rel, i, deep, "σ̂ ≤ 0", ABOVE)
        elif not la.has_sn:
            note(ax_rel, i, deep, "no SN", PLAIN)

    limit = rules.max_sigma
    effective = as_array([la.sigma_effective for la in layers])
    colors = [PLAIN if not la.has_sn else ABOVE if la.breaks(Rule.max_sigma) else BELOW for la in layers]
    if deep:
        ax_eff.barh(pos, effective - 1.0, left=1.0, color=colors, height=0.7)
    else:
        ax_eff.bar(pos, effective - 1.0, bottom=1.0, color=colors, width=0.7)
    line = ax_eff.axvline if deep else ax_eff.axhline
    line(1.0, color=ONE, linestyle="--", linewidth=1.2, label="σ = 1")
    handles: list[Artist] = [Line2D([], [], color=ONE, linestyle="--", label="σ = 1")]
    if limit is not None:
        line(limit, color=ABOVE, linestyle=":", linewidth=1.4, label=_limit_label(limit))
        handles.append(Line2D([], [], color=ABOVE, linestyle=":", linewidth=1.4, label=_limit_label(limit)))
    # A tick at each value, so that a layer at 1 (a bar of height 0) is still seen.
    plot_points(ax_eff, pos, effective, deep, marker="D", color=ONE, label="σ_eff", markersize=3.5)
    center_on_one(ax_eff, np.append(effective, limit if limit is not None else 1.0), deep)
    label_values(ax_eff, deep, "σ_eff (dimensionless)")
    ax_eff.set_title("σ_eff, the norm of the weight in use,\nagainst 1 and check's limit", fontsize=9)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax_eff, i, deep, "not audited", ABOVE)
        elif colors[i] == ABOVE and n <= DEEP:
            note(ax_eff, i, deep, f"{effective[i]:.4g}", ABOVE, at=effective[i])
    shown = "off" if limit is None else f"{limit:g}"
    handles += [Patch(color=ABOVE, label=f"breaks max_sigma (σ_eff > {shown}, or σ̂ ≤ 0)"),
                Patch(color=BELOW, label="within it")]
    if PLAIN in colors:
        handles.append(Patch(color=PLAIN, label="no SN (not judged)"))
    layer_axis(ax_eff if not deep else ax_rel, labels, cut, deep)
    if mark_flagged(ax_eff if not deep else ax_rel, layers, deep):
        handles.append(flagged_handle())
    place_legend(ax_eff, handles=handles)
    if deep:
        ax_eff.tick_params(axis="y", labelleft=False)
    else:
        ax_rel.tick_params(axis="x", labelbottom=False)

def _limit_label(limit: float) -> str:
    return f"check's limit max_sigma = {limit:g}"

COS_TITLE = "power-iteration vectors: cosine error per layer"

def _has_cosine(la: LayerAudit) -> bool:
    return la.cos_error_u is not None or la.cos_error_v is not None

def cos_error_figure(report: Report) -> Figure:
    """Per model with a stored vector to compare (one panel each), log scale: the cosine error
    ``check`` judges (gap-aware; the raw 1 − |cos| with strict_cos) of u and v, the other as small
    hollow marks, check's limit as a dotted line with the band beyond it shaded. Models with nothing
    to compare are not drawn and said under the panels."""
    groups = [g for g in model_groups(report) if any(_has_cosine(la) for la in g[1])]
    left_out = [f"model {m.name or '(unnamed)'} ("
                + ("no SN layer" if not any(la.has_sn for la in m.layers) else "no stored u or v to compare") + ")"
                for m in report.models if m.layers and not any(_has_cosine(la) for la in m.layers)]
    if not groups:
        if not report.layers:
            reason = "no layer to show (none in the file, or all filtered out)"
        elif not any(la.has_sn for la in report.layers):
            reason = "no SN layer: no stored u or v to compare"
        else:
            reason = "no cosine error: no u or v stored, or σ1 ≈ σ2 in every layer (no unique top vector)"
        return nothing_drawn(new_figure(6.4, 3.0), COS_TITLE, report, reason)
    rules = rules_of(report)
    deep = max(len(layers) for _, layers in groups) > DEEP
    heights = [deep_height(len(layers)) if deep else 4.8 for _, layers in groups]
    width = 9.5 if deep else wide_width(max(len(layers) for _, layers in groups)) + 3.2
    fig = new_figure(width, sum(heights) + 0.5 * (len(groups) > 1) + 0.3 * bool(left_out))
    suptitle(fig, COS_TITLE, report)
    for panel, (_, layers) in zip(panels(fig, [g[0] for g in groups], heights), groups, strict=True):
        _cos_panel(panel.subplots(), layers, deep, rules)
    left_out_line(fig, left_out)
    return fig

GAP_U, GAP_V = "u: gap-aware cosine error", "v: gap-aware cosine error"
RAW_U, RAW_V = "u: raw 1 − |cos|", "v: raw 1 − |cos|"
"""The labels of the cosine-error figure's series (the judged pair is drawn large, the other small)."""

def _cos_panel(ax: Axes, layers: Sequence[LayerAudit], deep: bool, rules: Rules) -> None:
    labels, cut = short_names([la.name for la in layers])
    pos = np.arange(len(layers))
    gap_u = as_array([la.gap_cos_error_u for la in layers])
    gap_v = as_array([la.gap_cos_error_v for la in layers])
    raw_u = as_array([la.cos_error_u for la in layers])
    raw_v = as_array([la.cos_error_v for la in layers])
    judged = (raw_u, raw_v, RAW_U, RAW_V) if rules.strict_cos else (gap_u, gap_v, GAP_U, GAP_V)
    other = (gap_u, gap_v, GAP_U, GAP_V) if rules.strict_cos else (raw_u, raw_v, RAW_U, RAW_V)
    every = np.concatenate([gap_u, gap_v, raw_u, raw_v])
    zeros = bool(np.any(every == 0))
    limit = rules.max_cos_error
    floor = log_axis(ax, deep, every, top=1.0, zeros=zeros, least=limit)

    def at_floor(values: np.ndarray) -> np.ndarray:
        return np.where(values == 0, floor, values)

    plot_points(ax, pos - 0.12, at_floor(judged[0]), deep, marker="o", color=U_COLOR, label=judged[2])
    plot_points(ax, pos + 0.12, at_floor(judged[1]), deep, marker="s", color=V_COLOR, label=judged[3])
    for shift, values, marker, color, label in ((-0.12, other[0], "o", U_COLOR, other[2]),
                                                (0.12, other[1], "s", V_COLOR, other[3])):
        x, y = (at_floor(values), pos + shift) if deep else (pos + shift, at_floor(values))
        ax.plot(x, y, linestyle="none", marker=marker, markersize=4, markerfacecolor="none",
                markeredgecolor=color, alpha=0.6, label=label + " (not judged)")
    high = (ax.get_xlim if deep else ax.get_ylim)()[1]
    side = "right of" if deep else "above"
    if limit is not None:
        line = ax.axvline if deep else ax.axhline
        line(limit, color=ABOVE, linestyle=":", linewidth=1.4, label=f"check's limit max_cos_error = {limit:g}")
        (ax.axvspan if deep else ax.axhspan)(limit, high, color=ABOVE, alpha=0.07, zorder=0)
        judged_name = "raw 1 − |cos|" if rules.strict_cos else "gap-aware error"
        ax.set_title(f"{side} the dotted line: the {judged_name} breaks check's max_cos_error\n"
                     "gap-aware: the relative σ̂ deficit the vector's angle forces, given σ2/σ1", fontsize=9)
    else:
        ax.set_title("check's max_cos_error is off: no limit drawn", fontsize=9)
    label_values(ax, deep, "cosine error (dimensionless, log)" + ("; 0: exactly zero" if zeros else ""))
    middle = math.sqrt(floor * high)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax, i, deep, "not audited", ABOVE, at=middle)
        elif not la.has_sn:
            note(ax, i, deep, "no SN", PLAIN, at=middle)
        elif la.degenerate:
            note(ax, i, deep, "σ1≈σ2", PLAIN, at=middle)
        elif not _has_cosine(la):
            note(ax, i, deep, "no u, v stored", PLAIN, at=middle)
    layer_axis(ax, labels, cut, deep)
    handles, names = ax.get_legend_handles_labels()
    series = {judged[2]: judged[0], judged[3]: judged[1], other[2] + " (not judged)": other[0],
              other[3] + " (not judged)": other[1]}
    # A series with no value in any layer (no v stored anywhere) is not named in the legend.
    handles = [h for h, name in zip(handles, names, strict=True)
               if name not in series or bool(np.isfinite(series[name]).any())]
    if mark_flagged(ax, layers, deep):
        handles.append(flagged_handle())
    place_legend(ax, handles=handles)

def spectra_figure(report: Report) -> Figure:
    """Each layer's singular values divided by σ1 (log), one panel per model: one small plot per
    layer up to ``SMALL_MULTIPLES`` layers, a heat map (layer × index, log colour) beyond."""
    groups = model_groups(report)
    if not groups:
        return nothing_drawn(new_figure(6.4, 3.0), "singular values / σ1 per layer", report,
                             "no layer to show (none in the file, or all filtered out)")
    sizes = [_spectra_size(len(layers)) for _, layers in groups]
    fig = new_figure(max(w for w, _ in sizes), sum(h for _, h in sizes) + 0.5 * (len(groups) > 1))
    suptitle(fig, "singular values / σ1 per layer", report)
    for panel, (_, layers) in zip(panels(fig, [g[0] for g in groups], [h for _, h in sizes]), groups,
                                  strict=True):
        labels, cut = short_names([la.name for la in layers])
        if len(layers) <= SMALL_MULTIPLES:
            _spectra_panels(panel, layers, labels)
        else:
            _spectra_heatmap(panel, layers, labels, cut)
    return fig

def _spectra_size(n: int) -> tuple[float, float]:
    if n > SMALL_MULTIPLES:
        return 9.0, max(4.5, 1.8 + 0.15 * n)
    cols = n if n <= 4 else min(4, math.ceil(math.sqrt(n)))
    return 3.4 * cols + 0.6, 2.7 * math.ceil(n / cols) + 0.9

def lipschitz_figure(report: Report) -> Figure:
    """The running products ∏σ_eff (matrix) and ∏ certified operator bounds by depth, log scale; one
    panel per model (each model's own chain)."""
    title = "network Lipschitz bound by depth"
    models = [m for m in report.models if _drawable(m)]
    left_out = [f"model {m.name or '(unnamed)'} (no bound: {_no_bound(m)})" for m in report.models
                if m.layers and not _drawable(m)]
    if not models:
        reason = f"no bound: {_no_bound(report.primary)}" if report.layers else \
            "no layer to show (none in the file, or all filtered out)"
        return nothing_drawn(new_figure(7.0, 3.2), title, report, reason)
    deep = max(len(m.lipschitz.layers) for m in models) > DEEP
    heights = [deep_height(len(m.lipschitz.layers)) if deep else 5.2 for m in models]
    width = 10.0 if deep else wide_width(max(len(m.lipschitz.layers) for m in models)) + 3.5
    fig = new_figure(width, sum(heights) + 0.5 * (len(models) > 1))
    suptitle(fig, title, report)
    names = [m.name + (" (the report's bound)" if m is report.primary else "") for m in models]
    audits = {la.name: la for la in report.layers}
    for panel, model in zip(panels(fig, names, heights), models, strict=True):
        _lipschitz_panel(panel.subplots(), model, deep, [audits.get(name) for name in model.lipschitz.layers])
    width_chars = int(fig.get_figwidth() * 14)
    under = "valid for a " + report.primary.lipschitz.assumptions
    if left_out:
        under = "not drawn: " + "; ".join(left_out) + "\n" + under
    fig.supxlabel("\n".join(line for part in under.split("\n") for line in textwrap.wrap(part, width_chars)),
                  fontsize=7, color="#555555")
    return fig

def _drawable(model: ModelAudit) -> bool:
    bound = model.lipschitz
    return bool(bound.layers) and bound.unavailable is None and any(
        math.isfinite(v) for v in bound.cumulative_matrix + bound.cumulative_operator)

def _no_bound(model: ModelAudit) -> str:
    bound = model.lipschitz
    if bound.unavailable:
        return textwrap.shorten(bound.unavailable, 160, placeholder=" …")
    return "no finite factor in the chain" if bound.layers else "no weight layer in the chain"

def _lipschitz_panel(ax: Axes, model: ModelAudit, deep: bool, layers: Sequence[LayerAudit | None]) -> None:
    bound = model.lipschitz
    labels, cut = short_names(list(bound.layers))
    n = len(bound.layers)
    depth = np.arange(n)
    matrix = as_array(list(bound.cumulative_matrix), positive=True)
    operator = as_array(list(bound.cumulative_operator), positive=True)
    # The certified line is drawn wide and under the matrix line: for linear layers they coincide.
    plot_points(ax, depth, operator, deep, marker="" if deep else "s", color=ABOVE, linestyle="-",
            label=f"∏ certified operator bounds = {short_number(bound.operator_product)}", linewidth=4.0, alpha=0.45)
    plot_points(ax, depth, matrix, deep, marker="" if deep else "o", color=BELOW, linestyle="-",
            label=f"∏ σ_eff (matrix norms; not certified for conv) = {short_number(bound.matrix_product)}")
    (ax.axvline if deep else ax.axhline)(1.0, color=ONE, linestyle="--", linewidth=1.0, label="1")
    set_value_scale(ax, deep, "log")
    label_values(ax, deep, "cumulative bound (dimensionless, log)")
    ax.set_title("running product up to each depth (bound on output change per unit input change)",
                 fontsize=10)
    layer_axis(ax, labels, cut, deep, what="depth: layer")
    handles, _ = ax.get_legend_handles_labels()
    if mark_flagged(ax, layers, deep):
        handles.append(flagged_handle())
    place_legend(ax, handles=handles)

def _spectra_panels(fig: FigureBase, layers: Sequence[LayerAudit], labels: Sequence[str]) -> None:
    n = max(1, len(layers))
    cols = n if n <= 4 else min(4, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False).ravel())
    ratios: list[np.ndarray] = []
    drawn: list[tuple[Axes, Line2D]] = []
    for ax, la, label in zip(grid, layers, labels, strict=False):
        values = np.asarray(la.singular_values, dtype=float)
        flag = "  ✗ " + ", ".join(la.verdict or ()) if la.flagged else ""
        ax.set_title(f"{label}  ({'×'.join(map(str, la.shape))}){flag}", fontsize=9,
                     color=ABOVE if la.flagged else ONE, fontweight="bold" if la.flagged else "normal")
        if la.error is not None or values.size == 0 or not values[0] > 0:
            say_nothing(ax, "not audited" if la.error else "no spectrum (σ1 = 0)")
            continue
        ratio = values / values[0]
        ratios.append(ratio)
        index = np.arange(1, ratio.size + 1)
        line = ax.plot(index, ratio, marker="." if ratio.size <= 64 else "", color=BELOW, linewidth=1.2)[0]
        drawn.append((ax, line))
        if la.spectral_gap is not None:
            ax.text(0.97, 0.95, f"σ2/σ1 = {la.spectral_gap:.3g}", ha="right", va="top", fontsize=8,
                    transform=ax.transAxes)
        ax.set_xlabel("index i", fontsize=8)
        ax.set_xlim(0.5, ratio.size + 0.5)
        if ratio.size <= 10:
            ax.set_xticks(index)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in grid[: len(layers)]:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("σ_i / σ1 (log)", fontsize=8)
    for ax in grid[len(layers):]:
        ax.set_axis_off()
    if not drawn:
        return
    every = np.concatenate(ratios)
    zeros = bool(np.any(every == 0))
    floor = log_axis(drawn[0][0], False, every, top=1.0, zeros=zeros)  # the axes share y
    drawn[0][0].set_ylim(top=1.6)
    for _, line in drawn:  # exact zeros (a rank-deficient weight) on the floor, ticked 0
        line.set_ydata(np.where(np.asarray(line.get_ydata(), dtype=float) == 0, floor, line.get_ydata()))

def _spectra_heatmap(fig: FigureBase, layers: Sequence[LayerAudit], labels: Sequence[str], cut: str) -> None:
    n = len(layers)
    width = max((len(la.singular_values) for la in layers), default=1) or 1
    grid = np.full((n, width), np.nan)
    for i, la in enumerate(layers):
        values = np.asarray(la.singular_values, dtype=float)
        if la.error is None and values.size and values[0] > 0:
            grid[i, : values.size] = values / values[0]
    finite = grid[np.isfinite(grid) & (grid > 0)]
    low = float(finite.min()) if finite.size else 1e-3
    zeros = bool(np.any(grid == 0))
    grid[grid == 0] = low / 2  # below vmin: the colour map's "under" colour, said in the title
    ax = fig.subplots()
    masked = np.ma.masked_invalid(grid)
    cmap = colormap("viridis").with_extremes(under="black")
    mesh = ax.pcolormesh(np.arange(width + 1) + 0.5, np.arange(n + 1) - 0.5, masked, cmap=cmap,
                         norm=LogNorm(vmin=min(low, 0.99), vmax=1.0))
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(np.arange(n), labels, fontsize=7 if n > DEEP else 8)
    ax.set_ylabel("layer" + (f" ({cut} omitted)" if cut else ""), fontsize=9)
    ax.set_xlabel("singular value index i (grey: the layer has fewer)", fontsize=9)
    flagged = mark_flagged(ax, layers, deep=True)
    ax.set_title("colour: σ_i / σ1, log scale (dark = small)" + ("; black: exactly 0" if zeros else "")
                 + ("\nred layer name: breaks a check rule" if flagged else ""), fontsize=10)
    bar = fig.colorbar(mesh, ax=ax, shrink=0.6 if n > DEEP else 0.9, extend="min" if zeros else "neither")
    bar.set_label("σ_i / σ1 (dimensionless, log)")
