"""Loading campaign YAML files with clear errors.

* YAML is parsed with PyYAML's *safe* loader only: tags that would construct Python objects are errors.
* Every key and value keeps its line and column, so each problem is reported as ``file:line:col: key.path: message``.
* Duplicate keys (which YAML loaders silently overwrite) are errors.
* All problems are collected and raised together as one :class:`~twin.core.errors.ConfigError`.
* Misspelled keys and model types get a "did you mean" and the list of allowed keys.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from twin.config.common import split_at
from twin.core.errors import ConfigError, ConfigProblem

MAX_BYTES = 4 * 2**20


@dataclass
class LoadedCampaign:
    """A validated campaign: the typed configuration, the file it came from, its verbatim text and SHA-256."""

    config: Any
    path: Path
    text: str
    sha256: str

    @property
    def directory(self) -> Path:
        return self.path.parent


# -- YAML with positions -------------------------------------------------------------------------------------------
class _Node:
    """Position index over the composed YAML tree: key path -> (line, column) of the key and of the value."""

    def __init__(self):
        self.value_pos: dict[tuple, tuple[int, int]] = {}
        self.key_pos: dict[tuple, tuple[int, int]] = {}


def _index(node: yaml.Node, path: tuple, idx: _Node, problems: list[tuple[tuple, tuple[int, int], str]]) -> None:
    idx.value_pos[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else None
            if key is None:
                problems.append((path, (knode.start_mark.line + 1, knode.start_mark.column + 1),
                                 "keys must be plain names, not lists or mappings"))
                continue
            if key in seen:
                problems.append((path + (key,), (knode.start_mark.line + 1, knode.start_mark.column + 1),
                                 f"duplicate key '{key}' (first given on line {seen[key]})"))
                continue
            seen[key] = knode.start_mark.line + 1
            idx.key_pos[path + (key,)] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            _index(vnode, path + (key,), idx, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (i,), idx, problems)


def parse_yaml(text: str, filename: str) -> tuple[Any, _Node]:
    """Safe-parse ``text``; returns the data and the position index. Raises ConfigError for syntax, tags, duplicates."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([ConfigProblem(filename, 1, 1, "", "the file is empty; a campaign starts with "
                                                                 "'schema_version: 1'")])
        idx = _Node()
        dup: list[tuple[tuple, tuple[int, int], str]] = []
        _index(node, (), idx, dup)
        if dup:
            raise ConfigError([ConfigProblem(filename, ln, col, _dotted(p), msg) for p, (ln, col), msg in dup])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(what):
            what = (f"{what.strip()}: tags that construct objects are not allowed in campaign files "
                    f"(twin reads YAML with the safe loader)")
        else:
            what = f"YAML syntax error: {what}"
        raise ConfigError([ConfigProblem(filename, mark.line + 1 if mark else None,
                                         mark.column + 1 if mark else None, "", what)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(filename, None, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    return data, idx


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


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
            field = m.model_fields.get(key)
            if field is not None and key in data and data[key] in (typing.get_args(field.annotation) or ()):
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
            field = tp.model_fields.get(element)
            if field is None:
                return None
            tp = field.annotation
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


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


# -- validation -----------------------------------------------------------------------------------------------------
def _data_path(loc: tuple, data: Any) -> tuple:
    """Drop the union-tag elements pydantic inserts into locations, keeping the path into ``data``."""
    out: list = []
    cur = data
    for element in loc:
        if isinstance(cur, dict) and element in cur:
            out.append(element)
            cur = cur[element]
        elif isinstance(cur, list) and isinstance(element, int) and element < len(cur):
            out.append(element)
            cur = cur[element]
        elif isinstance(cur, (dict, list)):
            # A key that is not in the data (missing or extra key) ends the path; union tags are skipped.
            if not _is_tag(element, cur):
                out.append(element)
                cur = None
        else:
            if cur is not None:
                continue
            out.append(element)
    return tuple(out)


def _is_tag(element: Any, cur: Any) -> bool:
    if not isinstance(cur, dict) or not isinstance(element, str):
        return False
    if any(cur.get(k) == element for k in ("type", "method", "dist")):
        return True
    # pydantic labels non-discriminated union members by class or type names (e.g. 'list[float]', 'function-after').
    return not element.isidentifier() or element[:1].isupper() or "[" in element


def _message(err: dict, root: type, data: Any, path: tuple) -> str | None:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        schema = _schema_at(root, path[:-1], data)
        allowed = sorted(schema.model_fields) if schema else []
        return (f"unknown key '{path[-1]}'; {_suggest(path[-1], allowed)}"
                f"allowed keys: {', '.join(allowed)}" if allowed else f"unknown key '{path[-1]}'")
    if kind == "missing":
        return f"missing required key '{path[-1]}'"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        disc = str(ctx.get("discriminator", "type")).strip("'")
        return f"unknown {disc} '{ctx.get('tag')}'; {_suggest(ctx.get('tag'), tags)}known: {', '.join(tags)}"
    if kind == "union_tag_not_found":
        disc = str(err.get("ctx", {}).get("discriminator", "type")).strip("'")
        return f"missing required key '{disc}' (it selects the kind of section)"
    if kind == "too_short" and isinstance(value, (dict, list)):
        return f"needs at least {err.get('ctx', {}).get('min_length', 1)} entry"
    if kind == "literal_error":
        exp = str(err.get("ctx", {}).get("expected", ""))
        options = re.findall(r"'([^']*)'", exp)
        return f"{value!r} is not allowed here; {_suggest(str(value), options)}expected one of: {exp}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, "):]
    if kind not in ("value_error", "assertion_error") and not isinstance(value, (dict, list)):
        msg += f" (got {value!r})"
    return msg


def validate_data(data: Any, filename: str, idx: _Node | None = None):
    """Validate parsed YAML ``data`` against the campaign schema; ConfigError with every problem if invalid."""
    from twin.config.schema import SCHEMA_VERSION, campaign_type, check_references

    idx = idx or _Node()

    def pos(path: tuple, key: bool = False) -> tuple[int | None, int | None]:
        # Errors about a whole mapping or list point at its key; errors about a scalar at the value.
        node = data
        for p in path:
            try:
                node = node[p]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if isinstance(node, (dict, list)) and path in idx.key_pos:
            return idx.key_pos[path]
        table = idx.key_pos if key else idx.value_pos
        for n in range(len(path), -1, -1):
            if path[:n] in table:
                return table[path[:n]]
            if path[:n] in idx.value_pos:
                return idx.value_pos[path[:n]]
        return None, None

    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(filename, 1, 1, "", "a campaign file is a mapping of sections "
                                                             "(schema_version, campaign, models, timeline, ...)")])
    version = data.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        ln, col = pos(("schema_version",))
        raise ConfigError([ConfigProblem(filename, ln, col, "schema_version",
                                         f"schema_version {version!r} is not supported; this twin reads "
                                         f"schema_version {SCHEMA_VERSION}")])
    root = campaign_type()
    try:
        cfg = root.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        paths = [_data_path(e["loc"], data) for e in errors]
        # A misspelled key shows up twice (extra 'shpe' + missing 'shape'): keep only the "did you mean".
        covered = set()
        for e, p in zip(errors, paths):
            if e["type"] == "extra_forbidden":
                schema = _schema_at(root, p[:-1], data)
                allowed = list(schema.model_fields) if schema else []
                for m in difflib.get_close_matches(str(p[-1]), allowed, n=1, cutoff=0.6):
                    covered.add(p[:-1] + (m,))
        problems, seen = [], set()
        for e, p in zip(errors, paths):
            if e["type"] == "missing" and p in covered:
                continue
            msg = _message(e, root, data, p)
            sub, msg = split_at(msg or "")
            p = p + sub
            if e["type"] == "union_tag_invalid":
                p = p + (str(e.get("ctx", {}).get("discriminator", "type")).strip("'"),)
            line, col = pos(p, key=e["type"] == "extra_forbidden") if e["type"] != "missing" else pos(p[:-1])
            key = (line, _dotted(p), msg)
            if msg and key not in seen:
                seen.add(key)
                problems.append(ConfigProblem(filename, line, col, _dotted(p), msg))
        problems.sort(key=lambda q: (q.line or 0, q.column or 0))
        raise ConfigError(problems) from None
    refs = check_references(cfg)
    if refs:
        raise ConfigError([ConfigProblem(filename, *pos(p), _dotted(p), m) for p, m in refs])
    return cfg


def load_campaign(path: str | Path) -> LoadedCampaign:
    """Read, parse and validate a campaign file.

    Raises
    ------
    ConfigError
        With one :class:`ConfigProblem` per problem found (file, line, column, key path, message).
    """
    path = Path(path)
    name = str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError([ConfigProblem(name, None, None, "", f"file is larger than {MAX_BYTES} bytes; "
                                                                   "is this a campaign file?")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(name, None, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem(name, None, None, "", "is a directory, not a campaign file")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(name, None, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(name, None, None, "", f"not UTF-8 text (byte {exc.start})")]) from None
    data, idx = parse_yaml(text, name)
    cfg = validate_data(data, name, idx)
    return LoadedCampaign(cfg, path.resolve(), text, hashlib.sha256(raw).hexdigest())
