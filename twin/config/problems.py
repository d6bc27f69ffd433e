"""Pydantic's validation errors as one line per problem, in words, at the file's line: which key, what was found,
what is allowed (the keys a section takes, "did you mean", the choices of a union), cut to a sane length."""

from __future__ import annotations

import difflib
import math
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from twin.config.common import split_at
from twin.config.messages import clip, found, key_text, short
from twin.config.positions import Positions, dotted
from twin.core.errors import ConfigProblem

#: problems reported from one validation; the rest are counted
MAX_REPORTED = 50
#: validation errors looked at to find those problems (union members report several errors per problem)
_WORKED = 20 * MAX_REPORTED


# -- schema navigation for "allowed keys" and "did you mean" ------------------------------------------------------
def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [m for a in typing.get_args(tp) for m in _union_members(a) if m is not type(None)]
    return [tp]


def _pick(tp: Any, data: Any) -> Any:
    """The member of a (discriminated) union that ``data`` selects, or the type itself."""
    members = _union_members(tp)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) <= 1 or not isinstance(data, dict):
        return models[0] if models else members[0]
    for m in models:
        for key in ("type", "method", "dist"):
            fld = m.model_fields.get(key)
            if fld is not None and key in data and data[key] in (typing.get_args(fld.annotation) or ()):
                return m
    return None


def _schema_at(root: type, path: tuple, data: Any) -> type | None:
    """The pydantic class describing the mapping at ``path`` of ``data``, if one does."""
    tp: Any = root
    cur = data
    for element in path:
        tp = _pick(tp, cur)
        if tp is None:
            return None
        origin = typing.get_origin(_strip(tp))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fld = tp.model_fields.get(element)
            if fld is None:
                return None
            tp = fld.annotation
        elif origin in (dict, list):
            tp = typing.get_args(_strip(tp))[-1]
        else:
            return None
        try:
            cur = cur[element]
        except (KeyError, IndexError, TypeError):
            cur = None
    tp = _pick(tp, cur)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _suggest(word: Any, choices: list[str]) -> str:
    if len(str(word)) > 64:
        return ""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


# -- messages of validation errors ----------------------------------------------------------------------------------
def _data_path(loc: tuple, data: Any) -> tuple:
    """Drop the elements pydantic inserts into locations (union tags, type labels, the index of a mapping a
    validator wrapped into a list), keeping the path into ``data``."""
    out: list = []
    cur = data
    end = object()
    for i, element in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else end
        if (isinstance(cur, dict) and element in cur and isinstance(nxt, str) and nxt in cur
                and not isinstance(cur[element], (dict, list))):
            continue  # a union tag that is also a key of the data (legacy 'all_points: true')
        if isinstance(cur, dict) and element in cur:
            out.append(element)
            cur = cur[element]
        elif isinstance(cur, list) and isinstance(element, int) and 0 <= element < len(cur):
            out.append(element)
            cur = cur[element]
        elif isinstance(cur, list) and not isinstance(element, int):
            continue  # a union's label: a list is only ever entered by an index
        elif isinstance(cur, dict) and (isinstance(element, int) or _is_tag(element, cur)
                                        or (nxt is not end and not isinstance(nxt, int) and nxt in cur)
                                        or (nxt is end and _is_label(element))):
            continue  # a tag, a label followed by a key the data has, or a member's label ending the path
            # (``float | dict[str, float]`` given a mapping: the 'float' member's type error is about the mapping)
        elif isinstance(cur, (dict, list)):
            # A key that is not in the data (missing or extra key) ends the path.
            out.append(element)
            cur = None
        elif cur is not None or _is_label(element):
            continue
        else:
            out.append(element)
    return tuple(out)


def _is_label(element: Any) -> bool:
    """Whether a location element is pydantic's name of a type (``float``, ``list[float]``, ``function-after``)."""
    return isinstance(element, str) and (element in ("float", "int", "str", "bool", "list", "dict", "none")
                                         or not element.isidentifier() or element[:1].isupper() or "[" in element)


def _is_tag(element: Any, cur: Any) -> bool:
    if not isinstance(cur, dict) or not isinstance(element, str):
        return False
    if any(cur.get(k) == element for k in ("type", "method", "dist")):
        return True
    # pydantic labels non-discriminated union members by class or type names (e.g. 'list[float]', 'function-after').
    return not element.isidentifier() or element[:1].isupper() or "[" in element


#: what each pydantic type error expected, in words
_EXPECTED = {"int_type": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
             "bool_type": "true or false", "string_type": "text", "list_type": "a list", "dict_type": "a mapping",
             "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys",
             "none_required": "nothing (null)", "int_parsing": "a whole number", "float_parsing": "a number"}
_PYDANTIC_HEAD = {"int_type": "Input should be a valid integer", "float_type": "Input should be a valid number",
                  "bool_type": "Input should be a valid boolean", "string_type": "Input should be a valid string",
                  "list_type": "Input should be a valid list", "dict_type": "Input should be a valid mapping"}
_WORDS = {"yes", "no", "on", "off", "true", "false", "y", "n"}
#: the name patterns of the schema, in words
_PATTERNS = {
    r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$": "a name: a letter, then at most 63 letters, digits, '_', '.' or '-'",
    r"^[A-Za-z][A-Za-z0-9_]*$": "a name: a letter, then letters, digits or '_'",
    r"^[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*$": "a field written component.name (letters, digits, '_')",
}


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return len(text) < 64


def _hint(kinds: set[str], value: Any) -> str:
    """What to write instead, for a value of the wrong type."""
    number = kinds & {"int_type", "float_type"}
    if number and isinstance(value, str):
        if _numeric_text(value):
            return ": quoted text is never read as a number, remove the quotes"
        if value.strip().lower() in _WORDS:
            return ": write a number"
    if "int_type" in kinds and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return f": write the whole number {int(value)} (no decimal point or exponent)"
    if number and isinstance(value, bool):
        return ": true and false are not numbers"
    if "bool_type" in kinds and isinstance(value, str) and value.strip().lower() in _WORDS:
        return ": write true or false without quotes"
    if "bool_type" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return ": write true or false"
    if "string_type" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f": quote it if you mean the text (\"{short(value, 30)}\")"
    return ""


def _type_message(kinds: list[str], value: Any) -> str:
    words = list(dict.fromkeys(_EXPECTED[k] for k in kinds))
    wanted = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    head = _PYDANTIC_HEAD.get(kinds[0]) if len(words) == 1 else None
    text = (f"{head} ({wanted})" if kinds[0] in ("int_type", "bool_type", "string_type") else head) if head \
        else f"expected {wanted}"
    return f"{text}; found {found(value)}{_hint(set(kinds), value)}"


def _message(err: dict, root: type, data: Any, path: tuple) -> str | None:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        schema = _schema_at(root, path[:-1], data)
        # the names a file writes: a field's alias where it has one (a route's "from", not the Python name "from_")
        allowed = sorted(f.alias or n for n, f in schema.model_fields.items()) if schema else []
        name = key_text(path[-1])
        return (f"unknown key '{name}'; {_suggest(path[-1], allowed)}"
                f"allowed keys: {', '.join(allowed)}" if allowed else f"unknown key '{name}'")
    if kind == "missing":
        return f"missing required key '{path[-1]}'"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        disc = str(ctx.get("discriminator", "type")).strip("'")
        return (f"unknown {disc} {short(ctx.get('tag'))}; {_suggest(ctx.get('tag'), tags)}known: "
                f"{', '.join(tags)}")
    if kind == "union_tag_not_found":
        disc = str(err.get("ctx", {}).get("discriminator", "type")).strip("'")
        return f"missing required key '{disc}' (it selects the kind of section)"
    if kind == "too_short" and isinstance(value, (dict, list)):
        return f"needs at least {err.get('ctx', {}).get('min_length', 1)} entry"
    if kind == "literal_error":
        exp = str(err.get("ctx", {}).get("expected", ""))
        options = re.findall(r"'([^']*)'", exp)
        return f"{short(value)} is not allowed here; {_suggest(str(value), options)}expected one of: {exp}"
    if kind in _EXPECTED:
        return _type_message([kind], value)
    if kind == "string_pattern_mismatch":
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        words = _PATTERNS.get(pattern)
        if words:
            return f"expected {words}; found {found(value)} (pattern {pattern})"
    if kind == "finite_number":
        return f"Input should be a finite number; found {found(value)}: infinity and NaN are not allowed here"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, "):]
    if kind not in ("value_error", "assertion_error") and not isinstance(value, (dict, list)):
        msg += f" (got {short(value)})"
    return msg


def validation_problems(exc: ValidationError, root: type, data: Any, filename: str, idx: Positions) -> list[ConfigProblem]:
    """One problem per error of ``exc`` (unions' noise removed, at most :data:`MAX_REPORTED`), sorted by line."""
    errors = exc.errors(include_url=False)
    total = len(errors)
    # Only the first errors are worked on (their paths, suggestions); a file with 100,000 wrong values is counted.
    errors = errors[:_WORKED]
    items = [(e, _data_path(e["loc"], data)) for e in errors]
    # A union reports every member's complaint. A type error at a path that another member looked into (it has
    # errors below) is that other member's wrong guess; type errors of several members at one path are merged.
    below = {p[:n] for _, p in items for n in range(len(p))}
    items = [(e, p) for e, p in items if not (e["type"] in _EXPECTED and p in below)]
    # One member took the value's type and refused the value itself (``end: 1e400`` of ``float | str``: not finite):
    # the other members' type errors at that path are noise.
    judged = {p for e, p in items if e["type"] not in _EXPECTED}
    items = [(e, p) for e, p in items if not (e["type"] in _EXPECTED and p in judged)]
    merged: dict[tuple, list[str]] = {}
    for e, p in items:
        if e["type"] in _EXPECTED:
            merged.setdefault(p, []).append(e["type"])
    # A misspelled key shows up twice (extra 'shpe' + missing 'shape'): keep only the "did you mean".
    covered = set()
    for e, p in items:
        if e["type"] == "extra_forbidden":
            schema = _schema_at(root, p[:-1], data)
            allowed = list(schema.model_fields) if schema else []
            if len(str(p[-1])) <= 64:
                for m in difflib.get_close_matches(str(p[-1]), allowed, n=1, cutoff=0.6):
                    covered.add(p[:-1] + (m,))
    problems, seen, skipped = [], set(), total - len(errors)
    for e, p in items:
        if e["type"] == "missing" and p in covered:
            continue
        if len(problems) >= MAX_REPORTED:
            skipped += 1
            continue
        if e["type"] in _EXPECTED:
            kinds = merged.pop(p, None)
            if kinds is None:
                continue
            msg = _type_message(kinds, e.get("input"))
        else:
            msg = _message(e, root, data, p)
        sub, msg = split_at(msg or "")
        p = p + sub
        if e["type"] == "union_tag_invalid":
            p = p + (str(e.get("ctx", {}).get("discriminator", "type")).strip("'"),)
        if e["type"] == "missing":
            line, col = idx.at(p[:-1], data)
        else:
            line, col = idx.at(p, data, key=e["type"] == "extra_forbidden")
        key = (line, dotted(p), msg)
        if msg and key not in seen:
            seen.add(key)
            problems.append(ConfigProblem(filename, line, col, dotted(p), clip(msg)))
    if not problems and errors:
        # every error was filtered as noise: report the first as pydantic words it rather than nothing
        e, p = errors[0], _data_path(errors[0]["loc"], data)
        line, col = idx.at(p, data)
        message = clip(f"{e['msg']} (got {short(e.get('input'))})")
        problems.append(ConfigProblem(filename, line, col, dotted(p), message))
    problems.sort(key=lambda q: (q.line or 0, q.column or 0))
    if skipped:
        line, col = (problems[-1].line, problems[-1].column) if problems else idx.at((), data)
        problems.append(ConfigProblem(filename, line, col, "", f"and {skipped} more problems like these (not shown; "
                                      "fix these first)"))
    return problems
