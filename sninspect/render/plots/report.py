"""The four figures of one checkpoint: σ per layer, cosine errors, singular value spectra, the
Lipschitz bound by depth."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from sninspect.render.escape import for_plot
from sninspect.render.plots.layout import (
    ABOVE,
    BELOW,
    COS_TOLERANCE,
    DEEP,
    ESTIMATE_COLOR,
    EXACT_COLOR,
    FLOOR,
    ONE,
    PLAIN,
    SIGMA_TOLERANCE,
    SMALL_MULTIPLES,
    U_COLOR,
    V_COLOR,
    as_array,
    auto_scale,
    center_on_one,
    colormap,
    deep_height,
    empty_figure,
    label_values,
    layer_axis,
    new_figure,
    note,
    place_legend,
    plot_points,
    say_nothing,
    set_value_scale,
    short_names,
    short_number,
    suptitle,
    wide_width,
)
from sninspect.results.report import LayerAudit, Report


def report_figures(report: Report, *, cos_tolerance: float = COS_TOLERANCE) -> dict[str, Figure]:
    """The four figures of one checkpoint, by file stem: sigma, cos_error, spectra, lipschitz_depth."""
    return {
        "sigma": sigma_figure(report),
        "cos_error": cos_error_figure(report, tolerance=cos_tolerance),
        "spectra": spectra_figure(report),
        "lipschitz_depth": lipschitz_figure(report),
    }

def sigma_figure(report: Report) -> Figure:
    """Left/top: exact σ1 and the estimate σ̂ of the stored weight (log). Right/bottom: σ_eff as a bar
    from the line at 1, red where a layer runs above 1."""
    layers = report.layers
    if not layers:
        return empty_figure("σ per layer", report)
    labels, cut = short_names([la.name for la in layers])
    n, deep = len(layers), len(layers) > DEEP
    fig = new_figure(*((11.0, deep_height(n)) if deep else (wide_width(n) + 2.0, 7.0)))  # + the legend
    axes = fig.subplots(1, 2, sharey=True) if deep else fig.subplots(2, 1, sharex=True)
    ax_raw, ax_eff = axes[0], axes[1]
    pos = np.arange(n)
    suptitle(fig, "σ per layer", report)

    exact = as_array([la.sigma_exact for la in layers], positive=True)
    estimate = as_array([la.sigma_estimate for la in layers], positive=True)
    plot_points(ax_raw, pos, exact, deep, marker="o", color=EXACT_COLOR, label="σ1 exact (SVD)")
    plot_points(ax_raw, pos, estimate, deep, marker="x", color=ESTIMATE_COLOR,
            label="σ̂ stored estimate (divisor)")
    scale = auto_scale(np.concatenate([exact, estimate]))
    set_value_scale(ax_raw, deep, scale)
    unit = ", log)" if scale == "log" else ")"
    label_values(ax_raw, deep, "σ (dimensionless" + unit)
    ax_raw.set_title("stored weight: exact σ1 vs the σ̂ the model divides by", fontsize=10)
    place_legend(ax_raw, deep)
    for i, la in enumerate(layers):
        if la.sigma_estimate is not None and la.sigma_estimate <= 0:
            note(ax_raw, i, deep, "σ̂ ≤ 0", ABOVE)

    effective = as_array([la.sigma_effective for la in layers])
    colors = [
        PLAIN if not la.has_sn else ABOVE if (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE else BELOW
        for la in layers
    ]
    deviation = effective - 1.0
    if deep:
        ax_eff.barh(pos, deviation, left=1.0, color=colors, height=0.7)
        ax_eff.axvline(1.0, color=ONE, linestyle="--", linewidth=1.2, label="σ = 1")
    else:
        ax_eff.bar(pos, deviation, bottom=1.0, color=colors, width=0.7)
        ax_eff.axhline(1.0, color=ONE, linestyle="--", linewidth=1.2, label="σ = 1")
    # A tick at each value, so that a layer at 1 (a bar of height 0) is still seen.
    plot_points(ax_eff, pos, effective, deep, marker="D", color=ONE, label="σ_eff", markersize=3.5)
    center_on_one(ax_eff, effective, deep)
    label_values(ax_eff, deep, "σ_eff = σ1 / σ̂ (dimensionless)")
    ax_eff.set_title("σ_eff, the norm of the weight in use, against 1", fontsize=10)
    for i, la in enumerate(layers):
        if la.error is not None:
            note(ax_eff, i, deep, "not audited", ABOVE)
        elif colors[i] == ABOVE and n <= DEEP:
            note(ax_eff, i, deep, f"{effective[i]:.4g}", ABOVE, at=effective[i])
    handles: list[Artist] = [Line2D([], [], color=ONE, linestyle="--", label="σ = 1"),
               Patch(color=ABOVE, label=f"above 1 (> 1 + {SIGMA_TOLERANCE:g})"),
               Patch(color=BELOW, label="≤ 1")]
    if PLAIN in colors:
        handles.append(Patch(color=PLAIN, label="no SN"))
    place_legend(ax_eff, deep, handles=handles)
    layer_axis(ax_eff if not deep else ax_raw, labels, cut, deep)
    if deep:
        ax_eff.tick_params(axis="y", labelleft=False)
    else:
        ax_raw.tick_params(axis="x", labelbottom=False)
    return fig

def cos_error_figure(report: Report, *, tolerance: float = COS_TOLERANCE) -> Figure:
    """1 − |cos| of the stored u and v against the exact top singular vectors, log scale, with the
    tolerance line; the band above it is shaded."""
    layers = report.layers
    if not layers:
        return empty_figure("power-iteration vectors: cosine error per layer", report)
    labels, cut = short_names([la.name for la in layers])
    n, deep = len(layers), len(layers) > DEEP
    fig = new_figure(*((8.0, deep_height(n)) if deep else (wide_width(n), 4.8)))
    ax = fig.subplots()
    suptitle(fig, "power-iteration vectors: cosine error per layer", report)
    pos = np.arange(n)
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
    ax.legend(fontsize=8, loc="best")
    layer_axis(ax, labels, cut, deep)
    return fig

def spectra_figure(report: Report) -> Figure:
    """Each layer's singular values divided by σ1 (log): one small panel per layer up to
    ``SMALL_MULTIPLES`` layers, a heat map (layer × index, log colour) beyond."""
    layers = report.layers
    if not layers:
        return empty_figure("singular values / σ1 per layer", report)
    labels, cut = short_names([la.name for la in layers])
    if len(layers) <= SMALL_MULTIPLES:
        return _spectra_panels(report, layers, labels)
    return _spectra_heatmap(report, layers, labels, cut)

def lipschitz_figure(report: Report) -> Figure:
    """The running products ∏σ_eff (matrix) and ∏ certified operator bounds by depth, log scale."""
    model = report.primary
    bound = model.lipschitz
    labels, cut = short_names(list(bound.layers))
    n, deep = len(bound.layers), len(bound.layers) > DEEP
    fig = new_figure(*((8.0, deep_height(n)) if deep else (wide_width(n), 5.2)))
    ax = fig.subplots()
    which = f" (model {for_plot(model.name)})" if model.name and len(report.models) > 1 else ""
    suptitle(fig, f"network Lipschitz bound by depth{which}", report)
    if n == 0:
        say_nothing(ax, "no layer in the chain")
        return fig
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
    ax.legend(fontsize=8, loc="lower right" if deep else "upper left")
    layer_axis(ax, labels, cut, deep, what="depth: layer")
    width = int(fig.get_figwidth() * 14)
    fig.supxlabel("\n".join(textwrap.wrap("valid for a " + bound.assumptions, width)), fontsize=7,
                  color="#555555")
    return fig

def _spectra_panels(report: Report, layers: Sequence[LayerAudit], labels: Sequence[str]) -> Figure:
    n = max(1, len(layers))
    cols = n if n <= 4 else min(4, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    fig = new_figure(3.4 * cols + 0.6, 2.7 * rows + 0.9)
    grid = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False).ravel())
    suptitle(fig, "singular values / σ1 per layer", report)
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
    return fig

def _spectra_heatmap(report: Report, layers: Sequence[LayerAudit], labels: Sequence[str], cut: str) -> Figure:
    n = len(layers)
    width = max((len(la.singular_values) for la in layers), default=1) or 1
    grid = np.full((n, width), np.nan)
    for i, la in enumerate(layers):
        values = np.asarray(la.singular_values, dtype=float)
        if la.error is None and values.size and values[0] > 0:
            grid[i, : values.size] = np.maximum(values / values[0], FLOOR)
    finite = grid[np.isfinite(grid)]
    low = float(finite.min()) if finite.size else 1e-3
    fig = new_figure(9.0, max(4.5, 1.8 + 0.15 * n))
    ax = fig.subplots()
    suptitle(fig, "singular values / σ1 per layer", report)
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
    return fig
