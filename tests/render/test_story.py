"""Issue 23, one story everywhere: the network bound explained with the file's numbers (both products
over the same factors), depth in forward order, a folder of unrelated models reported one by one,
each thing said once, and every table within the console's width."""

from __future__ import annotations

import json
import math
from pathlib import Path

import layouts
import pytest
import snruns
import torch
from rich.cells import cell_len
from typer.testing import CliRunner

from sninspect import analyze
from sninspect.audit.bounds.ordering import Link, chain_order, positions
from sninspect.audit.layers.workers import _pooled
from sninspect.audit.runs import trend
from sninspect.cli.main import app
from sninspect.errors import command_line_spelling, option
from sninspect.render import OutputFormat, render
from sninspect.render.fit import fit_text_table, wrap_line, wrap_name
from sninspect.render.grouping import group_notes, group_warnings
from sninspect.render.summary import verdict_lines
from sninspect.render.terminal import table_text
from sninspect.results.report import CHAINED_ORDER, STORED_ORDER

runner = CliRunner()
ENV = {"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _sigma(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix.double().reshape(matrix.shape[0], -1), 2))


def _lines(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line, _ in verdict_lines(report)]


# ----------------------------------------------------------------------------------------------
# 2. The network bound explained


def test_unnormalized_head_is_a_named_factor_and_warned_about(tmp_path: Path) -> None:
    path = layouts.plain_head_critic(tmp_path / "critic.pt")
    report = analyze(path, device="cpu")
    bound = report.primary.lipschitz
    assert [la.name for la in report.layers] == ["main.0.weight", "main.2.weight", "main.4.weight"]
    assert [(f.name, f.role) for f in bound.factors] == [
        ("main.0.weight", "sn"), ("main.2.weight", "sn"), ("main.4.weight", "sn"), ("head.weight", "plain")]
    head = _sigma(_state(path)["head.weight"])  # the oracle: σ1 of the stored head, by torch
    assert head == pytest.approx(layouts.HEAD_SIGMA, rel=1e-6)
    assert bound.factors[-1].matrix == pytest.approx(head, rel=1e-9)
    # exact_uv: every SN layer at σ_eff = 1 (to float32 storage), so ∏ σ_eff is the head's σ
    assert bound.matrix_product == pytest.approx(head, rel=1e-5)
    lines = _lines(report)
    assert any(line.startswith("without SN: head.weight (σ_eff 4.6); 1 not in the table (all_layers=True")
               for line in lines)
    assert any(line.startswith("warning: the largest factor is a layer without SN, 'head.weight' (4.6 of ∏ σ_eff 4.6")
               for line in lines)
    result = runner.invoke(app, ["report", str(path), "--device", "cpu", "-q"], env={**ENV, "COLUMNS": "250"})
    assert result.exit_code == 0
    assert "(--all lists it)" in result.stdout  # the CLI names the flag


def test_conv_stretch_is_stated_with_the_file_s_ratios(tmp_path: Path) -> None:
    report = analyze(layouts.plain_head_critic(tmp_path / "critic.pt"), device="cpu")
    convs = [f for f in report.primary.lipschitz.factors if f.kind == "conv2d"]
    ratios = [f.operator / f.matrix for f in convs]  # type: ignore[operator]
    # a k×k conv stretches at least 1 and at most √(kh·kw) (+ the 1% tolerance of the bound)
    for f, r in zip(convs, ratios, strict=True):
        assert 1.0 <= r <= math.sqrt(f.shape[2] * f.shape[3]) * 1.01
    line = next(line for line in _lines(report) if line.startswith("certified bound:"))
    assert f"√(kh·kw) = 3–4× its reshaped matrix norm; here op bound / σ_eff = {min(ratios):.3g}–" \
           f"{max(ratios):.3g} (3 convs)" in line


def test_batchnorm_enters_both_products(tmp_path: Path) -> None:
    path = layouts.batchnorm_between(tmp_path / "dncnn.pt", depth=5, var=1e-4)
    report = analyze(path, device="cpu")
    bound = report.primary.lipschitz
    state = _state(path)
    norms = [f for f in bound.factors if f.role == "batchnorm"]
    assert len(norms) == 3
    for f in norms:  # the oracle: max |γ|/√(var + ε) from the stored tensors
        gamma, var = state[f.name + ".weight"].double(), state[f.name + ".running_var"].double()
        assert f.matrix == f.operator == pytest.approx(float((gamma.abs() / (var + 1e-5).sqrt()).max()))
    weights = [_sigma(state[f"{i}.weight_orig"]) / _sigma(state[f"{i}.weight_orig"]) for i in (0, 2, 5, 8, 11)]
    expected = math.prod(weights) * math.prod(f.matrix for f in norms)  # type: ignore[misc]
    assert bound.matrix_product == pytest.approx(expected, rel=1e-5)
    assert bound.operator_product is not None and bound.matrix_product is not None
    assert bound.operator_product >= bound.matrix_product  # the same factors, each op bound ≥ its σ_eff
    assert all(b >= a * (1 - 1e-12) for a, b in zip(bound.cumulative_matrix, bound.cumulative_operator,
                                                     strict=True))
    lines = _lines(report)
    assert any(line.startswith("BatchNorm: 3 in both products as max |γ|/√(running_var + ε)") for line in lines)
    top = max(norms, key=lambda f: f.matrix or 0.0)
    assert any(line.startswith(f"warning: the largest factor is the BatchNorm '{top.name}' ({top.matrix:.3g} of")
               for line in lines)


# ----------------------------------------------------------------------------------------------
# 3. Depth in forward order


def test_output_layer_stored_first_is_put_last(tmp_path: Path) -> None:
    path = layouts.output_first(tmp_path / "critic.pt")
    assert next(iter(_state(path))).startswith("outputDense")  # the layout: output layer stored first
    report = analyze(path, device="cpu")
    order = ["dcmodel.0.weight", "dcmodel.2.weight", "outputDense.weight"]
    assert report.layer_order == CHAINED_ORDER
    assert [la.name for la in report.layers] == order
    bound = report.primary.lipschitz
    assert list(bound.layers) == order
    ops = [la.operator_bound for la in report.layers]
    assert bound.cumulative_operator == pytest.approx([ops[0], ops[0] * ops[1], ops[0] * ops[1] * ops[2]])
    assert "layers ordered by chaining shapes" in table_text(report)
    data = json.loads(runner.invoke(app, ["report", str(path), "-f", "json", "--device", "cpu"]).stdout)
    assert data["layer_order"] == "chained" and data["lipschitz"]["layers"] == order


def test_chain_order_rules() -> None:
    lin = [Link("a", "a", "linear", (8, 4)), Link("b", "b", "linear", (2, 8)), Link("c", "c", "linear", (1, 2))]
    assert chain_order(lin).keys is None and chain_order(lin).warning is None  # already a chain
    assert chain_order([lin[2], lin[0], lin[1]]).keys == ("a", "b", "c")  # output stored first
    # no single order: a cycle (4→4, 4→4 stored apart from a 3→5) stays stored, with a warning
    odd = [Link("x", "x", "linear", (4, 4)), Link("y", "y", "linear", (5, 3)), Link("z", "z", "linear", (4, 4))]
    found = chain_order(odd)
    assert found.keys is None and found.warning is not None and "x (4→4) is followed by y (3→5)" in found.warning
    # a plain conv may be a ConvTranspose: either reading chains
    gen = [Link("fc", "fc", "linear", (512, 32)), Link("t", "t", "conv2d", (32, 16, 4, 4), sure=False)]
    assert chain_order(gen).keys is None and chain_order(gen).warning is None
    # BatchNorms and other keys move with the chain layer stored before them
    assert positions(["c", "bn_c", "a", "bn_a", "b"], ["a", "b", "c"]) == {
        "a": 0, "bn_a": 1, "b": 2, "c": 3, "bn_c": 4}


def test_report_in_stored_order_says_so(tmp_path: Path) -> None:
    report = analyze(layouts.plain_head_critic(tmp_path / "c.pt"), device="cpu")
    assert report.layer_order == STORED_ORDER
    assert "layers in stored order" in table_text(report)


# ----------------------------------------------------------------------------------------------
# 4. A folder is a run only when it is one


def test_unrelated_folder_is_reported_one_by_one(tmp_path: Path) -> None:
    folder = layouts.unrelated_folder(tmp_path / "models")
    result = runner.invoke(app, ["report", str(folder), "--device", "cpu", "-q"], env=ENV)
    assert result.exit_code == 0, result.output
    out = result.stdout
    said = " ".join(out.split("\n\n")[0].split())
    assert said.startswith("3 checkpoints, each reported on its own: not one model's training run: their "
                           "layer sets differ (no layer shared by all); no step entry in every file and no "
                           "common file-name pattern")
    assert "training run ·" not in out and "appears" not in out and "vanishes" not in out
    wide = runner.invoke(app, ["report", str(folder), "--device", "cpu", "-q"], env={**ENV, "COLUMNS": "250"})
    assert all(f"sninspect · {folder / name}" in wide.stdout
               for name in ("flowx08.pt", "sigma10.pt", "resnet_block2.pt"))
    data = json.loads(runner.invoke(app, ["report", str(folder), "-f", "json", "--device", "cpu", "-q"]).stdout)
    assert data["trend"] is None and "their layer sets differ" in data["not_a_run"]
    assert len(data["checkpoints"]) == 3
    md = runner.invoke(app, ["report", str(folder), "-f", "markdown", "--device", "cpu", "-q"]).stdout
    assert md.startswith("3 checkpoints, each reported on its own") and "## Training run" not in md


def test_checkpoints_of_one_model_still_make_a_run(tmp_path: Path) -> None:
    model = snruns.sn_chain([5, 6, 1])
    reports = [analyze(snruns.save(model, tmp_path / f"ckpt_{n}.pt"), device="cpu") for n in (1, 2)]
    assert trend.not_a_run(reports) is None  # the same layer set
    other = analyze(snruns.save(snruns.sn_chain([3, 2]), tmp_path / "x9.pt"), device="cpu")
    why = trend.not_a_run([reports[0], other])
    assert why is not None and "no step entry in every file and no common file-name pattern" in why
    # a library trend of unrelated reports is still built (it was asked for), and says so
    assert any("not one model's training run" in c for c in trend.build([reports[0], other]).changes)


# ----------------------------------------------------------------------------------------------
# 5. Say each thing once


def test_notes_differing_only_in_numbers_are_one_line() -> None:
    items = [("dim=0 chosen by the residual (dim=0: 8.5e-08, dim=1: 1.4e+00)", "a"),
             ("dim=0 chosen by the residual (dim=0: 7.1e-08, dim=1: 1.4e+00)", "b"),
             ("dim=1 chosen by the residual (dim=0: 9.0e-01, dim=1: 4.7e-02)", "c"),
             ("σ ≤ coeff: the weight is used as stored (σ̂ = 1)", "a")]
    assert group_notes(items) == [
        "dim=0 chosen by the residual (dim=0: …, dim=1: 1.4e+00) (2 layers: a, b)",
        "dim=1 chosen by the residual (dim=0: 9.0e-01, dim=1: 4.7e-02) (c)",
        "σ ≤ coeff: the weight is used as stored (σ̂ = 1) (a)"]
    many = group_notes((f"eval divides by {i}.5", f"l{i}") for i in range(9))
    assert many == ["eval divides by … (9 layers: l0, l1, l2, l3, l4, l5 and 3 more)"]


def test_warnings_about_one_layer_each_are_grouped() -> None:
    same = "σ1 ≈ σ2, the top singular vector is not unique (no cosine given)"
    warnings = [f"layer 'a': {same}", "checkpoint-level warning", f"layer 'b': {same}",
                "layer 'c': ‖u‖ = 0.5, expected 1", f"netG: layer 'd': {same}"]
    assert group_warnings(warnings) == [f"{same} (2 layers: 'a', 'b')", "checkpoint-level warning",
                                        "layer 'c': ‖u‖ = 0.5, expected 1", f"netG: layer 'd': {same}"]


def test_soft_sn_sample_says_its_rule_once() -> None:
    report = analyze("sample_checkpoints/soft_sn_dcgan.pt", device="cpu")
    notes = [line for line in _lines(report) if line.startswith("note: soft SN")]
    assert len(notes) == 1 and "max(1, σ/coeff) = … with σ = u·(W v) = … and coeff = 1" in notes[0]
    assert notes[0].endswith("(5 layers: main.0.layer.weight, main.2.layer.weight, main.4.layer.weight, "
                             "main.6.layer.weight, head.layer.weight)")


def test_tolerance_of_the_above_limit_count_is_stated() -> None:
    """The count depends on the limit, so it says the limit (the verdict's max_sigma): the oracle is
    the σ_eff values themselves."""
    report = analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu", rules={"max_sigma": 1.0001})
    above = sum(la.sigma_effective > 1.0001 for la in report.layers if la.has_sn)
    assert above == 3
    assert f"layers above the limit (max_sigma 1.0001, or σ̂ ≤ 0): {above} of 5" in _lines(report)
    default = analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu")  # none above 1.1: no count
    assert not any(line.startswith("layers above") for line in _lines(default))


def test_worker_threads_spell_options_as_the_caller() -> None:
    tasks = [lambda: option("input_size"), lambda: option("input_size")]
    with command_line_spelling():
        assert _pooled(tasks, 2) == ["--input-size", "--input-size"]
    assert _pooled(tasks, 2) == ["input_size=", "input_size="]


# ----------------------------------------------------------------------------------------------
# 6. Every table fits


def test_names_break_between_parts_only() -> None:
    assert wrap_name("discriminator.blocks.3.conv_shortcut.weight", 20) == \
        "discriminator.\nblocks.3.conv_\nshortcut.weight"
    assert wrap_name("short.weight", 20) == "short.weight"
    assert wrap_name("x" * 25, 10) == "xxxxxxxxxx\nxxxxxxxxxx\nxxxxx"  # one part wider than the room: cut
    assert wrap_line("a " * 50, 30)[1].startswith("  ")


def test_text_table_hides_whole_columns_then_wraps_names() -> None:
    header = ("depth", "node", "module", "rule", "bound")
    rows = [("1", "conv2d_1", "features.denseblock4.denselayer16.conv2", "conv at 1x3x8x8 stride 1x1", "1.5")]
    lines, hidden = fit_text_table(header, rows, 60, ("module", "depth"), names=(1, 2, 3), right=(0, 4))
    assert hidden == ["module"]
    assert max(cell_len(line) for line in "\n".join(lines).splitlines()) <= 60
    lines, hidden = fit_text_table(header, rows, 30, ("module", "depth"), names=(1, 2, 3), right=(0, 4))
    text = "\n".join(lines).splitlines()
    assert hidden == ["module", "depth"] and max(cell_len(line) for line in text) <= 30
    assert text[2:] == ["conv2d_1    conv at       1.5", "            1x3x8x8", "            stride 1x1"]


@pytest.mark.parametrize("sample", ["dcgan_sn_torch.pt", "biggan_style_sn.pt", "mlp_sn_parametrize.safetensors"])
def test_layers_fits_80_columns(sample: str) -> None:
    result = runner.invoke(app, ["layers", f"sample_checkpoints/{sample}"], env=ENV)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    rows = [line for line in lines if ".weight" in line]
    assert len(rows) == len(analyze(f"sample_checkpoints/{sample}", device="cpu", all_layers=True).layers)
    assert all(row.split()[1] in {"torch", "biggan", "torch-parametrize", "none"} for row in rows)


def test_long_names_in_the_report_are_never_split_mid_word(tmp_path: Path) -> None:
    model = torch.nn.Sequential()
    model.add_module("discriminator_block_with_a_long_name", snruns.sn_chain([4, 3, 1]))
    path = snruns.save(model, tmp_path / "long.pt")
    out = runner.invoke(app, ["report", str(path), "--device", "cpu", "-q"], env=ENV).stdout
    assert max(cell_len(line) for line in out.splitlines()) <= 80
    table = out.split("━")[-1].split("torch-zip")[0]  # the rows, up to the caption
    names = [line.split()[0] for line in table.splitlines() if line.strip()]
    # a third of 80 columns: the name breaks after its separators, every piece whole
    assert names == ["discriminator_block_with_", "a_long_name.0.weight", "discriminator_block_with_",
                     "a_long_name.2.weight"]


def test_unrelated_checkpoints_get_their_own_figures_and_page(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    snruns.save(snruns.sn_chain([6, 5, 1]), folder / "flowx08.pt")
    snruns.save(snruns.sn_chain([4, 3, 1], seed=1), folder / "sigma10.pt")
    page, figures = tmp_path / "page.html", tmp_path / "figures"
    result = runner.invoke(app, ["report", str(folder), "-o", str(page), "--plots", str(figures), "--device", "cpu",
                                 "-q"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(figures).as_posix() for p in figures.rglob("*.png"))
    assert written == sorted(f"{c}/{f}.png" for c in ("flowx08", "sigma10")
                             for f in ("sigma", "cos_error", "spectra", "lipschitz_depth"))  # no trend figure
    html = page.read_text(encoding="utf-8")
    assert "Each checkpoint on its own: not one model&#x27;s training run" in html and "Training run" not in html


def test_a_long_checkpoint_path_breaks_at_its_separators(tmp_path: Path) -> None:
    folder = tmp_path / "a_rather_long_folder_name_for_checkpoints" / "second_level_folder"
    folder.mkdir(parents=True)
    path = snruns.save(snruns.sn_chain([4, 3, 1]), folder / "critic_checkpoint.pt")
    for command in (["report", str(path), "--device", "cpu", "-q"], ["layers", str(path)]):
        out = runner.invoke(app, command, env=ENV).stdout
        title = out.split("\n\n")[0].splitlines()
        assert len(title) > 1 and max(cell_len(line) for line in title) <= 80
        assert "".join(title).replace("·", "· ").endswith(f"{path}")  # all there, in order
        assert all(line.endswith(tuple("/_-.:·")) for line in title[:-1])  # broken after separators only


def test_layers_outside_the_chain_are_named(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.utils.spectral_norm(torch.nn.Linear(4, 3)), torch.nn.ReLU(),
                                torch.nn.utils.spectral_norm(torch.nn.Linear(3, 1)))
    model(torch.randn(2, 4))  # one training-mode forward: σ̂ > 0
    model.add_module("embed", torch.nn.Embedding(5, 4))
    report = analyze(snruns.save(model, tmp_path / "d.pt"), device="cpu", all_layers=True)
    assert report.primary.lipschitz.excluded == ("embed.weight",)
    assert [f.name for f in report.primary.lipschitz.factors] == ["0.weight", "2.weight"]
    assert any(line.startswith("in neither product: embed.weight (embeddings") for line in _lines(report))


def test_run_changes_that_say_the_same_are_one_line() -> None:
    changes = ["layer 'a' vanishes in x.pt (step 8)", "layer 'b' vanishes in x.pt (step 8)",
               "layer 'c' vanishes in y.pt (step 9)", "ordered by modification time"]
    assert group_warnings(changes, measured=False) == [
        "vanishes in x.pt (step 8) (2 layers: 'a', 'b')", "layer 'c' vanishes in y.pt (step 9)",
        "ordered by modification time"]


def test_factors_round_trip_through_json() -> None:
    from sninspect.results.report import report_from_dict

    report = analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu")
    back = report_from_dict(json.loads(report.to_json()))
    assert [m.lipschitz.factors for m in back.models] == [m.lipschitz.factors for m in report.models]
    data = json.loads(report.to_json())
    del data["models"][0]["lipschitz"]["factors"]  # a record written before factors existed
    assert report_from_dict(data).models[0].lipschitz.factors == ()


def test_legend_names_every_column_of_the_table() -> None:
    """Every column the layer table can show has one legend row (title and JSON field), in table order."""
    from sninspect.render.legend import COLUMNS
    from sninspect.render.table import DESCRIPTIVE, NUMBER_COLUMNS, VERDICT

    titles = [title for title, _, _ in COLUMNS]
    assert titles == ["layer", *DESCRIPTIVE, *NUMBER_COLUMNS, VERDICT]
    fields = json.loads(render(analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu"), OutputFormat.json))
    assert {field for _, field, _ in COLUMNS} <= set(fields["layers"][0])
