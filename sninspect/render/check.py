"""``check`` output: one line per broken rule (text), the whole verdict (JSON), a summary line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import PurePath
from typing import assert_never

from sninspect.render.escape import for_json, for_log_line
from sninspect.render.formats import CheckFormat
from sninspect.results.check import Rule, Rules, Verdict


def render_check(verdicts: Sequence[Verdict], rules: Rules, fmt: CheckFormat) -> str:
    """The verdicts in ``fmt``, for stdout."""
    match fmt:
        case CheckFormat.text:
            return to_text(verdicts)
        case CheckFormat.json:
            return to_json(verdicts, rules)
        case _:
            assert_never(fmt)


def to_text(verdicts: Sequence[Verdict]) -> str:
    """One line per broken rule: ``<file>: <layer>: <quantity> = <value> > <limit>``; empty when all
    pass. Unreadable checkpoints are left to the error line on stderr. Names are made visible
    (:func:`~sninspect.render.escape.for_log_line`): a name cannot forge a line of a CI log."""
    lines = [for_log_line(f"{PurePath(v.checkpoint).name}: {violation.message}")
             for v in verdicts for violation in v.violations if violation.rule is not Rule.unreadable]
    return "".join(line + "\n" for line in lines)


def summary_line(verdicts: Sequence[Verdict]) -> str:
    """``check: 2 checkpoints, 14 SN layers, 3 rules broken in 1 checkpoint`` (for stderr)."""
    unreadable = [v for v in verdicts if any(x.rule is Rule.unreadable for x in v.violations)]
    unread = len(unreadable)
    failed = [v for v in verdicts if not v.passed and v not in unreadable]
    broken = sum(len(v.violations) for v in failed)
    layers = sum(v.layers_checked for v in verdicts)
    head = f"check: {_plural(len(verdicts), 'checkpoint')}, {_plural(layers, 'SN layer')} judged"
    tail = f"; {unread} could not be read" if unread else ""
    if not failed:
        return f"{head}: all rules hold{tail}"
    return f"{head}: {_plural(broken, 'violation')} in {_plural(len(failed), 'checkpoint')}{tail}"


def to_json(verdicts: Sequence[Verdict], rules: Rules) -> str:
    """``{"passed", "rules", "checkpoints": [{checkpoint, passed, layers_checked}], "violations": [...]}``."""
    payload = {
        "passed": all(v.passed for v in verdicts),
        "rules": asdict(rules),
        "checkpoints": [
            {"checkpoint": v.checkpoint, "passed": v.passed, "layers_checked": v.layers_checked}
            for v in verdicts
        ],
        "violations": [violation.to_dict() for v in verdicts for violation in v.violations],
    }
    return json.dumps(for_json(payload), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
