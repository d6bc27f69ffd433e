"""Words for configuration errors: what was found, cut to a sane length.

A campaign file is written by people and, sometimes, by programs that go wrong: a value may be 100,000 characters
long, a key may be a binary blob. An error message echoes what it found so the user recognises it, but never more
than a short excerpt: :func:`short` cuts a value, :func:`found` describes it in words (``the text '1e3'``, ``the
number 8``, ``not-a-number (.nan)``), :func:`clip` is the last guard on a whole message line.
"""

from __future__ import annotations

import math
from typing import Any

#: longest excerpt of a value quoted in a message (characters)
VALUE_CHARS = 60
#: longest message of one problem (characters); longer ones are cut in the middle
MESSAGE_CHARS = 500


def short(value: Any, limit: int = VALUE_CHARS) -> str:
    """``repr`` of ``value``, cut to about ``limit`` characters with the full length said."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return repr(value[: max(limit - 20, 8)]) + f"... ({len(value)} characters)"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (list, tuple, dict)):
        text = repr(value) if len(value) <= 8 else None
        if text is not None and len(text) <= limit:
            return text
        kind = "list" if isinstance(value, (list, tuple)) else "mapping"
        return f"a {kind} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} characters)"


def number(value: float) -> str:
    """A float as YAML writes it (``.nan``, ``.inf``, ``-.inf``, else ``repr``)."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def found(value: Any) -> str:
    """What a YAML value is, in words, for "expected X, found Y" messages."""
    if value is None:
        return "nothing (an empty value or null)"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the whole number {short(value)}"
    if isinstance(value, float):
        if math.isnan(value):
            return "not-a-number (.nan)"
        if math.isinf(value):
            return f"{'minus ' if value < 0 else ''}infinity ({number(value)})"
        return f"the number {number(value)}"
    if isinstance(value, str):
        return f"the text {short(value)}"
    if isinstance(value, dict):
        keys = [short(k, 20) for k in list(value)[:4]]
        more = ", ..." if len(value) > 4 else ""
        return f"a mapping (keys {', '.join(keys)}{more})" if keys else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} entries" if value else "an empty list"
    return f"a {type(value).__name__}"


def clip(message: str, limit: int = MESSAGE_CHARS) -> str:
    """``message`` cut in the middle to at most about ``limit`` characters (the end says what to change)."""
    if len(message) <= limit:
        return message
    tail = limit // 4
    return message[: limit - tail - 30] + f" [... {len(message) - limit + 30} characters cut ...] " + message[-tail:]


def key_text(key: Any, limit: int = 40) -> str:
    """A key of a key path as shown in messages (long keys cut)."""
    text = str(key)
    return text if len(text) <= limit else text[: limit - 12] + f"...({len(text)} ch)"


__all__ = ["short", "number", "found", "clip", "key_text", "VALUE_CHARS", "MESSAGE_CHARS"]
