"""Synthetic SN checkpoints for the benchmarks (never committed: they go to a temporary folder).

Three scales, all in the ``torch`` SN dialect (``P_orig``, ``P_u``, ``P_v``), float32 like a saved
training run, u/v after three power-iteration steps from random:

- ``gan-d-30M``: an SNGAN/BigGAN-style residual discriminator for 128×128 images: blocks with two
  3×3 SN convs and a 1×1 SN shortcut, channels 64 → 1024, an SN linear head and an SN class
  embedding (projection discriminator, 1000 classes); torch zip file;
- ``gan-d-100M``: the same design, four more 1024-channel blocks (the same kernel shapes, deeper);
- ``stack-24x1024x4096``: 24 SN linear layers 4096 → 1024, as safetensors (memory-mapped reading).

Weights are Gaussian with He scaling (their spectra are Marchenko–Pastur-like: trained weights have
heavier tails, which does not change the cost of an exact spectrum). Usage:
``python benchmarks/make_synthetic.py OUT_DIR [SCALE ...]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

CHANNELS = {
    "gan-d-30M": [64, 128, 256, 512, 768, 1024],
    "gan-d-100M": [64, 128, 256, 512, 768, 1024, 1024, 1024, 1024, 1024],
    "smoke": [8, 16, 16],
}
CLASSES = {"gan-d-30M": 1000, "gan-d-100M": 1000, "smoke": 10}
STACK = {"stack-24x1024x4096": (24, 1024, 4096), "smoke-stack": (3, 32, 96)}
SCALES = ["stack-24x1024x4096", "gan-d-30M", "gan-d-100M"]


def _sn_entries(key: str, weight: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``key_orig``, ``key_u``, ``key_v`` after three power steps from random (a run in training)."""
    matrix = weight.reshape(weight.shape[0], -1).double()  # (out, in*k*k)
    u = torch.randn(matrix.shape[0], generator=gen, dtype=torch.float64)
    v = torch.zeros(matrix.shape[1], dtype=torch.float64)
    for _ in range(3):
        v = matrix.T @ u
        v /= v.norm()
        u = matrix @ v
        u /= u.norm()
    return {key + "_orig": weight, key + "_u": u.float(), key + "_v": v.float()}


def discriminator_state(name: str) -> dict[str, torch.Tensor]:
    """State dict of a residual SN discriminator (module names as in a real nn.Module)."""
    gen = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    c_in = 3
    for index, c_out in enumerate(CHANNELS[name]):
        block = f"blocks.{index}."
        for conv, (a, b, k) in {"conv1": (c_in, c_out, 3), "conv2": (c_out, c_out, 3),
                                "shortcut": (c_in, c_out, 1)}.items():
            if conv == "shortcut" and a == b:
                continue
            weight = torch.randn(b, a, k, k, generator=gen) * (2 / (a * k * k)) ** 0.5
            state.update(_sn_entries(block + conv + ".weight", weight, gen))
            state[block + conv + ".bias"] = torch.zeros(b)
        c_in = c_out
    head = torch.randn(1, c_in, generator=gen) / c_in**0.5
    state.update(_sn_entries("linear.weight", head, gen))
    state["linear.bias"] = torch.zeros(1)
    embed = torch.randn(CLASSES[name], c_in, generator=gen) / c_in**0.5
    state.update(_sn_entries("embed.weight", embed, gen))
    return state


def stack_state(name: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    count, rows, cols = STACK[name]
    state: dict[str, torch.Tensor] = {}
    for index in range(count):
        weight = torch.randn(rows, cols, generator=gen) / cols**0.5
        state.update(_sn_entries(f"layers.{index}.weight", weight, gen))
        state[f"layers.{index}.bias"] = torch.zeros(rows)
    return state


def build(name: str, folder: Path) -> Path:
    """Write the checkpoint ``name`` into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    if name in STACK:
        from safetensors.torch import save_file

        path = folder / f"{name}.safetensors"
        save_file(stack_state(name), path)
    else:
        path = folder / f"{name}.pt"
        torch.save(discriminator_state(name), path)
    return path


def weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SN weights (``*_orig``) of a state dict, keyed by the module parameter name."""
    return {k.removesuffix("_orig"): t for k, t in state.items() if k.endswith("_orig")}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for scale in sys.argv[2:] or SCALES:
        path = build(scale, out)
        print(path, f"{path.stat().st_size / 2**20:.0f} MB")
