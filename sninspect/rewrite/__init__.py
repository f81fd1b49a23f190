"""Rewriting checkpoints: strip, apply, convert, as thin drivers over the dialects.

- ``strip``: every SN layer becomes its plain parameter, divided by what the model divides by in eval
  mode (``--sigma eval``), by σ1 (``exact``) or after N power steps (``power:N``).
- ``apply``: plain weights become the SN state of ``torch.nn.utils.spectral_norm`` or of the
  parametrize API, u and v set to the exact top singular pair.
- ``convert``: SN moves between dialects with the same eval output.

``strip_state``, ``apply_state`` and ``convert_state`` are pure (one state dict in, a new one out,
inputs untouched); ``strip``, ``apply`` and ``convert`` do the same for a checkpoint file.

Modules: ``options`` (what the user asks), ``state`` (state dict and ``_metadata`` surgery),
``stripping`` / ``applying`` / ``converting`` (the drivers), ``container`` (the rest of the file),
``files`` (load, rewrite, write), ``summary`` (what was done).
"""

from sninspect.rewrite.applying import apply, apply_state
from sninspect.rewrite.converting import convert, convert_state
from sninspect.rewrite.options import RewriteOptions, Sigma, Style
from sninspect.rewrite.state import State, StateRewrite
from sninspect.rewrite.stripping import strip, strip_state
from sninspect.rewrite.summary import LayerChange, Rewrite

__all__ = ["LayerChange", "Rewrite", "RewriteOptions", "Sigma", "State", "StateRewrite", "Style", "apply",
           "apply_state", "convert", "convert_state", "strip", "strip_state"]
