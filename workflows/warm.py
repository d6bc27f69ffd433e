"""The warm Parsl workers of a workflow run, seen from its driver (``resources.launcher: auto``, the
default, or ``worker``; issue 23).

Warm-up. Right after the first steps are submitted, one warm-up task per worker (:func:`twin.campaign.task.warm_up`)
makes the workers warm (PETSc, the imports of the steps, the first experiment's setup) while ``init`` runs. Without
it a worker paid for them in the middle of the campaign, where everything waits for it: on the 2-core test machine
the first forecast of the worker that had not run ``init`` started 1.2 s late and took 0.5 s, and the first analysis
of each worker took about 1 s more than the others (scipy.stats, imported by the guardrail check), measured in
``benchmarks/bench_workflow.py``.

Watch. A worker pool of Parsl's HighThroughputExecutor is a manager process with worker processes that all read one
``multiprocessing.Queue``; a worker holds the queue's lock while it waits for a task. Parsl reports a worker that dies
under its task (``WorkerLost``: the task is retried, or fails with that reason). A worker that dies while it waits
(killed, out of memory) can take the lock with it, after which no worker receives a task again; one that dies
between taking a task and starting it loses the task. Either way the run waited forever: ``experiments.task_timeout``
is enforced inside the worker, so a task that never starts never times out (seen with a real SIGKILL, tested in
tests/integration/test_warm_workers.py). So the driver watches the pool's processes (the children of the run's
manager in ``/proc``: Linux, and local resources, as this launcher is) every half second. Every warm task (and, in a run that also has MPI tasks of
more ranks, each of their shells) records its worker as busy or idle in the run's :class:`~twin.campaign.task.WorkerRegistry`: a process that dies busy is left to
Parsl; one that dies otherwise ends the run with a :class:`~twin.core.errors.WorkflowError` that says so. Every
finished step is in the files, so running the campaign again resumes it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from twin.campaign.task import WorkerRegistry, warm_up
from twin.core.errors import WorkflowError
from twin.core.log import get_logger
from workflows.executors import POOL_COMMAND_MODULE

log = get_logger("twin.workflows")


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a process from ``/proc/<pid>/stat``, or ``None`` when it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a dead worker its manager has not reaped yet)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (``/proc/<pid>/task/*/children``, else a scan of every process's parent)."""
    out: set[int] = set()
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            out.update(int(c) for c in Path(task.path, "children").read_text().split())
        return out
    except (OSError, ValueError):
        pass
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None and st[1] == pid:
            out.add(int(entry.name))
    return out


class WarmPool:
    """The warm workers of one workflow run on local resources: their registry (``<runinfo>/workers``, emptied at the
    start), the warm-up tasks, and the watch for a pool process that died outside a task.

    Parameters
    ----------
    runinfo : path-like
        Parsl's run directory of the campaign (``<run_dir>/runinfo``).
    workers : int
        Workers of the pool (``resources.workers``).
    logdir : str
        The pool managers' ``--logdir`` (``<runinfo>/<executor label>``), by which the watch finds them.
    """

    def __init__(self, runinfo, workers: int, logdir: str):
        import parsl

        self.registry = WorkerRegistry(Path(runinfo) / "workers")
        shutil.rmtree(self.registry.path, ignore_errors=True)
        self.registry.path.mkdir(parents=True, exist_ok=True)
        self.workers = int(workers)
        self.logdir = f"--logdir={logdir}"
        self.app = parsl.python_app(warm_up)
        self.futures: list = []
        self.managers: set[int] = set()
        self.watched: set[int] = set()
        self._looked = 0.0
        #: the watch reads /proc (Linux); elsewhere a worker that dies idle leaves the run waiting, as before
        self.watching = Path("/proc/self/stat").exists()

    def warm_up(self, exp_dirs: list[Path], petsc_options: list[str] | None = None) -> None:
        """Submit one warm-up task per worker for the experiments ``exp_dirs`` (PETSc initialised with the command
        line's ``petsc_options``, as the run's steps are)."""
        dirs = [str(d) for d in exp_dirs]
        opts = list(petsc_options or [])
        self.futures = [self.app(dirs, str(self.registry.path), opts) for _ in range(self.workers)]

    def _find_managers(self) -> None:
        """The pool managers of this run, by their command line (a look at every process: once a second at most)."""
        if time.monotonic() - self._looked < 1.0:
            return
        self._looked = time.monotonic()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                words = _cmdline(int(entry.name))
                if POOL_COMMAND_MODULE in words and self.logdir in words:
                    self.managers.add(int(entry.name))

    def check(self) -> None:
        """Raise :class:`WorkflowError` when a process of the pool died other than under a task of the campaign; a
        worker that died busy is Parsl's to report (its task is retried or fails as lost)."""
        if not self.watching:
            return
        if not self.managers:
            self._find_managers()
        current = set()
        for manager in self.managers:
            current |= {p for p in _children(manager) if _alive(p)}
        states = self.registry.states()
        for pid in sorted(self.watched - current):
            self.watched.discard(pid)
            if states.get(pid) == WorkerRegistry.BUSY:
                log.warning("Parsl worker process %d died under its task (killed?): Parsl retries the task or "
                            "reports it lost", pid)
                continue
            raise WorkflowError(
                f"process {pid} of Parsl's worker pool died while it was not running a task of the campaign (killed, "
                "or out of memory?): after that the pool may never hand out a task again (its task queue's lock can "
                "die with a worker), so the run stops here. Every finished step is in the run directory: run the "
                "campaign again to resume it (or use resources.launcher: mpiexec, a process per task)")
        self.watched |= current
