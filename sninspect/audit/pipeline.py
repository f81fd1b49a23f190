"""The audit pipeline: load → detect dialects → audit every layer → network bound → Report.

The steps live in their own modules: options (device, dtype), inventory (what the checkpoint holds),
batch (equal-shape layers solved together), layer (one layer's numbers), operator (convolutions as
operators), network (BatchNorm and the chain's products).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from sninspect import dialects
from sninspect.audit.batch import audit_all
from sninspect.audit.bound_plan import TARGET_WIDTH, bound_tasks, plan_widths, seconds_at, spectra_work
from sninspect.audit.checks import judge
from sninspect.audit.inventory import model_tensors
from sninspect.audit.layer import PlainLayer, contained, layer_warnings
from sninspect.audit.memory import Budget, budget
from sninspect.audit.network import (
    batchnorm_factors,
    batchnorm_warnings,
    chain_of,
    in_chain,
    network_bound,
    norm_layer_warnings,
)
from sninspect.audit.operator import at_input, operator_bytes, with_operator_bound, with_operator_sized
from sninspect.audit.options import Options, resolve_device, resolve_dtype, with_overrides
from sninspect.audit.ordering import Link, chain_order, positions
from sninspect.audit.tensors import UsableTensors, is_weight_candidate, normalisation_modules
from sninspect.audit.workers import WIDE_CHANNELS, run_all, worker_count
from sninspect.dialects import SNLayer
from sninspect.errors import UsageError, option
from sninspect.io import residency
from sninspect.io.load import Checkpoint, ModelState, display_name, load_checkpoint
from sninspect.results.report import (
    CHAINED_ORDER,
    NATURAL_ORDER,
    STORED_ORDER,
    BoundWidths,
    LayerAudit,
    ModelAudit,
    Report,
)

__all__ = ["Options", "analyze", "analyze_checkpoint", "audit_model"]


def analyze(path: str | os.PathLike[str], options: Options | None = None, **overrides: object) -> Report:
    """Audit one checkpoint file (the CLI's path; :func:`sninspect.analyze` takes any source)."""
    options = with_overrides(options, overrides)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype)
    checkpoint = load_checkpoint(path, key=options.key, unsafe_load=options.unsafe_load,
                                 budget=budget(options.max_memory))
    return analyze_checkpoint(checkpoint, options, device=device, dtype=dtype)


def analyze_checkpoint(
    checkpoint: Checkpoint, options: Options, *, device: torch.device, dtype: torch.dtype, name: str | None = None
) -> Report:
    """Audit an already loaded checkpoint; ``name`` is the report's ``checkpoint`` (default: the path)."""
    shown = str(checkpoint.path) if name is None else name
    several = len(checkpoint.models) > 1
    names: list[str] = []
    models = tuple(
        audit_model(model, options, device=device, dtype=dtype, prefix=model.name + "." if several else "",
                    file_format=checkpoint.format, names=names)
        for model in checkpoint.models
    )
    if (options.include or options.exclude) and not any(m.layers for m in models):
        raise _filtered_out(options, shown, names)
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
    """Audit every weight layer of one state dict and bound the network. ``--include``/``--exclude``
    select layers before any math (the network bound then covers the selected layers); ``names``, when
    given, collects every candidate layer's name (for the message when nothing is selected)."""
    started = time.perf_counter()
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
        keep = _selector(options.include, options.exclude)
        before = len(sn_layers) + len(plain)
        sn_layers = [layer for layer in sn_layers if keep(prefix + display_name(layer.name))]
        plain = [p for p in plain if keep(prefix + p.name)]
        if 0 < len(sn_layers) + len(plain) < before:
            warnings = [*warnings, f"{_selection()}: {len(sn_layers) + len(plain)} of {before} layers "
                        "audited; the network bound covers those only"]
    keyed = audit_all(sn_layers, plain, tensors, device, dtype, options.batch_bytes)
    layer_of = {layer.weight_key: layer for layer in sn_layers}
    keyed, bounds = _operator_phase(keyed, layer_of, tensors, options, device, prefix, model.name, started)
    audits = [a for a, _ in keyed]
    batchnorms = batchnorm_factors(tensors, shapes, device)
    order = {k: i for i, k in enumerate(shapes)}
    found = chain_order([Link(key, a.name, a.kind, a.shape, sure=a.has_sn)
                         for a, key in sorted(keyed, key=lambda e: order[e[1]]) if in_chain(a)])
    if found.keys is not None:  # the stored order is no forward chain; the shapes give one
        order = positions(list(shapes), found.keys)
    chain, excluded = chain_of(keyed, batchnorms, order, prefix)
    network = network_bound(chain, excluded)
    warnings += (layer_warnings(audits) + batchnorm_warnings(batchnorms, prefix)
                 + norm_layer_warnings(norms, prefix) + ([found.warning] if found.warning else []))

    shown = [a for a, key in sorted(keyed, key=lambda e: order[e[1]])
             if a.has_sn or options.all_layers or not sn_layers]
    return ModelAudit(name=model.name, layers=tuple(shown), lipschitz=network, warnings=tuple(warnings),
                      reordered=found.keys is not None,
                      bounds=bounds if any(a.operator_width is not None for a in audits) else None)


def _operator_phase(keyed: list[tuple[LayerAudit, str]], layer_of: dict[str, SNLayer], tensors: UsableTensors,
                    options: Options, device: torch.device, prefix: str, model_name: str,
                    started: float) -> tuple[list[tuple[LayerAudit, str]], BoundWidths]:
    """Every layer's operator work (:func:`_as_operator`), several layers at once on a CPU
    (:mod:`sninspect.audit.workers`; wide kernels alone), in the layers' order, named for the report;
    each conv bound at ``--bound-tol`` or, by default, at the width the work budget buys
    (:mod:`sninspect.audit.bound_plan`)."""
    announce = _announcer(options, prefix)
    tasks = bound_tasks(keyed, layer_of, tensors)
    if options.bound_tol is not None:
        target, widths = options.bound_tol, {task.key: options.bound_tol for task in tasks}
    else:
        spectra = sum(spectra_work(a.shape) for a, _ in keyed if a.error is None)
        target, widths = TARGET_WIDTH, dict(plan_widths(tasks, spectra).widths)
    seconds: dict[str, float] = {}

    def operator_task(audit: LayerAudit, key: str) -> Callable[[], tuple[LayerAudit, str]]:
        def task() -> tuple[LayerAudit, str]:
            announce(audit.name)
            start = time.perf_counter()
            done = _as_operator(audit, key, layer_of.get(key), tensors, options, device, widths.get(key, target))
            seconds[key] = time.perf_counter() - start
            return replace(done, name=prefix + audit.name, model=model_name), key
        return task

    def need() -> int:
        return max(operator_bytes(a, layer_of.get(k), tensors, widths.get(k, target), options.input_size)
                   for a, k in keyed)

    workers = worker_count(device, len(keyed), need, tensors.budget, options.workers)
    wide = [a.kind.startswith("conv") and len(a.shape) > 2 and min(a.shape[:2]) > WIDE_CHANNELS for a, _ in keyed]
    with residency.scratch_reused():  # the CLI's process: the conv work's buffers reused, not re-faulted
        done = run_all([operator_task(a, k) for a, k in keyed], workers, wide)
    budgeted = options.bound_tol is None
    estimate = seconds_at(tasks, widths, seconds, time.perf_counter() - started, target) if budgeted else None
    return done, BoundWidths(target=target, budgeted=budgeted, seconds_at_target=estimate)


def _as_operator(audit: LayerAudit, key: str, layer: SNLayer | None, tensors: UsableTensors, options: Options,
                 device: torch.device, tol: float) -> LayerAudit:
    """The layer as an operator (certified conv bound of width ``tol``, operator-sized σ, the norm at
    ``--input-size``), inside the per-layer boundary: a failure keeps the numbers found so far, with
    the reason."""
    budget: Budget = tensors.budget
    buffer_key = layer.buffer_key if layer is not None else None

    def work() -> LayerAudit:
        # Operator-sized layers first: their circulant norm is the frequency bound's starting floor.
        done = with_operator_sized(audit, layer, tensors, device, budget, tol)
        if done.operator_bound is None:
            done = with_operator_bound(done, key, buffer_key, tensors, device, tol, budget)
        if options.input_size is not None:
            done = at_input(done, key, buffer_key, tensors, device, options.input_size, budget)
        return done

    result = contained(layer or PlainLayer(key, audit.name), tensors, work, partial=audit)
    assert isinstance(result, LayerAudit)  # Precondition: work returns an audit
    return result


def _announcer(options: Options, prefix: str) -> Callable[[str], None]:
    """name ↦ tell ``options.on_layer`` that the layer's operator work starts (one call at a time:
    several layers may start at once on worker threads)."""
    lock = threading.Lock()

    def announce(name: str) -> None:
        if options.on_layer is not None:
            with lock:
                options.on_layer(prefix + name)

    return announce


def _selection() -> str:
    """How the user names the layer selection: ``--include/--exclude`` or ``include=/exclude=``."""
    return f"{option('include')}/{option('exclude')}"


def _selector(include: str | None, exclude: str | None) -> Callable[[str], bool]:
    """name ↦ whether ``--include``/``--exclude`` keep it (regexes searched in the full name)."""
    try:
        inc = re.compile(include) if include else None
        exc = re.compile(exclude) if exclude else None
    except re.error as err:
        raise UsageError(f"{_selection()}: not a valid regular expression ({err})") from err
    return lambda name: (inc is None or inc.search(name) is not None) and (exc is None or not exc.search(name))
