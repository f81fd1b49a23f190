"""One judgement: the layers ``check`` finds breaking a rule are exactly the layers the table
highlights, the figures mark, the HTML page marks and the JSON/CSV/Markdown verdicts name, over the
bundled samples and every trained fixture, under the default rules and under strict ones."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import snruns
from conftest import CASES, build_trained
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from rich.text import Text

import sninspect
from sninspect.audit.checks import gap_cos_error
from sninspect.render import OutputFormat, plots, render
from sninspect.render.html import notebook_html
from sninspect.render.terminal import layer_table
from sninspect.results.check import Rule, Rules
from sninspect.results.report import Report

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "sample_checkpoints").glob("*.*[pts]"))
STRICT = Rules(max_sigma=1.0001, max_cos_error=1e-4)
"""Tight limits, so that healthy trained layers break them too: every output must follow."""
RAW = Rules(max_cos_error=1e-3, strict_cos=True)


def flagged_by_check(report: Report, rules: Rules) -> set[str]:
    return {v.layer for v in sninspect.check(report, rules).violations if v.layer is not None}


def highlighted_in_table(report: Report) -> set[str]:
    """Rows of the terminal table with a cell in red or yellow (bold alone marks the worst value)."""
    table, _ = layer_table(report, width=400)
    names = [str(cell) for cell in table.columns[0]._cells]
    rows: set[str] = set()
    for column in table.columns[1:]:
        for name, cell in zip(names, column._cells, strict=True):
            style = str(cell.style) if isinstance(cell, Text) else ""
            if "red" in style or "yellow" in style:
                rows.add(name)
    return rows


def marked_in_figures(report: Report) -> tuple[set[str], set[str]]:
    """The red layer labels over every figure of the report (tick labels; a small spectrum's title),
    and the layers whose σ_eff bar is red."""
    red: set[str] = set()
    figures = plots.report_figures(report)
    for fig in figures.values():
        for ax in fig.axes:
            for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
                if tick.get_text() and to_hex(tick.get_color()) == plots.ABOVE:
                    red.add(tick.get_text())
            if ax.get_title() and to_hex(ax.title.get_color()) == plots.ABOVE:
                red.add(ax.get_title().split("  ")[0])
    containers = [c for ax in figures["sigma"].axes for c in ax.containers if isinstance(c, BarContainer)]
    drawn = [m for m in report.models if any(la.has_sn for la in m.layers)]
    assert len(containers) == len(drawn)
    bars = {la.name for container, model in zip(containers, drawn, strict=True)
            for bar, la in zip(container, model.layers, strict=True) if to_hex(bar.get_facecolor()) == plots.ABOVE}
    return red, bars


def _labels(report: Report) -> dict[str, str]:
    """Each layer's label in the figures (short names per model)."""
    out: dict[str, str] = {}
    for model in report.models:
        labels, _ = plots.short_names([la.name for la in model.layers])
        out.update(zip([la.name for la in model.layers], labels, strict=True))
    return out


def marked_in_html(report: Report) -> set[str]:
    """Rows of the page's layer table (the notebook's rendering of it: the same table, no figures) with
    a cell marked ``above`` or ``warn``."""
    page = notebook_html(report)
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1].split("</tbody>")[0])
    out = set()
    for row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        if re.search(r'class="[^"]*(above|warn)', row):
            out.add(cells[0])
    return out


def assert_one_story(report: Report, rules: Rules) -> set[str]:
    broken = flagged_by_check(report, rules)
    assert {la.name for la in report.layers if la.flagged} == broken
    assert highlighted_in_table(report) == broken
    labels = _labels(report)
    red, bars = marked_in_figures(report)
    assert red == {labels[name] for name in broken}
    assert bars == {la.name for la in report.layers if la.breaks(Rule.max_sigma)}
    assert marked_in_html(report) == broken
    data = json.loads(render(report, OutputFormat.json))
    assert {layer["name"] for layer in data["layers"] if layer["verdict"]} == broken
    assert data["verdict"] == list(dict.fromkeys(v.rule.value for v in sninspect.check(report, rules).violations))
    markdown = render(report, OutputFormat.markdown)
    table = markdown.split("### Columns")[0]  # the layer table, not the legend below it
    named = {line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()
             if line.startswith("| ") and line.rstrip(" |").split(" | ")[-1] not in ("ok", "-", "verdict")}
    assert named == broken
    return broken


@pytest.mark.parametrize("rules", [Rules(), STRICT, RAW], ids=["defaults", "strict", "raw-cos"])
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_tell_one_story(sample: Path, rules: Rules) -> None:
    report = sninspect.analyze(sample, device="cpu", all_layers=True, rules=rules)
    broken = assert_one_story(report, rules)
    # Not vacuous: the strict rules flag layers in every SN sample but the soft-SN one (its vectors are
    # converged to 1e-5 and soft SN keeps σ_eff ≤ 1 by design; it passes even these limits).
    if rules is STRICT and any(la.has_sn for la in report.layers) and sample.name != "soft_sn_dcgan.pt":
        assert broken


@pytest.mark.parametrize(("kind", "dialect"), CASES)
def test_trained_fixtures_tell_one_story(kind: str, dialect: str, tmp_path: Path) -> None:
    trained = build_trained(kind, dialect)
    for rules in (Rules(), STRICT):
        report = sninspect.analyze(trained.state, device="cpu", rules=rules)
        assert_one_story(report, rules)


def test_deep_unconverged_chain_tells_one_story(tmp_path: Path) -> None:
    """40 layers one step from random u, v (deep layout: names on the y axis): many flagged, not all."""
    path = snruns.save(snruns.sn_chain([8] * 41, steps=1), tmp_path / "deep40.pt")
    report = sninspect.analyze(path, device="cpu")
    broken = assert_one_story(report, Rules())
    assert 0 < len(broken) < len(report.layers)


def test_gap_aware_fields_are_checks_number(tmp_path: Path) -> None:
    """gap_cos_error_u/_v are the numbers check judges (its violation quantity and value), and
    match an independent evaluation of 1 − √(1 − sin²θ(1 − g²)) from the raw cosine and σ2/σ1."""
    model = snruns.exact_uv(snruns.sn_chain([6, 5, 4], steps=2))
    snruns.skew_u(snruns.sn_modules(model)[0], mix=0.6)
    report = sninspect.analyze(snruns.save(model, tmp_path / "skew.pt"), device="cpu",
                               rules=Rules(max_cos_error=1e-6, max_sigma=None))
    layer = report.layers[0]
    cos, gap = layer.cos_error_u, layer.spectral_gap
    assert cos is not None and gap is not None
    sin2 = 1.0 - (1.0 - cos) ** 2
    assert layer.gap_cos_error_u == pytest.approx(1.0 - math.sqrt(1.0 - sin2 * (1.0 - gap**2)), rel=1e-9)
    assert layer.gap_cos_error_u == gap_cos_error(cos, gap)
    (violation,) = [v for v in sninspect.check(report, Rules(max_cos_error=1e-6, max_sigma=None)).violations
                    if v.layer == layer.name and v.quantity == "gap_cos_error_u"]
    assert violation.value == layer.gap_cos_error_u
    assert layer.verdict == ("max_cos_error",)


def test_report_and_check_cli_judge_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``report`` takes check's rule flags and [tool.sninspect.check]: its verdict column and check's
    violations name the same layers."""
    from typer.testing import CliRunner

    from sninspect.cli.main import app

    path = snruns.save(snruns.sn_chain([8] * 9, steps=1), tmp_path / "d.pt")
    (tmp_path / "pyproject.toml").write_text("[tool.sninspect.check]\nmax-sigma = 1.3\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for flags in ([], ["--max-cos-error", "0.2"], ["--strict-cos", "--max-cos-error", "0.3"]):
        report = runner.invoke(app, ["report", str(path), "-f", "json", "--device", "cpu", "-q", *flags])
        check = runner.invoke(app, ["check", str(path), "-f", "json", "--device", "cpu", "-q", *flags])
        assert report.exit_code == 0 and check.exit_code in (0, 1), (report.output, check.output)
        data = json.loads(report.stdout)
        assert data["rules"]["max_sigma"] == 1.3  # read from pyproject.toml, as check reads it
        violations = json.loads(check.stdout)["violations"]
        assert {la["name"] for la in data["layers"] if la["verdict"]} == {v["layer"] for v in violations if v["layer"]}


def test_str_of_a_report_is_its_terminal_summary() -> None:
    from sninspect.render.terminal import table_text

    report = sninspect.analyze(ROOT / "sample_checkpoints" / "biggan_style_sn.pt", device="cpu")
    text = str(report)
    assert text == table_text(report, width=100)
    assert "╭─ summary" in text and "verdict" in text and "LayerAudit(" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert repr(report).startswith("Report(checkpoint=")  # repr stays the dataclass's
    run = sninspect.trend([report, report])
    assert str(run).startswith("training run") and "Trend(" not in str(run)


def test_help_gives_each_command_summary_whole() -> None:
    from typer.testing import CliRunner

    from sninspect.cli.main import app

    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    commands = out.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands
    flat = " ".join(commands.split())
    for name in ("report", "check", "layers", "graph", "strip", "apply", "convert"):
        doc = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "1000"}).stdout
        first = " ".join(doc.split("\n\n")[1].split())  # the first paragraph of the command's help
        assert f"{name} {first}" in flat


def test_rel_err_prints_only_the_digits_it_holds() -> None:
    """A relative error within 8 units of the working precision's resolution is rounding noise: 0
    (1.97e-16 on one machine, 3.94e-16 on another, for the same layer)."""
    from sninspect.render.numbers import fmt_rel

    eps64, eps32 = 2.0**-52, 2.0**-23
    assert fmt_rel(1.97e-16) == fmt_rel(-3.94e-16) == fmt_rel(8 * eps64) == "0"
    assert fmt_rel(9 * eps64) == "2.00e-15" and fmt_rel(-2.33e-8) == "-2.33e-08"
    assert fmt_rel(5e-7, "float32") == "0" and fmt_rel(9 * eps32, "float32") == "1.07e-06"
    assert fmt_rel(None) == "-" and fmt_rel(0.0148) == "0.0148"


def test_analyze_takes_rules_as_a_mapping(tmp_path: Path) -> None:
    path = snruns.save(snruns.sn_chain([8] * 5, steps=1), tmp_path / "d.pt")
    by_map = sninspect.analyze(path, device="cpu", rules={"max_sigma": 1.01, "max_cos_error": None})
    assert by_map.rules == Rules(max_sigma=1.01, max_cos_error=None)
    assert {la.name for la in by_map.layers if la.flagged} == flagged_by_check(by_map, by_map.rules)
    with pytest.raises(ValueError, match="unknown 'max_sigmaa'"):
        sninspect.analyze(path, device="cpu", rules={"max_sigmaa": 1.0})


def test_summary_counts_read_the_rules() -> None:
    """"layers above the limit" counts the layers whose verdict breaks max_sigma at the limit given,
    and the check line names the rules and what breaks them; no count uses a tolerance of its own."""
    from sninspect.render.summary import verdict_lines

    sample = ROOT / "sample_checkpoints" / "mlp_sn_parametrize.safetensors"
    for limit in (1.02, 1.06, 1.10):
        rules = Rules(max_sigma=limit, max_lipschitz=2.0)
        report = sninspect.analyze(sample, device="cpu", rules=rules)
        above = sum((la.sigma_effective or 0) > limit for la in report.layers)  # independent count
        lines = [line for line, _ in verdict_lines(report)]
        check_line = next(line for line in lines if line.startswith("check ("))
        assert f"max_sigma {limit:g}" in check_line and "max_lipschitz: the certified operator product" in check_line
        counted = [line for line in lines if line.startswith("layers above the limit")]
        if above:
            assert counted == [f"layers above the limit (max_sigma {limit:g}, or σ̂ ≤ 0): {above} of 7"]
            assert f"{above} of 7 layers judged break a rule (max_sigma {above})" in check_line
        else:
            assert counted == []
