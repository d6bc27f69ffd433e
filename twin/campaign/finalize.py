"""The last step of an experiment: the posterior and forecast ensembles as CF NetCDF (:mod:`twin.io.netcdf`).

``posterior.nc`` holds the analysis ensemble at ``t_0 .. t_K`` (``t_0``: the prior ensemble), read from the
checkpoints; ``forecast.nc`` the forecast ensemble at ``t_1 .. t_K``, read from the member forecast files. A member
dropped by the failure policy is missing (NaN) from the cycle it failed in onwards. ``diagnostics.nc`` is written
cycle by cycle by the analysis and rebuilt here if it is incomplete. With guardrails, ``flags.jsonl`` is rewritten from
the last checkpoint; with a ``decision`` section, ``decision.json``, ``prediction.nc`` and ``horizon.nc``
(:mod:`twin.campaign.decide`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np

from twin.campaign import layout
from twin.campaign.checkpoints import CycleStore, is_valid_checkpoint, reader
from twin.campaign.decide import decide
from twin.campaign.experiment import Setup, rank_of, setup
from twin.campaign.free_run import has_truth, write_free_run
from twin.campaign.guarded import write_flags
from twin.campaign.outputs import (
    append_diagnostics,
    cycle_record,
    diagnostics_count,
    diagnostics_file,
    time_encoding,
    write_state_ensemble,
)
from twin.core.errors import WorkflowError
from twin.core.log import get_logger
from twin.models.contract import attributed

log = get_logger("twin.campaign")


#: long_name prefix of the state of a coupled model in files of earlier versions: its components' states one after
#: another (the coordinate an index, not a position; the report does not draw it as a field). Coupled models' files
#: now hold every component's fields on its own coordinates (:func:`twin.campaign.outputs.field_blocks`).
CONCATENATED = "concatenated states of the coupled components"


def outputs_complete(exp_dir) -> bool:
    """Whether the NetCDF outputs of an experiment exist (not verified)."""
    return all((Path(exp_dir) / name).is_file() for name in layout.OUTPUTS)


@attributed("the experiment's outputs and decisions")
def finalize(exp_dir, comm, s: Setup | None = None, *, fresh: bool = False, known: Mapping | None = None) -> bool:
    """Write ``posterior.nc`` and ``forecast.nc`` (and complete ``diagnostics.nc``). Collective.

    Returns ``False`` when the outputs already existed (and verify); ``fresh``: write them anyway (the caller
    computed cycles again, which outputs written before may not hold). ``known``: checkpoints the caller holds in
    memory as :func:`twin.campaign.steps.analyse` returned them (cycle -> :class:`~twin.campaign.steps.Prior`),
    used instead of reading their files (the online driver's; reading a thousand small checkpoints back took longer
    than writing the outputs).

    Raises
    ------
    WorkflowError
        If the last checkpoint of the campaign is missing or does not verify.
    """
    from twin.io.netcdf import verify_netcdf

    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        from twin.campaign.decide import HORIZON_FILE, wants_decision, wants_horizon

        decided = not wants_decision(s.cfg) or ((s.exp_dir / "decision.json").is_file() and (
            not wants_horizon(s.cfg) or (s.exp_dir / HORIZON_FILE).is_file()))
        if comm is not None and comm.Get_size() > 1:
            decided = comm.bcast(decided, root=0)
        if not fresh and decided and outputs_complete(s.exp_dir) and all(verify_netcdf(s.exp_dir / n)[0] for n in layout.OUTPUTS):
            if has_truth(s.exp_dir, comm) and not (s.exp_dir / "free_run.nc").is_file():
                # the free run, written last, failed before (a time limit, its model's error): only it is missing
                write_free_run(s.exp_dir, comm)
                s.record("finalize", "done", t_start)
                return True
            s.record("finalize", "skipped", t_start)
            return False
        model, sch = s.get_model(), s.schedule
        K = sch.n_cycles
        last = layout.checkpoint_file(s.exp_dir, K)
        if not is_valid_checkpoint(last, comm):
            raise WorkflowError(f"experiment {s.name}: cannot finalize before the last cycle's analysis ({last})")
        grid = model.grid
        spatial = tuple(grid.shape[::-1]) + ((grid.dof,) if grid.dof > 1 else ())
        posterior = np.full((s.n_members, K + 1) + spatial, np.nan)
        forecast = np.full((s.n_members, K) + spatial, np.nan)
        history, guard_state = [], None
        # the analyses held in memory, else read from the checkpoint holding them (its own file, or the trail of a
        # later one when the run wrote a checkpoint every outputs.checkpoint_every cycles)
        store = known if isinstance(known, CycleStore) else CycleStore(s, comm, known)
        for k in range(K + 1):
            held = store.get(k)
            if held is None:
                raise WorkflowError(f"experiment {s.name}: no checkpoint holds the analysis of cycle {k} "
                                    f"({layout.checkpoint_file(s.exp_dir, k)} or a later one's trail)")
            alive, meta, kept = np.asarray(held.alive, dtype=bool), held.meta, held.forecast
            posterior[alive, k] = np.asarray(held.states, dtype=float).reshape((-1,) + spatial)[alive]
            record = cycle_record(meta)
            if record is not None:
                history.append(record)
            if k == K:
                guard_state = meta.get("guardrails")
            if kept is not None:  # the online driver's forecasts of cycle k - 1, kept in this checkpoint
                forecast[:, k - 1] = kept.reshape(forecast[:, k - 1].shape)
            elif k > 0:  # a workflow's member files
                for m in layout.member_files(s.exp_dir, k - 1)[0]:
                    with reader(layout.forecast_file(s.exp_dir, k - 1, m), comm) as r:
                        forecast[m, k - 1] = r.read_field(model.name)
        _, scale = time_encoding(model, s.cfg.timeline.calendar_start)
        times = np.array([sch.window(k)[1] for k in range(K)]) * scale
        times0 = np.concatenate([[sch.window(0)[0] * scale], times])
        prov = s.provenance(last)
        n = grid.size * grid.dof
        # whole states in natural order; each component's fields go on its own coordinates (field_blocks)
        write_state_ensemble(s, s.exp_dir / "posterior.nc", posterior.reshape(s.n_members, K + 1, n), times0,
                             kind="posterior", title=f"twin posterior ensemble of experiment {s.name}",
                             provenance=prov)
        write_state_ensemble(s, s.exp_dir / "forecast.nc", forecast.reshape(s.n_members, K, n), times,
                             kind="forecast", title=f"twin forecast ensemble of experiment {s.name}", provenance=prov)
        ok = verify_netcdf(s.exp_dir / "diagnostics.nc")[0] if (s.exp_dir / "diagnostics.nc").exists() else False
        if comm is not None and comm.Get_size() > 1:
            ok = comm.bcast(ok, root=0)
        if not ok or diagnostics_count(s.exp_dir / "diagnostics.nc", s.comm) != len(history):
            if rank_of(comm) == 0 and (s.exp_dir / "diagnostics.nc").exists():
                (s.exp_dir / "diagnostics.nc").unlink()
            append_diagnostics(s, history)
        write_scores(s, history)
        if rank_of(comm) == 0:
            # flags.jsonl from the last checkpoint (a crash may have come between a checkpoint and its flags)
            write_flags(s.exp_dir, guard_state)
        decide(s, comm)
        if has_truth(s.exp_dir, comm):  # the free run is a twin experiment's reference; a real system has none
            write_free_run(s.exp_dir, comm)
        s.record("finalize", "done", t_start)
        log.info("experiment %s: outputs in %s", s.name, s.exp_dir)
        return True
    finally:
        if own:
            s.destroy()


#: per-cycle diagnostics averaged after the burn-in into ``<name>_a`` (DAPPER's ``.a`` suffix: analysis averages)
SCORES = ("rmse", "spread", "crps", "coverage_90")


def write_scores(s: Setup, history: list[dict], burn_in: int | None = None) -> dict[str, float]:
    """Time averages of :data:`SCORES` over the cycles after ``burn_in`` (default ``schedule.burn_in``), as scalar
    variables ``rmse_a``, ``spread_a``, ``crps_a``, ``coverage_90_a`` of ``diagnostics.nc``. Collective."""
    from twin.io.netcdf import VariableMeta

    burn_in = int(s.schedule.burn_in if burn_in is None else burn_in)
    kept = [rec for rec in history if int(rec["cycle"]) >= burn_in]
    f = diagnostics_file(s, s.exp_dir / "diagnostics.nc")
    values, meta = {}, {}
    for name in SCORES:
        series = [float(rec[name]) for rec in kept if name in rec and np.isfinite(rec[name])]
        if not series:
            continue
        values[f"{name}_a"] = float(np.mean(series))
        base = f.meta_of(name)
        meta[f"{name}_a"] = VariableMeta(f"{base.long_name}, averaged over the {len(series)} cycles after the "
                                         f"burn-in of {burn_in}", base.units)
    if values:
        f.write_summary(values, meta)
    return values
