"""The campaign DAG on Parsl: experiments x cycles x members, with retries, a failure policy, resume and progress.

For every experiment (:func:`twin.campaign.experiments.expand`)::

    init -> forecast(k=0, m=0..N-1) -> analyse(0) -> forecast(1, ...) -> ... -> analyse(K-1) -> finalize

Each box is a Parsl bash app running ``python -m twin.campaign.task STEP EXP_DIR ...`` under an MPI launcher
(:mod:`workflows.executors`): member forecasts on ``ranks_per_member`` ranks, the other steps on ``resources.ranks``
(with Slurm's ``launcher: parsl-mpi`` each task asks Parsl's MPI mode for whole nodes, and starts under the srun
prefix Parsl composed for them).
With ``launcher: auto`` (the default of local resources) or ``worker`` a one-rank box is instead a python app,
:func:`twin.campaign.task.run_in_worker`, that runs the step inside a warm Parsl worker: the worker keeps PETSc, the
imports and the experiment's ``Setup`` between its tasks, so a member costs milliseconds of orchestration instead of an
interpreter start (about 1 s; issue 23, ``benchmarks/bench_workflow.py``). The warm workers are isolated enough for
this: each is a process of its own (spawned, one MPI rank, no collective with any other task); a PETSc error is a Python
exception there, after which the worker drops what it kept and the next task starts from the files as a new process
would; what a worker keeps between tasks is what online mode keeps between members, and the two modes give the same bits
(tests). A worker that dies under its task (a signal, the OOM killer, a crash) is reported by Parsl as lost (the task is
retried, or the experiment stops with that reason); one that dies while idle ends the run with an error that says so
(:mod:`workflows.warm`, which also warms every worker up while the first steps run). What it gives up: Parsl's time
limit stops Python code, not a long C call. So ``launcher: auto`` runs every task as a process of its own under
``mpiexec`` when the campaign sets ``experiments.task_timeout`` (a campaign whose members may hang inside PETSc sets
one), and ``launcher: mpiexec`` always does; :func:`workflows.executors.launcher_for` decides, and the run's log says
which launcher it uses and why.
What a task runs is ``resources.task`` (:mod:`workflows.granularity`): the boxes above (``member``), or one box per
experiment (``experiment``: ``python -m twin.campaign.task experiment EXP_DIR``, its cycles from its last checkpoint
and its outputs as online mode runs them, :func:`twin.campaign.online.contained`, on ``resources.ranks``), or, by
default (``auto``), the boxes up to an experiment's first analysis and then the rest of it as one box when its members
were cheaper one after the other than as tasks of their own. An experiment's box ends as online mode's experiments
do, in its markers (``done.json``, ``failed.json``, ``stopped.json``), which the driver reads and reports.
State passes between tasks only through the experiment's files (HDF5 checkpoints and forecast files), so this
process never imports mpi4py, petsc4py or h5py, and experiments advance independently (one experiment's analysis
does not wait for another's forecasts).

Resume: before anything runs, ``task scan`` verifies each experiment's files (latest good checkpoint, verified member
forecasts of the next cycle), in processes of their own that run while Parsl starts; an experiment without a
checkpoint has nothing to verify and starts at ``init`` without one. The DAG starts from there, so finished work is
never submitted again, and every step is idempotent as well (a step whose output verifies does nothing). Random
streams depend only on the seeds and the cycle/member indices, so a resumed campaign's outputs equal an
uninterrupted run's.

Failures: Parsl retries a failed task ``experiments.retries`` times, except for twin's configuration and workflow
errors (exit status 2), which would fail again. A member forecast that still fails is named in the log and, by
``experiments.on_member_failure``, dropped (a ``.failed`` marker; the analysis leaves it out) or the experiment is
stopped (``stopped.json``, skipped by a rerun until it is removed) while the others go on. A step that fails
otherwise (an error of the model or of twin in ``init``, an analysis or ``finalize``; a task killed, timed out or
lost with its worker) fails its experiment (``failed.json``, as online mode's): a rerun tries it again from its
files. An analysis left with fewer than ``min_members`` stops its experiment, as online mode does. Nothing waits on a
task that cannot come: every future is resolved by success, failure or ``task_timeout``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from twin.campaign import layout
from twin.campaign.experiments import experiments_section, prepare_experiments
from twin.campaign.heartbeat import process_record, stop_left_behind, sweep_on_resume, write_heartbeat
from twin.campaign.status import damaged_outputs, mark_done, promised_outputs, set_aside_outputs, status
from twin.campaign.task import TaskFailed, run_in_worker
from twin.core.crash import crash_line
from twin.core.errors import ConfigError, WorkflowError
from twin.core.log import get_logger, setup_logging
from twin.core.progress import Progress
from workflows.executors import (
    LOCAL_LABEL,
    Launcher,
    build_config,
    check_address_space,
    launcher_for,
    load_parsl,
    scrubbed_environ,
    started_processes,
    waiting_blocks,
)
from workflows.early_block import EarlyBlock
from workflows.early_interchange import EarlyInterchange
from workflows.granularity import whole_experiment
from workflows.lean import import_parsl_api
from workflows.warm import STEP_PRIORITY, WarmPool

log = get_logger("twin.workflows")

#: Exit status of ``twin.campaign.task`` for twin errors that a retry cannot fix (bad configuration, missing input).
EXIT_NO_RETRY = 2
#: Seconds without a finished task before the driver asks Slurm about blocks that do not run and logs what it says
#: (:func:`workflows.executors.waiting_blocks`), and between two such notes while it goes on
WAIT_NOTE_AFTER, WAIT_NOTE_EVERY = 20.0, 60.0


@dataclass
class WorkflowResult:
    """What a workflow run did: per-experiment final states, task counts and wall time."""

    run_dir: Path
    states: dict[str, str]
    tasks_run: int
    tasks_failed: int
    seconds: float
    dropped: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s == "done" for s in self.states.values())


@dataclass
class _Experiment:
    """The driver's view of one experiment: where it is in its DAG."""

    name: str
    dir: Path
    n_cycles: int
    n_members: int
    ranks_per_member: int
    cycle: int = 0
    stage: str = "init"  # init -> forecast -> analyse -> finalize -> done | failed; or experiment -> done | failed
    #: finalize writes the outputs again (a finished run's outputs were damaged)
    rewrite: bool = False
    alive: set = field(default_factory=set)
    pending: dict = field(default_factory=dict)  # future -> (step, member)
    failures: dict = field(default_factory=dict)  # member -> reason, this cycle: the model failed
    infrastructure: dict = field(default_factory=dict)  # member -> reason, this cycle: killed, lost, no disk ...
    skip_members: set = field(default_factory=set)
    #: resources.task auto: whether this run has measured its members and chosen (workflows.granularity)
    chosen: bool = False


def _sizes(exp_dir: Path) -> tuple[int, int, int]:
    """Cycles, members and ranks per member from ``experiment.yaml``, read through the campaign schema."""
    from twin.campaign import context as ctx
    from twin.config.loader import load_campaign

    cfg = load_campaign(layout.config_file(exp_dir)).config
    return int(cfg.assimilation.schedule.cycles), ctx.ensemble_size(cfg), ctx.ranks_per_member(cfg)


#: What ``task scan`` says of an experiment without a checkpoint (nothing to verify: it starts at ``init``).
FRESH_SCAN = {"checkpoint": -1, "members_done": [], "outputs": False}


class _Scans:
    """``task scan`` of every experiment that has a checkpoint, in parallel subprocesses (serial HDF5) started at
    construction; :meth:`results` waits for them. Experiments without a checkpoint get :data:`FRESH_SCAN`."""

    def __init__(self, dirs: list[Path], python: str = sys.executable):
        env = scrubbed_environ()
        self.fresh = [d for d in dirs if not layout.checkpoint_cycles(d)]
        self.procs = {d: subprocess.Popen([python, "-P", "-m", "twin.campaign.task", "scan", str(d)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                      for d in dirs if d not in self.fresh}

    def results(self) -> dict[Path, dict]:
        out = {d: dict(FRESH_SCAN) for d in self.fresh}
        for d, p in self.procs.items():
            stdout, stderr = p.communicate()
            if p.returncode != 0:
                self.kill()
                raise WorkflowError(f"cannot scan experiment {d}: {stderr.strip().splitlines()[-1:] or p.returncode}")
            out[d] = json.loads(stdout.strip().splitlines()[-1])
        return out

    def kill(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()


def scan_experiments(dirs: list[Path], python: str = sys.executable) -> dict[Path, dict]:
    """What is complete in every experiment: ``task scan`` of those with a checkpoint (parallel subprocesses)."""
    return _Scans(dirs, python).results()


#: Open MPI: "mpiexec noticed that process rank 0 with PID 123 on node n1 exited on signal 9 (Killed)."
_OMPI_SIGNAL = re.compile(r"process rank (?P<rank>\d+) with PID \d+ on node \S+ exited on signal "
                          r"(?P<signal>\d+(?: \([^)]*\))?)")
#: Open MPI, a rank that ended with a non-zero status: "Process name: [[8242,1],0]" then "Exit code: 137"
_OMPI_EXIT = re.compile(r"Process name:\s+\[\[\d+,\d+\],(?P<rank>\d+)\]\s+Exit code:\s+(?P<code>\d+)")
#: Slurm: "srun: error: n1: task 0: Killed" (also "Segmentation fault", "Out Of Memory")
_SRUN_SIGNAL = re.compile(r"srun: error: \S+: tasks? (?P<rank>[\d,-]+): (?P<signal>Killed|Segmentation fault|"
                          r"Out Of Memory|Aborted|Terminated)")


def signal_words(status: int) -> str:
    """``killed by signal 9 (Killed)`` for the exit status 137 (128 + the signal's number) a shell or launcher gives
    when a process it ran died of a signal."""
    import signal

    number = int(status) - 128
    try:
        name = signal.strsignal(number)
    except ValueError:
        name = None
    return f"killed by signal {number}" + (f" ({name})" if name else "")


def _crash(path: Path) -> str | None:
    """The crash in native code that a warm step's log reports (:func:`twin.core.crash.crash_line`; the log holds
    the last attempt only), or ``None``."""
    try:
        return crash_line(path.read_text(errors="replace"))
    except OSError:
        return None


def _exception_line(lines: list[str]) -> str | None:
    """The last line of the last Python traceback in ``lines`` (``RuntimeError: boom``): the line before the banner of
    dashes a launcher prints after it (Open MPI), or the last line; ``None`` without a traceback."""
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    after = lines[starts[-1] + 1:]
    end = next((i for i, ln in enumerate(after) if set(ln) <= set("-=*_ ")), len(after))
    return after[end - 1] if end else None


def _last_line(path: Path) -> str:
    """The line of a failed task's stderr that says why: twin's own ``model failed:`` / ``error:`` line, else where
    a crash in native code happened (Python's fault report, which PETSc's banner and abort follow), else the last line
    of a Python traceback (before the launcher's banner, which said only "exited with status 1"), else a launcher's
    line about a rank's signal or status, else the headline of its banner (Open MPI frames its messages in lines of
    dashes, whose last line says nothing), else the last line."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    # Parsl writes the command between these markers at the top of the bash app's stderr
    if "--> end executable <--" in lines:
        lines = lines[len(lines) - lines[::-1].index("--> end executable <--"):]
    for ln in reversed(lines):
        if ln.startswith(("model failed:", "error:")):
            return ln
    crash = crash_line("\n".join(lines))  # of this attempt: the text after Parsl's markers
    if crash:
        return f"the process crashed: {crash}"
    raised = _exception_line(lines)
    if raised:  # an exception in the model's (or twin's) code: what it said, not the launcher's "exited with status 1"
        return raised
    for ln in lines:  # a launcher saying a rank died of a signal (the node's name left out: sensitive runs)
        if m := _OMPI_SIGNAL.search(ln):
            return f"rank {m.group('rank')} killed by signal {m.group('signal')}"
        if m := _SRUN_SIGNAL.search(ln):
            return f"task {m.group('rank')}: {m.group('signal')} (srun)"
    if m := _OMPI_EXIT.search(" ".join(lines)):  # a status, not a signal: the status a signal's death gives, said so
        rank, status = m.group("rank"), int(m.group("code"))
        return f"rank {rank} exited with status {status}" + (f", as one {signal_words(status)}" if status > 128
                                                               else "")
    text = [ln for ln in lines if not set(ln) <= set("-=*_ ")]
    if len(text) < len(lines) and text:
        return text[0]
    return lines[-1] if lines else ""


def model_failure(exc: BaseException) -> bool:
    """Whether a failed member task failed because of its model (``twin.campaign.task`` exits with
    ``EXIT_MODEL_FAILED``: divergence, a non-finite state), which the failure policy may drop the member for; any
    other failure (a signal such as the OOM killer's, a launcher error, a full disk, a lost worker or node) is the
    infrastructure's: retried, then the experiment stops with the real reason and no member is dropped for it."""
    from twin.campaign.task import EXIT_MODEL_FAILED

    return getattr(exc, "exitcode", None) == EXIT_MODEL_FAILED


def _is_worker_lost(exc: BaseException) -> bool:
    from parsl.executors.high_throughput.errors import WorkerLost

    return isinstance(exc, WorkerLost)


def _retry_handler(exc, task_record) -> float:
    """Parsl retry cost: twin errors with exit status 2 would fail again, so they use up every retry at once."""
    if getattr(exc, "exitcode", None) == EXIT_NO_RETRY:
        return 1e9
    return 1.0


class CampaignWorkflow:
    """Drives the DAGs of all experiments of a campaign on a loaded Parsl configuration."""

    def __init__(self, run_dir: Path, dirs: list[Path], policy, resources, launcher: Launcher,
                 scans: dict[Path, dict], children=None, petsc_options: list[str] | None = None, waiting=None):
        import parsl

        self.run_dir = run_dir
        #: the processes Parsl started here, for the heartbeat (:func:`workflows.executors.started_processes`)
        self.children = children or (lambda: None)
        #: what the batch system says of blocks that do not run, for a note while no task finishes
        #: (:func:`workflows.executors.waiting_blocks`)
        self.waiting = waiting or (lambda: [])
        self.policy = policy
        self.resources = resources
        self.launcher = launcher
        #: PETSc options of the command line, after ``--`` in every task's words (twin.campaign.task)
        self.petsc_tail = ["--", *petsc_options] if petsc_options else []
        self.logs = run_dir / "runinfo" / "tasks"
        self.app = parsl.bash_app(_task)
        # one-rank tasks of a warm launcher run in the workers themselves (twin.campaign.task.run_in_worker)
        self.warm_app = parsl.python_app(run_in_worker)
        self.pool = None
        if launcher.in_worker(1):
            dfk = parsl.dfk()
            executor = dfk.executors[LOCAL_LABEL]  # warm workers are local (the schema's launchers)
            self.pool = WarmPool(run_dir / "runinfo", resources.workers, executor.worker_logdir,
                                 blocks=lambda: [pid for pid, group in started_processes(dfk) if group])
        #: tasks that will not come after all: experiments whose rest became one task (auto)
        self.tasks_saved = 0
        self.exps: list[_Experiment] = []
        self.tasks_run = self.tasks_failed = 0
        for d in dirs:
            K, N, rpm = _sizes(d)
            self._check_launch(d.name, rpm)
            e = _Experiment(d.name, d, K, N, rpm, alive=set(range(N)))
            self._resume(e, scans[d])
            self.exps.append(e)

    def _check_launch(self, name: str, ranks_per_member: int) -> None:
        """Refuse, before any task is submitted, a task the launcher cannot start (``parsl-mpi``: more whole nodes
        than a block has, which would wait for ever). The schema checks ``resources.ranks`` as well; an experiment's
        ``ensemble.ranks_per_member`` (which a matrix may vary) is known here."""
        for key, ranks in (("ensemble.ranks_per_member", ranks_per_member), ("resources.ranks", self.resources.ranks)):
            try:
                self.launcher.resource_spec(ranks)
            except ValueError as exc:
                raise WorkflowError(f"experiment {name}: {key} ({ranks}): {exc}") from None
        ranks = self.resources.ranks
        if self.resources.task == "experiment" and ranks > ranks_per_member and ranks % ranks_per_member:
            # the experiment's task splits its ranks into members' groups, as online mode does
            raise WorkflowError(f"experiment {name}: resources.task: experiment runs it on resources.ranks ({ranks}) "
                                f"ranks, in groups of ensemble.ranks_per_member ({ranks_per_member}): make "
                                f"resources.ranks a multiple of {ranks_per_member}")

    # -- resume ------------------------------------------------------------------------------------------------------
    def _resume(self, e: _Experiment, scan: dict) -> None:
        if layout.stopped_marker(e.dir).exists():  # its policy stopped it: the same failure would come again
            log.warning("experiment %s was stopped earlier (%s); skipping it: %s", e.name,
                        layout.read_json(layout.stopped_marker(e.dir)).get("reason"), layout.to_run_again(e.dir))
            e.stage = "failed"
            return
        earlier = layout.read_json(layout.error_marker(e.dir))
        if earlier:  # failed (a step's error, a killed or timed-out task): tried again, from its files
            log.info("experiment %s failed earlier (%s); trying it again", e.name, earlier.get("reason"))
            layout.error_marker(e.dir).unlink(missing_ok=True)
        k = int(scan["checkpoint"])
        for j in range(max(k, 0) + 1):
            e.alive -= set(layout.member_files(e.dir, j)[1])
        if k < 0:
            e.stage, e.cycle = "init", 0
        elif k >= e.n_cycles:
            # done.json is written after the last step: without it finalize runs again (and skips what is there)
            promised = promised_outputs(e.dir)
            # outputs of a finished run missing, truncated or changed since: set aside, finalize writes them again
            # an unreadable done.json promises nothing readable: it is set aside and every output written again
            damaged = damaged_outputs(e.dir, promised) if promised is not None else damaged_outputs(e.dir)
            if damaged:
                set_aside_outputs(e.dir, damaged)
                e.rewrite = True
            finished = scan["outputs"] and promised is not None and not damaged
            e.stage, e.cycle = ("done" if finished else "finalize"), e.n_cycles
        else:
            e.stage, e.cycle = "forecast", k
            e.skip_members = set(scan["members_done"])
        if self.resources.task == "experiment" and e.stage not in ("done", "failed"):
            e.stage = "experiment"  # its task resumes from its files as online mode does
        if k >= 0:
            log.info("experiment %s: resuming at %s (cycle %d of %d; %d member forecasts of it already done)", e.name,
                     e.stage, e.cycle, e.n_cycles, len(e.skip_members))

    @property
    def total_tasks(self) -> int:
        return sum(map(self._tasks_left, self.exps))

    @staticmethod
    def _tasks_left(e: _Experiment) -> int:
        """The tasks ``e`` has from its current stage on (those running included)."""
        if e.stage in ("done", "failed"):
            return 0
        if e.stage == "experiment":
            return 1
        cycles = e.n_cycles - e.cycle
        return (e.stage == "init") + cycles * (len(e.alive) + 1) - len(e.skip_members) + 1

    # -- submission --------------------------------------------------------------------------------------------------
    def _submit(self, e: _Experiment, step: str, ranks: int, args: list, member: int | None = None) -> None:
        tag = f"{step}" + (f"_c{e.cycle:04d}" if step in ("forecast", "analyse") else "") + (
            f"_m{member:04d}" if member is not None else "")
        base = self.logs / e.name / tag
        base.parent.mkdir(parents=True, exist_ok=True)
        # launcher parsl-mpi: the whole nodes Parsl's MPI mode gives the task (none for the other launchers); with
        # warm workers, the priority that puts it before their warm-ups for the outputs (workflows.warm)
        spec = {**self.launcher.resource_spec(ranks), **({} if self.pool is None else {"priority": STEP_PRIORITY})}
        if self.launcher.in_worker(ranks):
            fut = self.warm_app([step, str(e.dir), *[str(a) for a in args], *self.petsc_tail], str(base) + ".err",
                                self.launcher.private, walltime=self.policy.task_timeout,
                                registry=str(self.pool.registry.path), parsl_resource_specification=spec)
        else:
            cmd = self.launcher.command(ranks, [step, e.dir, *args, *self.petsc_tail],
                                        registry=None if self.pool is None else str(self.pool.registry.path))
            fut = self.app(cmd, stdout=str(base) + ".out", stderr=str(base) + ".err",
                           walltime=self.policy.task_timeout, parsl_resource_specification=spec)
        e.pending[fut] = (step, member, base)
        self.tasks_run += 1

    def _start_stage(self, e: _Experiment) -> None:
        """Submit the tasks of ``e``'s current stage."""
        if e.stage == "init":
            self._submit(e, "init", 1, [])
        elif e.stage == "forecast":
            e.failures, e.infrastructure = {}, {}
            todo = sorted(e.alive - e.skip_members)
            e.skip_members = set()
            for m in todo:
                self._submit(e, "forecast", e.ranks_per_member, ["--cycle", e.cycle, "--member", m], m)
            if not todo:
                e.stage = "analyse"
                self._start_stage(e)
        elif e.stage == "analyse":
            self._submit(e, "analyse", self.resources.ranks,
                         ["--cycle", e.cycle, "--min-members", self.policy.min_members])
        elif e.stage == "finalize":
            self._submit(e, "finalize", self.resources.ranks, ["--rewrite"] if e.rewrite else [])
        elif e.stage == "experiment":
            self._submit(e, "experiment", self.resources.ranks,
                         ["--retries", self.policy.retries, "--on-member-failure", self.policy.on_member_failure,
                          "--min-members", self.policy.min_members])

    def _stop(self, e: _Experiment, reason: str) -> None:
        """Its failure policy stopped ``e`` (``stopped.json``): a rerun skips it until the file is removed."""
        layout.write_json(layout.stopped_marker(e.dir), {"cycle": e.cycle, "stage": e.stage, "reason": reason})
        log.error("experiment %s stopped in cycle %d: %s; %s", e.name, e.cycle, reason, layout.to_run_again(e.dir))
        e.stage = "failed"

    def _fail(self, e: _Experiment, reason: str) -> None:
        """``e`` failed (``failed.json``), as an online experiment that raised: a rerun tries it again from its
        files."""
        layout.write_json(layout.error_marker(e.dir), {"cycle": e.cycle, "stage": e.stage, "reason": reason,
                                                       "time": time.time()})
        log.error("experiment %s FAILED in cycle %d: %s", e.name, e.cycle, reason)
        e.stage = "failed"

    # -- completion --------------------------------------------------------------------------------------------------
    def _finished(self, e: _Experiment, fut) -> str:
        """Handle one finished task of ``e``; returns a short progress note."""
        step, member, base = e.pending.pop(fut)
        by_model = False
        try:
            fut.result()
            error = None
        except Exception as exc:  # noqa: BLE001 - a Parsl app failure of any kind (exit status, timeout, lost worker)
            from parsl.app.errors import AppTimeout

            code = getattr(exc, "exitcode", None)
            if isinstance(exc, TaskFailed):  # a warm worker's task: the line it gave
                error = exc.reason
            elif isinstance(exc, AppTimeout):  # Parsl's walltime: the campaign's experiments.task_timeout
                error = (f"it ran longer than experiments.task_timeout ({self.policy.task_timeout:g} s) and was "
                         "ended: raise experiments.task_timeout")
            elif _is_worker_lost(exc):  # a warm worker died under its task (a signal, the OOM killer, a crash)
                crash = _crash(Path(str(base) + ".err"))
                error = (f"the Parsl worker running it crashed: {crash}" if crash else
                         f"the Parsl worker running it died (worker {exc.worker_id} lost: killed or crashed)")
            else:
                error = _last_line(Path(str(base) + ".err"))
                if isinstance(code, int) and code > 128 and not error.startswith(("model failed:", "error:", "rank ",
                                                                                    "task ")):
                    # the launcher's banner without its reason: its exit status says the signal (137: SIGKILL)
                    error = f"the task's launcher exited with status {code}, as when a rank is {signal_words(code)}"
                error = error or (f"killed by signal {-code}" if isinstance(code, int) and code < 0
                                  else f"{type(exc).__name__}: {exc}")
            by_model = model_failure(exc)
            log.debug("task %s failed: %r", base.name, exc)
            self.tasks_failed += 1
        if step == "forecast":
            if error is not None:
                (e.failures if by_model else e.infrastructure)[member] = error
                log.warning("experiment %s: member %d failed in cycle %d after %d attempt(s)%s: %s", e.name, member,
                            e.cycle, self.policy.retries + 1, "" if by_model else " (not a model's solver failure)",
                            error)
            if e.pending:
                return f"{e.name} c{e.cycle} m{member}"
            if e.infrastructure:
                self._fail(e, "member(s) " + ", ".join(f"{m} ({r})" for m, r in sorted(e.infrastructure.items()))
                           + " failed, not by a model's solver failure (an exception in the model's or twin's "
                           "code, a kill, memory or disk, a lost worker, a time limit): no member is dropped for "
                           "that; rerun to resume from the last cycle (after fixing the cause)")
                return f"{e.name} failed"
            if e.failures and self.policy.on_member_failure == "stop":
                self._stop(e, "member(s) " + ", ".join(f"{m} ({r})" for m, r in sorted(e.failures.items()))
                           + " failed (policy: stop)")
                return f"{e.name} stopped"
            for m, reason in e.failures.items():
                layout.write_json(layout.failed_marker(e.dir, e.cycle, m), {"cycle": e.cycle, "member": m,
                                                                             "reason": reason})
                e.alive.discard(m)
                log.warning("experiment %s: member %d dropped in cycle %d", e.name, m, e.cycle)
            e.stage = "analyse"
        elif error is not None:
            if layout.stopped_marker(e.dir).exists():  # the analysis stopped it (too few members left), as online
                said = layout.read_json(layout.stopped_marker(e.dir)).get("reason") or error  # not the task's "error:"
                log.error("experiment %s stopped in cycle %d: %s; %s", e.name, e.cycle, said,
                          layout.to_run_again(e.dir))
                e.stage = "failed"
            else:
                self._fail(e, f"{step} failed: {error}")
            return f"{e.name} failed"
        elif step == "init":
            e.stage, e.cycle = "forecast", 0
        elif step == "analyse":
            e.cycle += 1
            e.stage = "forecast" if e.cycle < e.n_cycles else "finalize"
            if e.stage == "forecast" and not e.chosen:
                self._choose(e)
        elif step == "experiment":
            return self._experiment_ended(e)
        elif step == "finalize":
            mark_done(e.dir)
            e.stage = "done"
            return f"{e.name} done"
        if e.stage not in ("done", "failed"):
            self._start_stage(e)
        return f"{e.name} {step} c{e.cycle}"

    def _choose(self, e: _Experiment) -> None:
        """``resources.task: auto``, after ``e``'s first analysis of this run: the rest of ``e`` as one task when its
        members are too small for tasks of their own (:func:`workflows.granularity.whole_experiment`)."""
        e.chosen = True
        why = whole_experiment(self.resources, self.policy, e.ranks_per_member, self.launcher.in_worker(1), e.dir,
                               e.cycle - 1, len(e.alive))
        if why:
            before = self._tasks_left(e)
            e.stage = "experiment"
            self.tasks_saved += before - self._tasks_left(e)
            log.info("experiment %s: %s", e.name, why)

    def _experiment_ended(self, e: _Experiment) -> str:
        """An experiment's task ended: how it ended is in its markers, as online mode leaves them."""
        found = layout.failure(e.dir)
        e.stage = "failed"
        if found and found[0] == "stopped":
            log.error("experiment %s stopped: %s; %s", e.name, found[1], layout.to_run_again(e.dir))
            return f"{e.name} stopped"
        if found:
            log.error("experiment %s FAILED: %s", e.name, found[1])
            return f"{e.name} failed"
        if not layout.done_marker(e.dir).exists():  # its marker could not be written (a full disk): its log says why
            log.error("experiment %s did not finish and left no marker (%s says why); a rerun resumes it", e.name,
                      self.logs / e.name / "experiment.err")
            return f"{e.name} failed"
        e.stage = "done"
        return f"{e.name} done"

    def _say_experiments(self, bar: Progress) -> None:
        """Where the experiments running as one task each are (the cycles of their newest checkpoint, which they
        write every ``outputs.checkpoint_seconds``), on the progress display: such a task is one step of it."""
        said = [f"{e.name} cycle {max(layout.checkpoint_cycles(e.dir), default=0)}/{e.n_cycles}"
                for e in self.exps if e.stage == "experiment" and e.pending]
        if said:
            bar.advance(0, status="; ".join(said))

    def run(self, interactive: bool | None = None) -> None:
        for e in self.exps:
            if e.stage not in ("done", "failed"):
                self._start_stage(e)
        if self.pool is not None:  # behind the first steps, which do not wait for them
            self.pool.warm_up([e.dir for e in self.exps if e.stage not in ("done", "failed")][:1], self.petsc_tail[1:])
        bar = Progress("campaign tasks", self.total_tasks, interactive=interactive, log_every=5.0)
        last_beat = 0.0
        last_done = next_note = time.time()
        try:
            while True:
                owner = {f: e for e in self.exps for f in e.pending}
                if not owner:
                    break
                # a warm-up's end wakes the loop too: the warm-ups for the outputs are asked for from here
                warming = [] if self.pool is None else self.pool.unfinished()
                done, _ = cf.wait(list(owner) + warming, timeout=2.0 if self.pool is None else 0.5,
                                  return_when=cf.FIRST_COMPLETED)
                done = [fut for fut in done if fut in owner]
                for fut in done:
                    note = self._finished(owner[fut], fut)
                    if self.tasks_saved:  # an experiment's rest became one task (resources.task: auto)
                        bar.resize(bar.total - self.tasks_saved)
                        self.tasks_saved = 0
                    bar.advance(status=note)
                now = time.time()
                if done:
                    last_done = next_note = now
                elif now - last_done >= WAIT_NOTE_AFTER and now >= next_note:
                    next_note = now + WAIT_NOTE_EVERY
                    blocks = self.waiting()
                    if blocks:
                        log.info("no task has finished for %.0f s: %s; the tasks run once Slurm starts the block",
                                 now - last_done, "; ".join(blocks))
                if self.pool is not None:
                    self.pool.check(waiting=sum(len(e.pending) for e in self.exps))
                    # a finalize step to come (an experiment running as one task writes its outputs itself)
                    self.pool.warm_outputs(needed=any(e.stage not in ("finalize", "done", "failed", "experiment")
                                                      for e in self.exps))
                if time.time() - last_beat > 5.0:
                    write_heartbeat(self.run_dir, children=self.children())
                    last_beat = time.time()
                    self._say_experiments(bar)
        finally:
            bar.close()


class _Signalled(WorkflowError):
    """The driver was told to stop (``scancel``, ``kill``, Ctrl-C, the end of a batch job's time); ``twin run`` exits
    with ``exit_status``, 128 + the signal's number, as a shell reports a process the signal ended (130 for Ctrl-C,
    as in online mode)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


@contextlib.contextmanager
def _signals_stop_the_workflow():
    """SIGTERM, SIGINT and SIGHUP raise :class:`_Signalled` in the driver's main thread, so that Parsl's cleanup runs
    (interchange and workers stopped, Slurm blocks cancelled) instead of leaving them orphaned. Further signals are
    ignored while the cleanup runs (``scancel`` signals every process of the job). Outside the main thread (no
    handlers can be installed there) nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]

    def stop(signum, frame):
        for sig in names:
            signal.signal(sig, signal.SIG_IGN)
        raise _Signalled(f"the workflow driver received {signal.Signals(signum).name}: its Parsl workers and blocks "
                         "were stopped; run the campaign again to resume it from its files", signum)

    old = {sig: signal.signal(sig, stop) for sig in names}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def stop_parsl(dfk) -> None:
    """Parsl's clean-up of the run (``dfk.cleanup()``: the interchange and the workers stopped, the blocks cancelled),
    also when an interchange has died before it (killed: ``scancel`` signals every process of a job; the OOM
    killer). Parsl's clean-up asks each executor's interchange which blocks it has before it cancels them and waits
    for the answer for ever, so the driver hung after such a death, ignoring SIGINT and SIGTERM (found by a probe,
    with a terminal's Ctrl-C, which reached the interchange as well). An executor whose interchange has ended is put
    in Parsl's bad state first, which leaves that question out, and its blocks are cancelled through its provider
    (the local provider kills each block's process group; the Slurm provider scancels its jobs).

    Parsl's job-status poller may still be waiting for the dead interchange's answer to a question it asked before
    the death (no time limit), and its clean-up joins that thread: after a death the clean-up therefore runs in a
    thread of its own and is given up after :data:`CLEANUP_AFTER_DEATH` seconds (the blocks were cancelled above;
    Parsl's threads are daemons, so the driver still ends). A CI run under load 4-5 saw the driver hang there."""
    died = False
    for ex in dfk.executors.values():
        proc = getattr(ex, "interchange_proc", None)
        if proc is None or proc.poll() is None or ex.bad_state_is_set:
            continue
        died = True
        log.warning("Parsl's interchange (process %d) ended before the run did (status %s): its blocks are stopped "
                    "without it", proc.pid, proc.returncode)
        ex.set_bad_state_and_fail_all(WorkflowError(f"Parsl's interchange ended (status {proc.returncode})"))
        jobs = [str(job) for job in dict(getattr(ex, "blocks_to_job_id", {})).values()]
        provider = getattr(ex, "provider", None)
        if provider is not None and jobs:
            try:
                provider.cancel(jobs)
            except Exception as exc:  # noqa: BLE001 - a block that cannot be cancelled must not stop the clean-up
                log.warning("could not cancel the blocks %s: %s", ", ".join(jobs), exc)
    if not died:
        dfk.cleanup()
        return
    import threading

    cleanup = threading.Thread(target=dfk.cleanup, name="twin-parsl-cleanup", daemon=True)
    cleanup.start()
    cleanup.join(CLEANUP_AFTER_DEATH)
    if cleanup.is_alive():
        log.warning("Parsl's clean-up had not finished %g s after its interchange died (a thread of Parsl waits for "
                    "the dead interchange's answer); the driver ends without it", CLEANUP_AFTER_DEATH)


#: Seconds the driver gives Parsl's clean-up after an interchange died (:func:`stop_parsl`).
CLEANUP_AFTER_DEATH = 20.0


def _task(command: str, stdout=None, stderr=None, walltime=None, parsl_resource_specification=None) -> str:
    """The bash app of every campaign task: the command line built by :class:`workflows.executors.Launcher`, with
    its ``parsl_resource_specification`` (:meth:`workflows.executors.Launcher.resource_spec`)."""
    return command


def _warn_unread_options(dirs: list[Path]) -> None:
    """The tasks' lines about PETSc options that no solver read (:func:`twin.campaign.task._judge_options`), each
    once per run."""
    seen: list[str] = []
    for d in dirs:
        for rec in layout.read_task_log(d):
            if rec.get("task") == "petsc-options":
                seen += [str(x) for x in rec.get("lines", ()) if str(x) not in seen]
    for line in seen:
        log.warning(line)  # the line as the template: the repeat filter counts each option apart


def run_workflow(loaded, run_dir, *, experiments=None, address: str | None = None, verbose: bool = False,
                 interactive: bool | None = None, petsc_options: list[str] | None = None) -> WorkflowResult:
    """Run (or resume) the campaign ``loaded`` as a Parsl workflow in ``run_dir``.

    Parameters
    ----------
    loaded : LoadedCampaign
    run_dir : path-like
        Created if needed; an existing run directory of the same campaign is resumed.
    experiments : ExperimentsConfig, optional
        Matrix and failure policy (default: the campaign's ``experiments`` section).
    address : str, optional
        Address Slurm workers connect back to (default: this host's name).
    verbose : bool
        Debug logging.
    petsc_options : list of str, optional
        PETSc options of the command line (``-l96_ts_type rk``): every task gets them, as every rank does online
        (they win over the YAML's ``solver:`` options there too). Checked here first, without PETSc, by the rules
        a campaign file's are (:func:`twin.config.solver_options.command_line_problems`).

    Returns
    -------
    WorkflowResult
        ``ok`` when every experiment is done; failed and dropped members and stopped experiments are reported by
        name in it, in ``twin.log`` and by ``twin status``.

    A sensitive campaign runs under an owner-only umask (:func:`twin.io.atomic.private_umask`), which Parsl's
    interchange and workers inherit, and every task sets it again (:class:`workflows.executors.Launcher`).
    """
    from twin.io.atomic import private_umask

    from twin.config.solver_options import command_line_problems

    petsc_options = [str(o) for o in petsc_options or []]
    problems = command_line_problems(petsc_options)
    if problems:
        raise ConfigError(problems)
    check_address_space(loaded.config.resources)  # before a run directory is made or a process started
    with private_umask(loaded.config.campaign.sensitive):
        # starts and imports while this process imports Parsl and prepares (workflows.early_interchange)
        early = _early_interchange(loaded.config.resources)
        try:
            return _run_workflow(loaded, run_dir, experiments, address, verbose, interactive, petsc_options, early)
        finally:
            if early is not None:
                early.discard()  # unless Parsl took it


def _early_interchange(resources) -> EarlyInterchange | None:
    """The interchange of a run on local resources, started now (:mod:`workflows.early_interchange`)."""
    return EarlyInterchange() if resources.type == "local" else None


def _early_block(resources, run_dir: Path) -> EarlyBlock | None:
    """The first worker pool of a run on local resources, started now (:mod:`workflows.early_block`); ``None`` (Parsl
    starts it) when ``bash`` could not start it."""
    if resources.type != "local":
        return None
    try:
        return EarlyBlock(run_dir / "runinfo" / "early_block", f"parsl.{LOCAL_LABEL}.block-0.early")
    except (OSError, ValueError, StopIteration, subprocess.SubprocessError) as exc:
        log.debug("the first worker pool is left to Parsl to start: %s", exc)
        return None


def _run_workflow(loaded, run_dir, experiments, address, verbose, interactive, petsc_options,
                  early=None) -> WorkflowResult:
    import contextlib

    from twin.campaign.rundir import guard

    with contextlib.ExitStack() as stack:
        # the campaign's own run directory, and this driver's alone while it runs
        run_dir = guard(stack, Path(run_dir).resolve(), loaded)
        # starts and imports while this process imports Parsl and starts it (workflows.early_block)
        block = _early_block(loaded.config.resources, run_dir)
        if block is not None:
            stack.callback(block.discard)  # unless Parsl took it
        return _run_guarded(loaded, run_dir, experiments, address, verbose, interactive, petsc_options, early,
                            block)


def _run_guarded(loaded, run_dir: Path, experiments, address, verbose, interactive, petsc_options,
                 early=None, block=None) -> WorkflowResult:
    parsl = import_parsl_api()

    t0 = time.perf_counter()
    cfg = loaded.config
    policy = experiments or experiments_section(cfg)
    setup_logging(0, 1, verbose)  # the terminal, for what setting up the experiments says (twin.log comes next)
    dirs = prepare_experiments(loaded, run_dir, policy)
    setup_logging(0, 1, verbose, logfile=str(run_dir / "twin.log"))
    left = stop_left_behind(run_dir)  # a killed driver's interchange and blocks, named by its last heartbeat
    if left:
        log.warning("stopped %d process(es) that a lost driver of this run left running (%s)", len(left),
                    ", ".join(map(str, left)))
    sweep_on_resume(run_dir)  # temporary files of a killed run, before any task writes here
    write_heartbeat(run_dir)
    log.info("campaign '%s': %d experiment(s) as a Parsl workflow (%s resources) in %s", cfg.campaign.name,
             len(dirs), cfg.resources.type, run_dir)
    pconfig = build_config(cfg.resources, run_dir, retries=policy.retries, address=address, early=early,
                           early_block=block)
    pconfig.retry_handler = _retry_handler
    state = "crashed"
    scanning = _Scans(dirs)  # while Parsl starts its interchange
    with _signals_stop_the_workflow():
        try:
            dfk = load_parsl(pconfig, cfg.resources)
        except BaseException:
            scanning.kill()
            raise
        try:
            launcher = launcher_for(cfg.resources, private=cfg.campaign.sensitive, task_timeout=policy.task_timeout,
                                    petsc_options=petsc_options)
            log.info("launcher: %s", launcher.why)
            def children():
                return [process_record(pid, group) for pid, group in started_processes(dfk)]

            write_heartbeat(run_dir, children=children())
            wf = CampaignWorkflow(run_dir, dirs, policy, cfg.resources, launcher, scanning.results(), children,
                                  petsc_options, waiting=lambda: waiting_blocks(dfk))
            if petsc_options:
                log.info("PETSc options of the command line, given to every task: %s", " ".join(petsc_options))
            wf.run(interactive)
            state = "finished"
        except _Signalled:
            state = "cancelled"
            raise
        finally:
            # stops the interchange and the workers, and cancels the provider's blocks (scancel for Slurm)
            stop_parsl(dfk)
            parsl.clear()
            write_heartbeat(run_dir, state)
    _warn_unread_options(dirs)
    # the steps verified what they wrote and the scans what was there (twin status verifies in full, in a process
    # of its own that starts PETSc: 1.5 s)
    st = status(run_dir, verify=False)
    result = WorkflowResult(run_dir, {e.name: e.state for e in st.experiments}, wf.tasks_run, wf.tasks_failed,
                            time.perf_counter() - t0, {e.name: e.dropped for e in st.experiments if e.dropped})
    for line in st.lines():
        log.info("%s", line)
    return result
