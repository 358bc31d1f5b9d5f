"""JSON from strangers (webhook bodies, Vault event messages) with a nesting limit.

    data = loads_bounded(body)      # ValueError (JsonTooDeepError) past MAX_DEPTH levels

``json.loads`` recurses once per nesting level: a 64 KiB body of ``[`` raises RecursionError,
which no caller expects and which surfaced as a 500. The depth is measured first, on the raw
text with the strings cut out, so nothing deep is ever handed to the parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JsonTooDeepError", "loads_bounded", "nesting_depth"]

MAX_DEPTH = 32
"""Far more than any message we read has (events nest 4 levels, the webhook 2)."""

# A JSON string, escapes included, in the unrolled form (no catastrophic backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


class JsonTooDeepError(ValueError):
    """The document nests deeper than allowed."""


def nesting_depth(raw: bytes, *, stop_at: int | None = None) -> int:
    """How deep ``[``/``{`` nest in ``raw`` (strings ignored); stops counting past ``stop_at``."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_at is not None and deepest > stop_at:
                    break
        else:
            depth -= 1
    return deepest


def loads_bounded(raw: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``max_depth``.

    Raises :class:`JsonTooDeepError` or ``json.JSONDecodeError`` / ``UnicodeDecodeError``
    (all ``ValueError``).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if nesting_depth(data, stop_at=max_depth) > max_depth:
        raise JsonTooDeepError(f"nested deeper than {max_depth} levels")
    return json.loads(data)
