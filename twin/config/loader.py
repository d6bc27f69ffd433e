"""Loading campaign YAML files with clear errors.

Whatever the file holds, :func:`load_campaign` returns a validated campaign or raises one
:class:`~twin.core.errors.ConfigError` listing one-line problems ``file:line:col: key.path: message``; nothing else
escapes, and no file makes it hang, recurse or fill memory:

* **Reading**: at most :data:`MAX_BYTES` bytes, and only from a regular file. A device (``/dev/zero``), a pipe
  (FIFO) or a socket is refused before a byte is read: a FIFO without a writer would block, a device may never end.
  The file is opened with ``O_NONBLOCK`` so that a file swapped for a FIFO between the check and the open cannot
  block either, and checked again on the open descriptor.
* **Text**: UTF-8 without the control characters YAML forbids (a NUL byte is reported at its line and column).
* **YAML** (:mod:`twin.config.reader`): the safe subset only (tags that construct objects are errors), duplicate keys
  are errors, plain scalars by YAML 1.2 with the YAML 1.1 look-alikes refused (``yes``, ``on``, ``010``,
  ``12:00:00``), and bounds on nesting, values and aliases (a "billion laughs" file is refused in milliseconds).
* **Types are strict** (:func:`validate_data`): no coercion across types, so ``"1e3"`` (quoted) is not a number,
  ``1000.0`` is not a whole number, ``true`` is not 1; NaN and infinity are refused in every number (no field of
  schema version 1 means them). A message says what was expected and what was found, e.g. ``Input should be a valid
  integer (a whole number); found the text 'eight'``, with values cut to a sane length (:mod:`twin.config.messages`).
* All problems are collected and reported together (at most :data:`MAX_REPORTED`, then how many more).
* Misspelled keys and model types get a "did you mean" and the list of allowed keys.
* Cross-section rules and resource limits (:mod:`twin.config.limits`) are checked after the sections validated.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from twin.config.common import split_at
from twin.config.messages import clip, found, key_text, short
from twin.config.positions import Positions, dotted
from twin.config.reader import read_yaml
from twin.core.errors import ConfigError, ConfigProblem

#: the largest campaign file read (bytes)
MAX_BYTES = 4 * 2**20
#: problems reported from one validation; the rest are counted
MAX_REPORTED = 50
#: validation errors looked at to find those problems (union members report several errors per problem)
_WORKED = 20 * MAX_REPORTED

#: kept for callers of the former names
_Node = Positions
_dotted = dotted


@dataclass
class LoadedCampaign:
    """A validated campaign: the typed configuration, the file it came from, its verbatim text and SHA-256, and the
    positions of its keys (for problems found after loading, such as a run directory outside the allowed root)."""

    config: Any
    path: Path
    text: str
    sha256: str
    positions: Positions | None = field(default=None, repr=False, compare=False)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def problem(self, path: tuple, message: str) -> ConfigProblem:
        """A :class:`ConfigProblem` at the key ``path`` of this file (line and column where known)."""
        line, col = self.positions.lookup(path) if self.positions is not None else (None, None)
        name = (self.positions.filename if self.positions is not None else "") or str(self.path)
        return ConfigProblem(name, line, col, dotted(path), clip(message))


# -- reading ----------------------------------------------------------------------------------------------------------
def _refuse(name: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(name, None, None, "", message)])


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of the campaign file ``path``: a regular file of at most :data:`MAX_BYTES` bytes.

    Devices, pipes and sockets are refused without reading (see the module docstring for why).

    Raises
    ------
    ConfigError
        Naming the file and the reason.
    """
    name = str(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise _refuse(name, "no such file") from None
    except OSError as exc:
        raise _refuse(name, f"cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(name, "is a directory, not a campaign file")
    too_large = (f"file is larger than {MAX_BYTES} bytes; is this a campaign file? (large data belongs in data "
                 "files that the campaign names)")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(name, f"is {_kind(st.st_mode)}: twin reads campaign files only from regular files, never from "
                            "devices, pipes or sockets (save the text to a file first)")
    if st.st_size > MAX_BYTES:
        raise _refuse(name, too_large)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refuse(name, f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(name, f"is {_kind(st.st_mode)}: twin reads campaign files only from regular files")
        chunks, total = [], 0
        while total <= MAX_BYTES:
            chunk = os.read(fd, min(2**20, MAX_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _refuse(name, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if total > MAX_BYTES:
        raise _refuse(name, too_large)
    return b"".join(chunks)


def decode(raw: bytes, name: str) -> str:
    """``raw`` as UTF-8 text; ConfigError at the line and column of the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([ConfigProblem(name, line, col, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save "
                                                              "the campaign file as UTF-8")]) from None


def parse_yaml(text: str, filename: str) -> tuple[Any, Positions]:
    """Parse ``text``; returns the data and the positions of its keys and values (:func:`twin.config.reader
    .read_yaml`). Raises ConfigError for syntax, tags, refused scalars, duplicates and exceeded bounds."""
    data, positions = read_yaml(text, filename)
    if data is None:
        raise ConfigError([ConfigProblem(filename, 1, 1, "", "the file is empty; a campaign starts with "
                                                             "'schema_version: 1'")])
    return data, positions


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
                                        or (nxt is not end and not isinstance(nxt, int) and nxt in cur)):
            continue  # a tag, or a label followed by a key the data has
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
        allowed = sorted(schema.model_fields) if schema else []
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


def _problems(exc: ValidationError, root: type, data: Any, filename: str, idx: Positions) -> list[ConfigProblem]:
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


def _version_problem(data: dict, filename: str, idx: Positions) -> ConfigProblem | None:
    from twin.config.schema import SCHEMA_VERSION

    if "schema_version" not in data:
        return None
    version = data["schema_version"]
    if isinstance(version, int) and not isinstance(version, bool) and version == SCHEMA_VERSION:
        return None
    if isinstance(version, str) and version.strip() == str(SCHEMA_VERSION):
        msg = (f"schema_version is the number {SCHEMA_VERSION}, found the text {short(version)}: write "
               f"'schema_version: {SCHEMA_VERSION}' without quotes")
    elif isinstance(version, float) and version == SCHEMA_VERSION:
        msg = f"schema_version is the whole number {SCHEMA_VERSION}, found {found(version)}"
    elif isinstance(version, int) and not isinstance(version, bool):
        msg = f"schema_version {short(version)} is not supported; this twin reads schema_version {SCHEMA_VERSION}"
    else:
        msg = f"schema_version must be the number {SCHEMA_VERSION}; found {found(version)}"
    line, col = idx.at(("schema_version",), data)
    return ConfigProblem(filename, line, col, "schema_version", msg)


def validate_data(data: Any, filename: str, idx: Positions | None = None):
    """Validate parsed YAML ``data`` against the campaign schema, strictly (no coercion across types, no NaN or
    infinity); ConfigError with every problem if invalid (at most :data:`MAX_REPORTED`, then a count)."""
    from twin.config.schema import campaign_type, check_references

    idx = idx or Positions()
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(filename, 1, 1, "", "a campaign file is a mapping of sections "
                                                             "(schema_version, campaign, models, timeline, ...); "
                                                             f"found {found(data)}")])
    bad_version = _version_problem(data, filename, idx)
    if bad_version is not None:
        raise ConfigError([bad_version])
    root = campaign_type()
    try:
        try:
            cfg = root.model_validate(data, strict=True)
        except ValidationError as exc:
            raise ConfigError(_problems(exc, root, data, filename, idx)) from None
        refs = check_references(cfg)
    except (ConfigError, RecursionError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a validator's bug must still end in one line, not a traceback
        raise ConfigError([ConfigProblem(filename, None, None, "", f"internal error while validating "
                                         f"({type(exc).__name__}: {short(str(exc), 120)}); please report it with "
                                         "the campaign file")]) from None
    if refs:
        problems = []
        for p, m in refs[:MAX_REPORTED]:
            line, col = idx.at(p, data)
            problems.append(ConfigProblem(filename, line, col, dotted(p), clip(m)))
        raise ConfigError(problems)
    return cfg


def load_campaign(path: str | Path) -> LoadedCampaign:
    """Read, parse and validate a campaign file.

    Raises
    ------
    ConfigError
        With one :class:`ConfigProblem` per problem found (file, line, column, key path, message). No other
        exception leaves this function for any file content.
    """
    path = Path(path)
    name = str(path)
    raw = read_file(path)
    text = decode(raw, name)
    try:
        data, idx = parse_yaml(text, name)
        cfg = validate_data(data, name, idx)
    except RecursionError:
        raise _refuse(name, "the file is nested too deeply to validate") from None
    except MemoryError:
        raise _refuse(name, "the file needs more memory to validate than is available") from None
    loaded = LoadedCampaign(cfg, path.resolve(), text, hashlib.sha256(raw).hexdigest(), idx)
    _resolve_data_files(loaded)
    return loaded


def _resolve_data_files(loaded: LoadedCampaign) -> None:
    """Observation files (``type: file`` networks) are relative to the campaign file: made absolute here, so that
    every experiment and workflow worker reads the same file, and refused here when they are not regular files."""
    problems = []
    for i, net in enumerate(getattr(loaded.config.assimilation, "observations", None) or []):
        if getattr(net, "type", None) != "file":
            continue
        target = Path(net.file).expanduser()
        target = target if target.is_absolute() else (loaded.directory / target)
        if not target.is_file():
            problems.append(loaded.problem(("assimilation", "observations", i, "file"),
                                           f"observation file {target} does not exist (or is not a regular file); "
                                           "paths are relative to the campaign file"))
            continue
        net.file = str(target.resolve())
    if problems:
        raise ConfigError(problems)
