"""Benchmark: the default ``sninspect report`` end to end (a CLI process), beside ``sninspect layers``
(start-up and loading, no math) and a spectra-only audit of the same file, in the same run; the
report with ``--bound-tol 0.01`` (1% on every conv bound) beside the default (the widths a work
budget buys, said in the last column).

Checkpoints, made here in a temporary folder (never committed):
- (a) ``gan-d-30M``: the residual SN discriminator of benchmarks/make_synthetic.py (torch SN);
- (b) RealSN layouts like the published plug-and-play denoisers (conv-operator SN: ``weight_orig``,
  the eval buffer ``weight``, ``weight_u`` shaped (1, C, 40, 40)): a 4-layer SimpleCNN (1→64→64→64→1)
  and a 17-layer DnCNN (64 channels); u after 30 power steps on the operator at 40×40, the buffer
  W/σ̂ moved by one small optimizer-like step (1e-3 relative) as in the published files;
- (c) the bundled sample ``sample_checkpoints/dcgan_sn_torch.pt``.
A second table (issue 24): ``check`` with its default rules, and a second report at 1% read from the
bound cache the first one filled, each beside ``layers`` and spectra-only times measured again right
before them (``--asked-only``: this table alone). The bound cache
is a folder of this run (``XDG_CACHE_HOME``); the default report row runs with ``--no-cache``.
Each measurement is the wall time of a fresh process (median of ``--repeats``). Writes a Markdown
section to stdout (paste into BENCHMARKS.md). Usage: ``python benchmarks/bench_report.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import make_synthetic  # noqa: E402

SPECTRA = """
import sys, torch
from sninspect.io.load import load_checkpoint
from sninspect.linalg.exact import exact_spectra
ckpt = load_checkpoint(sys.argv[1])
for model in ckpt.models:
    for key in model.tensors:
        if key.endswith("_orig"):
            w = model.tensors[key].detach().to(sys.argv[2], torch.float64)
            exact_spectra([w.reshape(w.shape[0], -1)])
"""


def realsn_state(channels: list[int], size: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    """A conv-operator (RealSN) state dict: conv i maps channels[i] → channels[i+1], 3×3."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for i, (a, b) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        key = f"dncnn.{2 * i}.weight"
        w = torch.randn(b, a, 3, 3, generator=gen, dtype=torch.float64) * (2 / (9 * a)) ** 0.5
        u = torch.randn(1, a, size, size, generator=gen, dtype=torch.float64)  # input side
        for _ in range(30):
            u = F.conv_transpose2d(F.conv2d(u, w, padding=1), w, padding=1)
            u = u / u.norm()
        sigma = float(F.conv2d(u, w, padding=1).norm())
        step = 1e-3 * torch.randn(w.shape, generator=gen, dtype=torch.float64) * w.abs().mean()
        state[key + "_orig"] = (w + step).float()
        state[key] = (w / sigma).float()
        state[key + "_u"] = u.float()
    return state


def timed(args: list[str], repeats: int, codes: tuple[int, ...] = (0,)) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True)
        times.append(time.perf_counter() - start)
        if done.returncode not in codes:
            raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr.decode()[-2000:]}")
    return statistics.median(times)


def timed_output(args: list[str], repeats: int) -> tuple[float, str]:
    """Median wall seconds of ``repeats`` fresh processes, and the last one's stdout."""
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def widths_reached(report_json: str) -> str:
    """``1%: 14, 20%: 6`` from a JSON report's layers (``operator_width`` under the smallest rung of
    the width ladder at or above it), with the model's estimate for ``--bound-tol 0.01`` where given."""
    data = json.loads(report_json)
    ladder = (0.01, 0.02, 0.05, 0.1, 0.2)
    widths = [layer["operator_width"] for layer in data["layers"] if layer.get("operator_width") is not None]
    wider = max((w for w in widths if w > ladder[-1]), default=None)  # the cheap rung's: one bucket
    counts: dict[float, int] = {}
    for width in widths:
        level = next((lv for lv in ladder if width <= lv), wider)
        counts[level] = counts.get(level, 0) + 1
    text = ", ".join(f"≤{100 * lv:.3g}%: {n}" for lv, n in sorted(counts.items()))
    estimates = [m["bounds"]["seconds_at_target"] for m in data["models"]
                 if m.get("bounds") and m["bounds"].get("seconds_at_target") is not None]
    return text + (f" (1% est. {sum(estimates):.0f} s)" if estimates else "")


def asked_only(py: str, files: list[tuple[str, Path]], repeats: int) -> None:
    """Issue 24: ``check`` with its default rules (no conv bound read, none computed), and a second
    report at 1% on a file whose first report filled the bound cache (another format: markdown), each
    beside ``layers`` and the spectra-only audit of the same file measured right before it (this
    machine's speed drifts by several times over minutes when shared)."""
    print("\n| checkpoint | `layers` s | spectra-only s | `check` s | check / spectra | second report s "
          "| second / spectra |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, path in files:
        report = [py, "-m", "sninspect", "report", str(path), "-q", "--device", "cpu", "--bound-tol", "0.01"]
        timed([*report, "--format", "json"], 1)  # the first report: fills the cache
        layers = timed([py, "-m", "sninspect", "layers", str(path)], repeats)
        spectra = timed([py, "-c", SPECTRA, str(path), "cpu"], repeats)
        check = timed([py, "-m", "sninspect", "check", str(path), "-q", "--device", "cpu"], repeats, (0, 1))
        second = timed([*report, "--format", "markdown"], repeats)
        print(f"| {label} | {layers:.2f} | {spectra:.2f} | {check:.2f} | {check / spectra:.2f}× | {second:.2f} | "
              f"{second / spectra:.2f}× |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-30m", action="store_true", help="leave out (a) (minutes on 2 cores)")
    parser.add_argument("--device", default="cpu", help="where the math runs: cpu (default) or cuda")
    parser.add_argument("--asked-only", action="store_true", help="only the second table (check, cached report)")
    opts = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")  # the bound cache of this run only
        files: list[tuple[str, Path]] = []
        if not opts.skip_30m:
            torch.save(make_synthetic.discriminator_state("gan-d-30M"), folder / "gan-d-30M.pt")
            files.append(("(a) gan-d-30M (torch SN, 20 layers)", folder / "gan-d-30M.pt"))
        torch.save(realsn_state([1, 64, 64, 64, 1]), folder / "realsn-simplecnn.pt")
        files.append(("(b) RealSN SimpleCNN (4 conv-operator layers, u at 40×40)", folder / "realsn-simplecnn.pt"))
        torch.save(realsn_state([1] + [64] * 16 + [1]), folder / "realsn-dncnn17.pt")
        files.append(("(b) RealSN DnCNN-17 (17 conv-operator layers, u at 40×40)", folder / "realsn-dncnn17.pt"))
        files.append(("(c) bundled dcgan_sn_torch.pt", ROOT / "sample_checkpoints" / "dcgan_sn_torch.pt"))
        load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:3]
        gpu = f" ({torch.cuda.get_device_name(0)})" if opts.device.startswith("cuda") else ""
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}, "
              f"device {opts.device}{gpu}, load before {' '.join(load)}; median of {opts.repeats} fresh "
              "processes each (the 30M reports once)\n")
        if not opts.asked_only:
            print("| checkpoint | `layers` s | spectra-only s | default `report` s | report / layers | "
                  "report / spectra | `--bound-tol 0.01` s | default widths reached |")
            print("|---|---:|---:|---:|---:|---:|---:|---|")
        for label, path in [] if opts.asked_only else files:
            layers = timed([py, "-m", "sninspect", "layers", str(path)], opts.repeats)
            spectra = timed([py, "-c", SPECTRA, str(path), opts.device], opts.repeats)
            command = [py, "-m", "sninspect", "report", str(path), "--format", "json", "-q", "--device", opts.device,
                       "--no-cache"]
            once = 1 if "30M" in label else opts.repeats
            report, out = timed_output(command, once)
            full = timed(command + ["--bound-tol", "0.01"], once)
            print(f"| {label} | {layers:.2f} | {spectra:.2f} | {report:.2f} | {report / layers:.1f}× | "
                  f"{report / spectra:.1f}× | {full:.2f} | {widths_reached(out)} |", flush=True)
        asked_only(py, files, opts.repeats)
        load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:3]
        print(f"\nload after {' '.join(load)}")


if __name__ == "__main__":
    main()
