#!/usr/bin/env bash
# GPU figures in one command, on the first machine with a CUDA device:
#   bash benchmarks/gpu.sh [RESULTS_FILE]
# runs the CUDA tests (tests/test_cuda.py and the other CUDA-only tests), then benchmarks/bench_report.py
# with --device cuda and, for comparison on the same machine, --device cpu, writing everything to
# RESULTS_FILE (default: $OUT/gpu-results.md where $OUT is set, else ./gpu-results.md).
# Uses $PYTHON (default: python3) with torch, typer and rich installed; nothing is downloaded.
# DEVICE=cpu runs the same steps without a GPU (how the script itself is tested on a CPU machine);
# REPEATS (default 3) and SKIP_30M=1 shorten the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
REPEATS="${REPEATS:-3}"
RESULTS="${1:-${OUT:-.}/gpu-results.md}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg

if ! "$PYTHON" -c "import torch, typer, rich" 2>/dev/null; then
    echo "gpu.sh: $PYTHON cannot import torch, typer and rich; set PYTHON to an environment that has them" >&2
    exit 2
fi
if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: torch sees no CUDA device here (DEVICE=cpu runs the CPU path)" >&2
    exit 2
fi

status=0
{
    echo "# sninspect on $DEVICE: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo '```'
    "$PYTHON" - <<'PY'
import os, platform, torch
print(f"torch {torch.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs, "
      f"{torch.get_num_threads()} torch threads")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"CUDA {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)")
PY
    echo '```'
    echo
    echo "## CUDA tests"
    echo
    echo '```'
    # test_cuda.py compares the device's numbers with the CPU's; the -k cuda tests are the other CUDA-only ones
    "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tail -n 15 || status=1
    "$PYTHON" -m pytest -q -p no:cacheprovider -rs -k cuda tests/linalg/test_spectral_paths.py tests/audit/test_sources.py \
        2>&1 | tail -n 8 || status=1
    echo '```'
    echo
    bench=(--repeats "$REPEATS")
    [ "${SKIP_30M:-0}" = 1 ] && bench+=(--skip-30m)
    for device in "$DEVICE" cpu; do
        echo "## bench_report --device $device"
        echo
        "$PYTHON" benchmarks/bench_report.py "${bench[@]}" --device "$device" 2>&1 || status=1
        echo
        [ "$DEVICE" = cpu ] && break  # the CPU path: once
    done
} > "$RESULTS"
echo "gpu.sh: results in $RESULTS (exit $status)"
exit $status
