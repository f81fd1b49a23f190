"""Benchmark: exact per-layer spectra of SN checkpoints, sninspect against the floor and a peer.

Builds synthetic checkpoints in a temporary folder (never committed) at three scales and measures,
on the same weights in the same run, each in a fresh subprocess (so peak RSS is per measurement):

- ``svdvals-loop``: the floor a user would write: per layer ``torch.linalg.svdvals`` in float64;
- ``sninspect-spectra``: sninspect's batched exact spectra (σ, σ1's singular vectors), no bounds;
- ``sninspect-report``: the full ``sninspect.analyze`` (numbers, dialects, certified conv bounds);
- ``weightwatcher``: ``WeightWatcher(model).analyze()`` on the same weights, when installed;
- ``baseline``: python + torch + sninspect imported, nothing loaded (the RSS floor).

Writes BENCHMARKS.md (or ``--out``). Usage: ``python benchmarks/bench_spectra.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# (in, out) channels of 3×3 SN convolutions, then an SN linear head (in_features, 1).
SCALES: dict[str, dict[str, object]] = {
    "gan-d-30M": {"convs": [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                            (256, 512),
                            (512, 512), (512, 512), (512, 1024), (1024, 1024), (1024, 1024)], "linears": [(1024, 1)]},
    "gan-d-100M": {"convs": [(3, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 1024),
                             (1024, 1024), (1024, 1024), (1024, 1024), (1024, 1024), (1024, 2048), (2048, 2048)],
                   "linears": [(2048, 1)]},
    "stack-24x1024x4096": {"convs": [], "linears": [(4096, 1024)] * 24},
}
SMOKE = {"smoke": {"convs": [(3, 16), (16, 32)], "linears": [(64, 32), (32, 1)]}}
SCALES.update(SMOKE)


def build(name: str, folder: Path) -> Path:
    """A torch-dialect SN checkpoint of random weights (float32), u and v random unit vectors."""
    spec = SCALES[name]
    gen = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    index = 0
    for c_in, c_out in spec["convs"]:  # type: ignore[attr-defined]
        w = torch.randn(c_out, c_in, 3, 3, generator=gen) / (3 * c_in**0.5)
        state.update(_sn(f"main.{index}.weight", w, gen))
        state[f"main.{index}.bias"] = torch.zeros(c_out)
        index += 2
    for f_in, f_out in spec["linears"]:  # type: ignore[attr-defined]
        w = torch.randn(f_out, f_in, generator=gen) / f_in**0.5
        state.update(_sn(f"main.{index}.weight", w, gen))
        index += 2
    path = folder / f"{name}.pt"
    torch.save(state, path)
    return path


def _sn(key: str, weight: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    u = torch.randn(weight.shape[0], generator=gen)
    v = torch.randn(weight[0].numel(), generator=gen)
    return {key + "_orig": weight, key + "_u": u / u.norm(), key + "_v": v / v.norm()}


def parameters(path: Path) -> int:
    state = torch.load(path, weights_only=True, mmap=True)
    return sum(t.numel() for k, t in state.items() if k.endswith("_orig"))


# ----------------------------------------------------------------------------------------------
# Child processes: one measurement each


def child(method: str, path: Path) -> dict[str, float]:
    torch.set_num_threads(os.cpu_count() or 1)
    import sninspect
    from sninspect.spectral import exact_spectra, to_matrix

    start = time.perf_counter()
    if method == "baseline":
        pass
    elif method == "svdvals-loop":
        state = torch.load(path, weights_only=True, mmap=True)
        for key, tensor in state.items():
            if key.endswith("_orig"):
                torch.linalg.svdvals(tensor.double().reshape(tensor.shape[0], -1))
    elif method == "sninspect-spectra":
        state = torch.load(path, weights_only=True, mmap=True)
        mats = [to_matrix(t.double(), 0) for k, t in state.items() if k.endswith("_orig")]
        exact_spectra(mats)
    elif method == "sninspect-report":
        sninspect.analyze(path, device="cpu")
    elif method == "weightwatcher":
        import weightwatcher

        model = _plain_module(path)
        weightwatcher.WeightWatcher(model=model).analyze()
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024}


def _plain_module(path: Path) -> torch.nn.Module:
    """The same weights as plain Conv2d/Linear modules (what weightwatcher can read)."""
    state = torch.load(path, weights_only=True)
    layers = torch.nn.ModuleList()
    for key, tensor in state.items():
        if not key.endswith("_orig"):
            continue
        if tensor.dim() == 4:
            module: torch.nn.Module = torch.nn.Conv2d(tensor.shape[1], tensor.shape[0], 3, bias=False)
        else:
            module = torch.nn.Linear(tensor.shape[1], tensor.shape[0], bias=False)
        with torch.no_grad():
            module.weight.copy_(tensor)
        layers.append(module)
    return layers


def measure(method: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", method, str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, "MPLBACKEND": "Agg"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def have_weightwatcher() -> bool:
    try:
        import weightwatcher  # noqa: F401
    except Exception:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scales", nargs="*", default=[k for k in SCALES if k not in SMOKE])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return

    methods = ["baseline", "svdvals-loop", "sninspect-spectra", "sninspect-report"]
    if have_weightwatcher():
        methods.append("weightwatcher")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            path = build(scale, Path(tmp))
            params = parameters(path)
            largest = max(t.numel() for k, t in torch.load(path, weights_only=True, mmap=True).items()
                          if k.endswith("_orig")) * 8 / 2**20
            result = {"scale": scale, "params": params, "largest_f64_mb": largest, "file_mb": path.stat().st_size / 2**20}
            for method in methods:
                runs = [measure(method, path) for _ in range(args.repeats)]
                result[method] = {"seconds": statistics.median(r["seconds"] for r in runs),
                                  "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
                print(scale, method, result[method], flush=True)
            rows.append(result)
            path.unlink()
    args.out.write_text(render(rows, methods, args.repeats))
    print(f"wrote {args.out}")


def render(rows: list[dict], methods: list[str], repeats: int) -> str:  # type: ignore[type-arg]
    """BENCHMARKS.md section for the spectra benchmark."""
    try:
        import weightwatcher

        ww = f"weightwatcher {weightwatcher.__version__}"
    except Exception:
        ww = "weightwatcher not installed (not measured)"
    lines = [
        "## Exact spectra (`benchmarks/bench_spectra.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, torch {torch.__version__}, {ww}. CPU only (no GPU in this run). "
        f"Median of {repeats} run(s), each in a fresh process; peak RSS is the process maximum.",
        "",
        "| checkpoint | params | method | seconds | vs svdvals loop | peak RSS (MB) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        floor = row["svdvals-loop"]["seconds"]
        for method in methods:
            if method == "baseline":
                continue
            r = row[method]
            lines.append(f"| {row['scale']} | {row['params'] / 1e6:.1f}M | {method} | {r['seconds']:.2f} | "
                         f"{r['seconds'] / floor:.2f}× | {r['peak_rss_mb']:.0f} |")
        base = row["baseline"]["peak_rss_mb"]
        lines.append(f"| {row['scale']} | | baseline (imports only) | | | {base:.0f} |")
    lines += ["", "Ratios below 1 are faster than the svdvals loop. Memory target on the stack: report peak "
              "≤ 2 × largest layer in float64 + baseline:", ""]
    for row in rows:
        limit = 2 * row["largest_f64_mb"] + row["baseline"]["peak_rss_mb"]
        peak = row["sninspect-report"]["peak_rss_mb"]
        lines.append(f"- {row['scale']}: file {row['file_mb']:.0f} MB, largest layer {row['largest_f64_mb']:.0f} MB "
                     f"in float64, report peak {peak:.0f} MB vs limit {limit:.0f} MB "
                     f"({'within' if peak <= limit else 'OVER'})")
        if "weightwatcher" in row:
            ratio = row["weightwatcher"]["seconds"] / row["sninspect-spectra"]["seconds"]
            lines.append(f"  - weightwatcher analyze() / sninspect spectra: {ratio:.1f}×")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
