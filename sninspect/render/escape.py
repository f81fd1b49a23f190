"""Names are data: every name (state-dict key, layer, model, file) is escaped for the medium it is shown in.

A name comes from the user's file and may hold anything a Python ``str`` can: rich markup (``[/]``),
emoji codes (``:warning:``), escape sequences (``\\x1b[31m``), newlines, lone surrogates (a file name
that is not valid UTF-8 decodes to ``\\udcff``), mathtext (``$\\foo$``), spreadsheet formulas
(``=HYPERLINK(...)``), Markdown and HTML. Each function here shows such a name as itself in one medium,
never interpreted by it:

============================  ======================================================================
:func:`visible`               the base of all: control and format characters, line breaks and lone
                              surrogates as Python-style backslash escapes (``\\n``, ``\\x1b``,
                              ``\\u202e``, ``\\udcff``); every other character as it is
:func:`for_terminal`          a rich ``Text`` of :func:`visible` (rich parses neither markup nor emoji
                              codes in a ``Text``)
:func:`for_log_line`          one line for stderr or a CI log (``check`` output): :func:`visible`
:func:`for_markdown`          :func:`visible`, then Markdown's active characters backslash-escaped
:func:`for_html`              :func:`visible`, then :func:`html.escape`
:func:`for_csv_cell`          surrogates and control characters other than tab made visible, CR and LF
                              included (a cell never starts a new row, whoever reads the file); a text
                              cell starting with ``= + - @`` or tab gets a leading ``'`` unless it is a
                              number or a bare ``-`` (formula neutralisation)
:func:`for_plot`              :func:`visible`, ``$`` as ``\\$`` (matplotlib's escape: no mathtext)
:func:`for_json`              any JSON-able value with every lone surrogate in its strings (keys too)
                              as the six characters ``\\udcXX``, so the output is valid UTF-8 (the
                              JSON policy's own, :mod:`sninspect.results.jsonable`)
============================  ======================================================================

Backslashes themselves are not doubled outside Markdown: ``a\\nb`` (backslash, n) and ``a<newline>b``
show alike in the terminal, a price paid for Windows paths and mathtext names staying readable. The
JSON output keeps every name exactly, except that lone surrogates read as their escape text.
"""

from __future__ import annotations

import html
import re
from typing import Any

from rich.text import Text

from sninspect.results.jsonable import for_json

__all__ = ["for_csv_cell", "for_html", "for_json", "for_log_line", "for_markdown", "for_plot", "for_terminal",
           "visible"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

_MARKDOWN_ACTIVE = re.compile(r"([\\`*\[\]<>#|~&$@])")
"""Backslash-escapable ASCII punctuation (CommonMark §2.4) that can start markup, a link, an HTML tag
or entity, a heading, a table cell, GitHub math (``$``) or a mention (``@``)."""

_UNDERSCORES = re.compile(r"_+")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell starting with one of these as a formula (OWASP CSV injection)."""


def visible(text: str) -> str:
    """``text`` with every character that is not printable (``str.isprintable``: control and format
    characters, line and paragraph separators, lone surrogates, unusual spaces) written as a backslash
    escape, as Python's ``repr`` would: ``\\n``, ``\\x1b``, ``\\u202e``, ``\\udcff``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def for_terminal(text: str, style: str = "") -> Text:
    """A rich ``Text`` showing ``text`` literally: no markup, no emoji codes, no escape sequences, one
    line (a table column folds it; nothing is cut)."""
    return Text(visible(text), style=style)


def for_log_line(text: str) -> str:
    """``text`` as exactly one line of plain text (stderr, a CI log): nothing in it can end the line,
    move the cursor or change colours."""
    return visible(text)


def for_markdown(text: str) -> str:
    """``text`` for Markdown (a table cell, a heading, a list item): one line, every active character
    backslash-escaped, so it can forge neither a row, a heading, a link nor inline HTML."""
    escaped = _MARKDOWN_ACTIVE.sub(r"\\\1", visible(text))
    return _UNDERSCORES.sub(_loose_underscores, escaped)


def for_html(text: str) -> str:
    """``text`` for HTML element content or a quoted attribute."""
    return html.escape(visible(text))


def for_csv_cell(value: Any) -> Any:
    """A cell for ``csv``/pandas: non-strings as they are; strings made safe to open in a spreadsheet.

    A tab stays; every other invisible character becomes an escape, CR and LF too (``\\r``, ``\\n``):
    pandas quotes a cell holding LF but not one holding CR, and a reader splitting lines would start
    a new row at either. A cell a spreadsheet would run as a formula gets a leading ``'`` (``-0.5``
    stays a number, a bare ``-`` stays the "no value" mark)."""
    if not isinstance(value, str):
        return value
    cell = "".join(c if c.isprintable() or c == "\t" else _escaped(c) for c in value)
    if cell.startswith(_FORMULA_START) and cell != "-" and not _is_number(cell):
        return "'" + cell
    return cell


def for_plot(text: str) -> str:
    """``text`` for a matplotlib label: one line, and ``$`` escaped so no mathtext is parsed.

    Matplotlib treats ``\\$`` as a literal dollar; with every ``$`` escaped, the count of unescaped
    dollars is zero and the text is drawn as it is (backslashes included)."""
    return visible(text).replace("$", "\\$")


# ----------------------------------------------------------------------------------------------


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _loose_underscores(run: re.Match[str]) -> str:
    """A run of ``_`` escaped unless it sits between two letters or digits: only such a run can open or
    close emphasis (CommonMark §6.2), so ``weight_orig`` stays as it is and ``_x_`` is escaped."""
    text, start, end = run.string, run.start(), run.end()
    inside = start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return run.group() if inside else "\\_" * (end - start)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
