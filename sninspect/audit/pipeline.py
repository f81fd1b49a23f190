"""The audit pipeline: load → detect dialects → audit every layer → network bound → Report."""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.dialects import SNLayer
from sninspect.errors import LayerError, UsageError
from sninspect.io import residency
from sninspect.io.load import Checkpoint, ModelState, display_name, load_checkpoint
from sninspect.linalg import bounds
from sninspect.linalg.spectral import (
    BATCH_BYTES,
    Spectrum,
    cos_error,
    exact_spectra,
    relative_error,
    stable_rank,
    to_matrix,
    uv_residual,
)
from sninspect.results.report import (
    NATURAL_ORDER,
    STORED_ORDER,
    LayerAudit,
    ModelAudit,
    NetworkBound,
    Report,
)

ASSUMPTIONS = (
    "feed-forward chain of the weight layers in checkpoint order with 1-Lipschitz activations; "
    "residual additions, attention, pooling other than average, and embeddings are not covered"
)
NORM_TOLERANCE = 1e-3
"""‖u‖ or ‖v‖ further than this from 1 is reported (EMA-averaged buffers, hand-edited state)."""


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
    bound_tol: float = 0.01
    """Relative width of the certified conv bound's bracket."""
    unsafe_load: bool = False
    """Allow arbitrary unpickling (only for files the user trusts)."""
    batch_bytes: int = BATCH_BYTES
    """Largest batch of equal-shape matrices solved together."""
    input_size: tuple[int, ...] | None = None
    """Spatial input size (H[, W[, D]]): also give each conv's exact 'same'-padding norm there."""


def analyze(path: str | os.PathLike[str], options: Options | None = None, **overrides: object) -> Report:
    """Audit one checkpoint file: ``sninspect.analyze("D.pt", device="cpu").to_dataframe()``."""
    options = replace(options or Options(), **overrides)  # type: ignore[arg-type]
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype)
    checkpoint = load_checkpoint(path, key=options.key, unsafe_load=options.unsafe_load)
    return analyze_checkpoint(checkpoint, options, device=device, dtype=dtype)


def analyze_checkpoint(
    checkpoint: Checkpoint, options: Options, *, device: torch.device, dtype: torch.dtype
) -> Report:
    """Audit an already loaded checkpoint."""
    several = len(checkpoint.models) > 1
    models = tuple(
        audit_model(model, options, device=device, dtype=dtype, prefix=model.name + "." if several else "",
                    file_format=checkpoint.format)
        for model in checkpoint.models
    )
    if (options.include or options.exclude) and not any(m.layers for m in models):
        raise _filtered_out(options, str(checkpoint.path), models)
    return Report(
        checkpoint=str(checkpoint.path),
        format=checkpoint.format,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        models=models,
        extras=dict(checkpoint.extras),
        layer_order=NATURAL_ORDER if checkpoint.format.startswith("safetensors") else STORED_ORDER,
    )


def _filtered_out(options: Options, checkpoint: str, models: Sequence[ModelAudit]) -> UsageError:
    """``--include``/``--exclude`` left nothing: name the regex and some layer names it could match."""
    asked = " and ".join(f"--{flag} {regex!r}" for flag, regex in (("include", options.include),
                                                                  ("exclude", options.exclude)) if regex)
    names = [n for m in models for n in (*m.lipschitz.layers, *m.lipschitz.excluded)]
    sample = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return UsageError(f"{checkpoint}: {asked} leaves no layer (the layers are named like {sample or 'nothing'}; "
                      "the regex is searched in the full name)")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; CUDA asked for but absent is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """``float64`` or ``float32``."""
    table = {"float64": torch.float64, "float32": torch.float32}
    if name not in table:
        raise UsageError(f"--dtype {name!r}: expected float64 or float32")
    return table[name]


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``sninspect layers``: what a layer is, without any SVD."""

    name: str
    model: str
    dialect: str
    kind: str
    shape: tuple[int, ...]
    dim: int | None
    dtype: str
    sn_keys: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def inventory(path: str | os.PathLike[str], *, key: str | None = None, unsafe_load: bool = False) -> list[LayerInfo]:
    """The weight layers of a checkpoint with their dialects, shapes and dtypes (no SVD)."""
    checkpoint = load_checkpoint(path, key=key, unsafe_load=unsafe_load)
    several = len(checkpoint.models) > 1
    rows: list[LayerInfo] = []
    for model in checkpoint.models:
        prefix = model.name + "." if several else ""
        tensors = model_tensors(model, checkpoint.format)
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        sn_layers, warnings = dialects.detect(shapes)
        claimed = {k for layer in sn_layers for k in layer.keys}
        entries: list[tuple[str, LayerInfo]] = []
        for layer in sn_layers:
            dim: int | None
            try:
                dim = dialects.resolve(layer, tensors).dim
            except LayerError as err:
                dim, warnings = None, warnings + [f"layer '{display_name(layer.name)}': {err}"]
            name = display_name(layer.name)
            shape = shapes[layer.weight_key]
            entries.append((layer.weight_key, LayerInfo(
                prefix + name, model.name, layer.dialect, layer_kind(name, shape, dim or 0), shape, dim,
                str(tensors[layer.weight_key].dtype).removeprefix("torch."),
                tuple(k.removeprefix(layer.module) for k in layer.keys))))
        for raw, shape in shapes.items():
            if raw in claimed or len(shape) < 2 or not tensors[raw].is_floating_point():
                continue
            name = display_name(raw)
            entries.append((raw, LayerInfo(prefix + name, model.name, "none", layer_kind(name, shape, 0), shape,
                                           None, str(tensors[raw].dtype).removeprefix("torch."), ())))
        order = {k: i for i, k in enumerate(shapes)}
        entries.sort(key=lambda e: order[e[0]])
        rows.extend(replace(info, warnings=tuple(warnings)) for _, info in entries)
    return rows


# ----------------------------------------------------------------------------------------------
# One model


@dataclass(frozen=True)
class _Plain:
    """A weight layer without SN."""

    key: str
    name: str


class _Reordered(Mapping[str, Tensor]):
    """A read-only view of a (possibly lazy) tensor mapping with another key order."""

    def __init__(self, tensors: Mapping[str, Tensor], keys: list[str]) -> None:
        self._tensors, self._keys = tensors, keys

    def __getitem__(self, key: str) -> Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _natural(key: str) -> tuple[tuple[int, int | str], ...]:
    """``main.10.weight`` after ``main.2.weight``: numeric path segments compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in key.split("."))


def model_tensors(model: ModelState, file_format: str) -> Mapping[str, Tensor]:
    """The model's tensors in module order. safetensors files store keys sorted by dtype and name,
    not in module order, so their keys are put in natural order (``2`` before ``10``)."""
    if file_format.startswith("safetensors"):
        return _Reordered(model.tensors, sorted(model.tensors, key=_natural))
    return model.tensors


def audit_model(
    model: ModelState, options: Options, *, device: torch.device, dtype: torch.dtype, prefix: str = "",
    file_format: str = "",
) -> ModelAudit:
    """Audit every weight layer of one state dict and bound the network."""
    tensors = model_tensors(model, file_format)
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}
    sn_layers, warnings = dialects.detect(shapes)
    claimed = {k for layer in sn_layers for k in layer.keys}
    plain = [
        _Plain(key, display_name(key))
        for key, shape in shapes.items()
        if key not in claimed and len(shape) >= 2 and tensors[key].is_floating_point()
    ]
    buffers = {layer.weight_key: layer.buffer_key for layer in sn_layers}
    keyed = _audit_all(sn_layers, plain, tensors, device, dtype, options.batch_bytes)
    layer_of = {layer.weight_key: layer for layer in sn_layers}
    keyed = [
        (replace(_with_operator_bound(a, k, buffers.get(k), tensors, device, dtype, options.bound_tol),
                 name=prefix + a.name, model=model.name), k)
        for a, k in keyed
    ]
    keyed = [(_conv_operator_audit(a, layer_of[k], tensors, device), k)
             if a.dialect == "conv-operator" and a.error is None else (a, k) for a, k in keyed]
    if options.input_size is not None:
        keyed = [(_at_input(a, k, buffers.get(k), tensors, device, options.input_size), k) for a, k in keyed]
    audits = [a for a, _ in keyed]
    batchnorms = _batchnorm_factors(tensors, shapes, device)
    chain, excluded = _chain(keyed, batchnorms, {k: i for i, k in enumerate(shapes)}, prefix)
    network = network_bound(chain, excluded)
    warnings += _layer_warnings(audits) + _norm_layer_warnings(shapes, prefix)

    shown = [a for a in audits if a.dialect != "none" or options.all_layers or not sn_layers]
    shown = _filter(shown, options.include, options.exclude)
    return ModelAudit(name=model.name, layers=tuple(shown), lipschitz=network, warnings=tuple(warnings))


def _filter(audits: list[LayerAudit], include: str | None, exclude: str | None) -> list[LayerAudit]:
    try:
        inc = re.compile(include) if include else None
        exc = re.compile(exclude) if exclude else None
    except re.error as err:
        raise UsageError(f"--include/--exclude: not a valid regular expression ({err})") from err
    return [
        a for a in audits
        if (inc is None or inc.search(a.name)) and (exc is None or not exc.search(a.name))
    ]


def layer_kind(name: str, shape: tuple[int, ...], dim: int) -> str:
    """``linear``, ``embedding``, ``conv2d``, ``conv_transpose2d`` (SN dim=1), ``vector``."""
    if len(shape) <= 1:
        return "vector"
    if len(shape) == 2:
        return "embedding" if "emb" in name.lower() else "linear"
    spatial = len(shape) - 2
    return f"conv_transpose{spatial}d" if dim == 1 else f"conv{spatial}d"


# A unit of work: the layer, the raw weight key, and its matrix shape.
_Job = tuple[SNLayer | _Plain, str, tuple[int, int]]


def _audit_all(
    sn_layers: list[SNLayer],
    plain: list[_Plain],
    tensors: Mapping[str, Tensor],
    device: torch.device,
    dtype: torch.dtype,
    batch_bytes: int,
) -> list[tuple[LayerAudit, str]]:
    """Audit SN and plain layers, solving equal-shape matrices in batches of at most ``batch_bytes``;
    returns (audit, weight key) in checkpoint order."""
    order = {key: i for i, key in enumerate(tensors)}
    jobs: list[_Job] = []
    results: dict[str, LayerAudit] = {}
    for layer in sn_layers:
        try:
            layer = dialects.resolve(layer, tensors)
        except LayerError as err:
            results[layer.weight_key] = _error_audit(layer, tensors, str(err))
            continue
        stored = tensors[layer.weight_key]
        if stored.numel() * stored.element_size() >= RELEASE_BYTES:
            residency.release()  # pages a resolution may have read (a square layer's dim): not kept
        jobs.append((layer, layer.weight_key, _matrix_shape(tuple(stored.shape), layer.dim or 0)))
    for item in plain:
        jobs.append((item, item.key, _matrix_shape(tuple(tensors[item.key].shape), 0)))

    # Batch by batch: load into one block (no stacking copy), solve, audit, drop, and hand the
    # memory-mapped pages read back to the OS, so that peak memory follows the largest batch.
    for batch in _batches(jobs, dtype, batch_bytes):
        results.update(_audit_batch(batch, tensors, device, dtype, batch_bytes))
    return [(results[k], k) for k in sorted(results, key=lambda k: order[k])]


def _audit_batch(batch: list[_Job], tensors: Mapping[str, Tensor], device: torch.device, dtype: torch.dtype,
                 batch_bytes: int) -> dict[str, LayerAudit]:
    """Audit one batch of equal-shape layers. A function of its own so that the block and every view
    of it are gone when it returns: the next batch's block never sits beside this one."""
    block = torch.empty((len(batch), *batch[0][2]), dtype=dtype, device=device)  # (b, rows, cols)
    results: dict[str, LayerAudit] = {}
    ready: list[tuple[SNLayer | _Plain, Tensor]] = []
    mapped: list[int] = []
    for job, key, _ in batch:
        try:
            matrix = _load_matrix(tensors, key, _dim_of(job), device, dtype, out=block[len(ready)], pointers=mapped)
        except LayerError as err:
            results[key] = _error_audit(job, tensors, str(err))
            continue
        ready.append((job, matrix))
    residency.release(mapped)
    spectra = exact_spectra([matrix for _, matrix in ready], batch_bytes=batch_bytes)
    for (job, matrix), spectrum in zip(ready, spectra, strict=True):
        key = job.weight_key if isinstance(job, SNLayer) else job.key
        try:
            results[key] = _audit_layer(job, matrix, spectrum, tensors)
        except LayerError as err:
            results[key] = _error_audit(job, tensors, str(err))
    residency.release(mapped)  # the pages of u, v and buffers read by the audits
    return results


RELEASE_BYTES = 4 * 2**20
"""Memory-mapped weights are copied into the batch's block in pieces of this many stored bytes, each
piece's file pages handed back once copied (one /proc/self/maps read per piece); layers smaller than
this hand theirs back at the end of the batch."""


def _dim_of(layer: SNLayer | _Plain) -> int:
    return (layer.dim or 0) if isinstance(layer, SNLayer) else 0


def _matrix_shape(shape: tuple[int, ...], dim: int) -> tuple[int, int]:
    if len(shape) <= 1:
        return (math.prod(shape), 1)
    return (shape[dim], math.prod(shape) // max(shape[dim], 1))


def _batches(jobs: list[_Job], dtype: torch.dtype, batch_bytes: int) -> Iterator[list[_Job]]:
    """Jobs grouped by matrix shape, each group cut so that one batch stays under ``batch_bytes``."""
    groups: dict[tuple[int, int], list[_Job]] = defaultdict(list)
    for job in jobs:
        groups[job[2]].append(job)
    itemsize = torch.finfo(dtype).bits // 8
    for shape, group in groups.items():
        step = max(1, batch_bytes // max(1, shape[0] * shape[1] * itemsize))
        for start in range(0, len(group), step):
            yield group[start : start + step]


def _load_matrix(
    tensors: Mapping[str, Tensor], key: str, dim: int, device: torch.device, dtype: torch.dtype,
    out: Tensor | None = None, pointers: list[int] | None = None,
) -> Tensor:
    """The weight under ``key`` as a (rows, cols) matrix in the working dtype; checked usable.

    Written into ``out`` (a slot of the batch's block) when its shape fits. The weight crosses to the
    device in its stored dtype (fp16/fp32 are a quarter/half of float64 on the bus) and is converted
    there; the data pointer of what was read is appended to ``pointers`` (for residency.release)."""
    weight = tensors[key].detach()
    if pointers is not None and weight.device.type == "cpu":
        pointers.append(weight.untyped_storage().data_ptr())
    if weight.device != device:
        weight = weight.to(device, non_blocking=True)  # stored dtype over the bus
    source = to_matrix(weight, dim)  # (rows, cols)
    matrix = out if out is not None and out.shape == source.shape else torch.empty(
        source.shape, dtype=dtype, device=device)
    if pointers is not None and weight.device.type == "cpu" and source.is_contiguous() and matrix.is_contiguous():
        # Piece by piece, handing each piece's file pages back: the mapped copy of a big weight is
        # never resident whole beside its converted copy.
        flat_source, flat_matrix = source.reshape(-1), matrix.view(-1)
        step = max(1, RELEASE_BYTES // max(1, source.element_size()))
        for start in range(0, flat_source.numel(), step):
            flat_matrix[start : start + step].copy_(flat_source[start : start + step])
            if flat_source.numel() > step:
                residency.release(pointers[-1:])
    else:
        matrix.copy_(source)  # dtype conversion on the device
    if matrix.numel() == 0:
        raise LayerError(f"'{key}' is empty (shape {list(weight.shape)})")
    # One reduction, no full-size temporaries (isfinite makes an |x| copy and two masks: +45 MiB on a
    # 1024×4096 float64 weight): min and max propagate NaN, and are ±inf where an entry is.
    low, high = (float(x) for x in torch.aminmax(matrix))
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(matrix)).sum())
        raise LayerError(f"'{key}' holds {bad} NaN or infinite values")
    if low == 0.0 and high == 0.0:
        raise LayerError(f"'{key}' is all zeros (σ1 = 0, nothing to normalize)")
    return matrix


def _base_audit(layer: SNLayer | _Plain, tensors: Mapping[str, Tensor]) -> LayerAudit:
    if isinstance(layer, SNLayer):
        key, name, dialect = layer.weight_key, display_name(layer.name), layer.dialect
        dim, notes = layer.dim, layer.notes
    else:
        key, name, dialect, dim, notes = layer.key, layer.name, "none", 0, ()
    shape = tuple(tensors[key].shape)
    return LayerAudit(
        name=name, model="", dialect=dialect, kind=layer_kind(name, shape, dim or 0), shape=shape,
        dim=dim or 0, dtype=str(tensors[key].dtype).removeprefix("torch."), notes=notes,
    )


def _error_audit(layer: SNLayer | _Plain, tensors: Mapping[str, Tensor], message: str) -> LayerAudit:
    return replace(_base_audit(layer, tensors), error=message)


def _audit_layer(
    layer: SNLayer | _Plain, matrix: Tensor, spectrum: Spectrum, tensors: Mapping[str, Tensor]
) -> LayerAudit:
    """Every number of DESIGN.md "The numbers" for one layer."""
    base = _base_audit(layer, tensors)
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


# ----------------------------------------------------------------------------------------------
# Operator bounds and the network


def _effective_kernel(audit: LayerAudit, key: str, buffer_key: str | None, tensors: Mapping[str, Tensor],
                      device: torch.device, dtype: torch.dtype) -> Tensor:
    """The weight the model uses, in its stored layout: W / σ̂, or the stored eval buffer."""
    if buffer_key is not None:
        return tensors[buffer_key].detach().to(device=device, dtype=dtype)
    if audit.dialect == "none":
        return tensors[key].detach().to(device=device, dtype=dtype)
    assert audit.sigma_estimate is not None  # Precondition: an audited SN layer has σ̂
    weight = tensors[key].detach().to(device=device, dtype=dtype, copy=True)  # our own copy: divide in place
    return weight.div_(audit.sigma_estimate)


def _with_operator_bound(audit: LayerAudit, key: str, buffer_key: str | None, tensors: Mapping[str, Tensor],
                         device: torch.device, dtype: torch.dtype, tol: float) -> LayerAudit:
    """Add ``operator_bound`` / ``operator_lower``: σ_eff for linear layers, the certified conv bound
    for convolutions; nothing for embeddings and vectors (not part of a chain)."""
    if audit.error is not None or audit.sigma_effective is None:
        return audit
    if audit.kind == "linear":
        return replace(audit, operator_bound=audit.sigma_effective, operator_lower=audit.sigma_effective)
    if not audit.kind.startswith("conv"):
        return audit
    kernel = _effective_kernel(audit, key, buffer_key, tensors, device, dtype)
    residency.release()  # the kernel is copied: hand the file's pages back before the bound's work
    bound = bounds.conv_operator_bound(kernel, tol=tol, device=device)
    return replace(audit, operator_bound=bound.upper, operator_lower=bound.lower)


def _conv_operator_audit(audit: LayerAudit, layer: SNLayer, tensors: Mapping[str, Tensor],
                         device: torch.device) -> LayerAudit:
    """Conv-operator SN (Ryu et al. 2019): σ numbers are the zero-padded 'same' convolution's at the
    stored u's H×W, and u is compared with the operator's exact top singular vector (the input-side
    one when u has the input's channels, the output-side one otherwise)."""
    assert layer.u_key is not None and layer.buffer_key is not None  # Precondition: detected layout
    weight = tensors[layer.weight_key].detach().to(device=device, dtype=torch.float64)
    buffer = tensors[layer.buffer_key].detach().to(device=device, dtype=torch.float64)
    u = tensors[layer.u_key].detach().to(device=device, dtype=torch.float64)
    size = tuple(u.shape[2:])
    channels = u.shape[1]
    if u.dim() != weight.dim() or channels not in (weight.shape[0], weight.shape[1]):
        return replace(audit, error=f"u of shape {list(u.shape)} fits neither side of the kernel "
                                    f"{list(weight.shape)} (expected (1, C, *spatial))")
    output_side = channels != weight.shape[1]
    start = u if bool(u.any()) else None
    sigma, top = bounds.conv_same_operator_norm(weight, size, transposed=output_side, u0=start)
    effective, _ = bounds.conv_same_operator_norm(buffer, size, transposed=output_side)
    assert audit.sigma_estimate is not None
    cos = cos_error(u.reshape(-1), top.reshape(-1)) if start is not None else None
    note = (f"conv-operator: σ exact, σ̂'s reference and σ_eff are the operator norms of the zero-padded "
            f"'same' convolution at {'×'.join(map(str, size))} (u on the {'output' if output_side else 'input'} "
            "side); gap and stable rank are the reshaped matrix's",)
    return replace(
        audit,
        sigma_exact=sigma,
        sigma_rel_error=relative_error(audit.sigma_estimate, sigma),
        sigma_effective=effective,
        cos_error_u=cos,
        u_norm=float(torch.linalg.vector_norm(u)),
        notes=audit.notes + note,
    )


def _at_input(audit: LayerAudit, key: str, buffer_key: str | None, tensors: Mapping[str, Tensor],
              device: torch.device, input_size: tuple[int, ...]) -> LayerAudit:
    """``operator_at_input``: the exact 'same'-padding norm of a conv's effective weight at the
    user's input size (the last given size is repeated for more spatial axes)."""
    if audit.error is not None or not audit.kind.startswith("conv") or audit.sigma_effective is None:
        return audit
    kernel = _effective_kernel(audit, key, buffer_key, tensors, device, torch.float64)
    spatial = kernel.dim() - 2
    size = tuple(input_size[i] if i < len(input_size) else input_size[-1] for i in range(spatial))
    sigma, _ = bounds.conv_same_operator_norm(kernel, size, transposed=audit.kind.startswith("conv_transpose"))
    return replace(audit, operator_at_input=sigma)


_NORM_NAME = re.compile(r"(^|[._])(ln|gn|norm\w*|layer_?norm\w*|group_?norm\w*)\d*$", re.IGNORECASE)


def _norm_layer_warnings(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> list[str]:
    """LayerNorm / GroupNorm (a 1-D weight and bias named like a norm, without running statistics)
    divide by a data-dependent scale: not globally Lipschitz, so no bound covers them."""
    found = []
    for key, shape in shapes.items():
        if not key.endswith(".weight") or len(shape) != 1:
            continue
        module = key[: -len(".weight")]
        if module + ".running_var" in shapes or module + ".bias" not in shapes:
            continue
        if _NORM_NAME.search(module):
            found.append(prefix + display_name(module))
    if not found:
        return []
    return [f"LayerNorm/GroupNorm-like layers ({', '.join(found[:6])}{' ...' if len(found) > 6 else ''}) are "
            "not globally Lipschitz: the network bounds do not cover them"]


@dataclass(frozen=True)
class _BatchNorm:
    key: str
    name: str
    factor: float


def _batchnorm_factors(
    tensors: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]], device: torch.device
) -> list[_BatchNorm]:
    """Eval-mode BatchNorm layers (a module with running_mean and running_var) and their factors."""
    found = []
    for key in shapes:
        if not key.endswith("running_var"):
            continue
        module = key[: -len("running_var")]
        weight = tensors.get(module + "weight")
        var = tensors[key].detach().to(device=device, dtype=torch.float64)
        gamma = weight.detach().to(device=device, dtype=torch.float64) if weight is not None else None
        found.append(_BatchNorm(key, display_name(module.rstrip(".")), bounds.batchnorm_factor(gamma, var)))
    return found


@dataclass(frozen=True)
class ChainEntry:
    """One factor of the network chain: a weight layer or a BatchNorm, at its checkpoint position."""

    position: int
    name: str
    matrix: float | None
    """Reshaped-matrix norm (σ_eff); None for a BatchNorm."""
    operator: float | None
    """Certified operator bound; None when the layer has none."""


def network_bound(chain: Sequence[ChainEntry], excluded: Sequence[str]) -> NetworkBound:
    """∏ of per-layer norms over the chain, in checkpoint order, with the running products."""
    ordered = sorted(chain, key=lambda e: e.position)
    matrix: float = 1.0
    operator: float | None = 1.0
    cumulative_matrix, cumulative_operator = [], []
    for entry in ordered:
        matrix *= entry.matrix if entry.matrix is not None else 1.0
        operator = operator * entry.operator if (operator is not None and entry.operator is not None) else None
        cumulative_matrix.append(matrix)
        cumulative_operator.append(operator if operator is not None else math.nan)
    has_layers = any(e.matrix is not None for e in ordered)
    flipped = [e.name for e in ordered if e.matrix is not None and not e.matrix > 0.0]
    unavailable = None
    if flipped:  # σ_eff = σ1/σ̂ ≤ 0: σ̂ ≤ 0 flips the weight's sign; no product through it bounds anything
        unavailable = f"σ̂ ≤ 0 in {', '.join(flipped)} (the weight's sign is flipped; no bound holds)"
        has_layers = False
        cumulative_matrix = cumulative_operator = [math.nan] * len(ordered)
    return NetworkBound(
        matrix_product=matrix if has_layers else None,
        operator_product=operator if has_layers else None,
        cumulative_matrix=tuple(cumulative_matrix),
        cumulative_operator=tuple(cumulative_operator),
        layers=tuple(e.name for e in ordered),
        excluded=tuple(excluded),
        assumptions=ASSUMPTIONS,
        unavailable=unavailable,
    )


def _chain(audits: Sequence[tuple[LayerAudit, str]], batchnorms: Sequence[_BatchNorm],
           order: Mapping[str, int], prefix: str) -> tuple[list[ChainEntry], list[str]]:
    """The chain's factors and the layers left out of it."""
    chain, excluded = [], []
    for audit, key in audits:
        if audit.error is not None or audit.kind in {"embedding", "vector"} or audit.sigma_effective is None:
            excluded.append(audit.name)
            continue
        chain.append(ChainEntry(order[key], audit.name, audit.sigma_effective, audit.operator_bound))
    for bn in batchnorms:
        chain.append(ChainEntry(order[bn.key], prefix + bn.name, None, bn.factor))
    return chain, excluded


def _layer_warnings(audits: Sequence[LayerAudit]) -> list[str]:
    """The invariant checks of DESIGN.md, one line per broken layer."""
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
        if a.degenerate and a.dialect != "none":
            out.append(f"layer '{a.name}': σ1 ≈ σ2, the top singular vector is not unique (no cosine given)")
    return out
