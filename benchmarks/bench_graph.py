"""Benchmark: the topology-aware bound (``sninspect graph``) on the SNGAN-ResNet discriminator layout.

The model (tests/graphnets.py: 4 residual blocks of two 3×3 SN convs + 1×1 SN shortcut, average-pool
downsampling, ReLU, global sum pooling, SN linear) is trained ``--steps`` hinge-loss steps on random
data (smooth "real" images against uniform noise), exported with torch.export in a temporary folder
(never committed), then bounded in-process: the upper bound (graph rules), the lower bound search
(default options), the chain product of the per-layer bounds, and their ratios. Writes a Markdown
section to stdout. Usage: ``python benchmarks/bench_graph.py --channels 32 64 --size 32``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from graphnets import export, trained_resnet_d  # noqa: E402

from sninspect.audit.graph.analysis import GraphOptions, analyze_graph  # noqa: E402
from sninspect.io.exported import load_exported  # noqa: E402


def run(channels: int, size: int, steps: int, options: GraphOptions) -> dict[str, float | str]:
    began = time.perf_counter()
    model = trained_resnet_d(ch=channels, size=size, steps=steps)
    trained = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as folder:
        path = export(model, torch.randn(1, 3, size, size), Path(folder) / "d.pt2")
        began = time.perf_counter()
        graph = load_exported(path)
        loaded = time.perf_counter() - began
        report = analyze_graph(graph, options)
    empirical = report.empirical
    return {
        "model": f"ResNet-D ch={channels} {size}x{size}, {steps} steps",
        "params": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M",
        "upper": report.upper, "lower": report.lower or float("nan"), "ratio": report.ratio or float("nan"),
        "chain": report.chain_product, "chain/upper": report.chain_over_upper,
        "blocks": " · ".join(f"{b.module} {b.factor:.3g}" for b in report.blocks),
        "t_train": trained, "t_load": loaded, "t_upper": report.seconds,
        "t_lower": empirical.seconds if empirical else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="training steps before export")
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--search-steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    options = GraphOptions(starts=args.starts, steps=args.search_steps)
    rows = [run(ch, args.size, args.steps, options) for ch in args.channels]
    print(f"## Graph bound on the SNGAN-ResNet discriminator (`benchmarks/bench_graph.py "
          f"--channels {' '.join(map(str, args.channels))} --size {args.size}`, issue 17)\n")
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}, one run; lower-bound search: {args.starts} starts x {args.search_steps} steps.\n")
    print("| model | params | upper | lower | upper/lower | chain product | chain/upper | load s | upper s "
          "| lower s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']} | {r['upper']:.4g} | {r['lower']:.4g} | {r['ratio']:.3g} | "
              f"{r['chain']:.4g} | {r['chain/upper']:.3g} | {r['t_load']:.2f} | {r['t_upper']:.1f} | "
              f"{r['t_lower']:.1f} |")
    print("\nBlock factors (bound leaving / bound entering):\n")
    for r in rows:
        print(f"- {r['model']}: {r['blocks']}")


if __name__ == "__main__":
    main()
