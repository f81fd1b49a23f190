"""``sninspect check``: judge reports against rules. Pure: reports and rules in, violations out.

The default rules judge what the stored power-iteration state does to the model (the CLI help and
the README say the same):

- ``max_sigma`` (1.10): σ_eff (``sigma_effective``) of every SN layer, the spectral norm of the
  weight the model really uses. Layers without SN are not judged (their σ is not meant to be 1).
  A σ̂ ≤ 0 (the weight's sign flipped) breaks the rule whatever the limit.
- ``max_norm_error`` (0.01): |‖u‖ − 1| and |‖v‖ − 1| of every stored vector.
- ``max_cos_error`` (0.05), gap-aware: the error σ̂ must have *because of* the stored vector's angle,
  :func:`gap_cos_error`; a vector in a near-degenerate top subspace is not judged, since any vector
  there gives the right σ̂. With ``strict_cos`` the raw 1 − |cos| is judged instead.
- ``non_finite``: a NaN or infinite number in an SN layer's audit.
- ``max_lipschitz`` (off by default): the certified operator product (``lipschitz.operator_product``)
  of the report's primary model (the discriminator of a G/D pair). A chain without a certified
  bound breaks it.
- Always: a layer that could not be audited (``error`` set: NaN weights or u, wrong shapes), and a
  checkpoint in which no SN layer is found, break a rule: a CI gate must not pass by seeing nothing.
- ``fail_on_warning``: every warning of the report breaks a rule.

Why the cosine rule is gap-aware. Write W = Σ σ_i u_i v_iᵀ and let the stored unit u make the angle
θ with u1 (cos θ = |⟨u, u1⟩|, sin²θ = e(2 − e) for the stored cosine error e = 1 − |cos θ|). The
estimate a power step from u gives, σ̂ = uᵀW n(Wᵀu) = ‖Wᵀu‖, obeys
    (σ̂/σ1)² = Σ_i (σ_i/σ1)² ⟨u, u_i⟩² ≤ cos²θ + g² sin²θ,   g = σ2/σ1,
so the angle forces 1 − (σ̂/σ1)² ≥ sin²θ·(1 − g²) (and no more than sin²θ: the other σ_i may be 0).
The same holds for v with ‖Wv‖, and the stored pair's uᵀWv ≤ σ1(cos θu cos θv + g sin θu sin θv).
The gap-aware cosine error e_g = 1 − √(1 − sin²θ·(1 − g²)) is therefore the relative σ̂ deficit the
angle guarantees (σ̂ ≤ (1 − e_g)·σ1, σ_eff ≥ 1/(1 − e_g)): it equals e when g = 0 and vanishes as
σ2 → σ1. A trained layer with σ2/σ1 = 0.998 and e = 0.79 has e_g ≈ 0.002: its angle says nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from sninspect.errors import option
from sninspect.results.check import Rule, Rules, Verdict, Violation
from sninspect.results.report import LayerAudit, Report

_NUMBERS = ("sigma_exact", "sigma_estimate", "sigma_effective", "cos_error_u", "cos_error_v",
            "spectral_gap", "u_norm", "v_norm")
"""The numbers of an SN layer the rules read; each must be finite when present."""

Add = Callable[[Rule, str | None, str | None, float | None, float | None, str], None]
"""Records one violation: rule, layer, quantity, value, limit, message."""


def gap_cos_error(cos_error: float, gap: float | None) -> float:
    """1 − √(1 − sin²θ·(1 − g²)) for the stored cosine error ``cos_error`` = 1 − |cos θ| and
    ``gap`` = σ2/σ1 (``None``: a single singular value, g = 0): the relative σ̂ deficit the angle
    forces (module docstring). Computed without cancellation for tiny angles."""
    g = 0.0 if gap is None else min(max(gap, 0.0), 1.0)
    e = min(max(cos_error, 0.0), 1.0)
    forced = e * (2.0 - e) * (1.0 - g) * (1.0 + g)  # sin²θ·(1 − g²), in [0, 1]
    return forced / (1.0 + math.sqrt(1.0 - forced))  # 1 − √(1 − x) = x / (1 + √(1 − x))


def judge(report: Report, rules: Rules) -> Report:
    """``report`` with its gap-aware cosine errors and its verdicts under ``rules``: each layer's
    ``verdict`` names the rules :func:`check` finds it breaking, the report's names every rule broken.
    The one place a verdict is made: every output reads these fields, so the table, the figures and
    ``check`` cannot disagree."""
    models = tuple(replace(m, layers=tuple(_with_gap_errors(la) for la in m.layers)) for m in report.models)
    report = replace(report, models=models)
    found = check(report, rules)
    broken: dict[str, list[str]] = {}
    for violation in found.violations:
        if violation.layer is not None:
            broken.setdefault(violation.layer, []).append(violation.rule.value)
    models = tuple(replace(m, layers=tuple(replace(la, verdict=_layer_verdict(la, broken)) for la in m.layers))
                   for m in report.models)
    return replace(report, models=models, rules=rules,
                   verdict=tuple(dict.fromkeys(v.rule.value for v in found.violations)))


def _with_gap_errors(la: LayerAudit) -> LayerAudit:
    def gap(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else gap_cos_error(value, la.spectral_gap)

    return replace(la, gap_cos_error_u=gap(la.cos_error_u), gap_cos_error_v=gap(la.cos_error_v))


def _layer_verdict(la: LayerAudit, broken: dict[str, list[str]]) -> tuple[str, ...] | None:
    if not la.has_sn and la.error is None:
        return None  # not judged: σ of a layer without SN is not meant to be 1
    return tuple(dict.fromkeys(broken.get(la.name, ())))


def check(report: Report, rules: Rules) -> Verdict:
    """Every violation of ``rules`` in ``report``, in layer order, checkpoint-wide rules last."""
    out: list[Violation] = []
    name = report.checkpoint

    def add(rule: Rule, layer: str | None, quantity: str | None, value: float | None, limit: float | None,
            message: str) -> None:
        out.append(Violation(name, rule, layer, quantity, value, limit, message))

    sn = [la for la in report.layers if la.has_sn]
    for la in sn:
        if la.error is not None:
            add(Rule.not_audited, la.name, None, None, None, f"{la.name}: not audited: {la.error}")
            continue
        bad = [q for q in _NUMBERS if (v := getattr(la, q)) is not None and not math.isfinite(v)]
        if bad:
            add(Rule.non_finite, la.name, bad[0], getattr(la, bad[0]), None,
                f"{la.name}: non-finite {', '.join(f'{q} = {getattr(la, q)}' for q in bad)}")
            continue
        _judge_sigma(la, rules, add)
        _judge_norms(la, rules, add)
        _judge_cosines(la, rules, add)
    # Plain layers are judged only for being broken: σ of a layer without SN is not meant to be 1.
    for la in report.layers:
        if not la.has_sn and la.error is not None:
            add(Rule.not_audited, la.name, None, None, None, f"{la.name}: not audited: {la.error}")
    if not sn:
        add(Rule.no_sn_layers, None, None, None, None,
            "no spectrally normalized layer found (nothing to judge; is this the right file, "
            f"{option('key').rstrip('=')} or {option('include').rstrip('=')}?)")
    if rules.max_lipschitz is not None and sn:
        bound = report.primary.lipschitz
        label = f" of model '{report.primary.name}'" if report.primary.name else ""
        value = bound.operator_product
        if value is None or not math.isfinite(value):
            add(Rule.max_lipschitz, None, "operator_product", value, rules.max_lipschitz,
                f"certified operator product{label}: not available (a layer in the chain has no "
                f"certified bound), limit {_fmt(rules.max_lipschitz)}")
        elif value > rules.max_lipschitz:
            add(Rule.max_lipschitz, None, "operator_product", value, rules.max_lipschitz,
                f"certified operator product{label} = {_fmt(value)} > {_fmt(rules.max_lipschitz)}")
    if rules.fail_on_warning:
        for warning in report.all_warnings:
            add(Rule.warning, None, None, None, None, f"warning: {warning}")
    return Verdict(name, sum(la.error is None for la in sn), tuple(out), tuple(la.name for la in sn))


def _judge_sigma(la: LayerAudit, rules: Rules, add: Add) -> None:
    eff, limit = la.sigma_effective, rules.max_sigma
    if eff is None:
        return
    if la.sigma_estimate is not None and la.sigma_estimate <= 0.0:
        # Always broken: the model multiplies the weight by a negative (or infinite) factor.
        add(Rule.max_sigma, la.name, "sigma_effective", eff, limit,
            f"{la.name}: σ̂ = {_fmt(la.sigma_estimate)} ≤ 0 flips the weight's sign "
            f"(|σ_eff| = {_fmt(abs(eff))})")
    elif limit is not None and eff > limit:
        add(Rule.max_sigma, la.name, "sigma_effective", eff, limit,
            f"{la.name}: σ_eff = {_fmt(eff)} > {_fmt(limit)}")


def _judge_norms(la: LayerAudit, rules: Rules, add: Add) -> None:
    limit = rules.max_norm_error
    if limit is None:
        return
    for quantity, norm in (("u_norm", la.u_norm), ("v_norm", la.v_norm)):
        if norm is not None and abs(norm - 1.0) > limit:
            add(Rule.max_norm_error, la.name, quantity, norm, limit,
                f"{la.name}: ‖{quantity[0]}‖ = {_fmt(norm)}, more than {_fmt(limit)} from 1")


def _judge_cosines(la: LayerAudit, rules: Rules, add: Add) -> None:
    limit = rules.max_cos_error
    if limit is None:
        return
    for quantity, value in (("cos_error_u", la.cos_error_u), ("cos_error_v", la.cos_error_v)):
        if value is None:
            continue  # not stored, or σ1 ≈ σ2: no unique top vector to compare with
        if rules.strict_cos:
            if value > limit:
                add(Rule.max_cos_error, la.name, quantity, value, limit,
                    f"{la.name}: {quantity} = {_fmt(value)} > {_fmt(limit)}")
            continue
        stored = getattr(la, f"gap_{quantity}")
        forced = stored if stored is not None else gap_cos_error(value, la.spectral_gap)
        if forced > limit:
            gap = "none" if la.spectral_gap is None else _fmt(la.spectral_gap)
            add(Rule.max_cos_error, la.name, f"gap_{quantity}", forced, limit,
                f"{la.name}: {quantity} = {_fmt(value)} at σ2/σ1 = {gap} forces σ̂ at least "
                f"{_fmt(forced)} low (gap-aware cosine error > {_fmt(limit)})")


def unreadable(checkpoint: str, message: str) -> Verdict:
    """The verdict for a checkpoint that could not be read (the CLI exits 3 for it)."""
    return Verdict(checkpoint, 0, (Violation(checkpoint, Rule.unreadable, None, None, None, None, message),))


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.6g}"
