"""The digits rule of every table: how a number reads in a cell, whatever the format (the terminal,
Markdown, HTML, the run view, ``graph``). JSON and CSV keep the full numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sninspect.results.report import LayerAudit, bound_not_computed

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



def percent(width: float) -> str:
    """0.01 → ``1%``, 0.005 → ``0.5%``."""
    return "∞%" if math.isinf(width) else f"{100 * width:.3g}%"


def plain(value: float | None) -> str:
    """A ``graph`` number: 6 significant digits, ``-`` for None."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"
