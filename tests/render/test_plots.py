"""Figures, checked through matplotlib's objects: one bar / point per layer, the line at 1, log scales
where stated, titles naming the checkpoint; a 5-layer and a 100-layer checkpoint; saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snruns
import torch
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox
from torch import nn
from torch.nn.utils import spectral_norm
from typer.testing import CliRunner

from sninspect import analyze
from sninspect.audit import checks
from sninspect.audit.runs import trend
from sninspect.cli.main import app
from sninspect.render import plots
from sninspect.results.check import DEFAULT_MAX_SIGMA, Rules
from sninspect.results.report import Report

runner = CliRunner()


def cells(mesh: QuadMesh) -> tuple[int, ...]:
    """The (rows, columns) of a heat map."""
    array = mesh.get_array()
    assert array is not None
    return tuple(array.shape)


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """A small SN Conv2d and four SN Linear layers; exact u, v except layer 5.weight, skewed above 1."""
    model = snruns.exact_uv(snruns.sn_chain([8, 6, 6, 4, 1], conv=True, steps=3))
    snruns.skew_u(snruns.sn_modules(model)[2])
    path = snruns.save(model, tmp_path_factory.mktemp("five") / "disc_five.pt", global_step=1200)
    return analyze(path, device="cpu")


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """100 SN Linear(8, 8) layers trained one step (unconverged u, v: many layers above 1)."""
    model = snruns.sn_chain([8] * 101, steps=1)
    return analyze(snruns.save(model, tmp_path_factory.mktemp("deep") / "deep100.pt"), device="cpu")


def lines_at(ax: Axes, value: float, axis: str = "y") -> list[Line2D]:
    """Straight reference lines (axhline/axvline) at ``value``."""
    found = []
    for line in ax.get_lines():
        data = y(line) if axis == "y" else x(line)
        if len(data) == 2 and np.allclose(data, value):
            found.append(line)
    return found


def series(ax: Axes, label: str) -> Line2D:
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def x(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_xdata(), dtype=float)


def y(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=float)


def floats(values: object) -> np.ndarray:
    return np.asarray(values, dtype=float)


def assert_titled(fig: Figure, report: Report) -> None:
    assert Path(report.checkpoint).name in fig.get_suptitle()
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title()


def test_sigma_figure_five_layers(five: Report) -> None:
    fig = plots.sigma_figure(five)
    assert_titled(fig, five)
    assert "global_step 1200" in fig.get_suptitle()
    rel, eff = fig.axes[:2]
    # σ̂ against σ1 as one number per layer, (σ̂ − σ1)/σ1, from the two values the report holds.
    expected = [(la.sigma_estimate - la.sigma_exact) / la.sigma_exact for la in five.layers]  # type: ignore[operator]
    np.testing.assert_allclose(y(series(rel, plots.REL_ERROR_LABEL)), expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(y(series(rel, plots.REL_ERROR_LABEL)),
                               floats([la.sigma_rel_error for la in five.layers]))
    assert lines_at(rel, 0.0), "the line at 0"
    (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
    assert len(bars) == 5
    tops = [bar.get_y() + bar.get_height() for bar in bars]
    np.testing.assert_allclose(tops, floats([la.sigma_effective for la in five.layers]))
    assert lines_at(eff, 1.0), "the line at 1"
    # The skewed layer stands out in red; the exact ones do not.
    colors = [to_hex(bar.get_facecolor()) for bar in bars]
    names = [la.name for la in five.layers]
    assert colors[names.index("5.weight")] == plots.ABOVE
    assert colors.count(plots.ABOVE) == 1
    assert [t.get_text() for t in eff.get_xticklabels()] == ["0", "3", "5", "7", "9"]
    assert "'.weight'" in eff.get_xlabel()


def test_cos_error_figure_draws_the_judged_errors_against_the_rule(five: Report) -> None:
    """The gap-aware errors (what check judges) large, the raw 1 − |cos| small, the line at the rule's
    max_cos_error: the rules the report was judged by, not a limit of the figure's own."""
    judged = checks.judge(five, Rules(max_cos_error=1e-3))
    fig = plots.cos_error_figure(judged)
    assert_titled(fig, five)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    gap_u, raw_u = y(series(ax, plots.GAP_U)), y(series(ax, plots.RAW_U + " (not judged)"))
    assert len(gap_u) == len(raw_u) == 5
    skewed = [la.name for la in five.layers].index("5.weight")
    assert raw_u[skewed] == pytest.approx(snruns.SKEWED_COS, rel=1e-4)
    layer = judged.layers[skewed]
    expected = checks.gap_cos_error(layer.cos_error_u, layer.spectral_gap)  # type: ignore[arg-type]
    assert gap_u[skewed] == pytest.approx(expected, rel=1e-12)
    assert lines_at(ax, 1e-3), "the rule's limit"
    assert not lines_at(plots.cos_error_figure(five).axes[0], 1e-3)  # the default rules: 0.05
    assert lines_at(plots.cos_error_figure(five).axes[0], 0.05)


def test_spectra_small_multiples(five: Report) -> None:
    fig = plots.spectra_figure(five)
    assert_titled(fig, five)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 5
    for ax, layer in zip(panels, five.layers, strict=True):
        assert ax.get_yscale() == "log"
        (line,) = ax.get_lines()
        values = np.asarray(layer.singular_values)
        np.testing.assert_allclose(y(line), values / values[0])
        assert layer.name.split(".")[0] in ax.get_title()


def test_lipschitz_depth_figure(five: Report) -> None:
    fig = plots.lipschitz_figure(five)
    assert_titled(fig, five)
    (ax,) = fig.axes
    bound = five.primary.lipschitz
    assert ax.get_yscale() == "log"
    matrix = [line for line in ax.get_lines() if str(line.get_label()).startswith("∏ σ_eff")]
    operator = [line for line in ax.get_lines() if str(line.get_label()).startswith("∏ certified")]
    np.testing.assert_allclose(y(matrix[0]), floats(bound.cumulative_matrix))
    np.testing.assert_allclose(y(operator[0]), floats(bound.cumulative_operator))
    assert len(x(matrix[0])) == len(bound.layers) == 5
    assert lines_at(ax, 1.0)
    assert "1-Lipschitz" in fig.get_supxlabel()


def test_hundred_layers_switch_orientation(hundred: Report) -> None:
    sigma = plots.sigma_figure(hundred)
    assert_titled(sigma, hundred)
    raw, eff = sigma.axes[:2]
    np.testing.assert_allclose(x(series(raw, plots.REL_ERROR_LABEL)),
                               floats([la.sigma_rel_error for la in hundred.layers]))
    (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
    assert len(bars) == 100
    np.testing.assert_allclose(floats([b.get_x() + b.get_width() for b in bars]),
                               floats([la.sigma_effective for la in hundred.layers]))
    assert lines_at(eff, 1.0, axis="x"), "the line at 1, vertical now"
    assert len(raw.get_yticklabels()) == 100 and raw.get_ylim()[0] > raw.get_ylim()[1]  # first on top
    assert sigma.get_figheight() > 15  # a row per layer, not a squeeze

    cos = plots.cos_error_figure(hundred)
    assert cos.axes[0].get_xscale() == "log"
    assert len(x(series(cos.axes[0], plots.GAP_U))) == 100

    spectra = plots.spectra_figure(hundred)
    (mesh,) = [c for c in spectra.axes[0].collections if isinstance(c, QuadMesh)]
    assert cells(mesh) == (100, 8)
    assert isinstance(mesh.norm, LogNorm)

    depth = plots.lipschitz_figure(hundred)
    assert depth.axes[0].get_xscale() == "log"
    assert len(y(depth.axes[0].get_lines()[0])) == 100


def test_layer_not_audited_keeps_its_slot(tmp_path: Path) -> None:
    model = snruns.exact_uv(snruns.sn_chain([4, 5, 5, 1]))
    with torch.no_grad():
        snruns.tensor(snruns.sn_modules(model)[1], "weight_orig").fill_(float("nan"))
    report = analyze(snruns.save(model, tmp_path / "nan.pt"), device="cpu")
    fig = plots.sigma_figure(report)
    eff = fig.axes[1]
    (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3
    assert any(t.get_text() == "not audited" for t in eff.texts)
    for make in (plots.cos_error_figure, plots.spectra_figure, plots.lipschitz_figure):
        make(report).canvas.draw()  # renders without error


def test_short_names() -> None:
    names = ["netD.main.0.weight", "netD.main.2.weight", "netD.main.10.weight"]
    assert plots.short_names(names) == (["0", "2", "10"], "prefix 'netD.main.' and suffix '.weight'")
    # A name that fits is shown whole, not its shortest unique end ("main.0", not "…0").
    assert plots.short_names(["main.0.weight", "main.2.weight", "head.weight"])[0] == ["main.0", "main.2", "head"]
    assert plots.short_names(["fc.weight"]) == (["fc"], "suffix '.weight'")
    long = ["a." + "x" * 60 + ".weight", "a.y.weight"]
    labels, _ = plots.short_names(long)
    assert len(labels[0]) == plots.MAX_LABEL and "…" in labels[0]


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_save_figures(five: Report, tmp_path: Path, fmt: str, magic: bytes) -> None:
    figures = {"lipschitz_depth": plots.lipschitz_figure(five)}
    written = plots.save_figures(figures, tmp_path / "new" / "dir", fmt)
    assert [p.name for p in written] == [f"lipschitz_depth.{fmt}"]
    assert written[0].read_bytes().startswith(magic)
    assert sorted(p.name for p in written[0].parent.iterdir()) == [f"lipschitz_depth.{fmt}"]  # no temp left


def test_cli_report_plots(tmp_path: Path) -> None:
    path = snruns.save(snruns.sn_chain([4, 5, 1]), tmp_path / "d.pt")
    out = tmp_path / "figs"
    result = runner.invoke(app, ["report", str(path), "--plots", str(out), "--plot-format", "svg",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["cos_error.svg", "lipschitz_depth.svg", "sigma.svg",
                                                     "spectra.svg"]
    assert "wrote 4 figures" in result.stderr
    quiet = runner.invoke(app, ["report", str(path), "-f", "json", "--quiet", "--device", "cpu"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    bad = runner.invoke(app, ["report", str(path), "--plots", str(out), "--plot-format", "gif"])
    assert bad.exit_code == 2


def nested(names: list[str]) -> nn.Module:
    """A module tree holding a small SN Linear at each dotted name."""
    torch.manual_seed(0)
    root = nn.Module()
    for name in names:
        parent = root
        *path, last = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(last, spectral_norm(nn.Linear(3, 3)))
    return root


def resnet_names(count: int) -> list[str]:
    """``count`` layer names sharing long prefixes, told apart only in the middle and at the end."""
    return [f"discriminator.body.stage{i // 20}.blocks.{i // 2 % 10}.residual_branch.conv_{'ab'[i % 2]}"
            for i in range(count)]


def shortest_unique_suffix(name: str, names: list[str]) -> str:
    """Brute force: the fewest dotted last parts of ``name`` that end no other name."""
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
        tail = ".".join(parts[-k:])
        if sum(1 for other in names if other == tail or other.endswith("." + tail)) == 1:
            return tail
    return name


def test_short_names_shortest_unique_suffix() -> None:
    names = ["net.a.x.conv.weight", "net.b.x.conv.weight", "net.b.y.weight", "net.c.bn.weight"]
    labels, cut = plots.short_names(names)
    assert labels == ["a.x.conv", "b.x.conv", "b.y", "c.bn"]  # each fits: whole
    assert cut == "prefix 'net.' and suffix '.weight'"
    # Names longer than MAX_LABEL: the shortest dotted end no other name has, "…" where parts went.
    long = [f"net.{a * 12}.{b * 12}.{part}.weight" for a, b, part in (("p", "q", "a.conv"), ("r", "q", "b.conv"),
                                                                        ("r", "s", "bn.norm"))]
    bodies = [n.removeprefix("net.").removesuffix(".weight") for n in long]
    expected = []
    for body in bodies:
        tail = shortest_unique_suffix(body, bodies)
        expected.append(tail if tail == body else "…" + tail)
    assert plots.short_names(long)[0] == expected == ["…a.conv", "…b.conv", "…norm"]
    # Names are escaped for matplotlib: a dollar never starts mathtext.
    assert plots.short_names(["m.$a.weight", "m.b.weight"])[0] == ["\\$a", "b"]
    # The same name twice still gives two labels.
    assert len(set(plots.short_names(["a.w", "a.w"])[0])) == 2


@pytest.mark.parametrize("count", [60, 200])
def test_short_names_unique_at_depth(count: int) -> None:
    names = [n + ".weight" for n in resnet_names(count)]
    labels, cut = plots.short_names(names)
    assert len(set(labels)) == count
    assert all(len(label) <= plots.MAX_LABEL for label in labels)
    assert cut == "prefix 'discriminator.body.' and suffix '.weight'"
    # Each label keeps the parts that tell the layer apart: stage, block, conv.
    for i, label in enumerate(labels):
        assert label == f"stage{i // 20}…{i // 2 % 10}…conv_{'ab'[i % 2]}"


@pytest.mark.parametrize("count", [60, 200])
def test_cli_plots_deep_checkpoint_labels(tmp_path: Path, count: int) -> None:
    path = tmp_path / f"resnet{count}.pt"
    torch.save(nested(resnet_names(count)).state_dict(), path)
    out = tmp_path / "figs"
    result = runner.invoke(app, ["report", str(path), "--plots", str(out), "--device", "cpu", "-q",
                                 "-f", "json"])
    assert result.exit_code == 0, result.output
    for name in ("sigma", "cos_error", "spectra", "lipschitz_depth"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    report = analyze(path, device="cpu")
    assert len(report.layers) == count
    figures = [plots.sigma_figure(report), plots.cos_error_figure(report), plots.spectra_figure(report)]
    if report.primary.lipschitz.unavailable is None:
        figures.append(plots.lipschitz_figure(report))
    else:  # random u, v: some σ̂ ≤ 0, no bound; said in words, not drawn as an empty chart
        (ax,) = plots.lipschitz_figure(report).axes
        assert not ax.axison and ax.texts[0].get_text().startswith("no bound: σ̂ ≤ 0")
    for fig in figures:
        (layer_ax,) = [ax for ax in fig.axes if ax.get_ylabel().startswith(("layer", "depth: layer"))]
        ticks = [t.get_text() for t in layer_ax.get_yticklabels()]
        assert len(ticks) == count and len(set(ticks)) == count


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """A checkpoint holding netD (3 layers) and netG (2 layers)."""
    folder = tmp_path_factory.mktemp("pair")
    d = snruns.sn_chain([6, 5, 4, 1], steps=2)
    g = snruns.sn_chain([3, 5, 6], steps=2, seed=1)
    torch.save({"netD": d.state_dict(), "netG": g.state_dict()}, folder / "gan.pt")
    return analyze(folder / "gan.pt", device="cpu")


def test_one_panel_per_model(pair: Report) -> None:
    names = {m.name: [la.name for la in m.layers] for m in pair.models}
    assert sorted(names) == ["netD", "netG"] and len(names["netD"]) == 3 and len(names["netG"]) == 2
    cos = plots.cos_error_figure(pair)
    assert len(cos.axes) == 2  # one axes per model
    titles = [sub.get_suptitle() for sub in cos.subfigs]
    assert titles == ["model netD", "model netG"]
    for ax, model in zip(cos.axes, pair.models, strict=True):
        assert [t.get_text() for t in ax.get_xticklabels()] == plots.short_names(names[model.name])[0]
        assert len(x(series(ax, plots.GAP_U))) == len(model.layers)
    sigma = plots.sigma_figure(pair)
    assert len(sigma.subfigs) == 2
    for sub, model in zip(sigma.subfigs, pair.models, strict=True):
        rel, _ = sub.axes
        np.testing.assert_allclose(y(series(rel, plots.REL_ERROR_LABEL)),
                                   floats([la.sigma_rel_error for la in model.layers]))
    depth = plots.lipschitz_figure(pair)
    assert len(depth.axes) == 2
    for ax, model in zip(depth.axes, pair.models, strict=True):
        matrix = [line for line in ax.get_lines() if str(line.get_label()).startswith("∏ σ_eff")]
        np.testing.assert_allclose(y(matrix[0]), floats(model.lipschitz.cumulative_matrix))
    spectra = plots.spectra_figure(pair)
    assert [len([ax for ax in sub.axes if ax.axison]) for sub in spectra.subfigs] == [3, 2]


def test_limit_line_and_colours_follow_check(hundred: Report, five: Report) -> None:
    for report, axis in ((five, "y"), (hundred, "x")):
        eff = plots.sigma_figure(report).axes[1]
        (limit,) = lines_at(eff, DEFAULT_MAX_SIGMA, axis)
        legend = eff.get_legend()
        assert legend is not None
        assert limit.get_label() in [t.get_text() for t in legend.get_texts()]
        assert f"{DEFAULT_MAX_SIGMA:g}" in str(limit.get_label())
        (bars,) = [c for c in eff.containers if isinstance(c, BarContainer)]
        red = [to_hex(bar.get_facecolor()) == plots.ABOVE for bar in bars]
        assert red == [(la.sigma_effective or 0) > DEFAULT_MAX_SIGMA or (la.sigma_estimate or 1) <= 0
                       for la in report.layers]
    assert 0 < sum(red) < len(red)  # the hundred layers have both kinds


def data_boxes(ax: Axes) -> list[Bbox]:
    """Display boxes of every data point and bar (reference lines, spanning the axes, left out)."""
    boxes = []
    for line in ax.get_lines():
        xs, ys = x(line), y(line)
        if len(xs) == 2 and (np.allclose(xs, xs[0]) or np.allclose(ys, ys[0])) and line.get_linestyle() != "None":
            continue  # axhline / axvline
        points = ax.transData.transform(np.column_stack([xs, ys]))
        boxes += [Bbox.from_bounds(px - 2, py - 2, 4, 4) for px, py in points[np.isfinite(points).all(axis=1)]]
    for container in ax.containers:
        boxes += [bar.get_window_extent() for bar in container]
    return boxes


def test_legends_do_not_cover_data(five: Report, hundred: Report, pair: Report, tmp_path: Path) -> None:
    model = snruns.sn_chain([4] * 16, steps=1)
    run = trend.build([analyze(snruns.save(model, tmp_path / f"h_{n}.pt", step=n), device="cpu")
                       for n in (1, 3, 9)])
    figures = [*plots.report_figures(five).values(), *plots.report_figures(hundred).values(),
               *plots.report_figures(pair).values(), *plots.trend_figures(run).values()]
    checked = 0
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            if not isinstance(legend, Legend):
                continue
            box = legend.get_window_extent()
            boxes = data_boxes(ax)
            assert boxes
            assert not any(box.overlaps(b) for b in boxes), (fig.get_suptitle(), ax.get_title())
            checked += 1
    assert checked >= 12


def test_trend_x_is_the_step_value(tmp_path: Path) -> None:
    steps = (100, 300, 1000, 5000)
    for widths in ([4, 5, 1], [4] * 16):  # lines (2 layers) and the heat map (15 layers)
        model = snruns.sn_chain(widths, steps=1)
        reports = [analyze(snruns.save(model, tmp_path / f"r{len(widths)}_{n}.pt", global_step=n), device="cpu")
                   for n in steps]
        run = trend.build(reports)
        assert run.steps == tuple(float(n) for n in steps)
        fig = plots.trend_sigma_figure(run)
        top = fig.axes[0]
        data = [line for line in top.get_lines() if len(x(line)) == len(steps)]
        assert data
        for line in data:
            assert x(line).tolist() == [float(n) for n in steps]
        if len(widths) > 3:
            (mesh,) = [c for c in fig.axes[1].collections if isinstance(c, QuadMesh)]
            for path, step in zip(mesh.get_paths()[: len(steps)], steps, strict=True):  # first row
                assert path.vertices[:, 0].min() < step < path.vertices[:, 0].max()  # each column holds its step


def test_exact_zeros_sit_on_a_floor_ticked_zero(five: Report) -> None:
    """An exact 0 on the log axis is drawn on the axis floor, a decade below every positive value and
    ticked "0", never at a made-up 1e-18 that stretches the axis over 18 decades."""
    ax = plots.cos_error_figure(five).axes[0]
    gap = np.concatenate([y(series(ax, plots.GAP_U)), y(series(ax, plots.GAP_V))])
    zeros = [la.gap_cos_error_u == 0 or la.gap_cos_error_v == 0 for la in five.layers]
    assert any(zeros), "the fixture has an exact zero"
    ax.figure.canvas.draw()
    (floor,) = [tick for tick, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
                if label.get_text() == "0"]
    drawn = gap[np.isfinite(gap)]
    positive = np.array([v for la in five.layers for v in (la.gap_cos_error_u, la.gap_cos_error_v)
                         if v is not None and v > 0])
    assert drawn.min() == floor  # the zeros, on the floor
    assert positive.min() / 100 <= floor < positive.min()  # one decade (and a bit) below the rest
    assert floor / 2 < ax.get_ylim()[0] < floor  # the axis ends just under the floor


def test_nothing_to_draw_is_said_not_drawn_empty() -> None:
    """A checkpoint without SN: σ and cosine figures say so in words (no empty chart); a netG without
    SN beside an SN netD: not drawn, named under the panels."""
    root = Path(__file__).resolve().parents[2] / "sample_checkpoints"
    plain = analyze(root / "plain_discriminator.pt", device="cpu")
    for fig in (plots.sigma_figure(plain), plots.cos_error_figure(plain)):
        (ax,) = fig.axes
        assert not ax.axison and "no SN layer" in ax.texts[0].get_text()
    pair = analyze(root / "dcgan_sn_torch.pt", device="cpu", all_layers=True)
    assert [m.name for m in pair.models] == ["netD", "netG"]
    for fig in (plots.sigma_figure(pair), plots.cos_error_figure(pair)):
        assert not fig.subfigs  # one panel: netD
        assert "netG (no SN layer" in fig.get_supxlabel()
        labels = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
        assert "main.0" in labels and not any(label.startswith("…") for label in labels)  # whole names fit


def test_html_captions_say_what_is_drawn() -> None:
    from sninspect.render.html import _CAPTIONS

    assert "dashed" not in _CAPTIONS["cos_error"] and "dotted" in _CAPTIONS["cos_error"]
    assert "gap-aware" in _CAPTIONS["cos_error"] and "max_sigma" in _CAPTIONS["sigma"]


def test_cos_error_legend_names_only_series_with_values() -> None:
    """biggan-style SN stores u only: the cosine figure's legend names the u series, never an empty v."""
    from sninspect.render.plots.report import cos_error_figure

    report = analyze(Path(__file__).resolve().parents[2] / "sample_checkpoints" / "biggan_style_sn.pt",
                     device="cpu")
    assert all(la.cos_error_v is None for la in report.layers) and any(la.cos_error_u for la in report.layers)
    legend = next(ax.get_legend() for ax in cos_error_figure(report).axes if ax.get_legend() is not None)
    names = [text.get_text() for text in legend.get_texts()]
    assert any(name.startswith("u: ") for name in names)
    assert not any(name.startswith("v: ") for name in names), names
