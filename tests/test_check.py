"""``sninspect check``: rules → violations, exit codes for pass / fail / unreadable, the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import snruns
import torch
from typer.testing import CliRunner

from sninspect import analyze
from sninspect.audit.checks import check
from sninspect.cli.main import app
from sninspect.errors import ExitCode
from sninspect.render.check import summary_line, to_text
from sninspect.results.check import Rule, Rules

runner = CliRunner()


@pytest.fixture()
def passing(tmp_path: Path) -> Path:
    """Three SN Linear layers with exact u, v: σ_eff = 1, cosine errors ~1e-30."""
    return snruns.save(snruns.exact_uv(snruns.sn_chain([6, 8, 8, 1])), tmp_path / "good.pt", step=10)


@pytest.fixture()
def failing(tmp_path: Path) -> Path:
    """As ``passing``, with layer 2 (the middle one) skewed: σ_eff ≈ 1.118, cos_error_u ≈ 0.106."""
    model = snruns.exact_uv(snruns.sn_chain([6, 8, 8, 1]))
    snruns.skew_u(snruns.sn_modules(model)[1])
    return snruns.save(model, tmp_path / "bad.pt", step=20)


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["check", *args, "--device", "cpu"])


def test_pass_exits_zero_and_prints_nothing(passing: Path) -> None:
    result = invoke(str(passing))
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout == ""
    assert "all rules hold" in result.stderr
    quiet = invoke(str(passing), "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_fail_exits_one_and_names_layer_number_and_limit(failing: Path) -> None:
    result = invoke(str(failing))
    assert result.exit_code == ExitCode.CHECK_FAILED
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines
    sigma_line = next(line for line in lines if "σ_eff" in line)
    assert sigma_line.startswith("bad.pt: 2.weight:")
    assert f"{snruns.SKEWED_SIGMA:.4f}"[:5] in sigma_line and "> 1.05" in sigma_line
    cos_line = next(line for line in lines if "cos_error_u" in line)
    assert "2.weight" in cos_line and "> 0.01" in cos_line
    assert "1 checkpoint" in result.stderr and "2 violations" in result.stderr


def test_json_lists_exactly_the_broken_rules(failing: Path, passing: Path) -> None:
    result = invoke(str(passing), str(failing), "--format", "json")
    assert result.exit_code == ExitCode.CHECK_FAILED
    data = json.loads(result.stdout)
    assert data["passed"] is False
    assert data["rules"] == {"max_sigma": 1.05, "max_cos_error": 0.01, "max_lipschitz": None,
                             "fail_on_warning": False}
    rows = [(Path(c["checkpoint"]).name, c["passed"], c["layers_checked"]) for c in data["checkpoints"]]
    assert rows == [("good.pt", True, 3), ("bad.pt", False, 3)]
    broken = {(v["layer"], v["rule"], v["quantity"]) for v in data["violations"]}
    assert broken == {("2.weight", "max_sigma", "sigma_effective"),
                      ("2.weight", "max_cos_error", "cos_error_u")}
    by_rule = {v["rule"]: v for v in data["violations"]}
    assert by_rule["max_sigma"]["value"] == pytest.approx(snruns.SKEWED_SIGMA, rel=1e-4)
    assert by_rule["max_sigma"]["limit"] == 1.05
    assert by_rule["max_cos_error"]["value"] == pytest.approx(snruns.SKEWED_COS, rel=1e-4)


def test_limits_move_the_verdict(failing: Path) -> None:
    assert invoke(str(failing), "--max-sigma", "1.2", "--max-cos-error", "0.2").exit_code == 0
    only_cos = invoke(str(failing), "--max-sigma", "inf", "-f", "json")
    assert {v["rule"] for v in json.loads(only_cos.stdout)["violations"]} == {"max_cos_error"}


def test_unreadable_checkpoint_exits_three(passing: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    alone = invoke(str(garbage))
    assert alone.exit_code == ExitCode.BAD_INPUT
    assert "garbage.pt" in alone.stderr and "Traceback" not in alone.output
    assert alone.stdout == ""
    missing = invoke(str(tmp_path / "missing.pt"))
    assert missing.exit_code == ExitCode.BAD_INPUT
    # The readable one is still judged; unreadable wins the exit code and is listed in JSON.
    mixed = invoke(str(passing), str(garbage), "-f", "json")
    assert mixed.exit_code == ExitCode.BAD_INPUT
    data = json.loads(mixed.stdout)
    assert [v["rule"] for v in data["violations"]] == ["unreadable"]
    assert data["checkpoints"][0]["passed"] is True


def test_max_lipschitz_judges_the_certified_operator_product(passing: Path) -> None:
    bound = analyze(passing, device="cpu").primary.lipschitz.operator_product
    assert bound is not None
    assert invoke(str(passing), "--max-lipschitz", str(bound * 1.01)).exit_code == 0
    result = invoke(str(passing), "--max-lipschitz", str(bound * 0.5), "-f", "json")
    assert result.exit_code == 1
    (violation,) = json.loads(result.stdout)["violations"]
    assert violation["rule"] == "max_lipschitz" and violation["quantity"] == "operator_product"
    assert violation["value"] == pytest.approx(bound) and violation["layer"] is None
    help_text = runner.invoke(app, ["check", "--help"]).output
    assert "certified" in help_text and "operator" in help_text and "σ_eff" in help_text


def test_fail_on_warning(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 4, 1]))
    with torch.no_grad():
        # ‖u‖ = 2: warned; σ̂ doubles, σ_eff halves, so no σ rule breaks.
        snruns.tensor(snruns.sn_modules(model)[0], "weight_u").mul_(2.0)
    path = snruns.save(model, tmp_path / "ema.pt")
    assert invoke(str(path)).exit_code == 0
    result = invoke(str(path), "--fail-on-warning", "-f", "json")
    assert result.exit_code == 1
    assert {v["rule"] for v in json.loads(result.stdout)["violations"]} == {"warning"}


def test_layer_not_audited_and_no_sn_break_rules(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 4, 1]))
    with torch.no_grad():
        snruns.tensor(snruns.sn_modules(model)[1], "weight_orig")[0, 0] = float("nan")
    broken = snruns.save(model, tmp_path / "nan.pt")
    result = invoke(str(broken), "-f", "json")
    assert result.exit_code == 1
    violations = json.loads(result.stdout)["violations"]
    assert {(v["rule"], v["layer"]) for v in violations} == {("not_audited", "2.weight")}

    plain = tmp_path / "plain.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), plain)
    result = invoke(str(plain))
    assert result.exit_code == 1 and "no spectrally normalized layer" in result.stdout


def test_negative_sigma_hat_breaks_max_sigma(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 6, 1]))  # not square: SN's dim is unambiguous
    with torch.no_grad():
        # σ̂ = −σ1: σ_eff = −1 is below the limit, and still breaks the rule.
        snruns.tensor(snruns.sn_modules(model)[0], "weight_u").neg_()
    report = analyze(snruns.save(model, tmp_path / "flip.pt"), device="cpu")
    verdict = check(report, Rules())
    assert [(v.rule, v.layer) for v in verdict.violations] == [(Rule.max_sigma, "0.weight")]
    assert "flips" in verdict.violations[0].message
    assert "0.weight" in to_text([verdict])


def test_rules_off_and_summary(failing: Path) -> None:
    report = analyze(failing, device="cpu")
    assert check(report, Rules(max_sigma=None, max_cos_error=None)).passed
    verdict = check(report, Rules())
    assert not verdict.passed and verdict.layers_checked == 3
    assert summary_line([verdict]) == "check: 1 checkpoint, 3 SN layers judged: 2 violations in 1 checkpoint"
    assert all(math.isfinite(v.value or 0.0) for v in verdict.violations)
