"""``check --junit-xml``: the verdicts as a JUnit XML report (one test suite per checkpoint, one test
case per SN layer)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from sninspect.results.check import Rule, Verdict

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
