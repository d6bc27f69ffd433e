"""Entry point of one campaign task, run by the workflow under an MPI launcher::

    mpiexec -n R python -m twin.campaign.task forecast EXP_DIR --cycle K --member M
    mpiexec -n R python -m twin.campaign.task analyse  EXP_DIR --cycle K [--min-members 2]
    mpiexec -n R python -m twin.campaign.task online   RUN_DIR --campaign FILE [--experiment NAME]
    mpiexec -n R python -m twin.campaign.task experiment EXP_DIR [--retries 1 --on-member-failure drop ...]
    python -m twin.campaign.task init     EXP_DIR
    python -m twin.campaign.task finalize EXP_DIR
    python -m twin.campaign.task scan     EXP_DIR          # JSON: what is complete and verified (for resume)

PETSc options follow a ``--`` (``forecast EXP_DIR --cycle 1 --member 0 -- -l96_ts_type rk``): the ones typed after
the campaign file of ``twin run FILE --workflow``, which every task of the run gets, as every rank does online.

This is the only place where a workflow task meets MPI and PETSc: the Parsl process builds the command line and
never imports mpi4py or petsc4py. The task runs on ``MPI.COMM_WORLD`` of its own launch (the ranks the launcher gave
it). Exit status: 0 done (or already done), 3 the model failed (a SolverError or ModelError: the member diverged), 2
any other twin error, 1 an unexpected exception; the last line on stderr says why (the workflow records it).

A one-rank step can also run inside a warm Parsl worker (:func:`run_in_worker`, the workflow's default
``launcher: auto``, or ``worker``): the worker keeps PETSc, the imports and the experiment's
:class:`twin.campaign.experiment.Setup` between its tasks, so a member forecast costs milliseconds of orchestration instead of an interpreter start (about 1 s, measured in
``benchmarks/bench_workflow.py``). A failure there raises :class:`TaskFailed` with the exit status and line this
process would have given, and the worker drops what it kept, so the next task starts from the files as a new
process would. :func:`warm_up` makes a worker warm before its first step (imports, PETSc, the experiments' setups),
and every warm step records in the workflow's worker registry (:class:`WorkerRegistry`) whether its worker is busy
or idle, so the workflow driver can tell a worker killed under its task (Parsl reports it) from one killed while
idle (which Parsl's task queue may not survive: :mod:`workflows.warm`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

EXIT_MODEL_FAILED = 3
EXIT_TWIN_ERROR = 2
EXIT_UNEXPECTED = 1

#: Steps a warm worker runs (``scan`` and ``online`` are processes of their own).
WORKER_STEPS = ("init", "forecast", "analyse", "finalize", "experiment")
#: Modules :func:`warm_up` imports besides those of the experiments' setups: the steps, and what the first analysis
#: of a process imports on first use (the guardrail check, 0.15 s since it no longer imports scipy.stats, 1 s before
#: on the 2-core test machine, measured in ``benchmarks/bench_workflow.py``). A name missing here costs time, never a
#: result.
WARM_MODULES = ("twin.campaign.steps", "twin.campaign.finalize", "twin.campaign.guarded", "twin.decision.guardrails",
                "twin.decision.records", "twin.io.netcdf", "twin.io.checkpoint")
#: What :func:`warm_up` imports with ``for_finalize=True``: xarray, which only the finalize step's outputs import (0.3 s
#: with pandas; init, forecasts and analyses leave it out). The driver asks for it apart, after the steps' warm-up and
#: behind every task of the campaign (:mod:`workflows.warm`): in the steps' warm-up it held the first forecasts back
#: by 0.3 s on the 2-core test machine.
OUTPUT_MODULES = ("xarray",)


class TaskFailed(Exception):
    """A step run in a warm worker failed: ``exitcode`` is the status the task process would have exited with
    (:data:`EXIT_MODEL_FAILED`, :data:`EXIT_TWIN_ERROR`, :data:`EXIT_UNEXPECTED`) and ``reason`` the line it would
    have printed last on stderr. Picklable, so Parsl brings it back to the driver as it is."""

    def __init__(self, exitcode: int, reason: str):
        super().__init__(exitcode, reason)
        self.exitcode, self.reason = int(exitcode), str(reason)

    def __str__(self) -> str:
        return self.reason


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    """The task's command line (built once per process: a warm worker parses every step's words with it)."""
    p = argparse.ArgumentParser(prog="python -m twin.campaign.task", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("init", "forecast", "analyse", "finalize", "scan", "online", "experiment"))
    p.add_argument("exp_dir", type=Path, help="experiment directory (run directory for 'online')")
    p.add_argument("--campaign", type=Path, help="campaign file ('online')")
    p.add_argument("--experiment", help="run only this experiment ('online')")
    p.add_argument("--cycle", type=int, default=None)
    p.add_argument("--member", type=int, default=None)
    p.add_argument("--min-members", type=int, default=2)
    p.add_argument("--retries", type=int, default=1, help="'experiment': a failed member forecast's retries")
    p.add_argument("--on-member-failure", choices=("drop", "stop"), default="drop",
                   help="'experiment': what a member that keeps failing does to the experiment")
    p.add_argument("--rewrite", action="store_true",
                   help="'finalize': write the outputs again (a finished run's outputs were damaged)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def split_petsc(argv: list) -> tuple[list[str], list[str]]:
    """A task's own words and the PETSc options after its ``--`` (module docstring)."""
    words = [str(a) for a in argv]
    if "--" not in words:
        return words, []
    i = words.index("--")
    return words[:i], words[i + 1:]


def scan(exp_dir: Path) -> dict:
    """What is complete and verified in an experiment directory (serial): the latest good checkpoint, the verified
    member forecasts of the cycle that follows it, and whether the outputs exist."""
    from twin.campaign import layout
    from twin.campaign.checkpoints import is_valid_checkpoint
    from twin.campaign.finalize import outputs_complete
    from twin.io.checkpoint import latest_good_checkpoint, list_checkpoints

    good = latest_good_checkpoint(exp_dir / "checkpoint") if (exp_dir / "checkpoint").is_dir() else None
    cycle = -1
    if good is not None and is_valid_checkpoint(layout.observations_file(exp_dir), None):
        cycle = next(k for k, p in list_checkpoints(exp_dir / "checkpoint") if p == good)
    members = []
    if cycle >= 0:
        done, _ = layout.member_files(exp_dir, cycle)
        members = [m for m in done if is_valid_checkpoint(layout.forecast_file(exp_dir, cycle, m), None)]
    return {"checkpoint": cycle, "members_done": members, "outputs": outputs_complete(exp_dir)}


def _check(args) -> None:
    from twin.core.errors import TwinError

    need = {"forecast": ("cycle", "member"), "analyse": ("cycle",), "online": ("campaign",)}.get(args.step, ())
    missing = [f"--{n}" for n in need if getattr(args, n) is None]
    if missing:
        raise TwinError(f"task {args.step} needs {' and '.join(missing)}")


def _step(args, comm, s=None) -> None:
    """Run the step ``args`` names on ``comm`` (with the experiment's ``Setup`` ``s`` when the caller keeps one)."""
    from twin.campaign import finalize as fin
    from twin.campaign import steps

    if args.step == "online":
        from twin.campaign.online import run_online
        from twin.config.loader import load_campaign

        run_online(load_campaign(args.campaign), comm, args.exp_dir, only=args.experiment, verbose=args.verbose)
    elif args.step == "experiment":
        _experiment(args, comm)
    elif args.step == "init":
        steps.init_experiment(args.exp_dir, comm, s)
    elif args.step == "forecast":
        steps.forecast_member(args.exp_dir, args.cycle, args.member, comm, s)
    elif args.step == "analyse":
        from twin.core.errors import WorkflowError

        try:
            steps.analyse(args.exp_dir, args.cycle, comm, s, min_members=args.min_members)
        except WorkflowError as exc:  # too few members left: the policy stops the experiment, as online mode does
            if comm.Get_rank() == 0:
                from twin.campaign import layout

                layout.write_json(layout.stopped_marker(args.exp_dir), {"cycle": args.cycle, "reason": str(exc)})
            raise
    else:
        if args.rewrite:
            from twin.campaign.experiment import setup

            own = s is None
            s = s or setup(args.exp_dir, comm)
            try:
                steps.export_observations_again(s)
                fin.finalize(args.exp_dir, comm, s, fresh=True)
            finally:
                if own:
                    s.destroy()
        else:
            fin.finalize(args.exp_dir, comm, s)


def _experiment(args, comm) -> None:
    """The ``experiment`` step: the rest of the experiment (its cycles from its last checkpoint, then its outputs), as
    online mode runs it (:func:`twin.campaign.online.contained`: members forecast in memory, at once through the
    model's batched forecast where it has one; checkpoints every ``outputs.checkpoint_seconds``), with the failure
    policy of the command line. The experiment's own failures end as online mode's do, in its markers
    (``done.json``, ``failed.json``, ``stopped.json``), which the workflow reads after the task; the step itself fails
    only for what online mode would not contain (a file held by another process)."""
    from twin.campaign.online import contained
    from twin.config.experiments import ExperimentsConfig

    policy = ExperimentsConfig(retries=args.retries, on_member_failure=args.on_member_failure,
                               min_members=args.min_members)
    contained(args.exp_dir, comm, policy)


#: Experiments whose PETSc options this process has judged (:func:`_judge_options`).
_JUDGED: set[Path] = set()


def _judge_options(args) -> None:
    """After this process's first member forecast of an experiment, or its ``experiment`` step (its solvers set up):
    the PETSc options the user gave that no solver read (:func:`twin.core.petsc.unread_options`) go into the
    experiment's task log, from which the workflow driver warns once per run, as online mode does at its end; after
    an ``online`` step (a batch job's whole campaign), into its log."""
    from twin.campaign import layout
    from twin.core.petsc import unread_options

    if args.step == "online":  # a job of its own (twin submit --mode single/array): its log says it
        from twin.core.log import get_logger

        for line in unread_options():
            get_logger("twin.campaign.task").warning(line)
        return
    key = Path(args.exp_dir).resolve()
    if args.step not in ("forecast", "experiment") or key in _JUDGED:
        return
    _JUDGED.add(key)
    lines = unread_options()
    if lines:
        layout.log_task(args.exp_dir, {"task": "petsc-options", "outcome": "unread", "lines": lines})


def _failure(exc: BaseException) -> tuple[int, str]:
    """Exit status and stderr line of a step that raised ``exc`` (twin errors; running out of memory, said with the
    limit to raise and tried again as Parsl's retries say; anything else is unexpected)."""
    from twin.core.errors import ModelError, SolverError, TwinError
    from twin.core.memory import out_of_memory_carried

    if isinstance(exc, (SolverError, ModelError)):
        return EXIT_MODEL_FAILED, f"model failed: {exc}"
    said = out_of_memory_carried(exc)
    if said:
        return EXIT_UNEXPECTED, f"error: {said}"
    if isinstance(exc, TwinError):
        return EXIT_TWIN_ERROR, f"error: {exc}"
    return EXIT_UNEXPECTED, f"{type(exc).__name__}: {exc}"


def run(args, petsc_options: list[str] | None = None) -> int:
    from twin.core.errors import TwinError
    from twin.core.petsc import init_petsc

    try:
        init_petsc(petsc_options or [])
    except TwinError as exc:  # PETSc refused to start (an options file: no retry would help; out of memory: 1)
        print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", EXIT_TWIN_ERROR))
    from mpi4py import MPI

    from twin.core.log import setup_logging

    comm = MPI.COMM_WORLD
    setup_logging(comm.Get_rank(), comm.Get_size(), args.verbose)
    try:
        if args.step == "scan":
            if comm.Get_rank() == 0:
                print(json.dumps(scan(args.exp_dir)))
            return 0
        _check(args)
        _step(args, comm)
        if comm.Get_rank() == 0:
            _judge_options(args)
    except TwinError as exc:
        code, line = _failure(exc)
        print(line, file=sys.stderr, flush=True)
        return code
    except (MemoryError, ImportError, RuntimeError, SystemError) as exc:
        from twin.core.memory import out_of_memory

        if out_of_memory(exc) is None:  # not memory (an import that is missing): the traceback says it
            raise
        code, line = _failure(exc)  # out of memory: an allocation, a thread, a library the loader could not map
        print(line, file=sys.stderr, flush=True)
        return code
    return 0


class _WarmSetups:
    """The experiments' ``Setup`` objects a warm worker keeps between its tasks (on ``MPI.COMM_SELF``), as online
    mode keeps one per experiment between its members and cycles: the configuration is loaded and validated and the
    model built once per worker and experiment, not once per task. An entry is used only while its
    ``experiment.yaml`` is the file it was loaded from, is dropped (and its PETSc objects destroyed) after any
    failure of a task that used it, and at most ``size`` experiments are kept (the least recently used goes)."""

    def __init__(self, size: int = 4):
        self.size = size
        self.entries: dict[Path, tuple[tuple, object]] = {}

    @staticmethod
    def _stamp(exp_dir: Path) -> tuple:
        from twin.campaign import layout

        st = os.stat(layout.config_file(exp_dir))
        return st.st_mtime_ns, st.st_size, st.st_ino

    def get(self, exp_dir: Path, comm):
        from twin.campaign.experiment import setup

        exp_dir = Path(exp_dir).resolve()
        stamp = self._stamp(exp_dir)
        entry = self.entries.pop(exp_dir, None)
        if entry is not None and entry[0] != stamp:
            entry[1].destroy()
            entry = None
        if entry is None:
            entry = (stamp, setup(exp_dir, comm))
            entry[1].defer_records = True  # kept between tasks: diagnostics.nc appended every few seconds
        self.entries[exp_dir] = entry  # most recently used last
        while len(self.entries) > self.size:
            oldest = next(iter(self.entries))
            self.entries.pop(oldest)[1].destroy()
        return entry[1]

    def drop(self, exp_dir: Path) -> None:
        entry = self.entries.pop(Path(exp_dir).resolve(), None)
        if entry is not None:
            entry[1].destroy()


#: What this process keeps between warm tasks (only ever filled inside a Parsl worker: :func:`run_in_worker`).
_WARM = _WarmSetups()


class WorkerRegistry:
    """What the warm workers of a workflow run are doing, one file per worker process in the directory ``path``:
    ``<pid>`` holds ``busy`` while the worker runs a step of the campaign, ``warming`` while it runs a warm-up
    (:func:`warm_up`, which the end of a run may cut short: a warm-up for the outputs runs while nothing else waits)
    and ``idle`` otherwise, replaced atomically (a reader never sees half a word). The workflow driver reads it to
    tell how a worker it saw die died (:mod:`workflows.warm`: busy and warming alike were running a Parsl task); a
    worker without a file has run nothing of the campaign yet."""

    BUSY, WARMING, IDLE = "busy", "warming", "idle"
    #: the states of a worker that runs a Parsl task
    RUNNING = (BUSY, WARMING)

    def __init__(self, path):
        self.path = Path(path)

    def mark(self, state: str) -> None:
        """Record this process's state (:attr:`BUSY`, :attr:`WARMING` or :attr:`IDLE`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{os.getpid()}.new"
        tmp.write_text(state)
        os.replace(tmp, self.path / str(os.getpid()))

    def states(self) -> dict[int, str]:
        """``{pid: state}`` of every worker that has recorded one."""
        return {pid: state for pid, (state, _) in self.marks().items()}

    def marks(self) -> dict[int, tuple[str, float]]:
        """``{pid: (state, time)}`` of every worker that has recorded one, ``time`` the moment it recorded it (the
        file's modification time, seconds since the epoch)."""
        out = {}
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return out
        for entry in entries:
            if entry.name.isdigit():
                try:
                    out[int(entry.name)] = (Path(entry.path).read_text().strip(), entry.stat().st_mtime)
                except OSError:
                    continue
        return out

    def forget(self, pid: int) -> None:
        """Drop the record of worker ``pid`` (it died: Parsl starts another under another pid)."""
        try:
            (self.path / str(int(pid))).unlink()
        except OSError:
            pass


def warm_up(exp_dirs: list, registry: str | None = None, petsc_options: list | None = None,
            for_finalize: bool = False, parsl_resource_specification=None) -> int:
    """Make this Parsl worker warm before its first step: PETSc and MPI initialised, :data:`WARM_MODULES` imported
    (and :data:`OUTPUT_MODULES` with ``for_finalize``), the ``Setup`` and model of the experiments ``exp_dirs``
    built (at most as many as the worker keeps), recorded in ``registry`` (warming, then idle: :class:`WorkerRegistry`),
    PETSc with the run's ``petsc_options`` (the command line's; a step that comes first does the same). Nearly free
    in a worker that is warm already.

    Returns the worker's process id. A setup that fails is left for the step that needs it to report (the warm-up
    only saves time). ``parsl_resource_specification`` is Parsl's (the task's priority), unused here.
    """
    import importlib

    from twin.core.petsc import init_petsc

    reg = WorkerRegistry(registry) if registry is not None else None
    if reg is not None:
        reg.mark(WorkerRegistry.WARMING)
    try:
        init_petsc([str(o) for o in petsc_options or []])
        from mpi4py import MPI

        for name in WARM_MODULES + (OUTPUT_MODULES if for_finalize else ()):
            importlib.import_module(name)
        for d in list(exp_dirs)[:_WARM.size]:
            try:
                _WARM.get(d, MPI.COMM_SELF).get_model()
            except Exception:  # noqa: BLE001 - the step that needs this setup reports its failure with its own line
                _WARM.drop(d)
    finally:
        if reg is not None:
            reg.mark(WorkerRegistry.IDLE)
    return os.getpid()


def run_in_worker(argv: list, log_path: str | None = None, private: bool = False, walltime=None,
                  registry: str | None = None, parsl_resource_specification=None) -> float:
    """Run one campaign step in this (warm, one-rank) Parsl worker, as ``python -m twin.campaign.task ARGV`` would.

    Parameters
    ----------
    argv : list
        The task's arguments (``forecast EXP_DIR --cycle K --member M`` ...); only :data:`WORKER_STEPS`. PETSc
        options after ``--`` initialise PETSc when this is the worker's first call (every call of a run has the
        same).
    log_path : str, optional
        The task's log (what the process's stderr would hold): its log records and, on failure, the line that says
        why.
    private : bool
        A sensitive campaign's task: files are created under the owner-only umask ``077``.
    walltime : float, optional
        Consumed by Parsl's python app (its time limit); unused here.
    registry : str, optional
        The run's :class:`WorkerRegistry` directory: this worker is recorded busy for the step, idle after it.
    parsl_resource_specification : dict, optional
        Parsl's (the task's priority, :mod:`workflows.warm`); unused here.

    Returns
    -------
    float
        Seconds the step took in this worker.

    Raises
    ------
    TaskFailed
        When the step fails (status 3: the model's failure; 2: another twin error; 1: unexpected).
    """
    reg = WorkerRegistry(registry) if registry is not None else None
    if reg is not None:
        reg.mark(WorkerRegistry.BUSY)
    try:
        return _run_in_worker(argv, log_path, private)
    finally:
        if reg is not None:
            reg.mark(WorkerRegistry.IDLE)


def _run_in_worker(argv: list, log_path: str | None, private: bool) -> float:
    import logging
    import time

    t0 = time.perf_counter()
    words, petsc_options = split_petsc(argv)
    args = _parser().parse_args(words)
    if args.step not in WORKER_STEPS:
        raise TaskFailed(EXIT_TWIN_ERROR, f"error: step {args.step!r} does not run in a worker")
    from twin.core.crash import report_crashes
    from twin.core.errors import TwinError
    from twin.core.petsc import init_petsc

    try:
        init_petsc(petsc_options)
    except TwinError as exc:  # PETSc refused to start: the same line and status a task process gives
        raise TaskFailed(int(getattr(exc, "exit_status", EXIT_TWIN_ERROR)), f"error: {exc}") from None
    from mpi4py import MPI

    logger = logging.getLogger("twin")
    handler = None
    if log_path is not None:
        handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")  # this attempt's (a crash read from it)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        report_crashes(handler.stream)  # a crash in native code kills the worker: its report is the step's to read
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logger.propagate = False
    old_umask = os.umask(0o077) if private else None
    try:
        _check(args)
        if args.step == "experiment":  # builds its own setups, as online mode does: the worker's kept one goes
            _WARM.drop(args.exp_dir)
            s = None
        else:
            s = _WARM.get(args.exp_dir, MPI.COMM_SELF)
        _step(args, MPI.COMM_SELF, s)
        _judge_options(args)
        if args.step == "finalize":
            _WARM.drop(args.exp_dir)  # the experiment is finished: nothing of it is needed again
    except Exception as exc:  # every failure becomes the exit status a task process would give
        _WARM.drop(args.exp_dir)
        if type(exc).__name__ == "AppTimeout" and type(exc).__module__.startswith("parsl."):
            raise  # Parsl's time limit (experiments.task_timeout), raised into this step: the driver says it so
        code, line = _failure(exc)
        if code == EXIT_UNEXPECTED:
            logger.exception("task %s failed", " ".join(str(a) for a in argv))
        if handler is not None:
            handler.stream.write(line + "\n")
        raise TaskFailed(code, line) from None
    finally:
        if old_umask is not None:
            os.umask(old_umask)
        if handler is not None:
            report_crashes()
            logger.removeHandler(handler)
            handler.close()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from twin.core.arenas import few_malloc_arenas_under_a_memory_limit
    from twin.core.blas import one_blas_thread_under_a_memory_limit
    from twin.core.launcher import bind_to_launcher

    few_malloc_arenas_under_a_memory_limit()  # before threads start allocating
    said = one_blas_thread_under_a_memory_limit()  # before NumPy is imported
    if said:
        print(f"warning: {said}", file=sys.stderr)
    bind_to_launcher()
    words, petsc_options = split_petsc(sys.argv[1:] if argv is None else argv)
    status = run(_parser().parse_args(words), petsc_options)
    from twin.core.petsc import leave_after_failed_start

    leave_after_failed_start(status)  # PETSc did not start on every rank: MPI cannot be finished
    return status


if __name__ == "__main__":
    sys.exit(main())
