"""The ``github`` format of ``check``: one GitHub Actions workflow command per broken rule."""

from __future__ import annotations

from collections.abc import Sequence

from sninspect.render.escape import visible
from sninspect.results.check import Rules, Verdict


def render_check(verdicts: Sequence[Verdict], rules: Rules, width: int | None = None) -> str:
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
