"""Batching: equal-shape matrices loaded into one block, solved together, audited, and dropped, so
that peak memory follows the largest batch, not the file; memory-mapped pages are handed back."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.audit.layers.layer import LAYER_FAILURES, PlainLayer, audit_layer, contained
from sninspect.audit.layers.tensors import UsableTensors
from sninspect.audit.memory import Budget, spectra_bytes
from sninspect.dialects import SNLayer
from sninspect.errors import LayerError
from sninspect.io import residency
from sninspect.linalg.exact import Spectrum, exact_spectra
from sninspect.linalg.spectral import to_matrix
from sninspect.results.report import LayerAudit

RELEASE_BYTES = 4 * 2**20
"""Memory-mapped weights are copied into the batch's block in pieces of this many stored bytes, each
piece's file pages handed back once copied (one /proc/self/maps read per piece); layers smaller than
this hand theirs back at the end of the batch."""

# A unit of work: the layer, the raw weight key, and its matrix shape.
Job = tuple[SNLayer | PlainLayer, str, tuple[int, int]]


def audit_all(
    sn_layers: list[SNLayer],
    plain: list[PlainLayer],
    tensors: UsableTensors,
    device: torch.device,
    dtype: torch.dtype,
    batch_bytes: int,
) -> list[tuple[LayerAudit, str]]:
    """Audit SN and plain layers, solving equal-shape matrices in batches of at most ``batch_bytes``
    (and of the memory budget); returns (audit, weight key) in checkpoint order. Every step of a layer
    runs inside the per-layer boundary (:func:`~sninspect.audit.layers.layer.contained`)."""
    order = {key: i for i, key in enumerate(tensors)}
    jobs: list[Job] = []
    results: dict[str, LayerAudit] = {}
    for layer in [*sn_layers, *plain]:
        job = contained(layer, tensors, lambda layer=layer: _prepare(layer, tensors, dtype))  # type: ignore[misc]
        if isinstance(job, LayerAudit):
            results[_key_of(layer)] = job
        else:
            jobs.append(job)

    # Batch by batch: load into one block (no stacking copy), solve, audit, drop, and hand the
    # memory-mapped pages read back to the OS, so that peak memory follows the largest batch.
    for batch in _batches(jobs, dtype, batch_bytes, tensors.budget):
        results.update(_audit_batch(batch, tensors, device, dtype, batch_bytes))
    return [(results[k], k) for k in sorted(results, key=lambda k: order[k])]


def _prepare(layer: SNLayer | PlainLayer, tensors: UsableTensors, dtype: torch.dtype) -> Job:
    """Resolve an SN layer's dim, check the layer's audit fits the memory budget (from shapes alone),
    and read its weight's kind (refused, dequantized or densified)."""
    if isinstance(layer, SNLayer):
        layer = dialects.resolve(layer, tensors)
    key = _key_of(layer)
    rows, cols = _matrix_shape(tuple(tensors.raw[key].shape), _dim_of(layer))
    tensors.budget.require(spectra_bytes(1, rows, cols, torch.finfo(dtype).bits // 8), "")
    stored = tensors[key]
    if stored.numel() * stored.element_size() >= RELEASE_BYTES:
        residency.release()  # pages a resolution may have read (a square layer's dim): not kept
    return layer, key, (rows, cols)


def _audit_batch(batch: list[Job], tensors: UsableTensors, device: torch.device, dtype: torch.dtype,
                 batch_bytes: int) -> dict[str, LayerAudit]:
    """Audit one batch of equal-shape layers. A function of its own so that the block and every view
    of it are gone when it returns: the next batch's block never sits beside this one."""
    block = torch.empty((len(batch), *batch[0][2]), dtype=dtype, device=device)  # (b, rows, cols)
    results: dict[str, LayerAudit] = {}
    ready: list[tuple[SNLayer | PlainLayer, Tensor]] = []
    mapped: list[int] = []
    for job, key, _ in batch:
        matrix = contained(job, tensors, lambda key=key, job=job: load_matrix(  # type: ignore[misc]
            tensors, key, _dim_of(job), device, dtype, out=block[len(ready)], pointers=mapped))
        if isinstance(matrix, LayerAudit):
            results[key] = matrix
        else:
            ready.append((job, matrix))
    residency.release(mapped)
    for (job, matrix), spectrum in zip(ready, _spectra(ready, tensors, batch_bytes), strict=True):
        key = _key_of(job)
        if isinstance(spectrum, LayerAudit):
            results[key] = spectrum
            continue
        results[key] = contained(job, tensors, lambda job=job, matrix=matrix, spectrum=spectrum: audit_layer(  # type: ignore[misc]
            job, matrix, spectrum, tensors))
    residency.release(mapped)  # the pages of u, v and buffers read by the audits
    return results


def _spectra(ready: list[tuple[SNLayer | PlainLayer, Tensor]], tensors: UsableTensors,
             batch_bytes: int) -> list[Spectrum | LayerAudit]:
    """The batch solved together; where that fails, each matrix alone, so that one matrix a solver
    cannot handle is that layer's error and not its batch's."""
    if not ready:
        return []
    try:
        return list(exact_spectra([matrix for _, matrix in ready], batch_bytes=batch_bytes))
    except LAYER_FAILURES:
        return [contained(job, tensors, lambda matrix=matrix: exact_spectra([matrix])[0])  # type: ignore[misc]
                for job, matrix in ready]


def _key_of(layer: SNLayer | PlainLayer) -> str:
    return layer.weight_key if isinstance(layer, SNLayer) else layer.key


def _dim_of(layer: SNLayer | PlainLayer) -> int:
    return (layer.dim or 0) if isinstance(layer, SNLayer) else 0


def _matrix_shape(shape: tuple[int, ...], dim: int) -> tuple[int, int]:
    if len(shape) <= 1:
        return (math.prod(shape), 1)
    return (shape[dim], math.prod(shape) // max(shape[dim], 1))


def _batches(jobs: list[Job], dtype: torch.dtype, batch_bytes: int, budget: Budget) -> Iterator[list[Job]]:
    """Jobs grouped by matrix shape, each group cut so that one batch stays under ``batch_bytes`` and
    its solve under the memory budget (each job alone was checked against it)."""
    groups: dict[tuple[int, int], list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job[2]].append(job)
    itemsize = torch.finfo(dtype).bits // 8
    for shape, group in groups.items():
        step = max(1, batch_bytes // max(1, shape[0] * shape[1] * itemsize))
        if budget.bytes is not None:
            step = max(1, min(step, budget.bytes // max(1, spectra_bytes(1, *shape, itemsize))))
        for start in range(0, len(group), step):
            yield group[start : start + step]


def load_matrix(
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

