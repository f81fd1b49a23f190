"""The network bound in plain words, with the file's own numbers: what SN bounds (each reshaped matrix,
∏ σ_eff), what the certified operator product bounds and why it is larger (a k×k convolution as an
operator stretches by up to √(kh·kw) times its reshaped matrix), which factors carry no SN, and how
BatchNorm enters. Reads ``NetworkBound.factors``; computes nothing beyond ratios and picking extremes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sninspect.errors import flag
from sninspect.results.report import FACTOR_BATCHNORM, FACTOR_PLAIN, FACTOR_SN, ChainFactor, ModelAudit

_LISTED = 4
"""Names listed in one line before the rest is counted."""


def model_story(model: ModelAudit) -> list[tuple[str, str]]:
    """The lines for one model; none when its chain is empty or its bound unavailable (said elsewhere)."""
    bound = model.lipschitz
    factors = bound.factors
    weights = [f for f in factors if f.role != FACTOR_BATCHNORM]
    if not weights or bound.matrix_product is None:
        return []
    sn = [f for f in weights if f.role == FACTOR_SN]
    plain = [f for f in weights if f.role == FACTOR_PLAIN]
    norms = [f for f in factors if f.role == FACTOR_BATCHNORM]
    convs = any(f.kind.startswith("conv") and len(f.shape) > 2 for f in weights)
    if sn:
        caveat = " (not a bound on the network: convolutions)" if convs else ""
        lines = [(f"SN bounds: each reshaped weight matrix; ∏ σ_eff = {_num(bound.matrix_product)} over "
                  f"{_factor_count(sn, plain, norms)}{caveat}", "")]
    else:
        lines = [(f"no SN layer: both products are of the plain weights ({_factor_count(sn, plain, norms)})", "")]
    stretch = _stretch_line(weights, bound.operator_product)
    if stretch:
        lines.append((stretch, ""))
    if plain and sn:
        lines.append((_plain_line(plain, model), ""))
    dominant = _dominant(factors)
    if dominant is not None and dominant.role != FACTOR_SN and sn:
        lines.append((_dominant_line(dominant, bound.matrix_product), "yellow"))
    if norms:
        lines.append((_batchnorm_line(norms), ""))
    if bound.excluded:
        lines.append((f"in neither product: {_listed(list(bound.excluded))} (embeddings, 1-D weights and layers "
                      "not audited are no factor of the chain)", ""))
    return lines


def _factor_count(sn: Sequence[ChainFactor], plain: Sequence[ChainFactor], norms: Sequence[ChainFactor]) -> str:
    parts = [f"{len(sn)} SN layer{_s(sn)}"] if sn else []
    if plain:
        parts.append(f"{len(plain)} layer{_s(plain)} without SN")
    if norms:
        parts.append(f"{len(norms)} BatchNorm")
    return " + ".join(parts)


def _stretch_line(weights: Sequence[ChainFactor], operator_product: float | None) -> str:
    """Why the certified product is larger: each conv's op bound / σ_eff, against √(kh·kw)."""
    if operator_product is None:
        return "certified bound: none (a factor has no certified operator bound)"
    convs = [f for f in weights if f.kind.startswith("conv") and len(f.shape) > 2]
    if not convs:
        return (f"certified bound: ∏ op bound = {_num(operator_product)}, the same factors (a linear layer's "
                "operator norm is its matrix norm)")
    ratios = [f.operator / f.matrix for f in convs
              if f.operator is not None and f.matrix is not None and f.matrix > 0]
    caps = sorted({math.sqrt(math.prod(f.shape[2:])) for f in convs})
    cap = _num(caps[0]) if len(caps) == 1 else f"{_num(caps[0])}–{_num(caps[-1])}"
    spread = f"; here op bound / σ_eff = {_range(ratios)} ({len(ratios)} conv{_s(ratios)})" if ratios else ""
    return (f"certified bound: ∏ op bound = {_num(operator_product)} bounds the network; a conv as an operator "
            f"stretches up to √(kh·kw) = {cap}× its reshaped matrix norm{spread}")


def _plain_line(plain: Sequence[ChainFactor], model: ModelAudit) -> str:
    shown = {la.name for la in model.layers}
    items = [f"{f.name} (σ_eff {_num(f.matrix)})" for f in plain]
    hidden = [f for f in plain if f.name not in shown]
    text = f"without SN: {_listed(items)}"
    if hidden:
        them = "it" if len(hidden) == 1 else "them"
        text += f"; {len(hidden)} not in the table ({flag('all_layers', '--all')} lists {them})"
    return text


def _dominant(factors: Sequence[ChainFactor]) -> ChainFactor | None:
    """The largest factor above 1 (by matrix norm), or None."""
    sized = [f for f in factors if f.matrix is not None and math.isfinite(f.matrix)]
    top = max(sized, key=lambda f: f.matrix or 0.0, default=None)
    return top if top is not None and (top.matrix or 0.0) > 1.0 else None


def _dominant_line(factor: ChainFactor, product: float) -> str:
    what = "the BatchNorm" if factor.role == FACTOR_BATCHNORM else "a layer without SN,"
    return (f"warning: the largest factor is {what} '{factor.name}' ({_num(factor.matrix)} of ∏ σ_eff "
            f"{_num(product)}): SN does not limit it")


def _batchnorm_line(norms: Sequence[ChainFactor]) -> str:
    known = [f for f in norms if f.matrix is not None]
    text = (f"BatchNorm: {len(norms)} in both products as max |γ|/√(running_var + ε)")
    if known:
        top = max(known, key=lambda f: f.matrix or 0.0)
        text += (f"; ∏ {_num(math.prod(f.matrix or 1.0 for f in known))}, largest '{top.name}' "
                 f"({_num(top.matrix)})")
    return text


def _range(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return _num(low) if _num(low) == _num(high) else f"{_num(low)}–{_num(high)}"


def _listed(items: Sequence[str]) -> str:
    if len(items) <= _LISTED:
        return ", ".join(items)
    return ", ".join(items[:_LISTED]) + f" and {len(items) - _LISTED} more"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.3g}"


def _s(items: Sequence[object]) -> str:
    return "" if len(items) == 1 else "s"
