"""Fuzz: state dicts from a grammar of odd names, dtypes, shapes, nesting and SN layer combinations,
saved to a file and run through the CLI (``report``, ``layers``, ``check``, ``strip --dry-run``), and
monitor logs whose record has one value replaced by a hostile one (huge, non-finite, deep) or is cut:
never an internal error (exit 5), never a traceback. Derandomized and bounded (40 examples each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import spectral_norm
from typer.testing import CliRunner

from sninspect.cli.main import app
from sninspect.errors import ExitCode

runner = CliRunner()

SEGMENTS = ["a", "0", "12", "net", "module", "_orig_mod", "conv", "fc", "emb", "bn", "norm", "x y", "é",
            "Δ", "weight", "w-1", "block.2"]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool,
          torch.complex64]
SHAPES = [(0,), (3,), (4, 3), (0, 3), (3, 0), (1, 1), (2, 3, 3, 3), (2, 1, 1, 2, 2), (1, 2, 2, 2, 2), (3, 2, 1)]


def tensor(dtype: torch.dtype, shape: tuple[int, ...], fill: str) -> torch.Tensor:
    base = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape) + sum(shape)))
    if fill == "nan" and base.numel():
        base.view(-1)[0] = float("nan")
    elif fill == "zero":
        base.zero_()
    if dtype == torch.bool:
        return base > 0
    if not dtype.is_floating_point and not dtype.is_complex:
        return (base.nan_to_num() * 3).to(dtype) if dtype != torch.uint8 else base.nan_to_num().abs().to(dtype)
    return base.to(dtype)


names = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(".".join)
plain_entry = st.tuples(names, st.sampled_from(DTYPES), st.sampled_from(SHAPES),
                        st.sampled_from(["randn", "nan", "zero"]))


@st.composite
def sn_layer(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    """One SN layer in a dialect's keys, with its vectors right, of the wrong length, NaN, or flipped."""
    module = draw(names)
    out, inp = draw(st.sampled_from([(4, 3), (3, 3), (1, 5), (2, 12)]))
    spatial = draw(st.sampled_from([(), (3, 3)]))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.float64, torch.complex64]))
    weight = tensor(dtype, (out, inp // max(1, len(spatial) and 1), *spatial), draw(st.sampled_from(
        ["randn", "randn", "nan", "zero"])))
    cols = weight[0].numel() if weight.dim() else 1
    u_len = draw(st.sampled_from([out, out, out + 1, 0]))
    v_len = draw(st.sampled_from([cols, cols, cols - 1]))
    u = tensor(torch.float32, (u_len,), draw(st.sampled_from(["randn", "nan"])))
    v = tensor(torch.float32, (max(v_len, 0),), "randn")
    if draw(st.booleans()):
        u = -u  # σ̂ ≤ 0 for about half of them
    style = draw(st.sampled_from(["torch", "parametrize", "mimicry"]))
    if style == "torch":
        return {f"{module}.weight_orig": weight, f"{module}.weight_u": u, f"{module}.weight_v": v}
    if style == "parametrize":
        p = f"{module}.parametrizations.weight"
        return {f"{p}.original": weight, f"{p}.0._u": u, f"{p}.0._v": v}
    return {f"{module}.weight": weight, f"{module}.sn_u": u.reshape(1, -1)}


@st.composite
def checkpoint(draw: st.DrawFn) -> object:
    state: dict[str, torch.Tensor] = {}
    for layer in draw(st.lists(sn_layer(), max_size=3)):
        state.update(layer)
    for name, dtype, shape, fill in draw(st.lists(plain_entry, max_size=4)):
        state[name] = tensor(dtype, shape, fill)
    if draw(st.booleans()):
        state["bn.weight"] = torch.ones(draw(st.sampled_from([0, 2, 3])))
        state["bn.running_mean"] = torch.zeros(3)
        state["bn.running_var"] = tensor(torch.float32, (draw(st.sampled_from([0, 3])),), "randn").abs()
    wrap = draw(st.sampled_from(["flat", "state_dict", "pair", "deep"]))
    if wrap == "state_dict":
        return {"state_dict": state, "epoch": 3}
    if wrap == "pair":
        return {"netD": state, "netG": dict(state), "step": torch.tensor(5)}
    if wrap == "deep":
        return {"a": {"b": {"c": state}}}
    return state


COMMANDS = (
    ["report", "-q", "--device", "cpu", "--all"],
    ["report", "-q", "--device", "cpu", "-f", "json"],
    ["layers"],
    ["check", "-q", "--device", "cpu"],
)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(container=checkpoint())
def test_fuzz_never_internal_error(tmp_path_factory, container: object) -> None:  # type: ignore[no-untyped-def]
    folder: Path = tmp_path_factory.mktemp("fuzz")
    path = folder / "ck.pt"
    torch.save(container, path)
    runs = [[*cmd, str(path)] for cmd in COMMANDS]
    runs.append(["strip", str(path), "-o", str(folder / "out.pt"), "--dry-run"])
    for args in runs:
        result = runner.invoke(app, args)
        assert result.exit_code != ExitCode.INTERNAL, (args, result.output)
        assert "Traceback" not in result.output, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)


# ----------------------------------------------------------------------------------------------
# .pt2 archives: real exports with their JSON records and tensor records mutated


def _pt2_sources(folder: Path) -> list[Path]:
    import sys

    from torch import nn

    sys.path.insert(0, str(Path(__file__).parent))
    from graphnets import export

    torch.manual_seed(0)
    return [
        export(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), torch.randn(1, 4), folder / "lin.pt2"),
        export(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten()),
               torch.randn(1, 2, 4, 4), folder / "conv.pt2"),
    ]


SIZES = [0, 1, 3, 5, 2**31, 2**48 + 1, 2**70, -1, "x", None, [1], {"as_int": 1}, 1.5, True]
TARGETS = ["torch.ops.aten.relu.__setattr__", "torch.ops.aten.add.out", "torch.ops.aten.mul.Tensor", "os.system",
           "torch.ops.aten.relu", "torch.ops.aten.ones.default", "torch.ops.aten.relu.default",
           "torch.ops.aten.empty.memory_format", "torch.ops.aten.linear.default.__call__"]
MUTATIONS = ["drop_value", "value_size", "config_size", "config_stride", "target", "drop_input", "dtype",
             "empty_record", "cut_record", "rename_input", "swap_nodes", "drop_node", "input_size"]


def _mutate(members: dict[str, bytes], kind: str, pick: int, value: object) -> None:
    import json

    model = next(n for n in members if n.endswith("models/model.json"))
    config_name = next(n for n in members if n.endswith("model_weights_config.json"))
    program, config = json.loads(members[model]), json.loads(members[config_name])
    graph = program["graph_module"]["graph"]
    values, nodes, entries = graph["tensor_values"], graph["nodes"], list(config["config"].values())
    node, entry = nodes[pick % len(nodes)], entries[pick % len(entries)]
    meta = entry["tensor_meta"]
    value_meta = list(values.values())[pick % len(values)]
    record = config_name.rsplit("/", 1)[0] + "/" + entry["path_name"]
    if kind == "drop_value":
        values.pop(list(values)[pick % len(values)])
    elif kind == "value_size" and value_meta["sizes"]:
        value_meta["sizes"][pick % len(value_meta["sizes"])] = {"as_int": value}
    elif kind == "config_size":
        meta["sizes"][pick % len(meta["sizes"])] = {"as_int": value}
    elif kind == "config_stride":
        meta["strides"][pick % len(meta["strides"])] = {"as_int": 0 if value == 5 else value}
    elif kind == "target":
        node["target"] = TARGETS[pick % len(TARGETS)]
    elif kind == "drop_input" and node["inputs"]:
        node["inputs"].pop(pick % len(node["inputs"]))
    elif kind == "dtype":
        meta["dtype"] = value
    elif kind == "empty_record":
        members[record] = b""
    elif kind == "cut_record":
        members[record] = members[record][: len(members[record]) // 2]
    elif kind == "rename_input" and node["inputs"]:
        node["inputs"][0]["arg"] = {"as_tensor": {"name": "nowhere"}}
    elif kind == "swap_nodes" and len(nodes) > 1:
        nodes[0], nodes[-1] = nodes[-1], nodes[0]
    elif kind == "drop_node":
        nodes.remove(node)
    elif kind == "input_size":
        values[graph["inputs"][-1]["as_tensor"]["name"]]["sizes"][0] = {"as_int": value}
    members[model] = json.dumps(program).encode()
    members[config_name] = json.dumps(config).encode()


_PT2: list[Path] = []

mutation = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 50), st.sampled_from(SIZES))


# Monitor logs: a real record with one value replaced by something hostile, or the line cut or bent


RAW_VALUES = ["9" * 400, "-" + "9" * 400, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-1", "0", "1.5",
              str(2**63), "true", "null", '"x"', "[]", "{}", "[" * 3000 + "]" * 3000, '{"a":' * 40 + "1" + "}" * 40,
              "9" * 5000, '"\\ud800"', '"' + "é" * 300 + '"']


def mutated(line: str, path: list[int], raw: str) -> str:
    """``line`` (a JSON object) with the value reached by ``path`` (each number picks a child, modulo
    their count; the walk stops at a leaf) written as the raw JSON text ``raw``."""
    record = json.loads(line)
    parent: Any = None
    key: Any = None
    value: Any = record
    for step in path:
        if not isinstance(value, (dict, list)) or not value:
            break
        children = list(value.keys()) if isinstance(value, dict) else list(range(len(value)))
        parent, key = value, children[step % len(children)]
        value = parent[key]
    if parent is None:
        return raw
    parent[key] = "@@RAW@@"
    return json.dumps(record).replace('"@@RAW@@"', raw)


@pytest.fixture(scope="module")
def log_line(tmp_path_factory: pytest.TempPathFactory) -> str:
    from sninspect.monitor import SNMonitor

    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(1, 2, 3)), nn.Flatten(), spectral_norm(nn.Linear(8, 1)))
    log = tmp_path_factory.mktemp("log") / "run.jsonl"
    SNMonitor(model, every=1, log=log, rules={"max_sigma": None, "max_cos_error": None}).step(1)
    return log.read_text().splitlines()[0]


LOG_COMMANDS = (["report", "-q"], ["report", "-q", "-f", "json"], ["report", "-q", "-f", "csv"], ["check", "-q"])


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(source=st.integers(0, 1), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_pt2_never_internal_error(tmp_path_factory, source: int, mutations: list) -> None:  # type: ignore[no-untyped-def]
    """Mutated .pt2 archives through ``graph``, ``layers`` and ``report``: a bound, or one line with
    exit 2, 3 or 4; never an internal error or a traceback."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from graphnets import rewrite_archive

    if not _PT2:
        _PT2.extend(_pt2_sources(tmp_path_factory.mktemp("pt2")))
    folder: Path = tmp_path_factory.mktemp("fuzzpt2")
    path = rewrite_archive(_PT2[source], folder / "m.pt2",
                           lambda members: [_mutate(members, *m) for m in mutations])  # type: ignore[func-returns-value]
    for args in (["graph", "-q", "--starts", "1", "--steps", "2", "--max-memory", "2G"], ["layers"],
                 ["report", "-q", "--device", "cpu"]):
        result = runner.invoke(app, [*args, str(path)])
        assert result.exit_code != ExitCode.INTERNAL, (args, mutations, result.output)
        assert "Traceback" not in result.output, (args, mutations, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        if result.exit_code != 0:
            assert len(result.output.strip().splitlines()) == 1, (args, mutations, result.output)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.integers(0, 40), min_size=0, max_size=7), raw=st.sampled_from(RAW_VALUES),
       cut=st.one_of(st.none(), st.integers(1, 2000)), second=st.booleans())
def test_fuzz_monitor_logs_never_internal_error(tmp_path_factory, log_line: str, path: list[int],  # type: ignore[no-untyped-def]
                                                raw: str, cut: int | None, second: bool) -> None:
    line = mutated(log_line, path, raw)
    if cut is not None:
        line = line[: cut % max(1, len(line))]
    text = (log_line + "\n" if second else "") + line + "\n"
    log = tmp_path_factory.mktemp("fuzzlog") / "run.jsonl"
    log.write_text(text, encoding="utf-8", errors="surrogatepass")
    for command in LOG_COMMANDS:
        result = runner.invoke(app, [*command, str(log)])
        assert result.exit_code != ExitCode.INTERNAL, (command, line[:300], result.output)
        assert "Traceback" not in result.output, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.exception)
