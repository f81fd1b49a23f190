"""Hand the pages of memory-mapped checkpoints back to the OS between batches (Linux; elsewhere a no-op).

Reading a tensor of a memory-mapped checkpoint (safetensors' ``safe_open``, ``torch.load(mmap=True)``)
maps its pages into the process, and they stay in its resident set until the mapping closes: over a
whole audit that is the file size, whatever the batch size. :func:`release` asks the kernel to
reclaim them (``madvise(MADV_PAGEOUT)``, Linux ≥ 5.4): clean file pages leave the resident set and
are read again from the file if touched again; pages someone wrote to are kept (or swapped), so no
data is ever lost, unlike ``MADV_DONTNEED`` on a private mapping. The cost is a re-read from disk for
pages used again, which an audit does once per conv layer at most.

:func:`heap_retention_limited` (a context manager; :func:`limit_heap_retention` for the rest of
the process) is for the CLI's own process: glibc's malloc raises its mmap threshold
each time a large block is freed (up to 32 MiB), after which blocks of one layer's size come from the
heap and the freed ones stay resident; whether that happens depends on the order of frees, so two
runs of the same audit can peak tens of MiB apart. A fixed threshold of
1 MiB makes every large block an mmap of its own, returned to the OS when freed.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sninspect.io.suffixes import TENSOR_SUFFIXES

MADV_PAGEOUT = 21
"""linux/mman.h: reclaim these pages now (since Linux 5.4)."""


def release(pointers: Iterable[int] = ()) -> int:
    """Reclaim the resident pages of non-executable file mappings that are checkpoints (by suffix,
    :data:`~sninspect.io.suffixes.TENSOR_SUFFIXES`) or hold one of ``pointers`` (the data pointers of
    memory-mapped tensors). Returns the bytes of address space advised (not all of it was resident); 0
    where not supported."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text(errors="surrogateescape")  # file names need not be UTF-8
    except OSError:
        return 0
    wanted = sorted(set(pointers))
    advised = 0
    with _libc() as libc:
        if libc is None:
            return 0
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or parts[4] == "0" or "x" in parts[1]:
                continue  # anonymous, or code
            start, end = (int(x, 16) for x in parts[0].split("-"))
            ours = parts[5].lower().endswith(TENSOR_SUFFIXES) or any(start <= p < end for p in wanted)
            if ours and int(libc.madvise(start, end - start, MADV_PAGEOUT)) == 0:
                advised += end - start
    return advised


M_MMAP_THRESHOLD = -3
"""glibc malloc.h: mallopt parameter; setting it also turns the dynamic threshold off."""

DEFAULT_MMAP_THRESHOLD = 128 * 2**10
"""glibc's initial M_MMAP_THRESHOLD (DEFAULT_MMAP_THRESHOLD_MIN), what leaving the context restores."""


@contextmanager
def heap_retention_limited(threshold: int = 2**20) -> Iterator[bool]:
    """Within the block, serve allocations of ``threshold`` bytes and more by mmap, returned to the OS
    when freed (glibc only). Yields whether it took. Process-wide, so the CLI enters it for its own
    process; the library does not. On leaving, the threshold goes back to glibc's initial 128 KiB
    (glibc cannot report the value it had, and its dynamic adjustment stays off)."""
    took = _set_mmap_threshold(threshold)
    try:
        yield took
    finally:
        if took:
            _set_mmap_threshold(DEFAULT_MMAP_THRESHOLD)


def limit_heap_retention(threshold: int = 2**20) -> bool:
    """:func:`heap_retention_limited` for the rest of the process (the CLI's callback, whose process
    ends with the command). True where it took."""
    global _LIMITED
    took = _set_mmap_threshold(threshold)
    if took:
        _LIMITED = threshold
    return took


_LIMITED: int | None = None
"""The threshold :func:`limit_heap_retention` set for this process, if it did."""

M_TRIM_THRESHOLD = -1
"""glibc malloc.h: free memory at the heap's top beyond this is returned to the OS."""

DEFAULT_TRIM_THRESHOLD = 128 * 2**10
"""glibc's initial M_TRIM_THRESHOLD."""


@contextmanager
def scratch_reused(threshold: int = 32 * 2**20) -> Iterator[None]:
    """Where :func:`limit_heap_retention` took (the CLI): within the block, blocks under ``threshold``
    come from the heap and are reused when freed. The operator work allocates and frees buffers of a
    few MB thousands of times (frequency blocks, Lanczos bases, im2col); as fresh mappings each would
    be page-faulted in anew, and reusing them costs far less system time than that for a little more
    peak (figures in BENCHMARKS.md). Loading and the spectra, whose layer-sized blocks set the peak,
    stay under the limit.
    On leaving, the limit is back and the heap is trimmed. A no-op in library use (nothing limited)."""
    limited = _LIMITED
    if limited is None:
        yield
        return
    _mallopt(M_TRIM_THRESHOLD, 2 * threshold)
    _set_mmap_threshold(threshold)
    try:
        yield
    finally:
        _set_mmap_threshold(limited)
        _mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        with _libc() as libc:
            trim = getattr(libc, "malloc_trim", None)
            if trim is not None:
                trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
                trim(0)


def _set_mmap_threshold(threshold: int) -> bool:
    return _mallopt(M_MMAP_THRESHOLD, threshold)


def _mallopt(parameter: int, value: int) -> bool:
    with _libc() as libc:
        mallopt = getattr(libc, "mallopt", None)  # glibc; musl has none
        if mallopt is None:
            return False
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        return bool(mallopt(parameter, value))


@contextmanager
def _libc() -> Iterator[ctypes.CDLL | None]:
    """The C library of this process (``dlopen(NULL)``: already loaded, nothing is opened anew), or
    None off Linux or where it has no madvise; opened per use, so no handle is kept at module level."""
    if not sys.platform.startswith("linux"):
        yield None
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        libc = None
    yield libc
