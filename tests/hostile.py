"""A corpus of hostile and broken checkpoint files, for any test that reads user files.

Every builder writes into ``folder`` and returns ``[(path, description)]``. Pickles that run code
create :func:`sentinel` when they run, so a test can assert that nothing executed::

    items = hostile.corpus(tmp_path)
    for path, what in items: ...
    assert not hostile.sentinel(tmp_path).exists()

Builders:
    code_running     pickles whose loading calls os.system / eval / exec / subprocess.call
    truncated        a real zip-format checkpoint cut at its structural boundaries
    malformed        random bytes, empty file, zips with missing, short, compressed or bomb records,
                     plain pickles (with and without tensors), no tensors, legacy size lies
    lying_safetensors  safetensors files whose header does not match the data
    bad_indexes      shard indexes that are not JSON, point outside the folder or at missing shards
    special          a directory and a FIFO (opening a FIFO for reading blocks)
    corpus           all of the above
    unreadable_file  a valid checkpoint with mode 000 (not in the corpus: root can still read it)
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

Items = list[tuple[Path, str]]

SENTINEL = "SENTINEL-code-ran"


def sentinel(folder: Path) -> Path:
    """The file a code-running payload creates in ``folder`` if it is ever unpickled."""
    return Path(folder).resolve() / SENTINEL


def small_state_dict() -> OrderedDict[str, torch.Tensor]:
    """A deterministic state dict with SN buffers (a few hundred bytes of data)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.utils.spectral_norm(torch.nn.Linear(4, 2)))
    state: OrderedDict[str, torch.Tensor] = model.state_dict()  # type: ignore[assignment]
    return state


# ----------------------------------------------------------------------------------------------
# Payloads: each runs code when unpickled; the code only touches the sentinel file.


class _System:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.target}'",))


class _Eval:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.target)!r}, 'w').close()",))


class _Exec:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.target)!r}, 'w').close()",))


class _Subprocess:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.call, (["touch", str(self.target)],))


PAYLOADS = {"os.system": _System, "eval": _Eval, "exec": _Exec, "subprocess.call": _Subprocess}


def code_running(folder: Path) -> Items:
    """Each payload as a raw pickle (protocols 2 and 4), a legacy torch file and a zip-format torch file,
    hidden next to real tensors in a wrapper dict."""
    folder = Path(folder)
    items: Items = []
    for name, payload_class in PAYLOADS.items():
        payload = payload_class(sentinel(folder))
        wrapped = {"state_dict": small_state_dict(), "hook": payload}
        slug = name.replace(".", "_")
        for protocol in (2, 4):
            path = folder / f"raw_{slug}_p{protocol}.pt"
            path.write_bytes(pickle.dumps(wrapped, protocol=protocol))
            items.append((path, f"raw pickle (protocol {protocol}) calling {name}"))
        path = folder / f"legacy_{slug}.pt"
        torch.save(wrapped, path, _use_new_zipfile_serialization=False)
        items.append((path, f"legacy torch file calling {name}"))
        path = folder / f"zip_{slug}.pt"
        torch.save(wrapped, path)
        items.append((path, f"zip-format torch file calling {name}"))
        path = folder / f"zip_p4_{slug}.pth"
        torch.save(wrapped, path, pickle_protocol=4)
        items.append((path, f"zip-format torch file (pickle protocol 4) calling {name}"))
    return items


# ----------------------------------------------------------------------------------------------
# Broken torch files


def valid_zip_checkpoint(path: Path) -> Path:
    """A real zip-format checkpoint of :func:`small_state_dict`."""
    torch.save(small_state_dict(), path)
    return path


def zip_boundaries(data: bytes) -> dict[str, int]:
    """Byte offsets of the structures of a zip archive: local headers, record data, central directory."""
    offsets: dict[str, int] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        records = archive.infolist()
        for info in records[:2] + records[-1:]:  # data.pkl, the next record, the last one
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
            offsets[f"local header of {info.filename}"] = start
            offsets[f"inside local header of {info.filename}"] = start + 10
            body = start + 30 + name_len + extra_len
            offsets[f"data of {info.filename}"] = body
            if info.compress_size > 2:
                offsets[f"middle of data of {info.filename}"] = body + info.compress_size // 2
    central = data.rfind(b"PK\x01\x02", 0, len(data))
    first_central = data.find(b"PK\x01\x02")
    offsets["central directory"] = first_central
    offsets["last central directory entry"] = central
    offsets["end of central directory"] = data.rfind(b"PK\x05\x06")
    offsets["one byte short"] = len(data) - 1
    offsets["zip magic only"] = 4
    offsets["one byte"] = 1
    return {k: v for k, v in offsets.items() if 0 < v < len(data)}


TRUNCATION_STEP = 256
"""Besides its structural boundaries, a zip checkpoint is also cut every this many bytes."""


def truncated(folder: Path) -> Items:
    """A real zip-format checkpoint cut at every structural boundary (and just after each), and every
    :data:`TRUNCATION_STEP` bytes; a legacy checkpoint cut at 10%, 50% and 90%."""
    folder = Path(folder)
    data = valid_zip_checkpoint(folder / "whole.tmp-source").read_bytes()
    (folder / "whole.tmp-source").unlink()
    cuts: dict[int, str] = {n: f"byte {n}" for n in range(TRUNCATION_STEP, len(data), TRUNCATION_STEP)}
    for where, offset in zip_boundaries(data).items():
        cuts[offset] = where
        cuts.setdefault(offset + 1, f"{where} + 1")
    items: Items = []
    for offset, where in sorted(cuts.items()):
        if 0 < offset < len(data):
            path = folder / f"truncated_{offset:05d}.pt"
            path.write_bytes(data[:offset])
            items.append((path, f"zip checkpoint truncated at {where} ({offset} of {len(data)} bytes)"))
    legacy = folder / "legacy.tmp-source"
    torch.save(small_state_dict(), legacy, _use_new_zipfile_serialization=False)
    raw = legacy.read_bytes()
    legacy.unlink()
    for fraction in (0.1, 0.5, 0.9):
        path = folder / f"truncated_legacy_{int(fraction * 100)}.pt"
        path.write_bytes(raw[:int(len(raw) * fraction)])
        items.append((path, f"legacy checkpoint truncated to {int(fraction * 100)}%"))
    return items


def legacy_claiming(path: Path, numel: int, extra: object = None) -> Path:
    """A legacy torch file whose pickle claims a float storage of ``numel`` elements over 16 bytes of data
    (and holds ``extra`` beside the tensor, e.g. a custom object that needs ``--unsafe-load``)."""
    buffer = io.BytesIO()
    sizes = {"short": 2, "int": 4, "long": 4}
    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": sizes}
    for header in (0x1950A86A20F9469CFC6C, 1001, system):  # what legacy torch.save writes first
        pickle.dump(header, buffer, protocol=2)

    class Claiming(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if torch.is_storage(obj):
                return ("storage", torch.FloatStorage, "0", "cpu", numel, None)
            return None

    tensor = torch.ones(4)
    Claiming(buffer, protocol=2).dump({"w": tensor} if extra is None else {"w": tensor, "extra": extra})
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(struct.pack("<q", 4) + tensor.numpy().tobytes())
    path.write_bytes(buffer.getvalue())
    return path


def _zip_without(data: bytes, dropped: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(dropped):
                dst.writestr(info, src.read(info.filename))
    return out.getvalue()


def malformed(folder: Path) -> Items:
    """Garbage, empty files, archives missing records, pickles without tensors."""
    folder = Path(folder)
    rng = random.Random(1234)
    items: Items = []

    def put(name: str, data: bytes, what: str) -> None:
        path = folder / name
        path.write_bytes(data)
        items.append((path, what))

    put("empty.pt", b"", "empty file")
    put("empty.safetensors", b"", "empty safetensors file")
    put("random.pt", rng.randbytes(4096), "4 KiB of random bytes")
    put("random.bin", rng.randbytes(17), "17 random bytes")
    put("random_zip_magic.pt", b"PK\x03\x04" + rng.randbytes(1000), "zip magic followed by random bytes")
    put("random_pickle_magic.pt", b"\x80\x02" + rng.randbytes(1000), "pickle marker, then random bytes")
    legacy_magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    put("random_legacy_magic.pt", legacy_magic + rng.randbytes(1000), "legacy torch magic then random bytes")
    put("text.ckpt", b"this is not a checkpoint\n" * 10, "a text file")
    put("plain_pickle.pkl", pickle.dumps({"lr": 0.1, "names": ["a", "b"]}), "a plain pickle, no tensors")
    put("plain_pickle_p0.pt", pickle.dumps({"lr": 0.1}, protocol=0), "a protocol-0 pickle of a dict")
    path = folder / "no_tensors.pt"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, path)
    items.append((path, "a torch file with no tensors"))
    path = folder / "single_tensor.pt"
    torch.save(torch.ones(3), path)
    items.append((path, "a torch file holding one bare tensor"))
    for numel in (10**10, 10**12, 2**62):
        path = legacy_claiming(folder / f"legacy_claims_{numel}.pt", numel)
        items.append((path, f"legacy file claiming {numel} floats over 16 bytes"))
    whole = valid_zip_checkpoint(folder / "zip.tmp-source")
    data = whole.read_bytes()
    whole.unlink()
    put("missing_data_record.pt", _zip_without(data, "data/0"), "zip checkpoint without data/0")
    put("missing_pickle.pt", _zip_without(data, "data.pkl"), "zip checkpoint with data.pkl missing")
    put("empty_zip.pt", _zip_without(data, ""), "a zip archive with no records")
    put("short_data_record.pt", _zip_replacing(data, "data/0", b"\0\0\0\0"),
        "zip checkpoint whose data/0 holds fewer bytes than its tensor")
    bomb = _pickle_record(data) + bytes(BOMB_BYTES)  # zeros after the pickle's STOP: torch would accept it
    put("zip_bomb.pt", _zip_replacing(data, "data.pkl", bomb, deflate=True),
        f"zip checkpoint whose data.pkl unpacks to {BOMB_BYTES} bytes (a compression bomb)")
    put("compressed_data.pt", _zip_replacing(data, "data/0", None, deflate=True),
        "zip checkpoint with a compressed (deflated) tensor record")
    put("pickled_tensors.pkl", pickle.dumps(small_state_dict()),
        "tensors written with pickle.dump, not torch.save (needs --unsafe-load)")
    return items


BOMB_BYTES = 32 * 2**20
"""How far the zip bomb's data.pkl unpacks (the file itself stays a few tens of KiB)."""


def _pickle_record(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        return archive.read(name)


def _zip_replacing(data: bytes, record: str, content: bytes | None, *, deflate: bool = False) -> bytes:
    """``data`` (a zip) with the record ending in ``record`` given ``content`` (None: kept), deflated or
    stored; the other records are copied unchanged."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename.endswith(record):
                body = src.read(info.filename) if content is None else content
                dst.writestr(info.filename, body, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
            else:
                dst.writestr(info, src.read(info.filename))
    return out.getvalue()


# ----------------------------------------------------------------------------------------------
# Safetensors with headers that lie


def safetensors_bytes(header: Any, data: bytes, *, length: int | None = None) -> bytes:
    """A safetensors file from a header (JSON-encoded unless ``bytes``), data and an optional length lie."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def lying_safetensors(folder: Path) -> Items:
    """Every way a safetensors header can disagree with its file."""
    folder = Path(folder)
    items: Items = []
    data = bytes(64)
    good = {"a": {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 32]},
            "b": {"dtype": "F32", "shape": [8], "data_offsets": [32, 64]}}

    def put(name: str, header: Any, what: str, *, body: bytes = data, length: int | None = None) -> None:
        path = folder / f"{name}.safetensors"
        path.write_bytes(safetensors_bytes(header, body, length=length))
        items.append((path, what))

    def edit(tensor: str, **changes: Any) -> dict[str, Any]:
        header = json.loads(json.dumps(good))
        header[tensor].update(changes)
        return header

    put("offsets_past_end", edit("b", data_offsets=[32, 96], shape=[16]), "offsets past the end")
    put("overlap", edit("b", data_offsets=[16, 48]), "two tensors overlapping")
    put("gap", {"b": good["b"]}, "data that belongs to no tensor")
    put("huge_shape", edit("a", shape=[100_000, 100_000]), "a shape of 1e10 elements over 32 bytes")
    put("huge_shape_and_offsets", edit("a", shape=[100_000, 100_000], data_offsets=[0, 40_000_000_000]),
        "1e10 elements with offsets to match, past the end of the file")
    put("overflow_shape", edit("a", shape=[2**62, 2**62, 16]), "a shape whose size overflows 64 bits")
    put("unknown_dtype", edit("a", dtype="F128"), "unknown dtype F128")
    put("dtype_not_string", edit("a", dtype=7), "dtype that is a number")
    put("negative_shape", edit("a", shape=[-4, -2]), "negative dimensions")
    put("float_shape", edit("a", shape=[4.0, 2]), "a float in the shape")
    put("offsets_reversed", edit("a", data_offsets=[32, 0]), "data_offsets with end before start")
    put("offsets_not_pair", edit("a", data_offsets=[0]), "data_offsets with one number")
    put("size_mismatch", edit("a", shape=[3, 2]), "shape needs 24 bytes, offsets hold 32")
    put("entry_not_object", {"a": [1, 2, 3]}, "a tensor entry that is a list")
    put("metadata_not_strings", {**good, "__metadata__": {"step": 3}}, "__metadata__ with a number")
    put("json_array", [good], "a JSON array header")
    put("json_string", "hello", "a JSON string header")
    put("not_json", b"{this is not json}", "a header that is not JSON")
    put("not_utf8", b'{"a\xff": 1}', "a header that is not UTF-8")
    put("duplicate_keys", b'{"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}, '
        b'"a": {"dtype": "F32", "shape": [8], "data_offsets": [32, 64]}}', "the same tensor twice")
    put("length_max", good, "header length 2**64-1", length=2**64 - 1)
    put("length_past_file", good, "header length larger than the file", length=10_000)
    put("length_zero", good, "header length 0", length=0)
    put("length_one", good, "header length 1", length=1)
    put("no_tensors", {}, "a header listing no tensors", body=b"")
    put("deep_nesting", b"[" * 100_000 + b"]" * 100_000, "JSON nested 100000 deep")
    put("many_huge_dims", edit("a", shape=[2**62] * 50_000), "50000 dimensions of 2**62 (slow to multiply)")
    put("huge_integer", b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 32]}}',
        "a 5000-digit dimension")
    put("long_name", {"x" * 100_000: good["a"], "b": good["b"]}, "a 100000-character name, short data",
        body=data[:48])
    path = folder / "seven_bytes.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00")
    items.append((path, "7 bytes, shorter than the length field"))
    return items


def valid_safetensors(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A real safetensors file of :func:`small_state_dict`."""
    save_file({k: v.contiguous() for k, v in small_state_dict().items()}, path, metadata=metadata)
    return path


def bad_indexes(folder: Path) -> Items:
    """Shard indexes that cannot be followed."""
    folder = Path(folder)
    items: Items = []
    valid_safetensors(folder / "shard-1.safetensors")

    def put(name: str, text: str, what: str) -> None:
        path = folder / name
        path.write_text(text)
        items.append((path, what))

    put("not_json.safetensors.index.json", "{not json", "an index that is not JSON")
    put("no_map.safetensors.index.json", json.dumps({"metadata": {}}), "an index without weight_map")
    put("missing_shard.safetensors.index.json",
        json.dumps({"weight_map": {"0.weight": "shard-9.safetensors"}}), "an index naming a missing shard")
    put("escape.safetensors.index.json",
        json.dumps({"weight_map": {"0.weight": "../../etc/x.safetensors"}}), "a shard path out of the folder")
    put("wrong_key.safetensors.index.json",
        json.dumps({"weight_map": {"not.there": "shard-1.safetensors"}}), "a key its shard does not hold")
    put("plain.json", json.dumps([1, 2, 3]), "a JSON file that is no index")
    return items


# ----------------------------------------------------------------------------------------------
# Things that are not regular files


def special(folder: Path) -> Items:
    """A directory named like a checkpoint and, where the OS has them, a FIFO."""
    folder = Path(folder)
    directory = folder / "directory.pt"
    directory.mkdir()
    items: Items = [(directory, "a directory")]
    if hasattr(os, "mkfifo"):
        fifo = folder / "fifo.pt"
        os.mkfifo(fifo)
        items.append((fifo, "a FIFO (named pipe)"))
    return items


def unreadable_file(folder: Path) -> Path:
    """A valid checkpoint with mode 000: unreadable, except for root."""
    path = valid_zip_checkpoint(Path(folder) / "mode000.pt")
    path.chmod(0)
    return path


def corpus(folder: Path) -> Items:
    """Every hostile or broken item, each in its own sub-folder-free file under ``folder``."""
    return (code_running(folder) + truncated(folder) + malformed(folder) + lying_safetensors(folder)
            + bad_indexes(folder) + special(folder))
