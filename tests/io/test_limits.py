"""Hostile sizes and shapes in what sninspect reads: numbers past their range in monitor logs, options
and settings, pickles nested deep or built of shared references. Each gives one line and its exit code
(2: the command line, 3: the input), never an internal error, and bounded time and memory."""

from __future__ import annotations

import io
import json
import re
import struct
import time
from pathlib import Path

import pytest
import torch
from builders import model_and_data, train_monitored
from hostile import _pickle_record, _zip_replacing, small_state_dict
from typer.testing import CliRunner

import sninspect
from sninspect.cli.main import app
from sninspect.errors import ExitCode, SninspectError
from sninspect.io import limits
from sninspect.monitor import SNMonitor
from sninspect.rewrite import container

runner = CliRunner()
HUGE = "9" * 400


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("sninspect: error")]


def one_error(args: list[str], code: int, *words: str) -> str:
    """Run ``args``: exit ``code``, one error line holding every word, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, (args, result.output)
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and all(w in lines[0] for w in words), (args, result.stderr)
    assert "Traceback" not in result.output
    return lines[0]


# ----------------------------------------------------------------------------------------------
# Monitor logs


@pytest.fixture(scope="module")
def good_record(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One line of a real SNMonitor log."""
    model, opt = model_and_data()
    train_monitored(model, opt, 2)
    log = tmp_path_factory.mktemp("log") / "run.jsonl"
    SNMonitor(model, every=1, log=log, rules={"max_sigma": None, "max_cos_error": None}).step(1)
    return log.read_text().splitlines()[0]


def edited(line: str, path: tuple[object, ...], raw: str) -> str:
    """``line`` with the value at ``path`` (keys and indices) written as the raw JSON text ``raw``."""
    record = json.loads(line)
    target = record
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "@@RAW@@"
    return json.dumps(record).replace('"@@RAW@@"', raw)


LOG_CASES = {
    # name: (path into the record, raw JSON value, words of the message)
    "step_huge": (("step",), HUGE, ("line 1", "'step'", "whole number")),
    "step_negative": (("step",), "-5", ("line 1", "'step'", "holds -5")),
    "step_fraction": (("step",), "1.5", ("line 1", "'step'", "holds 1.5")),
    "step_past_int64": (("step",), str(2**63), ("line 1", "'step'")),
    "step_nan": (("step",), "NaN", ("line 1", "'step'")),
    "sigma_huge": (("report", "layers", 0, "sigma_exact"), HUGE, ("line 1", "'sigma_exact'", "finite")),
    "sigma_infinity": (("report", "layers", 0, "sigma_exact"), "Infinity", ("line 1", "'sigma_exact'", "finite")),
    "sigma_negative": (("report", "layers", 0, "sigma_exact"), "-3", ("line 1", "'sigma_exact'", "≥ 0")),
    "sigma_eff_huge": (("report", "layers", 0, "sigma_effective"), "-" + HUGE, ("line 1", "'sigma_effective'")),
    "bound_huge": (("report", "models", 0, "lipschitz", "matrix_product"), HUGE, ("line 1", "'matrix_product'")),
    "bound_negative": (("report", "models", 0, "lipschitz", "operator_product"), "-1.0",
                       ("line 1", "'operator_product'", "≥ 0")),
    "cumulative_huge": (("report", "models", 0, "lipschitz", "cumulative_matrix", 0), "1e400",
                        ("line 1", "'cumulative_matrix'")),
    "shape_huge": (("report", "layers", 0, "shape", 0), HUGE, ("line 1", "'shape'")),
    "shape_negative": (("report", "layers", 0, "shape", 0), "-4", ("line 1", "'shape'")),
    "dim_huge": (("report", "layers", 0, "dim"), HUGE, ("line 1", "'dim'")),
    "warning_object": (("report", "models", 0, "warnings"), '[{"a": 1}]', ("line 1", "'warnings'")),
    "deep_field": (("report", "extras"), "[" * 100_000 + "]" * 100_000, ("line 1", "deeper than it can be read")),
    "deep_shallow_enough": (("report", "layers", 0, "notes"), "[" * 40 + "]" * 40, ("line 1", "more than 32 levels")),
}


@pytest.mark.parametrize("case", sorted(LOG_CASES))
def test_numbers_and_nesting_in_a_log_are_range_checked(tmp_path: Path, good_record: str, case: str) -> None:
    where, raw, words = LOG_CASES[case]
    log = tmp_path / "run.jsonl"
    log.write_text(edited(good_record, where, raw) + "\n")
    one_error(["report", str(log)], ExitCode.BAD_INPUT, str(log), *words)
    with pytest.raises(SninspectError, match="line 1"):
        sninspect.analyze_run(log)
    result = runner.invoke(app, ["check", str(log)])  # an unreadable log is a verdict of its own, never exit 5
    assert result.exit_code == ExitCode.BAD_INPUT and "Traceback" not in result.output, result.output


def test_a_whole_line_of_digits_or_brackets_is_one_line(tmp_path: Path, good_record: str) -> None:
    cases = {"digits": ("9" * 5000, "holds a float"),  # past Python's 4300-digit int limit: was AttributeError
             "brackets": ("[" * 100_000 + "]" * 100_000, "deeper than it can be read")}
    for name, (text, words) in cases.items():
        log = tmp_path / f"{name}.jsonl"
        log.write_text(good_record + "\n" + text + "\n")
        one_error(["report", str(log)], ExitCode.BAD_INPUT, "line 2", words)


def test_a_good_log_still_reads(tmp_path: Path, good_record: str) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text(good_record + "\n" + edited(good_record, ("step",), str(2**53)) + "\n")
    result = runner.invoke(app, ["report", str(log), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trend"]["steps"] == [1, 2**53]


def test_a_step_entry_too_long_for_a_float_orders_nothing(tmp_path: Path) -> None:
    """A checkpoint's ``step`` of 400 digits (was OverflowError, exit 5) is not used to order the run."""
    state = small_state_dict()
    torch.save({"state_dict": state, "step": 10**400}, tmp_path / "ck_2.pt")
    torch.save({"state_dict": state, "step": 5}, tmp_path / "ck_1.pt")
    result = runner.invoke(app, ["report", "-q", "--format", "json", str(tmp_path / "ck_2.pt"),
                                 str(tmp_path / "ck_1.pt")])
    assert result.exit_code == 0, result.output
    trend = json.loads(result.stdout)["trend"]
    assert trend["order_by"] == "file name" and trend["steps"] == [1, 2], trend["order_by"]


# ----------------------------------------------------------------------------------------------
# Options and settings


def test_numeric_options_past_their_range_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were OverflowError (exit 5) or a per-layer OverflowError."""
    path = tmp_path / "ck.pt"
    torch.save(small_state_dict(), path)
    one_error(["report", str(path), "--max-memory", HUGE], ExitCode.USAGE, "--max-memory", "1 EiB")
    one_error(["report", str(path), "--max-memory", "0.1"], ExitCode.USAGE, "--max-memory", "1 byte")
    one_error(["report", str(path), "--input-size", HUGE], ExitCode.USAGE, "--input-size", "2147483647")
    assert runner.invoke(app, ["report", "-q", str(path), "--max-memory", "1024T"]).exit_code == 0  # 1 EiB
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(f"[tool.sninspect.check]\nmax-sigma = {HUGE}\n")
    one_error(["check", str(path)], ExitCode.USAGE, "max-sigma = 9999", "...: expected a non-negative number")


# ----------------------------------------------------------------------------------------------
# Pickles nested deep or built of shared references


def _put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)  # LONG_BINPUT


def _get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)  # LONG_BINGET


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def deep_lists(levels: int) -> bytes:
    """Pickle opcodes leaving one list nested ``levels`` deep: [[[...]]]."""
    return b"]" * levels + b"a" * (levels - 1)


def deep_dicts(levels: int) -> bytes:
    """{"a": {"a": ... {}}}, ``levels`` deep."""
    return (b"}" + _text("a")) * (levels - 1) + b"}" + b"s" * (levels - 1)


def shared_dicts(levels: int, base: int = 1_000_000) -> bytes:
    """D_i = {"a": D_{i-1}, "b": D_{i-1}}: ``levels`` dicts in the file, 2^levels paths through them.
    The memo indices start at ``base``, far above those of the surrounding pickle."""
    ops = b"".join(b"}" + _put(base + i) + _text("a") for i in range(levels, 0, -1)) + b"}" + _put(base)
    return ops + b"".join(b"s" + _text("b") + _get(base + i) + b"s" for i in range(levels))


def checkpoint_with(path: Path, extra: bytes) -> Path:
    """A real zip checkpoint ``{"state_dict": ..., "extra": <the object the opcodes build>}``: torch.save's
    pickle with the placeholder string's opcode replaced (its memo entry then holds the new object)."""
    buffer = io.BytesIO()
    torch.save({"state_dict": small_state_dict(), "extra": "@@EXTRA@@"}, buffer)
    data = buffer.getvalue()
    pickled = _pickle_record(data)
    marker = _text("@@EXTRA@@")
    assert pickled.count(marker) == 1
    path.write_bytes(_zip_replacing(data, "data.pkl", pickled.replace(marker, extra)))
    return path


@pytest.mark.parametrize("build", [deep_lists, deep_dicts])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_strip_of_a_deeply_nested_pickle_is_refused(tmp_path: Path, build: object, suffix: str) -> None:
    """Was RecursionError (exit 5) or 'could not write' (exit 4); reading it still works."""
    path = checkpoint_with(tmp_path / "deep.pt", build(20_000))  # type: ignore[operator]
    out = tmp_path / f"out{suffix}"
    one_error(["strip", str(path), "-o", str(out)], ExitCode.BAD_INPUT, "20000 levels deep", "more than 100")
    assert not out.exists()
    assert runner.invoke(app, ["layers", str(path)]).exit_code == 0


def test_strip_keeps_shared_references_shared(tmp_path: Path) -> None:
    """60 levels of shared dicts: 2^60 paths. Was a walk of every path (GBs, past 60 s); now each dict is
    rebuilt once and the output shares it as the input did."""
    path = checkpoint_with(tmp_path / "dag.pt", shared_dicts(60))
    start = time.perf_counter()
    result = runner.invoke(app, ["strip", str(path), "-o", str(tmp_path / "out.pt")])
    assert result.exit_code == 0, result.output
    written = torch.load(tmp_path / "out.pt", weights_only=True)
    node = written["extra"]
    for _ in range(60):
        assert node["a"] is node["b"]
        node = node["a"]
    assert node == {}
    assert "1.weight" in written["state_dict"] and "1.weight_orig" not in written["state_dict"]  # stripped
    result = runner.invoke(app, ["strip", str(path), "-o", str(tmp_path / "out.safetensors")])
    assert result.exit_code == 0, result.output
    assert "left out, more than 1,000,000 entries as JSON" in result.stderr and "extra" in result.stderr
    assert time.perf_counter() - start < 30


def test_extents_count_shared_references_at_each_use_and_visit_them_once() -> None:
    """Oracle: the tree a DAG unfolds to, counted by hand."""
    leaf: dict[str, int] = {"x": 1}
    pair = [leaf, leaf]
    root = {"p": pair, "q": pair}
    found = container.extents(root)
    # leaf: itself + key + value = 3; pair: 1 + 2·3 = 7; root: 1 + 2 keys + 2·7 = 17
    assert found[id(leaf)] == container.Extent(1, 3)
    assert found[id(pair)] == container.Extent(2, 7)
    assert found[id(root)] == container.Extent(3, 17)
    cycle: list[object] = []
    cycle.append(cycle)
    assert container.extents(cycle)[id(cycle)] == container.Extent(1, 2)


# ----------------------------------------------------------------------------------------------
# Many tensors, many checkpoints


def many_views(count: int) -> dict[str, torch.Tensor]:
    """``count`` 2×2 views of one 64-float storage (a few bytes each in the pickle)."""
    base = torch.arange(64, dtype=torch.float32)
    return {f"layer{i}.weight": base[i % 60: i % 60 + 4].view(2, 2) for i in range(count)}


@pytest.mark.parametrize("legacy", [False, True])
def test_a_file_of_more_tensors_than_the_limit_is_refused_before_loading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool) -> None:
    """1e6 views of one storage took minutes in torch.load and hours in the audit; the limit (lowered
    here to 50) is checked by the dry run of the pickle, before torch.load builds anything."""
    monkeypatch.setattr(limits, "MAX_TENSORS", 50)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    over, at = tmp_path / "over.pt", tmp_path / "at.pt"
    torch.save(many_views(51), over, _use_new_zipfile_serialization=not legacy)
    torch.save(many_views(50), at, _use_new_zipfile_serialization=not legacy)
    for command in (["report", "-q"], ["layers"], ["strip", "-o", str(tmp_path / "out.pt")]):
        one_error([*command, str(over)], ExitCode.BAD_INPUT, str(over),
                  "holds more than the 50 tensors one file may hold")
    assert loads == []
    result = runner.invoke(app, ["layers", str(at)])
    assert result.exit_code == 0 and "layer49.weight" in result.stdout, result.output


def test_a_safetensors_header_listing_more_tensors_than_the_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    monkeypatch.setattr(limits, "MAX_TENSORS", 50)
    save_file({f"t{i}": torch.ones(2) for i in range(51)}, str(tmp_path / "over.safetensors"))
    one_error(["layers", str(tmp_path / "over.safetensors")], ExitCode.BAD_INPUT,
              "holds 51 tensors, more than the 50 one file may hold")


def test_a_run_page_draws_per_checkpoint_figures_for_its_last_checkpoints_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of 1000 checkpoints took over 600 s to become a page, seconds per checkpoint drawing its
    four figures; now at most FIGURED_CHECKPOINTS are drawn, and the page says so."""
    from sninspect.render import html, plots

    drawn: list[str] = []
    real = plots.report_figures
    monkeypatch.setattr(plots, "report_figures", lambda report: drawn.append(report.checkpoint) or real(report))
    monkeypatch.setattr(html, "FIGURED_CHECKPOINTS", 2)
    state = small_state_dict()
    for step in range(5):
        torch.save({"state_dict": state, "step": step}, tmp_path / f"ck_{step}.pt")
    out = tmp_path / "run.html"
    result = runner.invoke(app, ["report", "-q", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [Path(p).name for p in drawn] == ["ck_3.pt", "ck_4.pt"]  # the last two, in run order
    text = out.read_text(encoding="utf-8")
    assert text.count("<img") == 2 + 4 * 2  # the run's two figures, four for each of the last two
    assert text.count("No figures for this checkpoint") == 3
    assert "the last 2 of 5 only" in text


# ----------------------------------------------------------------------------------------------
# --bound-tol against the memory budget


def conv_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 8, 3)))
    torch.save(model.state_dict(), path)
    return path


def test_a_bound_tol_over_the_budget_is_refused_naming_the_layer_the_estimate_and_what_fits(tmp_path: Path) -> None:
    from sninspect.audit.layers.operator import require_bound
    from sninspect.audit.memory import BOUND_TOLS, Budget, conv_bound_bytes
    from sninspect.errors import MemoryBudgetError
    from sninspect.linalg.conv_bounds import grid_sizes

    shape = (8, 3, 3, 3)
    budget = Budget(500 * 2**20, "--max-memory")
    with pytest.raises(MemoryBudgetError, match=r"needs ~7\.\d GiB, over the 500\.0 MiB budget") as caught:
        require_bound(shape, 1e-6, budget)
    found = re.search(r"bound_tol=(\S+) fits", str(caught.value))
    assert found, str(caught.value)
    suggested = float(found.group(1))
    fits = [t for t in BOUND_TOLS if conv_bound_bytes(shape, grid_sizes(shape[2:], t)) <= 500 * 2**20]
    assert suggested == fits[0] and suggested > 1e-6  # the finest of the ladder that fits
    result = runner.invoke(app, ["report", "-f", "json", str(conv_checkpoint(tmp_path / "c.pt")),
                                 "--bound-tol", "1e-6", "--max-memory", "500M"])
    assert result.exit_code == 0, result.output
    error = json.loads(result.stdout)["layers"][0]["error"]
    assert "--bound-tol 1e-06" in error and "over the 500.0 MiB budget" in error
    assert f"--bound-tol {suggested:g} fits" in error


@pytest.mark.slow
def test_the_budget_honours_the_address_space_limit(tmp_path: Path) -> None:
    """Under ``prlimit --as`` the default budget (MemAvailable) let a 7.8 GiB bound start and fail at its
    first large allocation (a multi-line allocator error as the layer's reason); the limit is now part of
    the budget, so the bound is refused before anything is allocated."""
    import resource
    import subprocess
    import sys

    path = conv_checkpoint(tmp_path / "c.pt")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    done = subprocess.run([sys.executable, "-m", "sninspect", "report", "-q", "-f", "json", str(path),
                           "--bound-tol", "1e-6", "--device", "cpu"], capture_output=True, text=True,
                          preexec_fn=limit, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)["layers"][0]["error"]
    assert "budget (available memory)" in error and "fits" in error and "allocat" not in error, error


def test_a_failed_allocation_is_one_line_naming_the_size() -> None:
    from sninspect.audit.layers.layer import failure_reason

    torch_words = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                   "you tried to allocate 989102600 bytes. Error code 12 (Cannot allocate memory)")
    reason = failure_reason(RuntimeError(torch_words))
    assert reason.startswith("ran out of memory: an allocation of 943.3 MiB failed") and "\n" not in reason
    assert "max_memory=SIZE" in reason
    assert failure_reason(MemoryError()).startswith("ran out of memory: an allocation failed")


def test_strip_of_a_dict_that_contains_itself_keeps_the_cycle(tmp_path: Path) -> None:
    """A cycle is legal in a pickle (weights_only reads it): the optimizer walk must not loop on it."""
    cycle = b"}" + _put(1_000_000) + _text("self") + _get(1_000_000) + b"s"
    path = checkpoint_with(tmp_path / "cycle.pt", cycle)
    result = runner.invoke(app, ["strip", str(path), "-o", str(tmp_path / "out.pt")])
    assert result.exit_code == 0, result.output
    extra = torch.load(tmp_path / "out.pt", weights_only=True)["extra"]
    assert extra["self"] is extra
    result = runner.invoke(app, ["strip", str(path), "-o", str(tmp_path / "out.safetensors")])
    assert result.exit_code == 0 and "left out: extra" in result.stderr, result.output
