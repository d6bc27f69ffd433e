"""Online mode: every experiment of a campaign inside one MPI job, members over sub-communicators.

The job's ranks are split into groups of ``ranks_per_member`` (:func:`twin.core.comm.split_ensemble`); in each cycle
every group forecasts its members in memory (:func:`twin.campaign.steps.advance_member` on the group's communicator,
the model integration a workflow's member task runs too; a group of one rank forecasts all its members at once through
the model's batched forecast when it has one, :func:`twin.campaign.steps.batched_forecast`, whose numbers are the
solver's bitwise), the forecasts are gathered to every rank, and all ranks run
the analysis (:func:`twin.campaign.steps.analyse`), whose checkpoint keeps the forecasts (array ``forecast``) for
``forecast.nc`` and the decisions. So online mode writes one file per ``outputs.checkpoint_seconds`` of wall-clock time or
``checkpoint_every`` cycles (the checkpoint: what a restart needs, with the analyses and forecasts of the cycles since
the one before; default every 10 s) where a workflow writes a member file per member and cycle (its tasks are processes of their own); a killed
online run recomputes the cycles after its last checkpoint, bitwise as they were. The analysis is the same function on the same numbers
in both modes, so they give the same analysis for the same seed bitwise, and either can resume a run directory the
other started (from its last checkpoint).

Failure policy (``experiments`` section): a member forecast that fails (SolverError, ModelError) is tried again
``retries`` times; then it is dropped (``drop``) or the experiment stops (``stop``, ``stopped.json``) and the next one
runs. Any other error inside an experiment (a PETSc error, a diverged minimisation, a non-finite value, a bug) fails
that experiment alone: ``failed.json`` holds the reason, twin.log says ``FAILED`` and the campaign goes on with the
next experiment; :func:`unfinished` lists both kinds so that the command exits non-zero. A completed experiment
(outputs and decision) gets ``done.json`` last, and a resume skips it; a failed one is tried again on resume, a
stopped one is not (its policy decided).

An error is contained when every rank of the job sees it (errors in collective steps, which is where model, solver
and assimilation errors arise) or where the ranks agree on it: a member forecast that raises something other than a
model's failure on its group's ranks (a plugin's own ``ValueError``) fails the experiment on every rank at the end of
the forecast stage. Any other error on one rank, while the others may wait for it in a collective call, ends the MPI
job once they have not reached the experiment's end within :data:`ALONE_TIMEOUT` seconds (``TWIN_ALONE_TIMEOUT``):
the failing rank prints the reason and calls ``MPI_Abort`` (exit status 1), as MPI has no other way out; running the
command again resumes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from twin.campaign import layout
from twin.campaign.experiments import experiments_section, prepare_experiments
from twin.campaign.heartbeat import sweep_on_resume, write_heartbeat
from twin.campaign.status import mark_done
from twin.core.comm import abort_job
from twin.core.errors import ModelError, SolverError, TwinError, WorkflowError
from twin.core.log import get_logger, log_repeated_warnings, setup_logging

log = get_logger("twin.campaign.online")


def run_online(loaded, comm, run_dir, *, experiments=None, only: str | None = None,
               verbose: bool = False, quiet: bool = False) -> list[Path]:
    """Run (or resume) every experiment of ``loaded`` on ``comm``; returns the experiment directories. Collective.

    Parameters
    ----------
    loaded : LoadedCampaign
    comm : mpi4py communicator
        The job's ranks (its size must be a multiple of the ranks per member).
    run_dir : path-like
    experiments : ExperimentsConfig, optional
        Matrix and failure policy (default: the campaign's ``experiments`` section).
    only : str, optional
        Run only the experiment of this name (one task of a Slurm job array).

    A sensitive campaign runs under an owner-only umask (:func:`twin.io.atomic.private_umask`).
    """
    from twin.io.atomic import private_umask

    with private_umask(loaded.config.campaign.sensitive):
        return _run_online(loaded, comm, run_dir, experiments, only, verbose, quiet)


def _run_online(loaded, comm, run_dir, experiments, only, verbose, quiet) -> list[Path]:
    experiments = experiments or experiments_section(loaded.config)
    run_dir = Path(run_dir)
    dirs = prepare_experiments(loaded, run_dir, experiments, comm)
    if only is not None:
        chosen = [d for d in dirs if d.name == only]
        if not chosen:
            raise WorkflowError(f"campaign {loaded.path} has no experiment {only!r}; it has "
                                f"{', '.join(d.name for d in dirs)}")
        dirs = chosen
    rank, size = comm.Get_rank(), comm.Get_size()
    setup_logging(rank, size, verbose, logfile=str(run_dir / "twin.log"), quiet=quiet)
    if only is not None:  # one task of a job array (the others run in the same run directory): its experiment only
        if rank == 0:
            sweep_on_resume(run_dir, dirs[0])
        comm.Barrier()
    beat = Heartbeat(run_dir) if rank == 0 else None
    log.info("campaign '%s' online on %d rank(s): %d experiment(s) in %s", loaded.config.campaign.name, size,
             len(dirs), run_dir)
    if experiments.task_timeout is not None:  # found by a probe: accepted, then silently not applied
        log.warning("experiments.task_timeout (%g s) limits the tasks of a workflow (resources.workers > 1 or --workflow);"
                    " online mode runs the campaign in this process and does not apply it", experiments.task_timeout)
    t0 = time.perf_counter()
    state = "crashed"
    try:
        from twin.core.progress import campaign_progress

        # one display: campaign -> experiment k/n -> cycle k/n -> members (rank 0, interactive terminals only)
        with campaign_progress(loaded.config.campaign.name, len(dirs), rank=rank,
                               on_change=None if beat is None else beat.progress) as shown:
            for i, d in enumerate(dirs):
                log.info("experiment %d/%d: %s", i + 1, len(dirs), d.name)
                shown.experiment(i, d.name)
                contained(d, comm, experiments)
                shown.experiment_done()
        state = "finished"
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (twin.cli.Terminated): stopped on purpose, not crashed
        state = "cancelled"
        raise
    finally:
        if beat is not None:
            beat.stop(state)
    log_repeated_warnings()
    failed = unfinished(dirs)
    log.info("campaign done in %.1f s%s", time.perf_counter() - t0,
             f"; {len(failed)} of {len(dirs)} experiment(s) did not finish" if failed else "")
    return dirs


class Heartbeat:
    """``driver.json`` rewritten every ``period`` seconds while the campaign runs, so that ``twin status`` on another
    host sees a live driver (:data:`twin.campaign.heartbeat.HEARTBEAT_TIMEOUT`), and its final state at the end.

    It also carries where the driver is (:meth:`progress`, the campaign display's listener): the experiment and the
    cycles it has done, rewritten at most every ``progress_period`` seconds, so that ``twin status`` is current to
    about a second although the restart checkpoints come every ``outputs.checkpoint_seconds``."""

    def __init__(self, run_dir, period: float = 30.0, progress_period: float = 1.0):
        import threading

        self.run_dir, self._done = run_dir, threading.Event()
        self._lock = threading.Lock()
        self._where: dict | None = None
        self._written = time.monotonic()
        self.progress_period = progress_period
        write_heartbeat(run_dir)
        self._thread = threading.Thread(target=self._beat, args=(period,), name="twin-heartbeat", daemon=True)
        self._thread.start()

    def _write(self, state: str = "running") -> None:
        with self._lock:
            write_heartbeat(self.run_dir, state, self._where)
            self._written = time.monotonic()

    def _beat(self, period: float) -> None:
        while not self._done.wait(period):
            try:
                self._write()
            except OSError as exc:  # a full disk must not kill the driver from a side thread
                log.warning("could not write the driver heartbeat: %s", exc)

    def progress(self, counts) -> None:
        """Record the display's counts (:class:`twin.core.progress.Counts`): written now when an experiment starts or
        at least ``progress_period`` seconds after the last write."""
        where = {"experiment": counts.experiment.label, "steps": counts.cycle.label, "done": counts.cycle.done,
                 "total": counts.cycle.total}
        started = self._where is None or self._where.get("experiment") != where["experiment"]
        self._where = where
        if started or time.monotonic() - self._written >= self.progress_period:
            try:
                self._write()
            except OSError as exc:
                log.warning("could not write the driver heartbeat: %s", exc)

    def stop(self, state: str) -> None:
        self._done.set()
        self._thread.join()
        try:
            self._write(state)
        except OSError as exc:
            log.warning("could not write the driver's final state to driver.json: %s", exc)


def unfinished(dirs) -> list[tuple[str, str]]:
    """``(experiment, reason)`` for every experiment that failed or was stopped (from their markers)."""
    out = []
    for d in map(Path, dirs):
        found = layout.failure(d)
        if found:
            out.append((d.name, f"FAILED: {layout.to_try_again(found[1])}" if found[0] == "failed" else
                        f"stopped: {found[1]}; {layout.to_run_again(d)}"))
        elif not layout.done_marker(d).exists():  # its marker could not be written (a full disk)
            said = _UNMARKED.get(str(d))
            out.append((d.name, f"FAILED: {said}" if said else "did not finish and left no marker (twin.log says why)"))
    return out


#: Seconds a rank whose experiment failed waits for the other ranks at the experiment's end, where the failure is
#: contained, before it ends the MPI job: they may be waiting for it inside a collective call, which never returns.
#: The environment variable ``TWIN_ALONE_TIMEOUT`` sets it (a job whose ranks compute apart for longer, a test).
ALONE_TIMEOUT = 60.0


def _alone_timeout() -> float:
    try:
        value = float(os.environ.get("TWIN_ALONE_TIMEOUT", ALONE_TIMEOUT))
    except ValueError:
        return ALONE_TIMEOUT
    return value if value > 0 else ALONE_TIMEOUT


def _arrive(arrival, name: str, reason: str) -> None:
    """Every rank at the end of experiment ``name`` (non-blocking barrier on ``arrival``, a communicator of the
    experiment's ranks used for nothing else); a rank that failed with ``reason`` waits at most
    :data:`ALONE_TIMEOUT` s for the others, then prints the reason and aborts the job."""
    request = arrival.Ibarrier()
    if not reason:
        request.Wait()
        return
    timeout = _alone_timeout()
    deadline = time.monotonic() + timeout
    while not request.Test():
        if time.monotonic() > deadline:
            abort_job(arrival, f"error: experiment {name} FAILED on rank {arrival.Get_rank()} of "
                               f"{arrival.Get_size()}: {reason}; the other ranks did not reach the experiment's end "
                               f"within {timeout:g} s (they wait for this rank in a collective call), so the job ends "
                               "here; run the same command again to resume")
        time.sleep(0.02)


def failure_reason(exc: BaseException) -> str:
    """One line naming the error: twin's own message, or the type and PETSc's last stack line for anything else."""
    from twin.core.errors import TwinError
    from twin.core.memory import out_of_memory_carried

    said = out_of_memory_carried(exc)
    if said:  # an allocation, a thread or a library the loader could not map: the limit to raise
        text = said
    elif isinstance(exc, TwinError):
        text = str(exc)
    elif isinstance(exc, SystemExit):  # a model's own code called sys.exit: not the end of the campaign
        text = f"sys.exit({exc.code!r}) was called inside the experiment (by the model's code?)"
    else:
        text = f"{type(exc).__name__}: {exc}"
        stack = getattr(type(exc), "_traceback_", None)
        if stack:  # petsc4py keeps the PETSc error stack on the class
            text += f" ({stack[-1]})"
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."


def contained(exp_dir: Path, comm, policy) -> None:
    """Run one experiment; any error in it fails this experiment alone (``failed.json``). Collective."""
    from twin.core.errors import FileBusy

    rank = comm.Get_rank()
    state = None
    if rank == 0:
        try:
            state = _finished(exp_dir)
        except FileBusy as exc:  # said on every rank, not raised on this one alone (the others wait in bcast)
            state = f"busy: {exc}"
    state = comm.bcast(state)
    if state.startswith("busy: "):
        raise FileBusy(state[len("busy: "):])
    if state == "finished":
        log.info("experiment %s finished earlier; skipping it", exp_dir.name)
        return
    earlier = layout.read_json(layout.error_marker(exp_dir))
    if earlier:
        log.info("experiment %s failed earlier (%s); trying it again", exp_dir.name, earlier.get("reason"))
    comm.Barrier()
    if rank == 0:
        layout.error_marker(exp_dir).unlink(missing_ok=True)
        layout.done_marker(exp_dir).unlink(missing_ok=True)
    reason, busy = "", False
    arrival = comm.Dup()
    try:
        # outputs of a finished run that were damaged: written again from the checkpoints
        _run_experiment(exp_dir, comm, policy, rewrite=state == "damaged")
    except (Exception, SystemExit, GeneratorExit) as exc:  # noqa: BLE001 - contained: failed.json, twin.log, exit code
        reason, busy = failure_reason(exc), isinstance(exc, FileBusy)
        log.debug("experiment %s failed", exp_dir.name, exc_info=True)
    _arrive(arrival, exp_dir.name, reason)
    arrival.Free()
    # a rank that failed alone (e.g. writing a file) fails the experiment on every rank
    gathered = [(r, b) for r, b in comm.allgather((reason, busy)) if r]
    reasons = [r for r, _ in gathered]
    held = [r for r, b in gathered if b]
    if held:  # a file held open by another process: not the experiment's failure; the command ends here (exit 3)
        raise FileBusy(held[0])
    if reasons:
        if rank == 0:  # every rank knows the reasons now: said once (it was once per rank under mpiexec)
            log.error("experiment %s FAILED: %s", exp_dir.name, reasons[0])
            _marker(lambda: layout.write_json(layout.error_marker(exp_dir), {"reason": reasons[0],
                                                                             "time": time.time()}), exp_dir,
                    reasons[0])
    elif rank == 0 and not layout.stopped_marker(exp_dir).exists():
        _marker(lambda: mark_done(exp_dir), exp_dir)
    comm.Barrier()


#: experiment directory -> why it failed, for those whose failed.json could not be written (a full disk, where
#: twin.log cannot say it either): the command's last lines say it (:func:`unfinished`)
_UNMARKED: dict[str, str] = {}


def _marker(write, exp_dir: Path, reason: str = "") -> None:
    """Write an experiment's marker; a file system that refuses it (full, read-only) is logged, not raised: the
    experiment then counts as unfinished (:func:`unfinished`) and is run again on resume; ``reason``, a failure's,
    is kept for the command's last lines."""
    try:
        write()
    except OSError as exc:
        if reason:
            _UNMARKED[str(exp_dir)] = reason
        log.error("experiment %s: its marker could not be written (%s); it will be run again on resume",
                  exp_dir.name, exc.strerror or exc)


def _finished(exp_dir: Path) -> str:
    """``done.json`` exists, every output it lists is still as the run left it (there, not empty, of the size it
    records: :func:`twin.campaign.status.damaged_outputs`, the check ``twin status`` makes) and the last checkpoint
    verifies in full (a damaged one is set aside and its cycles computed again). Outputs deleted by hand are made
    again; a damaged one is moved aside first (:func:`twin.campaign.status.set_aside_outputs`). One process.

    Returns ``"finished"``, ``"damaged"`` (finished, but outputs to write again) or ``"unfinished"``."""
    from twin.campaign.status import damaged_outputs, set_aside_outputs

    if not layout.done_marker(exp_dir).is_file():
        return "unfinished"
    damaged = damaged_outputs(exp_dir)  # an unreadable done.json among them: every output is written again
    if damaged:
        set_aside_outputs(exp_dir, damaged)
        return "damaged"
    from twin.core.errors import FileBusy, OutputError
    from twin.io.checkpoint import CheckpointReader, list_checkpoints

    found = list_checkpoints(exp_dir / "checkpoint")
    if not found:
        return "finished"  # a forecast run or a method whose experiment keeps no cycle checkpoints
    try:
        CheckpointReader(found[-1][1], verify=True).close()
    except FileBusy:
        raise
    except OutputError as exc:
        log.warning("experiment %s finished earlier, but %s: computing it again", exp_dir.name, exc)
        return "unfinished"
    return "finished"


def _resume_point(exp_dir: Path, comm) -> Path | None:
    """The checkpoint a run resumes from: the newest of an unbroken sequence of good ones (collective).

    The driver makes its cycle checkpoints durable in groups (:meth:`twin.campaign.experiment.Setup
    .flush_diagnostics`): those up to the cycles ``diagnostics.nc`` holds are on stable storage, while a crash of
    the machine may have lost or damaged newer ones in any order. These are verified oldest first and the first bad
    one ends the sequence (it and the newer ones are set aside and computed again, so that no cycle's checkpoint is
    missing under the ones kept); without a good one there, the newest durable checkpoint that verifies."""
    from twin.campaign.outputs import diagnostics_count
    from twin.core.errors import FileBusy, OutputError
    from twin.io.checkpoint import CheckpointReader, chained, list_checkpoints, newest_verified

    found = list_checkpoints(exp_dir / "checkpoint") if comm.Get_rank() == 0 else None
    found = comm.bcast(found, root=0)
    length, why = chained(found, comm)  # a deleted or foreign checkpoint ends what a resume may start from
    if why:
        log.warning("experiment %s: %s: resuming from the checkpoint before it; the cycles after it are computed "
                    "again", exp_dir.name, why)
        found = found[:length]
    durable = diagnostics_count(exp_dir / "diagnostics.nc", comm)
    good = None
    for cycle, path in found:
        if cycle <= durable:
            continue
        try:
            CheckpointReader(path, comm, verify=True).close()
        except FileBusy:
            raise  # held open by another process: not damage, nothing is set aside
        except OutputError as exc:
            log.warning("experiment %s: %s", exp_dir.name, exc)
            break
        good = path
    return good or newest_verified([(c, p) for c, p in found if c <= durable], comm)


def _say_rank_change(exp_dir: Path, checkpoint: Path, comm, cycle: int) -> None:
    """One log line when a run resumes on another number of ranks than wrote its checkpoint: it goes on (the
    checkpoints hold whole states), but its cycles are then not bitwise those of an uninterrupted run (parallel
    reductions sum in another order) and the outputs' provenance names the last run's ranks only (a probe found
    both unsaid)."""
    from twin.io.checkpoint import CheckpointReader

    with CheckpointReader(checkpoint, comm, verify=False) as r:  # verified by _resume_point: its provenance only
        before = int(r.provenance.ranks)
    if before != comm.Get_size():
        log.info("experiment %s: resumed at cycle %d on %d rank(s); its checkpoint was written on %d: the cycles from "
                 "here differ from an uninterrupted run on %d rank(s) by round-off (the checkpoints keep each "
                 "cycle's ranks in their provenance)", exp_dir.name, cycle, comm.Get_size(), before, before)


def _set_aside(exp_dir: Path, good: Path | None, comm) -> None:
    """Move the checkpoints newer than the latest good one out of the way (``cycle_NNNN.h5.damaged-<time>``): they
    failed verification, and the cycles they held are computed again; the damaged files stay for inspection."""
    if comm.Get_rank() == 0:
        from twin.io.checkpoint import list_checkpoints

        found = [p for _, p in list_checkpoints(exp_dir / "checkpoint")]
        newer = found[found.index(good) + 1:] if good in found else found
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for path in newer:
            aside = path.with_name(f"{path.name}.damaged-{stamp}")
            os.replace(path, aside)
            log.warning("experiment %s: %s kept as %s for inspection (it, or an older checkpoint, does not "
                        "verify or does not continue the one before it); its cycle is computed again", exp_dir.name,
                        path.name, aside.name)
    comm.Barrier()


def _run_experiment(exp_dir: Path, comm, policy, rewrite: bool = False) -> None:
    """Run (or resume) one experiment; ``rewrite``: write its outputs again even where every cycle is done."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.campaign import steps
    from twin.campaign.finalize import finalize
    from twin.campaign.experiment import setup
    from twin.core.comm import split_ensemble
    from twin.core.progress import progress
    from twin.io.checkpoint import list_checkpoints

    rank = comm.Get_rank()
    if layout.stopped_marker(exp_dir).exists():
        log.warning("experiment %s was stopped earlier (%s); skipping it: %s", exp_dir.name,
                    layout.read_json(layout.stopped_marker(exp_dir)).get("reason"), layout.to_run_again(exp_dir))
        return
    s = setup(exp_dir, comm)
    if rewrite and s.cfg.assimilation.method != "4dvar":  # 4D-Var exports its windows' observations itself
        steps.export_observations_again(s)
    if not ctx.is_filter(s.cfg):
        try:
            _run_other_method(exp_dir, comm, s, policy, rewrite)
        finally:
            s.destroy()
        return
    rpm = ctx.ranks_per_member(s.cfg)
    if comm.Get_size() < rpm:
        log.info("experiment %s: %d rank(s) for members of %d ranks: each member runs on all %d", exp_dir.name,
                 comm.Get_size(), rpm, comm.Get_size())
        rpm = comm.Get_size()
    ens = split_ensemble(comm, s.n_members, rpm)
    g = setup(exp_dir, ens.member_comm) if ens.member_comm != MPI.COMM_NULL else None
    s.lazy = True  # diagnostics.nc appended every few seconds (the checkpoints hold every record meanwhile)
    try:
        steps.init_experiment(exp_dir, comm, s)
        K = s.schedule.n_cycles
        good = _resume_point(exp_dir, comm)
        _set_aside(exp_dir, good, comm)
        start = dict((p, k) for k, p in list_checkpoints(exp_dir / "checkpoint"))[good] if good else 0
        if good:
            _say_rank_change(exp_dir, good, comm, start)
        with progress(f"{exp_dir.name}: cycles", K, rank=rank) as bar:
            bar.advance(start, status="resumed" if start else "")
            analysed = None
            # the checkpoints analysed here, for finalize, while the trajectory it holds anyway stays small
            known: dict | None = {} if _trajectory_bytes(s) <= KNOWN_BYTES else None
            due = _CheckpointClock(s.cfg.outputs, K, _trajectory_bytes(s) // (K + 1), comm)
            trail: list = []  # the analyses since the last checkpoint, which the next one holds
            for k in range(start, K):
                # the checkpoint the last analysis wrote, as it wrote it; read from its file when resuming
                prior = analysed or steps.read_prior(s, k, comm)
                mine = [m for m in (ens.members if g is not None else []) if prior.alive[m]]
                bar.members(len(mine))
                forecasts, stopping, error = _forecast_members(exp_dir, k, mine, g, policy, prior.states,
                                                               prior.params, bar)
                outcomes = comm.allgather((stopping, error))
                error = next((e for _, e in outcomes if e), "")
                if error:  # not a model's failure (no retry, no drop): the experiment fails on every rank
                    raise TwinError(error)
                stopping = {m: why for part, _ in outcomes for m, why in part.items()}
                if stopping:
                    reason = ("member(s) " + ", ".join(f"{m} ({why})" for m, why in sorted(stopping.items()))
                              + f" failed in cycle {k} (policy: stop)")
                    if trail:  # the cycles analysed since the last checkpoint are kept
                        steps.write_held(s, analysed, trail)
                    if rank == 0:
                        layout.write_json(layout.stopped_marker(exp_dir), {"cycle": k, "reason": reason})
                    log.error("experiment %s stopped: %s", exp_dir.name, reason)
                    return
                # every rank gets every member's forecast (each group's first rank holds its members')
                forecasts = {m: x for part in comm.allgather(forecasts) for m, x in part.items()}
                try:
                    write = due(k, len(trail))
                    analysed = steps.analyse(exp_dir, k, comm, s, min_members=policy.min_members,
                                             forecasts=forecasts, prior=prior, write=write, trail=trail)
                    if write:
                        trail = []
                        due.written()
                    else:
                        trail.append(analysed)
                    if known is not None and analysed is not None:  # its states only (members x state)
                        known[k + 1] = dataclasses.replace(analysed, states=np.array(analysed.states, dtype=float),
                                                           params=[])
                except WorkflowError as exc:
                    if trail:
                        steps.write_held(s, analysed, trail)
                    if rank == 0:
                        layout.write_json(layout.stopped_marker(exp_dir), {"cycle": k, "reason": str(exc)})
                    log.error("experiment %s stopped: %s", exp_dir.name, exc)
                    return
                bar.advance(status=f"cycle {k}")
        s.flush_diagnostics()
        # the analyses of this run from memory, the earlier ones (a resume) from their checkpoints or trails
        finalize(exp_dir, comm, s, fresh=rewrite or start < K, known=known)
    finally:
        if s.pending:
            try:
                s.flush_diagnostics()
            except Exception as exc:  # noqa: BLE001 - the error that ended the experiment is the one to report
                log.warning("experiment %s: diagnostics.nc not brought up to date (%s); a resume will", exp_dir.name,
                            exc)
        if g is not None:
            g.destroy()
        s.destroy()
        ens.free()


#: bytes of analyses and forecasts held for the next checkpoint's trail (``outputs.checkpoint_every``): a checkpoint
#: is written earlier than the setting says when its trail would hold more
TRAIL_BYTES = 256 * 2**20

#: bytes of posterior and forecast trajectories the online driver keeps for finalize (which holds them in full
#: anyway) rather than reading every checkpoint back at the end
KNOWN_BYTES = 256 * 2**20


class _CheckpointClock:
    """When the online driver writes its restart checkpoint (``outputs.checkpoint_every`` / ``checkpoint_seconds``):
    after cycle ``k`` when it is the last, when the trail held since the last checkpoint would outgrow
    :data:`TRAIL_BYTES` (the memory it holds until written), and at every ``checkpoint_every``-th cycle or, without
    it, once ``checkpoint_seconds`` of wall-clock time have passed since the last checkpoint. Rank 0's clock decides
    for every rank (a checkpoint is written collectively)."""

    def __init__(self, outputs, n_cycles: int, cycle_bytes: int, comm) -> None:
        from twin.core.interval import Interval

        self.every = outputs.checkpoint_every
        seconds = outputs.CHECKPOINT_SECONDS if outputs.checkpoint_seconds is None else outputs.checkpoint_seconds
        self.interval = Interval(seconds, comm)
        self.n_cycles, self.cycle_bytes = n_cycles, cycle_bytes

    def __call__(self, k: int, held: int) -> bool:
        if k + 1 == self.n_cycles or (held + 1) * self.cycle_bytes > TRAIL_BYTES:
            return True
        if self.every is not None:
            return (k + 1) % self.every == 0
        return self.interval.due()

    def written(self) -> None:
        self.interval.reset()


def _trajectory_bytes(s) -> int:
    """Bytes of an experiment's posterior and forecast trajectories: members x cycles x state, twice."""
    grid = s.get_model().grid
    return 16 * s.n_members * (s.schedule.n_cycles + 1) * grid.size * grid.dof


def _run_other_method(exp_dir: Path, comm, s, policy, rewrite: bool = False) -> None:
    """ES-MDA (:mod:`twin.campaign.smoother`) or cycled 4D-Var (:mod:`twin.campaign.variational`); a run that
    cannot continue leaves ``stopped.json`` like a filter campaign."""
    from twin.campaign import smoother, variational

    run = variational.run_experiment if s.cfg.assimilation.method == "4dvar" else smoother.run_experiment
    try:
        run(exp_dir, comm, s, policy, rewrite)
    except WorkflowError as exc:
        if comm.Get_rank() == 0:
            layout.write_json(layout.stopped_marker(exp_dir), {"reason": str(exc)})
        log.error("experiment %s stopped: %s", exp_dir.name, exc)


def _forecast_members(exp_dir: Path, cycle: int, members: list[int], s, policy, states, params,
                      bar) -> tuple[dict[int, Any], dict[int, str], str]:
    """The forecasts of a group's live ``members`` over cycle ``cycle``: ``({member: whole state}, stopping, error)``,
    the states on the group's first rank, ``stopping`` the members that kept failing under the policy ``stop`` with
    their last failure, ``error`` the reason when a member's forecast raised anything but a model's failure (then the
    forecasts stop; the caller fails the experiment on every rank).

    Members whole on one rank go through the model's batched forecast at once (:func:`twin.campaign.steps
    .batched_forecast`, bitwise the solver's numbers); the others, those of a model without one, and any member
    whose batched forecast is not finite run one by one on the model's solver (:func:`_forecast_with_retries`),
    which reports and handles a failure as the policy says."""
    from twin.campaign import steps

    forecasts: dict[int, Any] = {}
    rest = list(members)
    if members:
        t_start = time.time()
        try:
            batch = steps.batched_forecast(s, cycle, [states[m] for m in members], [params[m] for m in members])
        except Exception as exc:  # noqa: BLE001 - each member's own forecast reports it (its retries handle it)
            log.debug("experiment %s: batched forecast of cycle %d failed (%s); members one by one", exp_dir.name,
                      cycle, failure_reason(exc))
            batch = None
        if batch is not None:
            rest = [m for m, x in zip(members, batch) if not np.all(np.isfinite(x))]
            forecasts = {m: x for m, x in zip(members, batch) if m not in rest}
            if forecasts:  # one task-log line for the batch (a line per member cost more than its arithmetic)
                s.record("forecast", "done", t_start, cycle=cycle, members=sorted(forecasts))
            for _ in forecasts:
                bar.member_done()
    stopping: dict[int, str] = {}
    for m in rest:
        try:
            done, x = _forecast_with_retries(exp_dir, cycle, m, s, policy, states[m], params[m])
        except (Exception, SystemExit, GeneratorExit) as exc:  # noqa: BLE001 - a plugin's own error: on every rank
            return forecasts, stopping, f"member {m}'s forecast in cycle {cycle} raised {failure_reason(exc)}"
        if not done:
            stopping[m] = x
        elif x is not None and s.rank == 0:
            forecasts[m] = x
        bar.member_done()
    return forecasts, stopping, ""


def _forecast_with_retries(exp_dir: Path, cycle: int, member: int, s, policy, state, params):
    """Forecast one member on its group, in memory: ``(True, whole state)``, ``(True, None)`` when the member is
    dropped (policy ``drop``: marked failed), ``(False, its last failure)`` if it keeps failing and the policy is
    ``stop``."""
    from twin.campaign import steps

    for attempt in range(policy.retries + 1):
        t_start = time.time()
        try:
            x = steps.advance_member(s, cycle, state, params)
            s.record("forecast", "done", t_start, cycle=cycle, member=member)
            return True, x
        except (SolverError, ModelError) as exc:
            log.warning("experiment %s: member %d failed in cycle %d (attempt %d of %d): %s", exp_dir.name, member,
                        cycle, attempt + 1, policy.retries + 1, exc, extra={"rank_local": True})
            reason = str(exc)
    if policy.on_member_failure == "stop":
        return False, reason
    if s.comm.Get_rank() == 0:
        steps.mark_failed(exp_dir, cycle, member, reason)
    return True, None
