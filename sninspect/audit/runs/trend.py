"""A training run: several checkpoints of one model put in order, with per-layer series.

Pure: reports (and, for the last-resort ordering, modification times) in, a :class:`Trend` out.
The order comes from ONE source shared by every checkpoint, the first that all of them have:

1. a step entry saved in the file (``global_step``, ``step``, ``iteration``, ``epoch``: ``Report.extras``);
2. the last number in the file name (``ckpt_000500.pt`` → 500, ``D_epoch3_step1200.pt`` → 1200);
3. the file's modification time.

Mixing sources (one file by step, another by name) would put unrelated numbers on one axis, so a
source that only some checkpoints have is not used. Layers are matched by name; a layer that appears
or vanishes between checkpoints gets ``None`` where it is absent and a line in ``Trend.changes``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from sninspect.io.suffixes import checkpoint_stem
from sninspect.results.report import LayerAudit, Report
from sninspect.results.trend import (
    FILE_NAME,
    MODIFICATION_TIME,
    CheckpointSummary,
    LayerSeries,
    Trend,
    max_or_none,
    step_number,
)

STEP_KEYS = ("global_step", "step", "iteration", "epoch")
"""Entries of ``Report.extras`` that order a run, most specific first."""


def build(reports: Sequence[Report], mtimes: Mapping[str, float] | None = None) -> Trend:
    """Order ``reports`` as a run and collect the series; ``mtimes`` (by ``Report.checkpoint``) is the
    last-resort ordering, used only when neither a step entry nor a file-name number is in every file."""
    # Precondition: a run has at least one checkpoint.
    assert reports, "a trend needs at least one report"
    order_by, steps = _positions(reports, mtimes or {})
    ordered = sorted(zip(steps, reports, strict=True), key=lambda t: (t[0], _natural(t[1].checkpoint)))
    reports = [r for _, r in ordered]
    steps = [s for s, _ in ordered]
    changes: list[str] = []
    unrelated = not_a_run(reports)
    if unrelated is not None:
        changes.append(f"{unrelated}; ordered as one run because a run was asked for")
    if order_by == MODIFICATION_TIME and len(reports) > 1:
        changes.append("no step entry or file-name number in every checkpoint: ordered by modification time")
    seen: dict[float, str] = {}
    for step, report in zip(steps, reports, strict=True):
        if step in seen:
            changes.append(f"{_base(report.checkpoint)} and {_base(seen[step])} share {order_by} "
                           f"{step_number(step)}; kept in file-name order")
        seen.setdefault(step, report.checkpoint)
    names = _layer_order(reports)
    series = tuple(_series(name, reports) for name in names)
    changes.extend(_appear_vanish(series, reports, steps, order_by))
    return Trend(
        order_by=order_by,
        reports=tuple(reports),
        steps=tuple(steps),
        summary=tuple(summarize(r, s) for r, s in zip(reports, steps, strict=True)),
        layers=series,
        changes=tuple(changes),
    )


def not_a_run(reports: Sequence[Report]) -> str | None:
    """Why ``reports`` are not checkpoints of one model's training run, or None when they are: the
    same layer set (names and shapes) in every file; or, where layers appear or vanish, a step entry in
    every file or one file-name pattern (``ckpt_#.pt``), with at least half of each file's layers shared
    by all (by name). Digits in unrelated names (``flowx08``, ``sigma10``) make no run."""
    if len(reports) < 2:
        return None
    sets = [{(la.name, la.shape) for la in r.layers} for r in reports]
    if all(layers == sets[0] for layers in sets[1:]):
        return None
    names = [{name for name, _ in layers} for layers in sets]  # a layer may change shape as the run grows
    shared = set.intersection(*names)
    overlap = all(2 * len(shared) >= len(layers) for layers in names)
    stepped = any(all(_as_number(r.extras.get(key)) is not None for r in reports) for key in STEP_KEYS)
    patterns = {_pattern(r.checkpoint) for r in reports}
    named = len(patterns) == 1 and "#" in next(iter(patterns))
    if overlap and (stepped or named):
        return None
    what = f"{len(shared)} layers shared by all" if shared else "no layer shared by all"
    missing = [] if stepped else ["no step entry in every file"]
    missing += [] if named else ["no common file-name pattern"]
    return (f"not one model's training run: their layer sets differ ({what})"
            + (f"; {' and '.join(missing)}" if missing else ""))


def _pattern(path: str) -> str:
    """The file name with each run of digits as ``#`` (``ckpt_000500.pt`` → ``ckpt_#.pt``)."""
    return re.sub(r"\d+", "#", PurePath(path).name)


def summarize(report: Report, step: float) -> CheckpointSummary:
    """Worst σ_eff and cosine error over the SN layers, and the primary model's network bounds."""
    sn = [la for la in report.layers if la.has_sn and la.error is None]
    worst_eff = max((la for la in sn if _finite(la.sigma_effective)),
                    key=lambda la: la.sigma_effective or 0.0, default=None)
    worst_cos: tuple[float, str] | None = None
    for la in sn:
        value = max_or_none(la.cos_error_u, la.cos_error_v)
        if value is not None and (worst_cos is None or value > worst_cos[0]):
            worst_cos = (value, la.name)
    worst_gap: tuple[float, str] | None = None
    for la in sn:
        value = max_or_none(la.gap_cos_error_u, la.gap_cos_error_v)
        if value is not None and (worst_gap is None or value > worst_gap[0]):
            worst_gap = (value, la.name)
    bound = report.primary.lipschitz
    return CheckpointSummary(
        checkpoint=report.checkpoint,
        step=step,
        layers=len(report.layers),
        not_audited=sum(la.error is not None for la in report.layers),
        worst_sigma_effective=worst_eff.sigma_effective if worst_eff else None,
        worst_sigma_layer=worst_eff.name if worst_eff else None,
        worst_cos_error=worst_cos[0] if worst_cos else None,
        worst_cos_layer=worst_cos[1] if worst_cos else None,
        matrix_product=bound.matrix_product,
        operator_product=bound.operator_product,
        worst_gap_cos_error=worst_gap[0] if worst_gap else None,
        worst_gap_cos_layer=worst_gap[1] if worst_gap else None,
        verdict=report.verdict,
    )


def step_from_extras(extras: Mapping[str, Any]) -> tuple[str, float] | None:
    """The first of ``STEP_KEYS`` present as a number (a numeric string counts: safetensors metadata)."""
    for key in STEP_KEYS:
        value = _as_number(extras.get(key))
        if value is not None:
            return key, value
    return None


def number_in_name(path: str) -> float | None:
    """The last run of digits in the file name without its checkpoint suffix; None when there is none."""
    digits = re.findall(r"\d+", checkpoint_stem(PurePath(path).name))
    return float(digits[-1]) if digits else None


# ----------------------------------------------------------------------------------------------


def _positions(reports: Sequence[Report], mtimes: Mapping[str, float]) -> tuple[str, list[float]]:
    for key in STEP_KEYS:
        values = [_as_number(r.extras.get(key)) for r in reports]
        if all(v is not None for v in values):
            return key, [v for v in values if v is not None]
    from_names = [number_in_name(r.checkpoint) for r in reports]
    if all(v is not None for v in from_names):
        return FILE_NAME, [v for v in from_names if v is not None]
    return MODIFICATION_TIME, [float(mtimes.get(r.checkpoint, 0.0)) for r in reports]


def _layer_order(reports: Sequence[Report]) -> list[str]:
    """Union of layer names; a new name goes right after its predecessor in its first checkpoint."""
    order: list[str] = []
    for report in reports:
        present = {la.name for la in report.layers}
        previous: str | None = None
        for layer in report.layers:
            if layer.name not in order:
                at = order.index(previous) + 1 if previous is not None else 0
                # Skip past names already placed after the predecessor that this checkpoint lacks.
                while at < len(order) and order[at] not in present:
                    at += 1
                order.insert(at, layer.name)
            previous = layer.name
    return order


def _series(name: str, reports: Sequence[Report]) -> LayerSeries:
    found: list[LayerAudit | None] = []
    for report in reports:
        found.append(next((la for la in report.layers if la.name == name), None))
    return LayerSeries(
        name=name,
        sigma_effective=tuple(_finite_or_none(la.sigma_effective) if la else None for la in found),
        cos_error_u=tuple(la.cos_error_u if la else None for la in found),
        cos_error_v=tuple(la.cos_error_v if la else None for la in found),
        present=tuple(la is not None for la in found),
        gap_cos_error_u=tuple(la.gap_cos_error_u if la else None for la in found),
        gap_cos_error_v=tuple(la.gap_cos_error_v if la else None for la in found),
        verdict=tuple(la.verdict if la else None for la in found),
    )


def _appear_vanish(series: Sequence[LayerSeries], reports: Sequence[Report], steps: Sequence[float],
                   order_by: str) -> list[str]:
    out = []
    for s in series:
        for i in range(1, len(reports)):
            if s.present[i] and not s.present[i - 1]:
                out.append(f"layer '{s.name}' appears in {_base(reports[i].checkpoint)} "
                           f"({order_by} {step_number(steps[i])})")
            elif s.present[i - 1] and not s.present[i]:
                out.append(f"layer '{s.name}' vanishes in {_base(reports[i].checkpoint)} "
                           f"({order_by} {step_number(steps[i])})")
    return out


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) <= 2**63 else None  # a 400-digit step orders nothing
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _natural(path: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _base(path: str) -> str:
    return PurePath(path).name


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _finite_or_none(value: float | None) -> float | None:
    return value if _finite(value) else None
