"""Figures, checked through matplotlib's objects: one bar / point per layer, the line at 1, log scales
where stated, titles naming the checkpoint; a 5-layer and a 100-layer checkpoint; saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snruns
import torch
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from typer.testing import CliRunner

from sninspect import analyze
from sninspect.cli.main import app
from sninspect.render import plots
from sninspect.results.report import Report

runner = CliRunner()


def cells(mesh: QuadMesh) -> tuple[int, ...]:
    """The (rows, columns) of a heat map."""
    array = mesh.get_array()
    assert array is not None
    return tuple(array.shape)


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """A small SN Conv2d and four SN Linear layers; exact u, v except layer 5.weight, skewed above 1."""
    model = snruns.exact_uv(snruns.sn_chain([8, 6, 6, 4, 1], conv=True, steps=3))
    snruns.skew_u(snruns.sn_modules(model)[2])
    path = snruns.save(model, tmp_path_factory.mktemp("five") / "disc_five.pt", global_step=1200)
    return analyze(path, device="cpu")


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """100 SN Linear(8, 8) layers trained one step (unconverged u, v: many layers above 1)."""
    model = snruns.sn_chain([8] * 101, steps=1)
    return analyze(snruns.save(model, tmp_path_factory.mktemp("deep") / "deep100.pt"), device="cpu")


def lines_at(ax: Axes, value: float, axis: str = "y") -> list[Line2D]:
    """Straight reference lines (axhline/axvline) at ``value``."""
    found = []
    for line in ax.get_lines():
        data = y(line) if axis == "y" else x(line)
        if len(data) == 2 and np.allclose(data, value):
            found.append(line)
    return found


def series(ax: Axes, label: str) -> Line2D:
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def x(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_xdata(), dtype=float)


def y(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=float)


def floats(values: object) -> np.ndarray:
    return np.asarray(values, dtype=float)


def assert_titled(fig: Figure, report: Report) -> None:
    assert Path(report.checkpoint).name in fig.get_suptitle()
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title()


def test_sigma_figure_five_layers(five: Report) -> None:
    fig = plots.sigma_figure(five)
    assert_titled(fig, five)
    assert "global_step 1200" in fig.get_suptitle()
    raw, eff = fig.axes[:2]
    exact = y(series(raw, "σ1 exact (SVD)"))
    np.testing.assert_allclose(exact, floats([la.sigma_exact for la in five.layers]))
    assert len(y(series(raw, "σ̂ stored estimate (divisor)"))) == 5
    (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
    assert len(bars) == 5
    tops = [bar.get_y() + bar.get_height() for bar in bars]
    np.testing.assert_allclose(tops, floats([la.sigma_effective for la in five.layers]))
    assert lines_at(eff, 1.0), "the line at 1"
    # The skewed layer stands out in red; the exact ones do not.
    colors = [to_hex(bar.get_facecolor()) for bar in bars]
    names = [la.name for la in five.layers]
    assert colors[names.index("5.weight")] == plots.ABOVE
    assert colors.count(plots.ABOVE) == 1
    assert [t.get_text() for t in eff.get_xticklabels()] == ["0", "3", "5", "7", "9"]
    assert "'.weight'" in eff.get_xlabel()


def test_cos_error_figure_is_log_with_tolerance(five: Report) -> None:
    fig = plots.cos_error_figure(five, tolerance=1e-3)
    assert_titled(fig, five)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    u = y(series(ax, "u (left vector)"))
    v = y(series(ax, "v (right vector)"))
    assert len(u) == len(v) == 5
    skewed = [la.name for la in five.layers].index("5.weight")
    assert u[skewed] == pytest.approx(snruns.SKEWED_COS, rel=1e-4)
    assert lines_at(ax, 1e-3), "the tolerance line"


def test_spectra_small_multiples(five: Report) -> None:
    fig = plots.spectra_figure(five)
    assert_titled(fig, five)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 5
    for ax, layer in zip(panels, five.layers, strict=True):
        assert ax.get_yscale() == "log"
        (line,) = ax.get_lines()
        values = np.asarray(layer.singular_values)
        np.testing.assert_allclose(y(line), values / values[0])
        assert layer.name.split(".")[0] in ax.get_title()


def test_lipschitz_depth_figure(five: Report) -> None:
    fig = plots.lipschitz_figure(five)
    assert_titled(fig, five)
    (ax,) = fig.axes
    bound = five.primary.lipschitz
    assert ax.get_yscale() == "log"
    matrix = [line for line in ax.get_lines() if str(line.get_label()).startswith("∏ σ_eff")]
    operator = [line for line in ax.get_lines() if str(line.get_label()).startswith("∏ certified")]
    np.testing.assert_allclose(y(matrix[0]), floats(bound.cumulative_matrix))
    np.testing.assert_allclose(y(operator[0]), floats(bound.cumulative_operator))
    assert len(x(matrix[0])) == len(bound.layers) == 5
    assert lines_at(ax, 1.0)
    assert "1-Lipschitz" in fig.get_supxlabel()


def test_hundred_layers_switch_orientation(hundred: Report) -> None:
    sigma = plots.sigma_figure(hundred)
    assert_titled(sigma, hundred)
    raw, eff = sigma.axes[:2]
    (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
    assert len(bars) == 100
    np.testing.assert_allclose(floats([b.get_x() + b.get_width() for b in bars]),
                               floats([la.sigma_effective for la in hundred.layers]))
    assert lines_at(eff, 1.0, axis="x"), "the line at 1, vertical now"
    assert len(raw.get_yticklabels()) == 100 and raw.get_ylim()[0] > raw.get_ylim()[1]  # first on top
    assert sigma.get_figheight() > 15  # a row per layer, not a squeeze

    cos = plots.cos_error_figure(hundred)
    assert cos.axes[0].get_xscale() == "log"
    assert len(x(series(cos.axes[0], "u (left vector)"))) == 100

    spectra = plots.spectra_figure(hundred)
    (mesh,) = [c for c in spectra.axes[0].collections if isinstance(c, QuadMesh)]
    assert cells(mesh) == (100, 8)
    assert isinstance(mesh.norm, LogNorm)

    depth = plots.lipschitz_figure(hundred)
    assert depth.axes[0].get_xscale() == "log"
    assert len(y(depth.axes[0].get_lines()[0])) == 100


def test_layer_not_audited_keeps_its_slot(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 5, 5, 1]))
    with torch.no_grad():
        snruns.tensor(snruns.sn_modules(model)[1], "weight_orig").fill_(float("nan"))
    report = analyze(snruns.save(model, tmp_path / "nan.pt"), device="cpu")
    fig = plots.sigma_figure(report)
    eff = fig.axes[1]
    (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3
    assert any(t.get_text() == "not audited" for t in eff.texts)
    for make in (plots.cos_error_figure, plots.spectra_figure, plots.lipschitz_figure):
        make(report).canvas.draw()  # renders without error


def test_short_names() -> None:
    names = ["netD.main.0.weight", "netD.main.2.weight", "netD.main.10.weight"]
    assert plots.short_names(names) == (["0", "2", "10"], "prefix 'netD.main.' and suffix '.weight'")
    assert plots.short_names(["fc.weight"]) == (["fc"], "suffix '.weight'")
    long = ["a." + "x" * 60 + ".weight", "a.y.weight"]
    labels, _ = plots.short_names(long)
    assert len(labels[0]) == plots.MAX_LABEL and "…" in labels[0]


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_save_figures(five: Report, tmp_path: Path, fmt: str, magic: bytes) -> None:
    figures = {"lipschitz_depth": plots.lipschitz_figure(five)}
    written = plots.save_figures(figures, tmp_path / "new" / "dir", fmt)
    assert [p.name for p in written] == [f"lipschitz_depth.{fmt}"]
    assert written[0].read_bytes().startswith(magic)
    assert sorted(p.name for p in written[0].parent.iterdir()) == [f"lipschitz_depth.{fmt}"]  # no temp left


def test_cli_report_plots(tmp_path: Path) -> None:
    path = snruns.save(snruns.sn_chain([4, 5, 1]), tmp_path / "d.pt")
    out = tmp_path / "figs"
    result = runner.invoke(app, ["report", str(path), "--plots", str(out), "--plot-format", "svg",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["cos_error.svg", "lipschitz_depth.svg", "sigma.svg",
                                                     "spectra.svg"]
    assert "wrote 4 figures" in result.stderr
    quiet = runner.invoke(app, ["report", str(path), "-f", "json", "--quiet", "--device", "cpu"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    bad = runner.invoke(app, ["report", str(path), "--plots", str(out), "--plot-format", "gif"])
    assert bad.exit_code == 2
