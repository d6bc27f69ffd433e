"""The file-based steps of an assimilation campaign, shared by online mode and workflow mode.

Every step is a function over an experiment directory (:mod:`twin.campaign.layout`) and a communicator, reads its
inputs from files, writes its output atomically and is *idempotent*: a step whose output already exists and passes
verification does nothing (and says so in the task log), so a resumed campaign recomputes nothing that finished.

* :func:`init_experiment` — the nature run of the twin experiment and its synthetic observations
  (``observations.h5``), and the prior ensemble drawn from the parameter priors (checkpoint 0);
* :func:`forecast_member` — member ``m`` of checkpoint ``k`` advanced over cycle ``k`` on ``comm``
  (``forecast/cycle_k/member_m.h5``);
* :func:`analyse` — the forecasts of cycle ``k`` and the observations of ``t_{k+1}`` through the configured ensemble
  analysis (prior inflation, ETKF/EnKF/LETKF, posterior relaxation, adaptive inflation), checkpoint ``k + 1`` and one
  record appended to ``diagnostics.nc``;
* :func:`twin.campaign.finalize.finalize` — ``posterior.nc`` and ``forecast.nc``.

The analysis gathers the live members' control vectors (state and estimable parameters, :mod:`twin.assimilation
.transforms`) on every rank of ``comm`` and computes the transform from them redundantly: the observed ensemble
``H E`` is a sparse product over whole states, so the analysis is bitwise the same on any number of ranks and in
either mode. That holds the ensemble (``n x N``) on every rank, which suits the campaign sizes this is built for;
very large states should use the block-distributed :class:`twin.assimilation.cycle.EnsembleCycle` in one MPI job.

Dropped members (failure policy ``drop``) keep their last analysis in the checkpoints, flagged in the ``alive`` array,
and are never forecast or analysed again.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import guarded
from twin.campaign import layout
from twin.campaign.state import field_grid
from twin.core.errors import AssimilationError, OutputError, WorkflowError
from twin.core.log import get_logger

log = get_logger("twin.campaign")

#: Diagnostics written by the analysis that are not in twin.io.netcdf.DIAGNOSTICS.
EXTRA_DIAGNOSTICS = {
    "crps": ("continuous ranked probability score of the analysis ensemble", "{state}"),
    "coverage_90": ("fraction of state entries whose truth lies inside the analysis ensemble's 5-95 % interval",
                    "1"),
    "innovation_expected_std": ("innovation standard deviation expected from R and the forecast spread", "{state}"),
    "members": ("live ensemble members", "1"),
}


@dataclass
class Setup:
    """An experiment's configuration and the objects built from it on one communicator (reused across steps).

    Build with :func:`setup`; call :meth:`destroy` at the end (frees the model's PETSc objects).
    """

    exp_dir: Path
    loaded: Any
    comm: Any
    model: Any = None
    _obs: Any = field(default=None, repr=False)
    _schedule: Any = field(default=None, repr=False)

    @property
    def cfg(self):
        return self.loaded.config

    @property
    def name(self) -> str:
        return self.exp_dir.name

    def get_model(self):
        if self.model is None:
            self.model = ctx.build_model(self.cfg, self.comm)
        return self.model

    @property
    def schedule(self):
        if self._schedule is None:
            self._schedule = ctx.schedule(self.cfg, self.get_model())
        return self._schedule

    @property
    def observations(self):
        if self._obs is None:
            self._obs = ctx.observations(self.cfg, self.get_model())
        return self._obs

    @property
    def n_members(self) -> int:
        return ctx.ensemble_size(self.cfg)

    def provenance(self, parent: Path | None = None, checksum: str = ""):
        from twin.io.provenance import collect

        return collect(self.comm, config_text=self.loaded.text, sensitive=self.cfg.campaign.sensitive,
                       parent=parent, parent_checksum=checksum, relative_to=self.exp_dir)

    def destroy(self) -> None:
        if self.model is not None:
            self.model.destroy()
            self.model = None


def setup(exp_dir, comm) -> Setup:
    """Load ``<exp_dir>/experiment.yaml`` (validated like a campaign file) for steps on ``comm``."""
    from twin.config.loader import load_campaign

    exp_dir = Path(exp_dir)
    loaded = load_campaign(layout.config_file(exp_dir))
    ctx.assimilation_section(loaded.config)
    return Setup(exp_dir, loaded, comm)


def _rank(comm) -> int:
    return comm.Get_rank() if comm is not None else 0


def _record(s: Setup, task: str, outcome: str, t_start: float, **extra) -> None:
    if _rank(s.comm) == 0:
        layout.log_task(s.exp_dir, {"task": task, "outcome": outcome, "seconds": time.time() - t_start,
                                    "ranks": s.comm.Get_size() if s.comm is not None else 1, **extra})


#: Files smaller than this are written by rank 0 and read independently by every rank: opening a file with the
#: ``mpio`` driver costs ~0.2 s per collective open on a laptop, far more than moving a few MB through rank 0.
PARALLEL_HDF5_BYTES = 64 * 2**20


def parallel_io(path_or_bytes) -> bool | None:
    """``False`` (serial HDF5) for small files, ``None`` (parallel when available) for large ones."""
    size = Path(path_or_bytes).stat().st_size if not isinstance(path_or_bytes, int) else path_or_bytes
    return None if size > PARALLEL_HDF5_BYTES else False


def reader(path, comm, verify: bool = True):
    """A verified :class:`~twin.io.checkpoint.CheckpointReader` with serial or parallel HDF5 by file size."""
    from twin.io.checkpoint import CheckpointReader

    parallel = parallel_io(path) if Path(path).is_file() else False
    if comm is not None and comm.Get_size() > 1:
        parallel = comm.bcast(parallel, root=0)
    return CheckpointReader(path, comm, verify=verify, parallel=parallel)


def is_valid_checkpoint(path, comm) -> bool:
    """Whether ``path`` exists and passes full verification (collective)."""
    exists = Path(path).is_file()
    if comm is not None and comm.Get_size() > 1:
        exists = comm.bcast(exists, root=0)
    if not exists:
        return False
    try:
        reader(path, comm).close()
    except OutputError as exc:
        log.warning("will recompute: %s", exc)
        return False
    return True


def _vecs(grid, arrays) -> list:
    out = []
    for a in arrays:
        v = grid.create_global()
        grid.set_global(np.asarray(a, dtype=float), v)
        out.append(v)
    return out


def _destroy(vecs) -> None:
    for v in vecs:
        v.destroy()


# -- init ------------------------------------------------------------------------------------------------------------
def init_experiment(exp_dir, comm, s: Setup | None = None) -> bool:
    """Nature run, synthetic observations and the prior ensemble (checkpoint 0). Collective on ``comm``.

    Returns ``False`` when both files already existed and verified (nothing done).
    """
    from twin.assimilation.cycle import ModelForecast
    from twin.io.checkpoint import write_checkpoint

    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        obs_path, ck0 = layout.observations_file(s.exp_dir), layout.checkpoint_file(s.exp_dir, 0)
        if _rank(comm) == 0:
            (s.exp_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        if comm is not None:
            comm.Barrier()
        if is_valid_checkpoint(obs_path, comm) and is_valid_checkpoint(ck0, comm):
            _record(s, "init", "skipped", t_start)
            return False
        model, sch, obs = s.get_model(), s.schedule, s.observations
        N = s.n_members
        # Nature run observed with noise (twin experiment). Its initial state is an independent draw from the prior
        # ensemble's distribution (configured state plus background noise, from the TRUTH stream), not the prior's
        # centre: a truth at the centre of the prior flatters every score (the members are drawn around the
        # configured state too, :func:`twin.campaign.context.initial_member`).
        forecast = ModelForecast(model)
        try:
            x = ctx.true_initial_state(s.cfg, model).reshape(-1, 1)
            from twin.campaign.experiments import draw_truth

            # experiments.truth (or replicates): the true parameters drawn from their priors; without it the
            # configured values are the truth
            draw_truth(s.cfg, model)
            true_params = ctx.truth_parameters(model)
            # ModelForecast takes one column per member: (1,) for a scalar; the true fields are the model's own
            # configured values already (and are set whole, on any number of ranks, only by ctx)
            p = {k: np.array([float(v)]) for k, v in true_params.items() if not np.ndim(v)}
            gen = ctx.rng(s.cfg, ctx.TRUTH, 0)
            truth, ys, times = [x[:, 0].copy()], [], [sch.window(0)[0]]
            for k in range(sch.n_cycles):
                t0, t1 = sch.window(k)
                x = forecast(x, p, t0, t1)
                truth.append(x[:, 0].copy())
                ys.append(obs.perturbed(x[:, 0], gen))
                times.append(t1)
        finally:
            forecast.destroy()
        # Sensor faults declared for the twin experiment (observations[i].fault): added to the synthetic data only
        from twin.observations.networks import fault_offsets

        ys = list(np.asarray(ys) + fault_offsets(s.cfg.assimilation.observations, obs, sch.n_cycles))
        prov = s.provenance()
        write_checkpoint(obs_path, comm, cycle=0, time=times[0], provenance=prov, parallel=False,
                         arrays={"truth": np.array(truth), "observations": np.array(ys),
                                 "error_std": obs.error_std, "times": np.array(times)},
                         meta={"kind": "observations", "truth_parameters": {k: np.asarray(v).tolist() for k, v in
                                                                            true_params.items()}},
                         sensitive=s.cfg.campaign.sensitive)
        # Prior ensemble: parameters from their priors, states around the configured initial state.
        members = [ctx.initial_member(s.cfg, model, m) for m in range(N)]
        _write_ensemble_checkpoint(s, ck0, 0, times[0], [m[0] for m in members], [m[1] for m in members],
                                   np.ones(N, dtype=bool), {"inflation": s.cfg.assimilation.inflation.multiplicative,
                                                            "dropped": {}, "history": []}, prov)
        _record(s, "init", "done", t_start)
        log.info("experiment %s: %d members, %d cycles of %g model time units initialised", s.name, N,
                 sch.n_cycles, sch.every * sch.dt)
        return True
    finally:
        if own:
            s.destroy()


def _write_ensemble_checkpoint(s: Setup, path, cycle: int, t: float, states, params, alive, meta, prov) -> str:
    from twin.io.checkpoint import write_checkpoint

    model = s.get_model()
    grid = model.grid
    vecs = _vecs(grid, states)
    parameters: dict[str, Any] = {}
    field_vecs: list = []
    try:
        # field parameters live on their own (dof-1) grids, kept alive until the checkpoint is written
        with ExitStack() as grids:
            for p in model.estimable():
                values = [pm[p.name] for pm in params]
                if p.is_field:
                    pgrid = grids.enter_context(field_grid(model, p.name))
                    fv = _vecs(pgrid, values)
                    field_vecs += fv
                    parameters[p.name] = (pgrid, fv)
                else:
                    parameters[p.name] = np.array([float(np.asarray(v).reshape(())) for v in values])
            nbytes = 8 * len(states) * grid.size * grid.dof
            return write_checkpoint(path, s.comm, cycle=cycle, time=t, fields={model.name: (grid, vecs)},
                                    parallel=parallel_io(nbytes),
                                    parameters=parameters, arrays={"alive": np.asarray(alive, dtype=bool)},
                                    meta=meta, provenance=prov, sensitive=s.cfg.campaign.sensitive)
    finally:
        _destroy(vecs)
        _destroy(field_vecs)


def _read_members(s: Setup, reader, members) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Whole states and physical parameter values of ``members`` from an ensemble checkpoint (every rank)."""
    model = s.get_model()
    states_all = reader.read_field(model.name)
    scalars = reader.scalar_parameters
    fields = {p.name: reader.read_field(p.name, "parameters") for p in model.estimable() if p.is_field}
    states, params = [], []
    for m in members:
        states.append(states_all[m].ravel())
        pm = {}
        for p in model.estimable():
            pm[p.name] = fields[p.name][m].ravel() if p.is_field else float(np.asarray(scalars[p.name])[m])
        params.append(pm)
    return states, params


# -- forecast --------------------------------------------------------------------------------------------------------
def forecast_member(exp_dir, cycle: int, member: int, comm, s: Setup | None = None) -> bool:
    """Advance member ``member`` of checkpoint ``cycle`` over the cycle and write its forecast file. Collective.

    Returns ``False`` when a verified forecast file already existed (nothing done).

    Raises
    ------
    SolverError
        When the model's solve fails (the caller's failure policy decides what happens to the member).
    WorkflowError
        When the member was dropped earlier or the checkpoint of the cycle is missing.
    """
    from twin.io.checkpoint import write_checkpoint

    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        out = layout.forecast_file(s.exp_dir, cycle, member)
        if is_valid_checkpoint(out, comm):
            _record(s, "forecast", "skipped", t_start, cycle=cycle, member=member)
            return False
        if _rank(comm) == 0:
            out.parent.mkdir(parents=True, exist_ok=True)
        model, sch = s.get_model(), s.schedule
        if not 0 <= cycle < sch.n_cycles:
            raise WorkflowError(f"experiment {s.name}: cycle {cycle} is outside 0..{sch.n_cycles - 1}")
        ck = layout.checkpoint_file(s.exp_dir, cycle)
        if not ck.is_file():
            raise WorkflowError(f"experiment {s.name}: member {member} cannot start cycle {cycle}: checkpoint {ck} "
                                "does not exist")
        with reader(ck, comm) as r:
            alive = r.read_array("alive")
            if not 0 <= member < alive.size:
                raise WorkflowError(f"experiment {s.name}: no member {member} (ensemble of {alive.size})")
            if not alive[member]:
                raise WorkflowError(f"experiment {s.name}: member {member} was dropped before cycle {cycle}")
            (state,), (params,) = _read_members(s, r, [member])
            parent, checksum = r.path, r.checksum
        ctx.set_member_parameters(model, params)
        vec = model.create_state()
        field_vecs = []
        # field parameters live on their own (dof-1) grids, kept alive until the file is written
        with ExitStack() as grids:
            try:
                model.grid.set_global(state, vec)
                t0, t1 = sch.window(cycle)
                model.advance(vec, t0, t1)
                parameters: dict[str, Any] = {}
                for p in model.estimable():
                    if p.is_field:
                        pgrid = grids.enter_context(field_grid(model, p.name))
                        fv = _vecs(pgrid, [params[p.name]])
                        field_vecs += fv
                        parameters[p.name] = (pgrid, fv[0])
                    else:
                        parameters[p.name] = params[p.name]
                write_checkpoint(out, comm, cycle=cycle, time=t1, fields={model.name: (model.grid, vec)},
                                 parallel=parallel_io(8 * model.grid.size * model.grid.dof),
                                 parameters=parameters, meta={"member": member},
                                 provenance=s.provenance(parent, checksum), sensitive=s.cfg.campaign.sensitive)
            finally:
                vec.destroy()
                _destroy(field_vecs)
        _record(s, "forecast", "done", t_start, cycle=cycle, member=member)
        return True
    finally:
        if own:
            s.destroy()


def mark_failed(exp_dir, cycle: int, member: int, reason: str) -> None:
    """Record that ``member`` is dropped in ``cycle`` (policy ``drop``); the next analysis leaves it out."""
    layout.write_json(layout.failed_marker(exp_dir, cycle, member), {"cycle": cycle, "member": member,
                                                                      "reason": reason})


# -- analysis --------------------------------------------------------------------------------------------------------
def analyse(exp_dir, cycle: int, comm, s: Setup | None = None, *, min_members: int = 2) -> bool:
    """Analysis of cycle ``cycle``: checkpoint ``cycle + 1`` and one diagnostics record. Collective.

    Members with a failure marker in this cycle are dropped; every other live member must have its forecast.
    Returns ``False`` when a verified checkpoint ``cycle + 1`` already existed.

    Raises
    ------
    WorkflowError
        When a live member's forecast is missing, or fewer than ``min_members`` members are left.
    AssimilationError
        When the analysis produced non-finite values.
    """
    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        if not ctx.is_filter(s.cfg):
            raise WorkflowError(f"experiment {s.name}: method {s.cfg.assimilation.method!r} has no per-cycle ensemble "
                                "analysis; it runs online ('twin run' with resources.workers: 1)")
        out = layout.checkpoint_file(s.exp_dir, cycle + 1)
        if is_valid_checkpoint(out, comm):
            _record(s, "analyse", "skipped", t_start, cycle=cycle)
            return False
        model, sch, obs = s.get_model(), s.schedule, s.observations
        ck = layout.checkpoint_file(s.exp_dir, cycle)
        with reader(ck, comm) as r:
            alive = r.read_array("alive").astype(bool)
            meta = r.meta
            prior_states, prior_params = _read_members(s, r, range(alive.size))
            parent, checksum = r.path, r.checksum
        done, failed = layout.member_files(s.exp_dir, cycle)
        dropped = dict(meta.get("dropped", {}))
        for m, reason in failed.items():
            if alive[m]:
                alive[m] = False
                dropped[str(m)] = {"cycle": cycle, "reason": reason}
                log.warning("experiment %s: member %d dropped in cycle %d: %s", s.name, m, cycle, reason)
        live = [int(m) for m in np.flatnonzero(alive)]
        missing = [m for m in live if m not in done]
        if missing:
            raise WorkflowError(f"experiment {s.name}: cycle {cycle} cannot be analysed: the forecasts of members "
                                f"{missing} are missing (run them first, or mark them failed)")
        if len(live) < min_members:
            raise WorkflowError(f"experiment {s.name}: only {len(live)} live member(s) left in cycle {cycle} (at least "
                                f"{min_members} needed); dropped: {sorted(int(k) for k in dropped)}")
        states, params = [], []
        for m in live:
            with reader(layout.forecast_file(s.exp_dir, cycle, m), comm) as r:
                (x,), (p,) = _read_members_single(s, r)
            states.append(x)
            params.append(p)
        with reader(layout.observations_file(s.exp_dir), comm) as r:
            truth = r.read_array("truth")[cycle + 1]
            y = r.read_array("observations")[cycle]
            err = r.read_array("error_std")
        control = ctx.control_vector(model)
        E = control.pack(np.array(states).T, {k: np.array([p[k] for p in params]).T for k in params[0]}
                         if params[0] else {})
        factor = float(meta.get("inflation", 1.0))
        guard = guarded.restore(s.cfg, int(np.size(y)), meta.get("guardrails"), cycle)
        Ea, record, factor = analysis_step(s.cfg, model, obs, control, E, y, err, truth, cycle, factor, guard=guard,
                                           time=float(sch.window(cycle)[1]))
        record.update(cycle=cycle, time=float(sch.window(cycle)[1]))
        new_states, new_params = control.unpack(Ea)
        for j, m in enumerate(live):
            prior_states[m] = new_states[:, j]
            for name, values in new_params.items():
                prior_params[m][name] = values[..., j] if np.ndim(values) > 1 else float(np.asarray(values)[j])
        history = list(meta.get("history", [])) + [record]
        new_meta = {"inflation": factor, "dropped": dropped, "history": history}
        if guard is not None:
            new_meta["guardrails"] = guarded.snapshot(guard)
        _write_ensemble_checkpoint(s, out, cycle + 1, float(sch.window(cycle)[1]), prior_states, prior_params,
                                   alive, new_meta, s.provenance(parent, checksum))
        if _rank(comm) == 0:
            guarded.write_flags(s.exp_dir, new_meta.get("guardrails"))
        append_diagnostics(s, history)
        _record(s, "analyse", "done", t_start, cycle=cycle)
        log.info("experiment %s cycle %d: rmse %.4g -> %.4g, spread %.4g -> %.4g (%d members)", s.name, cycle,
                 record["rmse_forecast"], record["rmse"], record["spread_forecast"], record["spread"], len(live))
        return True
    finally:
        if own:
            s.destroy()


def _read_members_single(s: Setup, reader):
    model = s.get_model()
    state = reader.read_field(model.name).ravel()
    scalars = reader.scalar_parameters
    p = {}
    for par in model.estimable():
        p[par.name] = (reader.read_field(par.name, "parameters").ravel() if par.is_field
                       else float(np.asarray(scalars[par.name])))
    return [state], [p]


def analysis_step(cfg, model, obs, control, E: np.ndarray, y: np.ndarray, err: np.ndarray, truth: np.ndarray,
                  cycle: int, factor: float, *, guard=None,
                  time: float = 0.0) -> tuple[np.ndarray, dict[str, float], float]:
    """One analysis of whole control vectors ``E`` (n_control x N) with the configured method, exactly as in
    :meth:`twin.assimilation.cycle.EnsembleCycle.run`: prior inflation, analysis, posterior relaxation, adaptive
    factor. Returns the analysis, the diagnostics record and the next inflation factor.

    With ``guard`` (:func:`twin.campaign.guarded.restore`) the guardrails check the inflated forecast first, their
    statistics join the record, and only the sensors they leave active are assimilated (``time``: the cycle's
    analysis time, for the flags)."""
    from twin.assimilation import diagnostics as diag

    N = E.shape[1]
    meth = ctx.method(cfg, N)
    n = control.n_state
    Y = np.asarray(obs.matrix @ E[:n])
    inn = diag.innovation_stats(Y, y, err)
    rec = {"rmse_forecast": diag.rmse(E[:n], truth), "spread_forecast": diag.spread(E[:n]),
           "innovation_mean": inn.mean, "innovation_std": float(np.sqrt(inn.variance)),
           "innovation_expected_std": float(np.sqrt(inn.expected_variance)), "inflation": factor,
           "n_obs": int(y.size), "members": int(N)}
    infl = meth.inflation
    Ef, Yf = infl.prior(E, Y, factor)
    bad = [m for m in range(N) if not (np.all(np.isfinite(Ef[:, m])) and np.all(np.isfinite(Yf[:, m])))]
    if bad:
        # an overflowing inflation or a member whose forecast "succeeded" with non-finite numbers: the linear
        # algebra of the analysis would fail with a bare LinAlgError
        raise AssimilationError(f"cycle {cycle}: the inflated forecast of member(s) {bad[:10]} holds non-finite "
                                f"values (inflation factor {factor:g}); lower the inflation or check the model")
    local = ctx.local_context(cfg, model, obs, control)
    try:
        if guard is None:
            Ea = meth.analysis(Ef, Yf, y, err, ctx.rng(cfg, ctx.ANALYSIS, cycle), local)
            Ea = infl.posterior(Ea, Ef)
            factor = infl.updated_factor(factor, Y, y, err)
        else:
            rows = guarded.check(guard, cycle, time, Yf, y, err, Ef[:n], truth)
            rec.update(guard.diagnostics())
            if local is not None:
                local = local.observed(rows)
            r = np.broadcast_to(np.asarray(err, dtype=float), np.shape(y))
            Ea = meth.analysis(Ef, Yf[rows], y[rows], r[rows], ctx.rng(cfg, ctx.ANALYSIS, cycle), local)
            Ea = infl.posterior(Ea, Ef)
            factor = infl.updated_factor(factor, Y[rows], y[rows], r[rows])
    except np.linalg.LinAlgError as exc:
        raise AssimilationError(f"cycle {cycle}: the analysis' linear algebra failed ({exc}) with inflation factor "
                                f"{factor:g} and {N} members; lower the inflation or check the observation "
                                "errors") from None
    if not np.all(np.isfinite(Ea)):
        raise AssimilationError(f"analysis of cycle {cycle} produced non-finite values; check inflation and "
                                "observation errors")
    rec.update(rmse=diag.rmse(Ea[:n], truth), spread=diag.spread(Ea[:n]), crps=diag.crps(Ea[:n], truth),
               coverage_90=diag.coverage(Ea[:n], truth, 0.9))
    _, pars = control.unpack(Ea)
    for name, values in pars.items():
        rec[f"parameter_{name}"] = float(np.mean(values))
    return Ea, rec, factor


def append_diagnostics(s: Setup, history: list[dict[str, Any]], meta: dict | None = None) -> None:
    """Make ``diagnostics.nc`` hold exactly the records of ``history``: nothing to do when it does, append the last
    record when it holds the earlier ones, else rebuild it (after a crash between the checkpoint and the append).
    ``meta``: variable metadata beyond the usual diagnostics. Collective."""
    path = s.exp_dir / "diagnostics.nc"
    records = _diagnostics_count(path, s.comm)
    if records == len(history):
        return
    if records == len(history) - 1:
        todo = history[-1:]
    else:
        if _rank(s.comm) == 0 and path.exists():
            path.unlink()
        todo = history
    f = diagnostics_file(s, path)
    f.meta.update(meta or {})
    _, scale = time_encoding(s.get_model())
    for rec in todo:
        values = {k: v for k, v in rec.items() if k not in ("cycle", "time")}
        f.append(rec["time"] * scale, values, cycle=rec["cycle"])


def diagnostics_file(s: Setup, path):
    from twin.io.netcdf import DiagnosticsFile, VariableMeta

    model = s.get_model()
    units = model.state_units[0]
    extra = {k: VariableMeta(ln, u.replace("{state}", units)) for k, (ln, u) in EXTRA_DIAGNOSTICS.items()}
    for p in model.estimable():
        extra[f"parameter_{p.name}"] = VariableMeta(f"ensemble mean of parameter {p.name}", p.units)
    if guarded.settings(s.cfg) is not None:
        from twin.decision.guardrails import diagnostics_variables

        extra.update(diagnostics_variables())
    time_units, _ = time_encoding(model)
    return DiagnosticsFile(path, s.comm, provenance=s.provenance(), variables=extra, state_units=units,
                           time_units=time_units, title=f"twin diagnostics of experiment {s.name}",
                           sensitive=s.cfg.campaign.sensitive)


def time_encoding(model) -> tuple[str, float]:
    """CF time units for the model's time and the factor that converts model time to them."""
    from twin.core.units import compatible, convert
    from twin.io.netcdf import DEFAULT_TIME_UNITS

    if compatible(model.time_units, "s"):
        return DEFAULT_TIME_UNITS, float(convert(1.0, model.time_units, "s"))
    return f"{model.time_units} (model time units)" if model.time_units != "1" else "1", 1.0


def _diagnostics_count(path: Path, comm) -> int:
    count = -1
    if _rank(comm) == 0 and path.exists():
        import netCDF4

        try:
            with netCDF4.Dataset(path, "r") as nc:
                count = len(nc.dimensions["time"])
        except (OSError, KeyError, RuntimeError):
            count = -1
    return comm.bcast(count, root=0) if comm is not None and comm.Get_size() > 1 else count
