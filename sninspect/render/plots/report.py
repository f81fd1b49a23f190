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
    COS_TOLERANCE,
    DEEP,
    ESTIMATE_COLOR,
    FLOOR,
    ONE,
    PLAIN,
    SIGMA_LIMIT,
    SMALL_MULTIPLES,
    U_COLOR,
    V_COLOR,
    as_array,
    center_on_one,
    colormap,
    deep_height,
    empty_figure,
    label_values,
    layer_axis,
    model_groups,
    new_figure,
    note,
    panels,
    place_legend,
    plot_points,
    say_nothing,
    set_value_scale,
    short_names,
    short_number,
    suptitle,
    wide_width,
)
from sninspect.results.report import LayerAudit, ModelAudit, Report

REL_ERROR_LABEL = "(σ̂ − σ1) / σ1"
"""The label of the relative-error series of the σ figure."""


def report_figures(report: Report, *, cos_tolerance: float = COS_TOLERANCE) -> dict[str, Figure]:
    """The four figures of one checkpoint, by file stem: sigma, cos_error, spectra, lipschitz_depth."""
    return {
        "sigma": sigma_figure(report),
        "cos_error": cos_error_figure(report, tolerance=cos_tolerance),
        "spectra": spectra_figure(report),
        "lipschitz_depth": lipschitz_figure(report),
    }

def sigma_figure(report: Report) -> Figure:
    """Per model (one panel each): the relative error (σ̂ − σ1)/σ1 of the estimate the model divides
    by, and σ_eff as a bar from the line at 1, red above ``check``'s limit (drawn as a line)."""
    groups = model_groups(report)
    if not groups:
        return empty_figure("σ per layer", report)
    deep = max(len(layers) for _, layers in groups) > DEEP
    heights = [deep_height(len(layers)) if deep else 6.4 for _, layers in groups]
    width = 12.0 if deep else wide_width(max(len(layers) for _, layers in groups)) + 3.0  # + the legend
    fig = new_figure(width, sum(heights) + 0.5 * (len(groups) > 1))
    suptitle(fig, "σ per layer", report)
    for panel, (_, layers) in zip(panels(fig, [g[0] for g in groups], heights), groups, strict=True):
        _sigma_panel(panel, layers, deep)
    return fig

def _sigma_panel(panel: FigureBase, layers: Sequence[LayerAudit], deep: bool) -> None:
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
    ax_rel.set_title("σ̂ (what the model divides by) against the exact σ1\n"
                     "below 0: σ̂ too small, the layer runs above 1", fontsize=9)
    place_legend(ax_rel)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax_rel, i, deep, "not audited", ABOVE)
        elif la.sigma_estimate is not None and la.sigma_estimate <= 0:
            note(ax_rel, i, deep, "σ̂ ≤ 0", ABOVE)
        elif not la.has_sn:
            note(ax_rel, i, deep, "no SN", PLAIN)

    effective = as_array([la.sigma_effective for la in layers])
    colors = [
        PLAIN if not la.has_sn else ABOVE if _breaks_limit(la) else BELOW
        for la in layers
    ]
    if deep:
        ax_eff.barh(pos, effective - 1.0, left=1.0, color=colors, height=0.7)
    else:
        ax_eff.bar(pos, effective - 1.0, bottom=1.0, color=colors, width=0.7)
    line = ax_eff.axvline if deep else ax_eff.axhline
    line(1.0, color=ONE, linestyle="--", linewidth=1.2, label="σ = 1")
    line(SIGMA_LIMIT, color=ABOVE, linestyle=":", linewidth=1.4, label=_limit_label())
    # A tick at each value, so that a layer at 1 (a bar of height 0) is still seen.
    plot_points(ax_eff, pos, effective, deep, marker="D", color=ONE, label="σ_eff", markersize=3.5)
    center_on_one(ax_eff, np.append(effective, SIGMA_LIMIT), deep)
    label_values(ax_eff, deep, "σ_eff (dimensionless)")
    ax_eff.set_title("σ_eff, the norm of the weight in use,\nagainst 1 and check's limit", fontsize=9)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax_eff, i, deep, "not audited", ABOVE)
        elif colors[i] == ABOVE and n <= DEEP:
            note(ax_eff, i, deep, f"{effective[i]:.4g}", ABOVE, at=effective[i])
    handles: list[Artist] = [Line2D([], [], color=ONE, linestyle="--", label="σ = 1"),
                             Line2D([], [], color=ABOVE, linestyle=":", linewidth=1.4, label=_limit_label()),
                             Patch(color=ABOVE, label=f"above the limit (> {SIGMA_LIMIT:g}) or σ̂ ≤ 0"),
                             Patch(color=BELOW, label=f"within it (≤ {SIGMA_LIMIT:g})")]
    if PLAIN in colors:
        handles.append(Patch(color=PLAIN, label="no SN"))
    place_legend(ax_eff, handles=handles)
    layer_axis(ax_eff if not deep else ax_rel, labels, cut, deep)
    if deep:
        ax_eff.tick_params(axis="y", labelleft=False)
    else:
        ax_rel.tick_params(axis="x", labelbottom=False)

def _breaks_limit(la: LayerAudit) -> bool:
    """``check``'s max_sigma at its default: σ_eff above it, or σ̂ ≤ 0 (the weight's sign flips)."""
    return (la.sigma_effective or 0) > SIGMA_LIMIT or (la.sigma_estimate is not None and la.sigma_estimate <= 0)

def _limit_label() -> str:
    return f"check's limit max_sigma = {SIGMA_LIMIT:g}"

def cos_error_figure(report: Report, *, tolerance: float = COS_TOLERANCE) -> Figure:
    """1 − |cos| of the stored u and v against the exact top singular vectors, log scale, with the
    tolerance line; the band above it is shaded. One panel per model."""
    groups = model_groups(report)
    if not groups:
        return empty_figure("power-iteration vectors: cosine error per layer", report)
    deep = max(len(layers) for _, layers in groups) > DEEP
    heights = [deep_height(len(layers)) if deep else 4.8 for _, layers in groups]
    width = 9.5 if deep else wide_width(max(len(layers) for _, layers in groups)) + 2.4
    fig = new_figure(width, sum(heights) + 0.5 * (len(groups) > 1))
    suptitle(fig, "power-iteration vectors: cosine error per layer", report)
    for panel, (_, layers) in zip(panels(fig, [g[0] for g in groups], heights), groups, strict=True):
        _cos_panel(panel.subplots(), layers, deep, tolerance)
    return fig

def _cos_panel(ax: Axes, layers: Sequence[LayerAudit], deep: bool, tolerance: float) -> None:
    labels, cut = short_names([la.name for la in layers])
    pos = np.arange(len(layers))
    u = as_array([la.cos_error_u for la in layers])
    v = as_array([la.cos_error_v for la in layers])
    zeros = bool(np.any(u == 0) or np.any(v == 0))
    plot_points(ax, pos - 0.12, np.where(u == 0, FLOOR, u), deep, marker="o", color=U_COLOR,
            label="u (left vector)")
    plot_points(ax, pos + 0.12, np.where(v == 0, FLOOR, v), deep, marker="s", color=V_COLOR,
            label="v (right vector)")
    line = ax.axvline if deep else ax.axhline
    line(tolerance, color=ABOVE, linestyle="--", linewidth=1.2, label=f"tolerance {tolerance:g}")
    set_value_scale(ax, deep, "log")
    finite = np.concatenate([u[np.isfinite(u) & (u > 0)], v[np.isfinite(v) & (v > 0)], [tolerance]])
    low, high = float(finite.min()) / 10, max(1.0, float(finite.max()) * 2)
    if zeros:
        low = FLOOR / 3
    (ax.set_xlim if deep else ax.set_ylim)(low, high)
    (ax.axvspan if deep else ax.axhspan)(tolerance, high, color=ABOVE, alpha=0.07, zorder=0)
    label_values(ax, deep, "1 − |cos(stored, exact)| (dimensionless, log)"
                 + (f"; exact 0 drawn at {FLOOR:.0e}" if zeros else ""))
    ax.set_title("above the dashed line: power iteration not converged", fontsize=10)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax, i, deep, "not audited", ABOVE, at=math.sqrt(low * high))
        elif la.degenerate and la.has_sn:
            note(ax, i, deep, "σ1≈σ2", PLAIN, at=math.sqrt(low * high))
        elif la.cos_error_u is None and la.cos_error_v is None:
            note(ax, i, deep, "n/a", PLAIN, at=math.sqrt(low * high))
    place_legend(ax)
    layer_axis(ax, labels, cut, deep)

def spectra_figure(report: Report) -> Figure:
    """Each layer's singular values divided by σ1 (log), one panel per model: one small plot per
    layer up to ``SMALL_MULTIPLES`` layers, a heat map (layer × index, log colour) beyond."""
    groups = model_groups(report)
    if not groups:
        return empty_figure("singular values / σ1 per layer", report)
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
    models = [m for m in report.models if m.lipschitz.layers] or [report.primary]
    deep = max(len(m.lipschitz.layers) for m in models) > DEEP
    heights = [deep_height(len(m.lipschitz.layers)) if deep else 5.2 for m in models]
    width = 10.0 if deep else wide_width(max(len(m.lipschitz.layers) for m in models)) + 3.5
    fig = new_figure(width, sum(heights) + 0.5 * (len(models) > 1))
    suptitle(fig, "network Lipschitz bound by depth", report)
    names = [m.name + (" (the report's bound)" if m is report.primary else "") for m in models]
    for panel, model in zip(panels(fig, names, heights), models, strict=True):
        _lipschitz_panel(panel.subplots(), model, deep)
    width_chars = int(fig.get_figwidth() * 14)
    fig.supxlabel("\n".join(textwrap.wrap("valid for a " + report.primary.lipschitz.assumptions, width_chars)),
                  fontsize=7, color="#555555")
    return fig

def _lipschitz_panel(ax: Axes, model: ModelAudit, deep: bool) -> None:
    bound = model.lipschitz
    labels, cut = short_names(list(bound.layers))
    n = len(bound.layers)
    if n == 0:
        say_nothing(ax, "no layer in the chain")
        return
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
    place_legend(ax)
    layer_axis(ax, labels, cut, deep, what="depth: layer")

def _spectra_panels(fig: FigureBase, layers: Sequence[LayerAudit], labels: Sequence[str]) -> None:
    n = max(1, len(layers))
    cols = n if n <= 4 else min(4, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False).ravel())
    lowest = 1.0
    for ax, la, label in zip(grid, layers, labels, strict=False):
        values = np.asarray(la.singular_values, dtype=float)
        ax.set_title(f"{label}  ({'×'.join(map(str, la.shape))})", fontsize=9)
        ax.set_yscale("log")
        if la.error is not None or values.size == 0 or not values[0] > 0:
            ax.text(0.5, 0.5, "not audited" if la.error else "no spectrum", color=ABOVE, ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        ratio = np.maximum(values / values[0], FLOOR)
        lowest = min(lowest, float(ratio.min()))
        index = np.arange(1, ratio.size + 1)
        ax.plot(index, ratio, marker="." if ratio.size <= 64 else "", color=BELOW, linewidth=1.2)
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
    grid[0].set_ylim(max(lowest / 2, FLOOR / 2), 1.6)

def _spectra_heatmap(fig: FigureBase, layers: Sequence[LayerAudit], labels: Sequence[str], cut: str) -> None:
    n = len(layers)
    width = max((len(la.singular_values) for la in layers), default=1) or 1
    grid = np.full((n, width), np.nan)
    for i, la in enumerate(layers):
        values = np.asarray(la.singular_values, dtype=float)
        if la.error is None and values.size and values[0] > 0:
            grid[i, : values.size] = np.maximum(values / values[0], FLOOR)
    finite = grid[np.isfinite(grid)]
    low = float(finite.min()) if finite.size else 1e-3
    ax = fig.subplots()
    masked = np.ma.masked_invalid(grid)
    cmap = colormap("viridis")
    mesh = ax.pcolormesh(np.arange(width + 1) + 0.5, np.arange(n + 1) - 0.5, masked, cmap=cmap,
                         norm=LogNorm(vmin=min(low, 0.99), vmax=1.0))
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(np.arange(n), labels, fontsize=7 if n > DEEP else 8)
    ax.set_ylabel("layer" + (f" ({cut} omitted)" if cut else ""), fontsize=9)
    ax.set_xlabel("singular value index i (grey: the layer has fewer)", fontsize=9)
    ax.set_title("colour: σ_i / σ1, log scale (dark = small)", fontsize=10)
    bar = fig.colorbar(mesh, ax=ax, shrink=0.6 if n > DEEP else 0.9)
    bar.set_label("σ_i / σ1 (dimensionless, log)")
