"""``SNMonitor``: audits a training model every N steps on its device, appends one JSON line per
audit, writes TensorBoard scalars, warns or stops on a broken rule, and costs nothing in between.
Oracles: the checkpoints saved at the same steps (their audit, their trend), an un-monitored twin
run (bitwise), and TensorBoard's own event reader."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from builders import assert_same_numbers, assert_same_report, model_and_data, train_monitored
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm
from typer.testing import CliRunner

import sninspect
import sninspect.monitor as monitor_module
from sninspect.cli import app
from sninspect.errors import SninspectError
from sninspect.monitor import SNHealthError, SNHealthWarning, SNMonitor


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_log_holds_the_audit_of_the_checkpoints_saved_at_the_same_steps(tmp_path: Path) -> None:
    model, opt = model_and_data(parametrizations.spectral_norm)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    log = tmp_path / "run.jsonl"
    monitor = SNMonitor(model, every=3, log=log, rules={"max_sigma": None, "max_cos_error": None},
                        bounds=True)  # as a report: the certified bounds too

    def on_step(step: int) -> None:
        if monitor.step(step) is not None:
            torch.save({"model": model.state_dict(), "step": step}, folder / f"ckpt_{step}.pt")

    train_monitored(model, opt, 10, on_step)
    monitor.close()
    lines = records(log)
    assert [r["step"] for r in lines] == [3, 6, 9] and monitor.audits == 3
    assert all(r["sninspect_monitor"] == 1 and r["audit_seconds"] > 0 and r["time"] > 1.7e9 for r in lines)
    for record in lines:
        # Judged by the monitor's rules, as the record was (the record holds them and its verdicts).
        saved = sninspect.analyze(folder / f"ckpt_{record['step']}.pt", device="cpu",
                                  rules=sninspect.Rules(max_sigma=None, max_cos_error=None))
        assert_same_numbers(record["report"], saved.to_dict())
        layer = record["report"]["layers"][0]
        assert {"sigma_effective", "sigma_rel_error", "cos_error_u", "cos_error_v", "sigma_exact"} <= layer.keys()
        assert record["report"]["lipschitz"]["operator_product"] > 0

    from_log, from_folder = sninspect.analyze_run(log), sninspect.analyze_run(folder, device="cpu")
    assert from_log.order_by == from_folder.order_by == "step"
    assert from_log.steps == from_folder.steps == (3.0, 6.0, 9.0)
    a, b = from_log.to_dict(), from_folder.to_dict()
    del a["checkpoints"], b["checkpoints"]
    for row in a["summary"] + b["summary"]:
        del row["checkpoint"]
    assert_same_numbers(a, b)
    for r_log, r_file in zip(from_log.reports, from_folder.reports, strict=True):
        assert_same_report(r_log, r_file, spectra=False)  # the log leaves the full spectra out
    assert from_log.checkpoints[0] == f"{log}@3"

    # The CLI renders the same run from the log as from the folder.
    runner = CliRunner()
    out_log = runner.invoke(app, ["report", str(log), "--format", "json", "--device", "cpu"])
    out_dir = runner.invoke(app, ["report", str(folder), "--format", "json", "--device", "cpu"])
    assert out_log.exit_code == 0 and out_dir.exit_code == 0, out_log.output + out_dir.output
    t_log, t_dir = json.loads(out_log.stdout)["trend"], json.loads(out_dir.stdout)["trend"]
    for t in (t_log, t_dir):
        del t["checkpoints"]
        for row in t["summary"]:
            del row["checkpoint"]
    assert_same_numbers(t_log, t_dir)
    for fmt in ("table", "markdown", "html"):
        shown = runner.invoke(app, ["report", str(log), "--format", fmt])
        assert shown.exit_code == 0 and "run.jsonl" in shown.stdout, shown.output


def test_between_audits_nothing_runs_and_training_is_unchanged(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    calls: list[int] = []
    real = monitor_module.analyze

    def counting(*args: Any, **kwargs: Any) -> sninspect.Report:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor_module, "analyze", counting)
    watched, opt = model_and_data()
    monitor = SNMonitor(watched, every=4, log=tmp_path / "m.jsonl")
    results = []
    train_monitored(watched, opt, 9, lambda step: results.append(monitor.step(step)))
    assert len(calls) == 2 and [r is not None for r in results] == [s % 4 == 0 for s in range(1, 10)]
    twin, opt = model_and_data()
    train_monitored(twin, opt, 9)
    for (name, a), (_, b) in zip(watched.state_dict().items(), twin.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # the audits changed nothing the training sees


def test_the_log_is_appended_to_never_truncated_and_a_torn_line_is_closed(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    model, opt = model_and_data()
    train_monitored(model, opt, 3)  # u, v iterated: σ̂ > 0
    monitor = SNMonitor(model, every=1, log=log, rules={"max_sigma": None, "max_cos_error": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy-enough model: no rule broken
        monitor.step(1)
    first = log.read_text()
    with open(log, "a") as f:
        f.write('{"sninspect_monitor": 1, "step": 2, "rep')  # a crash mid-record
    SNMonitor(model, every=1, log=log, rules={"max_sigma": None, "max_cos_error": None}).step(3)
    text = log.read_text()
    assert text.startswith(first) and text.endswith("\n") and len(text.splitlines()) == 3
    with pytest.warns(UserWarning, match="line 2 is an incomplete record"):
        run = sninspect.analyze_run(log)
    assert run.steps == (1.0, 3.0)
    link = tmp_path / "link.jsonl"
    link.symlink_to(log)
    with pytest.raises(SninspectError, match="symbolic link"):
        SNMonitor(model, every=1, log=link).step(1)


@pytest.mark.filterwarnings("ignore::sninspect.monitor.SNHealthWarning")  # fresh u: broken rules expected
def test_no_file_is_written_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default monitor writes nothing (not into the working folder either): its latest audit is
    ``last``, the audit of the model as it stands, and a broken rule still warns."""
    monkeypatch.chdir(tmp_path)
    model, _ = model_and_data()
    monitor = SNMonitor(model, every=2, rules={"max_sigma": None, "max_cos_error": None})
    assert monitor.log is None
    assert monitor.step(1) is None and monitor.last is None
    report = monitor.step(2)
    assert report is monitor.last and monitor.last_step == 2 and monitor.audits == 1
    assert_same_report(report, sninspect.analyze(model, monitor.options))
    torch.manual_seed(0)
    with pytest.warns(SNHealthWarning, match="step 4: .*rule"):
        SNMonitor(nn.Sequential(spectral_norm(nn.Linear(16, 16)))).audit(4)
    monitor.close()
    assert list(tmp_path.iterdir()) == []


def test_a_broken_rule_warns_or_stops(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fresh = nn.Sequential(spectral_norm(nn.Linear(16, 16)))  # u, v random: never iterated
    with pytest.warns(SNHealthWarning, match="step 5: .*rule"):
        SNMonitor(fresh, every=5, log=None).step(5)
    with pytest.raises(SNHealthError) as stopped:
        SNMonitor(fresh, every=5, log=tmp_path / "x.jsonl", fail_fast=True).step(10)
    assert isinstance(stopped.value, SninspectError)
    record = records(tmp_path / "x.jsonl")[0]  # logged before stopping
    assert record["step"] == 10 and record["violations"]
    expected = sninspect.check(sninspect.analyze(fresh))
    assert [v["rule"] for v in record["violations"]] == [v.rule.value for v in expected.violations]
    with pytest.raises(ValueError, match="every=0"):
        SNMonitor(fresh, every=0)
    with pytest.raises(ValueError, match="unknown 'max_sigm'"):
        SNMonitor(fresh, rules={"max_sigm": 1.0})


def test_tensorboard_scalars_are_the_logged_numbers(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, opt = model_and_data()
    log, board = tmp_path / "run.jsonl", tmp_path / "tb"
    with SNMonitor(model, every=2, log=log, tensorboard=board, rules={"max_sigma": None}, bounds=True) as monitor:
        train_monitored(model, opt, 4, monitor.step)
    events = EventAccumulator(str(board))
    events.Reload()
    lines = records(log)
    for layer in lines[0]["report"]["layers"]:
        for quantity in ("sigma_effective", "sigma_rel_error", "cos_error_u", "sigma_exact"):
            scalars = events.Scalars(f"sninspect/{quantity}/{layer['name']}")
            assert [s.step for s in scalars] == [2, 4]
            for s, record in zip(scalars, lines, strict=True):
                value = next(la for la in record["report"]["layers"] if la["name"] == layer["name"])[quantity]
                assert math.isclose(s.value, value, rel_tol=1e-6, abs_tol=1e-9)  # TensorBoard keeps float32
    bound = events.Scalars("sninspect/lipschitz/operator_product")
    assert math.isclose(bound[-1].value, lines[-1]["report"]["lipschitz"]["operator_product"], rel_tol=1e-6)


def test_bad_logs_give_one_line_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    model, opt = model_and_data()
    train_monitored(model, opt, 3)
    good = tmp_path / "good.jsonl"
    monitor = SNMonitor(model, every=1, log=good, rules={"max_sigma": None, "max_cos_error": None})
    monitor.step(1)
    monitor.step(2)
    runner = CliRunner()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(good.read_text() + '{"sninspect_monitor": 1, "st')
    result = runner.invoke(app, ["report", str(torn), "--format", "json"])
    assert result.exit_code == 0 and "(line 3) has no end yet" in result.stderr
    assert json.loads(result.stdout)["trend"]["steps"] == [1, 2]
    cases = {
        "empty.jsonl": ("", "empty file"),
        "garbage.jsonl": ("not json\n" + good.read_text(), "line 1 is not JSON"),
        "list.jsonl": ("[1, 2]\n", "line 1 holds a list"),
        "other.jsonl": ('{"step": 1}\n', "line 1 is not an SNMonitor record"),
        "only_torn.jsonl": ('{"sninspect_monitor": 1, "st', "no audit record"),
        "bad_report.jsonl": ('{"sninspect_monitor": 1, "step": 1, "report": {"layers": 3}}\n', "malformed report"),
    }
    for field, value in (("sigma_effective", "x"), ("shape", "3x3"), ("notes", [1])):  # were TypeError, exit 5
        record = json.loads(good.read_text().splitlines()[0])
        record["report"]["layers"][0][field] = value
        cases[f"kind_{field}.jsonl"] = (json.dumps(record) + "\n", f"field '{field}' holds")
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        result = runner.invoke(app, ["report", str(tmp_path / name)])
        assert result.exit_code == 3, (name, result.output)
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sninspect: error")]
        assert len(lines) == 1 and message in lines[0], (name, result.stderr)
        with pytest.raises(SninspectError, match=message):
            sninspect.analyze_run(tmp_path / name)
    checked = runner.invoke(app, ["check", str(good), "--max-sigma", "inf", "--max-cos-error", "inf"])
    assert checked.exit_code == 0, checked.output


@pytest.mark.filterwarnings("ignore::sninspect.monitor.SNHealthWarning")
def test_a_log_that_is_not_a_monitor_log_is_never_appended_to(tmp_path: Path) -> None:
    """Attack review: log= pointing at a checkpoint appended a JSON line to it (the file was damaged);
    a folder as the log failed only at the first audit, after the first N steps."""
    model, _ = model_and_data()
    checkpoint = tmp_path / "D.pt"
    torch.save(model.state_dict(), checkpoint)
    before = checkpoint.read_bytes()
    with pytest.raises(SninspectError, match="not an SNMonitor log") as caught:
        SNMonitor(model, every=1, log=checkpoint)
    assert caught.value.exit_code == 4 and checkpoint.read_bytes() == before
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"mine": 1}\n')
    with pytest.raises(SninspectError, match="not an SNMonitor log"):
        SNMonitor(model, every=1, log=notes)
    assert notes.read_text() == '{"mine": 1}\n'
    with pytest.raises(SninspectError, match="does not exist"):
        SNMonitor(model, every=1, log=tmp_path / "no" / "such" / "run.jsonl").step(1)
    with pytest.raises(SninspectError, match="is a folder"):
        SNMonitor(model, every=1, log=tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    SNMonitor(model, every=1, log=empty, rules={"max_sigma": None, "max_cos_error": None}).step(1)
    assert records(empty)[0]["step"] == 1


@pytest.mark.filterwarnings("ignore::sninspect.monitor.SNHealthWarning")
def test_step_takes_whole_numbers_only(tmp_path: Path) -> None:
    """step("4") raised TypeError from `%`; step(2.0) and step(nan) were audited/skipped as steps.
    NumPy-like integers and 0-d integer tensors (a trainer's counter) are whole numbers."""
    model, _ = model_and_data()
    monitor = SNMonitor(model, every=2, log=tmp_path / "m.jsonl", rules={"max_sigma": None, "max_cos_error": None})
    for bad in ("4", None, 2.0, float("nan"), True):
        with pytest.raises(sninspect.UsageError, match="whole number"):
            monitor.step(bad)  # type: ignore[arg-type]
        with pytest.raises(sninspect.UsageError, match="whole number"):
            monitor.audit(bad)  # type: ignore[arg-type]
    assert monitor.step(torch.tensor(4)) is not None and monitor.last_step == 4
    assert monitor.step(3) is None
    assert [r["step"] for r in records(tmp_path / "m.jsonl")] == [4]
    with pytest.raises(sninspect.UsageError, match="unknown option 'nosuch'"):
        SNMonitor(model, every=2, log=None, nosuch=1)
