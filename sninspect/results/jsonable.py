"""The one JSON policy of every JSON output (``report``, a run, ``graph``, ``check``, ``Report.to_json``).

- :data:`SCHEMA_VERSION` under the key ``"schema"``, first in every top-level object: the version of
  the layout, raised when a field changes meaning or goes (README "The numbers (JSON schema)").
- Strict JSON: a NaN or infinite number is ``null`` (:func:`json_safe`, the one non-finite helper).
- UTF-8 text (``ensure_ascii=False``): names and σ read as they are; a lone surrogate in a name (a file
  name that is not valid UTF-8) is written as the six characters ``\\udcXX`` (:func:`for_json`), so the
  text is always valid UTF-8.
"""

from __future__ import annotations

import json
import math
from typing import Any

SCHEMA_VERSION = 1
"""The ``"schema"`` field of every JSON document sninspect writes."""


def json_safe(value: Any) -> Any:
    """Recursively turn tuples into lists and non-finite floats into None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def for_json(value: Any) -> Any:
    """``value`` (dicts, lists, strings, numbers) with every lone surrogate in its strings and keys
    replaced by its escape text (``\\udcff``, Python's ``backslashreplace``): the JSON is valid UTF-8.
    Every other character is kept; JSON escapes control characters itself."""
    if isinstance(value, str):
        return _no_surrogates(value)
    if isinstance(value, dict):
        return {(_no_surrogates(k) if isinstance(k, str) else k): for_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [for_json(v) for v in value]
    return value


def with_schema(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with ``"schema"`` first (a payload that has it keeps its own place)."""
    return payload if "schema" in payload else {"schema": SCHEMA_VERSION, **payload}


def dumps(payload: Any, *, indent: int | None = 2) -> str:
    """``payload`` as JSON text under the policy above (no trailing newline)."""
    return json.dumps(for_json(json_safe(payload)), indent=indent, allow_nan=False, ensure_ascii=False)


def _no_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
