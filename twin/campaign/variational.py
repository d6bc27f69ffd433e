"""Cycled strong-constraint 4D-Var as a campaign (``assimilation.method: 4dvar``), online on one communicator.

Each 4D-Var window is one campaign cycle. With observation interval ``dt_obs`` (``assimilation.obs_interval``),
window length ``L`` and shift ``S`` (in observation intervals), cycle ``k`` spans ``[s_k, e_k]`` with
``e_k = t_0 + (k + 1) S dt_obs`` and ``s_k = t_0 + max(0, (k + 1) S - L) dt_obs`` and assimilates the observations
of ``(e_k - S dt_obs, e_k]`` (the scheme of :class:`twin.assimilation.fourdvar_cycle.FourDVarCycle`, whose
minimiser, covariance and parameter controls are reused). It minimises

    J(x0, p) = 1/2 |x0 - xb|^2_{B^-1} + 1/2 |T(p) - T(pb)|^2_{Bp^-1} + 1/2 sum_j |y_j - H x(t_j)|^2_{R^-1}

(:class:`twin.assimilation.fourdvar.FourDVar`, gradient by TSAdjoint, TAO under the prefix ``<component>_fourdvar_``).

Files (:mod:`twin.campaign.layout`):

* ``observations.h5`` — the nature run at ``t_0 + j dt_obs`` (``j = 0 .. K S``) with the configured parameters and
  its synthetic observations ``H x_t + e`` (``assimilation.observations``; random stream TRUTH);
* ``checkpoint/cycle_k.h5`` — ``k = 0``: the background (configured initial state plus Gaussian noise of the
  background standard deviation, random stream INITIAL; parameters at their prior centres). ``k > 0``: after window
  ``k - 1``: the analysed initial state at ``s_{k-1}`` (field ``initial``), the analysis at ``e_{k-1}`` (field
  ``<component>``), the background forecast to ``e_{k-1}`` (field ``forecast``), the analysed parameters (the next
  window's parameter background), Laplace posterior samples at ``e_{k-1}`` when ``assimilation.laplace`` is set
  (field ``samples``, arrays ``samples_<parameter>``) and the diagnostics history. A window reads only its checkpoint
  and ``observations.h5``, so a resumed campaign computes exactly what an uninterrupted one would;
* ``diagnostics.nc`` — per window: ``cost``, ``cost_initial``, ``gradient_norm``, ``iterations``, ``converged``,
  ``n_obs``, ``rmse`` (analysis at ``e_k`` against the truth), ``rmse_forecast`` (background forecast),
  ``parameter_<name>``;
* ``posterior.nc`` — the analysis at ``e_0 .. e_{K-1}`` (one member), or the Laplace samples as members;
  ``forecast.nc`` — the background forecasts at the same times.

Only scalar parameters are controls here; field parameters are refused before anything runs.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import layout
from twin.campaign.outputs import outputs_valid, vec_from, write_diagnostics, write_ensembles
from twin.campaign.steps import Setup, _rank, _record, is_valid_checkpoint, reader
from twin.core.errors import ConfigError
from twin.core.log import get_logger

log = get_logger("twin.campaign.variational")


class _Plan:
    """The campaign's 4D-Var objects on one communicator: the window scheme, the observation network, ``t_0``."""

    def __init__(self, s: Setup):
        from twin.assimilation.factory import observations_from_config
        from twin.assimilation.fourdvar_cycle import cycle_from_config
        from twin.core.units import compatible, convert

        acfg, model = s.cfg.assimilation, s.get_model()
        if acfg.observations is None:
            raise ConfigError("assimilation.observations: a 4D-Var campaign observes its nature run with this "
                              "network (e.g. {component: 0, all_points: true, error_std: 1.0})")
        if acfg.model != model.name:
            raise ConfigError(f"assimilation.model: {acfg.model!r} is not the campaign's component {model.name!r}")
        for p in acfg.parameters:
            par = model.parameters.get(p.name)
            if par is None or par.is_field:
                raise ConfigError(f"assimilation.parameters: {p.name!r} is not a scalar parameter of model "
                                  f"{model.name!r} (scalars: {sorted(k for k, v in model.parameters.items() if not v.is_field)})")
        self.t0 = float(s.cfg.timeline.start) if compatible(model.time_units, "1") else \
            float(convert(s.cfg.timeline.start, s.cfg.timeline.units, model.time_units))
        self.n_cycles = int(acfg.cycles)
        self.cycle = cycle_from_config(model, acfg, name=f"{model.name}_fourdvar")
        self.obs = observations_from_config(acfg, model)
        self.n_times = self.n_cycles * self.cycle.S

    def time(self, j: int) -> float:
        return self.t0 + j * self.cycle.dt_obs

    def destroy(self) -> None:
        if self.cycle.B is not None and hasattr(self.cycle.B, "destroy"):
            self.cycle.B.destroy()


def run_experiment(exp_dir, comm, s: Setup, policy=None) -> None:
    """Run (or resume) the 4D-Var campaign of ``exp_dir`` on ``comm``. Collective."""
    from twin.core.progress import progress
    from twin.io.checkpoint import latest_good_checkpoint, list_checkpoints

    plan = _Plan(s)
    try:
        init(s, plan)
        good = latest_good_checkpoint(s.exp_dir / "checkpoint", comm)
        start = dict((p, k) for k, p in list_checkpoints(s.exp_dir / "checkpoint"))[good] if good else 0
        with progress(f"{s.name}: 4D-Var windows", plan.n_cycles, rank=_rank(comm)) as bar:
            bar.advance(start, status="resumed" if start else "")
            for k in range(start, plan.n_cycles):
                window(s, plan, k)
                bar.advance(status=f"window {k}")
        finalize(s, plan, force=start < plan.n_cycles)
    finally:
        plan.destroy()


def init(s: Setup, plan: _Plan) -> bool:
    """Nature run, synthetic observations and the background (checkpoint 0); ``False`` if both already verified."""
    from twin.io.checkpoint import write_checkpoint
    from twin.models.priors import prior_center

    t_start = time.time()
    comm, model = s.comm, s.get_model()
    obs_path, ck0 = layout.observations_file(s.exp_dir), layout.checkpoint_file(s.exp_dir, 0)
    if _rank(comm) == 0:
        (s.exp_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    if is_valid_checkpoint(obs_path, comm) and is_valid_checkpoint(ck0, comm):
        _record(s, "init", "skipped", t_start)
        return False
    grid, acfg = model.grid, s.cfg.assimilation
    true_params = {p.name: float(model.parameters[p.name].value) for p in acfg.parameters}
    gen = ctx.rng(s.cfg, ctx.TRUTH, 0)
    x = model.initial_state()
    try:
        truth, ys = [grid.allgather(x).ravel()], []
        for j in range(1, plan.n_times + 1):
            model.advance(x, plan.time(j - 1), plan.time(j))
            truth.append(grid.allgather(x).ravel())
            ys.append(plan.obs.perturbed(truth[-1], gen))
    finally:
        x.destroy()
    prov = s.provenance()
    write_checkpoint(obs_path, comm, cycle=0, time=plan.t0, provenance=prov, parallel=False,
                     arrays={"truth": np.array(truth), "observations": np.array(ys), "error_std": plan.obs.error_std,
                             "times": np.array([plan.time(j) for j in range(plan.n_times + 1)])},
                     meta={"kind": "observations", "truth_parameters": true_params},
                     sensitive=s.cfg.campaign.sensitive)
    sigma = 0.0
    if acfg.initial_state:
        sigma = float(np.mean(np.atleast_1d(acfg.background_covariance.std)))
    background = truth[0] + sigma * ctx.rng(s.cfg, ctx.INITIAL, 0).standard_normal(truth[0].size)
    params = {}
    for p in acfg.parameters:
        prior = model.parameters[p.name].prior
        params[p.name] = prior_center(prior) if prior is not None else true_params[p.name]
    _write(s, 0, plan.t0, {model.name: background, "initial": background}, params, {}, plan.t0, [], prov)
    _record(s, "init", "done", t_start)
    log.info("experiment %s: 4D-Var over %d windows initialised", s.name, plan.n_cycles)
    return True


def _write(s: Setup, cycle: int, t: float, states: dict[str, Any], params: dict[str, float],
           arrays: dict[str, np.ndarray], initial_time: float, history: list, prov) -> None:
    from twin.io.checkpoint import write_checkpoint

    grid = s.get_model().grid
    vecs: list = []
    fields = {}
    try:
        for name, value in states.items():
            if isinstance(value, list):
                vs = [vec_from(grid, v) for v in value]
                vecs += vs
                fields[name] = (grid, vs)
            else:
                vecs.append(vec_from(grid, value))
                fields[name] = (grid, vecs[-1])
        write_checkpoint(layout.checkpoint_file(s.exp_dir, cycle), s.comm, cycle=cycle, time=t, fields=fields,
                         parameters={k: float(v) for k, v in params.items()}, arrays=arrays or None, parallel=False,
                         meta={"kind": "4dvar", "initial_time": float(initial_time), "history": history},
                         provenance=prov, sensitive=s.cfg.campaign.sensitive)
    finally:
        for v in vecs:
            v.destroy()


def window(s: Setup, plan: _Plan, k: int) -> None:
    """4D-Var window ``k``: checkpoint ``k`` and the observations in, checkpoint ``k + 1`` and one diagnostics
    record out. Collective."""
    from twin.assimilation import diagnostics as diag
    from twin.assimilation.fourdvar import FourDVar, Observation
    from twin.assimilation.tao import minimise
    from twin.observations.base import LinearObservationOperator

    t_start = time.time()
    model, acfg, cyc = s.get_model(), s.cfg.assimilation, plan.cycle
    grid = model.grid
    with reader(layout.checkpoint_file(s.exp_dir, k), s.comm) as r:
        x_init = r.read_field("initial").ravel()
        params = {n: float(np.asarray(v)) for n, v in r.scalar_parameters.items()}
        meta = r.meta
        parent, checksum = r.path, r.checksum
    with reader(layout.observations_file(s.exp_dir), s.comm) as r:
        truth, ys = r.read_array("truth"), r.read_array("observations")
    ts, te = cyc.window_of(k, plan.t0)
    j_end = (k + 1) * cyc.S
    op = LinearObservationOperator(grid, plan.obs.matrix, plan.obs.error_std, name="observations")
    obs = [Observation(plan.time(j), op, ys[j - 1]) for j in range(j_end - cyc.S + 1, j_end + 1)]
    # the background: the previous analysed initial state carried to s_k with the analysed parameters
    for name, value in params.items():
        model.set_parameter(name, value)
    xb = vec_from(grid, x_init)
    xf = None
    fn = None
    try:
        if ts > meta["initial_time"]:
            model.advance(xb, meta["initial_time"], ts)
        xf = xb.copy()
        model.advance(xf, ts, te)
        fn = FourDVar(model, (ts, te), obs, xb, cyc.B,
                      [replace(p, background=params[p.name]) for p in cyc.parameters], name=cyc.name)
        res = minimise(fn, settings=cyc.settings)
        xa0 = fn.initial_state(res.control)
        xa = fn.forecast(res.control, te)
        values = {n: float(v) for n, v in fn.parameter_values(res.control).items()}
        states = {model.name: grid.allgather(xa).ravel(), "initial": grid.allgather(xa0).ravel(),
                  "forecast": grid.allgather(xf).ravel()}
        xa.destroy()
        xa0.destroy()
        arrays = {}
        if acfg.laplace is not None:
            states["samples"], arrays = _laplace_samples(fn, res.control, acfg.laplace, k, te)
        rec = {"cycle": k, "time": te, "cost": res.value, "cost_initial": res.initial_value,
               "gradient_norm": res.gradient_norm, "iterations": int(res.iterations),
               "converged": int(bool(res.converged)), "n_obs": int(sum(o.operator.n_obs for o in obs)),
               "rmse": diag.rmse(states[model.name][:, None], truth[j_end]),
               "rmse_forecast": diag.rmse(states["forecast"][:, None], truth[j_end])}
        rec.update({f"parameter_{n}": v for n, v in values.items()})
        res.control.destroy()
    finally:
        if fn is not None:
            fn.destroy()
        xb.destroy()
        if xf is not None:
            xf.destroy()
    history = list(meta.get("history", [])) + [rec]
    _write(s, k + 1, te, states, values, arrays, ts, history, s.provenance(parent, checksum))
    write_diagnostics(s, history)
    _record(s, "window", "done", t_start, cycle=k)
    log.info("experiment %s window %d [%g, %g]: J %.4g -> %.4g (%d iterations), rmse %.4g (background %.4g)",
             s.name, k, ts, te, rec["cost_initial"], rec["cost"], rec["iterations"], rec["rmse"],
             rec["rmse_forecast"])


def _laplace_samples(fn, c_map, spec, k: int, te: float):
    """Laplace posterior samples at the MAP point, carried to the window end: states and scalar parameters."""
    from twin.assimilation.laplace import LaplacePosterior, low_rank_hessian

    grid = fn.model.grid
    H = low_rank_hessian(fn, c_map, spec.rank, spec.oversampling, seed=spec.seed + k)
    post = LaplacePosterior(fn, c_map, H)
    states, params = [], {}
    try:
        for c in post.samples(spec.samples, seed=spec.seed + k):
            x = fn.forecast(c, te)
            states.append(grid.allgather(x).ravel())
            for n, v in fn.parameter_values(c).items():
                params.setdefault(f"samples_{n}", []).append(float(v))
            x.destroy()
            c.destroy()
    finally:
        post.destroy()
    return states, {n: np.array(v) for n, v in params.items()}


def finalize(s: Setup, plan: _Plan, force: bool = False) -> bool:
    """``posterior.nc`` and ``forecast.nc`` from the checkpoints; ``diagnostics.nc`` completed. Collective."""
    t_start = time.time()
    if not force and outputs_valid(s):
        _record(s, "finalize", "skipped", t_start)
        return False
    K, name = plan.n_cycles, s.get_model().name
    post, fore = [], []
    for k in range(1, K + 1):
        with reader(layout.checkpoint_file(s.exp_dir, k), s.comm) as r:
            laplace = s.cfg.assimilation.laplace is not None
            post.append(r.read_field("samples") if laplace else r.read_field(name).reshape(1, -1))
            fore.append(r.read_field("forecast").reshape(1, -1))
            if k == K:
                history, last = r.meta.get("history", []), r.path
    times = [plan.cycle.window_of(k, plan.t0)[1] for k in range(K)]
    P = np.stack([p.reshape(p.shape[0], -1) for p in post], axis=1)
    F = np.stack(fore, axis=1)
    write_ensembles(s, P, times, F, times, last)
    write_diagnostics(s, history)
    _record(s, "finalize", "done", t_start)
    log.info("experiment %s: outputs in %s", s.name, s.exp_dir)
    return True
