"""Checks of the PETSc options in a campaign file's ``solver:`` sections, made when the file is validated (``twin
validate``, and ``twin run`` before anything runs), so that ``ksp_type: nonsense`` or ``ksp_rtol: abc`` is refused
with its file and line instead of failing inside PETSc when the model is built.

Validation must not import ``petsc4py.PETSc``: importing it initialises PETSc (and MPI), and ``twin run`` loads the
campaign file *before* it initialises PETSc with the command line's options (:func:`twin.core.petsc.init_petsc`,
which would then be too late) and must not initialise MPI at all when it drives a Parsl workflow. The type names are
therefore the ones petsc4py lists, kept in :mod:`twin.config.petsc_types` (written by ``python -m
twin.config.solver_options``; a unit test fails when the installed petsc4py lists others). A type that a plugin
library registers at run time is not among them: it can be given on the command line, where PETSc itself judges it
(:func:`twin.core.petsc.check_options`).

Which options are checked, and the rules for numbers, are :func:`twin.core.petsc.option_kind` and
:func:`twin.core.petsc.number_problem`, the same as at run time.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from twin.config.petsc_types import TYPES
from twin.core.errors import ConfigProblem
from twin.core.petsc import TYPE_OPTIONS, is_number, number_problem, option_kind

#: longest list of known names quoted in a message (characters)
_LIST_CHARS = 200
#: most PETSc options on a command line: PETSc 3.18 holds 512 options in all (and fails to start beyond them), of
#: which twin keeps up to 256 for the YAML's ``solver:`` sections and the models' defaults (twin.core.petsc._KEEP)
MAX_COMMAND_LINE_OPTIONS = 200


def option_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the PETSc option ``key`` (without prefix), or ``None`` (also for options
    twin does not check)."""
    kind = option_kind(key)
    if kind is None:
        return None
    if kind in ("real", "int"):
        return number_problem(kind, value)
    names = TYPES[kind]
    what = _what(kind)
    if isinstance(value, bool) or value is None or isinstance(value, float) or str(value) == "":
        return f"needs the name of a {what}"
    text = str(value)
    if text in names:
        return None
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.7)
    listed = ", ".join(names)
    if len(listed) > _LIST_CHARS:
        listed = listed[:_LIST_CHARS].rsplit(", ", 1)[0] + f", ... ({len(names)} in all)"
    shown = text if len(text) <= 40 else text[:30] + "..."
    return (f"unknown {what} {shown!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            + f" (PETSc knows: {listed}; a type from a plugin library is not known here: give it on the command "
              "line instead)")


def command_line_problems(tokens: list[str]) -> list[ConfigProblem]:
    """What is wrong with the numbers among PETSc options typed on a command line (``-l96_ksp_rtol abc``), found
    without PETSc: the workflow driver's check before any task starts (online, :func:`twin.core.petsc.check_options`
    asks PETSc itself when a model sets its options). Type names are left to the tasks, where PETSc also knows the
    types a plugin library registers."""
    many = too_many_options(tokens)
    if many is not None:
        return [many]
    out = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        i += 1
        if not word.startswith("-") or len(word) < 2 or is_number(word):
            continue
        value = None
        if i < len(tokens) and (not tokens[i].startswith("-") or is_number(tokens[i])):
            value, i = tokens[i], i + 1
        kind = option_kind(word.lstrip("-"))
        reason = number_problem(kind, value) if kind in ("real", "int") else None
        if word in ("-options_file", "-options_file_yaml") and (value is None or not Path(value).is_file()):
            reason = "names no file that can be read" if value is None else f"names {value}, which is not a file"
        if reason is not None:
            out.append(ConfigProblem("", None, None, "", f"PETSc option {word}{'' if value is None else ' ' + value} "
                                                         f"on the command line {reason}; change or drop it"))
    return out


def too_many_options(tokens: list[str]) -> ConfigProblem | None:
    """The problem of a command line with more PETSc options than :data:`MAX_COMMAND_LINE_OPTIONS`, or ``None``."""
    names = [w for w in tokens if w.startswith("-") and len(w) > 1 and not is_number(w)]
    if len(names) <= MAX_COMMAND_LINE_OPTIONS:
        return None
    return ConfigProblem("", None, None, "", f"{len(names)} PETSc options on the command line, more than the "
                                             f"{MAX_COMMAND_LINE_OPTIONS} this PETSc can hold beside the campaign's "
                                             "own: put them in the solver: sections of the campaign file")


def _what(kind: str) -> str:
    cls, _, sub = kind.partition(".")
    return f"{cls} type" if sub == "Type" else f"{cls} {sub[:-4]} type"


def petsc4py_types() -> dict[str, tuple[str, ...]]:
    """The type names the installed petsc4py lists for each class of :data:`twin.core.petsc.TYPE_OPTIONS` (imports
    ``petsc4py.PETSc``: for the test and the generator only, never for validation)."""
    from petsc4py import PETSc

    out = {}
    for kind in sorted(set(TYPE_OPTIONS.values())):
        cls, _, sub = kind.partition(".")
        listed = getattr(getattr(PETSc, cls), sub)
        out[kind] = tuple(sorted({str(getattr(listed, a)) for a in dir(listed) if not a.startswith("_")}))
    return out


def petsc_types_source() -> str:
    """The text of :mod:`twin.config.petsc_types` for the installed petsc4py."""
    import petsc4py

    lines = ['"""PETSc type names as petsc4py lists them, for validating ``solver:`` options without importing PETSc',
             "(:mod:`twin.config.solver_options`). Written by ``python -m twin.config.solver_options``; do not edit.",
             '"""', "", f"PETSC4PY_VERSION = \"{petsc4py.__version__}\"", "", "TYPES: dict[str, tuple[str, ...]] = {"]
    for kind, names in petsc4py_types().items():
        lines.append(f"    \"{kind}\": (")
        row = "       "
        for n in names:
            item = f" \"{n}\","
            if len(row) + len(item) > 116:
                lines.append(row)
                row = "       "
            row += item
        lines.append(row)
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("petsc_types.py")
    target.write_text(petsc_types_source())
    print(f"wrote {target}")
