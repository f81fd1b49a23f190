"""A training run as data: checkpoints in order, a summary row per checkpoint, a series per layer.

Computed by :func:`sninspect.audit.runs.trend.build`; shown by :mod:`sninspect.render`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sninspect.results.jsonable import json_safe
from sninspect.results.report import Report

FILE_NAME = "file name"
"""``Trend.order_by`` when the checkpoints are ordered by the number in their file name."""
MODIFICATION_TIME = "modification time"
"""``Trend.order_by`` when the checkpoints are ordered by their modification time."""


@dataclass(frozen=True)
class CheckpointSummary:
    """One row of the run's summary table."""

    checkpoint: str
    """Path of the checkpoint as given."""
    step: float
    """Its position on the run's axis (see ``Trend.order_by``)."""
    layers: int
    """Layers in the report."""
    not_audited: int
    """Layers with ``error`` set."""
    worst_sigma_effective: float | None
    """Largest σ_eff over the SN layers (``None`` without any)."""
    worst_sigma_layer: str | None
    worst_cos_error: float | None
    """Largest of ``cos_error_u``/``cos_error_v`` over the SN layers."""
    worst_cos_layer: str | None
    matrix_product: float | None
    """``lipschitz.matrix_product`` of the report's primary model."""
    operator_product: float | None
    """``lipschitz.operator_product`` (certified) of the report's primary model."""
    worst_gap_cos_error: float | None = None
    """Largest gap-aware cosine error (``gap_cos_error_u``/``_v``, what ``check`` judges) over the SN layers."""
    worst_gap_cos_layer: str | None = None
    verdict: tuple[str, ...] | None = None
    """The report's ``verdict``: every ``check`` rule this checkpoint breaks (``()``: all hold)."""


@dataclass(frozen=True)
class LayerSeries:
    """One layer over the run; one entry per checkpoint, ``None`` where absent or not audited."""

    name: str
    sigma_effective: tuple[float | None, ...]
    cos_error_u: tuple[float | None, ...]
    cos_error_v: tuple[float | None, ...]
    present: tuple[bool, ...]
    """Whether the layer is in each checkpoint."""
    gap_cos_error_u: tuple[float | None, ...] = ()
    """The gap-aware cosine error of u per checkpoint (``LayerAudit.gap_cos_error_u``)."""
    gap_cos_error_v: tuple[float | None, ...] = ()
    verdict: tuple[tuple[str, ...] | None, ...] = ()
    """The layer's ``verdict`` per checkpoint (``None`` where absent or not judged)."""

    @property
    def gap_cos_error(self) -> tuple[float | None, ...]:
        """The worse of the gap-aware u and v errors per checkpoint (what ``check`` judges)."""
        return tuple(max_or_none(u, v) for u, v in zip(self.gap_cos_error_u, self.gap_cos_error_v, strict=True))

    @property
    def flagged_last(self) -> bool:
        """Whether the layer breaks any rule in the last checkpoint it is in."""
        known = [v for v, here in zip(self.verdict, self.present, strict=False) if here]
        return bool(known) and bool(known[-1])

    def breaks_last(self, rule: str) -> bool:
        """Whether the layer breaks ``rule`` in the last checkpoint it is in."""
        known = [v for v, here in zip(self.verdict, self.present, strict=False) if here]
        return bool(known) and rule in (known[-1] or ())

    @property
    def cos_error(self) -> tuple[float | None, ...]:
        """The worse of u and v per checkpoint."""
        return tuple(max_or_none(u, v) for u, v in zip(self.cos_error_u, self.cos_error_v, strict=True))


@dataclass(frozen=True)
class Trend:
    """Checkpoints of one training run in order, a summary per checkpoint and a series per layer."""

    order_by: str
    """``global_step``, ``step``, ``iteration``, ``epoch``, ``file name`` or ``modification time``."""
    reports: tuple[Report, ...]
    """The reports, in run order."""
    steps: tuple[float, ...]
    """Each checkpoint's position on the axis (the step, the file-name number, or seconds since epoch)."""
    summary: tuple[CheckpointSummary, ...]
    layers: tuple[LayerSeries, ...]
    """Every layer seen in any checkpoint, in network order (a layer that appears midway is placed
    after its predecessor in the checkpoint that introduces it)."""
    changes: tuple[str, ...]
    """Layers that appear or vanish between checkpoints, and other facts about the ordering."""

    @property
    def checkpoints(self) -> tuple[str, ...]:
        return tuple(r.checkpoint for r in self.reports)

    @property
    def axis_label(self) -> str:
        """What the x axis of a trend plot shows."""
        if self.order_by == FILE_NAME:
            return "checkpoint number (from the file name)"
        if self.order_by == MODIFICATION_TIME:
            return "checkpoint (ordered by modification time)"
        return self.order_by

    def to_dict(self) -> dict[str, Any]:
        """The ``trend`` object of ``report --format json`` for several checkpoints."""
        return json_safe({
            "order_by": self.order_by,
            "checkpoints": list(self.checkpoints),
            "steps": [step_number(s) for s in self.steps],
            "summary": [{**vars(s), "step": step_number(s.step),
                         "verdict": None if s.verdict is None else list(s.verdict)} for s in self.summary],
            "layers": [
                {"name": s.name, "present": list(s.present), "sigma_effective": list(s.sigma_effective),
                 "cos_error_u": list(s.cos_error_u), "cos_error_v": list(s.cos_error_v),
                 "gap_cos_error_u": list(s.gap_cos_error_u), "gap_cos_error_v": list(s.gap_cos_error_v),
                 "verdict": [None if v is None else list(v) for v in s.verdict]}
                for s in self.layers
            ],
            "changes": list(self.changes),
        })

    def __str__(self) -> str:
        """The terminal view of the run (its summary and per-layer tables, 100 columns, no colour) as
        ``sninspect report`` prints it; ``repr`` keeps the dataclass fields."""
        from sninspect.render.terminal import run_text

        return run_text(self, width=100)

    def _repr_html_(self) -> str:
        """The run's summary and per-layer trend tables, for a notebook cell."""
        from sninspect.render.html import notebook_html

        return notebook_html(self)

    def plot(self) -> dict[str, Any]:
        """The run's matplotlib figures by name (``trend_sigma``, ``trend_cos_error``)."""
        from sninspect.render.plots import trend_figures

        return dict(trend_figures(self))


@dataclass(frozen=True)
class Separate:
    """Several checkpoints that are not one training run (other models, no common step or naming):
    each is reported on its own, and ``why`` says why they are not a run."""

    reports: tuple[Report, ...]
    """The reports, in the order given."""
    why: str
    """Why these checkpoints are not one run (their layer sets differ, ...)."""



def step_number(value: float) -> int | float:
    """A step as an int when it is one (JSON and labels show ``1200``, not ``1200.0``)."""
    return int(value) if float(value).is_integer() else value


def max_or_none(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None
