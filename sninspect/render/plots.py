"""Figures of a report and of a training run. matplotlib only; reads ``report`` and ``trend``.

Every function returns a :class:`matplotlib.figure.Figure` drawn on an Agg canvas: no pyplot, no
global backend switch, no screen needed, nothing kept alive by a figure manager. The only file I/O
is :func:`save_figures`.

Layout rules: the checkpoint's name is in every figure's suptitle; the common prefix of layer names
(and a common ``.weight`` suffix) is cut and said in the axis label; up to ``DEEP`` layers run along
the x axis with rotated names, deeper networks put the layers on the y axis, top to bottom, and the
figure grows with them.
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path, PurePath

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from sninspect.audit.trend import Trend
from sninspect.errors import OutputError
from sninspect.results.report import LayerAudit, Report

DEEP = 30
"""More layers than this: layer names on the y axis (one row each) instead of rotated on the x axis."""
SMALL_MULTIPLES = 12
"""Up to this many layers, spectra are drawn one small panel per layer; more: one heat map."""
TREND_LINES = 10
"""Up to this many layers, trends are one line per layer; more: a heat map (layer × checkpoint)."""
SIGMA_TOLERANCE = 1e-3
"""σ_eff above 1 + this is drawn red (the same tolerance as the terminal table)."""
COS_TOLERANCE = 1e-2
"""The tolerance line of the cosine-error figure (``check``'s default limit)."""
FLOOR = 1e-18
"""Exact zeros on a log axis are drawn at this value."""
MAX_LABEL = 28
"""Longer layer names are shortened in the middle."""

ABOVE, BELOW, PLAIN, ONE, MISSING = "#d62728", "#1f77b4", "#9a9a9a", "#222222", "#b0b0b0"
U_COLOR, V_COLOR, EXACT_COLOR, ESTIMATE_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"


class PlotFormat(StrEnum):
    """``--plot-format`` choices."""

    png = "png"
    svg = "svg"
    pdf = "pdf"


# ----------------------------------------------------------------------------------------------
# One report


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
        return _empty("σ per layer", report)
    labels, cut = short_names([la.name for la in layers])
    n, deep = len(layers), len(layers) > DEEP
    fig = _figure(*((11.0, _deep_height(n)) if deep else (_wide_width(n) + 2.0, 7.0)))  # + the legend
    axes = fig.subplots(1, 2, sharey=True) if deep else fig.subplots(2, 1, sharex=True)
    ax_raw, ax_eff = axes[0], axes[1]
    pos = np.arange(n)
    _suptitle(fig, "σ per layer", report)

    exact = _values([la.sigma_exact for la in layers], positive=True)
    estimate = _values([la.sigma_estimate for la in layers], positive=True)
    _points(ax_raw, pos, exact, deep, marker="o", color=EXACT_COLOR, label="σ1 exact (SVD)")
    _points(ax_raw, pos, estimate, deep, marker="x", color=ESTIMATE_COLOR,
            label="σ̂ stored estimate (divisor)")
    scale = _auto_scale(np.concatenate([exact, estimate]))
    _set_value_scale(ax_raw, deep, scale)
    unit = ", log)" if scale == "log" else ")"
    _value_label(ax_raw, deep, "σ (dimensionless" + unit)
    ax_raw.set_title("stored weight: exact σ1 vs the σ̂ the model divides by", fontsize=10)
    _legend(ax_raw, deep)
    for i, la in enumerate(layers):
        if la.sigma_estimate is not None and la.sigma_estimate <= 0:
            _note(ax_raw, i, deep, "σ̂ ≤ 0", ABOVE)

    effective = _values([la.sigma_effective for la in layers])
    colors = [
        PLAIN if la.dialect == "none" else ABOVE if (la.sigma_effective or 0) > 1 + SIGMA_TOLERANCE else BELOW
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
    _points(ax_eff, pos, effective, deep, marker="D", color=ONE, label="σ_eff", markersize=3.5)
    _center_on_one(ax_eff, effective, deep)
    _value_label(ax_eff, deep, "σ_eff = σ1 / σ̂ (dimensionless)")
    ax_eff.set_title("σ_eff, the norm of the weight in use, against 1", fontsize=10)
    for i, la in enumerate(layers):
        if la.error is not None:
            _note(ax_eff, i, deep, "not audited", ABOVE)
        elif colors[i] == ABOVE and n <= DEEP:
            _note(ax_eff, i, deep, f"{effective[i]:.4g}", ABOVE, at=effective[i])
    handles: list[Artist] = [Line2D([], [], color=ONE, linestyle="--", label="σ = 1"),
               Patch(color=ABOVE, label=f"above 1 (> 1 + {SIGMA_TOLERANCE:g})"),
               Patch(color=BELOW, label="≤ 1")]
    if PLAIN in colors:
        handles.append(Patch(color=PLAIN, label="no SN"))
    _legend(ax_eff, deep, handles=handles)
    _layer_axis(ax_eff if not deep else ax_raw, labels, cut, deep)
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
        return _empty("power-iteration vectors: cosine error per layer", report)
    labels, cut = short_names([la.name for la in layers])
    n, deep = len(layers), len(layers) > DEEP
    fig = _figure(*((8.0, _deep_height(n)) if deep else (_wide_width(n), 4.8)))
    ax = fig.subplots()
    _suptitle(fig, "power-iteration vectors: cosine error per layer", report)
    pos = np.arange(n)
    u = _values([la.cos_error_u for la in layers])
    v = _values([la.cos_error_v for la in layers])
    zeros = bool(np.any(u == 0) or np.any(v == 0))
    _points(ax, pos - 0.12, np.where(u == 0, FLOOR, u), deep, marker="o", color=U_COLOR,
            label="u (left vector)")
    _points(ax, pos + 0.12, np.where(v == 0, FLOOR, v), deep, marker="s", color=V_COLOR,
            label="v (right vector)")
    line = ax.axvline if deep else ax.axhline
    line(tolerance, color=ABOVE, linestyle="--", linewidth=1.2, label=f"tolerance {tolerance:g}")
    _set_value_scale(ax, deep, "log")
    finite = np.concatenate([u[np.isfinite(u) & (u > 0)], v[np.isfinite(v) & (v > 0)], [tolerance]])
    low, high = float(finite.min()) / 10, max(1.0, float(finite.max()) * 2)
    if zeros:
        low = FLOOR / 3
    (ax.set_xlim if deep else ax.set_ylim)(low, high)
    (ax.axvspan if deep else ax.axhspan)(tolerance, high, color=ABOVE, alpha=0.07, zorder=0)
    _value_label(ax, deep, "1 − |cos(stored, exact)| (dimensionless, log)"
                 + (f"; exact 0 drawn at {FLOOR:.0e}" if zeros else ""))
    ax.set_title("above the dashed line: power iteration not converged", fontsize=10)
    for i, la in enumerate(layers):
        if la.error is not None:
            _note(ax, i, deep, "not audited", ABOVE, at=math.sqrt(low * high))
        elif la.degenerate and la.dialect != "none":
            _note(ax, i, deep, "σ1≈σ2", PLAIN, at=math.sqrt(low * high))
        elif la.cos_error_u is None and la.cos_error_v is None:
            _note(ax, i, deep, "n/a", PLAIN, at=math.sqrt(low * high))
    ax.legend(fontsize=8, loc="best")
    _layer_axis(ax, labels, cut, deep)
    return fig


def spectra_figure(report: Report) -> Figure:
    """Each layer's singular values divided by σ1 (log): one small panel per layer up to
    ``SMALL_MULTIPLES`` layers, a heat map (layer × index, log colour) beyond."""
    layers = report.layers
    if not layers:
        return _empty("singular values / σ1 per layer", report)
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
    fig = _figure(*((8.0, _deep_height(n)) if deep else (_wide_width(n), 5.2)))
    ax = fig.subplots()
    which = f" (model {model.name})" if model.name and len(report.models) > 1 else ""
    _suptitle(fig, f"network Lipschitz bound by depth{which}", report)
    if n == 0:
        _nothing(ax, "no layer in the chain")
        return fig
    depth = np.arange(n)
    matrix = _values(list(bound.cumulative_matrix), positive=True)
    operator = _values(list(bound.cumulative_operator), positive=True)
    # The certified line is drawn wide and under the matrix line: for linear layers they coincide.
    _points(ax, depth, operator, deep, marker="" if deep else "s", color=ABOVE, linestyle="-",
            label=f"∏ certified operator bounds = {_fmt(bound.operator_product)}", linewidth=4.0, alpha=0.45)
    _points(ax, depth, matrix, deep, marker="" if deep else "o", color=BELOW, linestyle="-",
            label=f"∏ σ_eff (matrix norms; not certified for conv) = {_fmt(bound.matrix_product)}")
    (ax.axvline if deep else ax.axhline)(1.0, color=ONE, linestyle="--", linewidth=1.0, label="1")
    _set_value_scale(ax, deep, "log")
    _value_label(ax, deep, "cumulative bound (dimensionless, log)")
    ax.set_title("running product up to each depth (bound on output change per unit input change)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower right" if deep else "upper left")
    _layer_axis(ax, labels, cut, deep, what="depth: layer")
    width = int(fig.get_figwidth() * 14)
    fig.supxlabel("\n".join(textwrap.wrap("valid for a " + bound.assumptions, width)), fontsize=7,
                  color="#555555")
    return fig


# ----------------------------------------------------------------------------------------------
# A training run


def trend_figures(trend: Trend, *, cos_tolerance: float = COS_TOLERANCE) -> dict[str, Figure]:
    """``trend_sigma`` and ``trend_cos_error``."""
    return {"trend_sigma": trend_sigma_figure(trend),
            "trend_cos_error": trend_cos_error_figure(trend, tolerance=cos_tolerance)}


def trend_sigma_figure(trend: Trend) -> Figure:
    """σ_eff of each layer over the run, with the line at 1."""
    series = [(s.name, _values(list(s.sigma_effective))) for s in trend.layers]
    return _trend_figure(trend, series, title="σ_eff per layer over the run",
                         value_label="σ_eff (spectral norm of the weight used)", log=False, reference=1.0,
                         reference_label="σ = 1")


def trend_cos_error_figure(trend: Trend, *, tolerance: float = COS_TOLERANCE) -> Figure:
    """The worse of the u/v cosine errors of each layer over the run, log scale, with the tolerance."""
    series = [(s.name, _values(list(s.cos_error))) for s in trend.layers]
    return _trend_figure(trend, series, title="cosine error (worse of u, v) per layer over the run",
                         value_label="1 − |cos(stored, exact)| (log)", log=True, reference=tolerance,
                         reference_label=f"tolerance {tolerance:g}")


# ----------------------------------------------------------------------------------------------
# Saving


def save_figures(figures: Mapping[str, Figure], folder: str | os.PathLike[str],
                 fmt: PlotFormat | str = PlotFormat.png, *, dpi: int = 120) -> list[Path]:
    """Write each figure as ``folder/<name>.<fmt>`` (atomically: temp file + rename); the folder is
    created. Returns the paths written."""
    fmt = PlotFormat(fmt)
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{target}: cannot create the plot folder ({err.strerror or err})") from err
    written = []
    for name, fig in figures.items():
        path = target / f"{name}.{fmt.value}"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                fig.savefig(handle, format=fmt.value, dpi=dpi, metadata=_metadata(fmt))
            os.replace(tmp, path)
        except OSError as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise OutputError(f"{path}: could not write ({err.strerror or err})") from err
        written.append(path)
    return written


def short_names(names: Sequence[str]) -> tuple[list[str], str]:
    """Layer names without their common dotted prefix and a common ``.weight`` suffix, long ones cut
    in the middle; also returns what was cut, for the axis label (``"netD.main. … .weight"``)."""
    if not names:
        return [], ""
    parts = [name.split(".") for name in names]
    prefix: list[str] = []
    if len(names) > 1:
        for column in zip(*[p[:-1] for p in parts], strict=False):
            if len(set(column)) != 1:
                break
            prefix.append(column[0])
    same_last = len({p[-1] for p in parts}) == 1 and all(len(p) > len(prefix) + 1 for p in parts)
    suffix = parts[0][-1] if same_last else ""
    out = []
    for p in parts:
        body = p[len(prefix): len(p) - (1 if suffix else 0)]
        out.append(_middle_cut(".".join(body) or ".".join(p)))
    cut = ".".join(prefix) + ("." if prefix else "")
    pieces = (f"prefix '{cut}'" if cut else "", f"suffix '.{suffix}'" if suffix else "")
    described = " and ".join(x for x in pieces if x)
    return out, described


# ----------------------------------------------------------------------------------------------
# Helpers


def _empty(what: str, report: Report) -> Figure:
    fig = _figure(6.4, 3.0)
    _suptitle(fig, what, report)
    _nothing(fig.subplots(), "no layer to show (none in the file, or all filtered out)")
    return fig


def _nothing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=PLAIN)
    ax.set_axis_off()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _wide_width(n: int) -> float:
    return float(min(max(7.0, 1.6 + 0.42 * n), 16.0))


def _deep_height(n: int) -> float:
    return float(max(5.0, 1.8 + 0.17 * n))


def checkpoint_label(report: Report) -> str:
    """``D_000500.pt · step 500``: the file name and, when the file has one, its step."""
    label = PurePath(report.checkpoint).name
    for key in ("global_step", "step", "iteration", "epoch"):
        if key in report.extras and not isinstance(report.extras[key], bool):
            return f"{label} · {key} {report.extras[key]}"
    return label


def _suptitle(fig: Figure, what: str, report: Report) -> None:
    fig.suptitle(f"{what} — {checkpoint_label(report)}", fontsize=12)


def _values(values: Sequence[float | None], *, positive: bool = False) -> np.ndarray:
    """Floats with NaN for None, non-finite, and (``positive``) values ≤ 0 that a log axis cannot show."""
    out = np.array([math.nan if v is None else float(v) for v in values], dtype=float)
    out[~np.isfinite(out)] = math.nan
    if positive:
        out[out <= 0] = math.nan
    return out


def _points(ax: Axes, pos: np.ndarray, values: np.ndarray, deep: bool, *, marker: str, color: str,
            label: str, linestyle: str = "none", linewidth: float = 1.2, alpha: float = 1.0,
            markersize: float | None = None) -> None:
    """One Line2D with a point per layer (NaN where there is no number)."""
    x, y = (values, pos) if deep else (pos, values)
    ax.plot(x, y, marker=marker, linestyle=linestyle, color=color, label=label,
            markersize=markersize or (5 if deep else 6), linewidth=linewidth, alpha=alpha)


def _legend(ax: Axes, deep: bool, handles: list[Artist] | None = None) -> None:
    """Inside (best place) for tall figures; outside on the right for wide ones, where bars fill the box."""
    where = {"loc": "best"} if deep else {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    if handles is None:
        ax.legend(fontsize=8, **where)  # type: ignore[arg-type]
    else:
        ax.legend(handles=handles, fontsize=8, **where)  # type: ignore[arg-type]


def _auto_scale(values: np.ndarray) -> str:
    """``log`` when the positive values span more than a factor 20, else ``linear`` (readable ticks)."""
    finite = values[np.isfinite(values) & (values > 0)]
    return "log" if finite.size and float(finite.max() / finite.min()) > 20 else "linear"


def _set_value_scale(ax: Axes, deep: bool, scale: str) -> None:
    (ax.set_xscale if deep else ax.set_yscale)(scale)


def _value_label(ax: Axes, deep: bool, text: str) -> None:
    (ax.set_xlabel if deep else ax.set_ylabel)(text, fontsize=9)


def _layer_axis(ax: Axes, labels: Sequence[str], cut: str, deep: bool, *, what: str = "layer") -> None:
    pos = np.arange(len(labels))
    title = what + (f" ({cut} omitted)" if cut else "")
    longest = max((len(label) for label in labels), default=0)
    if deep:
        ax.set_yticks(pos, labels, fontsize=7)
        ax.set_ylim(len(labels) - 0.5, -0.5)  # first layer on top
        ax.set_ylabel(title, fontsize=9)
    else:
        rotate = longest > 10 or (longest > 3 and len(labels) * longest > 40)
        ax.set_xticks(pos, labels, fontsize=8, rotation=45 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xlabel(title, fontsize=9)


def _note(ax: Axes, index: int, deep: bool, text: str, color: str, *, at: float | None = None) -> None:
    """A small label at a layer's position (on the value axis at ``at``, else the axis middle)."""
    if at is None or not math.isfinite(at):
        if deep:
            ax.text(0.5, index, text, color=color, fontsize=7, va="center", ha="center",
                    transform=ax.get_yaxis_transform())
        else:
            ax.text(index, 0.5, text, color=color, fontsize=7, va="center", ha="center", rotation=90,
                    transform=ax.get_xaxis_transform())
        return
    if deep:
        ax.annotate(text, (at, index), xytext=(4, 0), textcoords="offset points", color=color, fontsize=7,
                    va="center")
    else:
        ax.annotate(text, (index, at), xytext=(0, 3), textcoords="offset points", color=color, fontsize=7,
                    ha="center", va="bottom")


def _center_on_one(ax: Axes, effective: np.ndarray, deep: bool) -> None:
    """Limits that hold 1 and every value, never narrower than 1 ± 2% (float noise stays flat)."""
    (ax.set_xlim if deep else ax.set_ylim)(*_limits_around(effective, 1.0))


def _limits_around(values: np.ndarray, center: float, least: float = 0.02) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    low = min(center - least, float(finite.min()) if finite.size else center)
    high = max(center + least, float(finite.max()) if finite.size else center)
    pad = 0.08 * (high - low)
    return low - pad, high + pad


def _spectra_panels(report: Report, layers: Sequence[LayerAudit], labels: Sequence[str]) -> Figure:
    n = max(1, len(layers))
    cols = n if n <= 4 else min(4, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    fig = _figure(3.4 * cols + 0.6, 2.7 * rows + 0.9)
    grid = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False).ravel())
    _suptitle(fig, "singular values / σ1 per layer", report)
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
    fig = _figure(9.0, max(4.5, 1.8 + 0.15 * n))
    ax = fig.subplots()
    _suptitle(fig, "singular values / σ1 per layer", report)
    masked = np.ma.masked_invalid(grid)
    cmap = _cmap("viridis")
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


def _trend_figure(trend: Trend, series: Sequence[tuple[str, np.ndarray]], *, title: str, value_label: str,
                  log: bool, reference: float, reference_label: str) -> Figure:
    names = [name for name, _ in series]
    labels, cut = short_names(names)
    steps = np.asarray(trend.steps, dtype=float)
    by_index = trend.order_by == "modification time"
    x = np.arange(len(steps)) if by_index else steps
    shown = f"{len(trend.reports)} checkpoints, {PurePath(trend.checkpoints[0]).name} … " \
            f"{PurePath(trend.checkpoints[-1]).name}"
    if len(series) <= TREND_LINES:
        fig = _figure(9.5, 5.2)
        ax = fig.subplots()
        fig.suptitle(f"{title} — {shown}", fontsize=12)
        for (_, values), label in zip(series, labels, strict=True):
            shown_values = np.where(values == 0, FLOOR, values) if log else values
            ax.plot(x, shown_values, marker="o", linewidth=1.3, markersize=4, label=label)
        ax.axhline(reference, color=ONE if not log else ABOVE, linestyle="--", linewidth=1.2,
                   label=reference_label)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(*_limits_around(np.concatenate([v for _, v in series]), reference))
        ax.set_ylabel(value_label, fontsize=9)
        _step_axis(ax, trend, x, by_index)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  title=f"layer ({cut} omitted)" if cut else "layer", title_fontsize=8)
        return fig

    # Many layers: a heat map (layer × checkpoint) under a line of the worst layer per checkpoint.
    n = len(series)
    fig = _figure(10.0, max(6.0, 3.2 + 0.15 * n))
    # Both panels put checkpoint i at x = i (cells of equal width), labelled with its step.
    top, ax = fig.subplots(2, 1, height_ratios=[1, max(2.0, n / 12)], sharex=True)
    fig.suptitle(f"{title} — {shown}", fontsize=12)
    grid = np.vstack([values for _, values in series])  # (layers, checkpoints)
    with np.errstate(all="ignore"):
        worst = np.array([np.nanmax(col) if np.isfinite(col).any() else np.nan for col in grid.T])
    top.plot(np.arange(len(steps)), np.where(worst == 0, FLOOR, worst) if log else worst, marker="o",
             color=ABOVE, label="worst layer")
    top.axhline(reference, color=ONE, linestyle="--", linewidth=1.2, label=reference_label)
    if log:
        top.set_yscale("log")
    top.set_ylabel("worst layer", fontsize=9)
    top.legend(fontsize=8, loc="best")
    top.tick_params(axis="x", labelbottom=False)
    finite = grid[np.isfinite(grid)]
    cmap = _cmap("magma_r" if log else "RdBu_r")  # RdBu_r: white at 1, so grey (absent) stands apart
    if log:
        positive = finite[finite > 0]
        low = float(positive.min()) if positive.size else reference / 10
        high = float(positive.max()) if positive.size else reference * 10
        norm: LogNorm | TwoSlopeNorm = LogNorm(vmin=min(low, reference / 10), vmax=max(high, reference * 10))
        data = np.where(grid == 0, FLOOR, grid)
    else:
        spread = float(np.max(np.abs(finite - reference))) if finite.size else 0.0
        half = max(0.02, spread)
        norm = TwoSlopeNorm(vcenter=reference, vmin=reference - half, vmax=reference + half)
        data = grid
    columns = np.arange(len(steps) + 1) - 0.5
    mesh = ax.pcolormesh(columns, np.arange(n + 1) - 0.5, np.ma.masked_invalid(data), cmap=cmap, norm=norm)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(np.arange(n), labels, fontsize=7)
    ax.set_ylabel("layer" + (f" ({cut} omitted)" if cut else ""), fontsize=9)
    ticks = _thin(np.arange(len(steps)), 12)
    ax.set_xticks(ticks, [_step_text(trend, int(i)) for i in ticks], fontsize=8)
    ax.set_xlabel(f"{trend.axis_label} (grey: layer absent or not audited)", fontsize=9)
    bar = fig.colorbar(mesh, ax=ax, shrink=0.8)
    bar.set_label(value_label, fontsize=9)
    return fig


def _step_axis(ax: Axes, trend: Trend, x: np.ndarray, by_index: bool) -> None:
    if by_index:
        ticks = _thin(np.arange(len(x)), 12)
        ax.set_xticks(ticks, [PurePath(trend.checkpoints[int(i)]).name for i in ticks], rotation=45,
                      ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlabel(trend.axis_label, fontsize=9)


def _step_text(trend: Trend, index: int) -> str:
    if trend.order_by == "modification time":
        return PurePath(trend.checkpoints[index]).name
    step = trend.steps[index]
    return str(int(step)) if float(step).is_integer() else f"{step:g}"


def _thin(ticks: np.ndarray, most: int) -> np.ndarray:
    step = max(1, math.ceil(len(ticks) / most))
    return ticks[::step]


def _cmap(name: str) -> Colormap:
    """A colormap with missing cells (NaN: absent, not audited, fewer values) in light grey."""
    return colormaps[name].with_extremes(bad=MISSING)


def _middle_cut(text: str) -> str:
    if len(text) <= MAX_LABEL:
        return text
    keep = MAX_LABEL - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _metadata(fmt: PlotFormat) -> dict[str, str | None]:
    """Reproducible files: no creation date in SVG/PDF."""
    if fmt is PlotFormat.svg:
        return {"Date": None}
    if fmt is PlotFormat.pdf:
        return {"CreationDate": None}
    return {}
