"""The strip / apply / convert commands: what they write, what they keep, and safe writing."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import build_trained, cli, plain_layer
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm

from sninspect.errors import ExitCode

Ckpt = tuple[Path, nn.Sequential]


def architecture() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 1))


def sn_model(style: str = "torch") -> nn.Sequential:
    torch.manual_seed(0)
    model = architecture()
    wrap = spectral_norm if style == "torch" else parametrizations.spectral_norm
    wrap(model[0])
    wrap(model[4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model(torch.randn(5, 3, 4, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.opt = opt  # type: ignore[assignment]
    return model


def output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x).double()


@pytest.fixture
def wrapped_ckpt(tmp_path: Path) -> Ckpt:
    model = sn_model()
    path = tmp_path / "d.ckpt"
    torch.save({"netD": model.state_dict(), "optimizer": model.opt.state_dict(), "epoch": 12,
                "hparams": {"lr": 0.01, "sn": True}}, path)
    return path, model


# ----------------------------------------------------------------------------------------------
# What the commands write


def test_strip_keeps_the_wrapper_and_drops_the_optimizer(
    wrapped_ckpt: Ckpt, tmp_path: Path
) -> None:
    source, model = wrapped_ckpt
    out = tmp_path / "plain.pt"
    result = cli("strip", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert "optimizer state dropped" in result.stderr and "0.weight" in result.stderr
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"netD", "epoch", "hparams"}
    assert saved["epoch"] == 12 and saved["hparams"]["sn"] is True
    plain = architecture()
    plain.load_state_dict(saved["netD"], strict=True)
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(output(plain, x), output(model, x), rtol=1e-6, atol=1e-7)

    kept = tmp_path / "kept.pt"
    assert cli("strip", source, "-o", kept, "--keep-optimizer").exit_code == 0
    assert "optimizer" in torch.load(kept, weights_only=True)


def test_strip_to_safetensors_keeps_metadata_and_adds_provenance(tmp_path: Path) -> None:
    model = sn_model("parametrize")
    source = tmp_path / "d.safetensors"
    save_file(dict(model.state_dict()), source, metadata={"run": "abc"})
    out = tmp_path / "plain.safetensors"
    result = cli("strip", source, "-o", out, "--sigma", "exact")
    assert result.exit_code == 0, result.output
    with safe_open(out, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["run"] == "abc" and '"sigma": "exact"' in metadata["sninspect"]
    plain = architecture()
    plain.load_state_dict(load_file(out), strict=True)


def test_wrapper_entries_become_safetensors_metadata(
    wrapped_ckpt: Ckpt, tmp_path: Path
) -> None:
    source, _ = wrapped_ckpt
    out = tmp_path / "plain.safetensors"
    assert cli("strip", source, "-o", out).exit_code == 0
    with safe_open(out, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["epoch"] == "12" and '"lr": 0.01' in metadata["hparams"]


@pytest.mark.parametrize("style", ["torch", "parametrize"])
def test_apply_then_load_strict_into_the_sn_model(tmp_path: Path, style: str) -> None:
    torch.manual_seed(1)
    plain = architecture()
    source = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), source)
    out = tmp_path / "sn.pt"
    result = cli("apply", source, "-o", out, "--style", style)
    assert result.exit_code == 0, result.output
    target = architecture()
    wrap = spectral_norm if style == "torch" else parametrizations.spectral_norm
    wrap(target[0])
    wrap(target[4])
    target.load_state_dict(torch.load(out, weights_only=True), strict=True)
    output(target, torch.randn(1, 3, 4, 4))
    for index in (0, 4):
        weight = target[index].weight.detach().double()
        sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert float(sigma) == pytest.approx(1.0, rel=1e-6)


def test_convert_legacy_to_parametrize(wrapped_ckpt: Ckpt, tmp_path: Path) -> None:
    source, model = wrapped_ckpt
    out = tmp_path / "p.pt"
    result = cli("convert", source, "-o", out, "--to", "parametrize")
    assert result.exit_code == 0, result.output
    target = architecture()
    parametrizations.spectral_norm(target[0])
    parametrizations.spectral_norm(target[4])
    target.load_state_dict(torch.load(out, weights_only=True)["netD"], strict=True)
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(output(target, x), output(model, x), rtol=1e-6, atol=1e-7)


def test_dry_run_prints_the_plan_and_writes_nothing(
    wrapped_ckpt: Ckpt, tmp_path: Path
) -> None:
    source, _ = wrapped_ckpt
    out = tmp_path / "plain.pt"
    result = cli("strip", source, "-o", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and "0.weight" in result.stdout
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.ckpt"]
    out.write_bytes(b"precious")
    again = cli("apply", source, "-o", out, "--dry-run")
    assert again.exit_code == 0 and "needs --force" in again.stdout and out.read_bytes() == b"precious"
    same = cli("convert", source, "-o", source, "--to", "torch", "--dry-run")
    assert same.exit_code == 0 and "is the input" in same.stdout


def test_several_models_and_key(tmp_path: Path) -> None:
    """netD (cosgrove) and netG (BigGAN) in one file: both stripped, names prefixed; with --key only
    netD is converted and netG is written back untouched."""
    d, g = build_trained("conv2d", "cosgrove"), build_trained("linear", "biggan")
    source = tmp_path / "gan.pt"
    torch.save({"netD": d.state, "netG": g.state, "optD": torch.optim.SGD(d.model.parameters()).state_dict(),
                "step": 40}, source)
    out = tmp_path / "plain.pt"
    result = cli("strip", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert "netD.0.module.weight" in result.stderr and "'netD.0.module.*' → 'netD.0.*'" in result.stderr
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"netD", "netG", "step"}
    for trained, name in ((d, "netD"), (g, "netG")):
        target = nn.Sequential(plain_layer(trained.kind))
        target.load_state_dict(saved[name], strict=True)
        x = trained.make_input()
        assert torch.allclose(output(target, x), output(trained.model, x), rtol=1e-6, atol=1e-7)

    converted = tmp_path / "d.pt"
    result = cli("convert", source, "-o", converted, "--to", "torch", "--key", "netD")
    assert result.exit_code == 0, result.output
    saved = torch.load(converted, weights_only=True)
    assert set(saved["netD"]) == {"0.bias", "0.weight_orig", "0.weight_u", "0.weight_v"}
    assert all(torch.equal(saved["netG"][k], v) for k, v in g.state.items())


# ----------------------------------------------------------------------------------------------
# Safe writing


def one_error_line(result) -> str:  # noqa: ANN001
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sninspect: error:"), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["strip"], ["apply"], ["convert", "--to", "parametrize"]])
def test_existing_output_needs_force(
    wrapped_ckpt: Ckpt, tmp_path: Path, command: list[str]
) -> None:
    source, _ = wrapped_ckpt
    out = tmp_path / "out.pt"
    out.write_bytes(b"precious")
    result = cli(command[0], source, "-o", out, *command[1:])
    assert result.exit_code == ExitCode.WRITE_FAILED
    assert "--force" in one_error_line(result)
    assert out.read_bytes() == b"precious"
    assert cli(command[0], source, "-o", out, *command[1:], "--force").exit_code == 0
    assert out.read_bytes() != b"precious"


def test_output_equal_to_input_is_refused_even_with_force(wrapped_ckpt: Ckpt) -> None:
    source, _ = wrapped_ckpt
    before = source.read_bytes()
    result = cli("strip", source, "-o", source, "--force")
    assert result.exit_code == ExitCode.WRITE_FAILED
    one_error_line(result)
    assert source.read_bytes() == before


@pytest.mark.parametrize("interrupt", [False, True])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_write_failing_midway_loses_nothing(
    wrapped_ckpt: Ckpt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str,
    interrupt: bool,
) -> None:
    source, _ = wrapped_ckpt
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"old file")

    def fail_midway(_payload: object, target: str, *args: object, **kwargs: object) -> None:
        with open(target, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt if interrupt else OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail_midway)
    monkeypatch.setattr(safetensors.torch, "save_file", fail_midway)
    result = cli("strip", source, "-o", out, "--force")
    if interrupt:
        assert result.exit_code == 130 and "interrupted" in result.stderr
    else:
        assert result.exit_code == ExitCode.WRITE_FAILED
        assert "No space left" in one_error_line(result)
    assert out.read_bytes() == b"old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d.ckpt", out.name])


# ----------------------------------------------------------------------------------------------
# Usage and input errors


def test_usage_and_input_errors(wrapped_ckpt: Ckpt, tmp_path: Path) -> None:
    source, _ = wrapped_ckpt
    bad_sigma = cli("strip", source, "-o", tmp_path / "a.pt", "--sigma", "power:0")
    assert bad_sigma.exit_code == ExitCode.USAGE and "power:N" in one_error_line(bad_sigma)
    bad_ext = cli("strip", source, "-o", tmp_path / "a.onnx")
    assert bad_ext.exit_code == ExitCode.USAGE and ".safetensors" in one_error_line(bad_ext)
    missing = cli("strip", tmp_path / "nope.pt", "-o", tmp_path / "a.pt")
    assert missing.exit_code == ExitCode.BAD_INPUT
    one_error_line(missing)
    bad_style = cli("convert", source, "-o", tmp_path / "a.pt", "--to", "keras")
    assert bad_style.exit_code == ExitCode.USAGE
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize("command", ["strip", "apply", "convert"])
def test_commands_have_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0 and "--output" in result.stdout and "--dry-run" in result.stdout
