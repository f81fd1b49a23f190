"""Issue 27 on the .pt2 surface: every shape the graph bound reads is recorded and what the graph
computes, the result is checked against itself before it is printed, operator targets are matched
against a fixed table of exact overloads, and an archive's size claims and memory go through the same
checks and budget as a checkpoint's. Archives are crafted by JSON edits of real exports."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graphnets import edit_json, export, rewrite_archive  # noqa: E402

from sninspect.audit.graph import analysis as graph_module  # noqa: E402
from sninspect.audit.graph import interpret as graph_eval  # noqa: E402
from sninspect.audit.graph.analysis import GraphOptions, analyze_graph  # noqa: E402
from sninspect.audit.graph.rules import Step  # noqa: E402
from sninspect.cli.main import app  # noqa: E402
from sninspect.errors import InputError, MemoryBudgetError, UsageError  # noqa: E402
from sninspect.io.exported import load_exported  # noqa: E402

runner = CliRunner()
MODEL = "models/model.json"
WEIGHTS = "model_weights_config.json"


def one_line(result, code: int) -> str:  # noqa: ANN001
    """The CLI's stderr line, after checking the exit code and that there is one line, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output and "internal error" not in result.output, lines
    return lines[0]


class Broadcast(nn.Module):
    """y = relu(x expanded from (1, 1) to (1, 16)): Lipschitz constant √16 = 4 exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.expand(1, 16))


def _linear(tmp_path: Path, size: int = 4) -> Path:
    torch.manual_seed(0)
    return export(nn.Sequential(nn.Linear(size, size, bias=False), nn.ReLU()), torch.randn(1, size),
                  tmp_path / "lin.pt2")


def _drop_value(name: str):  # noqa: ANN202
    return lambda program: program["graph_module"]["graph"]["tensor_values"].pop(name)


def test_a_shape_missing_from_the_record_is_an_error_naming_the_node(tmp_path: Path) -> None:
    """The red-team case: with the expand's recorded shape removed its broadcast was counted as 1 copy,
    printing upper 1.0 beside lower 4.0 (true norm 4), exit 0."""
    source = export(Broadcast(), torch.randn(1, 1), tmp_path / "b.pt2")
    whole = analyze_graph(source, GraphOptions(starts=2, steps=3))
    assert whole.upper == pytest.approx(4.0) and whole.lower <= whole.upper
    assert whole.lower == pytest.approx(4.0, rel=1e-6)
    cut = edit_json(source, tmp_path / "cut.pt2", MODEL, _drop_value("expand"))
    with pytest.raises(InputError, match="node 'expand'.*'expand' has no recorded shape"):
        analyze_graph(cut, GraphOptions(lower=False))
    line = one_line(runner.invoke(app, ["graph", str(cut), "--starts", "2", "--steps", "3", "-q"]), 3)
    assert "'expand'" in line and "upper" not in line


def test_a_recorded_shape_that_is_not_computed_is_an_error_naming_the_node(tmp_path: Path) -> None:
    source = export(Broadcast(), torch.randn(1, 1), tmp_path / "b.pt2")

    def shrink(program: dict) -> None:
        program["graph_module"]["graph"]["tensor_values"]["expand"]["sizes"][1]["as_int"] = 1

    with pytest.raises(InputError, match=r"node 'expand'.*gives shape \[1, 16\] where the archive records \[1, 1\]"):
        analyze_graph(edit_json(source, tmp_path / "lie.pt2", MODEL, shrink), GraphOptions(lower=False))


def test_a_lower_bound_above_the_upper_is_an_error_naming_the_node(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that under-counts (simulated: every step's bound quartered) is caught by the check of the
    result against the search's certified lower bound: an error naming the output node, no bound."""
    source = export(Broadcast(), torch.randn(1, 1), tmp_path / "b.pt2")
    real = graph_module.bound_step

    def quartered(*args, **kwargs) -> Step:  # noqa: ANN002, ANN003
        step = real(*args, **kwargs)
        return Step(step.rule, None, None, step.bound / 4, step.chain_factor)

    monkeypatch.setattr(graph_module, "bound_step", quartered)
    with pytest.raises(InputError, match=r"output node 'relu'.*lower bound 4.* exceeds the upper bound 0.25\b"):
        analyze_graph(source, GraphOptions(starts=2, steps=3))
    line = one_line(runner.invoke(app, ["graph", str(source), "--starts", "2", "--steps", "3", "-q"]), 3)
    assert "'relu'" in line and "exceeds" in line
    assert analyze_graph(source, GraphOptions(lower=False)).upper == pytest.approx(0.25)  # unchecked without a lower


def test_a_jacobian_norm_above_the_upper_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search's ‖J(x)v‖ is printed beside the bounds: one above the upper bound (simulated) is a
    contradiction too; within the 1e-9 rounding allowance it is not."""
    from dataclasses import replace

    source = _linear(tmp_path)
    real = graph_module.empirical_lower
    upper = analyze_graph(source, GraphOptions(lower=False)).upper
    for scale, refused in ((1.01, True), (1 + 1e-12, False)):
        def inflated(*args, scale=scale, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            found = real(*args, **kwargs)
            return replace(found, lower=min(found.lower, upper), jacobian=upper * scale)

        monkeypatch.setattr(graph_module, "empirical_lower", inflated)
        if refused:
            with pytest.raises(InputError, match="Jacobian norm .* exceeds the upper bound .* at output node 'relu'"):
                analyze_graph(source, GraphOptions(starts=1, steps=2))
        else:
            assert analyze_graph(source, GraphOptions(starts=1, steps=2)).empirical.jacobian > upper


def test_a_factor_below_its_own_lower_end_is_an_error_naming_the_node(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = _linear(tmp_path)
    real = graph_module.bound_step

    def inverted(*args, **kwargs) -> Step:  # noqa: ANN002, ANN003
        step = real(*args, **kwargs)
        if step.factor_lower is None:
            return step
        return Step(step.rule, step.factor_lower * 0.5, step.factor_lower, step.bound, step.chain_factor)

    monkeypatch.setattr(graph_module, "bound_step", inverted)
    with pytest.raises(InputError, match=r"node 'linear'.*lower end .* exceeds its upper end"):
        analyze_graph(source, GraphOptions(lower=False))


def _insert_node(target: str, args: list[dict]):  # noqa: ANN202
    def change(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"].insert(0, {
            "target": target, "name": "evil", "metadata": {}, "outputs": [],
            "inputs": [{"name": f"a{i}", "arg": arg, "kind": 1} for i, arg in enumerate(args)]})
    return change


def test_a_setattr_target_is_refused_and_the_process_is_untouched(tmp_path: Path) -> None:
    """``torch.ops.aten.relu.__setattr__("default", "pwned")`` was resolved by getattr and run: through
    analyze_graph() it replaced torch.ops.aten.relu.default in the caller's process."""
    source = _linear(tmp_path)
    packet = torch.ops.aten.relu
    before = packet.default
    attributes = dict(vars(packet))
    strings = [{"as_string": "default"}, {"as_string": "pwned"}]
    for target in ("torch.ops.aten.relu.__setattr__", "torch.ops.aten.relu.__delattr__",
                   "torch.ops.aten.relu.__class__", "torch.ops.aten.relu.__init__", "torch.ops.aten.add.out",
                   "torch.ops.aten.relu.default.__call__", "torch.ops.aten.relu", "builtins.exec"):
        evil = edit_json(source, tmp_path / "evil.pt2", MODEL, _insert_node(target, strings[: 1 if "del" in target
                                                                                            else 2]))
        with pytest.raises(InputError, match="is not one sninspect can bound or run"):
            analyze_graph(evil, GraphOptions(lower=False))
        line = one_line(runner.invoke(app, ["graph", str(evil), "--no-lower"]), 3)
        assert target[:40] in line
        assert torch.ops.aten.relu.default is before, target
        assert dict(vars(packet)) == attributes, target
    assert torch.equal(torch.ops.aten.relu.default(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert analyze_graph(source, GraphOptions(lower=False)).upper > 0


def test_division_with_rounding_on_the_input_is_refused(tmp_path: Path) -> None:
    """div.Tensor_mode (floor / trunc) is a step function: the scale rule of div does not hold for it."""
    class Halve(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.div(x, 2.0, rounding_mode="floor")

    source = export(Halve(), torch.randn(1, 4), tmp_path / "floor.pt2")
    program = json.loads(next(v for k, v in _members(source).items() if k.endswith(MODEL)))
    assert any(n["target"].endswith("_mode") for n in program["graph_module"]["graph"]["nodes"])
    with pytest.raises(InputError, match=r"div\.\w*_mode is not one sninspect can bound"):
        analyze_graph(source, GraphOptions(lower=False))


def test_a_nan_argument_is_refused_naming_the_node(tmp_path: Path) -> None:
    """A LeakyReLU whose slope is edited to NaN (Python's JSON reads the literal) outputs NaN, yet its
    rule max(1, |slope|) gave 1: a bound printed for a function that is not one."""
    source = export(nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(0.2)), torch.randn(1, 4), tmp_path / "leaky.pt2")

    def nan_slope(program: dict) -> None:
        node = next(n for n in program["graph_module"]["graph"]["nodes"] if "leaky_relu" in n["target"])
        node["inputs"][1]["arg"] = {"as_float": float("nan")}

    with pytest.raises(InputError, match="node 'leaky_relu'.*an argument is NaN"):
        analyze_graph(edit_json(source, tmp_path / "nan.pt2", MODEL, nan_slope), GraphOptions(lower=False))


def _members(path: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_overload_table_is_exact(tmp_path: Path) -> None:
    table = graph_eval._overloads()
    assert table["torch.ops.aten.relu.default"] is torch.ops.aten.relu.default
    assert table["torch.ops.aten.add.Tensor"] is torch.ops.aten.add.Tensor
    assert not [t for t in table if "out" in t.rsplit(".", 1)[1] or "__" in t]
    assert all(t.count(".") == 4 for t in table)


def _stride0(entry_sizes: list[int], strides: list[int], empty: bool = False):  # noqa: ANN202
    def change(config: dict) -> None:
        entry = next(iter(config["config"].values()))
        entry["tensor_meta"]["sizes"] = [{"as_int": n} for n in entry_sizes]
        entry["tensor_meta"]["strides"] = [{"as_int": n} for n in strides]
    return change


def _emptied(members: dict[str, bytes], size: int) -> None:
    name = next(n for n in members if n.endswith(WEIGHTS))
    config = json.loads(members[name])
    entry = next(iter(config["config"].values()))
    entry["tensor_meta"]["sizes"] = [{"as_int": size}, {"as_int": size}]
    entry["tensor_meta"]["strides"] = [{"as_int": size}, {"as_int": 1}]
    members[name.rsplit("/", 1)[0] + "/" + entry["path_name"]] = b""
    members[name] = json.dumps(config).encode()


COMMANDS = (["layers"], ["report", "-q"], ["graph", "--no-lower", "-q"])


def test_size_claims_are_checked_before_allocation(tmp_path: Path) -> None:
    """A 7 kB archive whose weight is a stride-0 30000² view took 3.7 GB even for `layers`; an empty
    record claiming 20000² took 1.8-4.8 GB; sizes of 2^70 ended in exit 5. Each is refused from the
    config alone: one line, exit 3."""
    source = _linear(tmp_path)
    cases = {
        "stride0": (edit_json(source, tmp_path / "s0.pt2", WEIGHTS, _stride0([30000, 30000], [0, 0])),
                    "made from nothing"),
        "empty": (rewrite_archive(source, tmp_path / "e.pt2", lambda m: _emptied(m, 20000)), "empty record"),
        "huge_config": (edit_json(source, tmp_path / "h.pt2", WEIGHTS, _stride0([2**70, 4], [4, 1])),
                        "more than any tensor"),
        "huge_value": (edit_json(source, tmp_path / "v.pt2", MODEL, lambda p: [
            v["sizes"].__setitem__(0, {"as_int": 2**70})
            for v in p["graph_module"]["graph"]["tensor_values"].values()]), "more than any tensor"),
        "huge_stride_empty": (edit_json(source, tmp_path / "z.pt2", WEIGHTS, _stride0([0, 4], [2**70, 1])),
                              "more than any tensor"),
    }
    for name, (path, why) in cases.items():
        with pytest.raises(InputError, match=why):
            load_exported(path)
        for command in COMMANDS:
            line = one_line(runner.invoke(app, [*command, str(path)]), 3)
            assert why in line, (name, command, line)
    small = rewrite_archive(source, tmp_path / "small.pt2", lambda m: _emptied(m, 100))  # 40 kB of zeros: fine
    assert load_exported(small).state_dict["0.weight"].abs().sum() == 0


def test_a_dtype_code_of_the_wrong_kind_is_one_line(tmp_path: Path) -> None:
    """A dtype code written as a list was looked up in a dict (TypeError: unhashable; exit 5)."""
    source = _linear(tmp_path)
    for code in ([1], {"a": 1}, "7", 7.0):
        def change(config: dict, code: object = code) -> None:
            next(iter(config["config"].values()))["tensor_meta"]["dtype"] = code

        path = edit_json(source, tmp_path / "dtype.pt2", WEIGHTS, change)
        for command in COMMANDS:
            assert "dtype code" in one_line(runner.invoke(app, [*command, str(path)]), 3), (code, command)


def test_compressed_records_unpacking_to_more_than_the_file_are_refused(tmp_path: Path) -> None:
    """Two 1 MiB weights of zeros deflate to a few kB each: each record claims less than the 1.2 MB file
    (an incompressible record of 1.2 MB stored beside them), together more; refused before reading."""
    import random
    import zipfile

    torch.manual_seed(0)
    source = export(nn.Sequential(nn.Linear(512, 512, bias=False), nn.ReLU(), nn.Linear(512, 512, bias=False)),
                    torch.randn(1, 512), tmp_path / "two.pt2")
    members = _members(source)
    padding = next(n for n in members if "sample_inputs" in n)
    members[padding] = random.Random(0).randbytes(1_200_000)
    target = tmp_path / "deflated.pt2"
    with zipfile.ZipFile(target, "w") as out:
        for name, data in members.items():
            weight = "/data/weights/weight" in name
            out.writestr(name, bytes(len(data)) if weight else data,
                         zipfile.ZIP_DEFLATED if weight else zipfile.ZIP_STORED)
    assert target.stat().st_size < 2 * 512 * 512 * 4
    with pytest.raises(InputError, match="unpack to 2097152 bytes in total"):
        load_exported(target)
    assert "in total" in one_line(runner.invoke(app, ["layers", str(target)]), 3)


def test_max_memory_is_honoured_for_pt2_by_layers_report_and_graph(tmp_path: Path) -> None:
    """A real 256x256 float32 weight (256 KiB): within 100K of budget nothing is built; the refusal
    names the size; with room, the same commands work."""
    source = _linear(tmp_path, 256)
    for command in COMMANDS:
        line = one_line(runner.invoke(app, [*command, str(source), "--max-memory", "100K"]), 3)
        assert "budget (--max-memory)" in line and "needs ~" in line, (command, line)
        assert runner.invoke(app, [*command, str(source), "--max-memory", "1G"]).exit_code == 0, command
    with pytest.raises(MemoryBudgetError):
        load_exported(source, budget=graph_module.memory_budget(100_000))


def test_the_graph_audit_is_put_to_the_budget(tmp_path: Path) -> None:
    """A folded 2048x4096 factory and the sum it broadcasts into: each value passes the per-value
    check, but the audit's estimate (every value in float64, 64 MiB each, the live ones twice) is over
    a 100M budget: refused before folding, one line, exit 3; within 1G it runs."""
    class Shift(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.ones(2048, 4096)

    source = export(Shift(), torch.randn(1, 4096), tmp_path / "shift.pt2")
    with pytest.raises(MemoryBudgetError, match="the graph audit needs"):
        analyze_graph(load_exported(source), GraphOptions(lower=False, max_memory=100 * 2**20))
    line = one_line(runner.invoke(app, ["graph", str(source), "--no-lower", "--max-memory", "100M"]), 3)
    assert "needs ~" in line
    graph = load_exported(source)
    assert graph_module.graph_bytes(graph, graph_eval.check_shapes(graph), lower=False) >= 3 * 2048 * 4096 * 8
    assert runner.invoke(app, ["graph", str(source), "--no-lower", "--max-memory", "1G", "-q"]).exit_code == 0


def test_a_failed_allocation_while_folding_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An allocation the estimate did not foresee fails inside constant folding (was exit 5)."""
    source = _linear(tmp_path)

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 7200000000 bytes.")

    monkeypatch.setattr(graph_module, "fold_constants", fail)
    with pytest.raises(MemoryBudgetError, match="could not allocate"):
        analyze_graph(source, GraphOptions(lower=False))
    assert "could not allocate" in one_line(runner.invoke(app, ["graph", str(source), "--no-lower"]), 3)

    def memory_error(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise MemoryError()

    monkeypatch.setattr(graph_module, "fold_constants", memory_error)
    assert "could not allocate" in one_line(runner.invoke(app, ["graph", str(source), "--no-lower"]), 3)


def test_seed_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    source = _linear(tmp_path)
    for seed in (str(2**70), str(2**63 - 1), str(-(2**63) - 1)):
        result = runner.invoke(app, ["graph", str(source), "--seed", seed, "--starts", "1", "--steps", "1"])
        assert result.exit_code == 2 and "Traceback" not in result.output, (seed, result.output)
    with pytest.raises(UsageError, match="seed"):
        GraphOptions(seed=2**70)
    edge = analyze_graph(source, GraphOptions(seed=2**63 - 2, starts=1, steps=1))
    assert edge.lower is not None and edge.lower <= edge.upper


PEAK_PROBE = """
import gc, re, sys, torch
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from torch import nn
from graphnets import export
from sninspect.audit.graph.analysis import GraphOptions, analyze_graph, graph_bytes
from sninspect.audit.graph.interpret import check_shapes
from sninspect.io.exported import load_exported
def status(field):  # kB -> bytes; VmHWM is this image's own peak
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                    nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 16 * 16, 1))
graph = load_exported(export(net, torch.randn(2, 3, 32, 32), Path(sys.argv[1]) / "peak.pt2"))
estimate = graph_bytes(graph, check_shapes(graph), lower=True)
torch.linalg.cholesky_ex(torch.eye(4, dtype=torch.complex128))  # LAPACK loaded before the baseline
gc.collect()
try:
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
except OSError:
    pass
before = status("VmHWM")
analyze_graph(graph, GraphOptions(starts=2, steps=5))
print(status("VmHWM") - before, estimate)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak RSS")
def test_graph_estimate_covers_the_measured_peak(tmp_path: Path) -> None:
    """The guard's estimate of the graph audit (fold, rules, lower-bound search) is at least the peak RSS
    growth it causes in a fresh process (measured 37 MB against 45 MB estimated)."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(tmp_path), str(Path(__file__).resolve().parents[2])],
                          capture_output=True, text=True, timeout=600, check=True)
    growth, estimate = (int(v) for v in done.stdout.split()[-2:])
    assert growth > 0
    assert estimate >= growth, (growth, estimate)


def _brute_cover(n: int, m: int, k: int, s: int, p: int, d: int) -> int:
    """Most windows sharing an input, window by window and tap by tap (the oracle)."""
    cover = [0] * n
    for o in range(m):
        for j in range(k):
            if 0 <= o * s - p + j * d < n:
                cover[o * s - p + j * d] += 1
    return max(cover, default=0)


def test_max_pool_factor_matches_the_window_count_and_is_fast() -> None:
    """The max-pool factor √(most windows sharing an input), now one vector step per tap (a Python loop
    over windows × taps took minutes at 16384² with a kernel of the input's size)."""
    import random
    import time

    from sninspect.linalg.operators import max_pool_lipschitz

    rng = random.Random(0)
    for _ in range(300):
        n, k, s, d = rng.randint(1, 12), rng.randint(1, 5), rng.randint(1, 3), rng.randint(1, 3)
        p = rng.randint(0, k // 2)
        m = (n + 2 * p - d * (k - 1) - 1) // s + 1
        if m < 1:
            continue
        expected = _brute_cover(n, m, k, s, p, d)
        assert max_pool_lipschitz([n], [m], [k], [s], [p], [d]) == pytest.approx(math.sqrt(expected)), (n, k, s, p, d)
    began = time.perf_counter()
    assert max_pool_lipschitz([16384], [1], [16384], [1], [0], [1]) == 1.0
    assert max_pool_lipschitz([16384], [8193], [8192], [1], [0], [1]) == pytest.approx(math.sqrt(8192))
    assert time.perf_counter() - began < 30
    with pytest.raises(ValueError):
        max_pool_lipschitz([4], [2], [2], [0], [0], [1])
