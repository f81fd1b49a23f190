"""``report --format html``: one page that parses, embeds its images and references nothing outside."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest
import snruns
from typer.testing import CliRunner

from sninspect import analyze
from sninspect.cli.main import app
from sninspect.render.html import to_html
from sninspect.results.report import Report

runner = CliRunner()


class Page(HTMLParser):
    """Collects every tag with its attributes; fails on unbalanced structure elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in {"html", "body", "section", "table", "details", "figure", "ul"}:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in {"html", "body", "section", "table", "details", "figure", "ul"}:
            assert self.open and self.open[-1] == tag, (self.open, tag)
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert page.open == [], page.open
    return page


def assert_self_contained(page: Page) -> None:
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, name, value[:60])
            if tag == "img" and name == "src":
                assert value.startswith("data:image/png;base64,")
        assert tag not in {"link", "script", "iframe", "object", "embed", "base"}, tag
        assert "url(" not in (attrs.get("style") or "")
    style = "".join(page.text)
    assert "@import" not in style


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[Report]:
    folder = tmp_path_factory.mktemp("html")
    model = snruns.sn_chain([5, 6, 1])
    bad = snruns.exact_uv(snruns.sn_chain([5, 6, 1]))
    snruns.skew_u(snruns.sn_modules(bad)[0])
    paths = [snruns.save(model, folder / "D_<2>.pt", step=2), snruns.save(bad, folder / "D_1.pt", step=1)]
    return [analyze(p, device="cpu") for p in paths]


def test_one_checkpoint_page(reports: list[Report]) -> None:
    text = to_html(reports[0])
    assert text.startswith("<!DOCTYPE html>")
    page = parse(text)
    assert_self_contained(page)
    images = page.named("img")
    assert len(images) == 4  # sigma, cos_error, spectra, lipschitz_depth
    for attrs in images:
        payload = (attrs["src"] or "").split(",", 1)[1]
        assert base64.b64decode(payload, validate=True).startswith(b"\x89PNG\r\n\x1a\n")
        assert attrs.get("alt")
    assert len(page.named("table")) == 2  # the layers, and the Columns legend after them
    body = "".join(page.text)
    assert "D_<2>.pt" in body  # the name is escaped, not markup
    assert "0.weight" in body and "2.weight" in body and "certified operator product" in body
    assert "1-Lipschitz" in body
    assert "Columns" in body and "sigma_effective" in body  # what each column means, with its JSON field


def test_run_page_through_the_cli(reports: list[Report], tmp_path: Path) -> None:
    out = tmp_path / "run.html"
    result = runner.invoke(app, ["report", *(r.checkpoint for r in reports), "-f", "html", "-o", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    page = parse(out.read_text(encoding="utf-8"))
    assert_self_contained(page)
    assert len(page.named("img")) == 2 + 4 * 2  # trend_sigma, trend_cos_error; four per checkpoint
    assert len(page.named("details")) == 2
    assert len(page.named("table")) == 2 + 2 + 1  # run summary, per-layer trend, one per checkpoint, Columns
    body = "".join(page.text)
    assert body.index("D_1.pt") < body.index("D_<2>.pt")  # ordered by step
    assert "Training run" in body
    assert any("above" in (attrs.get("class") or "") for attrs in page.named("td"))  # the skewed layer
