"""``sninspect check``: default rules pass healthy trained SN and fail broken SN (each built from a real
module), the gap-aware cosine rule against an independent computation, exit codes, the formats
(text, JSON as the README documents it, GitHub workflow commands, JUnit XML) and pyproject rules."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
import snruns
import torch
from conftest import CASES, Trained, build_trained, cli

from sninspect import analyze
from sninspect.audit.checks import check, gap_cos_error
from sninspect.errors import ExitCode
from sninspect.render import github, terminal
from sninspect.render.terminal import summary_line
from sninspect.results.check import Rule, Rules, Verdict, Violation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def passing(tmp_path: Path) -> Path:
    """Three SN Linear layers with exact u, v: σ_eff = 1, cosine errors ~1e-30."""
    return snruns.save(snruns.exact_uv(snruns.sn_chain([6, 8, 8, 1])), tmp_path / "good.pt", step=10)


@pytest.fixture()
def failing(tmp_path: Path) -> Path:
    """As ``passing``, with layer 2 (the middle one) skewed: σ_eff ≈ 1.118 > 1.10."""
    model = snruns.exact_uv(snruns.sn_chain([6, 8, 8, 1]))
    snruns.skew_u(snruns.sn_modules(model)[1])
    return snruns.save(model, tmp_path / "bad.pt", step=20)


def rules_broken(path: Path, rules: Rules | None = None) -> set[tuple[Rule, str | None]]:
    return {(v.rule, v.layer) for v in check(analyze(path, device="cpu"), rules or Rules()).violations}


def top_pair(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 (W as SN's matrix, its singular values, U) of a legacy SN module."""
    weight = snruns.tensor(module, "weight_orig").detach().double()
    matrix = weight.reshape(weight.shape[0], -1)  # (out, in)
    u, s, _ = torch.linalg.svd(matrix, full_matrices=False)
    return matrix, s, u


# ---------------------------------------------------------------------------------------------
# The gap-aware cosine error: checked against ‖Wᵀu‖ computed directly.


def test_gap_cos_error_is_the_forced_sigma_deficit_and_tight_on_two_directions() -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        rows, cols = 5 + trial % 4, 7
        matrix = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
        u_svd, s, _ = torch.linalg.svd(matrix, full_matrices=False)
        g = float(s[1] / s[0])
        # Any unit u: the estimate ‖Wᵀu‖ is at least gap_cos_error low (the bound holds).
        u = torch.randn(rows, generator=gen, dtype=torch.float64)
        u /= u.norm()
        e = 1.0 - abs(float(u @ u_svd[:, 0]))
        deficit = 1.0 - float((matrix.T @ u).norm() / s[0])
        assert deficit >= gap_cos_error(e, g) - 1e-12
        # u in span(u1, u2): the bound is attained.
        theta = 0.1 + 1.4 * trial / 20
        u = math.cos(theta) * u_svd[:, 0] + math.sin(theta) * u_svd[:, 1]
        deficit = 1.0 - float((matrix.T @ u).norm() / s[0])
        assert gap_cos_error(1.0 - math.cos(theta), g) == pytest.approx(deficit, rel=1e-9)


def test_gap_cos_error_limits() -> None:
    assert gap_cos_error(0.3, 0.0) == pytest.approx(0.3)  # no gap effect: the raw cosine error
    assert gap_cos_error(0.3, None) == pytest.approx(0.3)  # a single singular value
    assert gap_cos_error(0.9, 1.0) == 0.0  # σ1 = σ2: any vector of the top subspace is right
    assert gap_cos_error(1e-14, 0.5) == pytest.approx(1e-14 * 0.75, rel=1e-6)  # no cancellation
    # The layer: cos error 0.79 at σ2/σ1 = 0.998 forces σ̂ only 0.2% low.
    assert gap_cos_error(0.79, 0.998) < 2.5e-3


# ---------------------------------------------------------------------------------------------
# Defaults: healthy trained checkpoints pass ...


@pytest.mark.parametrize(("kind", "dialect"), CASES)
def test_defaults_pass_every_trained_fixture(kind: str, dialect: str,
                                             make_trained: Callable[..., Trained]) -> None:
    trained = make_trained(kind, dialect)
    assert trained.path is not None
    verdict = check(analyze(trained.path, device="cpu"), Rules())
    assert verdict.passed, [v.message for v in verdict.violations]
    assert verdict.layers_checked == len(trained.sigmas) == 1


def test_near_degenerate_layer_passes_despite_a_large_angle(tmp_path: Path) -> None:
    """σ2/σ1 = 0.998, stored u, v at cos error 0.79 in the top pair: σ_eff = 1/(c² + g·s²) ≈ 1.002.
    The old raw rule fails it; the gap-aware default does not."""
    model = snruns.sn_chain([6, 8])  # one SN Linear, trained 3 steps
    module = snruns.sn_modules(model)[0]
    with torch.no_grad():
        weight = snruns.tensor(module, "weight_orig")
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        s[1] = 0.998 * s[0]
        weight.copy_((u * s) @ vh)
        c = 0.21
        k = math.sqrt(1 - c * c)
        snruns.tensor(module, "weight_u").copy_(c * u[:, 0] + k * u[:, 1])
        snruns.tensor(module, "weight_v").copy_(c * vh[0] + k * vh[1])
    path = snruns.save(model, tmp_path / "near.pt")
    layer = analyze(path, device="cpu").layers[0]
    assert layer.sigma_effective == pytest.approx(1 / (c * c + 0.998 * k * k), rel=1e-5)
    assert layer.cos_error_u == pytest.approx(0.79, rel=1e-4)
    assert cli("check", path).exit_code == ExitCode.OK
    strict = cli("check", path, "--strict-cos", "--max-cos-error", "0.01", "-f", "json")
    assert strict.exit_code == ExitCode.CHECK_FAILED
    assert {(v["quantity"], v["layer"]) for v in json.loads(strict.stdout)["violations"]} == {
        ("cos_error_u", "0.weight"), ("cos_error_v", "0.weight")}


# ... and broken ones fail.


def test_random_state_before_training_fails(tmp_path: Path) -> None:
    """torch's hook API stores random u, v at wrapping: σ̂ = uᵀWv is tiny or negative."""
    model = snruns.sn_chain([6, 8, 8, 1], steps=0)
    modules = snruns.sn_modules(model)
    expected = set()
    for i, module in enumerate(modules):
        matrix, s, _ = top_pair(module)
        u, v = (snruns.tensor(module, n).double() for n in ("weight_u", "weight_v"))
        sigma_hat = float(u @ matrix @ v)
        if sigma_hat <= 0 or s[0] / sigma_hat > 1.10:
            expected.add((Rule.max_sigma, f"{2 * i}.weight"))
    assert expected, "random u, v gave a state within the limits"
    path = snruns.save(model, tmp_path / "untrained.pt")
    assert {x for x in rules_broken(path) if x[0] is Rule.max_sigma} == expected
    assert cli("check", path).exit_code == ExitCode.CHECK_FAILED


def test_random_u_of_a_one_step_dialect_fails(tmp_path: Path) -> None:
    """Mimicry's SNLinear before any step: σ̂ is one power step from a random u, σ_eff ≈ 1.29."""
    trained = build_trained("linear", "mimicry", steps=0)
    layer = trained.model[0]
    sigma1 = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    sigma_eff = sigma1 / trained.sigmas["0.weight"]  # the reference layer's own eval divisor
    assert sigma_eff > 1.10
    path = tmp_path / "mimicry.pt"
    torch.save(trained.state, path)
    verdict = check(analyze(path, device="cpu"), Rules())
    by_rule = {v.rule: v for v in verdict.violations}
    assert by_rule[Rule.max_sigma].value == pytest.approx(sigma_eff, rel=1e-6)
    assert by_rule[Rule.max_cos_error].quantity == "gap_cos_error_u"


def test_layer_at_sigma_eff_1_3_fails_on_sigma_and_on_the_forced_deficit(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([6, 8, 8, 1]))
    module = snruns.sn_modules(model)[1]
    snruns.skew_u(module, mix=math.sqrt(1.3**2 - 1))  # σ̂ = σ1/1.3 (v exact)
    path = snruns.save(model, tmp_path / "hot.pt")
    verdict = check(analyze(path, device="cpu"), Rules())
    by_rule = {v.rule: v for v in verdict.violations}
    assert {v.layer for v in verdict.violations} == {"2.weight"}
    assert by_rule[Rule.max_sigma].value == pytest.approx(1.3, rel=1e-5)
    # u lies in span(u1, u2), so the forced deficit is exactly 1 − ‖Wᵀu‖/σ1.
    matrix, s, _ = top_pair(module)
    u = snruns.tensor(module, "weight_u").double()
    deficit = 1 - float((matrix.T @ u).norm() / s[0])
    assert deficit > 0.05  # this seed: σ2/σ1 ≈ 0.81, deficit ≈ 0.072
    assert by_rule[Rule.max_cos_error].quantity == "gap_cos_error_u"
    assert by_rule[Rule.max_cos_error].value == pytest.approx(deficit, rel=1e-6)
    assert check(analyze(path, device="cpu"), Rules(max_cos_error=deficit * 1.01)).violations[0].rule \
        is Rule.max_sigma


def test_u_norm_three_fails_the_norm_rule_only(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 6, 1]))
    with torch.no_grad():
        # ‖u‖ = 3: σ̂ triples, σ_eff = 1/3, so no σ rule breaks; the norm rule does.
        snruns.tensor(snruns.sn_modules(model)[0], "weight_u").mul_(3.0)
    path = snruns.save(model, tmp_path / "ema.pt")
    verdict = check(analyze(path, device="cpu"), Rules())
    assert [(v.rule, v.layer, v.quantity) for v in verdict.violations] == [
        (Rule.max_norm_error, "0.weight", "u_norm")]
    assert verdict.violations[0].value == pytest.approx(3.0, rel=1e-6)
    assert cli("check", path, "--max-norm-error", "inf").exit_code == 0
    assert cli("check", path, "--max-norm-error", "2.5").exit_code == 0
    assert cli("check", path, "--max-norm-error", "1.9").exit_code == 1


def test_nan_in_weight_or_u_is_a_layer_not_audited(tmp_path: Path) -> None:
    for buffer in ("weight_orig", "weight_u"):
        model = snruns.exact_uv(snruns.sn_chain([4, 4, 1]))
        with torch.no_grad():
            snruns.tensor(snruns.sn_modules(model)[1], buffer).view(-1)[0] = float("nan")
        path = snruns.save(model, tmp_path / f"nan-{buffer}.pt")
        result = cli("check", path, "-f", "json")
        assert result.exit_code == ExitCode.CHECK_FAILED
        violations = json.loads(result.stdout)["violations"]
        assert {(v["rule"], v["layer"]) for v in violations} == {("not_audited", "2.weight")}


def test_negative_sigma_hat_breaks_max_sigma_even_with_the_limit_off(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 6, 1]))  # not square: SN's dim is unambiguous
    with torch.no_grad():
        # σ̂ = −σ1: σ_eff = −1 is below the limit, and still breaks the rule.
        snruns.tensor(snruns.sn_modules(model)[0], "weight_u").neg_()
    path = snruns.save(model, tmp_path / "flip.pt")
    for rules in (Rules(), Rules(max_sigma=None)):
        verdict = check(analyze(path, device="cpu"), rules)
        assert [(v.rule, v.layer) for v in verdict.violations] == [(Rule.max_sigma, "0.weight")]
        assert "flips" in verdict.violations[0].message
        assert "0.weight" in terminal.render_check([verdict], Rules())


def test_no_sn_fails(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), plain)
    result = cli("check", plain)
    assert result.exit_code == 1 and "no spectrally normalized layer" in result.stdout


# ---------------------------------------------------------------------------------------------
# Exit codes, limits, the text and JSON outputs.


def test_pass_exits_zero_and_prints_nothing(passing: Path) -> None:
    result = cli("check", passing)
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout == ""
    assert "all rules hold" in result.stderr
    quiet = cli("check", passing, "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_fail_exits_one_and_names_layer_number_and_limit(failing: Path) -> None:
    result = cli("check", failing)
    assert result.exit_code == ExitCode.CHECK_FAILED
    sigma_line = next(line for line in result.stdout.splitlines() if "σ_eff" in line)
    assert sigma_line.startswith("bad.pt: 2.weight:")
    assert f"{snruns.SKEWED_SIGMA:.4f}"[:5] in sigma_line and "> 1.1" in sigma_line
    assert "1 checkpoint" in result.stderr


def test_json_lists_exactly_the_broken_rules(failing: Path, passing: Path) -> None:
    result = cli("check", passing, failing, "--format", "json", "--max-cos-error", "inf")
    assert result.exit_code == ExitCode.CHECK_FAILED
    data = json.loads(result.stdout)
    assert data["passed"] is False
    assert data["rules"] == {"max_sigma": 1.10, "max_cos_error": None, "strict_cos": False,
                             "max_norm_error": 0.01, "max_lipschitz": None, "fail_on_warning": False}
    rows = [(Path(c["checkpoint"]).name, c["passed"], c["layers_checked"]) for c in data["checkpoints"]]
    assert rows == [("good.pt", True, 3), ("bad.pt", False, 3)]
    (violation,) = data["violations"]
    assert (violation["layer"], violation["rule"], violation["quantity"]) == ("2.weight", "max_sigma",
                                                                              "sigma_effective")
    assert violation["value"] == pytest.approx(snruns.SKEWED_SIGMA, rel=1e-4)
    assert violation["limit"] == 1.10


def _readme_check_json() -> dict[str, object]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- check-json -->\s*```json\n(.*?)```", text, re.S)
    assert match, "README: the check JSON example (after <!-- check-json -->) is missing"
    return json.loads(match.group(1))


def test_json_matches_the_readme_example(failing: Path) -> None:
    """The README's documented `check --format json` example has exactly the real output's keys."""
    documented = _readme_check_json()
    real = json.loads(cli("check", failing, "-f", "json").stdout)

    def keys(data: dict[str, object]) -> tuple[object, ...]:
        return (sorted(data), sorted(data["rules"]),  # type: ignore[arg-type]
                sorted(data["checkpoints"][0]), sorted(data["violations"][0]))  # type: ignore[index]

    assert keys(documented) == keys(real)
    assert documented["rules"] == json.loads(cli("check", failing, "-f", "json").stdout)["rules"]


def test_limits_move_the_verdict(failing: Path) -> None:
    assert cli("check", failing, "--max-sigma", "1.2").exit_code == 0
    only_cos = cli("check", failing, "--max-sigma", "inf", "--strict-cos", "-f", "json")
    assert {v["rule"] for v in json.loads(only_cos.stdout)["violations"]} == {"max_cos_error"}


def test_unreadable_checkpoint_exits_three(passing: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    alone = cli("check", garbage)
    assert alone.exit_code == ExitCode.BAD_INPUT
    assert "garbage.pt" in alone.stderr and "Traceback" not in alone.output
    assert alone.stdout == ""
    missing = cli("check", tmp_path / "missing.pt")
    assert missing.exit_code == ExitCode.BAD_INPUT
    # The readable one is still judged; unreadable wins the exit code and is listed in JSON.
    mixed = cli("check", passing, garbage, "-f", "json")
    assert mixed.exit_code == ExitCode.BAD_INPUT
    data = json.loads(mixed.stdout)
    assert [v["rule"] for v in data["violations"]] == ["unreadable"]
    assert data["checkpoints"][0]["passed"] is True
    # The summary line agrees with the exit code: the check failed, though every rule held where it could read.
    assert "all rules hold in those read; 1 could not be read (failed)" in mixed.stderr
    assert "all rules hold;" not in alone.stderr + mixed.stderr


def test_max_lipschitz_judges_the_certified_operator_product(passing: Path) -> None:
    bound = analyze(passing, device="cpu").primary.lipschitz.operator_product
    assert bound is not None
    assert cli("check", passing, "--max-lipschitz", str(bound * 1.01)).exit_code == 0
    result = cli("check", passing, "--max-lipschitz", str(bound * 0.5), "-f", "json")
    assert result.exit_code == 1
    (violation,) = json.loads(result.stdout)["violations"]
    assert violation["rule"] == "max_lipschitz" and violation["quantity"] == "operator_product"
    assert violation["value"] == pytest.approx(bound) and violation["layer"] is None
    help_text = cli("check", "--help").output
    assert "certified" in help_text and "operator" in help_text and "σ_eff" in help_text


def test_fail_on_warning(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 4, 1]))
    with torch.no_grad():
        snruns.tensor(snruns.sn_modules(model)[0], "weight_u").mul_(2.0)  # warned: ‖u‖ ≠ 1
    path = snruns.save(model, tmp_path / "ema.pt")
    assert cli("check", path, "--max-norm-error", "inf").exit_code == 0
    result = cli("check", path, "--max-norm-error", "inf", "--fail-on-warning", "-f", "json")
    assert result.exit_code == 1
    assert {v["rule"] for v in json.loads(result.stdout)["violations"]} == {"warning"}


def test_rules_off_and_summary(failing: Path) -> None:
    report = analyze(failing, device="cpu")
    assert check(report, Rules(max_sigma=None, max_cos_error=None)).passed
    verdict = check(report, Rules(max_cos_error=None))
    assert not verdict.passed and verdict.layers_checked == 3
    assert verdict.layers == ("0.weight", "2.weight", "4.weight")
    assert summary_line([verdict]) == "check: 1 checkpoint, 3 SN layers judged: 1 violation in 1 checkpoint"


# ---------------------------------------------------------------------------------------------
# CI: GitHub workflow commands, JUnit XML, pyproject rules.


def test_github_format_escapes_per_the_workflow_commands_spec(failing: Path, tmp_path: Path) -> None:
    odd = tmp_path / "run:1,a%b.pt"
    odd.write_bytes(failing.read_bytes())
    result = cli("check", odd, "-f", "github")
    assert result.exit_code == 1
    (line,) = [x for x in result.stdout.splitlines() if "σ_eff" in x]
    escaped = str(odd).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert line.startswith(f"::error file={escaped},title=sninspect::2.weight: σ_eff = ")
    verdict = Verdict("a,b:c.pt", 1, (Violation("a,b:c.pt", Rule.warning, None, None, None, None,
                                                 "100% bad\r\nsecond line"),))
    expected = "::error file=a%2Cb%3Ac.pt,title=sninspect::100%25 bad%0D%0Asecond line\n"
    assert github.render_check([verdict], Rules()) == expected


def test_junit_xml_one_suite_per_checkpoint_one_case_per_sn_layer(failing: Path, passing: Path,
                                                                   tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"junk")
    out = tmp_path / "reports" / "check.xml"
    out.parent.mkdir()
    result = cli("check", passing, failing, garbage, "--junit-xml", out, "-q")
    assert result.exit_code == ExitCode.BAD_INPUT
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [Path(s.get("name", "")).name for s in suites] == ["good.pt", "bad.pt", "garbage.pt"]
    for suite in suites[:2]:
        names = [c.get("name") for c in suite.findall("testcase")]
        assert names == ["0.weight", "2.weight", "4.weight", "(checkpoint)"]
        assert suite.get("tests") == "4"
    failed = {c.get("name"): c.find("failure") for c in suites[1].findall("testcase")}
    assert [n for n, f in failed.items() if f is not None] == ["2.weight"]
    assert "σ_eff" in (failed["2.weight"].get("message") or "")  # type: ignore[union-attr]
    assert (suites[0].get("failures"), suites[1].get("failures"), suites[2].get("errors")) == ("0", "1", "1")
    assert root.get("tests") == "9" and root.get("failures") == "1" and root.get("errors") == "1"
    # Written atomically through the one writer: never over an input.
    again = cli("check", passing, "--junit-xml", passing, "-q")
    assert again.exit_code == ExitCode.WRITE_FAILED and passing.read_bytes()[:2] == b"PK"


def test_pyproject_rules_are_read_from_the_nearest_file_and_flags_override(
        failing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "sub" / "dir").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.sninspect.check]\nmax-sigma = 1.2\nmax-cos-error = inf\n'
                                            'fail-on-warning = false\n', encoding="utf-8")
    monkeypatch.chdir(project / "sub" / "dir")
    relaxed = cli("check", failing, "-f", "json")
    assert relaxed.exit_code == 0, relaxed.output
    rules = json.loads(relaxed.stdout)["rules"]
    assert rules["max_sigma"] == 1.2 and rules["max_cos_error"] is None
    assert "pyproject.toml" in relaxed.stderr
    assert cli("check", failing, "--max-sigma", "1.1").exit_code == 1  # the flag wins
    # A nearer pyproject without the table: the built-in defaults.
    (project / "sub" / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    assert cli("check", failing).exit_code == 1


@pytest.mark.parametrize(("body", "words"), [
    ("max-sigmaa = 1.2", ["unknown key 'max-sigmaa'", "max-sigma"]),
    ("max-sigma = 'high'", ["max-sigma", "non-negative number"]),
    ("fail-on-warning = 1", ["fail-on-warning", "true or false"]),
])
def test_pyproject_bad_key_is_a_usage_error(body: str, words: list[str], passing: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.sninspect.check]\n{body}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = cli("check", passing)
    assert result.exit_code == ExitCode.USAGE
    assert all(w in result.stderr for w in words), result.stderr
    assert "Traceback" not in result.output


def test_github_format_makes_control_characters_visible() -> None:
    """An ESC in a layer name cannot colour or rewrite a CI log; CR/LF keep the spec's %0D/%0A."""
    from sninspect.render.github import _gh_data

    assert _gh_data("a\x1b[31mb\r\nc%") == "a\\x1b[31mb%0D%0Ac%25"


@pytest.mark.parametrize("rules", [{"max_sigma": "1.05"}, {"max_cos_error": True}, {"max_lipschitz": -1.0},
                                   {"max_norm_error": float("nan")}, {"strict_cos": 1}])
def test_rule_values_of_the_wrong_kind_are_one_usage_error(rules: dict) -> None:
    """From Python, ``sninspect.check(report, {"max_sigma": "1.05"})`` is a ValueError naming the rule,
    not a TypeError at the first comparison."""
    import sninspect
    from sninspect.errors import UsageError

    report = sninspect.analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu")
    name = next(iter(rules))
    with pytest.raises(UsageError, match=f"rules: {name} must be") as info:
        sninspect.check(report, rules)
    assert isinstance(info.value, ValueError)
    assert sninspect.check(report, {"max_sigma": 10, "strict_cos": False}).passed  # ints are numbers
