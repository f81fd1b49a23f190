"""How wide each certified conv bound is by default: what a work budget buys, spent first where the
network bound gains most.

Every conv bound is a certified upper bound with a certified width (``operator_width`` = upper /
lower − 1, :mod:`sninspect.linalg.conv_bounds`), whatever the width: a coarser frequency grid gives a
wider bracket, never an uncertified one. The work is set by the grid: one complex Cholesky of the
n × n Gram matrix per frequency of half an N^d grid (n the smaller channel count), so a 1% bracket
of a 3×3 kernel (32×32, 514 frequencies) costs about 5.5× the coarsest rung below (20%: 8×8, 34
frequencies, plus the fixed work: the autocorrelation, the running maximum's records), and the widest
kernels dominate as n³: on the 30M discriminator of ``benchmarks/make_synthetic.py`` its 1024- and
768-channel kernels are 86% of the work at 1%.

**The rule** (the default; ``--bound-tol T`` asks T of every layer instead):

1. Every layer that needs a frequency bound starts at the cheap rung :data:`CHEAP` (no frequency grid:
   the reshape bound over a few frequencies' σ_max from below, :mod:`sninspect.linalg.cheap_bound`;
   about the layer's own spectrum in work, ~100% wide on Gaussian kernels): that is the price of a
   certified bound at all, always paid. A layer whose σ numbers are themselves frequency brackets (a
   conv normalized at a size not stored: two bounds) starts at the coarsest rung of :data:`LADDER`
   (20%) instead, so that its σ numbers stay within 20%.
2. A budget of :data:`BUDGET_RATIO` × (the spectra work + :data:`START_WORK`) buys refinements, one
   rung at a time, best first: the step that removes the most of log(network bound)'s width per unit
   of work (the cheap rung counted as :data:`CHEAP_WIDTH` wide: its width is known only once computed).
   The network bound is a product, so its log width is the sum of the layers' log(1 + width): every
   rung of every layer is worth the same anywhere in the network, and the cheap (narrow) kernels are
   refined first. A step that does not fit the rest of the budget stops that layer.
3. A layer whose bracket is free at the target (a conv-operator layer's padded circulant, already
   computed for its σ numbers) is at the target.

Why a cheap rung: the coarsest frequency rung costs the kernel's autocorrelation (2·45·n³ operations)
and the running maximum's records on top of its 34 Cholesky factorizations, about ten times the
layer's spectrum at n = 1024; on the 30M discriminator of ``benchmarks/make_synthetic.py`` that rung
everywhere is 19% of the work at 1%, about 7× the spectra-only audit (BENCHMARKS.md).

**Why a work model, not wall time.** The plan is made before any bound runs, from the shapes only,
in counted floating-point operations (:func:`bound_work`, :func:`spectra_work`): the same file gives
the same widths on any machine, at any load, so the numbers are reproducible and golden tests hold.
:data:`START_WORK` stands for the fixed cost of a process (start-up, loading: about 2.5 s, ~1e11
operations on the CPU it was sized on), so that a small checkpoint, whose spectra are cheap next to its
start-up, still gets 1% everywhere (the bundled samples, the RealSN files: their whole 1% work is a
few percent of the budget). Wall time enters only the estimate printed for ``--bound-tol`` (the
layers' measured times, scaled by the work model).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from sninspect import dialects
from sninspect.audit.layers.layer import LAYER_FAILURES
from sninspect.dialects import SNLayer
from sninspect.linalg import cheap_bound, conv_bounds
from sninspect.results.report import WIDTH_LADDER, LayerAudit

TARGET_WIDTH = 0.01
"""The width the default refines every conv bound toward (the ``--bound-tol`` default before the budget)."""

LADDER = WIDTH_LADDER
"""The frequency rungs the budget chooses among, finest first (below the last: :data:`CHEAP`)."""

CHEAP = conv_bounds.CHEAP
"""The rung below every frequency grid (``tol`` = inf): where every layer with one bound starts."""

CHEAP_WIDTH = 1.0
"""The width the plan assumes of the cheap rung, to weigh refining it (measured 90–100% on the He-
initialized Gaussian kernels of the 30M discriminator; lower on kernels whose symbol peaks)."""

BUDGET_RATIO = 0.3
"""Refinement work allowed per unit of spectra work (with :data:`START_WORK`): beyond the cheap rung,
the default report spends about a third of the spectra-only audit's modelled work on frequency rungs
(a 3×3 kernel's 1% bracket is ~60× its own spectrum's work, so only the narrow kernels of a wide
network are refined to 1%). The model counts the Cholesky factorizations at the BLAS's pace, which the
narrow kernels' small matrices do not reach (measured: about half of it), so the ratio is set from CPU
time: the default report on the 30M discriminator within 3× the spectra-only audit (BENCHMARKS.md).
Small checkpoints, whose budget is mostly :data:`START_WORK`, still get 1% everywhere."""

START_WORK = 1e11
"""A process's fixed cost (start-up, loading), as floating-point operations: ~2.5 s at ~50 GF/s."""

RECORD_FREQUENCIES = 40
"""The grid maximum's fixed work in frequency-equivalents: the running maximum's records (Lanczos,
a check, an eigen-solve where it fails) and the autocorrelation's packing; measured 40–90 at
n = 256–512 on one thread."""


@dataclass(frozen=True)
class BoundTask:
    """One layer's frequency-bound work, as the plan sees it."""

    key: str
    shape: tuple[int, ...]
    """The conv weight's shape (c_out, c_in, k...)."""
    bounds: int = 1
    """Frequency bounds the layer runs at its width (2: a conv normalized at a size not stored bounds
    the stored weight and the eval kernel)."""
    free_width: float | None = None
    """A width the layer's bracket reaches at no extra work (a conv-operator layer's padded circulant),
    or None."""

    def work(self, width: float) -> float:
        """Floating-point operations of this layer's bound at ``width`` (0 where it is free)."""
        if self.free_width is not None and self.free_width <= width:
            return 0.0
        return self.bounds * bound_work(self.shape, width)

    def rungs(self, ladder: Sequence[float]) -> tuple[float, ...]:
        """The widths the plan may give this layer, finest first: ``ladder``, then :data:`CHEAP` for a
        layer with one bound (its σ numbers are not the bound's)."""
        return (*ladder, CHEAP) if self.bounds == 1 else tuple(ladder)


def half_grid_count(grid: Sequence[int]) -> int:
    """Frequencies of half the grid (one of each conjugate pair): (∏N + self-conjugate points) / 2."""
    return (math.prod(grid) + math.prod(1 if n % 2 else 2 for n in grid)) // 2


def bound_work(shape: Sequence[int], width: float) -> float:
    """Modelled floating-point operations of :func:`~sninspect.linalg.conv_bounds.conv_operator_bound`
    at ``width``: per frequency a complex Cholesky (8n³/3) and the upper triangle of G(ω) formed from
    the offsets' autocorrelation (2·(2 planes)·offsets·n²·0.56), plus :data:`RECORD_FREQUENCIES`, plus
    the autocorrelation (2·taps·m·n² over half the offsets); at :data:`CHEAP`, :func:`cheap_work`.
    0 for 1-sized kernels (solved exactly)."""
    c_out, c_in, *ks = shape
    if all(k == 1 for k in ks):
        return 0.0
    if math.isinf(width):
        return cheap_work(shape)
    n, m = min(c_out, c_in), max(c_out, c_in)
    frequencies = half_grid_count(conv_bounds.grid_sizes(ks, width))
    offsets = math.prod(2 * k - 1 for k in ks)
    taps = (math.prod(k * k for k in ks) + math.prod(ks)) / 2
    per_frequency = 8.0 * n**3 / 3.0 + 2.25 * offsets * n * n
    return (frequencies + RECORD_FREQUENCIES) * per_frequency + 2.0 * taps * m * n * n


def cheap_work(shape: Sequence[int]) -> float:
    """Modelled floating-point operations of the cheap rung (:mod:`sninspect.linalg.cheap_bound`): the
    larger of the two outer reshapes' Gram matrices on their smaller side (its lower triangle: about
    (1 + 1/blocks)·s²·l) and its Cholesky
    (s³/3), the power steps and Lanczos products (matrix-vector products of the kernel: 16 per power
    step pair, 8 per frequency product), the taps' Gram matrix (2·K²·n·m)."""
    c_out, c_in, *ks = shape
    taps = math.prod(ks)
    gram = 0.0
    for rows, cols in ((c_out, c_in * taps), (c_out * taps, c_in)):
        side, long = min(rows, cols), max(rows, cols)
        gram = max(gram, (1.0 + 1.0 / cheap_bound.GRAM_BLOCKS) * side * side * long + side**3 / 3.0)
    kernel = c_out * c_in * taps
    symbol_products = cheap_bound.FREQUENCIES * cheap_bound.SYMBOL_PRODUCTS * 8.0 * c_out * c_in
    return gram + 8.0 * cheap_bound.POWER_STEPS * kernel + symbol_products + 2.0 * taps * kernel


def spectra_work(shape: Sequence[int]) -> float:
    """Modelled floating-point operations of a weight's exact spectrum (reshaped to (shape[0], rest)):
    the Gram matrix on the smaller side (2·s²·l) and its eigen-solve (~10 s³)."""
    if len(shape) < 2:
        return 0.0
    rows, cols = shape[0], math.prod(shape[1:])
    small, large = min(rows, cols), max(rows, cols)
    return 2.0 * small * small * large + 10.0 * small**3


@dataclass(frozen=True)
class Plan:
    """Each layer's width, and the budget behind them."""

    widths: Mapping[str, float]
    """key ↦ the width its bound is computed at."""
    budget: float
    """Refinement work allowed (floating-point operations)."""
    spent: float
    """Refinement work planned (≤ budget)."""


def plan_widths(tasks: Sequence[BoundTask], spectra: float, ladder: Sequence[float] = LADDER,
                ratio: float | None = None) -> Plan:
    """The default widths (see the module docstring): every task at its widest rung (:meth:`BoundTask.rungs`:
    :data:`CHEAP`, or ``ladder[-1]``), then rung by rung the refinement with the most log-width removed
    per operation that fits the budget ``ratio · (spectra + START_WORK)`` (``ratio`` None:
    :data:`BUDGET_RATIO`); ties go to the earlier layer. Deterministic: shapes only."""
    budget = (BUDGET_RATIO if ratio is None else ratio) * (spectra + START_WORK)
    rungs = {task.key: task.rungs(ladder) for task in tasks}
    level = {key: len(widths) - 1 for key, widths in rungs.items()}
    work = {task.key: [task.work(w) for w in rungs[task.key]] for task in tasks}
    heap: list[tuple[float, int, str]] = []

    def offer(index: int, task: BoundTask) -> None:
        i = level[task.key]
        if i == 0:
            return
        widths = rungs[task.key]
        cost = work[task.key][i - 1] - work[task.key][i]
        gain = math.log1p(min(widths[i], CHEAP_WIDTH)) - math.log1p(widths[i - 1])
        heapq.heappush(heap, (-gain / cost if cost > 0.0 else -math.inf, index, task.key))

    for index, task in enumerate(tasks):
        offer(index, task)
    left = budget
    while heap:
        _, index, key = heapq.heappop(heap)
        i = level[key]
        cost = max(0.0, work[key][i - 1] - work[key][i])
        if cost > left:
            continue  # this layer stays where it is; cheaper steps of others may still fit
        left -= cost
        level[key] = i - 1
        offer(index, tasks[index])
    return Plan({key: rungs[key][i] for key, i in level.items()}, budget, budget - left)


def seconds_at(tasks: Sequence[BoundTask], widths: Mapping[str, float], seconds: Mapping[str, float],
               elapsed: float, target: float) -> float | None:
    """Estimated seconds of the same audit with every layer at ``target``: ``elapsed`` plus, for each
    layer planned wider, its missing work at the measured pace: a layer on a frequency rung at its own
    (seconds × (work at target / work planned − 1)), a layer on the cheap rung at the pace (seconds per
    modelled operation) of the layer with the most work on a frequency rung, the closest in kind and in
    size (its own where there is none: the cheap rung's work is GEMM and copies, not Cholesky
    factorizations). None where every layer is at the target."""
    measured = [(t.work(widths[t.key]), seconds[t.key]) for t in tasks
                if t.key in seconds and t.key in widths and math.isfinite(widths[t.key])]
    largest = max(measured, default=(0.0, 0.0))
    pace = largest[1] / largest[0] if largest[0] > 0.0 else None
    extra, wider = 0.0, False
    for task in tasks:
        width = widths.get(task.key, target)
        if width <= target:
            continue
        wider = True
        planned, full = task.work(width), task.work(target)
        if math.isinf(width) and pace is not None:
            extra += max(0.0, full - planned) * pace
        elif planned > 0.0 and task.key in seconds:
            extra += seconds[task.key] * max(0.0, full / planned - 1.0)
    return elapsed + extra if wider else None


def width_free(shape: Sequence[int], padded: Sequence[int]) -> float | None:
    """The width of :func:`~sninspect.linalg.conv_bounds.bound_from_circulant` on the ``padded`` grid
    (what a conv-operator layer's bracket gives at no extra work), or None where it gives none."""
    found = conv_bounds.bound_from_circulant(shape, padded, 1.0, math.inf)
    return None if found is None else found.upper - 1.0


def bound_tasks(keyed: Sequence[tuple[LayerAudit, str]], layer_of: Mapping[str, SNLayer],
                tensors: Mapping[str, Tensor]) -> list[BoundTask]:
    """The layers whose operator work includes a frequency bound (the routes of
    :func:`sninspect.audit.layers.pipeline._as_operator`): audited convs with a kernel larger than 1; a
    conv-operator layer's bracket is free down to its padded circulant's width, one normalized at a
    size not stored runs two bounds. A layer whose view cannot be read here is planned as a plain conv
    (its work fails, or not, in the operator phase)."""
    tasks = []
    for audit, key in keyed:
        if audit.error is not None or audit.sigma_effective is None or not audit.kind.startswith("conv"):
            continue
        shape = tuple(audit.shape)
        if all(k == 1 for k in shape[2:]):
            continue
        layer = layer_of.get(key)
        try:
            view = None if layer is None else dialects.of(layer).operator_view(layer, tensors)
        except LAYER_FAILURES:
            view = None
        if view is None:
            tasks.append(BoundTask(key, shape))
        elif view.size is None:
            tasks.append(BoundTask(key, shape, bounds=2))
        else:
            padded = [n + k - 1 for n, k in zip(view.size, shape[2:], strict=True)]
            tasks.append(BoundTask(key, shape, free_width=width_free(shape, padded)))
    return tasks
