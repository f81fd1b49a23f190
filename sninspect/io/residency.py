"""Hand the pages of memory-mapped checkpoints back to the OS between batches (Linux; elsewhere a no-op).

Reading a tensor of a memory-mapped checkpoint (safetensors' ``safe_open``, ``torch.load(mmap=True)``)
maps its pages into the process, and they stay in its resident set until the mapping closes: over a
whole audit that is the file size, whatever the batch size. :func:`release` asks the kernel to
reclaim them (``madvise(MADV_PAGEOUT)``, Linux ≥ 5.4): clean file pages leave the resident set and
are read again from the file if touched again; pages someone wrote to are kept (or swapped), so no
data is ever lost, unlike ``MADV_DONTNEED`` on a private mapping. The cost is a re-read from disk for
pages used again, which an audit does once per conv layer at most.

:func:`limit_heap_retention` is for the CLI's own process: glibc's malloc raises its mmap threshold
each time a large block is freed (up to 32 MiB), after which blocks of one layer's size come from the
heap and the freed ones stay resident; whether that happens depends on the order of frees, and was
seen to add 56 MiB to the peak of one run of the same audit and not the next. A fixed threshold of
1 MiB makes every large block an mmap of its own, returned to the OS when freed.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable
from pathlib import Path

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
"""File mappings with these suffixes are released; others only when they hold a given pointer."""

MADV_PAGEOUT = 21
"""linux/mman.h: reclaim these pages now (since Linux 5.4)."""


def release(pointers: Iterable[int] = ()) -> int:
    """Reclaim the resident pages of non-executable file mappings that are checkpoints (by suffix) or
    hold one of ``pointers`` (the data pointers of memory-mapped tensors). Returns the bytes of
    address space advised (not all of it was resident); 0 where not supported."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    wanted = sorted(set(pointers))
    advised = 0
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[4] == "0" or "x" in parts[1]:
            continue  # anonymous, or code
        start, end = (int(x, 16) for x in parts[0].split("-"))
        ours = parts[5].lower().endswith(CHECKPOINT_SUFFIXES) or any(start <= p < end for p in wanted)
        if ours and _madvise(start, end - start, MADV_PAGEOUT):
            advised += end - start
    return advised


M_MMAP_THRESHOLD = -3
"""glibc malloc.h: mallopt parameter; setting it also turns the dynamic threshold off."""


def limit_heap_retention(threshold: int = 2**20) -> bool:
    """Serve allocations of ``threshold`` bytes and more by mmap, returned to the OS when freed
    (glibc only; process-wide, so the CLI calls it, the library does not). True where it took."""
    libc = _libc_handle() if sys.platform.startswith("linux") else None
    mallopt = getattr(libc, "mallopt", None)  # glibc; musl has none
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


_libc: ctypes.CDLL | None = None


def _libc_handle() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            _libc.madvise.restype = ctypes.c_int
        except (OSError, AttributeError):
            return None
    return _libc


def _madvise(address: int, length: int, advice: int) -> bool:
    libc = _libc_handle()
    return libc is not None and int(libc.madvise(address, length, advice)) == 0
