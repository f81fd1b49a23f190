"""Notebook use: ``Report._repr_html_`` (the HTML page's table, no matplotlib), ``Report.plot()``
(the figures ``--plots`` writes), ``sninspect.check`` and ``sninspect.trend`` as the CLI computes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sninspect
from sninspect.cli import app
from sninspect.render.numbers import fmt

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
DCGAN = SAMPLES / "dcgan_sn_torch.pt"


@pytest.mark.slow
def test_repr_html_is_the_layer_table_with_the_reports_numbers() -> None:
    report = sninspect.analyze(DCGAN, device="cpu", key="netD")
    page = report._repr_html_()
    assert page.startswith('<div class="sninspect">') and "<script" not in page
    for layer in report.layers:
        assert f">{layer.name}<" in page
        assert f"<td>{fmt(layer.sigma_exact)}</td>" in page
        assert fmt(layer.sigma_effective) in page
    code = ("import sys, sninspect; r = sninspect.analyze(sys.argv[1], device='cpu', key='netD'); "
            "r._repr_html_(); print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(DCGAN)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # a notebook table draws nothing


def test_plot_returns_the_figures_the_cli_writes(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    report = sninspect.analyze(DCGAN, device="cpu", key="netD")
    figures = report.plot()
    result = CliRunner().invoke(app, ["report", str(DCGAN), "--key", "netD", "--device", "cpu", "--plots",
                                      str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(figures) == sorted(p.stem for p in tmp_path.glob("*.png"))
    assert all(isinstance(f, Figure) and f.axes for f in figures.values())


def test_check_and_trend_are_the_clis(tmp_path: Path) -> None:
    report = sninspect.analyze(DCGAN, device="cpu", key="netD")
    verdict = sninspect.check(report)
    assert verdict.passed and verdict.layers_checked == len(report.layers)
    strict = sninspect.check(report, {"max_sigma": 1.0001})
    cli = CliRunner().invoke(app, ["check", str(DCGAN), "--key", "netD", "--device", "cpu", "--max-sigma",
                                   "1.0001", "--format", "json", "-q"])
    from_cli = json.loads(cli.stdout)["violations"]
    assert [v.to_dict() for v in strict.violations] == from_cli and not strict.passed
    assert sninspect.check(report, sninspect.Rules(max_sigma=1.0001)) == strict
    run = sninspect.trend([report, sninspect.analyze(SAMPLES / "biggan_style_sn.pt", device="cpu")])
    assert len(run.reports) == 2 and "training run: 2 checkpoints" in run._repr_html_()
    assert sorted(run.plot()) == ["trend_cos_error", "trend_sigma"]
    with pytest.raises(ValueError, match="no report"):
        sninspect.trend([])
