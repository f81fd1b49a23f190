"""The audit pipeline: load → detect dialects → audit every layer → network bound → Report.

The steps live in their own modules: options (device, dtype), inventory (what the checkpoint holds),
batch (equal-shape layers solved together), layer (one layer's numbers), operator (convolutions as
operators), network (BatchNorm and the chain's products).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from sninspect import dialects
from sninspect.audit.bounds.cache import BoundCache
from sninspect.audit.bounds.network import (
    batchnorm_factors,
    batchnorm_warnings,
    chain_of,
    in_chain,
    network_bound,
    norm_layer_warnings,
)
from sninspect.audit.bounds.ordering import Link, chain_order, positions
from sninspect.audit.bounds.plan import TARGET_WIDTH, BoundTask, bound_tasks, plan_widths, seconds_at, spectra_work
from sninspect.audit.checks import judge
from sninspect.audit.layers.batch import audit_all
from sninspect.audit.layers.inventory import model_tensors
from sninspect.audit.layers.layer import LAYER_FAILURES, PlainLayer, contained, layer_warnings
from sninspect.audit.layers.operator import PendingBound, at_input, operator_bytes, operator_sized, with_operator_bound
from sninspect.audit.layers.tensors import UsableTensors, is_weight_candidate, normalisation_modules
from sninspect.audit.layers.workers import WIDE_CHANNELS, run_all, worker_count
from sninspect.audit.memory import Budget, budget
from sninspect.audit.options import Options, Selector, resolve_device, resolve_dtype, with_overrides
from sninspect.dialects import SNLayer
from sninspect.errors import UsageError, option
from sninspect.io import residency
from sninspect.io.load import Checkpoint, ModelState, display_name, load_checkpoint
from sninspect.results.report import (
    BOUND_NOT_COMPUTED,
    CHAINED_ORDER,
    NATURAL_ORDER,
    STORED_ORDER,
    BoundWidths,
    LayerAudit,
    ModelAudit,
    Report,
)

__all__ = ["Interrupted", "Options", "analyze", "analyze_checkpoint", "audit_model"]


def analyze(path: str | os.PathLike[str], options: Options | None = None, **overrides: object) -> Report:
    """Audit one checkpoint file (the CLI's path; :func:`sninspect.analyze` takes any source)."""
    options = with_overrides(options, overrides)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype)
    checkpoint = load_checkpoint(path, key=options.key, unsafe_load=options.unsafe_load,
                                 budget=budget(options.max_memory))
    return analyze_checkpoint(checkpoint, options, device=device, dtype=dtype)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during the certified bounds: ``report`` is the audit as it stood (every layer's spectra,
    the bounds done so far; the others noted as not computed, no network operator product claimed)."""

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report


def analyze_checkpoint(
    checkpoint: Checkpoint, options: Options, *, device: torch.device, dtype: torch.dtype, name: str | None = None
) -> Report:
    """Audit an already loaded checkpoint; ``name`` is the report's ``checkpoint`` (default: the path).

    Every model's spectra first (``options.on_partial`` sees that report), then the certified bounds
    (``options.bounds``), from the user's bound cache where it holds them (``options.cache``), each
    shown to ``on_partial`` as it is done. Ctrl-C during the bounds raises :class:`Interrupted`."""
    shown = str(checkpoint.path) if name is None else name
    several = len(checkpoint.models) > 1
    names: list[str] = []
    works = [
        _ModelWork.spectra(model, options, device=device, dtype=dtype, prefix=model.name + "." if several else "",
                           file_format=checkpoint.format, names=names)
        for model in checkpoint.models
    ]
    if (options.include or options.exclude) and not any(w.shown() for w in works):
        raise _filtered_out(options, shown, names)

    def report(reason: str) -> Report:
        models = tuple(w.result(reason) for w in works)
        return judge(Report(
            checkpoint=shown,
            format=checkpoint.format,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            models=models,
            extras=dict(checkpoint.extras),
            layer_order=(CHAINED_ORDER if any(m.reordered for m in models)
                         else NATURAL_ORDER if checkpoint.format.startswith("safetensors") else STORED_ORDER),
        ), options.rules)

    if not options.bounds:
        return report(NOT_ASKED)
    partial = options.on_partial
    if partial is not None:
        partial(report(IN_PROGRESS))
    cache = BoundCache(warn=options.on_warning) if options.cache else None
    try:
        for work in works:
            work.bounds(options, device, cache, None if partial is None else lambda: partial(report(IN_PROGRESS)))
    except KeyboardInterrupt:
        raise Interrupted(report(INTERRUPTED)) from None
    finally:
        if cache is not None:
            cache.close()
    return report(NOT_ASKED)


NOT_ASKED = "not asked for"
IN_PROGRESS = "in progress"
INTERRUPTED = "interrupted"
"""Why a layer's bound is not in a report: the end of its :data:`BOUND_NOT_COMPUTED` note."""


def _filtered_out(options: Options, checkpoint: str, names: Sequence[str]) -> UsageError:
    """``--include``/``--exclude`` left nothing: name the regex and some layer names it could match."""
    asked = " and ".join(option(flag, repr(regex)) for flag, regex in (("include", options.include),
                                                                  ("exclude", options.exclude)) if regex)
    sample = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return UsageError(f"{checkpoint}: {asked} leaves no layer (the layers are named like {sample or 'nothing'}; "
                      "the regex is searched in the full name)")


def audit_model(
    model: ModelState, options: Options, *, device: torch.device, dtype: torch.dtype, prefix: str = "",
    file_format: str = "",
    names: list[str] | None = None,
) -> ModelAudit:
    """Audit every weight layer of one state dict and bound the network (certified bounds as
    ``options.bounds`` asks). ``--include``/``--exclude`` select layers before any math (the network
    bound then covers the selected layers); ``names``, when given, collects every candidate layer's
    name (for the message when nothing is selected)."""
    work = _ModelWork.spectra(model, options, device=device, dtype=dtype, prefix=prefix, file_format=file_format,
                              names=names)
    if options.bounds:
        work.bounds(options, device, None, None)
    return work.result(NOT_ASKED)


class _ModelWork:
    """One model's audit in two phases: :meth:`spectra` (every number but the certified conv bounds),
    then :meth:`bounds`, which fills ``keyed`` in place layer by layer; :meth:`result` is the
    :class:`ModelAudit` as it stands at any point."""

    def __init__(self, model: ModelState, prefix: str, tensors: UsableTensors, shapes: dict[str, tuple[int, ...]],
                 keyed: list[tuple[LayerAudit, str]], pending: dict[int, PendingBound], layer_of: dict[str, SNLayer],
                 warnings: list[str], norms: list[str], any_sn: bool, all_layers: bool, device: torch.device) -> None:
        self.model, self.prefix, self.tensors, self.shapes = model, prefix, tensors, shapes
        self.keyed, self.pending, self.layer_of = keyed, pending, layer_of
        self.warnings, self.norms, self.any_sn, self.all_layers = warnings, norms, any_sn, all_layers
        self.batchnorms = batchnorm_factors(tensors, shapes, device)
        self._lock = threading.Lock()
        self.announce: Callable[[str], None] = lambda name: None
        self.started = time.perf_counter()
        self.plan: _WidthPlan = _WidthPlan(TARGET_WIDTH, {}, [], False)
        self.seconds: dict[str, float] = {}

    @classmethod
    def spectra(cls, model: ModelState, options: Options, *, device: torch.device, dtype: torch.dtype,
                prefix: str = "", file_format: str = "", names: list[str] | None = None) -> _ModelWork:
        raw = model_tensors(model, file_format)
        tensors = UsableTensors(raw, budget(options.max_memory))
        shapes = {key: tuple(t.shape) for key, t in raw.items()}
        sn_layers, warnings = dialects.detect(shapes, coeff=options.coeff)
        claimed = {k for layer in sn_layers for k in layer.keys}
        norms = [m for m in normalisation_modules(shapes) if m + "weight" not in claimed]
        lookalike = dialects.plain_names(shapes, claimed)  # not SN, though stored like it: plain, with a note
        plain = [
            PlainLayer(key, display_name(lookalike[key][0]), lookalike[key][1]) if key in lookalike
            else PlainLayer(key, display_name(key))
            for key in shapes
            if key not in claimed and is_weight_candidate(key, raw[key], frozenset(norms))
        ]
        if names is not None:
            names += [prefix + display_name(layer.name) for layer in sn_layers] + [prefix + p.name for p in plain]
        if options.include or options.exclude:
            keep = Selector(options.include, options.exclude)
            before = len(sn_layers) + len(plain)
            sn_layers = [layer for layer in sn_layers if keep(prefix + display_name(layer.name))]
            plain = [p for p in plain if keep(prefix + p.name)]
            if 0 < len(sn_layers) + len(plain) < before:
                warnings = [*warnings, f"{_selection()}: {len(sn_layers) + len(plain)} of {before} layers "
                            "audited; the network bound covers those only"]
        started = time.perf_counter()
        keyed = audit_all(sn_layers, plain, tensors, device, dtype, options.batch_bytes)
        layer_of = {layer.weight_key: layer for layer in sn_layers}
        plan = _WidthPlan.of(keyed, layer_of, tensors, options)
        announce = _announcer(options, prefix)
        keyed, pending = _operator_phase(keyed, layer_of, tensors, options, device, prefix, model.name, announce,
                                         plan)
        work = cls(model, prefix, tensors, shapes, keyed, pending, layer_of, warnings, norms, bool(sn_layers),
                   options.all_layers, device)
        work.announce, work.plan, work.started = announce, plan, started
        return work

    def shown(self) -> list[LayerAudit]:
        """The layers the report shows (SN layers; all with ``--all`` or when none has SN)."""
        return [a for a, _ in self.keyed if a.has_sn or self.all_layers or not self.any_sn]

    def bounds(self, options: Options, device: torch.device, cache: BoundCache | None,
               done: Callable[[], None] | None) -> None:
        """Every pending certified bound (several layers at once on a CPU, wide kernels alone), each
        written into ``keyed`` when done, then ``done()``."""
        announce = self.announce

        def bound_task(index: int) -> Callable[[], None]:
            def task() -> None:
                audit, key = self.keyed[index]
                wanted = self.pending[index]
                announce(audit.name.removeprefix(self.prefix))
                start = time.perf_counter()
                result = contained(self.layer_of.get(key) or PlainLayer(key, audit.name), self.tensors,
                                   lambda: with_operator_bound(audit, wanted.key, wanted.buffer_key, self.tensors,
                                                               device, self.plan.width(key), self.tensors.budget,
                                                               wanted.floor, cache),
                                   partial=audit)
                assert isinstance(result, LayerAudit)  # Precondition: the work returns an audit
                with self._lock:
                    self.keyed[index] = (result, key)
                    self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
                    del self.pending[index]
                if done is not None:
                    done()
            return task

        order = sorted(self.pending)
        if not order:
            return
        workers = _workers(self.keyed, self.layer_of, self.tensors, options, device, self.plan)
        wide = [_is_wide(self.keyed[i][0]) for i in order]
        with residency.scratch_reused():  # the CLI's process: the conv work's buffers reused, not re-faulted
            run_all([bound_task(i) for i in order], workers, wide)

    def result(self, reason: str) -> ModelAudit:
        """The model's audit as it stands; a bound still pending is noted as not computed (``reason``)."""
        with self._lock:
            keyed = [(replace(a, notes=a.notes + (f"{BOUND_NOT_COMPUTED} ({reason})",)) if i in self.pending else a,
                      k) for i, (a, k) in enumerate(self.keyed)]
        audits = [a for a, _ in keyed]
        order = {k: i for i, k in enumerate(self.shapes)}
        found = chain_order([Link(key, a.name, a.kind, a.shape, sure=a.has_sn)
                             for a, key in sorted(keyed, key=lambda e: order[e[1]]) if in_chain(a)])
        if found.keys is not None:  # the stored order is no forward chain; the shapes give one
            order = positions(list(self.shapes), found.keys)
        chain, excluded = chain_of(keyed, self.batchnorms, order, self.prefix)
        network = network_bound(chain, excluded)
        warnings = (self.warnings + layer_warnings(audits) + batchnorm_warnings(self.batchnorms, self.prefix)
                    + norm_layer_warnings(self.norms, self.prefix) + ([found.warning] if found.warning else []))
        shown = [a for a, key in sorted(keyed, key=lambda e: order[e[1]])
                 if a.has_sn or self.all_layers or not self.any_sn]
        return ModelAudit(name=self.model.name, layers=tuple(shown), lipschitz=network, warnings=tuple(warnings),
                          reordered=found.keys is not None,
                          bounds=self.plan.reached(self.seconds, time.perf_counter() - self.started)
                          if any(a.operator_width is not None for a in audits) else None)


class _WidthPlan:
    """Each conv bound's width: ``--bound-tol`` everywhere, or by default what the work budget buys
    (:mod:`sninspect.audit.bounds.plan`); ``seconds`` each layer's measured operator work, for the
    estimate of the time at the target width."""

    def __init__(self, target: float, widths: dict[str, float], tasks: list[BoundTask], budgeted: bool) -> None:
        self.target, self.widths, self.tasks, self.budgeted = target, widths, tasks, budgeted
        self.seconds: dict[str, float] = {}

    @classmethod
    def of(cls, keyed: list[tuple[LayerAudit, str]], layer_of: dict[str, SNLayer], tensors: UsableTensors,
           options: Options) -> _WidthPlan:
        tasks = bound_tasks(keyed, layer_of, tensors)
        if options.bound_tol is not None:
            return cls(options.bound_tol, {task.key: options.bound_tol for task in tasks}, tasks, False)
        spectra = sum(spectra_work(a.shape) for a, _ in keyed if a.error is None)
        return cls(TARGET_WIDTH, dict(plan_widths(tasks, spectra).widths), tasks, True)

    def width(self, key: str) -> float:
        return self.widths.get(key, self.target)

    def reached(self, bound_seconds: dict[str, float], elapsed: float) -> BoundWidths:
        seconds = {k: self.seconds.get(k, 0.0) + bound_seconds.get(k, 0.0)
                   for k in self.seconds.keys() | bound_seconds.keys()}
        estimate = seconds_at(self.tasks, self.widths, seconds, elapsed, self.target) if self.budgeted else None
        return BoundWidths(target=self.target, budgeted=self.budgeted, seconds_at_target=estimate)


def _is_wide(audit: LayerAudit) -> bool:
    return audit.kind.startswith("conv") and len(audit.shape) > 2 and min(audit.shape[:2]) > WIDE_CHANNELS


def _workers(keyed: list[tuple[LayerAudit, str]], layer_of: dict[str, SNLayer], tensors: UsableTensors,
             options: Options, device: torch.device, plan: _WidthPlan) -> int:
    def need() -> int:
        return max(operator_bytes(a, layer_of.get(k), tensors, plan.width(k), options.input_size)
                   for a, k in keyed)

    return worker_count(device, len(keyed), need, tensors.budget, options.workers)


def _operator_phase(keyed: list[tuple[LayerAudit, str]], layer_of: dict[str, SNLayer], tensors: UsableTensors,
                    options: Options, device: torch.device, prefix: str, model_name: str,
                    announce: Callable[[str], None],
                    plan: _WidthPlan) -> tuple[list[tuple[LayerAudit, str]], dict[int, PendingBound]]:
    """Every layer's operator work but the certified conv bound (:func:`_as_operator`), several layers at
    once on a CPU (:mod:`sninspect.audit.layers.workers`; wide kernels alone), in the layers' order, named for
    the report; and the bounds left to compute, by position."""

    def operator_task(audit: LayerAudit, key: str) -> Callable[[], tuple[LayerAudit, str, PendingBound | None]]:
        def task() -> tuple[LayerAudit, str, PendingBound | None]:
            if audit.kind.startswith("conv") and (options.input_size is not None
                                                  or _has_view(layer_of.get(key), tensors)):
                announce(audit.name)
            start = time.perf_counter()
            done, pending = _as_operator(audit, key, layer_of.get(key), tensors, options, device, plan.width(key))
            plan.seconds[key] = time.perf_counter() - start
            return replace(done, name=prefix + audit.name, model=model_name), key, pending
        return task

    workers = _workers(keyed, layer_of, tensors, options, device, plan)
    with residency.scratch_reused():  # the CLI's process: the conv work's buffers reused, not re-faulted
        results = run_all([operator_task(a, k) for a, k in keyed], workers, [_is_wide(a) for a, _ in keyed])
    return [(a, k) for a, k, _ in results], {i: p for i, (_, _, p) in enumerate(results) if p is not None}


def _has_view(layer: SNLayer | None, tensors: UsableTensors) -> bool:
    """Whether the layer's σ is a convolution operator's (it has operator work before its bound)."""
    try:
        return layer is not None and dialects.of(layer).operator_view(layer, tensors) is not None
    except LAYER_FAILURES:
        return False


def _as_operator(audit: LayerAudit, key: str, layer: SNLayer | None, tensors: UsableTensors, options: Options,
                 device: torch.device, tol: float) -> tuple[LayerAudit, PendingBound | None]:
    """The layer as an operator (operator-sized σ, the norm at ``--input-size``, a linear layer's bound)
    inside the per-layer boundary: a failure keeps the numbers found so far, with the reason. Also what
    its certified conv bound, computed later, starts from (None: none to compute)."""
    budget: Budget = tensors.budget
    buffer_key = layer.buffer_key if layer is not None else None
    pending: list[PendingBound | None] = [None]

    def work() -> LayerAudit:
        # Operator-sized layers first: their circulant norm is the frequency bound's starting floor.
        done, pending[0] = operator_sized(audit, layer, tensors, device, budget, tol)
        if done is audit and done.kind.startswith("conv") and done.error is None and done.sigma_effective is not None:
            pending[0] = PendingBound(key, buffer_key, 0.0)  # no operator view: the bound from scratch
        elif done.kind == "linear":
            done = with_operator_bound(done, key, buffer_key, tensors, device, tol, budget)
        if options.input_size is not None:
            done = at_input(done, key, buffer_key, tensors, device, options.input_size, budget)
        return done

    result = contained(layer or PlainLayer(key, audit.name), tensors, work, partial=audit)
    assert isinstance(result, LayerAudit)  # Precondition: work returns an audit
    return result, pending[0] if result.error is None else None


def _announcer(options: Options, prefix: str) -> Callable[[str], None]:
    """name ↦ tell ``options.on_layer`` that the layer's operator work starts, once per layer (one call
    at a time: several layers may start at once on worker threads)."""
    lock = threading.Lock()
    seen: set[str] = set()

    def announce(name: str) -> None:
        if options.on_layer is not None:
            with lock:
                if prefix + name not in seen:
                    seen.add(prefix + name)
                    options.on_layer(prefix + name)

    return announce


def _selection() -> str:
    """How the user names the layer selection: ``--include/--exclude`` or ``include=/exclude=``."""
    return f"{option('include')}/{option('exclude')}"
