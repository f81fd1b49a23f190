"""Time the certified convolution bound (sninspect.linalg.conv_bounds.conv_operator_bound) on random kernels.

    python benchmarks/bench_bounds.py                      # 64/256/512 channels, 3x3, tol 1%
    python benchmarks/bench_bounds.py --channels 512 --repeats 5 --baseline

Prints, per kernel, the median (and min) wall time of a few repeats, their median process-CPU time,
the bracket it certified, and a one-shot breakdown (wall): the reshape ("cheap") bound as the
certified bound runs it (power iteration first, exact only where it could win), the same with every
reshape solved exactly ("all4"), the grid maximum, and, with ``--baseline``, the naive alternative
(an eigen-solve at every frequency of the same half grid). The load average is printed too: on a
shared machine it moves timings far more than anything measured here.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from sninspect.linalg import conv_bounds, symbol

T = TypeVar("T")


def timed(fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[float, T]:
    """Wall seconds of one call, and its result."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def cpu_timed(fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[float, float, T]:
    """Wall and process-CPU seconds of one call (CPU time moves less when other jobs share the
    machine), and its result."""
    cpu = time.process_time()
    wall, out = timed(fn, *args, **kwargs)
    return wall, time.process_time() - cpu, out


def random_kernel(channels: int, k: int, dims: int, seed: int) -> torch.Tensor:
    """He-scaled Gaussian kernel (c, c, k, ..., k): the flat-spectrum worst case for screening."""
    gen = torch.Generator().manual_seed(seed)
    shape = (channels, channels, *([k] * dims))
    return torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(channels * k**dims)


def naive_grid_max(kernel: torch.Tensor, grid: tuple[int, ...]) -> float:
    """Reference cost: an eigen-solve of K̂ᴴK̂ at every frequency of the same half grid."""
    weight = kernel.double()
    if weight.shape[0] < weight.shape[1]:
        weight = weight.transpose(0, 1)  # as grid_max: the Gram on the smaller side
    offsets, autocorr = symbol.autocorrelation(weight)  # (M, d), (M, n, n)
    index = symbol.half_grid(grid, weight.device)  # (F, d)
    cos, sin = symbol.phases(index, grid, offsets)  # (F, M)
    n = autocorr.shape[1]
    step = max(1, conv_bounds.FACTOR_BYTES // (16 * n * n))
    grams = symbol.UpperGrams(autocorr, step)
    best = 0.0
    for start in range(0, index.shape[0], step):
        negated = grams.negated(cos[start : start + step], sin[start : start + step])  # upper triangles
        best = max(best, -float(torch.linalg.eigvalsh(negated, UPLO="U")[:, 0].min()))  # λ_max(G) = −λ_min(−G)
    return math.sqrt(best)


def bench(channels: int, args: argparse.Namespace) -> str:
    """One table row: repeated timings of the whole bound, then a one-shot breakdown."""
    kernel = random_kernel(channels, args.kernel, args.dims, args.seed)
    times, cpus = [], []
    for _ in range(args.repeats):
        elapsed, cpu, bound = cpu_timed(conv_bounds.conv_operator_bound, kernel, tol=args.tol)
        times.append(elapsed)
        cpus.append(cpu)
    cheap_s, _ = timed(conv_bounds.reshape_bound_below, kernel.double(), bound.tight)  # as the bound runs it
    all_s, _ = timed(conv_bounds.reshape_bounds, kernel)  # every reshape solved exactly
    grid_s, _ = timed(conv_bounds.grid_max, kernel, bound.grid)
    width = bound.upper / bound.lower - 1.0
    row = (f"{channels:>8} {'x'.join(map(str, bound.grid)):>12} {statistics.median(times):>9.2f} "
           f"{min(times):>7.2f} {statistics.median(cpus):>7.2f} {bound.lower:>9.5f} {bound.upper:>9.5f} {width:>8.2%} "
           f"{bound.method:>13} {cheap_s:>8.2f} {all_s:>9.2f} {grid_s:>7.2f}")
    if args.baseline:
        naive_s, naive = timed(naive_grid_max, kernel, bound.grid)
        assert abs(naive / bound.lower - 1.0) < 1e-9, (naive, bound.lower)
        row += f" {naive_s:>8.2f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--kernel", type=int, default=3, help="kernel size per spatial axis")
    parser.add_argument("--dims", type=int, default=2, choices=[1, 2, 3])
    parser.add_argument("--tol", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--baseline", action="store_true", help="also time an eigen-solve at every frequency")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {load}")
    print(f"kernel {args.kernel}^{args.dims}, tol {args.tol:g}, median of {args.repeats}")
    columns = ["channels:8", "grid:12", "median s:9", "min s:7", "cpu s:7", "lower:9", "upper:9", "width:8",
               "method:13", "cheap s:8", "all4 s:9", "grid s:7"] + (["naive s:8"] if args.baseline else [])
    print(" ".join(f"{name:>{int(width)}}" for name, width in (c.rsplit(":", 1) for c in columns)))
    for channels in args.channels:
        print(bench(channels, args), flush=True)


if __name__ == "__main__":
    main()
