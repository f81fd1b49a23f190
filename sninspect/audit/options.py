"""How to audit: the options object the CLI builds from its flags, its device and dtype, and the layer
selection (``--include``/``--exclude``) that the audit and the rewrites share."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sninspect.errors import UsageError, option
from sninspect.linalg.exact import BATCH_BYTES
from sninspect.results.check import Rules
from sninspect.results.report import Report


@dataclass(frozen=True)
class Options:
    """How to audit; the CLI builds one from its flags."""

    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = "float64"
    """Working precision: ``float64`` or ``float32``."""
    key: str | None = None
    """Pick one sub-dict of a wrapped checkpoint (``netD``, ``a.b``)."""
    include: str | None = None
    """Report only layers whose name matches this regex."""
    exclude: str | None = None
    """Leave out layers whose name matches this regex."""
    all_layers: bool = False
    """Report the layers without SN as well (always when the checkpoint has no SN)."""
    bound_tol: float | None = None
    """Relative width of every certified conv bound's bracket; None (the default): the width a work
    budget buys per layer, refined toward 1% where the network bound gains most
    (:mod:`sninspect.audit.bounds.plan`; each layer's ``operator_width`` says what was reached)."""
    unsafe_load: bool = False
    """Allow arbitrary unpickling (only for files the user trusts)."""
    batch_bytes: int = BATCH_BYTES
    """Largest batch of equal-shape matrices solved together."""
    input_size: tuple[int, ...] | None = None
    """Spatial input size (H[, W[, D]]): also give each conv's exact 'same'-padding norm there."""
    max_memory: int | None = None
    """Memory budget in bytes for one layer's audit (``--max-memory``); None: the memory available now.
    A layer that would need more is refused with the size it would need (its ``error``)."""
    coeff: float | None = None
    """Soft SN's coefficient (not stored in the checkpoint); None: the dialect's default (1.0 for soft SN,
    0.97 for residual-flows SN), said in each such layer's notes."""
    workers: int | None = None
    """Layers whose operator work runs at once on a CPU (audit.workers); None: as many as the cores,
    torch's threads (``torch.set_num_threads``, ``OMP_NUM_THREADS``) and the memory budget allow, at
    most 4; 1: one at a time."""
    rules: Rules = field(default_factory=Rules)
    """The ``check`` rules each layer's ``verdict`` is judged by (check's defaults unless given): what the
    table highlights, the figures flag and the summary counts."""
    bounds: bool = True
    """Compute each convolution's certified operator bound (and so the network's certified operator
    product). False: the spectra, σ̂, σ_eff and cosine errors only; ``operator_bound`` stays None (the
    layer notes say not computed) and the operator product is not claimed. ``sninspect check`` asks
    for bounds only with ``--max-lipschitz``; the training monitor only when asked or a rule reads them."""
    cache: bool = True
    """Look certified bounds up in, and add them to, the user's bound cache (:mod:`sninspect.audit.bounds.cache`;
    ``--no-cache``: False)."""
    on_layer: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Called with each layer's name as its operator work starts (the CLI's progress line)."""
    on_partial: Callable[[Report], None] | None = field(default=None, compare=False, repr=False)
    """Called with the :class:`~sninspect.results.report.Report` as it stands: once when every layer's
    spectra are done (bounds not computed yet), then after each layer's bound (the CLI's live table)."""
    on_warning: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Called with a one-line warning about the run itself, not the checkpoint (a bound cache that cannot be
    used); None: :func:`warnings.warn`."""

    def __post_init__(self) -> None:
        parse_device(self.device)  # a name that is no device fails here, where the options are built
        workers = self.workers
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise UsageError(f"{option('workers', repr(workers))}: expected a positive whole number or None")
        if not isinstance(self.rules, Rules):
            raise UsageError(f"rules={type(self.rules).__name__}: expected a sninspect.Rules")


def parse_device(name: str) -> torch.device | None:
    """``name`` as a torch device (None for ``auto``); anything but auto, cpu, cuda or cuda:N is a usage
    error. Whether the device is there is :func:`resolve_device`'s question."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"{option('device', repr(name))}: expected auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{option('device', repr(name))}: expected auto, cpu, cuda or cuda:N")
    return device


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; CUDA asked for but absent is a usage error."""
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option('device', name)}: CUDA is not available on this machine "
                             f"(use {option('device', 'cpu')})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{option('device', name)}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """``float64`` or ``float32``."""
    table = {"float64": torch.float64, "float32": torch.float32}
    if name not in table:
        raise UsageError(f"{option('dtype', repr(name))}: expected float64 or float32")
    return table[name]


def as_rules(rules: Rules | Mapping[str, Any] | None) -> Rules:
    """``rules`` as :class:`Rules`; an unknown name is a :class:`UsageError` naming the known ones."""
    if rules is None:
        return Rules()
    if isinstance(rules, Rules):
        return rules
    known = set(Rules.__dataclass_fields__)
    unknown = sorted(set(rules) - known)
    if unknown:
        raise UsageError(f"rules: unknown {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    return Rules(**rules)


def with_overrides(options: Options | None, overrides: dict[str, object]) -> Options:
    """``options`` (or the defaults) with ``overrides`` (its field names) replaced; an unknown name is a
    :class:`UsageError` naming the known ones (not ``dataclasses.replace``'s TypeError). ``rules``
    may be a mapping of :class:`Rules` fields (``rules={"max_sigma": 1.05}``), as ``check`` takes."""
    if options is not None and not isinstance(options, Options):
        raise UsageError(f"options={type(options).__name__}: expected a sninspect.Options or None")
    known = {f for f in Options.__dataclass_fields__}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown option {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    if isinstance(overrides.get("rules"), Mapping):
        overrides = {**overrides, "rules": as_rules(overrides["rules"])}  # type: ignore[arg-type]
    return replace(options or Options(), **overrides)  # type: ignore[arg-type]


class Selector:
    """``--include`` / ``--exclude``: regexes searched in a layer's display name (the full name, model
    prefix included); the audit and the rewrites select layers with it."""

    def __init__(self, include: str | None = None, exclude: str | None = None) -> None:
        self.include = compile_option(include, "include")
        self.exclude = compile_option(exclude, "exclude")

    def __call__(self, name: str) -> bool:
        if self.include is not None and not self.include.search(name):
            return False
        return self.exclude is None or not self.exclude.search(name)


def compile_option(pattern: str | None, name: str) -> re.Pattern[str] | None:
    """A user's regex for the option ``name``, or None when not given; one that does not compile is a
    usage error naming the option and the pattern."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise UsageError(f"{option(name, repr(pattern))}: not a valid regular expression ({err})") from err
