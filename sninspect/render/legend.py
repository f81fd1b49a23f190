"""What every column of the layer table means, in one place: ``report --explain`` (table), the
"Columns" section of Markdown and HTML (:func:`sninspect.render.table.legend_table`). The JSON field
names are the README's "The numbers" table."""

from __future__ import annotations

import textwrap

from rich.cells import cell_len

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("layer", "name", "module path and parameter (prefixed by the model when a file holds several)"),
    ("dialect", "dialect", "how SN is stored (torch, torch-parametrize, mimicry, biggan, ...); none: no SN"),
    ("kind", "kind", "linear, conv1d/2d/3d, conv_transpose*, embedding or vector"),
    ("shape", "shape", "the stored weight's shape"),
    ("σ exact", "sigma_exact", "σ1, the largest singular value of the weight reshaped to a matrix (exact)"),
    ("σ̂", "sigma_estimate", "what the model divides by in eval mode, from the stored u (and v)"),
    ("rel err", "sigma_rel_error", "(σ̂ − σ1)/σ1; negative: σ̂ is too small and the layer runs above 1"),
    ("σ eff", "sigma_effective", "σ1/σ̂: the norm of the reshaped weight the model really uses; SN aims at 1"),
    ("cos err u", "cos_error_u", "1 − |cos| of the stored u to the exact top left singular vector (0: "
     "converged); little meaning when σ2/σ1 is near 1"),
    ("gap cos u", "gap_cos_error_u", "what check judges: the relative σ̂ error the angle of u forces given "
     "σ2/σ1, 1 − √(1 − sin²θ·(1 − (σ2/σ1)²)); ≈ 0 where any vector of a near-degenerate top gives σ1"),
    ("cos err v", "cos_error_v", "the same for the stored v (right singular vector); - where none is stored"),
    ("gap cos v", "gap_cos_error_v", "the same gap-aware error for the stored v"),
    ("σ2/σ1", "spectral_gap", "power iteration converges like (σ2/σ1)² per step: near 1, slowly"),
    ("op bound", "operator_bound", "certified upper bound of the layer as an operator (a conv at any input "
     "size, stride, padding); up to √(kh·kw) times σ eff for a kh×kw kernel; linear: σ eff"),
    ("verdict", "verdict", "ok, or the check rules the layer breaks under the rules in the summary (the "
     "same verdict check, the colours and the figures read); - : not judged (no SN)"),
)
"""(table title, JSON field, meaning) of each column, in table order."""

SUMMARY: tuple[tuple[str, str], ...] = (
    ("∏ σ_eff (matrix product)", "the product of the reshaped matrices' norms: what SN bounds; not a "
     "bound on a network with convolutions"),
    ("certified operator product", "the product of the op bounds over the same factors: a Lipschitz bound "
     "of the network read as a feed-forward chain with 1-Lipschitz activations"),
    ("BatchNorm", "enters both products as its eval-mode scaling max |γ|/√(running_var + ε)"),
)
"""(summary term, meaning)."""


def legend_lines(width: int) -> list[str]:
    """The legend as text lines at most ``width`` wide (``report --explain``)."""
    rows = [(title, meaning) for title, _, meaning in COLUMNS] + list(SUMMARY)
    key = min(max(cell_len(t) for t, _ in rows), 28)
    out = ["columns and terms:"]
    for title, meaning in rows:
        room = max(width - key - 4, 20)
        parts = textwrap.wrap(meaning, room, break_long_words=False) or [""]
        out.append(f"  {title}{' ' * max(key - cell_len(title), 0)}  {parts[0]}")
        out += [f"  {' ' * key}  {part}" for part in parts[1:]]
    return out

