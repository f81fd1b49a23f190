"""Read ``torch.save`` files without running code from them.

Size claims and the globals a pickle would call are checked by :mod:`sninspect.io.torch_check` first;
then ``torch.load(weights_only=True, map_location="cpu")``, memory-mapped for zip archives. Plain
pickles (``pickle.dump``) are read only with ``unsafe_load``. Every failure is one
:class:`~sninspect.errors.InputError` (or :class:`~sninspect.errors.UnsafeCheckpointError`) line.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from sninspect.errors import InputError, UnsafeCheckpointError, flag
from sninspect.io import torch_check
from sninspect.io.files import library_path, one_line

__all__ = ["load_torch"]


_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNSAFE_HINTS = ("GLOBAL", "Unsupported class", "Trying to call reduce", "was not an allowed global")
_NOISE = ("Weights only load failed", "In PyTorch 2.6", "Re-running", "Please file an issue",
          "Check the documentation", "(1)", "(2)", "WeightsUnpickler error:")


def load_torch(file: Path, shown: str, magic: bytes, *, unsafe_load: bool) -> tuple[str, Any]:
    """``(format, object)`` of a torch.save file; plain pickles need ``unsafe_load``, unknown bytes are
    refused unread."""
    if magic.startswith(torch_check.ZIP_MAGIC):
        torch_check.check_zip_claims(file, shown)
        return "torch-zip", _torch_load(file, shown, zip_format=True, unsafe_load=unsafe_load)
    if torch_check.LEGACY_MAGIC in magic:
        torch_check.check_legacy_claims(file, shown)
        return "torch-legacy", _torch_load(file, shown, zip_format=False, unsafe_load=unsafe_load)
    culprit, is_pickle = torch_check.scan_file(file, pickles=1)
    if unsafe_load and (is_pickle or culprit is not None):
        return "pickle", _pickle_load(file, shown)
    if culprit is not None and not culprit.startswith("torch."):
        raise _unsafe(shown, culprit)
    if culprit is not None:  # tensors written with pickle.dump rebuild through torch.storage._load_from_bytes
        raise UnsafeCheckpointError(f"{shown}: refused to load: a plain pickle of tensors (pickle.dump), "
                                    "not a torch.save checkpoint; unpickling it could run code (pass "
                                    f"{flag('unsafe_load')} only if you trust this file, or re-save it with "
                                    "torch.save)")
    if is_pickle:
        raise InputError(f"{shown}: a plain pickle, not a torch.save checkpoint (sninspect reads files "
                         "written by torch.save or safetensors)")
    if magic.startswith(b"PK\x05\x06"):
        raise InputError(f"{shown}: an empty zip archive, no records (expected a file written by torch.save)")
    raise InputError(f"{shown}: not a checkpoint: unknown format, starts with {magic[:8]!r} (expected a zip "
                     "archive or legacy file written by torch.save, or a safetensors file)")


def _pickle_load(file: Path, shown: str) -> Any:
    """A plain pickle (``pickle.dump``), read only with ``--unsafe-load``: this runs whatever it holds."""
    try:
        with open(file, "rb") as f:
            return pickle.load(f)
    except Exception as err:
        raise InputError(f"{shown}: cannot read as a pickle: {one_line(err)} (is it truncated or "
                         "corrupt?)") from None


def _unsafe(shown: str, culprit: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{shown}: refused to load: the pickle calls '{culprit}', which could run code; sninspect loads "
        f"tensors only (pass {flag('unsafe_load')} only if you trust this file)")


def _torch_load(file: Path, shown: str, *, zip_format: bool, unsafe_load: bool) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol and mmap notes are not the user's concern
            with library_path(file) as name:  # a non-UTF-8 file name: opened through its bytes
                return torch.load(name, map_location="cpu", weights_only=not unsafe_load, mmap=zip_format)
    except Exception as err:  # torch raises anything from RuntimeError to UnicodeDecodeError on bad input
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        if not unsafe_load and isinstance(err, pickle.UnpicklingError):
            # Name the global from the pickle itself (torch's message spells some oddly, e.g. commands.call
            # for subprocess.call), falling back to torch's words; protocol-4 pickles stop torch early.
            culprit = torch_check.scan_zip(file) if zip_format else torch_check.scan_file(file, 4)[0]
            found = _TORCH_GLOBAL.search(text)
            if culprit is None and found and any(h in text for h in _UNSAFE_HINTS):
                culprit = found.group(1)
            if culprit is not None:
                raise _unsafe(shown, culprit) from None
        if "TorchScript" in text:
            raise InputError(f"{shown}: a TorchScript archive (torch.jit.save), not a torch.save "
                             f"checkpoint (pass {flag('unsafe_load')} to read its weights, only if you trust the "
                             "file)") from None
        kind = "zip-format" if zip_format else "legacy"
        raise InputError(f"{shown}: cannot read as a {kind} PyTorch checkpoint: {_torch_detail(err, text)} "
                         "(expected a file written by torch.save; is it truncated or corrupt?)") from None


def _torch_detail(err: Exception, text: str) -> str:
    """The informative line of a torch error (weights-only errors wrap it in advice meant for coders)."""
    if isinstance(err, EOFError) or "unexpected EOF" in text:
        return "the file ends too early"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_NOISE)]
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    line = found.group(1).strip() if found else (useful or lines or [type(err).__name__])[0]
    line = line.split(" This is an internal miniz error")[0]
    return line if len(line) <= 160 else line[:157] + "..."
