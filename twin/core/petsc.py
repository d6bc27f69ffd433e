"""Initialising PETSc once, with command-line options, before any module imports ``petsc4py.PETSc``; the one
path of solver options.

The CLI calls :func:`init_petsc` with the options the user typed after the campaign file (``-tumour_ts_type bdf``)
before it imports any science module, so PETSc options work the PETSc way. Library code simply imports
``petsc4py.PETSc`` (which initialises PETSc without options when nothing did so before).

Values PETSc would refuse when a solver reads its options are refused first, as one line naming the component and
the option: a campaign file's ``solver:`` values (``ksp_rtol: abc``) when the file is validated
(:mod:`twin.config.solver_options`, which may not import PETSc), the command line's (``-heat_ksp_type nonsense``)
when a model puts its options under its prefix (:func:`check_options`, which :func:`set_options` and
:func:`set_default_options` run). :func:`option_kind` and :func:`number_problem` are the rules both use;
:func:`set_from_options` turns a PETSc error while a solver applies its options into the same kind of line. This
module imports ``petsc4py.PETSc`` only inside functions.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from twin.core.errors import ConfigError, TwinError

#: PETSc option names given on the command line (without the leading dash); these win over YAML options.
_COMMAND_LINE: set[str] = set()
#: option names PETSc read while it started from elsewhere (``PETSC_OPTIONS``, ``-options_file``, ``.petscrc``): these
#: win over YAML options and model defaults as the command line's do (PETSc reads them as part of its command line)
_FROM_OUTSIDE: set[str] = set()
#: the command line's PETSc words as given (names and values), for provenance (:func:`command_line_options`)
_COMMAND_LINE_WORDS: list[str] = []
#: Option names put into the database by :func:`set_options`, per prefix, oldest prefix first.
_INSERTED: "OrderedDict[str, set[str]]" = OrderedDict()
#: Of those, the ones that hold a model's default (:func:`set_default_options`), which a user's option replaces.
_DEFAULTED: set[str] = set()
#: The user's options (the YAML's ``solver:`` sections through :func:`set_options`) ever put into the database, with
#: their prefix, and the options a solver had read when :func:`clear_options` removed them (:func:`unread_options`).
_GIVEN: dict[str, str] = {}
_READ: set[str] = set()
#: every prefix options were put under, and those of the solvers set up through :func:`set_from_options`
_PREFIXES: set[str] = set()
_SET_UP: set[str] = set()
#: libpetsc's ``PetscOptionsUsed`` through ctypes (:func:`_was_read`), once looked up; ``False`` when not found
_USED_FN: Any = None
#: the error PETSc's start gave in this process, if it failed (:func:`init_petsc` raises it again)
_START_FAILED: list = []
#: PETSc 3.18 holds at most 512 options; beyond this many inserted ones, the oldest prefixes' options are removed.
_KEEP = 256


#: Python signal handlers the command line installed that PETSc's start would replace with its own (SIGHUP, SIGQUIT:
#: its crash banner and exit status 59 for a closed terminal), installed again once PETSc has started
_KEPT_HANDLERS: dict[int, Any] = {}


def _python_sigpipe() -> None:
    """Python's disposition of SIGPIPE again: ignored, so that a write to a closed pipe raises ``BrokenPipeError``;
    and the handlers of :func:`keep_signal_handlers`."""
    import signal

    try:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for signum, handler in _KEPT_HANDLERS.items():
            signal.signal(signum, handler)
    except (ValueError, AttributeError):  # not the main thread (an embedding), or no SIGPIPE (Windows)
        pass


def keep_signal_handlers(handlers: dict[int, Any]) -> None:
    """Install ``handlers`` (signal number -> Python handler) now and again once PETSc has started, whose start
    replaces the handlers of SIGHUP and SIGQUIT with its own (an ssh session that closed ended a run in PETSc's
    "recompile with debugging" banner, status 59: found by a probe). Call :func:`keep_broken_pipes_quiet` too."""
    import signal

    _KEPT_HANDLERS.update(handlers)
    for signum, handler in handlers.items():
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError):  # not the main thread (an embedding): the default stays
            _KEPT_HANDLERS.pop(signum, None)


class _PipesStayPythons:
    """The loader of ``petsc4py.PETSc`` with :func:`_python_sigpipe` after it ran (PETSc starts in it)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        try:
            return self.loader.create_module(spec)
        finally:
            _python_sigpipe()

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        finally:
            _python_sigpipe()


class _AfterPetscStarts:
    """A finder that hands ``petsc4py.PETSc`` its own loader wrapped in :class:`_PipesStayPythons`, once."""

    def find_spec(self, name, path=None, target=None):
        if name != "petsc4py.PETSc":
            return None
        sys.meta_path.remove(self)
        for finder in list(sys.meta_path):
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PipesStayPythons(spec.loader)
                return spec
        return None


def keep_broken_pipes_quiet() -> None:
    """Keep SIGPIPE ignored once PETSc has started, wherever ``petsc4py.PETSc`` is first imported.

    PETSc's start installs its signal handler for SIGPIPE, so a command whose output goes to a reader that stopped
    reading (``twin inspect FILE | head -3``) died in PETSc's error banner and ``MPI_ABORT`` with status 59. Python
    ignores SIGPIPE so that such a write raises ``BrokenPipeError``, which the command line ends quietly with status
    141, as a shell reports a process that SIGPIPE ended (:func:`twin.cli.main`). PETSc's handlers for every other
    signal (a segmentation fault's report) stay."""
    if "petsc4py.PETSc" in sys.modules:
        _python_sigpipe()
    elif not any(isinstance(f, _AfterPetscStarts) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPetscStarts())


class PetscStartError(ConfigError):
    """PETSc refused to start: an options file it reads at start-up (``-options_file``, ``PETSC_OPTIONS``, a
    ``.petscrc``) cannot be opened or parsed. Bad input: exit status 2."""


class PetscStartOutOfMemory(TwinError):
    """PETSc could not start for want of memory: the dynamic loader could not map one of its libraries under the
    process's virtual-memory limit (it read as a bad options file, exit status 2: found by a probe). Exit status 1,
    as every out-of-memory failure."""

    exit_status = 1


def init_petsc(options: list[str] | None = None) -> Any:
    """Initialise petsc4py with ``options`` (PETSc-style ``-key value`` tokens) and return the ``PETSc`` module.

    PETSc reads options files while it starts (``-options_file F``, those named in ``PETSC_OPTIONS``, ``.petscrc`` and
    ``petscrc`` in the working directory, ``~/.petscrc``); one it cannot open or parse stops it with its error block
    on stderr and a Python traceback. The start is made with stderr held in a temporary file: on failure the error
    is :class:`PetscStartError`, one line with PETSc's own message; otherwise what was written meanwhile (MPI's or
    PETSc's messages) goes to stderr as it was."""
    if _START_FAILED:  # PETSc cannot be started again in this process (a warm worker's next step)
        raise _START_FAILED[0]
    first = "petsc4py.PETSc" not in sys.modules
    if first:
        # the program's name first (``python -c`` and a spawned Parsl worker have "-c" there, which PETSc took for an
        # option of its own)
        program = sys.argv[0] if sys.argv and not sys.argv[0].startswith("-") else "twin"
        _start([program, *(options or [])])
        _COMMAND_LINE_WORDS[:] = [str(o) for o in options or []]
        _COMMAND_LINE.update(tok.lstrip("-") for tok in options or [] if tok.startswith("-") and len(tok) > 1
                             and not is_number(tok))
    from petsc4py import PETSc

    if first:
        _FROM_OUTSIDE.update(name for name in PETSc.Options().getAll() if name not in _COMMAND_LINE)
        _python_sigpipe()  # PETSc's start installed its signal handlers after the import's own hook had run
        from twin.core.crash import report_crashes

        report_crashes(anew=True)  # a crash in native code says where, in Python's frames, before PETSc's banner
    return PETSc


#: Open MPI settings for a process that starts MPI without a launcher (a *singleton*: ``twin run`` on a laptop, a
#: login node or in a batch script without ``srun``/``mpiexec``), set only while MPI starts and only where the user
#: has not set them; other MPI libraries ignore them. An isolated singleton starts no ``orted`` daemon, which needs
#: ``ssh`` or ``rsh`` from ``PATH`` (a module environment or batch script that resets ``PATH`` made MPI_Init end the
#: process with status 1 and nothing said, its error block swallowed with the held stderr below), and ``ob1`` does
#: not probe network layers a one-process job never uses. Measured on the 2-core test machine: PETSc's start 0.47 s
#: -> 0.20 s, the same as :data:`workflows.executors.LOCAL_MPI_ENV` gives warm workers. Taken out of the environment
#: once MPI has started, so that no process this one starts (an ``mpiexec``, a Slurm job) inherits them.
SINGLETON_MPI_ENV = {"OMPI_MCA_ess_singleton_isolated": "1", "OMPI_MCA_pml": "ob1"}


@contextmanager
def singleton_settings() -> Iterator[None]:
    """:data:`SINGLETON_MPI_ENV` in the environment while MPI starts in a process no MPI launcher started (none of
    the launchers' rank variables set, MPI not started yet); otherwise nothing."""
    import os

    from twin.core.launcher import under_launcher

    mpi = sys.modules.get("mpi4py.MPI")
    if under_launcher() or (mpi is not None and mpi.Is_initialized()):
        yield
        return
    added = {k: v for k, v in SINGLETON_MPI_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def leave_after_failed_start(status: int) -> None:
    """End the process now, with ``status`` and without ``MPI_Finalize``, when PETSc's start failed in a job of
    several ranks; otherwise return. PETSc reads an options file on rank 0 and broadcasts it: when rank 0 cannot
    parse it the other ranks wait in that broadcast for good, so rank 0's ``MPI_Finalize`` (mpi4py's, at exit, since
    :func:`start_mpi` started MPI) waited for them (the CI caught the hang). Leaving without it, as a process did when
    PETSc had started MPI itself and never finished, lets ``mpiexec`` end the job with this rank's status."""
    import os

    mpi = sys.modules.get("mpi4py.MPI")
    if not _START_FAILED or mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return
    if mpi.COMM_WORLD.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def start_mpi() -> None:
    """Start MPI through mpi4py (at the thread level PETSc asks for, ``MPI_THREAD_FUNNELED``), with
    :func:`singleton_settings` and stderr as it is, unless it has started. When MPI cannot start (a user's
    ``OMPI_MCA_pml`` or ``btl`` naming a layer that is not there, a singleton daemon without ``ssh``), Open MPI prints
    why and ends the process inside ``MPI_Init``: under PETSc's start, whose stderr :func:`_start` holds, those lines
    were lost with the process (status 1, nothing said; found by a probe). PETSc then finds MPI started and leaves
    its end to mpi4py (after PETSc's own end: ``atexit`` runs in reverse)."""
    if "mpi4py.MPI" in sys.modules:
        return
    import mpi4py

    mpi4py.rc.thread_level = "funneled"
    with singleton_settings():
        from mpi4py import MPI  # noqa: F401 - starts MPI


def _start(args: list[str]) -> None:
    import os
    import tempfile

    import petsc4py

    start_mpi()
    sys.stderr.flush()
    saved = os.dup(2)
    error = None
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            with singleton_settings():
                petsc4py.init(args)
                from petsc4py import PETSc  # noqa: F401 - starts PETSc when init did not
        except Exception as exc:  # noqa: BLE001 - petsc4py.PETSc.Error, from a class that could not be imported
            error = exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        text = held.read().decode(errors="replace")
    if error is None:
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()
        return
    sys.modules.pop("petsc4py.PETSc", None)
    reason = start_failure(text) or str(error)
    from twin.core.memory import library_out_of_memory

    said = library_out_of_memory(reason)
    if said:
        _START_FAILED.append(PetscStartOutOfMemory(f"PETSc could not start: {said}"))
        raise _START_FAILED[0] from None
    hint = ("fix or remove that options file (given by -options_file, named in PETSC_OPTIONS, or .petscrc / petscrc "
            "in the working directory or ~/.petscrc)" if "options file" in reason else
            "check PETSC_OPTIONS and the PETSc options on the command line")
    _START_FAILED.append(PetscStartError(f"PETSc could not start: {reason}; {hint}"))
    raise _START_FAILED[0] from None


def start_failure(text: str) -> str:
    """PETSc's own message in the error block it printed at start-up (``Unknown first token in options file
    .petscrc line 1: garbage``): the lines between its header and its pointer to the FAQ, without the error class."""
    lines = [ln.split("PETSC ERROR:", 1)[1].strip() for ln in text.splitlines() if "PETSC ERROR:" in ln]
    for i, line in enumerate(lines):
        if "Error Message" in line:
            body = []
            for rest in lines[i + 1:]:
                if rest.startswith("See https://") or rest.startswith("Petsc Release") or rest.startswith("#"):
                    break
                body.append(rest)
            message = [b for b in body if "options file" in b] or body[-1:]
            return " ".join(message)[:300]
    return ""


def options_files_in_play(words: list[str] | None = None) -> bool:
    """Whether PETSc will read an options file when it starts here (``-options_file`` in ``words``, ``PETSC_OPTIONS``
    or ``PETSC_OPTIONS_YAML`` set, a ``.petscrc`` or ``petscrc`` in the working directory, ``~/.petscrc``): the
    commands that start PETSc late start it first then (:func:`init_petsc`), so a broken file is one line."""
    import os
    from pathlib import Path

    if any(str(w).startswith("-options_file") for w in words or []):
        return True
    if os.environ.get("PETSC_OPTIONS") or os.environ.get("PETSC_OPTIONS_YAML"):
        return True
    return any(p.is_file() for p in (Path(".petscrc"), Path("petscrc"), Path.home() / ".petscrc"))


def command_line_options() -> list[str]:
    """The PETSc words of the command line this process initialised PETSc with (``["-l96_ts_rk_type", "3"]``)."""
    return list(_COMMAND_LINE_WORDS)


def is_number(token: str) -> bool:
    """Whether a command-line word is a number (``-0.1`` is a value, not an option)."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def set_options(prefix: str, options: Mapping[str, Any]) -> None:
    """Put ``options`` into the PETSc options database under ``prefix`` unless given on the command line.

    Command-line options win over YAML ones, as in PETSc itself, and so do those PETSc read while it started from
    ``PETSC_OPTIONS`` or an options file (``-options_file``, ``.petscrc``); an option set by an earlier YAML section
    (e.g. a component of the same name in an earlier experiment) is overwritten. Booleans become ``true``/``false``.

    The options are read when the component's solvers call ``setFromOptions``; the database is bounded (512 entries
    in PETSc 3.18), so options of prefixes that were set long ago (objects configured since) are removed once more
    than a few hundred are held, and :func:`clear_options` removes a prefix's options when its model is destroyed.
    """
    from petsc4py import PETSc

    opts = PETSc.Options()
    names = _INSERTED.setdefault(prefix, set())
    _INSERTED.move_to_end(prefix)
    _PREFIXES.add(prefix)
    for key, value in options.items():
        name = f"{prefix}{key.lstrip('-')}"
        if name in _COMMAND_LINE or name in _FROM_OUTSIDE:
            continue
        names.add(name)
        _DEFAULTED.discard(name)
        _GIVEN.setdefault(name, prefix)
        opts.setValue(name, _text(value))
    _bound(prefix)
    check_options(prefix)


def set_default_options(prefix: str, defaults: Mapping[str, Any]) -> None:
    """A model's defaults under ``prefix``: set only where neither the command line (or ``PETSC_OPTIONS``, an options
    file) nor the user's options (:func:`set_options`, from the YAML ``solver:`` section or a constructor's
    ``solver=``) gave the option.

    With :func:`set_options` this is the one path of solver options, in either order: command line (``PETSC_OPTIONS``,
    options files) > YAML > model default. Models call this for their defaults, never :func:`set_options` (which
    would overwrite the YAML).
    """
    from petsc4py import PETSc

    opts = PETSc.Options()
    names = _INSERTED.setdefault(prefix, set())
    _INSERTED.move_to_end(prefix)
    _PREFIXES.add(prefix)
    for key, value in defaults.items():
        name = f"{prefix}{key.lstrip('-')}"
        if name in _COMMAND_LINE or name in _FROM_OUTSIDE or (name in names and name not in _DEFAULTED):
            continue
        names.add(name)
        _DEFAULTED.add(name)
        opts.setValue(name, _text(value))
    _bound(prefix)
    check_options(prefix)


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
        if name not in _READ and _was_read(name):
            _READ.add(name)
        opts.delValue(name)
        _DEFAULTED.discard(name)


def _was_read(name: str) -> bool:
    """Whether a solver (any ``PetscOptionsGet...``) has read the option ``name`` (no dash) of the database.

    Through ``ctypes``: petsc4py 3.18 binds no ``PetscOptionsUsed``; the PETSc extension module's handle finds the
    symbol in the libpetsc it was linked with. ``True`` when it cannot be asked (no warning rather than a false one).
    """
    import ctypes

    from petsc4py import PETSc

    global _USED_FN
    if _USED_FN is None:
        try:
            fn = ctypes.CDLL(PETSc.__file__).PetscOptionsUsed
        except (OSError, AttributeError):
            _USED_FN = False
            return True
        fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        fn.restype = ctypes.c_int
        _USED_FN = fn
    if _USED_FN is False:
        return True
    used = ctypes.c_int(0)  # PetscBool, a C enum
    return bool(_USED_FN(None, name.encode(), ctypes.byref(used)) != 0 or used.value)


def unread_options() -> list[str]:
    """One line for each PETSc option the user gave (on the command line, in ``PETSC_OPTIONS`` or an options file, or
    in a component's ``solver:`` section) that no solver of this process read although the solvers it would configure were set up: misspelt
    (``-heat_ksp_rtoll``), for a solver the component does not use (``-heat_ksp_gmres_restart`` with CG), or under
    a prefix no component has (``-ksp_rtol``: every component's solvers read ``<component>_`` options) once
    any solver was set up. An option of a component that set up no solver here (a finished run resumed, a step of
    another kind) is not judged. PETSc itself says this only at exit with ``-options_left``, listing too the model
    defaults an explicit TS never reads. Options PETSc reads when it starts (``-log_view`` ...) count as read."""
    from petsc4py import PETSc

    read = _READ | {n for n in PETSc.Options().getAll() if _was_read(n)}
    out = []
    for name in sorted(_COMMAND_LINE | set(_GIVEN) | _FROM_OUTSIDE):
        if name in _STARTUP_OPTIONS or name in read:
            continue
        mine = [p for p in _SET_UP if p and name.startswith(p)]
        if mine:
            why = f"the solvers of component '{max(mine, key=len)[:-1]}' did not read it"
        elif any(p and name.startswith(p) for p in _PREFIXES) or not _SET_UP:
            continue  # its component set up no solver in this process: not judged
        else:
            prefixes = ", ".join(sorted(p for p in _SET_UP if p))
            why = f"no solver has its prefix (twin's read -<component>_ options: {prefixes or 'none here'})"
        close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.8)
        origin = ("on the command line" if name in _COMMAND_LINE else f"in models.{_GIVEN[name][:-1]}.solver"
                  if name in _GIVEN else _outside_origin(name))
        out.append(f"PETSc option -{name} {origin} changed nothing: {why}; "
                   + (f"did you mean -{close[0]}? " if close else "")
                   + "check its spelling and that the component uses the solver it configures")
    if len(out) > UNREAD_SHOWN:
        out = out[:UNREAD_SHOWN] + [f"... and {len(out) - UNREAD_SHOWN} more PETSc options that no solver read "
                                    "(-options_left lists every one at the end)"]
    return out


def _outside_origin(name: str) -> str:
    """Where an option PETSc read while it started came from: ``PETSC_OPTIONS`` when it names it, else a file."""
    import os

    if f"-{name}" in os.environ.get("PETSC_OPTIONS", "").split():
        return "in PETSC_OPTIONS"
    return "in an options file (-options_file, .petscrc or ~/.petscrc)"


#: lines of :func:`unread_options` about single options (the rest is counted in one more line)
UNREAD_SHOWN = 10
#: options whose answer PETSc gives when it ends (``PetscFinalize``): a process that never ends PETSc (a warm Parsl
#: worker) prints nothing for them (:func:`workflows.executors.launcher_for`)
AT_PETSC_END = frozenset({"log_view", "log_summary", "log_trace", "log_all", "options_left", "memory_view",
                          "malloc_dump", "malloc_view", "objects_dump"})
#: options PETSc reads at PetscInitialize/PetscFinalize, never marked read by a solver
_STARTUP_OPTIONS = AT_PETSC_END | {"malloc_debug", "info", "help", "version", "on_error_abort", "no_signal_handler",
                                   "fp_trap", "check_pointer_intensity", "options_view", "history",
                                   "start_in_debugger", "on_error_attach_debugger", "debugger_ranks",
                                   "stop_for_debugger", "skip_petscrc", "options_file", "options_monitor"}


def reason_name(cls: Any, code: int) -> str:
    """The symbolic name of a PETSc converged/diverged reason code (e.g. ``DIVERGED_NONLINEAR_SOLVE``)."""
    for name in dir(cls):
        if not name.startswith("_") and getattr(cls, name) == code and name.isupper():
            return name
    return str(code)


# -- option values PETSc would refuse ----------------------------------------------------------------------------------
#: endings of PETSc option names whose value names a PETSc type, with the petsc4py class that lists the built-in
#: names (``sub_pc_type`` and ``mg_levels_ksp_type`` end like ``pc_type`` and ``ksp_type``). Options whose values
#: petsc4py does not list (``snes_linesearch_type``, ``ts_adapt_type``, ...) are left to PETSc.
TYPE_OPTIONS: dict[str, str] = {
    "ksp_type": "KSP.Type",
    "pc_type": "PC.Type",
    "snes_type": "SNES.Type",
    "ts_type": "TS.Type",
    "tao_type": "TAO.Type",
    "ts_rk_type": "TS.RKType",
    "ts_arkimex_type": "TS.ARKIMEXType",
    "pc_gamg_type": "PC.GAMGType",
    "pc_factor_mat_solver_type": "Mat.SolverType",
    "pc_factor_mat_ordering_type": "Mat.OrderingType",
    "mat_type": "Mat.Type",
    "vec_type": "Vec.Type",
}
#: endings of option names whose value is a real number (``ksp_rtol``, ``ts_dt``, ``ts_adapt_dt_min``, ...)
REAL_OPTIONS = ("rtol", "atol", "divtol", "stol", "dt", "dt_min", "dt_max", "max_time")
#: endings of option names whose value is an integer (``ksp_max_it``, ``ksp_gmres_restart``, ...)
INT_OPTIONS = ("max_it", "max_funcs", "max_fail", "max_steps", "max_reject", "max_snes_failures", "restart",
               "levels")
#: words PETSc reads as a number in place of one (PETSc 3.18, ``PetscOptionsStringToReal``/``...ToInt``)
_INT_WORDS = frozenset({"DEFAULT", "PETSC_DEFAULT", "DECIDE", "PETSC_DECIDE"})
_REAL_WORDS = _INT_WORDS | {"INFINITY", "-INFINITY"}
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_REAL_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: the type classes whose names a throwaway object checks: (PETSc class, type to set first, method) for a subtype
_SUBTYPES = {"TS.RKType": ("TS", "rk", "setRKType"), "TS.ARKIMEXType": ("TS", "arkimex", "setARKIMEXType"),
             "PC.GAMGType": ("PC", "gamg", "setGAMGType")}
#: (option name, value) pairs :func:`check_options` accepted (an ensemble builds many models with the same options)
_ACCEPTED: set[tuple[str, Any]] = set()


def option_kind(key: str) -> str | None:
    """What the value of PETSc option ``key`` (without prefix and dash, e.g. ``sub_pc_type``) must be: the petsc4py
    class listing its types (``"PC.Type"``, :data:`TYPE_OPTIONS`), ``"real"``, ``"int"``, or ``None`` when twin does
    not check it. The longest matching ending decides."""
    key = key.lstrip("-")
    best: tuple[str, str] | None = None
    ends = [*TYPE_OPTIONS.items(), *((e, "real") for e in REAL_OPTIONS), *((e, "int") for e in INT_OPTIONS)]
    for end, kind in ends:
        if (key == end or key.endswith("_" + end)) and (best is None or len(end) > len(best[0])):
            best = (end, kind)
    return best[1] if best else None


def number_problem(kind: str, value: Any) -> str | None:
    """What is wrong with ``value`` (as in YAML, or the text of the options database) for an option of
    :func:`option_kind` ``"real"`` or ``"int"``, or ``None`` if PETSc reads it as one. PETSc's rules: an integer
    option takes no decimal point or exponent; ``DEFAULT``/``DECIDE`` stand for PETSc's choice. (Text that C's
    ``strtod`` reads but no tolerance means, ``nan``, ``inf``, ``0x10``, is refused.)"""
    integer = kind == "int"
    want = "a whole number (e.g. 100; PETSc reads no decimal point or exponent here)" if integer else \
        "a number (e.g. 1e-8)"
    if isinstance(value, bool) or value is None:
        return f"needs {want}, got {'no value' if value is None else _text(value)}"
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return f"needs {want}, got {value!r}" if integer or value != value or value in (float("inf"), -float("inf")) \
            else None
    text = str(value)
    if text in (_INT_WORDS if integer else _REAL_WORDS) or (_INT_TEXT if integer else _REAL_TEXT).fullmatch(text):
        return None
    shown = text if len(text) <= 40 else text[:30] + "..."
    return f"needs {want}, got {shown!r}"


def check_options(prefix: str) -> None:
    """Refuse the options under ``prefix`` that twin did not put there itself (the command line, ``PETSC_OPTIONS``,
    an options file) whose values PETSc would refuse when a solver reads them: a type PETSc does not have (asked of
    PETSc itself on a throwaway object, so a type a plugin library registered is known) and a number that is none
    (:func:`number_problem`, the rule the YAML is validated with). Reading the values does not mark the options used
    (``-options_left`` still reports the ones no solver reads). Linear solver packages and orderings
    (``pc_factor_mat_solver_type``) are left to PETSc, which reports them when the solver is set up.

    Options given through :func:`set_options` and :func:`set_default_options` are not checked here: a campaign
    file's were checked when it was validated (:mod:`twin.config.solver_options`), and ``twin check-model`` gives
    a model unknown types that way to see whether its solvers read them.

    Raises
    ------
    ConfigError
        One line: the component (``prefix`` without its ``_``), the option, PETSc's reason and what to change.
    """
    from petsc4py import PETSc

    ours = _INSERTED.get(prefix, ())
    for name, value in PETSc.Options().getAll().items():
        if not name.startswith(prefix) or name in ours or (name, value) in _ACCEPTED:
            continue
        kind = option_kind(name[len(prefix):])
        if kind is None:
            continue
        if kind in ("real", "int"):
            reason = number_problem(kind, value)
        else:
            reason = _type_problem(PETSc, kind, value)
        if reason is None:
            _ACCEPTED.add((name, value))
            continue
        raise ConfigError(_rejected(prefix, name, value, reason))


def _type_problem(PETSc: Any, kind: str, value: Any) -> str | None:
    cls, _, sub = kind.partition(".")
    if kind in ("Mat.SolverType", "Mat.OrderingType"):  # no object to ask without a matrix: PETSc says at setup
        return None
    if not value:
        return f"needs the name of a {cls} {'type' if sub == 'Type' else sub[:-4] + ' type'}"
    base, method = _SUBTYPES[kind][1:] if kind in _SUBTYPES else (None, "setType")
    obj = getattr(PETSc, cls)().create(PETSc.COMM_SELF)
    try:
        if base is not None:
            obj.setType(base)
        getattr(obj, method)(str(value))
    except PETSc.Error as exc:
        listed = getattr(getattr(PETSc, cls), sub)
        names = sorted({str(getattr(listed, a)) for a in dir(listed) if not a.startswith("_")})
        close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.7)
        return petsc_reason(exc) + (f" (did you mean {close[0]!r}?)" if close else "")
    finally:
        obj.destroy()
    return None


def _rejected(prefix: str, name: str, value: Any, reason: str) -> str:
    component = prefix[:-1] if prefix.endswith("_") else prefix
    shown = "" if value is None else f" {value}"
    if name in _COMMAND_LINE:
        origin, fix = "on the command line", f"change or drop -{name} on the command line"
    else:
        origin, fix = "in PETSc's options", f"change or drop -{name} where it is set (PETSC_OPTIONS, an options file)"
    return (f"component '{component}' (options prefix {prefix}): PETSc rejects -{name}{shown} {origin}: "
            f"{reason}; {fix}")


def petsc_reason(exc: BaseException) -> str:
    """PETSc's own words for the error ``exc`` (the last line of its message, ``Unable to find requested KSP type
    nonsense``), or its error code."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = re.sub(r"^\[\d+\]\s*", "", lines[-1]) if lines else ""
    code = getattr(exc, "ierr", None)
    if not text or text == f"error code {code}":
        return f"PETSc error code {code}"
    return text


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether the PETSc error ``exc`` is a failed allocation: code ``PETSC_ERR_MEM`` (55), or, as petsc4py 3.18
    reports one from deep in a set-up (its code then a line number), a traceback through PETSc's malloc."""
    text = str(exc)
    return getattr(exc, "ierr", None) == 55 or "PetscMallocA" in text or "Out of memory" in text


def set_from_options(obj: Any, component: str | None = None) -> None:
    """``obj.setFromOptions()`` for a PETSc solver (TS, SNES, KSP, PC, TAO), with a PETSc error while applying the
    options as one line naming the component (``component``, else the object's options prefix) and PETSc's reason.

    Raises
    ------
    ConfigError
        ``component 'heat' (options prefix heat_): PETSc rejected its solver options: Unable to find requested KSP
        type nonsense; check models.heat.solver or the -heat_ options on the command line``.
    """
    from petsc4py import PETSc

    _SET_UP.add(obj.getOptionsPrefix() or "")
    try:
        obj.setFromOptions()
    except PETSc.Error as exc:
        prefix = obj.getOptionsPrefix() or ""
        name = component or (prefix[:-1] if prefix.endswith("_") else prefix) or "(no prefix)"
        raise ConfigError(f"component '{name}' (options prefix {prefix or 'none'}): PETSc rejected its solver "
                          f"options: {petsc_reason(exc)}; check models.{name}.solver or the -{prefix} options on "
                          "the command line") from None
