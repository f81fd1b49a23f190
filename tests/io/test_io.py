"""Loading and saving checkpoints: formats, wrapper dicts, display names, safe atomic writes."""

from __future__ import annotations

import errno
import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.serialization
from safetensors.torch import load_file, save_file

import sninspect.io.write
from sninspect.errors import InputError, OutputError, UsageError
from sninspect.io.load import (
    TORCH_SUFFIXES,
    Checkpoint,
    ModelState,
    display_name,
    load_checkpoint,
    save_checkpoint,
)
from sninspect.io.suffixes import CHECKPOINT_SUFFIXES, checkpoint_stem


def sn_state_dict(seed: int = 0, width: int = 4) -> OrderedDict[str, torch.Tensor]:
    """A small discriminator-like state dict with SN buffers and a BatchNorm (``_metadata`` included)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, width, 3)),
        torch.nn.BatchNorm2d(width),
        torch.nn.utils.spectral_norm(torch.nn.Linear(width, 1)),
    )
    state: OrderedDict[str, torch.Tensor] = model.state_dict()  # type: ignore[assignment]
    return state


def optimizer_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What ``torch.optim.Adam(params).state_dict()`` holds after a step: per-parameter tensors under
    integer keys, and ``param_groups``. Built by hand: a real optimizer imports torch._dynamo (seconds)."""
    params = [t for t in state.values() if t.is_floating_point()]
    return {
        "state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": p * p}
                  for i, p in enumerate(params)},
        "param_groups": [{"lr": 0.0002, "betas": (0.0, 0.9), "eps": 1e-08, "weight_decay": 0,
                          "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                          "differentiable": False, "fused": None, "params": list(range(len(params)))}],
    }


def assert_same(
    loaded: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, ordered: bool = True
) -> None:
    """Same keys (in the same order unless ``ordered`` is False), dtypes and values, on the CPU."""
    assert list(loaded) == list(expected) if ordered else sorted(loaded) == sorted(expected)
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert loaded[key].device.type == "cpu", key
        assert torch.equal(loaded[key], tensor), key


def only_model(checkpoint: Checkpoint) -> ModelState:
    assert len(checkpoint.models) == 1
    return checkpoint.models[0]


# ----------------------------------------------------------------------------------------------
# Formats


def test_zip_round_trip_keeps_order_and_metadata(tmp_path: Path) -> None:
    state = sn_state_dict()
    torch.save(state, tmp_path / "d.pt")
    checkpoint = load_checkpoint(tmp_path / "d.pt")
    assert checkpoint.format == "torch-zip" and checkpoint.path == tmp_path / "d.pt"
    model = only_model(checkpoint)
    assert (model.name, model.path) == ("", ())
    assert_same(model.tensors, state)
    assert model.torch_metadata == state._metadata  # type: ignore[attr-defined]
    assert checkpoint.metadata == {} and checkpoint.extras == {}
    assert checkpoint.container is not None


def test_legacy_round_trip(tmp_path: Path) -> None:
    state = sn_state_dict()
    torch.save(state, tmp_path / "d.pth", _use_new_zipfile_serialization=False)
    checkpoint = load_checkpoint(tmp_path / "d.pth")
    assert checkpoint.format == "torch-legacy"
    assert_same(only_model(checkpoint).tensors, state)
    assert only_model(checkpoint).torch_metadata == state._metadata  # type: ignore[attr-defined]


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_load_is_weights_only_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    torch.save(sn_state_dict(), tmp_path / "d.ckpt", _use_new_zipfile_serialization=not legacy)
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(tmp_path / "d.ckpt")
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": not legacy}]
    calls.clear()
    load_checkpoint(tmp_path / "d.ckpt", unsafe_load=True)
    assert calls[0]["weights_only"] is False and calls[0]["map_location"] == "cpu"


def test_checkpoint_saved_on_cuda_loads_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = sn_state_dict()
    with monkeypatch.context() as patch:  # what torch.save records for CUDA tensors
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, tmp_path / "gpu.pt")
    assert b"cuda:0" in (tmp_path / "gpu.pt").read_bytes()
    assert_same(only_model(load_checkpoint(tmp_path / "gpu.pt")).tensors, state)


def test_safetensors_is_lazy_with_metadata(tmp_path: Path) -> None:
    state = {k: v.contiguous() for k, v in sn_state_dict().items()}
    save_file(state, tmp_path / "d.safetensors", metadata={"step": "1200", "note": "ema"})
    checkpoint = load_checkpoint(tmp_path / "d.safetensors")
    assert checkpoint.format == "safetensors" and checkpoint.container is None
    assert checkpoint.metadata == {"step": "1200", "note": "ema"}
    tensors = only_model(checkpoint).tensors
    assert not isinstance(tensors, dict)  # read on access
    assert_same(tensors, state, ordered=False)
    raw = (tmp_path / "d.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(tensors) == [k for k in header if k != "__metadata__"]  # safetensors sorts; header order kept


def test_safetensors_under_another_suffix_is_recognised(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2, 2)}, tmp_path / "d.bin")
    checkpoint = load_checkpoint(tmp_path / "d.bin")
    assert checkpoint.format == "safetensors"
    assert torch.equal(only_model(checkpoint).tensors["w"], torch.ones(2, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_dtypes_are_kept(tmp_path: Path, dtype: torch.dtype, suffix: str) -> None:
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sn_state_dict().items()}
    save_checkpoint(tmp_path / f"d{suffix}", state)
    assert_same(only_model(load_checkpoint(tmp_path / f"d{suffix}")).tensors, state, ordered=suffix == ".pt")


@pytest.mark.parametrize("legacy", [False, True])
def test_shared_storage_and_views_load(tmp_path: Path, legacy: bool) -> None:
    """Tied weights and views share one storage record; the size checks must count it once."""
    weight = torch.arange(12.0).reshape(3, 4)
    state = {"a.weight": weight, "b.weight": weight, "row": weight[2], "t": weight.t(), "own": torch.ones(2)}
    torch.save(state, tmp_path / "tied.pt", _use_new_zipfile_serialization=not legacy)
    assert_same(only_model(load_checkpoint(tmp_path / "tied.pt")).tensors, state)


def test_untyped_storage_dtypes_load(tmp_path: Path) -> None:
    """float8 and uint16 are pickled with an UntypedStorage (1 byte per element) rather than a typed one."""
    state = {"f8": torch.ones(5).to(torch.float8_e4m3fn), "u16": torch.tensor([1, 2, 3], dtype=torch.uint16),
             "bf16": torch.ones(2, dtype=torch.bfloat16)}
    torch.save(state, tmp_path / "odd.pt")
    loaded = only_model(load_checkpoint(tmp_path / "odd.pt")).tensors
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key].float(), tensor.float()), key


def _write_shards(folder: Path, state: Mapping[str, torch.Tensor], suffix: str) -> Path:
    keys = list(state)
    halves = {f"model-0000{i + 1}-of-00002{suffix}": keys[i::2] for i in range(2)}
    for name, part in halves.items():
        if suffix == ".safetensors":
            save_file({k: state[k].contiguous() for k in part}, folder / name, metadata={"format": "pt"})
        else:
            torch.save({k: state[k] for k in part}, folder / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    weight_map = {k: weight_map[k] for k in keys}  # index in model order, as transformers writes it
    index = folder / f"model{suffix}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 1234}, "weight_map": weight_map}))
    return index


def test_sharded_safetensors(tmp_path: Path) -> None:
    state = sn_state_dict()
    checkpoint = load_checkpoint(_write_shards(tmp_path, state, ".safetensors"))
    assert checkpoint.format == "safetensors-sharded"
    assert checkpoint.metadata == {"format": "pt", "total_size": "1234"}
    assert_same(only_model(checkpoint).tensors, state)


def test_sharded_torch_bin(tmp_path: Path) -> None:
    state = sn_state_dict()
    checkpoint = load_checkpoint(_write_shards(tmp_path, state, ".bin"))
    assert checkpoint.format == "torch-sharded"
    assert_same(only_model(checkpoint).tensors, state)


def test_safetensors_key_selects_a_prefix(tmp_path: Path) -> None:
    tensors = {"netG.w": torch.zeros(2), "netD.w": torch.ones(3), "netD.b": torch.ones(1)}
    save_file(tensors, tmp_path / "gd.safetensors")
    model = only_model(load_checkpoint(tmp_path / "gd.safetensors", key="netD"))
    assert sorted(model.tensors) == ["b", "w"] and model.path == ("netD",)
    assert torch.equal(model.tensors["w"], torch.ones(3))
    with pytest.raises(UsageError, match="netG, netD|netD, netG"):
        load_checkpoint(tmp_path / "gd.safetensors", key="critic")


# ----------------------------------------------------------------------------------------------
# Wrapper dicts


def test_state_dict_wrapper(tmp_path: Path) -> None:
    state = sn_state_dict()
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    model = only_model(load_checkpoint(tmp_path / "w.pt"))
    assert (model.name, model.path) == ("", ("state_dict",))
    assert_same(model.tensors, state)
    assert model.torch_metadata == state._metadata  # type: ignore[attr-defined]


def test_training_checkpoint_skips_optimizer_and_keeps_epoch(tmp_path: Path) -> None:
    state = sn_state_dict()
    torch.save({"model_state_dict": state, "optimizer_state_dict": optimizer_state(state), "epoch": 3,
                "loss": 0.25}, tmp_path / "t.pt")
    checkpoint = load_checkpoint(tmp_path / "t.pt")
    assert only_model(checkpoint).path == ("model_state_dict",)
    assert checkpoint.extras == {"epoch": 3, "loss": 0.25}


def test_gan_checkpoint_gives_both_models(tmp_path: Path) -> None:
    generator, discriminator = sn_state_dict(1, width=6), sn_state_dict(2)
    torch.save({"netG": generator, "netD": discriminator, "optG": optimizer_state(generator),
                "optD": optimizer_state(discriminator), "step": 100}, tmp_path / "gan.pt")
    checkpoint = load_checkpoint(tmp_path / "gan.pt")
    assert [(m.name, m.path) for m in checkpoint.models] == [("netG", ("netG",)), ("netD", ("netD",))]
    assert_same(checkpoint.models[1].tensors, discriminator)
    assert checkpoint.extras == {"step": 100}


def test_lightning_like_checkpoint(tmp_path: Path) -> None:
    state = OrderedDict((f"discriminator.{k}", v) for k, v in sn_state_dict().items())
    torch.save({
        "epoch": 1, "global_step": 7, "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 2}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None, "dirpath": "/x"}},
        "optimizer_states": [optimizer_state(state)],
        "lr_schedulers": [{"last_epoch": 1, "_last_lr": [0.0002]}],
        "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.0002},
    }, tmp_path / "last.ckpt")
    checkpoint = load_checkpoint(tmp_path / "last.ckpt")
    assert only_model(checkpoint).path == ("state_dict",)
    assert checkpoint.extras == {"epoch": 1, "global_step": 7, "pytorch-lightning_version": "2.1.0",
                                 "hparams_name": "kwargs"}


def test_model_and_ema_in_container_order(tmp_path: Path) -> None:
    torch.save({"ema": sn_state_dict(1), "model": sn_state_dict(2), "step": torch.tensor(5)},
               tmp_path / "e.pt")
    checkpoint = load_checkpoint(tmp_path / "e.pt")
    assert [m.name for m in checkpoint.models] == ["ema", "model"]
    assert checkpoint.extras == {"step": 5} and isinstance(checkpoint.extras["step"], int)


def test_nested_models_and_key_paths(tmp_path: Path) -> None:
    torch.save({"models": {"G": sn_state_dict(1), "D": sn_state_dict(2)}, "config": {"lr": 0.1}},
               tmp_path / "n.pt")
    checkpoint = load_checkpoint(tmp_path / "n.pt")
    assert [(m.name, m.path) for m in checkpoint.models] == [("models.G", ("models", "G")),
                                                              ("models.D", ("models", "D"))]
    model = only_model(load_checkpoint(tmp_path / "n.pt", key="models.D"))
    assert (model.name, model.path) == ("", ("models", "D"))
    assert_same(model.tensors, sn_state_dict(2))
    assert [m.path for m in load_checkpoint(tmp_path / "n.pt", key="models").models] == [("models", "G"),
                                                                                        ("models", "D")]


def test_key_picks_one_model_and_errors_name_the_choices(tmp_path: Path) -> None:
    state = sn_state_dict()
    torch.save({"netG": sn_state_dict(1), "netD": state, "optG": optimizer_state(state), "step": 100},
               tmp_path / "gan.pt")
    model = only_model(load_checkpoint(tmp_path / "gan.pt", key="netD"))
    assert (model.name, model.path) == ("", ("netD",))
    assert_same(model.tensors, state)
    for key, words in [("critic", "no entry 'critic'"), ("optG", "optimizer state"), ("step", "int value"),
                       ("netD.0.weight_orig", "Tensor value")]:
        with pytest.raises(UsageError) as caught:
            load_checkpoint(tmp_path / "gan.pt", key=key)
        message = str(caught.value)
        assert words in message and "netG, netD" in message and "\n" not in message


def test_key_with_dots_inside(tmp_path: Path) -> None:
    torch.save({"model.ema": sn_state_dict(), "other": {"x": 1}}, tmp_path / "dots.pt")
    assert only_model(load_checkpoint(tmp_path / "dots.pt", key="model.ema")).path == ("model.ema",)


def test_state_dicts_in_a_list(tmp_path: Path) -> None:
    torch.save({"nets": [sn_state_dict(1), sn_state_dict(2)]}, tmp_path / "list.pt")
    assert [m.name for m in load_checkpoint(tmp_path / "list.pt").models] == ["nets.0", "nets.1"]


def test_extra_state_and_non_tensor_entries(tmp_path: Path) -> None:
    state = sn_state_dict()
    state["head._extra_state"] = {"version": 2}  # type: ignore[assignment]
    torch.save(state, tmp_path / "x.pt")
    model = only_model(load_checkpoint(tmp_path / "x.pt"))
    assert model.path == () and "head._extra_state" not in model.tensors
    assert_same(model.tensors, sn_state_dict())


def test_weights_saved_beside_other_entries(tmp_path: Path) -> None:
    """Not a pure state dict (``{**state, "epoch": 3}``): its own tensors are the one model."""
    state = sn_state_dict()
    torch.save({**state, "epoch": 3, "config": {"lr": 0.1}}, tmp_path / "mixed.pt")
    checkpoint = load_checkpoint(tmp_path / "mixed.pt")
    model = only_model(checkpoint)
    assert (model.name, model.path) == ("", ())
    assert_same(model.tensors, state)
    assert checkpoint.extras == {"epoch": 3}


def test_no_tensors_lists_top_level_keys(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "optimizer": optimizer_state(sn_state_dict())}, tmp_path / "opt.pt")
    with pytest.raises(InputError) as caught:
        load_checkpoint(tmp_path / "opt.pt")
    expected = f"{tmp_path / 'opt.pt'}: no tensors found (top-level keys: epoch, optimizer"
    assert str(caught.value).startswith(expected)


def test_data_parallel_prefixes_are_kept_raw(tmp_path: Path) -> None:
    state = OrderedDict((f"module._orig_mod.{k}", v) for k, v in sn_state_dict().items())
    torch.save(state, tmp_path / "dp.pt")
    tensors = only_model(load_checkpoint(tmp_path / "dp.pt")).tensors
    assert list(tensors) == list(state)
    assert [display_name(k) for k in tensors] == list(sn_state_dict())


@pytest.mark.parametrize(("raw", "shown"), [
    ("module.fc.weight", "fc.weight"),
    ("_orig_mod.fc.weight", "fc.weight"),
    ("module._orig_mod.module.fc.weight", "fc.weight"),
    ("_orig_mod.module.fc.weight", "fc.weight"),
    ("fc.module.weight", "fc.module.weight"),
    ("modules.0.weight", "modules.0.weight"),
    ("module", "module"),
    ("module.", "module."),
    ("weight", "weight"),
])
def test_display_name(raw: str, shown: str) -> None:
    assert display_name(raw) == shown


def test_torch_suffixes() -> None:
    assert set(TORCH_SUFFIXES) == {".pt", ".pth", ".ckpt", ".bin"}


@pytest.mark.parametrize(("name", "stem"), [
    ("D_100.pt", "D_100"), ("D_100.PT", "D_100"), ("ckpt.pth", "ckpt"), ("last.ckpt", "last"),
    ("pytorch_model.bin", "pytorch_model"), ("m.safetensors", "m"),
    ("model.safetensors.index.json", "model.safetensors"), ("notes.json", "notes.json"),
    ("D_100.pt2", "D_100"), ("D_100.PT2", "D_100"),
    (".pt", ".pt"), ("README", "README"),
])
def test_checkpoint_stem(name: str, stem: str) -> None:
    assert checkpoint_stem(name) == stem


def test_a_folder_is_searched_for_every_checkpoint_suffix(tmp_path: Path) -> None:
    from sninspect.audit.runs.run import collect

    run = tmp_path / "run"
    run.mkdir()
    for suffix in CHECKPOINT_SUFFIXES:
        (run / f"c{suffix.upper()}").write_bytes(b"")
    (run / "notes.txt").write_text("not a checkpoint")
    assert sorted(p.name for p in collect([run])) == sorted(f"c{s.upper()}" for s in CHECKPOINT_SUFFIXES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no checkpoint file") as caught:
        collect([tmp_path / "empty"])
    assert all(f"*{suffix}" in str(caught.value) for suffix in CHECKPOINT_SUFFIXES)


# ----------------------------------------------------------------------------------------------
# Saving


def test_save_torch_and_safetensors(tmp_path: Path) -> None:
    state = sn_state_dict()
    save_checkpoint(tmp_path / "out.pt", {"state_dict": state, "step": 4})
    assert torch.load(tmp_path / "out.pt", weights_only=True)["step"] == 4
    save_checkpoint(tmp_path / "out.safetensors", state, metadata={"source": "d.pt"})
    checkpoint = load_checkpoint(tmp_path / "out.safetensors")
    assert checkpoint.metadata == {"source": "d.pt"}
    assert {k: v for k, v in only_model(checkpoint).tensors.items()}.keys() == state.keys()
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "out.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_safetensors_shared_and_strided_tensors(tmp_path: Path) -> None:
    weight = torch.arange(12.0).reshape(3, 4)
    payload = {"a": weight, "b": weight, "row": weight[1], "t": weight.t(), "own": torch.ones(2)}
    save_checkpoint(tmp_path / "shared.safetensors", payload)
    loaded = load_file(tmp_path / "shared.safetensors")
    for key, tensor in payload.items():
        assert torch.equal(loaded[key], tensor), key
    assert weight.data_ptr() == payload["a"].data_ptr()  # the caller's tensors are not modified


def test_safetensors_payload_must_be_flat(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="flat dict"):
        save_checkpoint(tmp_path / "bad.safetensors", {"state_dict": sn_state_dict()})
    with pytest.raises(OutputError, match="metadata must be strings"):
        save_checkpoint(tmp_path / "bad.safetensors", {"w": torch.ones(1)}, metadata={"step": 3})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_an_input_even_with_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "d.pt"
    torch.save(sn_state_dict(), source)
    before = source.read_bytes()
    (tmp_path / "link.pt").symlink_to(source)
    os.link(source, tmp_path / "hard.pt")
    monkeypatch.chdir(tmp_path)
    outs: list[str | Path] = ["d.pt", "./d.pt", tmp_path / "sub" / ".." / "d.pt", "link.pt", "hard.pt"]
    for out in outs:
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputError, match="is the input"):
            save_checkpoint(out, {"w": torch.ones(1)}, inputs=[source], force=True)
    with pytest.raises(OutputError, match="is the input"):
        save_checkpoint(source, {"w": torch.ones(1)}, inputs=["link.pt"], force=True)
    assert source.read_bytes() == before


def test_refuses_existing_output_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists.*force=True"):
        save_checkpoint(out, {"w": torch.ones(1)})
    assert out.read_bytes() == b"keep me"
    out.chmod(0o640)
    save_checkpoint(out, {"w": torch.ones(1)}, force=True)
    assert torch.equal(torch.load(out, weights_only=True)["w"], torch.ones(1))
    assert out.stat().st_mode & 0o777 == 0o640  # the replaced file's mode is kept


def test_refuses_missing_folder_and_directory(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        save_checkpoint(tmp_path / "nope" / "out.pt", {"w": torch.ones(1)})
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        save_checkpoint(tmp_path / "dir.pt", {"w": torch.ones(1)}, force=True)


def test_protects_the_shards_of_an_index(tmp_path: Path) -> None:
    index = _write_shards(tmp_path, sn_state_dict(), ".safetensors")
    shard = tmp_path / "model-00001-of-00002.safetensors"
    with pytest.raises(OutputError, match="is the input"):
        save_checkpoint(shard, {"w": torch.ones(1)}, inputs=[index], force=True)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"old file")

    def disk_full(_payload: object, target: Any, *args: Any, **kwargs: Any) -> None:
        with open(target, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OutputError) as caught:
        save_checkpoint(out, {"w": torch.ones(3)}, force=True)
    assert "No space left on device" in str(caught.value) and "\n" not in str(caught.value)
    assert out.read_bytes() == b"old file"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_interrupted_write_cleans_up_and_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_payload: object, target: Any, *args: Any, **kwargs: Any) -> None:
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "out.pt", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.pt"
    out.write_bytes(b"old")

    def no_rename(*_: Any) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(sninspect.io.write.os, "replace", no_rename)
    with pytest.raises(OutputError, match="could not write"):
        save_checkpoint(out, {"w": torch.ones(1)}, force=True)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refuse(path: Any, *args: Any, **kwargs: Any) -> int:  # creating the temp file fails, nothing else
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sninspect.io.write.os, "open", refuse)
    with pytest.raises(OutputError, match="cannot create a file in .*Permission denied"):
        save_checkpoint(tmp_path / "out.pt", {"w": torch.ones(1)})


def test_safetensors_refuses_unstorable_dtypes_naming_each(tmp_path: Path) -> None:
    """Quantized and complex tensors cannot go into a .safetensors file: one error names every one, and
    nothing is written."""
    payload = {"q.weight": torch.quantize_per_tensor(torch.randn(3, 3), 0.1, 0, torch.qint8),
               "c.weight": torch.randn(2, 2, dtype=torch.complex64), "ok.weight": torch.ones(2)}
    out = tmp_path / "x.safetensors"
    with pytest.raises(OutputError, match=r"'q\.weight' \(qint8\), 'c\.weight' \(complex64\)"):
        save_checkpoint(out, payload)
    assert not out.exists() and list(tmp_path.iterdir()) == []
