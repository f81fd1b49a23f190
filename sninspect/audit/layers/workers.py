"""Several layers' operator work at once, on a CPU.

Each layer's operator work (conv brackets, certified bounds) reads only that layer's tensors, and at
the sizes conv layers have one operation at a time uses a CPU's threads poorly: on two cores a
64-channel 40×40 AᵀA product takes 1.75 ms on two threads and 3.0 ms on one, but two layers on one
thread each do one every 1.2 ms; a batch of 883 64×64 complex Cholesky factorizations takes 67.5 ms
on two threads and 75 ms on one. So layers run on worker threads, each with its share of torch's
threads (the setting is per thread under OpenMP, and torch's BLAS honours it per thread), and the
results come back in the layers' order. Torch releases the GIL in its kernels; the Python between
them is a small share.

On a GPU the kernels queue on one device anyway: one layer at a time. The number of workers is also
held to what the memory budget allows side by side (each layer's work checks its own step against
the whole budget, as when run alone, so the count must leave room for the others).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from sninspect.audit.memory import Budget

__all__ = ["MAX_WORKERS", "WIDE_CHANNELS", "run_all", "worker_count"]

T = TypeVar("T")

MAX_WORKERS = 4
"""Most layers at once: beyond a few, memory bandwidth, not threads, limits these kernels."""

WIDE_CHANNELS = 128
"""Kernels whose smaller channel count is above this run alone, with all of torch's threads."""


def cpu_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(device: torch.device, layers: int, need: Callable[[], int], budget: Budget,
                 asked: int | None = None) -> int:
    """How many layers to work on at once: ``asked`` where given (1: one at a time), else up to the
    cores, torch's thread count and :data:`MAX_WORKERS`; never more than ``layers``, 1 on a GPU, and
    no more than the budget holds of the largest layer's ``need()`` in bytes (called only then)."""
    if device.type != "cpu" or layers < 2:
        return 1
    count = asked if asked is not None else min(cpu_cores(), torch.get_num_threads(), MAX_WORKERS)
    count = min(count, layers)
    if count > 1 and budget.bytes is not None:
        largest = need()
        if largest > 0:
            count = min(count, budget.bytes // largest)
    return max(1, count)


def run_all(tasks: Sequence[Callable[[], T]], workers: int, alone: Sequence[bool] = ()) -> list[T]:
    """Each task's result, in order; ``workers`` at a time on threads that split torch's threads
    between them (restored afterwards). Tasks marked in ``alone`` run first, one at a time on this
    thread with all of torch's threads (wide kernels, whose factorizations use them well: the 30M
    discriminator's report took 92 s with its wide layers two at a time, 75 s with them one at a time).
    A task's exception is raised here, in order; the tasks not started yet are cancelled."""
    if workers <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    results: dict[int, T] = {}
    for i, task in enumerate(tasks):
        if i < len(alone) and alone[i]:
            results[i] = task()
    rest = [i for i in range(len(tasks)) if i not in results]
    for i, value in zip(rest, _pooled([tasks[i] for i in rest], workers), strict=True):
        results[i] = value
    return [results[i] for i in range(len(tasks))]


def _pooled(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """:func:`run_all` of tasks that may share the CPU."""
    if workers <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    total = torch.get_num_threads()
    share = max(1, total // workers)

    def run(task: Callable[[], T]) -> T:
        torch.set_num_threads(share)  # this worker thread's intra-op threads
        return task()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sninspect-layer")
    # Each task in a copy of the caller's context: messages built on a worker thread name options as
    # the caller's user writes them (--input-size on the command line, input_size= from Python).
    futures = [pool.submit(contextvars.copy_context().run, run, task) for task in tasks]
    try:
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(total)
