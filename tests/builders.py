"""Builders and comparisons shared by test files in several folders (fixtures proper live in conftest.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

import sninspect


def assert_same_report(live: sninspect.Report, saved: sninspect.Report, *, spectra: bool = True) -> None:
    assert_same_numbers(live.to_dict(spectra=spectra), saved.to_dict(spectra=spectra))
    frame_a, frame_b = live.to_dataframe(), saved.to_dataframe()
    assert list(frame_a.columns) == list(frame_b.columns)
    for column in frame_a.columns:
        for x, y in zip(frame_a[column], frame_b[column], strict=True):
            if isinstance(x, float) and not (math.isnan(x) and math.isnan(y)):
                assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12), (column, x, y)
            elif not isinstance(x, float):
                assert x == y, (column, x, y)


def assert_same_numbers(a: Any, b: Any, where: str = "") -> None:
    """Two JSON trees equal, floats to 1e-12 relative (absolute below 1), the source names and
    scalar extras aside."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in ("checkpoint", "format", "extras"):
                assert_same_numbers(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


def saved(path: Path, seed: int = 0) -> Path:
    torch.save(sn_model(seed).state_dict(), path)
    return path


def sn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(spectral_norm(nn.Conv2d(3, 8, 3)), nn.ReLU(), spectral_norm(nn.Conv2d(8, 16, 3, 2)),
                          nn.Flatten(), spectral_norm(nn.Linear(16 * 2 * 2, 1)))
    model(torch.randn(4, 3, 8, 8))  # one power step: u, v stored
    return model


def conv_operator_file(path: Path, layers: int = 5, broken: int | None = None) -> Path:
    """A RealSN-layout chain of 3×3 convs with u at 10×10; layer ``broken`` has a NaN eval buffer."""
    gen = torch.Generator().manual_seed(5)
    state: dict[str, torch.Tensor] = {}
    for i in range(layers):
        w = torch.randn(6, 6, 3, 3, generator=gen, dtype=torch.float64) / 5
        u = torch.randn(1, 6, 10, 10, generator=gen, dtype=torch.float64)
        for _ in range(10):
            u = F.conv_transpose2d(F.conv2d(u, w, padding=1), w, padding=1)
            u = u / u.norm()
        sigma = float(F.conv2d(u, w, padding=1).norm())
        buffer = w / sigma
        if i == broken:
            buffer = buffer.clone()
            buffer[0, 0, 0, 0] = float("nan")
        state |= {f"net.{i}.weight_orig": w, f"net.{i}.weight": buffer, f"net.{i}.weight_u": u}
    torch.save(state, path)
    return path


def train_monitored(model: nn.Module, opt: torch.optim.Optimizer, steps: int, on_step: Any = None) -> None:
    data = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        x = torch.randn(8, 1, 8, 8, generator=data)
        loss = model(x).square().mean() - model(x.flip(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)


def model_and_data(sn: Any = spectral_norm, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(sn(nn.Conv2d(1, 4, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(4, 8, 4, 2, 1)),
                          nn.Flatten(), sn(nn.Linear(8 * 4 * 4, 1)))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)

