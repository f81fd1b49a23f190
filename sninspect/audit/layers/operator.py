"""A layer as an operator, beyond its reshaped matrix: the certified conv bound, the operator-sized
numbers of dialects whose σ is a convolution's at a stored input size, and the norm at the user's
input size."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.audit.bounds.cache import BoundCache, cached_bound
from sninspect.audit.checks import gap_cos_error
from sninspect.audit.layers.layer import LAYER_FAILURES
from sninspect.audit.memory import NO_LIMIT, Budget, bound_grid, bound_tol_fix, conv_bound_bytes, conv_same_bytes
from sninspect.dialects import OperatorView, SNLayer
from sninspect.errors import option
from sninspect.io import residency
from sninspect.linalg import conv_bounds, conv_same
from sninspect.linalg.spectral import cos_error, relative_error
from sninspect.results.report import LayerAudit


def effective_kernel(audit: LayerAudit, key: str, buffer_key: str | None, tensors: Mapping[str, Tensor],
                     device: torch.device) -> Tensor:
    """The weight the model uses, in its stored layout (W / σ̂, or the stored eval buffer), in float64:
    bounds are certified on the stored values whatever ``--dtype`` says (a float32 copy of a float64
    kernel would bound a rounded operator: 3.99999992 for a true norm of exactly 4)."""
    dtype = torch.float64
    if buffer_key is not None:
        return tensors[buffer_key].detach().to(device=device, dtype=dtype)
    if not audit.has_sn:
        return tensors[key].detach().to(device=device, dtype=dtype)
    assert audit.sigma_estimate is not None  # Precondition: an audited SN layer has σ̂
    weight = tensors[key].detach().to(device=device, dtype=dtype, copy=True)  # our own copy: divide in place
    return weight.div_(audit.sigma_estimate)


def operator_bytes(audit: LayerAudit, layer: SNLayer | None, tensors: Mapping[str, Tensor], tol: float,
                   input_size: tuple[int, ...] | None) -> int:
    """The most bytes one step of this layer's operator work asks the budget for (the frequency bound,
    the bracket at the stored size, the norm at ``input_size``): what running layers side by side
    must leave room for. 0 for layers with none; a layout that fails here fails in the work itself."""
    if audit.error is not None or audit.sigma_effective is None or not audit.kind.startswith("conv"):
        return 0
    shape = tuple(audit.shape)
    transposed = audit.kind.startswith("conv_transpose")
    try:
        need = conv_bound_bytes(shape, bound_grid(shape, tol))
        view = None if layer is None else dialects.of(layer).operator_view(layer, tensors)
    except LAYER_FAILURES:
        return 0
    if view is not None and view.size is not None:
        need = max(need, conv_same_bytes(shape, view.size, view.u_side == "output"))
    if input_size is not None:
        size = tuple(input_size[i] if i < len(input_size) else input_size[-1] for i in range(len(shape) - 2))
        need = max(need, conv_same_bytes(shape, size, transposed))
    return need


def with_operator_bound(audit: LayerAudit, key: str, buffer_key: str | None, tensors: Mapping[str, Tensor],
                        device: torch.device, tol: float, budget: Budget = NO_LIMIT, floor: float = 0.0,
                        cache: BoundCache | None = None) -> LayerAudit:
    """Add ``operator_bound`` / ``operator_lower``: σ_eff for linear layers, the certified conv bound
    for convolutions; nothing for embeddings and vectors (not part of a chain). The bound's frequency
    grid grows as ``tol`` shrinks: its memory is checked against ``budget`` first. ``floor``: a lower
    bound of the effective kernel's norm over all sizes already known (a circulant's norm), where the
    bound's search starts."""
    if audit.error is not None or audit.sigma_effective is None:
        return audit
    if audit.kind == "linear":
        return bracketed(audit, audit.sigma_effective, audit.sigma_effective)
    if not audit.kind.startswith("conv"):
        return audit
    shape = tuple(audit.shape)
    if cache is None:  # with a cache, memory is asked for only when the bound is computed (below)
        require_bound(shape, tol, budget)
    kernel = effective_kernel(audit, key, buffer_key, tensors, device)
    residency.release()  # the kernel is copied: hand the file's pages back before the bound's work
    bound = cached_bound(cache, kernel, tol=tol, device=device, floor=floor,
                         before=lambda: require_bound(shape, tol, budget))
    return bracketed(audit, bound.upper, bound.lower)


def bracketed(audit: LayerAudit, upper: float, lower: float) -> LayerAudit:
    """``audit`` with the certified bracket [lower, upper] of its operator norm and its width
    upper / lower − 1 (0 where exact; inf where lower is 0 and upper is not)."""
    width = 0.0 if upper == lower else (upper / lower - 1.0 if lower > 0.0 else math.inf)
    return replace(audit, operator_bound=upper, operator_lower=lower, operator_width=width)


def require_bound(shape: tuple[int, ...], tol: float, budget: Budget) -> None:
    """Refuse (:class:`MemoryBudgetError`) the certified conv bound of a kernel of ``shape`` at ``tol``
    when its estimate is over ``budget``, before anything is allocated; the refusal names the finest
    ``--bound-tol`` that fits."""
    grid = bound_grid(shape, tol)
    what = ("the cheapest certified conv bound (no frequency grid) " if grid is None else
            f"the certified conv bound at {option('bound_tol', f'{tol:g}')} (a {'×'.join(map(str, grid))} frequency "
            "grid) ")
    budget.require(conv_bound_bytes(shape, grid), what, fix=lambda room: bound_tol_fix(shape, tol, room))


def with_operator_sized(audit: LayerAudit, layer: SNLayer | None, tensors: Mapping[str, Tensor],
                        device: torch.device, budget: Budget = NO_LIMIT, tol: float = 0.01,
                        cache: BoundCache | None = None) -> LayerAudit:
    """For a layer whose σ is a convolution operator's (``Dialect.operator_view``): the σ numbers of
    that operator (:func:`_operator_audit`) and its ``operator_bound``/``operator_lower`` (the
    frequency bracket of width ``tol``, started from the circulant norm the sized bracket found);
    every other layer unchanged."""
    done, pending = operator_sized(audit, layer, tensors, device, budget, tol, cache)
    if pending is None:
        return done
    return with_operator_bound(done, pending.key, pending.buffer_key, tensors, device, tol, budget, pending.floor,
                               cache)


@dataclass(frozen=True)
class PendingBound:
    """What an operator-sized layer's certified bound, not computed yet, starts from."""

    key: str
    buffer_key: str | None
    floor: float
    """The effective kernel's padded circulant norm (a lower bound of σ*), just under."""


def operator_sized(audit: LayerAudit, layer: SNLayer | None, tensors: Mapping[str, Tensor],
                   device: torch.device, budget: Budget = NO_LIMIT, tol: float = 0.01,
                   cache: BoundCache | None = None) -> tuple[LayerAudit, PendingBound | None]:
    """:func:`with_operator_sized` without the frequency bound: the σ numbers (and the bound where the
    circulant already gives it, or the layer's σ is the bound itself), and what the bound, when
    asked for, starts from (None when there is none to compute here)."""
    if audit.error is not None or layer is None:
        return audit, None
    view = dialects.of(layer).operator_view(layer, tensors)
    if view is None:
        return audit, None
    if view.size is None:
        return _unsized_audit(audit, layer, view, tensors, device, tol, budget, cache), None
    done, circulant = _operator_audit(audit, layer, view, view.size, tensors, device, budget)
    if not done.kind.startswith("conv"):
        return done, None
    shape = tuple(done.shape)
    padded = [n + k - 1 for n, k in zip(view.size, shape[2:], strict=True)]
    known = conv_bounds.bound_from_circulant(shape, padded, circulant, tol)
    if known is not None:  # the effective kernel's circulant at the padded size is fine enough a grid
        return bracketed(done, known.upper, known.lower), None
    return done, PendingBound(layer.weight_key, view.eval_key, circulant * (1.0 - 1e-12))


def _operator_audit(audit: LayerAudit, layer: SNLayer, view: OperatorView, size: tuple[int, ...],
                    tensors: Mapping[str, Tensor], device: torch.device,
                    budget: Budget) -> tuple[LayerAudit, float]:
    """Conv-operator SN (Ryu et al. 2019), residual flows' conv SN: σ numbers are the zero-padded
    'same' convolution's at the stored size, and the stored vectors are compared with the operator's
    exact top singular vectors on their own side (u on the input or the output side, v on the input).
    Also returns the effective kernel's padded circulant norm (≤ its norm over all sizes)."""
    assert audit.sigma_estimate is not None  # Precondition: an audited SN layer has σ̂
    w_shape = tuple(audit.shape)
    output_side = view.u_side == "output"
    budget.require(conv_same_bytes(w_shape, size, output_side),
                   f"the conv-operator norm at the stored size {'×'.join(map(str, size))} ")
    weight = tensors[layer.weight_key].detach().to(device=device, dtype=torch.float64)
    u = None if view.u is None else view.u.to(device=device, dtype=torch.float64)
    start = u if u is not None and bool(u.any()) else None
    # One bracket per operator: the stored eval buffer is W / σ̂ only up to the optimizer step taken
    # after it was written (~1e-3 relative in published files), too far to derive one from the other;
    # the second run starts from the first's vector. Without a buffer the eval kernel is W / σ̂ exactly.
    exact = _sized(weight, size, output_side, start)
    if view.eval_key is not None:
        buffer = tensors[view.eval_key].detach().to(device=device, dtype=torch.float64)
        effective = _sized(buffer, size, output_side, None if exact.block is None else exact.block[:2],
                           certify_gap=False)
    else:
        scale = abs(audit.sigma_estimate)
        effective = replace(exact, lower=exact.lower / scale, upper=exact.upper / scale,
                            circulant=exact.circulant / scale)
    # The operator's top values are nearly tied on trained kernels (σ2/σ1 = 1 − 1e-7 on published RealSN
    # layers at 40×40): σ2/σ1 is the operator's, decided from the block's top Ritz pairs or unknown, and the
    # cosines are measured against the top Ritz vector, one vector of the cluster.
    known = exact.gap is not None
    cos_u = cos_error(u.reshape(-1), exact.vector.reshape(-1)) if start is not None and known else None
    cos_v = v_norm = None
    if view.v is not None:
        v = view.v.to(device=device, dtype=torch.float64)
        v_norm = float(torch.linalg.vector_norm(v))
        if output_side and known and bool(v.any()):
            _forward, adjoint = conv_same.same_conv_pair(weight, size)
            cos_v = cos_error(v.reshape(-1), adjoint(exact.vector).reshape(-1))  # x1 ∝ Aᵀ y1
    where = "×".join(map(str, size))
    note = (f"conv operator: σ exact, σ̂'s reference and σ_eff are the operator norms of the zero-padded "
            f"'same' convolution at {where} ({view.u_side}-side u{', input-side v' if view.v is not None else ''}),"
            " σ2/σ1 the operator's too (from the top Ritz pairs of a block Lanczos run); stable rank is the "
            "reshaped matrix's",)
    note += view.notes + _cluster_note(exact, cos_u, cos_v) + _unconverged(exact, "σ exact")
    note += _unconverged(effective, "σ_eff")
    return replace(
        audit,
        sigma_exact=exact.lower,
        sigma_rel_error=relative_error(audit.sigma_estimate, exact.lower),
        sigma_effective=effective.lower,
        cos_error_u=cos_u,
        cos_error_v=cos_v,
        spectral_gap=exact.gap,
        degenerate=exact.degenerate,
        u_norm=None if u is None else float(torch.linalg.vector_norm(u)),
        v_norm=v_norm if view.v is not None else audit.v_norm,
        uv_residual=None,
        bracket_width=max(exact.width, effective.width),
        notes=audit.notes + note,
    ), effective.circulant


def _unsized_audit(audit: LayerAudit, layer: SNLayer, view: OperatorView, tensors: Mapping[str, Tensor],
                   device: torch.device, tol: float, budget: Budget, cache: BoundCache | None) -> LayerAudit:
    """A conv normalized by its operator norm at a size the state does not store (projection SN): σ exact
    and σ_eff are the lower ends of the frequency brackets of the operator norm over all input sizes —
    the exact norm of the circular convolution on the bracket's grid, a certified lower bound on that
    supremum within the bracket's width of it (measured up to 4.6e-5 below it on the published
    averaged-CNN layers at the default --bound-tol, inside the stated bracket) — while ``operator_bound``
    keeps the certified upper end (the eval kernel's brackets are the layer's operator numbers)."""
    assert audit.sigma_estimate is not None  # Precondition: an audited SN layer has σ̂
    require_bound(tuple(audit.shape), tol, budget)
    weight = tensors[layer.weight_key].detach().to(device=device, dtype=torch.float64)
    exact = cached_bound(cache, weight, tol=tol, device=device)
    if audit.operator_bound is None or audit.operator_lower is None:
        audit = with_operator_bound(audit, layer.weight_key, view.eval_key, tensors, device, tol, budget,
                                    cache=cache)
    eff_upper, eff_lower = audit.operator_bound, audit.operator_lower
    assert eff_upper is not None and eff_lower is not None  # Precondition: operator_view gives convs only
    note = ("conv operator at a size not stored: σ exact and σ_eff are the norms over all input sizes, as "
            f"the lower ends of their certified brackets [{exact.lower:.6g}, {exact.upper:.6g}] and "
            f"[{eff_lower:.6g}, {eff_upper:.6g}] (op bound: the upper end); give {option('input_size')} for the norm "
            "at one size; σ2/σ1 not computed (the reshaped kernel's is not the operator's)",)
    return replace(
        audit,
        sigma_exact=exact.lower,
        sigma_rel_error=relative_error(audit.sigma_estimate, exact.lower),
        sigma_effective=eff_lower,
        spectral_gap=None,
        degenerate=False,
        notes=audit.notes + view.notes + note,
    )


def _sized(kernel: Tensor, size: tuple[int, ...], transposed: bool, start: Tensor | None,
           certify_gap: bool = True) -> conv_same.SizedNorm:
    """The 'same'-conv norm bracket at ``size``: the Lanczos lower end, the padded circulant's norm as
    the certified upper end (also where Lanczos ran out of products); σ2/σ1 decided only where asked."""
    return conv_same.conv_same_operator_norm(kernel, size, transposed=transposed, u0=start, certify_gap=certify_gap)


def _cluster_note(exact: conv_same.SizedNorm, cos_u: float | None, cos_v: float | None) -> tuple[str, ...]:
    """One note where the operator's top is a cluster: what σ2/σ1 is, and how the cosines are to be read."""
    if exact.gap is None:
        return ("σ2/σ1 unknown: the top Ritz pairs leave it on both sides of 1 − 1e-6 (the degeneracy line), "
                "so no cosine error is given (no top vector to compare with)",)
    if exact.cluster < 2 and not exact.degenerate:
        return ()
    forced = [f"{name} {gap_cos_error(value, exact.gap):.2g}" for name, value in (("u", cos_u), ("v", cos_v))
              if value is not None]
    judged = (f"; gap-aware (what the angle forces σ̂ low, as check judges it): {', '.join(forced)}"
              if forced else "")
    kind = "degenerate (the top vector is not unique)" if exact.degenerate else "a cluster"
    return (f"the operator's top is {kind}: σ2/σ1 ≥ {exact.gap:.9f} (certified from the block's Ritz pairs); "
            f"the cosine errors are against one vector of it and mean little alone{judged}",)


def _unconverged(norm: conv_same.SizedNorm, what: str) -> tuple[str, ...]:
    """A note when a bracket stopped on its product budget, wider than asked."""
    if norm.converged:
        return ()
    return (f"{what}: bracket [{norm.lower:.6g}, {norm.upper:.6g}] after {norm.products} products "
            f"(wider than asked: budget spent)",)


def at_input(audit: LayerAudit, key: str, buffer_key: str | None, tensors: Mapping[str, Tensor],
             device: torch.device, input_size: tuple[int, ...], budget: Budget = NO_LIMIT) -> LayerAudit:
    """``operator_at_input``: the exact 'same'-padding norm of a conv's effective weight at the
    user's input size (the last given size is repeated for more spatial axes)."""
    if audit.error is not None or not audit.kind.startswith("conv") or audit.sigma_effective is None:
        return audit
    spatial = len(audit.shape) - 2
    size = tuple(input_size[i] if i < len(input_size) else input_size[-1] for i in range(spatial))
    budget.require(conv_same_bytes(audit.shape, size, audit.kind.startswith("conv_transpose")),
                   f"the norm at {option('input_size', '×'.join(map(str, size)))} ")
    kernel = effective_kernel(audit, key, buffer_key, tensors, device)
    norm = _sized(kernel, size, audit.kind.startswith("conv_transpose"), None, certify_gap=False)
    width = norm.width if audit.bracket_width is None else max(norm.width, audit.bracket_width)
    return replace(audit, operator_at_input=norm.lower, bracket_width=width,
                   notes=audit.notes + _unconverged(norm, "operator_at_input"))
