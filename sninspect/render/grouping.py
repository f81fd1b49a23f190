"""Say each thing once: notes and warnings that say the same about several layers become one line.

Two texts say the same when they differ only in their measured numbers (a residual, a divisor); the
line keeps the numbers all of them share and shows ``…`` where they differ (each layer's own values
stay in its JSON ``notes``). Numbers glued to a word (``dim=1``, ``u0``, ``conv2d``, ``3×3``) are part
of the wording, not measurements.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_NUMBER = re.compile(r"(?<![\w=.×^/])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w×])")
_ABOUT_LAYER = re.compile(r"^(?P<lead>.*?)layer '(?P<name>[^']+)'(?P<rest>(?::| not audited:| appears| vanishes) .*)$",
                          re.DOTALL)

LISTED = 6
"""Layer names listed on a grouped line before the rest are counted."""


def grouped(items: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(text, layer) pairs → (text, layers) groups in first-seen order; texts that differ only in
    measured numbers merge, their differing numbers shown as ``…``."""
    groups: dict[str, tuple[list[list[str]], list[str]]] = {}
    for text, layer in items:
        parts = _NUMBER.split(text)
        key = "#".join(parts)
        numbers = _NUMBER.findall(text)
        seen, layers = groups.setdefault(key, ([], []))
        seen.append(numbers)
        if layer not in layers:
            layers.append(layer)
    out = []
    for key, (seen, layers) in groups.items():
        parts = key.split("#")
        columns = list(zip(*seen, strict=True)) if seen[0] else []
        shown = [column[0] if len(set(column)) == 1 else "…" for column in columns]
        text = parts[0] + "".join(number + part for number, part in zip(shown, parts[1:], strict=True))
        out.append((text, layers))
    return out


def layers_text(layers: Sequence[str]) -> str:
    """``a, b`` or ``9 layers: a, b, c, d, e, f and 3 more``."""
    if len(layers) == 1:
        return layers[0]
    listed = ", ".join(layers[:LISTED])
    more = f" and {len(layers) - LISTED} more" if len(layers) > LISTED else ""
    return f"{len(layers)} layers: {listed}{more}"


def group_notes(items: Iterable[tuple[str, str]]) -> list[str]:
    """Each distinct note once, with the layers it is about: ``note (3 layers: a, b, c)``."""
    return [f"{text} ({layers_text(layers)})" for text, layers in grouped(items)]


def group_warnings(warnings: Sequence[str], *, measured: bool = True) -> list[str]:
    """Warnings about one layer each (``layer 'x': σ1 ≈ σ2 ...``, a run's ``layer 'x' appears in ...``)
    that say the same thing merge into one line naming the layers; every other warning stays as it is,
    in order. ``measured``: texts that differ only in measured numbers are the same (not so for a run's
    steps, which place each change)."""
    out: list[str] = []
    about: list[tuple[str, str]] = []
    slot: dict[str, int] = {}
    for warning in warnings:
        match = _ABOUT_LAYER.match(warning)
        if match is None:
            out.append(warning)
            continue
        lead, rest = match["lead"], match["rest"]
        key = lead + ("#".join(_NUMBER.split(rest)) if measured else rest)
        if key not in slot:
            slot[key] = len(out)
            out.append("")
        about.append((key, warning))
    for key, index in slot.items():
        members = [_ABOUT_LAYER.match(w) for k, w in about if k == key]
        pairs = [(m["lead"] + "|" + m["rest"], m["name"]) for m in members if m is not None]
        ((text, names),) = grouped(pairs)
        lead, rest = text.split("|", 1)
        if len(names) == 1:
            out[index] = f"{lead}layer '{names[0]}'{rest}"
        else:
            quoted = [f"'{n}'" for n in names]
            out[index] = f"{lead}{rest.removeprefix(':').strip()} ({layers_text(quoted)})"
    return out
