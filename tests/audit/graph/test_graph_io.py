""".pt2 archives are read as data: hostile archives are refused without running anything; the CLI's
``graph`` command (formats, exit codes, ``--model``)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import hostile  # noqa: E402
from graphnets import export, rewrite_archive  # noqa: E402

from sninspect.audit.graph.analysis import GraphOptions, analyze_graph  # noqa: E402
from sninspect.cli.main import app  # noqa: E402
from sninspect.errors import InputError, UnsafeCheckpointError  # noqa: E402
from sninspect.io.exported import load_exported  # noqa: E402
from sninspect.io.load import load_checkpoint  # noqa: E402

runner = CliRunner()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(4, 5)), nn.ReLU(), nn.Linear(5, 1))


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    return export(_net(), torch.randn(1, 4), tmp_path / "net.pt2")


_rewrite = rewrite_archive  # copy a zip, letting change(members) edit the {name: bytes} dict first


def _config(members: dict[str, bytes], folder: str) -> tuple[str, dict]:
    name = next(n for n in members if n.endswith(f"data/{folder}/model_{folder}_config.json"))
    return name, json.loads(members[name])


def _pickled_weight(payload: object):  # noqa: ANN202
    def change(members: dict[str, bytes]) -> None:
        name, config = _config(members, "weights")
        entry = next(iter(config["config"].values()))
        entry["use_pickle"] = True
        record = name.rsplit("/", 1)[0] + "/" + entry["path_name"]
        import io

        buffer = io.BytesIO()
        torch.save({"w": payload}, buffer)
        members[record] = buffer.getvalue()
        members[name] = json.dumps(config).encode()
    return change


def test_pickled_weight_running_code_is_refused(archive: Path, tmp_path: Path) -> None:
    for payload_name, payload_class in hostile.PAYLOADS.items():
        bad = _rewrite(archive, tmp_path / "bad.pt2", _pickled_weight(payload_class(hostile.sentinel(tmp_path))))
        with pytest.raises(UnsafeCheckpointError, match="pickled object"):
            load_exported(bad)
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint(bad)  # report/layers take the same road
        result = runner.invoke(app, ["graph", str(bad), "--no-lower"])
        assert result.exit_code == 3, payload_name
        assert len(result.output.strip().splitlines()) == 1 and "refused" in result.output
        assert not hostile.sentinel(tmp_path).exists(), payload_name


def test_pickled_constant_and_custom_objects_are_refused(archive: Path, tmp_path: Path) -> None:
    def constant(members: dict[str, bytes]) -> None:
        name, config = _config(members, "constants")
        config["config"]["evil"] = {"path_name": "constant_0", "use_pickle": True, "tensor_meta": None}
        members[name.rsplit("/", 1)[0] + "/constant_0"] = pickle.dumps(hostile._System(hostile.sentinel(tmp_path)))
        members[name] = json.dumps(config).encode()

    with pytest.raises(UnsafeCheckpointError):
        load_exported(_rewrite(archive, tmp_path / "c.pt2", constant))

    def custom(members: dict[str, bytes]) -> None:
        model = next(n for n in members if n.endswith("models/model.json"))
        program = json.loads(members[model])
        program["graph_module"]["graph"]["custom_obj_values"] = {"obj": {"name": "x", "class_fqn": "os.system"}}
        members[model] = json.dumps(program).encode()

    with pytest.raises(UnsafeCheckpointError, match="custom"):
        load_exported(_rewrite(archive, tmp_path / "o.pt2", custom))
    assert not hostile.sentinel(tmp_path).exists()


def test_hostile_sample_inputs_are_never_read(archive: Path, tmp_path: Path) -> None:
    def sample(members: dict[str, bytes]) -> None:
        name = next(n for n in members if "sample_inputs" in n)
        members[name] = pickle.dumps(hostile._System(hostile.sentinel(tmp_path)))

    graph = load_exported(_rewrite(archive, tmp_path / "s.pt2", sample))
    assert graph.shapes[graph.inputs[0]] == (1, 4)
    assert not hostile.sentinel(tmp_path).exists()


def test_malformed_archives_are_one_line_errors(archive: Path, tmp_path: Path) -> None:
    def grow(members: dict[str, bytes]) -> None:  # a tensor view reaching past its record
        name, config = _config(members, "weights")
        entry = next(iter(config["config"].values()))
        entry["tensor_meta"]["sizes"][0]["as_int"] = 10_000
        members[name] = json.dumps(config).encode()

    def symbolic(members: dict[str, bytes]) -> None:
        model = next(n for n in members if n.endswith("models/model.json"))
        program = json.loads(members[model])
        values = program["graph_module"]["graph"]["tensor_values"]
        next(iter(values.values()))["sizes"][0] = {"as_expr": {"expr_str": "s0"}}
        members[model] = json.dumps(program).encode()

    def not_json(members: dict[str, bytes]) -> None:
        members[next(n for n in members if n.endswith("models/model.json"))] = b"{" * 100_000

    cases = {"grow": grow, "symbolic": symbolic, "not_json": not_json}
    for name, change in cases.items():
        with pytest.raises(InputError) as caught:
            load_exported(_rewrite(archive, tmp_path / f"{name}.pt2", change))
        assert "\n" not in str(caught.value), name
    truncated = tmp_path / "cut.pt2"
    truncated.write_bytes(archive.read_bytes()[:300])
    result = runner.invoke(app, ["graph", str(truncated), "--no-lower"])
    assert result.exit_code == 3 and len(result.output.strip().splitlines()) == 1


def test_graph_command_formats(archive: Path, tmp_path: Path) -> None:
    table = runner.invoke(app, ["graph", str(archive), "--starts", "2", "--steps", "3", "-q"])
    assert table.exit_code == 0, table.output
    assert "upper bound (certified, graph rules)" in table.output and "linear: σ1 (svd)" in table.output
    out = tmp_path / "g.json"
    result = runner.invoke(app, ["graph", str(archive), "--starts", "2", "--steps", "3", "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["lower"] <= data["upper"] and data["ratio"] == pytest.approx(data["upper"] / data["lower"])
    assert {n["op"] for n in data["nodes"]} == {"linear", "relu"}
    html = tmp_path / "g.html"
    result = runner.invoke(app, ["graph", str(archive), "--no-lower", "-q", "-o", str(html), "--plots",
                                 str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert "data:image/png;base64," in html.read_text() and (tmp_path / "figs" / "graph_depth.png").exists()
    md = runner.invoke(app, ["graph", str(archive), "--no-lower", "-f", "markdown"])
    assert md.exit_code == 0 and "| depth | node |" in md.output


def test_model_option_matches_the_exported_archive(archive: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "d.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(4, 5)), nn.ReLU(), "
        "nn.Linear(5, 1))\n")
    checkpoint = tmp_path / "d.pt"
    torch.save(_net().state_dict(), checkpoint)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    via_model = runner.invoke(app, ["graph", str(checkpoint), "--model", "usernets.d:build", "--input-shape", "4",
                                    "--no-lower", "-f", "json", "-q"])
    assert via_model.exit_code == 0, via_model.output
    via_archive = runner.invoke(app, ["graph", str(archive), "--no-lower", "-f", "json", "-q"])
    assert json.loads(via_model.output)["upper"] == pytest.approx(json.loads(via_archive.output)["upper"],
                                                                   rel=1e-9)
    no_shape = runner.invoke(app, ["graph", str(checkpoint), "--model", "usernets.d:build"])
    assert no_shape.exit_code == 2 and "--input-shape" in no_shape.output
    bad = runner.invoke(app, ["graph", str(checkpoint), "--model", "usernets.nothere:build", "--input-shape", "4"])
    assert bad.exit_code == 2 and "cannot import" in bad.output
    assert "RUNS YOUR CODE" in runner.invoke(app, ["graph", "--help"]).output


def test_the_hostile_archive_is_real(archive: Path, tmp_path: Path) -> None:
    """The premise of the refusal: torch.export.load itself unpickles the weight and runs the payload
    (here a `touch` into tmp_path). If a later torch stops doing so, this says so instead of failing."""
    folder = tmp_path / "premise"
    folder.mkdir()
    bad = _rewrite(archive, folder / "bad.pt2", _pickled_weight(hostile._System(hostile.sentinel(folder))))
    try:
        torch.export.load(str(bad))
    except Exception:  # noqa: S110 - the load fails after the payload ran; only the sentinel matters
        pass
    if not hostile.sentinel(folder).exists():
        pytest.skip("this torch's torch.export.load no longer runs pickled weights")
    with pytest.raises(UnsafeCheckpointError):
        load_exported(bad)


def test_a_factory_asking_for_terabytes_is_refused(tmp_path: Path) -> None:
    class Shift(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return x + torch.ones(1, 4)

    path = export(Shift(), torch.randn(1, 4), tmp_path / "shift.pt2")

    def huge(members: dict[str, bytes]) -> None:
        model = next(n for n in members if n.endswith("models/model.json"))
        program = json.loads(members[model])
        for node in program["graph_module"]["graph"]["nodes"]:
            if node["target"].endswith("aten.ones.default"):
                node["inputs"][0]["arg"] = {"as_ints": [1_000_000, 1_000_000]}
        members[model] = json.dumps(program).encode()

    result = runner.invoke(app, ["graph", str(_rewrite(path, tmp_path / "huge.pt2", huge)), "--no-lower"])
    assert result.exit_code == 3 and "more than" in result.output


def _edit_program(archive: Path, target: Path, change) -> Path:  # noqa: ANN001
    """Copy ``archive`` letting ``change(program)`` edit its model.json first."""
    def edit(members: dict[str, bytes]) -> None:
        model = next(n for n in members if n.endswith("models/model.json"))
        program = json.loads(members[model])
        change(program)
        members[model] = json.dumps(program).encode()
    return _rewrite(archive, target, edit)


def test_crafted_model_records_are_one_line_errors(archive: Path, tmp_path: Path) -> None:
    """Attack review: records of the wrong JSON kind, negative sizes, a user output without metadata, a
    node reading an undefined value, a node whose recorded shape is not what it computes, non-finite
    weights: each one InputError line (they raised TypeError/KeyError/RuntimeError/_LinAlgError, or
    bounded a linear layer at a size the graph does not run)."""
    def graph(program: dict) -> dict:
        return program["graph_module"]["graph"]

    def first_linear(program: dict) -> dict:
        return next(n for n in graph(program)["nodes"] if "linear" in n["target"])

    def nan_weight(members: dict[str, bytes]) -> None:
        name, config = _config(members, "weights")
        for entry in config["config"].values():
            record = name.rsplit("/", 1)[0] + "/" + entry["path_name"]
            if entry["tensor_meta"]["dtype"] == 7 and len(entry["tensor_meta"]["sizes"]) == 2:
                members[record] = torch.full((len(members[record]) // 4,), float("nan")).numpy().tobytes()

    cases = {
        "specs_int": lambda p: p["graph_module"]["signature"].__setitem__("input_specs", 7),
        "spec_arg_int": lambda p: p["graph_module"]["signature"].__setitem__(
            "input_specs", [{"parameter": {"arg": 5}}, *p["graph_module"]["signature"]["input_specs"]]),
        "values_list": lambda p: graph(p).__setitem__("tensor_values", []),
        "negative": lambda p: [v.__setitem__("sizes", [{"as_int": -5}]) for v in graph(p)["tensor_values"].values()],
        "no_output_meta": lambda p: p["graph_module"]["signature"]["output_specs"][0]["user_output"]["arg"][
            "as_tensor"].__setitem__("name", "zzz"),
        "dangling": lambda p: first_linear(p)["inputs"][1].__setitem__("arg", {"as_tensor": {"name": "nonexist"}}),
        "one_arg": lambda p: first_linear(p).__setitem__("inputs", first_linear(p)["inputs"][:1]),
    }
    for name, change in cases.items():
        with pytest.raises(InputError) as caught:
            analyze_graph(_edit_program(archive, tmp_path / f"{name}.pt2", change), GraphOptions(lower=False))
        assert "\n" not in str(caught.value), name
    with pytest.raises(InputError, match="NaN or infinite"):
        analyze_graph(_rewrite(archive, tmp_path / "nan.pt2", nan_weight), GraphOptions(lower=False))
    result = runner.invoke(app, ["graph", str(tmp_path / "dangling.pt2"), "--no-lower"])
    assert result.exit_code == 3 and "nonexist" in result.output, result.output


def test_recorded_shapes_must_be_what_the_graph_computes(tmp_path: Path) -> None:
    """A conv recorded at 8x8 whose arguments (padding dropped) make it 6x6: the bound would be taken
    at a size the graph does not run; refused. Stride 0 is one line too (was a RuntimeError)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    source = export(net, torch.randn(1, 3, 8, 8), tmp_path / "conv.pt2")

    def conv(program: dict) -> dict:
        return next(n for n in program["graph_module"]["graph"]["nodes"] if "conv" in n["target"])

    def stride0(program: dict) -> None:
        conv(program)["inputs"].append({"name": "stride", "arg": {"as_ints": [0, 0]}, "kind": 1})

    with pytest.raises(InputError, match=r"gives shape \[1, 4, 6, 6\] where the archive records \[1, 4, 8, 8\]"):
        analyze_graph(_edit_program(source, tmp_path / "few.pt2",
                                   lambda p: conv(p).__setitem__("inputs", conv(p)["inputs"][:2])),
                     GraphOptions(lower=False))
    with pytest.raises(InputError, match="fails to run|gives shape"):  # torch's meta kernel gives 10x10
        analyze_graph(_edit_program(source, tmp_path / "s0.pt2", stride0), GraphOptions(lower=False))


def test_empty_example_batch_is_refused(tmp_path: Path) -> None:
    """Exported at a batch of 0: the lower-bound search divided by zero (ZeroDivisionError)."""
    source = export(nn.Linear(4, 3), torch.randn(0, 4), tmp_path / "empty.pt2")
    with pytest.raises(InputError, match="no entries"):
        analyze_graph(source)


def test_a_factory_calling_sys_exit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SystemExit in the user's factory ended sninspect silently with the factory's status."""
    (tmp_path / "exiting.py").write_text("def build():\n    raise SystemExit(3)\n")
    torch.save(_net().state_dict(), tmp_path / "d.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = runner.invoke(app, ["graph", str(tmp_path / "d.pt"), "--model", "exiting:build", "--input-shape", "4"])
    assert result.exit_code == 2 and "SystemExit" in result.output, result.output


def test_a_huge_input_shape_is_refused_before_the_model_is_built(tmp_path: Path) -> None:
    """--input-shape 3,100000,100000 asked torch for 120 GB (refused by the allocator, or at sizes just
    under the machine's memory, taken): now refused from the shape alone, before any user code runs."""
    (tmp_path / "never.py").write_text("def build():\n    raise RuntimeError('user code ran')\n")
    torch.save(_net().state_dict(), tmp_path / "d.pt")
    for shape in ("3,100000,100000", "1,16385,16385"):
        result = runner.invoke(app, ["graph", str(tmp_path / "d.pt"), "--model", "never:build", "--input-shape",
                                     shape, "-q"])
        assert result.exit_code == 2 and "more than" in result.output and "user code" not in result.output
