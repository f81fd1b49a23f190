"""Bad layers, odd tensor kinds and memory: each becomes one layer's error (exit 0 for ``report``,
the good layers still numbers), never an internal error (exit 5) or an OOM kill."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import spectral_norm
from typer.testing import CliRunner

from sninspect.audit.memory import format_size, parse_size, spectra_bytes
from sninspect.cli.main import app
from sninspect.errors import ExitCode, UsageError

runner = CliRunner()


def good_layer() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    layer = spectral_norm(nn.Linear(8, 6))
    layer(torch.randn(2, 8))
    return {"good." + k: v for k, v in layer.state_dict().items()}


def sigma1(weight: torch.Tensor) -> float:
    """The oracle: numpy's SVD of the weight as a (rows, cols) matrix."""
    w = weight.detach().to(torch.float64).reshape(weight.shape[0], -1).numpy()
    return float(np.linalg.svd(w, compute_uv=False)[0])


def report(path: Path, *args: str) -> tuple[dict, object]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["report", str(path), "--all", "-q", "-f", "json", "--device", "cpu", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def layer(data: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(la for la in data["layers"] if la["name"] == name)


def assert_good_layer_intact(data: dict, state: dict[str, torch.Tensor]) -> None:  # type: ignore[type-arg]
    good = layer(data, "good.weight")
    assert good["error"] is None
    assert good["sigma_exact"] == pytest.approx(sigma1(state["good.weight_orig"]), rel=1e-10)


def save(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "ck.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


# --- per-layer errors ---------------------------------------------------------------------------


def with_batchnorm(gamma: int, var: int) -> dict[str, torch.Tensor]:
    state = good_layer()
    state.update({"bn.weight": torch.ones(gamma), "bn.bias": torch.zeros(gamma),
                  "bn.running_mean": torch.zeros(var), "bn.running_var": torch.ones(var)})
    return state


@pytest.mark.parametrize(("gamma", "var", "words"), [
    (5, 3, "BatchNorm weight has 5 entries, running_var 3"),
    (0, 0, "running_var is empty"),
])
def test_broken_batchnorm_is_its_own_error(tmp_path: Path, gamma: int, var: int, words: str) -> None:
    state = with_batchnorm(gamma, var)
    data, _ = report(save(tmp_path, state))
    assert_good_layer_intact(data, state)
    assert any(f"BatchNorm 'bn' not audited: {words}" in w for w in data["warnings"])
    assert data["lipschitz"]["operator_product"] is None  # no certified product without the BatchNorm
    assert data["lipschitz"]["matrix_product"] == pytest.approx(layer(data, "good.weight")["sigma_effective"])


def test_version_none_layer_with_nan_buffer(tmp_path: Path) -> None:
    torch.manual_seed(1)
    old = spectral_norm(nn.Linear(8, 6))
    old(torch.randn(2, 8))
    state = good_layer()
    state.update({"old." + k: v for k, v in old.state_dict().items() if not k.endswith("_v")})
    state["old.weight"] = torch.full((6, 8), float("nan"))  # the version-None eval buffer
    data, _ = report(save(tmp_path, state))
    assert_good_layer_intact(data, state)
    assert "buffer 'old.weight' holds NaN" in layer(data, "old.weight")["error"]


def test_solver_failure_is_one_layers_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An eigh/SVD that does not converge (LAPACK on an ill-conditioned matrix) fails that layer only."""
    state = good_layer()
    torch.manual_seed(2)
    state["bad.weight"] = torch.randn(7, 5)  # a shape of its own: solved in its own batch
    real_svd = torch.linalg.svd

    def failing_svd(a, *args, **kwargs):  # type: ignore[no-untyped-def]
        if a.shape[-2:] == (7, 5) or a.shape[-2:] == (5, 7):
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge because the input "
                                           "matrix is ill-conditioned or has too many repeated singular values")
        return real_svd(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", failing_svd)
    data, _ = report(save(tmp_path, state))
    assert_good_layer_intact(data, state)
    error = layer(data, "bad.weight")["error"]
    assert error.startswith("solver failed: linalg.svd: The algorithm failed to converge")


def test_linalg_raises_typed_errors() -> None:
    from sninspect.errors import LinalgError, OperandError, SolverError
    from sninspect.linalg.conv_bounds import conv_operator_bound
    from sninspect.linalg.exact import exact_spectra
    from sninspect.linalg.network import batchnorm_factor

    with pytest.raises(OperandError):
        batchnorm_factor(torch.ones(2), torch.ones(3))
    with pytest.raises(OperandError, match="NaN"):
        conv_operator_bound(torch.full((2, 2, 3, 3), float("nan")))
    with pytest.raises(SolverError, match="solver failed"):
        exact_spectra([torch.full((3, 3), float("nan"), dtype=torch.float64)], method="svd")
    assert issubclass(OperandError, ValueError) and issubclass(SolverError, LinalgError)


# --- tensor kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize(("tensor", "words"), [
    (torch.randn(4, 3, dtype=torch.complex64), "is complex (complex64)"),
    (torch.empty(4, 3, device="meta"), "is a meta tensor"),
    (torch.randint(0, 5, (4, 3)), "holds integers (int64)"),
    (torch.ones(4, 3, dtype=torch.bool), "holds booleans"),
])
def test_refused_kinds_torch(tmp_path: Path, tensor: torch.Tensor, words: str) -> None:
    state = good_layer()
    state["c.weight"] = tensor
    data, result = report(save(tmp_path, state))
    assert_good_layer_intact(data, state)
    assert words in layer(data, "c.weight")["error"]
    assert "Warning" not in result.stderr  # no Python warning about a discarded imaginary part


@pytest.mark.parametrize(("tensor", "words"), [
    (torch.randn(4, 3, dtype=torch.complex64), "is complex"),
    (torch.randint(0, 5, (4, 3), dtype=torch.int32), "holds integers (int32)"),
    (torch.ones(4, 3, dtype=torch.bool), "holds booleans"),
])
def test_refused_kinds_safetensors(tmp_path: Path, tensor: torch.Tensor, words: str) -> None:
    state = good_layer()
    state["c.weight"] = tensor
    path = tmp_path / "ck.safetensors"
    save_file(state, str(path))
    data, _ = report(path)
    assert_good_layer_intact(data, state)
    assert words in layer(data, "c.weight")["error"]


def test_complex_sn_weight_refused(tmp_path: Path) -> None:
    state = good_layer()
    other = {k.replace("good.", "cx."): v for k, v in good_layer().items()}
    other["cx.weight_orig"] = other["cx.weight_orig"].to(torch.complex128)
    state.update(other)
    data, _ = report(save(tmp_path, state))
    assert_good_layer_intact(data, state)
    assert "'cx.weight_orig' is complex (complex128)" in layer(data, "cx.weight")["error"]


def test_sparse_densify_guard(tmp_path: Path) -> None:
    """Densifying alone over the budget: refused by the guard around the conversion."""
    from sninspect.audit.layers.tensors import usable_tensor
    from sninspect.audit.memory import Budget
    from sninspect.errors import MemoryBudgetError

    sparse = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.ones(1), (1000, 1000))
    with pytest.raises(MemoryBudgetError, match=r"densifying sparse 'x' needs ~3.8 MiB, over the 1.0 MiB"):
        usable_tensor("x", sparse, Budget(2**20, "--max-memory"))
    dense, note = usable_tensor("x", sparse, Budget(2**30))
    assert float(dense.sum()) == 1.0 and note == "'x' is sparse (sparse_coo): densified"


def test_quantized_dequantized_with_note(tmp_path: Path) -> None:
    state = good_layer()
    torch.manual_seed(3)
    quantized = torch.quantize_per_tensor(torch.randn(4, 3), 0.05, 0, torch.qint8)
    state["q.weight"] = quantized
    data, _ = report(save(tmp_path, state))
    q = layer(data, "q.weight")
    assert q["error"] is None
    assert q["sigma_exact"] == pytest.approx(sigma1(quantized.dequantize()), rel=1e-10)
    assert any("quantized (qint8): dequantized" in n for n in q["notes"])


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_densified(tmp_path: Path, layout: str) -> None:
    state = good_layer()
    torch.manual_seed(4)
    dense = torch.randn(5, 4) * (torch.rand(5, 4) > 0.5)
    state["s.weight"] = dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()
    data, _ = report(save(tmp_path, state))
    s = layer(data, "s.weight")
    assert s["error"] is None
    assert s["sigma_exact"] == pytest.approx(sigma1(dense), rel=1e-10)
    assert any("sparse" in n and "densified" in n for n in s["notes"])


# --- memory guard ------------------------------------------------------------------------------


def test_parse_size() -> None:
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("4000") == 4000
    with pytest.raises(UsageError):
        parse_size("lots")


def test_layer_over_the_budget_refused_with_its_size(tmp_path: Path) -> None:
    state = good_layer()
    torch.manual_seed(5)
    state["wide.weight"] = torch.randn(256, 256)
    data, _ = report(save(tmp_path, state), "--max-memory", "1M")
    needed = spectra_bytes(1, 256, 256, 8)
    assert needed > 2 * 256 * 256 * 8  # the block and at least one working copy
    assert layer(data, "wide.weight")["error"] == (
        f"needs ~{format_size(needed)}, over the 1.0 MiB budget (--max-memory)")
    assert_good_layer_intact(data, state)


def test_huge_sparse_claim_refused_quickly(tmp_path: Path) -> None:
    """A 30000×30000 weight stored as a one-entry sparse tensor: refused from its shape, before it is
    densified (7.2 GB) or solved."""
    state = good_layer()
    indices = torch.tensor([[0], [0]])
    state["huge.weight"] = torch.sparse_coo_tensor(indices, torch.ones(1), (30000, 30000))
    data, _ = report(save(tmp_path, state), "--max-memory", "2G")
    error = layer(data, "huge.weight")["error"]
    needed = spectra_bytes(1, 30000, 30000, 8)
    assert needed > 30000 * 30000 * 8  # at least the float64 matrix itself (6.7 GiB)
    assert error == f"needs ~{format_size(needed)}, over the 2.0 GiB budget (--max-memory)"
    assert_good_layer_intact(data, state)


def conv_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(6)
    conv = spectral_norm(nn.Conv2d(3, 4, 3))
    conv(torch.randn(1, 3, 8, 8))
    return {"conv." + k: v for k, v in conv.state_dict().items()}


def test_input_size_beyond_budget_refused(tmp_path: Path) -> None:
    data, result = report(save(tmp_path, conv_state()), "--input-size", "100000")
    conv = layer(data, "conv.weight")
    assert conv["error"].startswith("the norm at --input-size 100000×100000 needs ~")
    assert "budget" in conv["error"]
    assert conv["sigma_exact"] is not None  # the numbers found before stay


def test_bound_tol_beyond_budget_refused(tmp_path: Path) -> None:
    data, _ = report(save(tmp_path, conv_state()), "--bound-tol", "1e-6", "--max-memory", "100M")
    error = layer(data, "conv.weight")["error"]
    assert error.startswith("the certified conv bound at --bound-tol 1e-06 (a ")
    assert "over the 100.0 MiB budget (--max-memory)" in error


def test_stride0_view_file_refused(tmp_path: Path) -> None:
    state = good_layer()
    state["big.weight"] = torch.zeros(1).expand(20000, 20000)
    path = save(tmp_path, state)
    assert path.stat().st_size < 10_000
    result = runner.invoke(app, ["report", str(path), "-q"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "shape [20000, 20000] claims 1600000000 bytes but is a view over 4 bytes" in result.stderr


def test_dag_of_lists_does_not_hang(tmp_path: Path) -> None:
    optimizer = {"state": {}, "param_groups": []}
    dag: object = [optimizer]
    for _ in range(60):
        dag = [dag, dag]  # 2^60 paths, 61 objects
    state = {"model": good_layer(), "optimizer_states": dag}
    path = save(tmp_path, state)
    start = time.monotonic()
    result = runner.invoke(app, ["strip", str(path), "-o", str(tmp_path / "out.pt"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 600  # would never end if the walk followed every path


# --- several checkpoints -----------------------------------------------------------------------


def test_folder_with_one_bad_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for step in (1, 2, 3):
        torch.save(good_layer(), folder / f"ck_{step}.pt")
    (folder / "ck_9.pt").write_bytes(b"not a checkpoint at all")
    result = runner.invoke(app, ["report", str(folder), "-q", "-f", "json", "--device", "cpu"])
    assert result.exit_code == ExitCode.BAD_INPUT
    data = json.loads(result.stdout)
    assert [Path(r["checkpoint"]).name for r in data["checkpoints"]] == ["ck_1.pt", "ck_2.pt", "ck_3.pt"]
    assert "ck_9.pt: not a checkpoint" in result.stderr
    assert "1 of 4 checkpoints could not be read" in result.stderr
    assert "Traceback" not in result.output


class _HugeBuffer:
    """Pickles as ``bytearray(4e9)``: what weights_only allows, and 4 GB of zeros at load time."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (bytearray, (4_000_000_000,))


def test_bytearray_size_claim_in_the_pickle_is_refused(tmp_path: Path) -> None:
    """A 1 kB torch zip whose data.pkl asks for bytearray(4e9) is refused before torch.load runs."""
    import io
    import pickle
    import zipfile

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2, 2)}, buf)
    source = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    path = tmp_path / "huge_buffer.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps({"w": _HugeBuffer()}, protocol=2)
            out.writestr(info, data)
    assert path.stat().st_size < 4096
    result = runner.invoke(app, ["report", str(path), "-q"])
    assert result.exit_code == 3, result.output
    assert "bytearray(4000000000)" in result.output


PEAK_PROBE = """
import gc, re, sys, torch
from pathlib import Path
from sninspect.audit.memory import conv_bound_bytes
from sninspect.linalg.conv_bounds import conv_operator_bound, grid_sizes
def status(field):  # kB → bytes; VmHWM is this image's own peak (ru_maxrss keeps the forking parent's)
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024
n = int(sys.argv[1])
w = torch.randn(n, n, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / (3 * n**0.5)
torch.linalg.cholesky_ex(torch.eye(4, dtype=torch.complex128))  # LAPACK loaded before the baseline
gc.collect()
try:
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
except OSError:
    pass  # the peak since start-up then: a weaker test, not a flaky one
before = status("VmHWM")
conv_operator_bound(w, tol=0.01)
print(status("VmHWM") - before, conv_bound_bytes((n, n, 3, 3), grid_sizes((3, 3), 0.01)))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak RSS")
@pytest.mark.parametrize("channels", [64, 192])
def test_conv_bound_estimate_covers_the_measured_peak(channels: int) -> None:
    """The memory guard's estimate of one certified conv bound is at least the peak RSS growth it causes,
    measured in a fresh process (where the small sizes' library workspaces dominate). Linux only."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(channels)], capture_output=True, text=True,
                          timeout=300, check=True)
    growth, estimate = (int(v) for v in done.stdout.split())
    assert growth > 0
    assert estimate >= growth, (growth, estimate)
