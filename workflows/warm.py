"""The warm Parsl workers of a workflow run, seen from its driver (``resources.launcher: auto``, the
default, or ``worker``; issue 23).

Warm-up. Right after the first steps are submitted, one warm-up task per worker (:func:`twin.campaign.task.warm_up`)
makes the workers warm (PETSc, the imports of the steps, the first experiment's setup) while ``init`` runs. Without
it a worker paid for them in the middle of the campaign, where everything waits for it: on the 2-core test machine
the first forecast of the worker that had not run ``init`` started 1.2 s late and took 0.5 s, and the first analysis
of each worker took about 1 s more than the others (scipy.stats, imported by the guardrail check), measured in
``benchmarks/bench_workflow.py``. What only ``finalize`` needs (xarray, 0.3 s) comes after, from warm-ups for the
outputs (:meth:`WarmPool.warm_outputs`) that Parsl runs behind every task of the campaign: every task of a pool
with warm workers has Parsl's priority :data:`STEP_PRIORITY` and these :data:`OUTPUTS_PRIORITY` (HighThroughput-
Executor: lower values first), so a worker takes one only when no step waits, while the others analyse. They are
asked one at a time until every worker seen has one (at most :data:`OUTPUT_WARM_UPS_PER_WORKER` per worker: one
may land on a worker that has one already). In the steps' warm-up, xarray held the first forecasts back by 0.3 s.

Watch. A worker pool of Parsl's HighThroughputExecutor is a manager process with worker processes that all read one
``multiprocessing.Queue``; the worker that waits for a task holds the queue's lock (the others wait for the lock).
Parsl reports a worker that dies under its task (``WorkerLost``: the task is retried, or fails with that reason) and
starts another in its place. A worker that dies holding the lock (killed, out of memory, while it waits for a task)
takes the lock with it, and no worker receives a task again; ``experiments.task_timeout`` is enforced inside the
worker, so a task that never starts never times out, and the run waited forever (seen with a real SIGKILL, tested
in tests/integration/test_warm_workers.py). A worker that dies waiting *for* the lock, or between two tasks, harms
nothing: Parsl's replacement and the other workers go on. From outside the two cannot be told apart when it
happens, only by what follows. So the driver watches the pool's processes (the children of the run's manager in
``/proc``: Linux, and local resources, as this launcher is) every half second. Every warm task (and, in a run that
also has MPI tasks of more ranks, each of their shells) records its worker as busy or idle in the run's
:class:`~twin.campaign.task.WorkerRegistry`: a process that dies busy is left to Parsl. One that dies otherwise is
a suspect, cleared as soon as any worker starts a task after it (the lock is free); when instead tasks wait for a
worker for :data:`STUCK_AFTER` seconds with none starting, the run ends with a
:class:`~twin.core.errors.WorkflowError` that says so. Every finished step is in the files, so running the campaign
again resumes it.
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

#: Parsl's priority of every task of a run with warm workers (HighThroughputExecutor: lower values first; a task
#: without one comes after every task with one) ...
STEP_PRIORITY = 0
#: ... and of a warm-up for the outputs, which waits behind them.
OUTPUTS_PRIORITY = 1
#: Warm-ups for the outputs asked for at most, per worker of the pool.
OUTPUT_WARM_UPS_PER_WORKER = 2

#: Seconds that tasks may wait for a worker, none starting, after a process of the pool died outside a task, before
#: the run is taken for stuck. Parsl replaces a dead worker within its heartbeat period (5 s on local resources) and
#: a new worker starts in 1-3 s on the loaded 2-core test machine: a pool whose only worker died idle is not stuck
#: while its replacement starts.
STUCK_AFTER = 12.0


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, parent pid, start time in clock ticks)`` of a process from ``/proc/<pid>/stat``, or ``None`` when
    it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a dead worker its manager has not reaped yet), and, with
    ``start``, is still the process that started then (not another that was given the same pid since)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X") and (start is None or st[2] == start)


def _descends(pid: int, ancestors: set[int], depth: int = 8) -> bool:
    """Whether one of ``ancestors`` is a parent of ``pid``, or its parent's parent ..., ``depth`` generations up."""
    for _ in range(depth):
        st = _stat(pid)
        if st is None or st[1] <= 1:
            return False
        pid = st[1]
        if pid in ancestors:
            return True
    return False


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
    blocks : callable, optional
        The process ids of the run's local blocks (each a pool's parent or grandparent), by which the watch finds a
        pool whose command line does not hold its ``--logdir``.
    """

    def __init__(self, runinfo, workers: int, logdir: str, blocks=None):
        import parsl

        self.registry = WorkerRegistry(Path(runinfo) / "workers")
        shutil.rmtree(self.registry.path, ignore_errors=True)
        self.registry.path.mkdir(parents=True, exist_ok=True)
        self.workers = int(workers)
        self.logdir = f"--logdir={logdir}"
        self.blocks = blocks or (lambda: [])
        self.app = parsl.python_app(warm_up)
        self.futures: list = []
        #: the warm-ups for the outputs asked for
        self.output_futures: list = []
        self._warm_args: tuple = ()
        self.managers: set[int] = set()
        #: ``{pid: start time}`` of the pool's processes seen alive
        self.watched: dict[int, int] = {}
        #: ``{pid: time.time()}`` of the processes seen dead outside a task, until a task starts after them
        self.suspects: dict[int, float] = {}
        self._waiting_since: float | None = None
        self._looked = 0.0
        #: the watch reads /proc (Linux); elsewhere a worker that dies idle leaves the run waiting, as before
        self.watching = Path("/proc/self/stat").exists()

    def warm_up(self, exp_dirs: list[Path], petsc_options: list[str] | None = None) -> None:
        """Submit one warm-up task per worker for the experiments ``exp_dirs`` (PETSc initialised with the command
        line's ``petsc_options``, as the run's steps are)."""
        dirs = [str(d) for d in exp_dirs]
        opts = list(petsc_options or [])
        self._warm_args = (dirs, str(self.registry.path), opts)
        self.futures = [self.app(*self._warm_args, parsl_resource_specification={"priority": STEP_PRIORITY})
                        for _ in range(self.workers)]

    def unfinished(self) -> list:
        """The warm-up tasks asked for that have not ended (the driver's loop wakes when one does)."""
        return [f for f in self.futures + self.output_futures if not f.done()]

    def warm_outputs(self, needed: bool = True) -> None:
        """Once the steps' warm-ups have ended, ask for a warm-up for the outputs (see the module docstring) when
        it is ``needed`` (a finalize step is still to come), none is waiting, a worker seen (by a warm-up or in the
        registry) has not had one, and fewer than :data:`OUTPUT_WARM_UPS_PER_WORKER` per worker were asked for;
        cheap, for every turn of the driver's loop."""
        if (not needed or not self._warm_args or len(self.output_futures) >= OUTPUT_WARM_UPS_PER_WORKER * self.workers
                or not all(f.done() for f in self.futures + self.output_futures)):
            return
        warmed = {f.result() for f in self.output_futures if f.exception() is None}  # pids
        seen = set(self.registry.states()) | {f.result() for f in self.futures if f.exception() is None}
        if seen - warmed:
            self.output_futures.append(self.app(*self._warm_args, for_finalize=True,
                                                parsl_resource_specification={"priority": OUTPUTS_PRIORITY}))

    def _find_managers(self) -> None:
        """The pool managers of this run, by their command line (its ``--logdir``, or, for a pool that read its
        arguments from standard input, a block of this run among its parents: :mod:`workflows.early_block`): a look
        at every process, once a second at most."""
        if time.monotonic() - self._looked < 1.0:
            return
        self._looked = time.monotonic()
        blocks = set(self.blocks())
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                words = _cmdline(int(entry.name))
                if POOL_COMMAND_MODULE in words and (self.logdir in words or _descends(int(entry.name), blocks)):
                    self.managers.add(int(entry.name))

    def check(self, waiting: int = 0) -> None:
        """Look at the pool's processes (see the module docstring): a worker that died under its task is Parsl's to
        report (its task is retried or fails as lost); one that died otherwise is a suspect until a task starts.

        Parameters
        ----------
        waiting : int
            Tasks of the campaign submitted and not finished: more of them than busy workers for
            :data:`STUCK_AFTER` seconds, with a suspect and no task started since, is a stuck pool.

        Raises
        ------
        WorkflowError
            When the pool is stuck.
        """
        if not self.watching:
            return
        if not self.managers:
            self._find_managers()
        current = set()
        for manager in self.managers:
            current |= {p for p in _children(manager) if _alive(p)}
        marks = self.registry.marks()
        now = time.time()
        for pid, start in sorted(self.watched.items()):
            if pid in current or _alive(pid, start):  # a child list read while a process starts can miss one
                continue
            del self.watched[pid]
            state = marks.pop(pid, (None, 0.0))[0]
            self.registry.forget(pid)
            if state in WorkerRegistry.RUNNING:
                log.warning("Parsl worker process %d died under its task (killed?): Parsl retries the task or "
                            "reports it lost", pid)
                continue
            log.warning("process %d of Parsl's worker pool died while not running a task of the campaign (killed, "
                        "or out of memory?): the run goes on while tasks still start", pid)
            self.suspects[pid] = now
        for pid in current - set(self.watched):
            if (st := _stat(pid)) is not None:
                self.watched[pid] = st[2]
        if not self.suspects:
            return
        if any(state in WorkerRegistry.RUNNING and at > min(self.suspects.values()) for state, at in marks.values()):
            log.info("a task started after process(es) %s of the worker pool died: the pool goes on",
                     ", ".join(map(str, sorted(self.suspects))))
            self.suspects.clear()
            self._waiting_since = None
            return
        busy = sum(state in WorkerRegistry.RUNNING for state, _ in marks.values())
        if waiting <= busy:
            self._waiting_since = None
            return
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= STUCK_AFTER:
            pids = ", ".join(map(str, sorted(self.suspects)))
            raise WorkflowError(
                f"process(es) {pids} of Parsl's worker pool died while not running a task of the campaign "
                f"(killed, or out of memory?), and no task has started since: {waiting - busy} task(s) waited "
                f"{now - self._waiting_since:.0f} s for a worker (the pool's task queue can die with a worker), so "
                "the run stops here. Every finished step is in the run directory: run the campaign again to resume "
                "it (or use resources.launcher: mpiexec, a process per task)")
