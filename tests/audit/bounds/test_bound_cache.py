"""The bound cache: a second report reads the certified bounds back bit for bit instead of computing
them; a corrupt, read-only, foreign or locked cache is bypassed with one warning line and the bounds
computed afresh; concurrent runs write it safely; another algorithm version never reads an entry.
Oracles: the fresh computation (``--no-cache``), and a spy on the bound counting what is computed."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from builders import saved
from typer.testing import CliRunner

import sninspect
from sninspect.audit.bounds import cache as bound_cache
from sninspect.audit.bounds.cache import BoundCache, cache_path, cached_bound
from sninspect.cli import app
from sninspect.linalg import conv_bounds

runner = CliRunner()


def report_json(path: Path, *more: str) -> dict[str, Any]:
    result = runner.invoke(app, ["report", str(path), "--device", "cpu", "-f", "json", *more])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_cache_lives_in_the_tests_own_folder(_private_cache: Path) -> None:
    assert cache_path() == _private_cache / "sninspect" / "bounds.sqlite3"
    assert not str(cache_path()).startswith(str(Path.home() / ".cache"))


def test_a_second_report_reads_every_bound_back_identical(tmp_path: Path, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    fresh = report_json(path, "--no-cache")
    assert len(bound_calls) == 2 and not cache_path().exists()  # --no-cache neither reads nor writes
    first = report_json(path)
    assert len(bound_calls) == 4 and cache_path().is_file()
    bound_calls.clear()
    second = report_json(path, "--spectra")  # another format of output: the same bounds, none computed
    md = runner.invoke(app, ["report", str(path), "--device", "cpu", "-f", "markdown"])
    checked = runner.invoke(app, ["check", str(path), "--device", "cpu", "--max-lipschitz", "1e9",
                                  "--max-sigma", "inf", "--max-cos-error", "inf", "-q"])
    assert md.exit_code == 0 and checked.exit_code == 0, (md.output, checked.output)
    assert bound_calls == []
    for key in ("operator_bound", "operator_lower"):
        assert [la[key] for la in second["layers"]] == [la[key] for la in fresh["layers"]] \
            == [la[key] for la in first["layers"]]
    assert second["lipschitz"] == fresh["lipschitz"]
    second["layers"] = [{k: v for k, v in la.items() if k != "singular_values"} for la in second["layers"]]
    assert second == fresh  # the whole report, bit for bit


def test_the_key_holds_the_kernel_width_floor_and_version(monkeypatch: pytest.MonkeyPatch,
                                                        bound_calls: list[Any]) -> None:
    kernel = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cache = BoundCache()
    cpu = torch.device("cpu")
    base = cached_bound(cache, kernel, tol=0.01, device=cpu)
    assert cached_bound(cache, kernel.clone(), tol=0.01, device=cpu) == base and len(bound_calls) == 1
    other = kernel.clone()
    other[0, 0, 0, 0] += 1e-12  # one value moved: another kernel
    cached_bound(cache, other, tol=0.01, device=cpu)
    cached_bound(cache, kernel, tol=0.02, device=cpu)
    cached_bound(cache, kernel, tol=0.01, device=cpu, floor=0.5 * base.lower)
    cached_bound(cache, kernel.reshape(4, 3, 9, 1), tol=0.01, device=cpu)  # same bytes, another shape
    assert len(bound_calls) == 5
    monkeypatch.setattr(bound_cache, "_version", "another algorithm")
    assert cached_bound(cache, kernel, tol=0.01, device=cpu) == base and len(bound_calls) == 6
    assert cache.hits == 1
    cache.close()


def _one_warning(path: Path, recwarn: Any, bound_calls: list[Any]) -> tuple[dict[str, Any], str]:
    """A report with a cache that cannot be used: its JSON and the one warning line."""
    fresh = report_json(path, "--no-cache")
    bound_calls.clear()
    result = runner.invoke(app, ["report", str(path), "--device", "cpu", "-f", "json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "bound cache" in line]
    assert len(lines) == 1, result.stderr
    assert len(bound_calls) == 2  # computed, not guessed
    assert json.loads(result.stdout) == fresh
    return fresh, lines[0]


def test_a_corrupt_cache_is_bypassed_with_one_warning(tmp_path: Path, recwarn: Any, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    cache_path().parent.mkdir(parents=True)
    cache_path().write_bytes(b"not a database, " * 512)
    _fresh, line = _one_warning(path, recwarn, bound_calls)
    assert line.startswith("sninspect: warning: bound cache ") and "bypassed" in line
    assert cache_path().read_bytes() == b"not a database, " * 512  # left as it was


def test_a_cache_with_garbage_rows_is_bypassed(tmp_path: Path, recwarn: Any, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    report_json(path)  # fill it
    with sqlite3.connect(cache_path()) as db:
        db.execute("UPDATE bounds SET value = '{\"upper\": \"nan\"}'")
    db.close()
    _one_warning(path, recwarn, bound_calls)


def test_a_foreign_database_is_not_trusted(tmp_path: Path, recwarn: Any, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    cache_path().parent.mkdir(parents=True)
    with sqlite3.connect(cache_path()) as db:
        db.execute("CREATE TABLE bounds (key TEXT PRIMARY KEY, value TEXT)")
    db.close()
    _fresh, line = _one_warning(path, recwarn, bound_calls)
    assert "another program's database" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_cache_is_bypassed(tmp_path: Path, recwarn: Any, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    folder = cache_path().parent
    folder.mkdir(parents=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        _one_warning(path, recwarn, bound_calls)
    finally:
        folder.chmod(stat.S_IRWXU)


def test_a_read_only_database_serves_what_it_holds_and_is_bypassed_for_writes(
        tmp_path: Path, recwarn: Any, bound_calls: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Opened read-only by SQLite itself (root included): the bounds it holds are read back; the first
    one it cannot add gives the one warning, and the bounds are computed."""
    path = saved(tmp_path / "D.pt")
    held = report_json(path, "--bound-tol", "0.05")
    connect = sqlite3.connect

    def read_only(where: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(f"file:{where}?mode=ro", uri=True, **kwargs)

    monkeypatch.setattr(bound_cache.sqlite3, "connect", read_only)
    bound_calls.clear()
    result = runner.invoke(app, ["report", str(path), "--device", "cpu", "-f", "json", "--bound-tol", "0.05"])
    assert result.exit_code == 0 and "bound cache" not in result.stderr, result.output
    assert bound_calls == [] and json.loads(result.stdout) == held
    _one_warning(path, recwarn, bound_calls)


def test_a_cache_in_a_place_that_cannot_be_written_is_bypassed(
        tmp_path: Path, recwarn: Any, bound_calls: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only for every user, root included: the cache folder's parent is a file."""
    path = saved(tmp_path / "D.pt")
    blocker = tmp_path / "xdg"
    blocker.write_text("a file where the cache folder's parent should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    _fresh, line = _one_warning(path, recwarn, bound_calls)
    assert "cannot be opened" in line


def test_a_locked_cache_is_bypassed(tmp_path: Path, recwarn: Any, bound_calls: list[Any],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path / "D.pt")
    report_json(path, "--bound-tol", "0.05")  # made, WAL
    monkeypatch.setattr(bound_cache, "BUSY_MS", 200)
    holder = sqlite3.connect(cache_path(), isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")  # another run holding the lock past the timeout
    try:
        _fresh, line = _one_warning(path, recwarn, bound_calls)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in line


def _writer(args: tuple[str, int]) -> list[float]:
    """One process of the concurrency test: bounds of 6 kernels (3 shared by every process), cached."""
    folder, seed = args
    os.environ["XDG_CACHE_HOME"] = folder
    torch.set_num_threads(1)
    cache = BoundCache(warn=lambda line: (_ for _ in ()).throw(AssertionError(line)))
    out = []
    for i in [0, 1, 2, 10 + seed, 20 + seed, 30 + seed]:
        kernel = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        bound = cached_bound(cache, kernel, tol=0.05, device=torch.device("cpu"))
        out += [bound.upper, bound.lower]
    cache.close()
    return out


def test_concurrent_runs_write_the_cache_safely(_private_cache: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.map(_writer, [(str(_private_cache), seed) for seed in range(4)])
    for seed, values in enumerate(results):
        fresh = []
        for i in [0, 1, 2, 10 + seed, 20 + seed, 30 + seed]:
            kernel = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
            bound = conv_bounds.conv_operator_bound(kernel, tol=0.05, device="cpu")
            fresh += [bound.upper, bound.lower]
        assert values == fresh
    with sqlite3.connect(cache_path()) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM bounds").fetchone()[0] == 3 + 3 * 4
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = BoundCache()
    kernel = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cached_bound(again, kernel, tol=0.05, device=torch.device("cpu"))
    assert again.hits == 1
    again.close()


def test_the_library_warns_once_and_goes_on(tmp_path: Path) -> None:
    path = saved(tmp_path / "D.pt")
    cache_path().parent.mkdir(parents=True)
    cache_path().write_bytes(b"\0" * 4096 + b"garbage")
    with pytest.warns(RuntimeWarning, match="bound cache .* bypassed") as caught:
        report = sninspect.analyze(path, device="cpu")
    assert len([w for w in caught if "bound cache" in str(w.message)]) == 1
    assert report.primary.lipschitz.operator_product is not None
