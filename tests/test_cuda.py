"""The frequency bound and the default report on a CUDA device: the same batched code path as on the
CPU (tests/linalg/test_bounds.py, tests/audit/bounds/test_bound_plan.py), compared with the CPU's numbers. Skipped where
no GPU is present; ``benchmarks/gpu.sh`` runs them on the first machine with one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sninspect
from sninspect.linalg.conv_bounds import CHEAP, conv_operator_bound, grid_max

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("channels", "grid"), [((6, 5, 3, 3), (8, 8)), ((48, 40, 3, 3), (32, 32)),
                                                ((160, 160, 3, 3), (15, 15)), ((8, 8, 5), (40,))])
def test_grid_max_on_cuda_is_the_cpus(channels: tuple[int, ...], grid: tuple[int, ...]) -> None:
    """Float32 screen (n ≤ 100) and float64 Cholesky batches on the device: the same exact grid maximum."""
    weight = torch.randn(channels, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    on_cpu = grid_max(weight, grid)
    on_gpu = grid_max(weight.cuda(), grid)
    assert on_gpu == pytest.approx(on_cpu, rel=1e-12)
    symbol = torch.fft.fftn(weight, s=grid, dim=tuple(range(2, weight.dim())))  # (o, i, *grid)
    mats = symbol.movedim(0, -1).movedim(0, -1).reshape(-1, channels[0], channels[1])
    assert on_gpu == pytest.approx(float(torch.linalg.svdvals(mats)[:, 0].max()), rel=1e-9)


@pytest.mark.parametrize("tol", [0.01, 0.2])
def test_conv_bound_on_cuda_is_the_cpus(tol: float) -> None:
    weight = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cpu = conv_operator_bound(weight, tol=tol)
    gpu = conv_operator_bound(weight, tol=tol, device="cuda")
    assert (gpu.grid, gpu.method) == (cpu.grid, cpu.method)
    assert gpu.upper == pytest.approx(cpu.upper, rel=1e-12) and gpu.lower == pytest.approx(cpu.lower, rel=1e-12)


def test_cheap_rung_on_cuda_brackets_the_cpus_one_percent() -> None:
    """The cheap rung (no frequency grid) on the device: a bracket of the same norm as the CPU's 1% one,
    and the CPU's cheap bracket to within the Lanczos runs' tolerances."""
    weight = torch.randn(96, 64, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fine = conv_operator_bound(weight, tol=0.01)
    cpu = conv_operator_bound(weight, tol=CHEAP)
    gpu = conv_operator_bound(weight, tol=CHEAP, device="cuda")
    assert gpu.method == cpu.method == "reshape (no frequency grid)"
    assert gpu.upper >= fine.lower and gpu.lower <= fine.upper
    assert gpu.upper == pytest.approx(cpu.upper, rel=1e-6) and gpu.lower == pytest.approx(cpu.lower, rel=1e-2)


def test_default_report_on_cuda_is_the_cpus() -> None:
    path = ROOT / "sample_checkpoints" / "dcgan_sn_torch.pt"
    cpu = sninspect.analyze(path, device="cpu")
    gpu = sninspect.analyze(path, device="cuda")
    assert gpu.device.startswith("cuda")
    for a, b in zip(cpu.layers, gpu.layers, strict=True):
        for field in ("sigma_exact", "sigma_effective", "operator_bound", "operator_lower", "operator_width"):
            assert getattr(b, field) == pytest.approx(getattr(a, field), rel=1e-9, abs=1e-12), (a.name, field)
