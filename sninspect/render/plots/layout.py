"""What every figure shares: sizes, colours, the layer axis, short layer names, the verdict marks.

Layout rules: the checkpoint's name is in every figure's suptitle; the common prefix of layer names
(and a common ``.weight`` suffix) is cut and said in the axis label; up to ``DEEP`` layers run along
the x axis with rotated names, deeper networks put the layers on the y axis, top to bottom, and the
figure grows with them. A layer whose verdict breaks a ``check`` rule has its name in red, bold, in
every figure; limits drawn are the report's ``Rules`` (no threshold of the figures' own). Exact zeros
on a log axis sit on its floor, a decade below every other value, labelled ``0``. Every figure is
drawn on an Agg canvas: no pyplot, no global backend switch.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure, FigureBase
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, LogFormatterSciNotation, NullLocator

from sninspect.render.escape import for_plot
from sninspect.results.check import Rules
from sninspect.results.report import LayerAudit, Report

DEEP = 30
"""More layers than this: layer names on the y axis (one row each) instead of rotated on the x axis."""

SMALL_MULTIPLES = 12
"""Up to this many layers, spectra are drawn one small panel per layer; more: one heat map."""

TREND_LINES = 10
"""Up to this many layers, trends are one line per layer; more: a heat map (layer × checkpoint)."""

MAX_LABEL = 28
"""Longer layer names are shortened in the middle."""

ABOVE, BELOW, PLAIN, ONE, MISSING = "#d62728", "#1f77b4", "#9a9a9a", "#222222", "#b0b0b0"

U_COLOR, V_COLOR, EXACT_COLOR, ESTIMATE_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"


def short_names(names: Sequence[str]) -> tuple[list[str], str]:
    """A label per layer: its name after the common dotted prefix and a common last part (``.weight``)
    are cut, whole when it fits in ``MAX_LABEL`` characters (``main.0``); a longer one is the shortest
    dotted suffix that no other layer shown ends in, and begins with ``…`` when it drops parts; long
    ones are cut in the middle unless that would make two alike. Labels are unique when the names
    are (a repeated name gets ``[i]``). Also returns what every label lost, for the axis label
    (``"prefix 'netD.main.' and suffix '.weight'"``). Everything is escaped for matplotlib
    (:func:`~sninspect.render.escape.for_plot`): a name is never mathtext."""
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
    bodies = [tuple(p[len(prefix): len(p) - (1 if suffix else 0)]) for p in parts]
    full = [".".join(body) for body in bodies]
    labels = [".".join(body) if len(".".join(body)) <= MAX_LABEL else _unique_suffix(body, bodies)
              for body in bodies]
    labels = [label if len(label) <= MAX_LABEL else _elide_constant(label, bodies) for label in labels]
    cut_labels = [_middle_cut(label) for label in labels]
    # A middle cut that makes two labels alike is undone for both (repeat: undoing can collide again).
    while True:
        clash = _repeated(cut_labels)
        clash_cut = [i for i in clash if cut_labels[i] != labels[i]]
        if not clash_cut:
            break
        for i in clash_cut:
            cut_labels[i] = labels[i]
    out = [for_plot(label) for label in cut_labels]
    for i in _repeated(out):  # the same name twice (or escaping made two alike)
        out[i] = for_plot(f"{full[i]} [{i}]")
    cut = ".".join(prefix) + ("." if prefix else "")
    pieces = (f"prefix '{cut}'" if cut else "", f"suffix '.{suffix}'" if suffix else "")
    described = " and ".join(x for x in pieces if x)
    return out, for_plot(described)

def _unique_suffix(body: tuple[str, ...], bodies: Sequence[tuple[str, ...]]) -> str:
    """The fewest last parts of ``body`` that no other body ends in (all of it if none), ``…`` first
    when parts were dropped. Two labels alike have as many parts and the same ones: both were the
    whole body (so the bodies are equal) or one was unique, a contradiction."""
    for k in range(1, len(body)):
        tail = body[-k:]
        if sum(1 for other in bodies if other[-k:] == tail) == 1:
            return "…" + ".".join(tail)
    return ".".join(body)

def _elide_constant(label: str, bodies: Sequence[tuple[str, ...]]) -> str:
    """A long label with each part that every name has alike at that place (counted from the end)
    shown as ``…`` (``stage0.blocks.0.residual_branch.conv_a`` → ``stage0…0…conv_a``): labels that
    differed still differ, in a part that is kept."""
    lead = label.startswith("…")
    parts = (label[1:] if lead else label).split(".")
    out: list[str] = []
    for j, part in enumerate(parts):
        back = len(parts) - j
        alike = {body[-back] for body in bodies if len(body) >= back}
        shown = "…" if len(alike) == 1 and len(bodies) > 1 and back > 1 else part
        if not (shown == "…" and out and out[-1] == "…"):
            out.append(shown)
    text = ".".join(out).replace(".….", "…")
    return ("…" if lead else "") + text

def _repeated(labels: Sequence[str]) -> list[int]:
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    return [i for i, label in enumerate(labels) if seen[label] > 1]

def _middle_cut(text: str) -> str:
    if len(text) <= MAX_LABEL:
        return text
    keep = MAX_LABEL - 1
    head = keep // 3  # keep more of the end: the end is what tells layers apart
    return text[:head] + "…" + text[len(text) - (keep - head):]

def checkpoint_label(report: Report) -> str:
    """``D_000500.pt · step 500``: the file name and, when the file has one, its step."""
    label = PurePath(report.checkpoint).name
    for key in ("global_step", "step", "iteration", "epoch"):
        if key in report.extras and not isinstance(report.extras[key], bool):
            return for_plot(f"{label} · {key} {report.extras[key]}")
    return for_plot(label)

def say_nothing(ax: Axes, text: str, *, width: int = 70, most: int = 8) -> None:
    """Why there is nothing to draw, in words, wrapped to ``width`` characters (at most ``most``
    lines: a long list of layer names ends in ``…``), in place of the chart."""
    lines = textwrap.wrap(text, width, break_long_words=True)
    if len(lines) > most:
        lines = [*lines[: most - 1], lines[most - 1][: width - 1] + "…"]
    ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", transform=ax.transAxes, color=PLAIN)
    ax.set_axis_off()

def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig

def wide_width(n: int) -> float:
    return float(min(max(7.0, 1.6 + 0.42 * n), 16.0))

def deep_height(n: int) -> float:
    return float(max(5.0, 1.8 + 0.17 * n))

def suptitle(fig: Figure, what: str, report: Report) -> None:
    fig.suptitle(f"{what} — {checkpoint_label(report)}", fontsize=12)

def as_array(values: Sequence[float | None], *, positive: bool = False) -> np.ndarray:
    """Floats with NaN for None, non-finite, and (``positive``) values ≤ 0 that a log axis cannot show."""
    out = np.array([math.nan if v is None else float(v) for v in values], dtype=float)
    out[~np.isfinite(out)] = math.nan
    if positive:
        out[out <= 0] = math.nan
    return out

def plot_points(ax: Axes, pos: np.ndarray, values: np.ndarray, deep: bool, *, marker: str, color: str,
            label: str, linestyle: str = "none", linewidth: float = 1.2, alpha: float = 1.0,
            markersize: float | None = None) -> None:
    """One Line2D with a point per layer (NaN where there is no number)."""
    x, y = (values, pos) if deep else (pos, values)
    ax.plot(x, y, marker=marker, linestyle=linestyle, color=color, label=label,
            markersize=markersize or (5 if deep else 6), linewidth=linewidth, alpha=alpha)

def place_legend(ax: Axes, handles: list[Artist] | None = None, *, title: str | None = None) -> None:
    """Outside the axes, on the right: a legend never covers a point or a bar (constrained layout
    makes room for it)."""
    where = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
    if handles is None:
        ax.legend(fontsize=8, title=title, title_fontsize=8, **where)  # type: ignore[arg-type]
    else:
        ax.legend(handles=handles, fontsize=8, title=title, title_fontsize=8, **where)  # type: ignore[arg-type]

def model_groups(report: Report) -> list[tuple[str, tuple[LayerAudit, ...]]]:
    """Each model of the checkpoint with layers to show, with its name: one panel each."""
    return [(model.name, model.layers) for model in report.models if model.layers]

def panels(fig: Figure, names: Sequence[str], heights: Sequence[float]) -> list[FigureBase]:
    """One panel (sub-figure, titled with the model's name) per model; the figure itself for one."""
    if len(names) <= 1:
        return [fig]
    subs = np.asarray(fig.subfigures(len(names), 1, height_ratios=list(heights), squeeze=False)).ravel()
    for sub, name in zip(subs, names, strict=True):
        sub.suptitle(f"model {for_plot(name)}" if name else "model", fontsize=11, fontweight="bold")
    return list(subs)

def auto_scale(values: np.ndarray) -> str:
    """``log`` when the positive values span more than a factor 20, else ``linear`` (readable ticks)."""
    finite = values[np.isfinite(values) & (values > 0)]
    return "log" if finite.size and float(finite.max() / finite.min()) > 20 else "linear"

def set_value_scale(ax: Axes, deep: bool, scale: str) -> None:
    (ax.set_xscale if deep else ax.set_yscale)(scale)

def label_values(ax: Axes, deep: bool, text: str) -> None:
    (ax.set_xlabel if deep else ax.set_ylabel)(text, fontsize=9)

def layer_axis(ax: Axes, labels: Sequence[str], cut: str, deep: bool, *, what: str = "layer") -> None:
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

def note(ax: Axes, index: int, deep: bool, text: str, color: str, *, at: float | None = None) -> None:
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

def center_on_one(ax: Axes, effective: np.ndarray, deep: bool) -> None:
    """Limits that hold 1 and every value, never narrower than 1 ± 2% (float noise stays flat)."""
    (ax.set_xlim if deep else ax.set_ylim)(*limits_around(effective, 1.0))

def limits_around(values: np.ndarray, center: float, least: float = 0.02) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    low = min(center - least, float(finite.min()) if finite.size else center)
    high = max(center + least, float(finite.max()) if finite.size else center)
    pad = 0.08 * (high - low)
    return low - pad, high + pad

def thin_ticks(ticks: np.ndarray, most: int) -> np.ndarray:
    step = max(1, math.ceil(len(ticks) / most))
    return ticks[::step]

def colormap(name: str) -> Colormap:
    """A colormap with missing cells (NaN: absent, not audited, fewer values) in light grey."""
    return colormaps[name].with_extremes(bad=MISSING)

def short_number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def rules_of(report: Report) -> Rules:
    """The rules the report's verdicts were judged by (check's defaults for a report never judged)."""
    return report.rules if report.rules is not None else Rules()

def mark_flagged(ax: Axes, layers: Sequence[LayerAudit | None], deep: bool) -> bool:
    """The names of the layers whose verdict breaks a rule in red, bold, on the layer axis (call after
    :func:`layer_axis`); returns whether any is."""
    ticks = ax.get_yticklabels() if deep else ax.get_xticklabels()
    flagged = False
    for tick, la in zip(ticks, layers, strict=False):
        if la is not None and la.flagged:
            tick.set_color(ABOVE)
            tick.set_fontweight("bold")
            flagged = True
    return flagged

def flagged_handle() -> Patch:
    """The legend entry that says what a red layer name means."""
    return Patch(facecolor="none", edgecolor="none", label="red layer name: breaks a check rule")

def nothing_drawn(fig: Figure, what: str, report: Report, reason: str) -> Figure:
    """A figure that says, in words, why there is nothing to draw (never an empty chart)."""
    suptitle(fig, what, report)
    say_nothing(fig.subplots(), reason)
    return fig

def left_out_line(fig: Figure, left_out: Sequence[str]) -> None:
    """A line under the panels naming the models not drawn and why."""
    if left_out:
        fig.supxlabel("not drawn: " + "; ".join(left_out), fontsize=8, color="#555555")

class _ZeroAtFloor(LogFormatterSciNotation):
    """Log tick labels, with ``0`` at the floor where exact zeros are drawn."""

    def __init__(self, floor: float) -> None:
        super().__init__()
        self.floor = floor

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x > 0 and abs(x / self.floor - 1.0) < 1e-9:
            return "0"
        return str(super().__call__(x, pos))

def log_axis(ax: Axes, deep: bool, values: np.ndarray, *, top: float, zeros: bool,
             least: float | None = None) -> float:
    """A log value axis over the positive ``values`` (and ``least``, a reference such as a limit) up to
    ``top``; with ``zeros``, its floor is a decade below every positive value, ticked ``0``: the
    caller draws exact zeros there. Returns the floor (or the lower limit)."""
    positive = values[np.isfinite(values) & (values > 0)]
    extra = [least] if least is not None and least > 0 else []
    low = float(min([*positive.tolist(), *extra], default=1e-3))
    high = max(top, float(max([*positive.tolist(), *extra], default=top)) * 2)
    (ax.set_xscale if deep else ax.set_yscale)("log")
    first = math.floor(math.log10(low)) - (1 if zeros else 0)
    last = math.ceil(math.log10(high))
    step = max(1, math.ceil((last - first) / 8))
    decades = [10.0 ** k for k in range(first, last + 1, step)]
    floor = 10.0 ** first
    axis = ax.xaxis if deep else ax.yaxis
    axis.set_major_locator(FixedLocator(decades))
    axis.set_minor_locator(NullLocator())
    if zeros:
        axis.set_major_formatter(_ZeroAtFloor(floor))
        (ax.set_xlim if deep else ax.set_ylim)(floor / 10 ** 0.25, high)
        return floor
    (ax.set_xlim if deep else ax.set_ylim)(low / 3, high)
    return low / 3
