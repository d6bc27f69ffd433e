"""Reading campaign YAML text into plain data with the position of every key and value, under bounds.

Why not ``yaml.safe_load``: it reads plain scalars by YAML 1.1, where ``on`` and ``yes`` are booleans, ``010`` is
the octal number 8 and ``12:00:00`` is the number 43200 (base 60), while ``1e3`` is text; it walks every alias path
(a 3 KB "billion laughs" file expands to 10^9 nodes) and recurses once per nesting level. This module builds the data
itself from libyaml's event stream (the pure-Python parser when libyaml is missing), in one pass, without recursion.

Scalars
    A plain (unquoted, untagged) scalar is read by the YAML 1.2 core schema: ``null``, ``~`` or nothing is null;
    ``true``/``false`` (also ``True``, ``TRUE``...) are booleans; ``42``, ``-3``, ``0x1F`` are integers; ``1.5``,
    ``1e-3``, ``.5``, ``.inf``, ``.nan`` are floats; anything else is text. Plain scalars that YAML 1.1 reads as
    something else (so that another tool, or an older twin, would see another value) are refused with both readings
    and what to write: the words ``yes no on off`` (1.1 booleans), a leading zero ``010`` (1.1 octal), ``0o17``,
    ``0b101``, digit groups ``1_000``, base-60 numbers such as ``12:00:00``. Quote a value to mean the text
    (``walltime: "12:00:00"``). Quoted and block scalars are always text.

Tags
    Only the tags of plain data: ``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!map``, ``!!seq`` and
    the non-specific ``!`` (text). Any other tag (``!!python/object``, ``!include``, ``!!binary``) is refused: nothing
    in a campaign file constructs objects.

Keys
    Keys are plain names, read as text whatever they look like (``1:`` is the key ``'1'``); a duplicate key is an
    error naming the line of the first. ``<<: *anchor`` merges a mapping (keys given explicitly win).

Bounds (the file is refused at the first excess, with the line where it happened, before anything is built on it)
    :data:`MAX_DEPTH` levels of nesting, :data:`MAX_NODES` values written in the file, :data:`MAX_ALIASES` uses of
    aliases, :data:`MAX_ALIAS_DEPTH` levels of aliases inside anchored nodes, :data:`MAX_EXPANDED` values after
    aliases are expanded (what validation walks). An alias used inside the node it names (``&a [*a]``) is refused.
    Together with the 4 MiB file limit of the loader these keep ``twin validate`` under 2 s and 200 MB on any file.

An alias is the anchored object itself (shared, not copied); positions inside it are those of the anchor's text, so
an error in a value reached through ``*networks`` points at the line where ``&networks`` wrote it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from twin.config.messages import key_text, short
from twin.config.positions import MAX_ALIAS_DEPTH, Positions, dotted
from twin.core.errors import ConfigError, ConfigProblem

#: deepest nesting of mappings and lists (a campaign file needs about 8)
MAX_DEPTH = 64
#: values (scalars, mappings, lists, aliases) written in one file; large data belongs in data files
MAX_NODES = 100_000
#: alias uses in one file
MAX_ALIASES = 1_000
#: values after expanding aliases (what validation walks)
MAX_EXPANDED = 200_000
#: problems reported from one file before reading stops
MAX_PROBLEMS = 50
#: the largest integer a campaign file may write (64-bit signed)
MAX_INT = 2**63 - 1

_Parser = getattr(yaml, "CBaseLoader", None) if getattr(yaml, "__with_libyaml__", False) else None
_Parser = _Parser or yaml.BaseLoader

_TAG = "tag:yaml.org,2002:"
_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE = frozenset(("true", "True", "TRUE"))
_FALSE = frozenset(("false", "False", "FALSE"))
_BOOL11 = {w: v for ws, v in ((("yes", "Yes", "YES", "on", "On", "ON"), "true"),
                              (("no", "No", "NO", "off", "Off", "OFF"), "false")) for w in ws}
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+([eE][-+]?[0-9]+)?")
_OCT12 = re.compile(r"[-+]?0o[0-7]+")
_BIN11 = re.compile(r"[-+]?0b[01_]+")
# YAML 1.1's base-60 forms: an integer starts with 1-9 (``01:00:00`` is text in both versions), a float has a dot
_SEXAGESIMAL = re.compile(r"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*")
_GROUPED = re.compile(r"[-+]?([0-9][0-9_]*)?\.?[0-9_]*([eE][-+]?[0-9]+)?")
#: characters YAML does not allow in a stream (C0 controls but tab, newline, CR; DEL; C1 but NEL; surrogates)
_BAD_CHAR = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _Abort(Exception):
    """Reading stops: a bound was exceeded or the problems are too many."""


class _Frame:
    __slots__ = ("obj", "path", "anchor", "start", "alias_depth", "key", "key_mark", "seen", "merges", "is_key")

    def __init__(self, obj, path, anchor, start, is_key):
        self.obj = obj
        self.path = path
        self.anchor = anchor
        self.start = start
        self.alias_depth = 0
        self.key = _NEED_KEY
        self.key_mark = None
        self.seen: dict[str, int] = {}
        self.merges: list[tuple[Any, tuple, tuple[int, int]]] = []
        self.is_key = is_key


_NEED_KEY = object()   # a mapping waits for its next key
_SKIP = object()       # the next value belongs to a refused key and is dropped
_MERGE = object()      # the next value is merged (``<<``)


class _Reader:
    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[ConfigProblem] = []
        self.pos = Positions(filename)
        self.anchors: dict[str, tuple[Any, tuple, int, int]] = {}   # name -> (object, path, size, alias depth)
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.expanded = 0
        self.aliases = 0

    # -- problems ------------------------------------------------------------------------------------------------
    def problem(self, mark, path: tuple, message: str) -> None:
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        self.problems.append(ConfigProblem(self.filename, line, col, dotted(path), message))
        if len(self.problems) >= MAX_PROBLEMS:
            self.problems.append(ConfigProblem(self.filename, line, col, "", f"more than {MAX_PROBLEMS} problems; "
                                               "reading stopped here (fix these first)"))
            raise _Abort

    def fatal(self, mark, path: tuple, message: str):
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        self.problems.append(ConfigProblem(self.filename, line, col, dotted(path), message))
        raise _Abort

    # -- counting ------------------------------------------------------------------------------------------------
    def count(self, mark, path: tuple, depth: int) -> None:
        self.nodes += 1
        self.expanded += 1
        if self.nodes > MAX_NODES:
            self.fatal(mark, path, f"the file holds more than {MAX_NODES} values; a campaign file is settings, not "
                                   "data: put large data (observations, fields) in a data file")
        if depth > MAX_DEPTH:
            self.fatal(mark, path, f"nesting deeper than {MAX_DEPTH} levels of mappings and lists; a campaign file "
                                   "needs fewer than 10")

    # -- scalars -------------------------------------------------------------------------------------------------
    def scalar(self, ev, path: tuple) -> Any:
        tag, value = ev.tag, ev.value
        if tag is None:
            return self.plain(value, ev.start_mark, path) if ev.implicit[0] else value
        if tag == "!" or tag == _TAG + "str":
            return value
        if tag == _TAG + "null" and value in _NULL:
            return None
        if tag == _TAG + "bool" and (value in _TRUE or value in _FALSE):
            return value in _TRUE
        if tag in (_TAG + "int", _TAG + "float"):
            v = self.plain(value, ev.start_mark, path)
            if isinstance(v, int) and not isinstance(v, bool):
                return float(v) if tag.endswith("float") else v
            if isinstance(v, float) and tag.endswith("float"):
                return v
            what = "an integer" if tag.endswith("int") else "a number"
            self.problem(ev.start_mark, path, f"{short(value)} is not {what} (tag {tag.replace(_TAG, '!!')})")
            return value
        if tag in (_TAG + "null", _TAG + "bool"):
            self.problem(ev.start_mark, path, f"{short(value)} is not {tag.replace(_TAG, '!!')}")
            return value
        self.tag_problem(ev, path)
        return value

    def tag_problem(self, ev, path: tuple) -> None:
        tag = ev.tag.replace(_TAG, "!!")
        self.problem(ev.start_mark, path, f"tag {short(tag, 40)}: tags that construct objects are not allowed in "
                                          "campaign files (twin reads YAML with the safe loader; write plain values)")

    def plain(self, v: str, mark, path: tuple) -> Any:
        """A plain scalar by the YAML 1.2 core schema; forms YAML 1.1 reads otherwise are problems."""
        if not v or v[0] not in "0123456789+-.":
            if v in _NULL:
                return None
            if v in _TRUE:
                return True
            if v in _FALSE:
                return False
            if v in _BOOL11:
                b = _BOOL11[v]
                self.problem(mark, path, f"{v} is the boolean {b} in YAML 1.1 but the text {v!r} in YAML 1.2: write "
                                         f"{b} for a boolean, or quote it ('{v}') for text")
            return v
        if len(v) > 40:
            # No number is this long; int() of thousands of digits is slow and refused by Python anyway.
            return v
        if _INT.fullmatch(v):
            n = int(v)
            if abs(n) > MAX_INT:
                self.problem(mark, path, f"the integer {short(v)} is too large (at most {MAX_INT})")
            return n
        if _FLOAT.fullmatch(v):
            if _LEADING_ZERO.fullmatch(v):
                digits = v.lstrip("+-")
                octal = (f"the octal number {int(digits.split('e')[0].split('E')[0], 8)}"
                         if set(digits) <= set("01234567") else "text")
                self.problem(mark, path, f"{v} has a leading zero: YAML 1.1 reads it as {octal}, YAML 1.2 as "
                                         f"{float(v) if 'e' in v.lower() else int(v)}: write the number without the "
                                         "leading zero, or quote it for text")
                return v
            return float(v)
        if _INF.fullmatch(v):
            return float("-inf") if v[0] == "-" else float("inf")
        if _NAN.fullmatch(v):
            return float("nan")
        if _HEX.fullmatch(v):
            return int(v, 16)
        if _OCT12.fullmatch(v):
            self.problem(mark, path, f"{v} is the octal number {int(v.replace('0o', ''), 8)} in YAML 1.2 but text in "
                                     "YAML 1.1: write the number in decimal, or quote it for text")
            return v
        if _BIN11.fullmatch(v):
            self.problem(mark, path, f"{v} is a binary number in YAML 1.1 but text in YAML 1.2: write the number in "
                                     "decimal, or quote it for text")
            return v
        if _SEXAGESIMAL.fullmatch(v):
            self.problem(mark, path, f"{v} is a number in base 60 in YAML 1.1 ({_base60(v)}) but text in YAML 1.2: "
                                     f"quote it (\"{v}\") for a time such as a walltime, or write the number")
            return v
        if "_" in v and _GROUPED.fullmatch(v) and any(c.isdigit() for c in v):
            self.problem(mark, path, f"{v}: digit groups with '_' are a number in YAML 1.1 and text in YAML 1.2: "
                                     f"write {v.replace('_', '')}, or quote it for text")
            return v
        return v

    # -- the event loop ------------------------------------------------------------------------------------------
    def read(self, loader) -> Any:
        stack: list[_Frame] = []
        root: list[Any] = []
        documents = 0
        get = loader.get_event
        while True:
            ev = get()
            cls = type(ev)
            if cls is ScalarEvent or cls is MappingStartEvent or cls is SequenceStartEvent or cls is AliasEvent:
                self.node(ev, cls, stack, root)
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                self.end(stack.pop(), stack, root, ev)
            elif cls is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    self.fatal(ev.start_mark, (), "a campaign file holds one YAML document; a second one starts here "
                                                  "(remove the '---' line or split the file)")
            elif cls is StreamEndEvent:
                break
        return root[0] if root else None

    def node(self, ev, cls, stack: list[_Frame], root: list) -> None:
        parent = stack[-1] if stack else None
        is_key = parent is not None and isinstance(parent.obj, dict) and parent.key is _NEED_KEY
        if parent is None:
            path = ()
        elif is_key or parent.key is _SKIP:
            path = parent.path
        elif parent.key is _MERGE:
            path = parent.path + ("<<",)
        elif isinstance(parent.obj, dict):
            path = parent.path + (parent.key,)
        else:
            path = parent.path + (len(parent.obj),)
        mark = ev.start_mark
        self.count(mark, path, len(stack) + 1)
        if is_key:
            self.key(ev, cls, parent, stack, path)
            return
        if cls is AliasEvent:
            self.alias(ev, parent, path, root)
            return
        anchor = ev.anchor
        if cls is ScalarEvent:
            value = self.scalar(ev, path)
            if anchor is not None:
                self.anchors[anchor] = (value, path, 1, 0)
            self.attach(parent, path, value, mark, root)
            return
        if ev.tag not in (None, "!", _TAG + ("map" if cls is MappingStartEvent else "seq")):
            self.tag_problem(ev, path)
        obj: Any = {} if cls is MappingStartEvent else []
        if anchor is not None:
            self.open_anchors.add(anchor)
        frame = _Frame(obj, path, anchor, self.expanded - 1, False)
        if parent is None or parent.key is not _SKIP:
            self.pos.value[path] = (mark.line + 1, mark.column + 1)
        stack.append(frame)

    def key(self, ev, cls, parent: _Frame, stack: list[_Frame], path: tuple) -> None:
        mark = ev.start_mark
        if cls is ScalarEvent:
            if ev.tag not in (None, "!", _TAG + "str"):
                self.tag_problem(ev, path)
            name = ev.value
            if name == "<<" and ev.tag is None and ev.implicit[0]:
                parent.key = _MERGE
                parent.key_mark = mark
                return
            if name in parent.seen:
                self.problem(mark, path + (name,), f"duplicate key '{key_text(name)}' (first given on line "
                                                   f"{parent.seen[name]})")
                parent.key = _SKIP
                return
            parent.seen[name] = mark.line + 1
            parent.key = name
            parent.key_mark = mark
            self.pos.key[path + (name,)] = (mark.line + 1, mark.column + 1)
            return
        self.problem(mark, path, "keys must be plain names, not lists, mappings or aliases")
        if cls is AliasEvent:
            parent.key = _SKIP
            return
        # a list or mapping as key: read it (to keep the event stream in step) and drop it with its value
        frame = _Frame({} if cls is MappingStartEvent else [], path, None, self.expanded - 1, True)
        stack.append(frame)

    def alias(self, ev, parent: _Frame | None, path: tuple, root: list) -> None:
        name = ev.anchor
        mark = ev.start_mark
        if name in self.open_anchors:
            self.fatal(mark, path, f"alias *{key_text(name)} is used inside the node it names (&{key_text(name)}): "
                                   "a structure that contains itself cannot be read")
        if name not in self.anchors:
            self.fatal(mark, path, f"alias *{key_text(name)} names no anchor defined above it (&{key_text(name)})")
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            self.fatal(mark, path, f"more than {MAX_ALIASES} aliases; write the values out or shorten the file")
        value, target, size, depth = self.anchors[name]
        self.expanded += size - 1
        if self.expanded > MAX_EXPANDED:
            self.fatal(mark, path, f"expanding the aliases gives more than {MAX_EXPANDED} values (alias "
                                   f"*{key_text(name)} repeats {size}); a campaign file is settings, not data")
        if depth + 1 > MAX_ALIAS_DEPTH:
            self.fatal(mark, path, f"aliases nested {depth + 1} deep (*{key_text(name)} repeats a node holding "
                                   f"aliases of aliases); at most {MAX_ALIAS_DEPTH} levels are allowed")
        if parent is not None:
            parent.alias_depth = max(parent.alias_depth, depth + 1)
        if parent is None or parent.key is not _SKIP:
            self.pos.value.setdefault(path, (mark.line + 1, mark.column + 1))
            if parent is None or parent.key is not _MERGE:
                self.pos.alias[path] = target
        self.attach(parent, path, value, mark, root, target)

    def attach(self, parent: _Frame | None, path: tuple, value: Any, mark, root: list,
               source: tuple | None = None) -> None:
        if parent is None:
            root.append(value)
            return
        if isinstance(parent.obj, list):
            parent.obj.append(value)
            if source is None and not isinstance(value, (dict, list)):
                self.pos.value[path] = (mark.line + 1, mark.column + 1)
            return
        key = parent.key
        parent.key = _NEED_KEY
        if key is _SKIP:
            return
        if key is _MERGE:
            parent.merges.append((value, source if source is not None else path, mark))
            return
        parent.obj[key] = value
        if source is None and not isinstance(value, (dict, list)):
            self.pos.value[path] = (mark.line + 1, mark.column + 1)

    def end(self, frame: _Frame, stack: list[_Frame], root: list, ev) -> None:
        parent = stack[-1] if stack else None
        if isinstance(frame.obj, dict):
            self.merge(frame)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.obj, frame.path, self.expanded - frame.start, frame.alias_depth)
        if parent is not None:
            parent.alias_depth = max(parent.alias_depth, frame.alias_depth)
        if frame.is_key:
            parent.key = _SKIP
            return
        mark = ev.start_mark
        self.attach(parent, frame.path, frame.obj, mark, root, None)

    def merge(self, frame: _Frame) -> None:
        for value, source, mark in frame.merges:
            sources = value if isinstance(value, list) else [value]
            for i, src in enumerate(sources):
                if not isinstance(src, dict):
                    self.problem(mark, frame.path + ("<<",), "'<<' merges mappings: give an alias of a mapping "
                                                             "(<<: *defaults) or a list of them")
                    continue
                src_path = source + (i,) if isinstance(value, list) else source
                for k, v in src.items():
                    if k not in frame.obj:
                        frame.obj[k] = v
                        self.pos.alias[frame.path + (k,)] = src_path + (k,)


def _base60(text: str) -> str:
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").replace("_", "").partition(".")
    value = 0
    for part in whole.split(":"):
        value = value * 60 + int(part)
    return f"{sign * value}{'.' + frac if frac else ''}"


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _character_problem(text: str, filename: str) -> ConfigProblem | None:
    m = _BAD_CHAR.search(text)
    if m is None:
        return None
    c = m.group()
    name = {"\x00": " (NUL: is this a binary file?)", "\x1b": " (ESC: terminal colour codes?)"}.get(c, "")
    line, col = _position(text, m.start())
    return ConfigProblem(filename, line, col, "", f"character U+{ord(c):04X}{name} is not allowed in a YAML file; "
                                                  "a campaign file is plain text")


def read_yaml(text: str, filename: str) -> tuple[Any, Positions]:
    """The data of the YAML ``text`` and the positions of its keys and values.

    Raises
    ------
    ConfigError
        For characters YAML does not allow, syntax errors, refused tags and scalars, duplicate keys and exceeded
        bounds, each with file, line and column (see the module docstring).
    """
    bad = _character_problem(text, filename)
    if bad is not None:
        raise ConfigError([bad])
    reader = _Reader(filename)
    loader = _Parser(text)
    try:
        data = reader.read(loader)
    except _Abort:
        raise ConfigError(reader.problems) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if mark is not None and "cannot start any token" in what and text[mark.index:mark.index + 1] == "\t":
            what += " (a tab: YAML indents with spaces only)"
        reader.problems.append(ConfigProblem(filename, mark.line + 1 if mark else None,
                                             mark.column + 1 if mark else None, "",
                                             f"YAML syntax error: {what[:200]}"))
        raise ConfigError(reader.problems) from None
    except yaml.reader.ReaderError as exc:
        index = exc.position if isinstance(exc.position, int) and exc.position <= len(text) else 0
        line, col = _position(text, index)
        reader.problems.append(ConfigProblem(filename, line, col, "",
                                             f"unreadable YAML: {short(str(exc.reason), 200)}"))
        raise ConfigError(reader.problems) from None
    except yaml.YAMLError as exc:
        reader.problems.append(ConfigProblem(filename, None, None, "", f"YAML error: {short(str(exc), 200)}"))
        raise ConfigError(reader.problems) from None
    finally:
        loader.dispose()
    if reader.problems:
        raise ConfigError(reader.problems)
    return data, reader.pos


def reads_back(text: str) -> bool:
    """Whether ``text`` written as a plain scalar is read back by :func:`read_yaml` as that same text."""
    reader = _Reader("")
    try:
        value = reader.plain(text, None, ())
    except _Abort:
        return False
    return not reader.problems and isinstance(value, str) and value == text


__all__ = ["read_yaml", "reads_back", "Positions", "dotted", "MAX_DEPTH", "MAX_NODES", "MAX_ALIASES", "MAX_ALIAS_DEPTH",
           "MAX_EXPANDED"]
