"""The figures of a training run: σ_eff and the cosine error of each layer over the checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from sninspect.render.escape import for_plot
from sninspect.render.plots.layout import (
    ABOVE,
    ONE,
    TREND_LINES,
    as_array,
    colormap,
    limits_around,
    log_axis,
    new_figure,
    place_legend,
    rules_of,
    short_names,
    thin_ticks,
)
from sninspect.results.trend import MODIFICATION_TIME, Trend


def trend_figures(trend: Trend) -> dict[str, Figure]:
    """``trend_sigma`` and ``trend_cos_error``; limits drawn are the run's rules (``Report.rules``)."""
    return {"trend_sigma": trend_sigma_figure(trend), "trend_cos_error": trend_cos_error_figure(trend)}

def trend_sigma_figure(trend: Trend) -> Figure:
    """σ_eff of each layer over the run, with the line at 1 and check's max_sigma."""
    series = [(s.name, as_array(list(s.sigma_effective))) for s in trend.layers]
    limit = rules_of(trend.reports[-1]).max_sigma
    return _trend_figure(trend, series, title="σ_eff per layer over the run",
                         value_label="σ_eff (spectral norm of the weight used)", log=False, reference=1.0,
                         reference_label="σ = 1", limit=limit,
                         limit_label=None if limit is None else f"check's limit max_sigma = {limit:g}")

def trend_cos_error_figure(trend: Trend) -> Figure:
    """The worse of the u/v cosine errors ``check`` judges (gap-aware; raw with strict_cos) of each
    layer over the run, log scale, with check's max_cos_error."""
    rules = rules_of(trend.reports[-1])
    strict = rules.strict_cos
    series = [(s.name, as_array(list(s.cos_error if strict else s.gap_cos_error))) for s in trend.layers]
    limit = rules.max_cos_error
    what = "raw 1 − |cos|" if strict else "gap-aware cosine error"
    return _trend_figure(trend, series, title=f"{what} (worse of u, v) per layer over the run",
                         value_label=f"{what} (log)", log=True, reference=limit,
                         reference_label=None if limit is None else f"check's limit max_cos_error = {limit:g}")

def _trend_figure(trend: Trend, series: Sequence[tuple[str, np.ndarray]], *, title: str, value_label: str,
                  log: bool, reference: float | None, reference_label: str | None, limit: float | None = None,
                  limit_label: str | None = None) -> Figure:
    """Lines (few layers) or a heat map under the worst layer (many); ``reference`` a dashed line (1, or
    the limit on a log axis), ``limit`` a dotted red one; exact zeros on a log axis sit on its floor,
    ticked 0."""
    names = [name for name, _ in series]
    labels, cut = short_names(names)
    flagged = [s.flagged_last for s in trend.layers] if len(trend.layers) == len(series) else [False] * len(series)
    steps = np.asarray(trend.steps, dtype=float)
    by_index = trend.order_by == MODIFICATION_TIME
    x = np.arange(len(steps)) if by_index else steps
    shown = f"{len(trend.reports)} checkpoints, {_file(trend, 0)} … {_file(trend, -1)}"
    if len(series) <= TREND_LINES:
        fig = new_figure(9.5, 5.2)
        ax = fig.subplots()
        fig.suptitle(f"{title} — {shown}", fontsize=12)
        every = np.concatenate([v for _, v in series]) if series else np.array([])
        zeros = log and bool(np.any(every == 0))
        floor = log_axis(ax, False, every, top=1.0, zeros=zeros, least=reference) if log else 0.0
        lines = []
        for (_, values), label in zip(series, labels, strict=True):
            shown_values = np.where(values == 0, floor, values) if log else values
            lines += ax.plot(x, shown_values, marker="o", linewidth=1.3, markersize=4, label=label)
        names = list(labels)
        for value, text, color, style in ((reference, reference_label, ABOVE if log else ONE, ":" if log else "--"),
                                          (limit, limit_label, ABOVE, ":")):
            if value is not None and text is not None:
                lines.append(ax.axhline(value, color=color, linestyle=style, linewidth=1.3, label=text))
                names.append(text)
        if not log:
            ax.set_ylim(*limits_around(np.concatenate([every, [limit if limit is not None else 1.0]]), 1.0))
        ax.set_ylabel(value_label + ("; 0: exactly zero" if zeros else ""), fontsize=9)
        _step_axis(ax, trend, x, by_index)
        # Handles and labels given: a name starting with "_" is not dropped as matplotlib's "no label".
        legend = ax.legend(lines, names, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                           title=(f"layer ({cut} omitted)" if cut else "layer")
                           + ("\nred: breaks a check rule at the end" if any(flagged) else ""), title_fontsize=8)
        for entry, red in zip(legend.get_texts(), flagged, strict=False):
            if red:
                entry.set_color(ABOVE)
                entry.set_fontweight("bold")
        return fig

    if not by_index and np.any(np.diff(x) <= 0):  # two checkpoints at one step: cells need an order
        by_index, x = True, np.arange(len(steps))
    # Many layers: a heat map (layer × checkpoint) under a line of the worst layer per checkpoint.
    n = len(series)
    fig = new_figure(10.0, max(6.0, 3.2 + 0.15 * n))
    # Both panels put each checkpoint at its x (its step; its index when ordered by time), a cell
    # reaching half way to its neighbours.
    top, ax = fig.subplots(2, 1, height_ratios=[1, max(2.0, n / 12)], sharex=True)
    fig.suptitle(f"{title} — {shown}", fontsize=12)
    grid = np.vstack([values for _, values in series])  # (layers, checkpoints)
    with np.errstate(all="ignore"):
        worst = np.array([np.nanmax(col) if np.isfinite(col).any() else np.nan for col in grid.T])
    zeros = log and bool(np.any(grid == 0))
    floor = log_axis(top, False, worst, top=1.0, zeros=bool(np.any(worst == 0)), least=reference) if log else 0.0
    top.plot(x, np.where(worst == 0, floor, worst) if log else worst, marker="o",
             color=ABOVE, label="worst layer")
    for value, text, color, style in ((reference, reference_label, ABOVE if log else ONE, ":" if log else "--"),
                                      (limit, limit_label, ABOVE, ":")):
        if value is not None and text is not None:
            top.axhline(value, color=color, linestyle=style, linewidth=1.3, label=text)
    top.set_ylabel("worst layer", fontsize=9)
    place_legend(top)
    top.tick_params(axis="x", labelbottom=False)
    finite = grid[np.isfinite(grid)]
    cmap = colormap("magma_r" if log else "RdBu_r")  # RdBu_r: white at 1, so grey (absent) stands apart
    if log:
        positive = finite[finite > 0]
        anchor = reference if reference is not None else 1e-2
        low = float(positive.min()) if positive.size else anchor / 10
        high = float(positive.max()) if positive.size else anchor * 10
        floor = min(low, anchor / 10)
        norm: LogNorm | TwoSlopeNorm = LogNorm(vmin=floor, vmax=max(high, anchor * 10))
        data = np.where(grid == 0, floor / 2, grid)  # below vmin: the "under" colour, said in the label
        if zeros:
            cmap = cmap.with_extremes(under="#000000")
    else:
        center = reference if reference is not None else 1.0
        spread = float(np.max(np.abs(finite - center))) if finite.size else 0.0
        half = max(0.02, spread)
        norm = TwoSlopeNorm(vcenter=center, vmin=center - half, vmax=center + half)
        data = grid
    columns = _edges(x)
    mesh = ax.pcolormesh(columns, np.arange(n + 1) - 0.5, np.ma.masked_invalid(data), cmap=cmap, norm=norm)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(np.arange(n), labels, fontsize=7)
    for tick, red in zip(ax.get_yticklabels(), flagged, strict=False):
        if red:
            tick.set_color(ABOVE)
            tick.set_fontweight("bold")
    ax.set_ylabel("layer" + (f" ({cut} omitted)" if cut else "")
                  + ("; red: breaks a rule at the end" if any(flagged) else ""), fontsize=9)
    ticks = thin_ticks(np.arange(len(steps)), 12) if by_index else _spaced(x, 12)
    ax.set_xticks(x[ticks], [_step_text(trend, int(i)) for i in ticks], fontsize=8,
                  rotation=45 if by_index else 0, ha="right" if by_index else "center", rotation_mode="anchor")
    ax.set_xlim(columns[0], columns[-1])
    ax.set_xlabel(f"{trend.axis_label} (grey: layer absent or not audited)", fontsize=9)
    bar = fig.colorbar(mesh, ax=ax, shrink=0.8, extend="min" if zeros else "neither")
    bar.set_label(value_label + ("; black: exactly 0" if zeros else ""), fontsize=9)
    return fig

def _spaced(x: np.ndarray, most: int) -> np.ndarray:
    """Indices of ticks at least 1/``most`` of the range apart (labels of close steps do not overlap)."""
    gap = (x[-1] - x[0]) / most
    kept = [0]
    for i in range(1, len(x)):
        if x[i] - x[kept[-1]] >= gap:
            kept.append(i)
    return np.asarray(kept)

def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges around increasing centres: half way between neighbours, the ends mirrored."""
    if len(x) == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    middle = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (middle[0] - x[0])], middle, [x[-1] + (x[-1] - middle[-1])]])

def _step_axis(ax: Axes, trend: Trend, x: np.ndarray, by_index: bool) -> None:
    if by_index:
        ticks = thin_ticks(np.arange(len(x)), 12)
        ax.set_xticks(ticks, [_file(trend, int(i)) for i in ticks], rotation=45,
                      ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlabel(trend.axis_label, fontsize=9)

def _file(trend: Trend, index: int) -> str:
    """The checkpoint's file name, escaped for a label."""
    return for_plot(PurePath(trend.checkpoints[index]).name)

def _step_text(trend: Trend, index: int) -> str:
    if trend.order_by == MODIFICATION_TIME:
        return _file(trend, index)
    step = trend.steps[index]
    return str(int(step)) if float(step).is_integer() else f"{step:g}"
