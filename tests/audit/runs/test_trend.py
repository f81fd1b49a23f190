"""A training run: ordering by step entry / file-name number / modification time, per-layer series,
a layer that appears midway, the JSON and table views, and the trend figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import snruns
import torch
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, TwoSlopeNorm
from torch import nn
from torch.nn.utils import spectral_norm
from typer.testing import CliRunner

from sninspect import analyze
from sninspect.audit.runs import trend
from sninspect.cli.main import app
from sninspect.render import plots
from sninspect.results.check import DEFAULT_MAX_COS_ERROR

runner = CliRunner()


def cells(mesh: QuadMesh) -> tuple[int, ...]:
    """The (rows, columns) of a heat map."""
    array = mesh.get_array()
    assert array is not None
    return tuple(array.shape)


def audit(*paths: Path):  # type: ignore[no-untyped-def]
    return [analyze(p, device="cpu") for p in paths]


@pytest.fixture()
def model() -> nn.Module:
    return snruns.sn_chain([5, 6, 1], steps=2)


def test_number_in_name() -> None:
    assert trend.number_in_name("runs/ckpt_000500.pt") == 500
    assert trend.number_in_name("D_epoch3_step1200.safetensors") == 1200
    assert trend.number_in_name("model.safetensors.index.json") is None
    assert trend.number_in_name("v2/last.ckpt") is None
    assert trend.step_from_extras({"epoch": 3, "global_step": 700}) == ("global_step", 700.0)
    assert trend.step_from_extras({"step": "12"}) == ("step", 12.0)
    assert trend.step_from_extras({"step": True, "name": "x"}) is None


def test_orders_by_step_entry_over_file_name(model: nn.Module, tmp_path: Path) -> None:
    # File names say 1, 2, 3; the saved steps say otherwise, and win.
    paths = [snruns.save(model, tmp_path / f"ckpt_{i}.pt", global_step=step, epoch=9 - i)
             for i, step in ((1, 300), (2, 100), (3, 200))]
    run = trend.build(audit(*paths))
    assert run.order_by == "global_step"
    assert [Path(c).name for c in run.checkpoints] == ["ckpt_2.pt", "ckpt_3.pt", "ckpt_1.pt"]
    assert run.steps == (100.0, 200.0, 300.0)
    assert [s.step for s in run.summary] == [100.0, 200.0, 300.0]


def test_orders_by_file_name_number_numerically(model: nn.Module, tmp_path: Path) -> None:
    # "ckpt_100" sorts before "ckpt_9" as text; the number in the name orders them.
    paths = [snruns.save(model, tmp_path / f"ckpt_{n}.pt") for n in (100, 9, 10)]
    # One file with a step entry is not enough to order by steps: all of them need one.
    paths.append(snruns.save(model, tmp_path / "ckpt_50.pt", step=1))
    run = trend.build(audit(*paths))
    assert run.order_by == "file name"
    assert [Path(c).name for c in run.checkpoints] == ["ckpt_9.pt", "ckpt_10.pt", "ckpt_50.pt", "ckpt_100.pt"]
    assert run.steps == (9.0, 10.0, 50.0, 100.0)


def test_orders_by_modification_time_last(model: nn.Module, tmp_path: Path) -> None:
    paths = [snruns.save(model, tmp_path / f"{name}.pt") for name in ("alpha", "beta", "gamma")]
    for path, when in zip(paths, (3_000_000, 1_000_000, 2_000_000), strict=True):
        os.utime(path, (when, when))
    run = trend.build(audit(*paths), {str(p): p.stat().st_mtime for p in paths})
    assert run.order_by == "modification time"
    assert [Path(c).name for c in run.checkpoints] == ["beta.pt", "gamma.pt", "alpha.pt"]
    assert any("modification time" in c for c in run.changes)


def test_layer_that_appears_midway_is_reported_not_fatal(tmp_path: Path) -> None:
    torch.manual_seed(0)
    small = nn.Sequential(spectral_norm(nn.Linear(4, 6)), nn.ReLU(), spectral_norm(nn.Linear(6, 1)))
    big = nn.Sequential(spectral_norm(nn.Linear(4, 6)), nn.ReLU(), spectral_norm(nn.Linear(6, 6)), nn.ReLU(),
                        spectral_norm(nn.Linear(6, 1)))
    for m in (small, big):
        m(torch.randn(3, 4))
    # The 1st and 3rd checkpoints are `small` (layers 0, 2); the 2nd is `big` (0, 2, 4).
    paths = [snruns.save(small, tmp_path / "s_1.pt", step=1), snruns.save(big, tmp_path / "s_2.pt", step=2),
             snruns.save(small, tmp_path / "s_3.pt", step=3)]
    run = trend.build(audit(*paths))
    assert [s.name for s in run.layers] == ["0.weight", "2.weight", "4.weight"]
    late = run.layers[2]
    assert late.present == (False, True, False)
    assert late.sigma_effective[0] is None and late.sigma_effective[1] is not None
    assert late.sigma_effective[2] is None
    assert any("'4.weight' appears in s_2.pt (step 2)" in c for c in run.changes)
    assert any("'4.weight' vanishes in s_3.pt (step 3)" in c for c in run.changes)
    # The same through the CLI: exit 0, the change on the table, JSON with checkpoints + trend.
    table = runner.invoke(app, ["report", str(tmp_path), "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert "training run" in table.stdout and "appears" in table.stdout
    data = json.loads(runner.invoke(app, ["report", *map(str, reversed(paths)), "-f", "json",
                                          "--device", "cpu"]).stdout)
    assert set(data) == {"schema", "checkpoints", "trend"}
    assert [Path(c["checkpoint"]).name for c in data["checkpoints"]] == ["s_1.pt", "s_2.pt", "s_3.pt"]
    assert data["trend"]["order_by"] == "step" and data["trend"]["steps"] == [1, 2, 3]
    layer4 = next(s for s in data["trend"]["layers"] if s["name"] == "4.weight")
    assert layer4["present"] == [False, True, False] and layer4["sigma_effective"][0] is None
    assert len(data["trend"]["summary"]) == 3 and "worst_sigma_effective" in data["trend"]["summary"][0]


def test_series_follow_the_reports(tmp_path: Path) -> None:
    paths = [snruns.save(snruns.sn_chain([5, 6, 6, 1], steps=step), tmp_path / f"r_{step}.pt", step=step)
             for step in (3, 1, 2)]
    reports = audit(*paths)
    run = trend.build(reports)
    for i, report in enumerate(run.reports):
        for series in run.layers:
            layer = next(la for la in report.layers if la.name == series.name)
            assert series.sigma_effective[i] == layer.sigma_effective
            assert series.cos_error[i] == max(layer.cos_error_u or 0, layer.cos_error_v or 0)
        worst = max(la.sigma_effective or 0 for la in report.layers)
        assert run.summary[i].worst_sigma_effective == worst
        assert run.summary[i].operator_product == report.primary.lipschitz.operator_product


def test_trend_figures_lines_for_few_layers(tmp_path: Path) -> None:
    model = snruns.sn_chain([5, 6, 6, 1])
    paths = [snruns.save(model, tmp_path / f"c_{n}.pt") for n in (10, 20, 40)]
    run = trend.build(audit(*paths))
    figures = plots.trend_figures(run)
    assert set(figures) == {"trend_sigma", "trend_cos_error"}
    ax = figures["trend_sigma"].axes[0]
    series = [line for line in ax.get_lines() if line.get_label() in {"0", "2", "4"}]
    assert len(series) == 3  # one line per layer, '.weight' cut from the legend labels
    for line in series:
        assert np.asarray(line.get_xdata(), dtype=float).tolist() == [10.0, 20.0, 40.0]
    assert any(np.asarray(line.get_ydata(), dtype=float).tolist() == [1.0, 1.0]
               for line in ax.get_lines())  # the line at 1
    assert "c_10.pt" in figures["trend_sigma"].get_suptitle()
    cos_ax = figures["trend_cos_error"].axes[0]
    assert cos_ax.get_yscale() == "log"
    assert any(np.asarray(line.get_ydata(), dtype=float).tolist() == [DEFAULT_MAX_COS_ERROR] * 2
               for line in cos_ax.get_lines())
    assert ax.get_xlabel() == "checkpoint number (from the file name)"


def test_trend_figures_heat_map_for_many_layers(tmp_path: Path) -> None:
    model = snruns.sn_chain([4] * 16, steps=1)  # 15 layers
    paths = [snruns.save(model, tmp_path / f"h_{n}.pt") for n in (1, 2, 3, 4)]
    run = trend.build(audit(*paths))
    fig = plots.trend_sigma_figure(run)
    meshes = [c for ax in fig.axes if ax.get_ylabel().startswith("layer") for c in ax.collections
              if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    assert cells(meshes[0]) == (15, 4)
    assert isinstance(meshes[0].norm, TwoSlopeNorm) and meshes[0].norm.vcenter == 1.0
    cos = plots.trend_cos_error_figure(run)
    (mesh,) = [c for ax in cos.axes if ax.get_ylabel().startswith("layer") for c in ax.collections
               if isinstance(c, QuadMesh)]
    assert isinstance(mesh.norm, LogNorm)
    assert cells(mesh) == (15, 4)


def test_cli_run_plots_and_markdown(tmp_path: Path) -> None:
    model = snruns.sn_chain([5, 6, 1])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for n in (2, 1):
        snruns.save(model, run_dir / f"ckpt_{n}.pt")
    (run_dir / "notes.txt").write_text("not a checkpoint")
    out = tmp_path / "plots"
    result = runner.invoke(app, ["report", str(run_dir), "--plots", str(out), "-f", "markdown",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.index("## Training run") < result.stdout.index("ckpt_1.pt")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        [f"{c}/{f}.png" for c in ("ckpt_1", "ckpt_2")
         for f in ("sigma", "cos_error", "spectra", "lipschitz_depth")]
        + ["trend_sigma.png", "trend_cos_error.png"])
    assert "wrote 10 figures" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(app, ["report", str(empty), "--device", "cpu"])
    assert bad.exit_code == 3 and "no checkpoint file" in bad.stderr


@pytest.mark.parametrize(("name", "step"), [("D_100.pt2", 100.0), ("D_100.pt", 100.0), ("ckpt_7.safetensors", 7.0),
                                            ("G.pt2", None), ("model-3.safetensors.index.json", 3.0)])
def test_the_step_in_a_file_name_ignores_the_suffix(name: str, step: float | None) -> None:
    assert trend.number_in_name(f"runs/{name}") == step
