"""What the rewrites take from the user: the divisor ``strip`` bakes in (``--sigma``), the PyTorch SN
that ``apply`` and ``convert`` write (``--style`` / ``--to``), and the options every rewrite shares
(:class:`RewriteOptions`; its layer selection is the audit's :class:`~sninspect.audit.options.Selector`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Literal

from sninspect import dialects
from sninspect.dialects import Dialect, DialectName
from sninspect.errors import UsageError
from sninspect.errors import option as spelled

WEIGHT = re.compile(r"^(weight|\w+_weight|weight_[ih]h_l\d+(_reverse)?)$")
"""Parameter names ``apply`` treats as weights (``weight``, ``in_proj_weight``, LSTM's ``weight_hh_l0``;
not weight norm's ``weight_g`` / ``weight_v``)."""

TRANSPOSED_HINT = re.compile(r"transpose|deconv|convt|tconv|upconv|up_conv", re.IGNORECASE)
"""Names that suggest a ConvTranspose (which SN normalizes along dim=1)."""


class Style(StrEnum):
    """The PyTorch SN that ``apply`` and ``convert`` write."""

    torch = "torch"
    """``torch.nn.utils.spectral_norm``: ``P_orig``, ``P_u``, ``P_v``."""
    parametrize = "parametrize"
    """``torch.nn.utils.parametrizations.spectral_norm``: ``parametrizations.P.original``,
    ``parametrizations.P.0._u``, ``parametrizations.P.0._v``."""

    @property
    def dialect(self) -> DialectName:
        """The name ``sninspect`` reports this SN under."""
        return DialectName.torch if self is Style.torch else DialectName.parametrize

    @property
    def writer(self) -> Dialect:
        """The dialect that emits this SN's keys."""
        return dialects.by_name(self.dialect)

    @classmethod
    def parse(cls, style: Style | str) -> Style:
        try:
            return cls(style)
        except ValueError:
            raise UsageError(f"style {style!r}: expected torch or parametrize") from None


@dataclass(frozen=True)
class Sigma:
    """What ``strip`` divides by: ``eval`` | ``exact`` | ``power:N``."""

    mode: Literal["eval", "exact", "power"] = "eval"
    steps: int = 0
    """Power steps (``power`` only)."""

    @classmethod
    def parse(cls, text: str | Sigma) -> Sigma:
        if isinstance(text, Sigma):
            return text
        if text in ("eval", "exact"):
            return cls(text)  # type: ignore[arg-type]
        match = re.fullmatch(r"power:(\d+)", text)
        if match is None or int(match[1]) < 1:
            raise UsageError(f"{spelled('sigma', repr(text))}: expected eval, exact or power:N with N ≥ 1 "
                             "(e.g. power:10)")
        return cls("power", int(match[1]))

    def __str__(self) -> str:
        return f"power:{self.steps}" if self.mode == "power" else self.mode


@dataclass(frozen=True)
class RewriteOptions:
    """What every rewrite (strip, apply, convert) takes besides its own choice: which part of the file,
    which layers, and how the output is written. The CLI builds one from its flags."""

    key: str | None = None
    """Pick one sub-dict of a wrapped checkpoint (``netD``, ``a.b``)."""
    include: str | None = None
    """Rewrite only layers whose name matches this regex."""
    exclude: str | None = None
    """Leave out layers whose name matches this regex."""
    transposed: str | None = None
    """Regex naming ConvTranspose layers (SN along dim=1)."""
    keep_optimizer: bool = False
    """Keep optimizer state (dropped by default: it refers to the SN parameters)."""
    force: bool = False
    """Replace the output if it exists (never an input)."""
    dry_run: bool = False
    """Say what would change; write nothing."""
    unsafe_load: bool = False
    """Allow arbitrary unpickling (only for files the user trusts)."""


def with_overrides(options: RewriteOptions | None, overrides: Mapping[str, object]) -> RewriteOptions:
    """``options`` (or the defaults) with ``overrides`` (its field names) replaced; an unknown name is a
    :class:`UsageError` naming the known ones."""
    if options is not None and not isinstance(options, RewriteOptions):
        raise UsageError(f"options={type(options).__name__}: expected a sninspect.rewrite.RewriteOptions or None")
    known = {f.name for f in fields(RewriteOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown option {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    return replace(options or RewriteOptions(), **overrides)  # type: ignore[arg-type]
