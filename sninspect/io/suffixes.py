"""The file-name suffixes of checkpoints, in one place: what a folder is searched for, which file
mappings hold tensors, and the part of a name that is not the checkpoint's own."""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "EXPORTED_SUFFIX",
    "INDEX_SUFFIX",
    "SAFETENSORS_SUFFIX",
    "TENSOR_SUFFIXES",
    "TORCH_SUFFIXES",
    "checkpoint_stem",
]

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
"""Suffixes written by ``torch.save``; any suffix but ``.safetensors``/``.json`` is tried as torch too."""

SAFETENSORS_SUFFIX = ".safetensors"

INDEX_SUFFIX = ".index.json"
"""A sharded checkpoint's index (``model.safetensors.index.json``), which names its shard files."""

TENSOR_SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)
"""Files that hold tensors themselves (an index only names them)."""

CHECKPOINT_SUFFIXES = (*TENSOR_SUFFIXES, INDEX_SUFFIX)
"""The files a folder given as a training run is searched for (not recursively), in the order a
message lists them."""

EXPORTED_SUFFIX = ".pt2"
"""A ``torch.export`` archive: read for its weights when named, not searched for in a folder."""


def checkpoint_stem(name: str) -> str:
    """``name`` without its checkpoint suffix, matched ignoring case (``D_100.PT`` → ``D_100``,
    ``model.safetensors.index.json`` → ``model.safetensors``, ``D_100.pt2`` → ``D_100``, so its
    "2" is not read as a step); ``name`` itself when it has none or is
    nothing but the suffix."""
    lowered = name.lower()
    for suffix in (*CHECKPOINT_SUFFIXES, EXPORTED_SUFFIX):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
