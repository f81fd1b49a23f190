"""Figures of a report and of a training run. matplotlib only; reads results, computes nothing.

Every function returns a :class:`matplotlib.figure.Figure` drawn on an Agg canvas: no pyplot, no
global backend switch, no screen needed, nothing kept alive by a figure manager. The only file I/O
is in :mod:`.files` (:func:`save_figures`, :func:`write_plots`).

- :mod:`.layout`: sizes, colours, the layer axis, short layer names, the verdict marks;
- :mod:`.report`: the four figures of one checkpoint;
- :mod:`.trend`: the figures of a training run;
- :mod:`.files`: writing them.
"""

from __future__ import annotations

from sninspect.render.formats import PlotFormat
from sninspect.render.plots.files import save_figures, write_plots
from sninspect.render.plots.layout import (
    ABOVE,
    BELOW,
    DEEP,
    MAX_LABEL,
    PLAIN,
    SMALL_MULTIPLES,
    TREND_LINES,
    checkpoint_label,
    model_groups,
    short_names,
)
from sninspect.render.plots.report import (
    GAP_U,
    GAP_V,
    RAW_U,
    RAW_V,
    REL_ERROR_LABEL,
    cos_error_figure,
    lipschitz_figure,
    report_figures,
    sigma_figure,
    spectra_figure,
)
from sninspect.render.plots.trend import trend_cos_error_figure, trend_figures, trend_sigma_figure

__all__ = [
    "ABOVE",
    "BELOW",
    "DEEP",
    "MAX_LABEL",
    "PLAIN",
    "SMALL_MULTIPLES",
    "TREND_LINES",
    "GAP_U",
    "GAP_V",
    "PlotFormat",
    "RAW_U",
    "RAW_V",
    "REL_ERROR_LABEL",
    "checkpoint_label",
    "cos_error_figure",
    "lipschitz_figure",
    "model_groups",
    "report_figures",
    "save_figures",
    "short_names",
    "sigma_figure",
    "spectra_figure",
    "trend_cos_error_figure",
    "trend_figures",
    "trend_sigma_figure",
    "write_plots",
]
