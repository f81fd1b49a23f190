"""Property: for random small graphs (chains of linear, conv and ReLU), the upper bound `graph` prints
is at least the dense Jacobian norm at random inputs (torch.autograd.functional.jacobian and numpy's
SVD: an independent lower bound of the Lipschitz constant) and at least the lower bound it prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graphnets import export  # noqa: E402

from sninspect.cli.main import app  # noqa: E402

runner = CliRunner()


@st.composite
def chains(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...]]:
    """A random chain and its example input's shape (batch 1)."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    layers: list[nn.Module] = []
    if draw(st.booleans()):  # images: convs (any stride, padding, kernel), ReLUs, then maybe flatten + linear
        channels, size = draw(st.integers(1, 3)), draw(st.integers(3, 6))
        shape: tuple[int, ...] = (1, channels, size, size)
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.booleans()) and layers:
                layers.append(nn.ReLU())
                continue
            kernel = draw(st.sampled_from([1, 2, 3]))
            padding = draw(st.integers(0, kernel // 2 + 1))
            stride = draw(st.sampled_from([1, 2]))
            if size + 2 * padding < kernel:
                continue
            out = draw(st.integers(1, 4))
            layers.append(nn.Conv2d(channels, out, kernel, stride=stride, padding=padding))
            channels, size = out, (size + 2 * padding - kernel) // stride + 1
        if draw(st.booleans()):
            layers += [nn.Flatten(), nn.Linear(channels * size * size, draw(st.integers(1, 4)))]
    else:
        width = draw(st.integers(1, 6))
        shape = (1, width)
        for _ in range(draw(st.integers(1, 4))):
            if draw(st.booleans()) and layers:
                layers.append(nn.ReLU())
            else:
                out = draw(st.integers(1, 6))
                layers.append(nn.Linear(width, out, bias=draw(st.booleans())))
                width = out
    if not layers:
        layers.append(nn.Identity())
    return nn.Sequential(*layers).eval(), shape


def jacobian_norm(module: nn.Module, x: torch.Tensor) -> float:
    """‖J(x)‖₂ from a dense Jacobian (autograd) and numpy's SVD."""
    jac = torch.autograd.functional.jacobian(lambda t: module(t).reshape(-1), x)
    return float(np.linalg.svd(jac.reshape(jac.shape[0], -1).numpy(), compute_uv=False).max(initial=0.0))


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chain=chains())
def test_printed_upper_is_above_the_jacobian_and_the_printed_lower(tmp_path_factory, chain) -> None:  # noqa: ANN001
    module, shape = chain
    path = export(module, torch.randn(shape), tmp_path_factory.mktemp("prop") / "net.pt2")
    result = runner.invoke(app, ["graph", str(path), "-f", "json", "-q", "--starts", "2", "--steps", "5"])
    if result.exit_code != 0:  # an identity graph has no operator on its path: refused, one line
        assert result.exit_code == 3 and isinstance(module[0], nn.Identity), result.output
        return
    printed = json.loads(result.output)
    upper, lower = printed["upper"], printed["lower"]
    assert lower <= upper
    dense = module.double()
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        assert jacobian_norm(dense, x) <= upper * (1 + 1e-9), (jacobian_norm(dense, x), upper)
