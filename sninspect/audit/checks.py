"""``sninspect check``: judge reports against rules. Pure: reports and rules in, violations out.

What each rule judges (the CLI help says the same):

- ``max_sigma``: σ_eff (``sigma_effective``) of every SN layer, the spectral norm of the weight the
  model really uses. Layers without SN are not judged (their σ is not meant to be 1). A σ̂ ≤ 0 (the
  weight's sign flipped) or a non-finite σ_eff breaks the rule whatever the limit.
- ``max_cos_error``: ``cos_error_u`` and ``cos_error_v`` of every SN layer, each on its own; a vector
  that is not stored, or a layer with σ1 ≈ σ2 (no unique top vector), has nothing to judge.
- ``max_lipschitz``: the certified operator product (``lipschitz.operator_product``) of the report's
  primary model (the discriminator of a G/D pair). A chain without a certified bound breaks it.
- Always: a layer that could not be audited (``error`` set), and a checkpoint in which no SN layer is
  found, break a rule: a CI gate must not pass by seeing nothing.
- ``fail_on_warning``: every warning of the report breaks a rule.
"""

from __future__ import annotations

import math

from sninspect.results.check import Rule, Rules, Verdict, Violation
from sninspect.results.report import Report


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
        eff = la.sigma_effective
        if rules.max_sigma is not None and eff is not None:
            if la.sigma_estimate is not None and la.sigma_estimate <= 0.0:
                add(Rule.max_sigma, la.name, "sigma_effective", eff, rules.max_sigma,
                    f"{la.name}: σ̂ = {_fmt(la.sigma_estimate)} ≤ 0 flips the weight's sign "
                    f"(|σ_eff| = {_fmt(abs(eff))}, limit {_fmt(rules.max_sigma)})")
            elif not math.isfinite(eff) or eff > rules.max_sigma:
                add(Rule.max_sigma, la.name, "sigma_effective", eff, rules.max_sigma,
                    f"{la.name}: σ_eff = {_fmt(eff)} > {_fmt(rules.max_sigma)}")
        if rules.max_cos_error is not None:
            for quantity, value in (("cos_error_u", la.cos_error_u), ("cos_error_v", la.cos_error_v)):
                if value is not None and (not math.isfinite(value) or value > rules.max_cos_error):
                    add(Rule.max_cos_error, la.name, quantity, value, rules.max_cos_error,
                        f"{la.name}: {quantity} = {_fmt(value)} > {_fmt(rules.max_cos_error)}")
    # Plain layers are judged only for being broken: σ of a layer without SN is not meant to be 1.
    for la in report.layers:
        if not la.has_sn and la.error is not None:
            add(Rule.not_audited, la.name, None, None, None, f"{la.name}: not audited: {la.error}")
    if not sn:
        add(Rule.no_sn_layers, None, None, None, None,
            "no spectrally normalized layer found (nothing to judge; is this the right file, --key or "
            "--include?)")
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
    return Verdict(name, sum(la.error is None for la in sn), tuple(out))


def unreadable(checkpoint: str, message: str) -> Verdict:
    """The verdict for a checkpoint that could not be read (the CLI exits 3 for it)."""
    return Verdict(checkpoint, 0, (Violation(checkpoint, Rule.unreadable, None, None, None, None, message),))


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.6g}"
