"""``check`` output: one line per broken rule (text), GitHub workflow commands (github), the whole
verdict (JSON), a JUnit XML report, a summary line."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import PurePath
from typing import assert_never

from sninspect.render.escape import for_json, for_log_line, visible
from sninspect.render.fit import wrap_line
from sninspect.render.formats import CheckFormat
from sninspect.results.check import Rule, Rules, Verdict


def render_check(verdicts: Sequence[Verdict], rules: Rules, fmt: CheckFormat, width: int | None = None) -> str:
    """The verdicts in ``fmt``, for stdout; text lines wider than ``width`` wrap at spaces."""
    match fmt:
        case CheckFormat.text:
            return to_text(verdicts, width)
        case CheckFormat.json:
            return to_json(verdicts, rules)
        case CheckFormat.github:
            return to_github(verdicts)
        case _:
            assert_never(fmt)


def to_text(verdicts: Sequence[Verdict], width: int | None = None) -> str:
    """One line per broken rule: ``<file>: <layer>: <quantity> = <value> > <limit>``; empty when all
    pass. Unreadable checkpoints are left to the error line on stderr. Names are made visible
    (:func:`~sninspect.render.escape.for_log_line`): a name cannot forge a line of a CI log. With
    ``width``, a longer line wraps at spaces (a name is never split), continued indented."""
    lines = [for_log_line(f"{PurePath(v.checkpoint).name}: {violation.message}")
             for v in verdicts for violation in v.violations if violation.rule is not Rule.unreadable]
    if width is not None:
        lines = [part for line in lines for part in wrap_line(line, width)]
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


def to_github(verdicts: Sequence[Verdict]) -> str:
    """One GitHub Actions workflow command per broken rule, unreadable files included:
    ``::error file=PATH,title=sninspect::LAYER: message``, escaped as the workflow-commands spec says
    (data: ``%`` ``\\r`` ``\\n``; properties also ``:`` and ``,``)."""
    lines = [f"::error file={_gh_property(v.checkpoint)},title=sninspect::{_gh_data(violation.message)}"
             for v in verdicts for violation in v.violations]
    return "".join(line + "\n" for line in lines)


def _gh_data(text: str) -> str:
    # Other control characters (an ESC in a layer name) made visible first: a name cannot colour or
    # rewrite the CI log; CR and LF are the spec's own escapes.
    text = "".join(c if c in "\r\n" else visible(c) for c in text)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


NETWORK_CASE = "(checkpoint)"
"""The JUnit test case of the checkpoint-wide rules (no SN layer, Lipschitz bound, warnings)."""


def to_junit(verdicts: Sequence[Verdict]) -> str:
    """JUnit XML: one ``testsuite`` per checkpoint, one ``testcase`` per SN layer plus
    :data:`NETWORK_CASE` for the checkpoint-wide rules. A case that breaks rules holds one
    ``failure`` (an unreadable checkpoint: one ``error``): ``message`` its broken rules joined by
    ``; ``, ``type`` their rule names, the text one rule per line."""
    root = ET.Element("testsuites", name="sninspect check")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for verdict in verdicts:
        names: list[str | None] = [*verdict.layers]
        names += [x.layer for x in verdict.violations if x.layer is not None and x.layer not in names]
        suite = ET.SubElement(root, "testsuite", name=_xml(verdict.checkpoint))
        counts = {"tests": 0, "failures": 0, "errors": 0}
        for layer in [*names, None]:
            case = ET.SubElement(suite, "testcase", classname=_xml(verdict.checkpoint),
                                 name=NETWORK_CASE if layer is None else _xml(layer))
            counts["tests"] += 1
            broken = [x for x in verdict.violations if x.layer == layer]
            if not broken:
                continue
            kind = "error" if any(x.rule is Rule.unreadable for x in broken) else "failure"
            counts[f"{kind}s"] += 1
            node = ET.SubElement(case, kind, message=_xml("; ".join(x.message for x in broken)),
                                 type=",".join(dict.fromkeys(x.rule.value for x in broken)))
            node.text = _xml("\n".join(x.message for x in broken))
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold even escaped (a layer name from a hostile checkpoint may have them)."""


def _xml(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
