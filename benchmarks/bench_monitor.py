"""Benchmark: the cost of ``SNMonitor(every=100)`` on the bundled DCGAN training
(sample_checkpoints/make_samples.py: D under torch.nn.utils.spectral_norm, 300 steps, 1 thread).

In one process, the same seeded training runs without and with the monitor, alternating
(``--repeats`` pairs, the order swapped every other pair, so drift in the machine's load and the
second run's own slowdown hit both alike); the overhead is
sum(monitored) / sum(plain) − 1, in the process's CPU time (``time.process_time``, one thread: what
the training itself spends, which other processes on a shared machine do not inflate) and, beside
it, in wall time. Also measured: the seconds of each audit (the monitor's own
``audit_seconds`` in the log) and the cost of ``monitor.step`` on a step that is not audited.
Writes a Markdown section to stdout (paste into BENCHMARKS.md).

    python benchmarks/bench_monitor.py [--steps 300] [--every 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import torch
from torch.nn.utils import spectral_norm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sample_checkpoints"))
import make_samples as samples  # noqa: E402

from sninspect.monitor import SNMonitor  # noqa: E402


def train(steps: int, monitor_every: int | None, log: Path | None,
          audit_cpu: list[float] | None = None) -> tuple[float, float, SNMonitor | None]:
    """CPU and wall seconds of the bundled DCGAN training (fresh seeded models and data each time);
    ``audit_cpu`` collects the CPU seconds of each audit."""
    data = samples.blobs_and_rings(samples.DATASET, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    batches = samples.Batches(data, torch.Generator().manual_seed(1))
    D, G = samples.DCGANDiscriminator(spectral_norm), samples.Generator()
    monitor = None if monitor_every is None else SNMonitor(D, every=monitor_every, log=log)
    if monitor is not None and audit_cpu is not None:
        audit = monitor.audit

        def timed(step: int) -> object:
            start = time.process_time()
            report = audit(step)
            audit_cpu.append(time.process_time() - start)
            return report

        monitor.audit = timed  # type: ignore[method-assign]
    cpu, wall = time.process_time(), time.perf_counter()
    samples.train_gan("bench", D, G, batches, steps, seed=1, on_step=None if monitor is None else monitor.step,
                      log_every=0)
    return time.process_time() - cpu, time.perf_counter() - wall, monitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain, watched, plain_wall, watched_wall, audits, audit_cpu = [], [], [], [], [], []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        train(20, None, None)  # warm-up: first-call costs out of the measurement
        for i in range(args.repeats):
            # Alternate which run of a pair goes first (ABBA): the second run of a pair was measured
            # slower by itself (plain-then-monitored gave +9% to +11%, monitored-then-plain +2.2%,
            # plain-then-plain +1%), so a fixed order biases the ratio.
            for watch in ((False, True) if i % 2 == 0 else (True, False)):
                if not watch:
                    cpu, wall, _ = train(args.steps, None, None)
                    plain.append(cpu)
                    plain_wall.append(wall)
                    continue
                log = Path(folder) / f"run{i}.jsonl"
                cpu, wall, monitor = train(args.steps, args.every, log, audit_cpu)
                watched.append(cpu)
                watched_wall.append(wall)
                audits += [json.loads(line)["audit_seconds"] for line in log.read_text().splitlines()]
        assert monitor is not None
        idle = timeit.timeit(lambda: monitor.step(args.every + 1), number=100_000) / 100_000
    overhead = sum(watched) / sum(plain) - 1
    overhead_wall = sum(watched_wall) / sum(plain_wall) - 1
    print(f"## Training monitor overhead (`benchmarks/bench_monitor.py --steps {args.steps} --every {args.every} "
          f"--repeats {args.repeats}`)\n")
    print(f"One run on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, {platform.machine()}, 1 thread, "
          f"CPU only, load average at the start {' '.join(f'{x:.2f}' for x in load)}, at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}. The bundled DCGAN "
          f"training (D and G steps alternating, batch 32) of {args.steps} steps, without and with "
          f"`SNMonitor(D, every={args.every}, log=...)`, {args.repeats} pairs, the order swapped every "
          "other pair.\n")
    print("| | CPU s per training run (each pair) | CPU s total | wall s per run | wall s total |")
    print("|---|---|---:|---|---:|")
    for label, cpu_s, wall_s in (("without monitor", plain, plain_wall), ("with monitor", watched, watched_wall)):
        print(f"| {label} | {', '.join(f'{s:.2f}' for s in cpu_s)} | {sum(cpu_s):.2f} | "
              f"{', '.join(f'{s:.2f}' for s in wall_s)} | {sum(wall_s):.2f} |")
    print(f"\n- overhead in CPU time: **{100 * overhead:+.2f}%** of training time (target ≤ 5%); per pair: "
          + ", ".join(f"{100 * (w / p - 1):+.1f}%" for p, w in zip(plain, watched, strict=True)))
    print(f"- the audits alone: {len(audit_cpu)} audits, median {statistics.median(audit_cpu) * 1e3:.0f} ms CPU "
          f"each; their CPU time is **{100 * sum(audit_cpu) / sum(plain):.2f}%** of the plain training's (the "
          "direct measure of the monitor's cost; the end-to-end ratio above also carries run-to-run noise)")
    print(f"- overhead in wall time: {100 * overhead_wall:+.2f}% (shared machine: other processes' load "
          "moves this more than the monitor does)")
    print(f"- one audit (5 SN layers, exact σ, certified conv bounds, check, JSON line): median "
          f"{statistics.median(audits) * 1e3:.0f} ms, max {max(audits) * 1e3:.0f} ms over {len(audits)} audits "
          f"= {100 * statistics.median(audits) * len(audits) / sum(watched_wall):.2f}% of the monitored wall time")
    print(f"- `monitor.step(n)` on a step that is not audited: {idle * 1e9:.0f} ns per call")


if __name__ == "__main__":
    main()
