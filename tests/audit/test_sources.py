"""``sninspect.analyze`` for every source: a path, a binary file object, a state dict (wrapped or not)
and a live ``nn.Module``. The oracle is the audit of the same weights saved with ``torch.save``: every
number equal (to 1e-12), and a module's state, training flag and RNG untouched (bitwise)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from builders import assert_same_report
from conftest import CASES, build_trained
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm

import sninspect
from sninspect.errors import MissingFileError, SninspectError, UnknownKeyError, UsageError

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"
SN_APIS = {"hook": spectral_norm, "parametrize": parametrizations.spectral_norm}


def discriminator(sn: Any) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        sn(nn.Conv2d(3, 8, 3, 1, 1)), nn.LeakyReLU(0.1),
        sn(nn.Conv2d(8, 16, 4, 2, 1)), nn.LeakyReLU(0.1),
        nn.Flatten(), sn(nn.Linear(16 * 4 * 4, 1)),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):  # u, v and the weights move away from their initial values
        loss = model(torch.randn(4, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, by name, cloned (u, v, weight_orig, original, _u, _v ...)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(dict(model.named_buffers(remove_duplicate=False)))
    return {k: v.detach().clone() for k, v in named.items()}


# ----------------------------------------------------------------------------------------------
# every source gives the numbers of the saved file


@pytest.mark.parametrize("api", list(SN_APIS))
def test_module_state_dict_stream_and_path_give_the_same_numbers(api: str, tmp_path: Path) -> None:
    model = discriminator(SN_APIS[api])
    path = tmp_path / "D.pt"
    torch.save(model.state_dict(), path)
    saved = sninspect.analyze(path, device="cpu")
    assert [la.has_sn for la in saved.layers] == [True, True, True]
    live = sninspect.analyze(model)
    assert (live.checkpoint, live.format, live.device) == ("<Sequential>", "module", "cpu")
    assert_same_report(live, saved)
    assert_same_report(sninspect.analyze(model.state_dict()), saved)
    assert_same_report(sninspect.analyze({"model": model.state_dict(), "step": 7}), saved)
    assert sninspect.analyze({"model": model.state_dict(), "step": 7}).extras == {"step": 7}
    assert_same_report(sninspect.analyze(io.BytesIO(path.read_bytes())), saved)
    with open(path, "rb") as f:
        streamed = sninspect.analyze(f)
    assert streamed.checkpoint == str(path)  # an open file is named by its path
    assert_same_report(streamed, saved)


@pytest.mark.parametrize(("kind", "dialect"), [c for c in CASES if c[1] != "torch-none"],
                         ids=[f"{k}-{d}" for k, d in CASES if d != "torch-none"])
def test_every_dialects_module_equals_its_saved_state(kind: str, dialect: str, tmp_path: Path) -> None:
    trained = build_trained(kind, dialect)
    trained.model.train()
    path = tmp_path / "layer.pt"
    torch.save(trained.state, path)
    before = snapshot(trained.model)
    live = sninspect.analyze(trained.model)
    assert_same_report(live, sninspect.analyze(path, device="cpu"))
    after = snapshot(trained.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_pair_of_modules_in_a_dict_is_audited_as_a_pair(tmp_path: Path) -> None:
    D, G = discriminator(spectral_norm), discriminator(parametrizations.spectral_norm)
    path = tmp_path / "pair.pt"
    torch.save({"netG": G.state_dict(), "netD": D.state_dict(), "step": 3}, path)
    live = sninspect.analyze({"netG": G, "netD": D, "step": 3})
    assert live.format == "module" and [m.name for m in live.models] == ["netG", "netD"]
    assert_same_report(live, sninspect.analyze(path, device="cpu"))
    assert_same_report(sninspect.analyze({"netG": G, "netD": D}, key="netD"),
                       sninspect.analyze(path, device="cpu", key="netD"))


def test_the_bundled_samples_give_the_same_numbers_from_a_stream_and_a_state_dict() -> None:
    path = SAMPLES / "dcgan_sn_torch.pt"
    saved = sninspect.analyze(path, device="cpu", key="netD")
    container = torch.load(path, weights_only=True)
    assert_same_report(sninspect.analyze(container, key="netD"), saved)
    assert_same_report(sninspect.analyze(io.BytesIO(path.read_bytes()), key="netD"), saved)
    tensors = SAMPLES / "mlp_sn_parametrize.safetensors"
    with open(tensors, "rb") as f:
        assert_same_report(sninspect.analyze(f, device="cpu"), sninspect.analyze(tensors, device="cpu"))


@settings(max_examples=8, deadline=None)
@given(out=st.integers(1, 9), cin=st.integers(1, 6), k=st.integers(1, 3), api=st.sampled_from(list(SN_APIS)),
       linear=st.booleans(), seed=st.integers(0, 2**16))
def test_any_shape_live_equals_saved(out: int, cin: int, k: int, api: str, linear: bool, seed: int) -> None:
    torch.manual_seed(seed)
    layer = nn.Linear(cin * k, out) if linear else nn.Conv2d(cin, out, k)
    model = nn.Sequential(SN_APIS[api](layer))
    model(torch.randn(2, cin * k) if linear else torch.randn(2, cin, k + 2, k + 2))  # one power step
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    saved = sninspect.analyze(io.BytesIO(buffer.getvalue()), device="cpu")
    assert_same_report(sninspect.analyze(model), saved)


# ----------------------------------------------------------------------------------------------
# a live module's state is untouched


@pytest.mark.parametrize("api", list(SN_APIS))
@pytest.mark.parametrize("training", [True, False])
def test_auditing_a_module_changes_nothing(api: str, training: bool) -> None:
    model = discriminator(SN_APIS[api])
    model.train(training)
    twin = discriminator(SN_APIS[api]).train(training)  # built the same way, never audited
    before = snapshot(model)
    assert all(torch.equal(before[k], v) for k, v in snapshot(twin).items())
    assert any(k.endswith(("weight_u", "_u")) for k in before) and any(k.endswith(("weight_v", "_v")) for k in before)
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    sninspect.analyze(model)

    assert torch.equal(rng, torch.get_rng_state())
    if cuda_rng is not None:
        assert all(torch.equal(a, b) for a, b in zip(cuda_rng, torch.cuda.get_rng_state_all(), strict=True))
    after = snapshot(model)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert model.training is training and all(m.training is training for m in model.modules())
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(model(x), twin(x))  # in training mode both run the same power step
    assert torch.equal(model(x), twin(x))
    for key, value in snapshot(twin).items():
        assert torch.equal(snapshot(model)[key], value), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("api", list(SN_APIS))
def test_a_cuda_module_is_audited_on_cuda_without_a_cpu_copy(api: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = discriminator(SN_APIS[api]).cuda().train()
    path = tmp_path / "D.pt"
    torch.save(model.state_dict(), path)
    saved = sninspect.analyze(path, device="cpu")
    before = snapshot(model)
    moved: list[tuple[int, ...]] = []
    original = torch.Tensor.cpu

    def spy(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.dim() >= 2:  # a weight-sized tensor brought to the CPU
            moved.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", spy)
    live = sninspect.analyze(model)
    monkeypatch.undo()
    assert live.device.startswith("cuda") and not moved
    assert_same_report(live, saved)
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


# ----------------------------------------------------------------------------------------------
# sources refused, errors that are built-ins too and speak Python


def test_library_errors_are_builtin_errors_and_name_keyword_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        sninspect.analyze(tmp_path / "nope.pt")
    assert isinstance(missing.value, MissingFileError) and isinstance(missing.value, SninspectError)
    state = discriminator(spectral_norm).state_dict()
    with pytest.raises(KeyError) as unknown:
        sninspect.analyze({"netD": state}, key="netG")
    assert isinstance(unknown.value, UnknownKeyError)
    assert str(unknown.value) == "<state dict>: no entry 'netG' (keys holding tensors: netD)"
    for kwargs, text in [({"device": "gpu"}, "device='gpu': expected auto, cpu, cuda or cuda:N"),
                         ({"dtype": "float16"}, "dtype='float16': expected float64 or float32"),
                         ({"include": "zzz"}, "include='zzz' leaves no layer"),
                         ({"include": "("}, "include='(': not a valid regular expression")]:
        with pytest.raises(ValueError) as bad:
            sninspect.analyze(state, **kwargs)
        assert isinstance(bad.value, UsageError) and text in str(bad.value) and "--" not in str(bad.value)
    torch.save({"netD": state}, tmp_path / "wrapped.pt")
    with pytest.raises(KeyError, match="no entry 'x'"):
        sninspect.analyze(tmp_path / "wrapped.pt", key="x")


def test_the_cli_still_names_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sninspect.cli import app

    torch.save({"netD": discriminator(spectral_norm).state_dict()}, tmp_path / "wrapped.pt")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "wrapped.pt"), "--device", "cpu",
                                      "--include", "zzz"])
    assert result.exit_code == 2 and "--include 'zzz' leaves no layer" in result.output
    with pytest.raises(ValueError) as after:  # and the library speaks Python again after it
        sninspect.analyze(tmp_path / "wrapped.pt", include="zzz")
    assert ": include='zzz' leaves no layer" in str(after.value) and "--include" not in str(after.value)


def test_refused_sources_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a folder.*analyze_run"):
        sninspect.analyze(tmp_path)
    with pytest.raises(ValueError, match="cannot audit a int"):
        sninspect.analyze(3)  # type: ignore[arg-type]
    (tmp_path / "D.pt").write_bytes(b"")
    with open(tmp_path / "D.pt", "rb") as empty, pytest.raises(SninspectError, match="empty"):
        sninspect.analyze(empty)
    closed = io.BytesIO(b"x")
    closed.close()
    with pytest.raises(SninspectError, match="cannot read"):
        sninspect.analyze(closed)
    torch.save(discriminator(spectral_norm).state_dict(), tmp_path / "D.pt")
    with open(tmp_path / "D.pt") as text, pytest.raises(ValueError, match="binary mode"):
        sninspect.analyze(text)
    spent = io.BytesIO((tmp_path / "D.pt").read_bytes())
    spent.read()
    with pytest.raises(SninspectError, match="seek"):
        sninspect.analyze(spent)
    with pytest.raises(SninspectError, match="not a checkpoint"):
        sninspect.analyze(io.BytesIO(b"garbage bytes, not a checkpoint"))


def test_analyze_run_audits_a_folder_as_the_cli_orders_it(tmp_path: Path) -> None:
    model = discriminator(spectral_norm)
    for step in (20, 100, 3):
        with torch.no_grad():
            model[0].weight_orig.mul_(1.01)
        torch.save({"model": model.state_dict(), "step": step}, tmp_path / f"ckpt_{step}.pt")
    run = sninspect.analyze_run(tmp_path, device="cpu")
    assert run.order_by == "step" and run.steps == (3.0, 20.0, 100.0)
    for path, report in zip(sorted(tmp_path.glob("*.pt"), key=lambda p: int(p.stem[5:])), run.reports,
                            strict=True):
        assert_same_report(report, sninspect.analyze(path, device="cpu"))
    listed = sninspect.analyze_run([tmp_path / "ckpt_100.pt", tmp_path / "ckpt_3.pt"], device="cpu")
    assert listed.steps == (3.0, 100.0)
    assert sninspect.trend(list(reversed(run.reports))).steps == run.steps
    with pytest.raises(ValueError, match="one source is one checkpoint"):
        sninspect.analyze_run(model)  # type: ignore[arg-type]


def test_wrong_kinds_of_arguments_are_usage_errors() -> None:
    """Attack review: an unknown override raised TypeError (from dataclasses.replace), analyze_run(5)
    TypeError, trend([1]) and check(5) AttributeError; each is now a UsageError naming what is wrong."""
    net = nn.Linear(2, 2)
    with pytest.raises(UsageError, match="unknown option 'nosuch'.*bound_tol"):
        sninspect.analyze(net, nosuch=1)
    with pytest.raises(UsageError, match="expected a sninspect.Options"):
        sninspect.analyze(net, {"device": "cpu"})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot read a int"):
        sninspect.analyze_run(5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="where a Report was expected"):
        sninspect.trend([sninspect.analyze(net), 1])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="expected a Report"):
        sninspect.check(5)  # type: ignore[arg-type]
