"""Hostile and broken inputs: each gives one clear InputError line, quickly, and never runs code."""

from __future__ import annotations

import io
import itertools
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hostile
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sninspect.io.files
from sninspect.errors import InputError, UnsafeCheckpointError
from sninspect.io import torch_check
from sninspect.io.load import Checkpoint, load_checkpoint

HANG_SECONDS = 10


def load_within(path: Path, seconds: float = HANG_SECONDS, **options: Any) -> Checkpoint:
    """``load_checkpoint`` in a daemon thread, failing the test if it has not returned in ``seconds``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = load_checkpoint(path, **options)
        except BaseException as err:  # handed to the test thread below
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{path}: still loading after {seconds} s (hang)"
    if "error" in outcome:
        raise outcome["error"]
    checkpoint: Checkpoint = outcome["value"]
    return checkpoint


def problems(items: hostile.Items, expected: type[InputError] = InputError) -> list[str]:
    """What is wrong with how each item is refused ([] when every item gives one good line)."""
    found: list[str] = []
    for path, what in items:
        start = time.monotonic()
        try:
            load_within(path)
        except expected as err:
            message = str(err)
            if "\n" in message or not message.startswith(f"{path}: ") or len(message) > 400:
                found.append(f"{what}: not one line naming the file: {message!r}")
        except BaseException as err:  # noqa: B036 - the point is to see anything else that escapes
            found.append(f"{what}: {type(err).__name__} escaped: {str(err)[:200]!r}")
        else:
            found.append(f"{what}: loaded without error")
        if time.monotonic() - start > HANG_SECONDS:
            found.append(f"{what}: took {time.monotonic() - start:.1f} s")
    return found


@pytest.mark.parametrize("builder", [hostile.truncated, hostile.malformed, hostile.lying_safetensors,
                                     hostile.bad_indexes, hostile.special], ids=lambda b: b.__name__)
def test_broken_inputs_give_one_line(builder: Callable[[Path], hostile.Items], tmp_path: Path) -> None:
    items = builder(tmp_path)
    assert items
    assert problems(items) == []


def test_code_running_pickles_are_refused_and_never_run(tmp_path: Path) -> None:
    items = hostile.code_running(tmp_path)
    assert len(items) == 5 * len(hostile.PAYLOADS)
    assert problems(items, UnsafeCheckpointError) == []
    assert not hostile.sentinel(tmp_path).exists()


@pytest.mark.parametrize("payload", sorted(hostile.PAYLOADS))
def test_refusal_names_the_global(payload: str, tmp_path: Path) -> None:
    items = [(p, w) for p, w in hostile.code_running(tmp_path) if w.endswith(f"calling {payload}")]
    python_names = {"os.system": f"{os.system.__module__}.system", "eval": "builtins.eval",
                    "exec": "builtins.exec"}
    spelled = python_names.get(payload, payload)
    for path, _ in items:
        with pytest.raises(UnsafeCheckpointError) as caught:
            load_checkpoint(path)
        assert f"the pickle calls '{spelled}'" in str(caught.value)
        assert "unsafe_load=True" in str(caught.value)  # the library names keyword arguments
    assert not hostile.sentinel(tmp_path).exists()


@pytest.mark.parametrize("payload", sorted(hostile.PAYLOADS))
def test_payloads_really_run_code_when_unpickled(payload: str, tmp_path: Path) -> None:
    """The control for every "never runs code" test: a plain unpickle does create the sentinel."""
    pickle.loads(pickle.dumps(hostile.PAYLOADS[payload](hostile.sentinel(tmp_path))))
    assert hostile.sentinel(tmp_path).exists()


def test_size_check_dry_runs_never_run_code(tmp_path: Path) -> None:
    """The size checks unpickle with every global replaced by an inert placeholder."""
    for path, what in hostile.code_running(tmp_path):
        if what.startswith("raw"):
            torch_check._dry_run(io.BytesIO(path.read_bytes()), {})
        elif what.startswith("legacy"):
            torch_check.check_legacy_claims(path, str(path))
        else:
            torch_check.check_zip_claims(path, str(path))
    assert not hostile.sentinel(tmp_path).exists()


def test_whole_corpus_never_runs_code(tmp_path: Path) -> None:
    items = hostile.corpus(tmp_path)
    for path, _ in items:
        with pytest.raises(InputError):
            load_within(path)
    assert not hostile.sentinel(tmp_path).exists()


@dataclass
class BenignConfig:
    """A harmless custom class: still needs --unsafe-load, since its import could run code."""

    lr: float


def test_custom_class_needs_unsafe_load(tmp_path: Path) -> None:
    path = tmp_path / "custom.pt"
    torch.save({"state_dict": hostile.small_state_dict(), "config": BenignConfig(0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="BenignConfig"):
        load_checkpoint(path)
    checkpoint = load_checkpoint(path, unsafe_load=True)
    assert [m.path for m in checkpoint.models] == [("state_dict",)]
    assert isinstance(checkpoint.container["config"], BenignConfig)


def test_unsafe_load_failure_is_still_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(hostile.valid_zip_checkpoint(tmp_path / "ok.pt").read_bytes()[:300])
    with pytest.raises(InputError) as caught:
        load_checkpoint(path, unsafe_load=True)
    assert "\n" not in str(caught.value)


def test_mode_000_file(tmp_path: Path) -> None:
    path = hostile.unreadable_file(tmp_path)
    try:
        if os.geteuid() == 0:  # root reads it anyway: say so rather than skip
            assert load_checkpoint(path).models[0].tensors
        else:
            with pytest.raises(InputError, match="permission denied"):
                load_checkpoint(path)
    finally:
        path.chmod(0o600)


def test_permission_denied_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hostile.valid_zip_checkpoint(tmp_path / "locked.pt")

    def refuse(*_: Any, **__: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sninspect.io.files.os, "open", refuse)
    with pytest.raises(InputError) as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(f"{path}: permission denied (")


@pytest.mark.parametrize("numel", [10**10, 2**62])
def test_legacy_claim_is_checked_before_allocating(tmp_path: Path, numel: int) -> None:
    path = hostile.legacy_claiming(tmp_path / "claims.pt", numel)
    with pytest.raises(InputError, match=f"claims {numel * 4} bytes of tensor data but the file has"):
        load_checkpoint(path)
    honest = hostile.legacy_claiming(tmp_path / "honest.pt", 4)
    assert torch.equal(load_checkpoint(honest).models[0].tensors["w"], torch.ones(4))


def test_legacy_claim_is_checked_with_unsafe_load_too(tmp_path: Path) -> None:
    path = hostile.legacy_claiming(tmp_path / "claims.pt", 10**12, extra=BenignConfig(0.1))
    with pytest.raises(InputError, match="claims 4000000000000 bytes of tensor data"):
        load_checkpoint(path, unsafe_load=True)
    honest = hostile.legacy_claiming(tmp_path / "honest.pt", 4, extra=BenignConfig(0.1))
    with pytest.raises(UnsafeCheckpointError, match="BenignConfig"):
        load_checkpoint(honest)
    assert load_checkpoint(honest, unsafe_load=True).container["extra"] == BenignConfig(0.1)


@pytest.mark.parametrize(("name", "pattern"), [
    ("zip_bomb.pt", r"record 'zip/data.pkl' claims 335\d{5} bytes unpacked but the whole file has \d{5} "),
    ("compressed_data.pt", r"record 'zip/data/0' is compressed, .* \(re-save it: "),
    ("short_data_record.pt", r"tensor record 'data/0' holds 4 bytes but its tensor needs 48 "),
])
def test_zip_size_claims_are_checked_before_torch_reads(tmp_path: Path, name: str, pattern: str) -> None:
    """A bomb would allocate its claimed size; a short tensor record would be read past its end."""
    hostile.malformed(tmp_path)
    with pytest.raises(InputError, match=pattern):
        load_checkpoint(tmp_path / name)


def test_plain_pickle_of_tensors_needs_unsafe_load(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pkl"
    path.write_bytes(pickle.dumps({"D": hostile.small_state_dict(), "step": 3}))
    with pytest.raises(UnsafeCheckpointError, match=r"a plain pickle of tensors \(pickle.dump\)"):
        load_checkpoint(path)
    checkpoint = load_checkpoint(path, unsafe_load=True)
    assert checkpoint.format == "pickle" and checkpoint.extras == {"step": 3}
    assert torch.equal(checkpoint.models[0].tensors["0.weight"], hostile.small_state_dict()["0.weight"])


def test_static_scan_of_a_huge_pickle_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Naming a refused global parses opcodes in Python (about 1 µs each): a pickle of more opcodes than
    the scan's budget is cut short, and still called a pickle."""
    monkeypatch.setattr(torch_check, "SCAN_OPCODES", 20_000)  # the real budget takes a second or two
    path = tmp_path / "long.pkl"
    path.write_bytes(b"\x80\x02" + b")0" * 100_000 + b"N.")
    with pytest.raises(InputError, match="a plain pickle, not a torch.save checkpoint"):
        load_within(path)
    start = time.monotonic()
    assert torch_check.scan_file(path, pickles=1) == (None, True)
    assert time.monotonic() - start < 1.0


def test_fifo_does_not_block(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this OS")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="named pipe"):
        load_within(fifo, seconds=5)


def test_broken_symlink_and_loop(tmp_path: Path) -> None:
    (tmp_path / "dangling.pt").symlink_to(tmp_path / "nowhere.pt")
    (tmp_path / "loop.pt").symlink_to(tmp_path / "loop.pt")
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "dangling.pt")
    with pytest.raises(InputError) as caught:
        load_checkpoint(tmp_path / "loop.pt")
    assert str(caught.value).startswith(f"{tmp_path / 'loop.pt'}: ")


# ----------------------------------------------------------------------------------------------
# Mutation (hypothesis): a damaged valid file loads or gives InputError, never anything else.

_counter = itertools.count()

Mutation = tuple[str, int, int]


def mutations(size: int, editable: int) -> st.SearchStrategy[list[Mutation]]:
    """Bit flips anywhere, byte edits in the first ``editable`` bytes (headers), truncation."""
    flip = st.tuples(st.just("flip"), st.integers(0, size - 1), st.integers(0, 7))
    edit = st.tuples(st.just("set"), st.integers(0, editable - 1), st.integers(0, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, size - 1), st.just(0))
    return st.lists(st.one_of(flip, edit, cut), min_size=1, max_size=4)


def mutate(data: bytes, steps: list[Mutation]) -> bytes:
    out = bytearray(data)
    for kind, at, value in steps:
        if at >= len(out):
            continue
        if kind == "flip":
            out[at] ^= 1 << value
        elif kind == "set":
            out[at] = value
        else:
            del out[at:]
    return bytes(out)


def load_or_input_error(path: Path) -> None:
    try:
        checkpoint = load_within(path)
        for model in checkpoint.models:
            for tensor in model.tensors.values():
                tensor.clone()  # touch the data: lazy and memory-mapped reads happen here
    except InputError as err:
        assert "\n" not in str(err)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("originals")
    zip_bytes = hostile.valid_zip_checkpoint(folder / "ok.pt").read_bytes()
    legacy = folder / "legacy.pt"
    torch.save(hostile.small_state_dict(), legacy, _use_new_zipfile_serialization=False)
    st_bytes = hostile.valid_safetensors(folder / "ok.safetensors", {"step": "3"}).read_bytes()
    st_header = 8 + int.from_bytes(st_bytes[:8], "little")
    return {"folder": folder, "zip": zip_bytes, "legacy": legacy.read_bytes(), "safetensors": st_bytes,
            "safetensors_header": st_header}


MUTATION_SETTINGS = settings(max_examples=100, deadline=None, database=None,  # nothing in the working dir
                             suppress_health_check=[HealthCheck.too_slow])


@MUTATION_SETTINGS
@given(data=st.data())
def test_mutated_zip_checkpoint(originals: dict[str, Any], data: st.DataObject) -> None:
    original: bytes = originals["zip"]
    steps = data.draw(mutations(len(original), len(original)))
    path = originals["folder"] / f"zip_{next(_counter)}.pt"  # a fresh file: earlier ones may be mapped
    path.write_bytes(mutate(original, steps))
    load_or_input_error(path)


@MUTATION_SETTINGS
@given(data=st.data())
def test_mutated_legacy_checkpoint(originals: dict[str, Any], data: st.DataObject) -> None:
    original: bytes = originals["legacy"]
    steps = data.draw(mutations(len(original), len(original)))
    path = originals["folder"] / f"legacy_{next(_counter)}.pt"
    path.write_bytes(mutate(original, steps))
    load_or_input_error(path)


@MUTATION_SETTINGS
@given(data=st.data())
def test_mutated_safetensors(originals: dict[str, Any], data: st.DataObject) -> None:
    original: bytes = originals["safetensors"]
    steps = data.draw(mutations(len(original), originals["safetensors_header"]))
    path = originals["folder"] / f"st_{next(_counter)}.safetensors"
    path.write_bytes(mutate(original, steps))
    load_or_input_error(path)


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_zip_of_an_unsupported_version_is_one_line(suffix: str, tmp_path: Path) -> None:
    """A zip whose central directory asks for version 9.3 made zipfile raise NotImplementedError, which
    escaped the .pt2 sniffing as a traceback (found by the mutation test above)."""
    data = bytearray(hostile.valid_zip_checkpoint(tmp_path / "ok.pt").read_bytes())
    central = data.find(b"PK\x01\x02")
    assert central > 0
    data[central + 6] = 93  # "version needed to extract": 9.3
    path = tmp_path / f"v93{suffix}"
    path.write_bytes(bytes(data))
    if suffix == ".pt":  # torch's own zip reader ignores the field: the checkpoint loads
        load_or_input_error(path)
        return
    with pytest.raises(InputError) as err:
        load_within(path)
    assert "\n" not in str(err.value)
