"""Online mode: every experiment of a campaign inside one MPI job, members over sub-communicators.

The job's ranks are split into groups of ``ranks_per_member`` (:func:`twin.core.comm.split_ensemble`); in each cycle
every group forecasts its members (:func:`twin.campaign.steps.forecast_member` on the group's communicator), then all
ranks run the analysis (:func:`twin.campaign.steps.analyse`). The steps and files are those of workflow mode, so the
two modes give the same analysis for the same seed, and either can resume a run directory the other started.

Failure policy (``experiments`` section): a member forecast that fails (SolverError, ModelError) is tried again
``retries`` times; then it is dropped (``drop``) or the experiment stops (``stop``) and the next one runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from twin.campaign import layout
from twin.campaign.experiments import experiments_section, prepare_experiments
from twin.campaign.status import write_heartbeat
from twin.core.errors import ModelError, SolverError, WorkflowError
from twin.core.log import get_logger, setup_logging

log = get_logger("twin.campaign.online")


def run_online(loaded, comm, run_dir, *, experiments=None, only: str | None = None,
               verbose: bool = False) -> list[Path]:
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
    """
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
    setup_logging(rank, size, verbose, logfile=str(run_dir / "twin.log"))
    if rank == 0:
        write_heartbeat(run_dir)
    log.info("campaign '%s' online on %d rank(s): %d experiment(s) in %s", loaded.config.campaign.name, size,
             len(dirs), run_dir)
    t0 = time.perf_counter()
    try:
        for d in dirs:
            _run_experiment(d, comm, experiments)
    finally:
        if rank == 0:
            write_heartbeat(run_dir, "finished")
    log.info("campaign done in %.1f s", time.perf_counter() - t0)
    return dirs


def _run_experiment(exp_dir: Path, comm, policy) -> None:
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.campaign import steps
    from twin.campaign.finalize import finalize
    from twin.core.comm import split_ensemble
    from twin.core.progress import progress
    from twin.io.checkpoint import latest_good_checkpoint, list_checkpoints

    rank = comm.Get_rank()
    if layout.stopped_marker(exp_dir).exists():
        log.warning("experiment %s was stopped earlier (%s); skipping it", exp_dir.name,
                    layout.read_json(layout.stopped_marker(exp_dir)).get("reason"))
        return
    s = steps.setup(exp_dir, comm)
    if not ctx.is_filter(s.cfg):
        try:
            _run_other_method(exp_dir, comm, s, policy)
        finally:
            s.destroy()
        return
    rpm = ctx.ranks_per_member(s.cfg)
    if comm.Get_size() < rpm:
        log.info("experiment %s: %d rank(s) for members of %d ranks: each member runs on all %d", exp_dir.name,
                 comm.Get_size(), rpm, comm.Get_size())
        rpm = comm.Get_size()
    ens = split_ensemble(comm, s.n_members, rpm)
    g = steps.setup(exp_dir, ens.member_comm) if ens.member_comm != MPI.COMM_NULL else None
    try:
        steps.init_experiment(exp_dir, comm, s)
        K = s.schedule.n_cycles
        good = latest_good_checkpoint(exp_dir / "checkpoint", comm)
        start = dict((p, k) for k, p in list_checkpoints(exp_dir / "checkpoint"))[good] if good else 0
        with progress(f"{exp_dir.name}: cycles", K, rank=rank) as bar:
            bar.advance(start, status="resumed" if start else "")
            for k in range(start, K):
                with steps.reader(layout.checkpoint_file(exp_dir, k), comm) as r:
                    alive = r.read_array("alive")
                stop = 0
                for m in (ens.members if g is not None else []):
                    if alive[m] and not _forecast_with_retries(exp_dir, k, m, g, policy):
                        stop = 1
                if comm.allreduce(stop, op=MPI.MAX):
                    reason = f"a member forecast failed in cycle {k} (policy: stop)"
                    if rank == 0:
                        layout.write_json(layout.stopped_marker(exp_dir), {"cycle": k, "reason": reason})
                    log.error("experiment %s stopped: %s", exp_dir.name, reason)
                    return
                comm.Barrier()
                try:
                    steps.analyse(exp_dir, k, comm, s, min_members=policy.min_members)
                except WorkflowError as exc:
                    if rank == 0:
                        layout.write_json(layout.stopped_marker(exp_dir), {"cycle": k, "reason": str(exc)})
                    log.error("experiment %s stopped: %s", exp_dir.name, exc)
                    return
                bar.advance(status=f"cycle {k}")
        finalize(exp_dir, comm, s)
    finally:
        if g is not None:
            g.destroy()
        s.destroy()
        ens.free()


def _run_other_method(exp_dir: Path, comm, s, policy) -> None:
    """ES-MDA (:mod:`twin.campaign.smoother`) or cycled 4D-Var (:mod:`twin.campaign.variational`); a run that
    cannot continue leaves ``stopped.json`` like a filter campaign."""
    from twin.campaign import smoother, variational

    run = variational.run_experiment if s.cfg.assimilation.method == "4dvar" else smoother.run_experiment
    try:
        run(exp_dir, comm, s, policy)
    except WorkflowError as exc:
        if comm.Get_rank() == 0:
            layout.write_json(layout.stopped_marker(exp_dir), {"reason": str(exc)})
        log.error("experiment %s stopped: %s", exp_dir.name, exc)


def _forecast_with_retries(exp_dir: Path, cycle: int, member: int, s, policy) -> bool:
    """Forecast one member on its group; ``False`` if it keeps failing and the policy is ``stop``."""
    from twin.campaign import steps

    for attempt in range(policy.retries + 1):
        try:
            steps.forecast_member(exp_dir, cycle, member, s.comm, s)
            return True
        except (SolverError, ModelError) as exc:
            log.warning("experiment %s: member %d failed in cycle %d (attempt %d of %d): %s", exp_dir.name, member,
                        cycle, attempt + 1, policy.retries + 1, exc)
            reason = str(exc)
    if policy.on_member_failure == "stop":
        return False
    if s.comm.Get_rank() == 0:
        steps.mark_failed(exp_dir, cycle, member, reason)
    return True
