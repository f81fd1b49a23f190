"""Several inputs give one outcome (reports, unreadable inputs, notes, verdicts) with one exit code; the
CLI and a notebook reach it through the same library calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm

import sninspect
from sninspect.audit.options import Selector
from sninspect.audit.runs.run import Outcome, Unreadable
from sninspect.audit.sources import analyze_paths, check_paths
from sninspect.errors import ExitCode, InputError, MissingFileError, UsageError
from sninspect.results.check import Rule, Rules
from sninspect.rewrite import RewriteOptions


def linear(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    layer = spectral_norm(nn.Linear(8, 6))
    layer(torch.randn(2, 8))  # one power step: u, v stored
    torch.save({"fc." + k: v for k, v in layer.state_dict().items()}, path)
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    garbage = tmp_path / "ck_2.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    return [linear(tmp_path / "ck_1.pt", 0), garbage, tmp_path / "ck_3.pt", linear(tmp_path / "ck_4.pt", 1)]


def test_outcome_keeps_every_input_in_order_with_its_reason(inputs: list[Path]) -> None:
    outcome = analyze_paths(inputs, sninspect.Options(device="cpu"))
    assert outcome.inputs == 4 and outcome.notes == ()
    assert [type(item) for item in outcome.items] == [sninspect.Report, Unreadable, Unreadable, sninspect.Report]
    for item, path in zip(outcome.unreadable, inputs[1:3], strict=True):
        with pytest.raises(InputError) as alone:  # the reason is the one analyze gives for that file alone
            sninspect.analyze(path, device="cpu")
        assert item.path == str(path) and item.reason == str(alone.value) and item.exit_code == ExitCode.BAD_INPUT
    assert isinstance(outcome.unreadable[1].error, MissingFileError)
    weight = torch.load(inputs[0])["fc.weight_orig"].double().numpy()
    assert outcome.reports[0].layers[0].sigma_exact == pytest.approx(np.linalg.svd(weight, compute_uv=False)[0],
                                                                     rel=1e-12)
    assert outcome.exit_code == ExitCode.BAD_INPUT  # the first unreadable input's code
    assert [Path(c).name for c in outcome.result().checkpoints] == ["ck_1.pt", "ck_4.pt"]  # type: ignore[union-attr]
    with pytest.raises(InputError, match="ck_2.pt"):  # as a notebook's analyze_run: the first error raises
        analyze_paths(inputs, sninspect.Options(device="cpu"), keep_going=False)


def test_exit_code_is_decided_by_the_outcome_alone(inputs: list[Path]) -> None:
    report = sninspect.analyze(inputs[0], device="cpu")
    broken = Unreadable("x.pt", InputError("x.pt: not a checkpoint"))
    failing = sninspect.check(report, {"max_sigma": 0.0})
    passing = sninspect.check(report, {"max_sigma": None, "max_cos_error": None, "max_norm_error": None})
    assert not failing.passed and passing.passed
    assert Outcome(1, (report,)).exit_code == ExitCode.OK  # report: never 1, whatever the verdicts say
    assert Outcome(1, (report,), verdicts=(passing,)).exit_code == ExitCode.OK
    assert Outcome(1, (report,), verdicts=(failing,)).exit_code == ExitCode.CHECK_FAILED
    assert Outcome(2, (report, broken), verdicts=(failing,)).exit_code == ExitCode.BAD_INPUT
    with pytest.raises(InputError, match="x.pt: not a checkpoint"):
        Outcome(1, (broken,)).raise_if_nothing_read()
    Outcome(2, (report, broken)).raise_if_nothing_read()  # something to report: no raise


def test_check_paths_judges_as_the_notebook_check_does(inputs: list[Path]) -> None:
    rules = Rules(max_sigma=1.0001)
    outcome = check_paths(inputs, sninspect.Options(device="cpu"), rules)
    notebook = [sninspect.check(sninspect.analyze(p, device="cpu", rules=rules), rules) for p in inputs[::3]]
    assert [outcome.verdicts[0], outcome.verdicts[3]] == notebook
    assert [v.violations[0].rule for v in outcome.verdicts[1:3]] == [Rule.unreadable, Rule.unreadable]
    assert outcome.verdicts[1].violations[0].message == outcome.unreadable[0].reason
    assert outcome.exit_code == ExitCode.BAD_INPUT
    readable = check_paths(inputs[::3], sninspect.Options(device="cpu"), {"max_sigma": 0.0})
    assert readable.exit_code == ExitCode.CHECK_FAILED and not any(v.passed for v in readable.verdicts)
    assert all(r.rules == Rules(max_sigma=0.0) for r in readable.reports)  # the reports judged by the same rules


def test_a_device_name_is_checked_once_where_the_options_are_built() -> None:
    for name in ("tpu", "cuda:x", "mps"):
        with pytest.raises(UsageError, match="expected auto, cpu, cuda or cuda:N"):
            sninspect.Options(device=name)
    assert sninspect.Options(device="cuda:3").device == "cuda:3"  # well formed: whether it is there is asked later


def test_one_selector_for_the_audit_and_the_rewrites(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(spectral_norm(nn.Linear(n_in, n_out)) for n_in, n_out in ((8, 8), (8, 6), (6, 1))))
    model(torch.randn(2, 8))
    path = tmp_path / "d.pt"
    torch.save(model.state_dict(), path)
    keep = Selector(r"^[01]\.", r"^1\.")
    assert [keep(n) for n in ("0.weight", "1.weight", "2.weight")] == [True, False, False]
    audited = sninspect.analyze(path, device="cpu", include=r"^[01]\.", exclude=r"^1\.")
    stripped = sninspect.strip(path, tmp_path / "p.pt", include=r"^[01]\.", exclude=r"^1\.", dry_run=True)
    assert [la.name for la in audited.layers] == [c.name for c in stripped.changes] == ["0.weight"]
    with pytest.raises(UsageError) as audit_error:
        sninspect.analyze(path, device="cpu", include="(")
    with pytest.raises(UsageError) as rewrite_error:
        sninspect.strip(path, tmp_path / "p.pt", include="(", dry_run=True)
    assert str(audit_error.value) == str(rewrite_error.value)
    assert str(audit_error.value).startswith("include='(': not a valid regular expression")


def test_rewrite_options_and_their_keyword_spelling_agree(tmp_path: Path) -> None:
    path = linear(tmp_path / "d.pt", 0)
    typed = sninspect.strip(path, tmp_path / "a.safetensors", RewriteOptions(dry_run=True, include="fc"), sigma="exact")
    spelled = sninspect.strip(path, tmp_path / "a.safetensors", sigma="exact", dry_run=True, include="fc")
    mixed = sninspect.strip(path, tmp_path / "a.safetensors", RewriteOptions(include="fc"), sigma="exact", dry_run=True)
    assert typed == spelled == mixed and not typed.written and not (tmp_path / "a.safetensors").exists()
    with pytest.raises(UsageError, match=r"unknown option 'dryrun' \(known: dry_run, exclude, force, include"):
        sninspect.strip(path, tmp_path / "a.pt", dryrun=True)
    with pytest.raises(UsageError, match="expected a sninspect.rewrite.RewriteOptions"):
        sninspect.convert(path, tmp_path / "a.pt", sninspect.Options(), to="parametrize")  # type: ignore[arg-type]


def test_nothing_readable_raises_for_report_and_is_judged_for_check(tmp_path: Path) -> None:
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError) as alone:
        sninspect.analyze(garbage, device="cpu")
    with pytest.raises(InputError) as several:
        analyze_paths([garbage, tmp_path / "missing.pt"], sninspect.Options(device="cpu"))
    assert str(several.value) == str(alone.value)
    judged = check_paths([garbage, tmp_path / "missing.pt"], sninspect.Options(device="cpu"), None)
    assert [v.violations[0].rule for v in judged.verdicts] == [Rule.unreadable, Rule.unreadable]
    assert judged.exit_code == ExitCode.BAD_INPUT and judged.reports == ()
