"""What ``check`` found, as data: the rules, each broken rule, the verdict per checkpoint.

Judged by :func:`sninspect.audit.checks.check`; shown by each format's module of :mod:`sninspect.render`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sninspect.errors import UsageError
from sninspect.results.jsonable import json_safe

DEFAULT_MAX_SIGMA = 1.10
"""σ_eff up to 10% above 1. One power step per training step lags the moving weights: the healthy
trained samples and test fixtures reach 1.068 (sample_checkpoints/mlp_sn_parametrize.safetensors,
decoder.0, σ2/σ1 = 0.98); a state never iterated (random u, v) gives σ̂ ≤ 0 or σ_eff ≥ 1.9 under
torch's hook API and mostly 1.1–1.8 under the one-step dialects."""
DEFAULT_MAX_COS_ERROR = 0.05
"""Largest gap-aware cosine error (see :func:`sninspect.audit.checks.gap_cos_error`): the stored
vector's angle alone forces σ̂ at least 5% low. Healthy trained layers measure ≤ 0.02."""
DEFAULT_MAX_NORM_ERROR = 1e-2
"""Largest |‖u‖ − 1| and |‖v‖ − 1|. Storage rounding moves a norm by at most the unit roundoff
(bfloat16: 2⁻⁸ ≈ 0.004; float32: 6e-8), so 1% is a real change of the vector (an EMA average,
a wrong buffer), and under torch's API σ̂ = uᵀWv scales with ‖u‖‖v‖."""


class Rule(StrEnum):
    """The name of a broken rule (the ``rule`` field of a violation in JSON)."""

    max_sigma = "max_sigma"
    max_cos_error = "max_cos_error"
    max_norm_error = "max_norm_error"
    non_finite = "non_finite"
    max_lipschitz = "max_lipschitz"
    not_audited = "not_audited"
    no_sn_layers = "no_sn_layers"
    warning = "warning"
    unreadable = "unreadable"


@dataclass(frozen=True)
class Rules:
    """The limits; ``None`` turns a rule off."""

    max_sigma: float | None = DEFAULT_MAX_SIGMA
    """Largest allowed σ_eff of an SN layer."""
    max_cos_error: float | None = DEFAULT_MAX_COS_ERROR
    """Largest allowed gap-aware cosine error of a stored u or v (raw 1 − |cos| with ``strict_cos``)."""
    strict_cos: bool = False
    """Judge the raw 1 − |cos| against ``max_cos_error``, whatever the spectral gap (the strict rule)."""
    max_norm_error: float | None = DEFAULT_MAX_NORM_ERROR
    """Largest allowed |‖u‖ − 1| and |‖v‖ − 1| of a stored vector."""
    max_lipschitz: float | None = None
    """Largest allowed certified operator product of the primary model."""
    fail_on_warning: bool = False
    """Every report warning is a violation."""

    def __post_init__(self) -> None:
        """Limits are None or non-negative numbers, switches are booleans: a rule given ``"1.05"`` or
        ``True`` as a limit would otherwise fail (or pass) at the first comparison."""
        for name in ("max_sigma", "max_cos_error", "max_norm_error", "max_lipschitz"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.0:
                raise UsageError(f"rules: {name} must be a non-negative number or None, got {value!r}")
        for name in ("strict_cos", "fail_on_warning"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"rules: {name} must be True or False, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Violation:
    """One broken rule."""

    checkpoint: str
    rule: Rule
    layer: str | None
    """The layer that breaks it; ``None`` for a checkpoint-wide rule."""
    quantity: str | None
    """The JSON name of the number judged (``sigma_effective``, ``cos_error_u``, ``u_norm``,
    ``gap_cos_error_u``, ``operator_product``)."""
    value: float | None
    limit: float | None
    message: str
    """One line a person can act on."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(asdict(self))  # a non-finite value is null
        data["rule"] = self.rule.value
        return data


@dataclass(frozen=True)
class Verdict:
    """The outcome for one checkpoint."""

    checkpoint: str
    layers_checked: int
    """SN layers judged."""
    violations: tuple[Violation, ...]
    layers: tuple[str, ...] = ()
    """The SN layers judged, by name, in order (a JUnit test case each)."""

    @property
    def passed(self) -> bool:
        return not self.violations
