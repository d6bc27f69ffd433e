"""Initialising PETSc once, with command-line options, before any module imports ``petsc4py.PETSc``; the one
path of solver options.

The CLI calls :func:`init_petsc` with the options the user typed after the campaign file (``-tumour_ts_type bdf``)
before it imports any science module, so PETSc options work the PETSc way. Library code simply imports
``petsc4py.PETSc`` (which initialises PETSc without options when nothing did so before).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

#: PETSc option names given on the command line (without the leading dash); these win over YAML options.
_COMMAND_LINE: set[str] = set()
#: Option names put into the database by :func:`set_options`, per prefix, oldest prefix first.
_INSERTED: "OrderedDict[str, set[str]]" = OrderedDict()
#: Of those, the ones that hold a model's default (:func:`set_default_options`), which a user's option replaces.
_DEFAULTED: set[str] = set()
#: PETSc 3.18 holds at most 512 options; beyond this many inserted ones, the oldest prefixes' options are removed.
_KEEP = 256


def init_petsc(options: list[str] | None = None) -> Any:
    """Initialise petsc4py with ``options`` (PETSc-style ``-key value`` tokens) and return the ``PETSc`` module."""
    import petsc4py

    if "petsc4py.PETSc" not in sys.modules:
        petsc4py.init([sys.argv[0] if sys.argv else "twin", *(options or [])])
        _COMMAND_LINE.update(tok.lstrip("-") for tok in options or [] if tok.startswith("-") and len(tok) > 1
                             and not _is_number(tok))
    from petsc4py import PETSc

    return PETSc


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def set_options(prefix: str, options: Mapping[str, Any]) -> None:
    """Put ``options`` into the PETSc options database under ``prefix`` unless given on the command line.

    Command-line options win over YAML ones, as in PETSc itself; an option set by an earlier YAML section (e.g. a
    component of the same name in an earlier experiment) is overwritten. Booleans become ``true``/``false``.

    The options are read when the component's solvers call ``setFromOptions``; the database is bounded (512 entries
    in PETSc 3.18), so options of prefixes that were set long ago (objects configured since) are removed once more
    than a few hundred are held, and :func:`clear_options` removes a prefix's options when its model is destroyed.
    """
    from petsc4py import PETSc

    opts = PETSc.Options()
    names = _INSERTED.setdefault(prefix, set())
    _INSERTED.move_to_end(prefix)
    for key, value in options.items():
        name = f"{prefix}{key.lstrip('-')}"
        if name in _COMMAND_LINE:
            continue
        names.add(name)
        _DEFAULTED.discard(name)
        opts.setValue(name, _text(value))
    _bound(prefix)


def set_default_options(prefix: str, defaults: Mapping[str, Any]) -> None:
    """A model's defaults under ``prefix``: set only where neither the command line nor the user's options
    (:func:`set_options`, from the YAML ``solver:`` section or a constructor's ``solver=``) gave the option.

    With :func:`set_options` this is the one path of solver options, in either order: command line > YAML > model
    default. Models call this for their defaults, never :func:`set_options` (which would overwrite the YAML).
    """
    from petsc4py import PETSc

    opts = PETSc.Options()
    names = _INSERTED.setdefault(prefix, set())
    _INSERTED.move_to_end(prefix)
    for key, value in defaults.items():
        name = f"{prefix}{key.lstrip('-')}"
        if name in _COMMAND_LINE or (name in names and name not in _DEFAULTED):
            continue
        names.add(name)
        _DEFAULTED.add(name)
        opts.setValue(name, _text(value))
    _bound(prefix)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _bound(prefix: str) -> None:
    while sum(len(v) for v in _INSERTED.values()) > _KEEP and next(iter(_INSERTED)) != prefix:
        clear_options(next(iter(_INSERTED)))


@contextmanager
def trajectory_in_memory() -> Iterator[None]:
    """Within the block, TSAdjoint trajectories created and set up (``setSaveTrajectory`` then ``setFromOptions``)
    keep their checkpoints in memory instead of TS-data-* files in the working directory; a
    ``-ts_trajectory_type`` the user gave wins.

    PETSc 3.18's trajectory object reads only the unprefixed option (not ``-<prefix>ts_trajectory_type``), hence a
    scoped global option. File trajectories cost 5x a forward run for small models (the shallow-water gradient was 9
    forward runs with them, 2.8 in memory). A memory trajectory starts the adjoint from the TS's current solution
    instead of restoring the last step: a TS must keep its own solution vector until its adjoint has run
    (:mod:`twin.kinds.tumour.adjoint` says what went wrong when it did not).
    """
    from petsc4py import PETSc

    opts = PETSc.Options()
    if opts.hasName("ts_trajectory_type"):
        yield
        return
    opts.setValue("ts_trajectory_type", "memory")
    try:
        yield
    finally:
        opts.delValue("ts_trajectory_type")


def clear_options(prefix: str) -> None:
    """Remove the options :func:`set_options` put under ``prefix`` (command-line options stay)."""
    from petsc4py import PETSc

    opts = PETSc.Options()
    for name in _INSERTED.pop(prefix, ()):
        opts.delValue(name)
        _DEFAULTED.discard(name)


def reason_name(cls: Any, code: int) -> str:
    """The symbolic name of a PETSc converged/diverged reason code (e.g. ``DIVERGED_NONLINEAR_SOLVE``)."""
    for name in dir(cls):
        if not name.startswith("_") and getattr(cls, name) == code and name.isupper():
            return name
    return str(code)
