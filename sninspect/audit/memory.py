"""The memory guard: what a layer's audit will need, estimated from its shapes before anything is
allocated, against a budget (``--max-memory``, else the memory available now). A layer over the
budget is refused with the size it would need (:class:`~sninspect.errors.MemoryBudgetError`, one
layer's error), never left to the OOM killer.

The estimates follow the code paths, in units of the working dtype's item size w:

- exact spectra of a batch of b matrices (m, n), k = min(m, n), l = max(m, n)
  (:mod:`sninspect.audit.layers.batch`, :mod:`sninspect.linalg.exact`): the block b·m·n; the SVD path's
  copy of the input, U and Vᵀ (2·k·l) and LAPACK's gesdd workspace (about 5·k²); the Gram path's
  scaled copy, W Wᵀ, its eigenvectors and the Ritz step (about 4·k²) — the larger of the two, as the
  Gram path falls back to the SVD; plus one more m·n for a dialect's eval matrix (its norm is an SVD).
- the certified conv bound (:mod:`sninspect.linalg.conv_bounds`) on the grid N_1..N_d that
  ``--bound-tol`` asks for, F = ∏N/2 frequencies, M = ∏(2k_i − 1) offsets, n = min(c_out, c_in):
  about eight F×M float64 arrays at once while the phases are formed (angles, integer steps, cos,
  sin and their temporaries), the grid indices (∏N·(d + 3) int64), the autocorrelation (M·n²) and
  the block of G(ω) (at most 64 MiB, at least one complex n×n), plus three copies of the kernel.
- the norm at ``--input-size`` or at a conv-operator u's size (:mod:`sninspect.linalg.conv_same`):
  thick-restart Lanczos keeps 2 × 24 vectors of D = c_in·∏n entries, plus the padded input and the
  convolution's output and its adjoint (about 6 more of c·∏(n + k − 1)).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sninspect.errors import MemoryBudgetError, UsageError, option
from sninspect.linalg.conv_bounds import grid_blocks, grid_sizes
from sninspect.linalg.symbol import row_block

MEMINFO = Path("/proc/meminfo")
PROC_STATUS = Path("/proc/self/status")

LIBRARY_WORKSPACE = 32 * 2**20
"""Bytes the certified conv bound takes beyond its own buffers: LAPACK's and the BLAS's workspaces and
the allocator's slack. Measured peak growth of one bound (3×3, 1%): 28.5 MB at 64 channels, where the
buffers come to 14 MB; 150–157 MB at 256, where they come to 135 MB."""


@dataclass(frozen=True)
class Budget:
    """How many bytes one step of the audit may allocate, and where that number came from."""

    bytes: int | None
    """None: no limit known (no ``--max-memory`` and no /proc/meminfo)."""
    source: str = "available memory"
    """``--max-memory`` or ``available memory``: named in a refusal."""

    def require(self, needed: int, what: str, fix: Callable[[int], str] | None = None) -> None:
        """Raise :class:`MemoryBudgetError` when ``needed`` bytes are over the budget; ``fix`` (given the
        budget's bytes) says what would fit."""
        if self.bytes is not None and needed > self.bytes:
            hint = fix(self.bytes) if fix is not None else ""
            raise MemoryBudgetError(f"{what}needs ~{format_size(needed)}, over the {format_size(self.bytes)} "
                                    f"budget ({self.source}){'; ' + hint if hint else ''}", needed, self.bytes)


NO_LIMIT = Budget(None)
"""No memory limit (library callers that check nothing)."""


def budget(max_memory: int | None) -> Budget:
    """``--max-memory`` when given, else MemAvailable from /proc/meminfo (None where there is none)."""
    if max_memory is not None:
        return Budget(max_memory, option("max_memory").rstrip("="))
    return Budget(available_memory())


def available_memory() -> int | None:
    """The bytes this process may still take: MemAvailable (Linux), or less where the process's
    address-space limit (``ulimit -v``, ``prlimit --as``) leaves less room; None where none is known.
    Without the limit, work estimated within MemAvailable failed at its first large allocation."""
    known = [room for room in (_meminfo_available(), _address_space_room()) if room is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    return _proc_field(MEMINFO, "MemAvailable:")


def _address_space_room() -> int | None:
    """RLIMIT_AS less the process's virtual size now (VmSize); None without a limit."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    size = _proc_field(PROC_STATUS, "VmSize:")
    if soft == resource.RLIM_INFINITY or size is None:
        return None
    return max(0, soft - size)


def _proc_field(path: Path, name: str) -> int | None:
    """A ``Name:   123 kB`` line of a /proc file, in bytes."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


LARGEST_SIZE = 2**60
"""The largest ``--max-memory`` taken (1 EiB): beyond any machine, and still an exact float."""


def parse_size(text: str) -> int:
    """``2G``, ``512M``, ``1.5GiB``, ``4000000`` → bytes (K/M/G/T are powers of 1024), 1 B to 1 EiB."""
    found = _SIZE.match(text)
    if not found or float(found.group(1)) <= 0:
        raise UsageError(f"{option('max_memory', repr(text))}: expected a positive size such as 2G, 512M or 1.5GiB")
    unit = 1024 ** " kmgt".index(found.group(2).lower() or " ")
    size = float(found.group(1)) * unit  # inf for 400 digits: float() of a decimal string never raises
    if not 1 <= size <= LARGEST_SIZE:
        shown = text.strip() if len(text.strip()) <= 24 else text.strip()[:20] + "..."
        raise UsageError(f"{option('max_memory', repr(shown))}: expected a size from 1 byte to 1 EiB, such as "
                         "2G, 512M or 1.5GiB")
    return int(size)


def format_size(n: float) -> str:
    """``10.3 GiB``, ``512.0 MiB``, ``12 B``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def spectra_bytes(count: int, rows: int, cols: int, itemsize: int) -> int:
    """Peak bytes of loading and solving ``count`` (rows, cols) matrices together (module docstring)."""
    k, long = min(rows, cols), max(rows, cols)
    per_matrix = 2 * rows * cols + max(2 * k * long + 5 * k * k, 4 * k * k) + rows * cols
    return count * per_matrix * itemsize


def conv_bound_bytes(shape: Sequence[int], grid: Sequence[int] | None) -> int:
    """Peak bytes of the certified conv bound of a kernel (c_out, c_in, k...) on ``grid`` (None: the
    cheap rung, no grid: the kernel's copies, the reshape's Gram matrix and one frequency's symbol)."""
    c_out, c_in, *ks = shape
    if grid is None:
        taps = math.prod(ks)
        side = max(min(c_out, c_in * taps), min(c_out * taps, c_in))
        return 5 * math.prod(shape) * 8 + 3 * side * side * 8 + 6 * c_out * c_in * 8 + LIBRARY_WORKSPACE
    n = min(c_out, c_in)
    points = math.prod(grid)
    frequencies = points // 2 + 1
    offsets = math.prod(2 * k - 1 for k in ks)
    phases = 8 * frequencies * offsets * 8
    indices = points * (len(ks) + 3) * 8
    autocorrelation = 2 * offsets * n * n * 8
    # grid_max's buffers for a block of `step` frequencies: the complex matrices (16·n² bytes each), the
    # GEMM's planes (one row block of R rows: 16·R·n each), the reused Cholesky factors and the float32
    # screen's copy (linalg/symbol.py, conv_bounds.py); the packed autocorrelation is within the term above.
    step, batch = grid_blocks(n, offsets, frequencies)
    rows = row_block(n)
    block = step * 16 * n * n + step * 16 * rows * n + min(step, batch) * 16 * n * n + step * 8 * n * n
    kernel = 3 * math.prod(shape) * 8
    return phases + indices + autocorrelation + block + kernel + LIBRARY_WORKSPACE


def bound_grid(shape: Sequence[int], tol: float) -> tuple[int, ...] | None:
    """The frequency grid of the conv bound of a kernel of ``shape`` at ``tol``; None at the cheap rung
    (``tol`` infinite: no grid)."""
    return None if math.isinf(tol) else grid_sizes(shape[2:], tol)


BOUND_TOLS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1,
              0.2, 0.5)
"""The ``--bound-tol`` values a refusal may suggest (the option's range, in 1-2-5 steps)."""


def bound_tol_fix(shape: Sequence[int], tol: float, budget: int) -> str:
    """What to pass instead when the conv bound at ``tol`` is over ``budget`` bytes: the finest
    ``--bound-tol`` that fits, else a larger ``--max-memory``."""
    for candidate in BOUND_TOLS:
        if candidate > tol and conv_bound_bytes(shape, bound_grid(shape, candidate)) <= budget:
            return f"{option('bound_tol', f'{candidate:g}')} fits, or raise {option('max_memory').rstrip('=')}"
    return f"raise {option('max_memory').rstrip('=')}"


def conv_same_bytes(shape: Sequence[int], size: Sequence[int], transposed: bool) -> int:
    """Peak bytes of the exact 'same' conv norm of a kernel (c_out, c_in, k...) at input ``size``: the
    Lanczos basis and products, or the certified upper end (the circulant on the padded grid), whichever
    is larger (they run one after the other)."""
    c_out, c_in, *ks = shape
    grid = [n + k - 1 for n, k in zip(size, ks, strict=False)]
    if transposed:
        c_out, c_in = c_in, c_out
    vector = c_in * math.prod(size)
    padded = max(c_out, c_in) * math.prod(grid)
    lanczos = (2 * 24 + 4) * vector * 8 + 6 * padded * 8
    return max(lanczos, conv_bound_bytes(shape, grid))
