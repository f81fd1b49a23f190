"""One layer's audit: every per-layer number of the report (README "The numbers") from its matrix and
exact spectrum, and the invariant checks that turn them into warnings."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.audit.layers.inventory import layer_kind
from sninspect.audit.layers.tensors import UsableTensors
from sninspect.audit.memory import format_size
from sninspect.dialects import SNLayer
from sninspect.errors import SninspectError, option
from sninspect.io.load import display_name
from sninspect.linalg.exact import Spectrum
from sninspect.linalg.spectral import cos_error, relative_error, stable_rank, uv_residual
from sninspect.results.report import PLAIN, LayerAudit

NORM_TOLERANCE = 1e-3
"""‖u‖ or ‖v‖ further than this from 1 is reported (EMA-averaged buffers, hand-edited state)."""


@dataclass(frozen=True)
class PlainLayer:
    """A weight layer without SN."""

    key: str
    name: str
    notes: tuple[str, ...] = ()


LAYER_FAILURES: tuple[type[BaseException], ...] = (
    SninspectError, torch.linalg.LinAlgError, RuntimeError, ValueError, ArithmeticError, IndexError,
    MemoryError,
)
"""What goes wrong inside one layer's audit and becomes that layer's ``error``: sninspect's own
errors (a broken layer, the math's typed :class:`~sninspect.errors.LinalgError`, a refused tensor
kind, the memory guard) and torch's errors about one layer's tensors (a solver that does not
converge, shapes or dtypes an operation does not take). Everything else (KeyError, TypeError,
AttributeError, AssertionError) is a bug in sninspect and stays one: exit 5."""


T = TypeVar("T")


def contained(layer: SNLayer | PlainLayer, tensors: Mapping[str, Tensor], work: Callable[[], T],
              partial: LayerAudit | None = None) -> T | LayerAudit:
    """The per-layer error boundary: ``work()``, or, when it fails with one of :data:`LAYER_FAILURES`,
    the layer's audit (``partial`` where some numbers are known) with the one-line reason as its error;
    the other layers go on."""
    try:
        return work()
    except LAYER_FAILURES as err:
        reason = failure_reason(err)
        return replace(partial, error=reason) if partial is not None else error_audit(layer, tensors, reason)


_TRIED = re.compile(r"tried to allocate (\d+) bytes")


def failure_reason(err: BaseException) -> str:
    """One line: sninspect's own message, or a torch error's type and first line."""
    if isinstance(err, SninspectError):
        return str(err)
    text = str(err)
    if isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        tried = _TRIED.search(text)
        size = f" of {format_size(int(tried.group(1)))}" if tried else ""
        return (f"ran out of memory: an allocation{size} failed (the memory guard's estimate fit the budget; "
                f"{option('max_memory', 'SIZE')} below what this process may use makes it refuse such work "
                "up front)")
    text = " ".join(text.split()) or "no message"
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"could not be audited: {type(err).__name__}: {text}"


def base_audit(layer: SNLayer | PlainLayer, tensors: Mapping[str, Tensor]) -> LayerAudit:
    """What a layer is (name, dialect, kind, shape, dim, dtype, notes), before any number."""
    if isinstance(layer, SNLayer):
        key, name, dialect = layer.weight_key, display_name(layer.name), layer.dialect
        dim, notes, keys = layer.dim, layer.notes, layer.keys
    else:
        key, name, dialect, dim, notes, keys = layer.key, layer.name, PLAIN, 0, layer.notes, (layer.key,)
    raw = tensors.raw if isinstance(tensors, UsableTensors) else tensors  # shape and dtype as stored
    if isinstance(tensors, UsableTensors):
        notes = notes + tensors.notes_for(keys)
    shape = tuple(raw[key].shape)
    return LayerAudit(
        name=name, model="", dialect=dialect, kind=layer_kind(name, shape, dim or 0), shape=shape,
        dim=dim or 0, dtype=str(raw[key].dtype).removeprefix("torch."), notes=notes,
    )


def error_audit(layer: SNLayer | PlainLayer, tensors: Mapping[str, Tensor], message: str) -> LayerAudit:
    """The audit of a layer that could not be audited: what it is, and why not."""
    return replace(base_audit(layer, tensors), error=message)


def audit_layer(
    layer: SNLayer | PlainLayer, matrix: Tensor, spectrum: Spectrum, tensors: Mapping[str, Tensor]
) -> LayerAudit:
    """Every per-layer number of the report (the fields of :class:`~sninspect.results.report.LayerAudit`)."""
    base = base_audit(layer, tensors)
    sigma1 = spectrum.sigma1
    common = dict(
        sigma_exact=sigma1,
        spectral_gap=spectrum.gap,
        stable_rank=stable_rank(matrix, sigma1),
        degenerate=spectrum.degenerate,
        singular_values=tuple(float(s) for s in spectrum.values.cpu()),
    )
    if not isinstance(layer, SNLayer):
        return replace(base, sigma_effective=sigma1, **common)  # type: ignore[arg-type]

    estimate = dialects.by_name(layer.dialect).estimate(layer, matrix, tensors)
    sigma_hat = estimate.sigma_hat
    if estimate.eval_matrix is not None:
        effective = float(torch.linalg.matrix_norm(estimate.eval_matrix, ord=2))
    else:
        effective = sigma1 / sigma_hat if sigma_hat != 0.0 else math.inf
    u, v = estimate.u, estimate.v
    cos_u = cos_v = None
    if not spectrum.degenerate:
        cos_u = cos_error(u, spectrum.u1) if u is not None and bool(u.any()) else None
        cos_v = cos_error(v, spectrum.v1) if v is not None and bool(v.any()) else None
    notes = base.notes + estimate.notes
    if spectrum.degenerate:
        notes += (f"σ1 ≈ σ2 (σ2/σ1 = {spectrum.gap:.9f}): the top singular vector is not unique, no cosine",)
    return replace(
        base,
        sigma_estimate=sigma_hat,
        sigma_rel_error=relative_error(sigma_hat, sigma1),
        sigma_effective=effective,
        cos_error_u=cos_u,
        cos_error_v=cos_v,
        u_norm=float(torch.linalg.vector_norm(u)) if u is not None else None,
        v_norm=float(torch.linalg.vector_norm(v)) if v is not None else None,
        uv_residual=uv_residual(matrix, u, v) if u is not None and v is not None else None,
        notes=notes,
        **common,  # type: ignore[arg-type]
    )



def layer_warnings(audits: Sequence[LayerAudit]) -> list[str]:
    """One line per layer and broken invariant: not audited, σ̂ ≤ 0, u or v not of unit norm, σ1 ≈ σ2."""
    out = []
    for a in audits:
        if a.error is not None:
            out.append(f"layer '{a.name}' not audited: {a.error}")
            continue
        if a.sigma_estimate is not None and a.sigma_estimate <= 0.0:
            out.append(f"layer '{a.name}': σ̂ = {a.sigma_estimate:.4g} ≤ 0 flips the sign of the weight "
                       "(u/v saved before any training step?)")
        for which, norm in (("u", a.u_norm), ("v", a.v_norm)):
            if norm is not None and abs(norm - 1.0) > NORM_TOLERANCE:
                out.append(f"layer '{a.name}': ‖{which}‖ = {norm:.6g}, expected 1 (EMA-averaged or edited buffer?)")
        if a.degenerate and a.has_sn:
            given = "no cosine given" if a.cos_error_u is None and a.cos_error_v is None else "cosines judged gap-aware"
            out.append(f"layer '{a.name}': σ1 ≈ σ2, the top singular vector is not unique ({given})")
    return out
