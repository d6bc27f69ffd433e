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

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from twin.config.messages import clip, found, short
from twin.config.positions import Positions, dotted
from twin.config.problems import MAX_REPORTED, validation_problems
from twin.config.reader import read_yaml
from twin.core.errors import ConfigError, ConfigProblem

#: the largest campaign file read (bytes)
MAX_BYTES = 4 * 2**20


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
            raise ConfigError(validation_problems(exc, root, data, filename, idx)) from None
        refs = check_references(cfg)
    except (ConfigError, RecursionError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a validator's bug must still end in one line, not a traceback
        said = f"{type(exc).__name__}: {short(str(exc), 120)}"
        called = _called_code(exc)
        if called is not None:  # a plugin's config class (its grid_size, metadata ...) raised: name that code
            raise ConfigError([ConfigProblem(filename, None, None, "", f"{called} raised {said} while the file was "
                                             "validated: the fault is in that code (a model's section class), not "
                                             "in twin")]) from None
        raise ConfigError([ConfigProblem(filename, None, None, "", f"internal error while validating ({said}); "
                                         "please report it with the campaign file")]) from None
    if refs:
        problems = []
        for p, m in refs[:MAX_REPORTED]:
            line, col = idx.at(p, data)
            problems.append(ConfigProblem(filename, line, col, dotted(p), clip(m)))
        raise ConfigError(problems)
    return cfg


def _called_code(exc: BaseException) -> str | None:
    """``module.function (file:line)`` of the outermost code the traceback of ``exc`` passes through that is neither
    twin's, nor the standard library's, nor a library twin validates with (a user's model section class that
    validation called), or ``None`` when there is none (twin's own error)."""
    import os
    import sys

    twin_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tb = exc.__traceback__
    while tb is not None:
        code, module = tb.tb_frame.f_code, str(tb.tb_frame.f_globals.get("__name__", "?"))
        where = os.path.abspath(code.co_filename)
        top = module.split(".")[0]
        if not (where.startswith(twin_dir + os.sep) or top in sys.stdlib_module_names or top in _VALIDATING_LIBRARIES):
            return f"{module}.{code.co_qualname} ({where}:{tb.tb_lineno})"
        tb = tb.tb_next
    return None


#: libraries validation runs through or calls (an error inside them, called by twin, is twin's to report)
_VALIDATING_LIBRARIES = frozenset({"pydantic", "pydantic_core", "numpy", "pint", "yaml", "typing_extensions",
                                   "petsc4py", "scipy"})


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
    from twin.core.kinds import reads_files

    problems = []
    for i, net in enumerate(getattr(loaded.config.assimilation, "observations", None) or []):
        if reads_files(net):
            net.file = _data_file(loaded, net.file, ("assimilation", "observations", i, "file"), problems)
    problems += _resolve_matrix_files(loaded)
    if problems:
        raise ConfigError(problems)


def _resolve_matrix_files(loaded: LoadedCampaign) -> list:
    """The observation files named inside ``experiments.matrix`` values (a value replacing ``assimilation`` or its
    ``observations``): made absolute against the campaign file like the others, or problems when missing (an
    experiment's own copy of the campaign lives in its directory, where a relative path would lead nowhere)."""
    from types import SimpleNamespace

    from twin.core.kinds import reads_files

    experiments = getattr(loaded.config, "experiments", None)
    problems = []

    def networks(value, where):
        if isinstance(value, dict) and isinstance(value.get("observations"), list):
            yield from ((net, where + ("observations", i)) for i, net in enumerate(value["observations"]))
        elif isinstance(value, list):
            yield from ((net, where + (i,)) for i, net in enumerate(value))

    for key, values in (getattr(experiments, "matrix", None) or {}).items():
        if key not in ("assimilation", "assimilation.observations"):
            continue
        for j, value in enumerate(values):
            for net, where in networks(value, ("experiments", "matrix", key, j)):
                if not (isinstance(net, dict) and isinstance(net.get("file"), str)
                        and reads_files(SimpleNamespace(type=net.get("type")))):
                    continue
                net["file"] = _data_file(loaded, net["file"], where + ("file",), problems)
    return problems


def _data_file(loaded: LoadedCampaign, name: str, key: tuple, problems: list) -> str:
    """``name`` made absolute against the campaign file's directory; unchanged, with a problem at ``key`` appended to
    ``problems``, when it is not a regular file."""
    target = Path(name).expanduser()
    target = target if target.is_absolute() else (loaded.directory / target)
    if not target.is_file():
        problems.append(loaded.problem(key, f"observation file {target} does not exist (or is not a regular file); "
                                            "paths are relative to the campaign file"))
        return name
    return str(target.resolve())
