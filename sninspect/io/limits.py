"""How much one file may ask for before anything is loaded: limits shared by the torch and safetensors
readers."""

from __future__ import annotations

from sninspect.errors import InputError

MAX_TENSORS = 100_000
"""How many tensors one file may hold. Real checkpoints hold at most tens of thousands per file (large
models are sharded); a few MB of pickle can describe a million views of one storage, which ``torch.load``
would take many minutes to build (about 1 ms each) and the audit as long again to go through."""


class TooManyTensors(Exception):
    """A reader met more than :data:`MAX_TENSORS` tensors (raised to stop it there)."""


def too_many_tensors(shown: str, count: int | None = None) -> InputError:
    """The refusal of file ``shown`` holding ``count`` (or more than :data:`MAX_TENSORS`) tensors."""
    held = (f"{count:,} tensors, more than the {MAX_TENSORS:,}" if count is not None
            else f"more than the {MAX_TENSORS:,} tensors")
    return InputError(f"{shown}: holds {held} one file may hold; refused before loading (real checkpoints "
                      "hold at most tens of thousands per file: is it crafted, e.g. one storage viewed again "
                      "and again?)")
