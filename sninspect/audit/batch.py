"""Batching: equal-shape matrices loaded into one block, solved together, audited, and dropped, so
that peak memory follows the largest batch, not the file; memory-mapped pages are handed back."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.audit.layer import PlainLayer, audit_layer, error_audit
from sninspect.dialects import SNLayer
from sninspect.errors import LayerError
from sninspect.io import residency
from sninspect.linalg.exact import exact_spectra
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
    tensors: Mapping[str, Tensor],
    device: torch.device,
    dtype: torch.dtype,
    batch_bytes: int,
) -> list[tuple[LayerAudit, str]]:
    """Audit SN and plain layers, solving equal-shape matrices in batches of at most ``batch_bytes``;
    returns (audit, weight key) in checkpoint order."""
    order = {key: i for i, key in enumerate(tensors)}
    jobs: list[Job] = []
    results: dict[str, LayerAudit] = {}
    for layer in sn_layers:
        try:
            layer = dialects.resolve(layer, tensors)
        except LayerError as err:
            results[layer.weight_key] = error_audit(layer, tensors, str(err))
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


def _audit_batch(batch: list[Job], tensors: Mapping[str, Tensor], device: torch.device, dtype: torch.dtype,
                 batch_bytes: int) -> dict[str, LayerAudit]:
    """Audit one batch of equal-shape layers. A function of its own so that the block and every view
    of it are gone when it returns: the next batch's block never sits beside this one."""
    block = torch.empty((len(batch), *batch[0][2]), dtype=dtype, device=device)  # (b, rows, cols)
    results: dict[str, LayerAudit] = {}
    ready: list[tuple[SNLayer | PlainLayer, Tensor]] = []
    mapped: list[int] = []
    for job, key, _ in batch:
        try:
            matrix = load_matrix(tensors, key, _dim_of(job), device, dtype, out=block[len(ready)], pointers=mapped)
        except LayerError as err:
            results[key] = error_audit(job, tensors, str(err))
            continue
        ready.append((job, matrix))
    residency.release(mapped)
    spectra = exact_spectra([matrix for _, matrix in ready], batch_bytes=batch_bytes)
    for (job, matrix), spectrum in zip(ready, spectra, strict=True):
        key = job.weight_key if isinstance(job, SNLayer) else job.key
        try:
            results[key] = audit_layer(job, matrix, spectrum, tensors)
        except LayerError as err:
            results[key] = error_audit(job, tensors, str(err))
    residency.release(mapped)  # the pages of u, v and buffers read by the audits
    return results



def _dim_of(layer: SNLayer | PlainLayer) -> int:
    return (layer.dim or 0) if isinstance(layer, SNLayer) else 0


def _matrix_shape(shape: tuple[int, ...], dim: int) -> tuple[int, int]:
    if len(shape) <= 1:
        return (math.prod(shape), 1)
    return (shape[dim], math.prod(shape) // max(shape[dim], 1))


def _batches(jobs: list[Job], dtype: torch.dtype, batch_bytes: int) -> Iterator[list[Job]]:
    """Jobs grouped by matrix shape, each group cut so that one batch stays under ``batch_bytes``."""
    groups: dict[tuple[int, int], list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job[2]].append(job)
    itemsize = torch.finfo(dtype).bits // 8
    for shape, group in groups.items():
        step = max(1, batch_bytes // max(1, shape[0] * shape[1] * itemsize))
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

