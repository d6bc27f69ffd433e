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
* ``checkpoint/cycle_k.h5`` — ``k = 0``: the background (the configured initial state, the prior's centre; the
  nature run starts from an independent draw of the prior, :func:`_true_initial_state`; parameters at their prior
  centres). ``k > 0``: after window
  ``k - 1``: the analysed initial state at ``s_{k-1}`` (field ``initial``), the analysis at ``e_{k-1}`` (field
  ``<component>``), the background forecast to ``e_{k-1}`` (field ``forecast``), the analysed parameters (the next
  window's parameter background; fields such as the tumour's ``k(x)`` as parameter fields), Laplace posterior
  samples when ``assimilation.laplace`` is set (field ``samples`` at ``e_{k-1}``, field ``sample_initial`` at
  ``s_{k-1}``, arrays ``samples_<parameter>``: one value or one whole field per sample) and the diagnostics history. A window reads only its checkpoint
  and ``observations.h5``, so a resumed campaign computes exactly what an uninterrupted one would;
* ``diagnostics.nc`` — per window: ``cost``, ``cost_initial``, ``gradient_norm``, ``iterations``, ``converged``,
  ``n_obs``, ``rmse`` (analysis at ``e_k`` against the truth), ``rmse_forecast`` (background forecast),
  ``parameter_<name>``; with Laplace samples their ``spread``, ``crps`` and ``coverage_90`` against the truth, and
  the averages over the windows after ``assimilation.burn_in`` (``rmse_a``, ``spread_a``, ``crps_a``,
  ``coverage_90_a``) as the filters write them;
* ``posterior.nc`` — the analysis at ``e_0 .. e_{K-1}`` (one member), or the Laplace samples as members;
  ``forecast.nc`` — the background forecasts at the same times;
* ``decision.json`` (and ``patient.nc`` for the tumour model) when the campaign has a ``decision`` section: the
  posterior samples of the last window (Laplace samples, else the MAP point) are run from ``s_{K-1}`` through the
  window's observation times and forecast from ``e_{K-1}`` (:func:`twin.campaign.decide.decide`).

Observations from files (``type: file`` networks, a twin of a real system): there is no nature run and no truth.
Every observation of the files inside ``(t_0, t_0 + K S dt_obs]`` is used at the model step nearest its time
(``t_0 + n dt``, ``dt`` the model's step; a step on the scheme's grid ``t_0 + j dt_obs`` takes that time exactly:
:class:`twin.observations.file_network.StepClock`), in the window whose new span ``(e_k - S dt_obs, e_k]`` holds that
step, with its own error: the forward and adjoint passes stop at those steps. ``observations.h5`` holds them one per
entry (arrays ``observations``, ``errors``, ``rows`` of the stacked operator, ``steps``, ``obs_times``, ``windows``)
with every file's SHA-256 and quality-control counts (meta ``files``). The background of window 0 is the configured initial
state, as for a twin experiment. ``diagnostics.nc`` then holds, instead of
the RMSEs, the observation-space statistics the filters record (:func:`twin.observations.innovations.fit` with the
background trajectory as the single "member" for O-B and the analysis for O-A: ``omb_*``, ``oma_*``, Desroziers'
``desroziers_r`` and ``desroziers_hbht``, ``assumed_r``) and ``chi2_per_dof = 2 J(x_a) / m``, the minimum of the cost
per observation, about 1 when B and R are right (Talagrand 1999; the ensemble's ``HBH^T`` the filters' chi-square
uses does not exist here). No free run is written. A twin experiment writes its observations to ``observations.nc``
at their own times ``t_0 + j dt_obs`` (:mod:`twin.observations.export`); fed back this way they give its analyses
bitwise (``tests/integration/test_observation_roundtrip_smoothers.py``).

Parameters are scalars or fields; a field control takes its prior covariance and background from its
``gaussian_field`` prior (:class:`twin.assimilation.var_control.ControlSpace`) and cannot have bounds. With
``experiments.truth`` the nature run's parameters are drawn from their priors
(:func:`twin.campaign.experiments.draw_truth`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import layout
from twin.campaign.checkpoints import is_valid_checkpoint, reader, vec_from
from twin.campaign.experiment import Setup, rank_of
from twin.campaign.finalize import write_scores
from twin.campaign.free_run import has_truth, write_free_run
from twin.campaign.outputs import outputs_valid, write_diagnostics, write_ensembles
from twin.campaign.windows import WindowPlan, placed_observations
from twin.core.log import get_logger
from twin.core.streams import Purpose
from twin.models.contract import attributed

log = get_logger("twin.campaign.variational")


@attributed()
def run_experiment(exp_dir, comm, s: Setup, policy=None, rewrite: bool = False) -> None:
    """Run (or resume) the 4D-Var campaign of ``exp_dir`` on ``comm``; ``rewrite``: write the outputs again even
    where every window is done (a finished run's outputs were damaged). Collective."""
    from twin.core.progress import progress
    from twin.io.checkpoint import latest_good_checkpoint, list_checkpoints

    plan = WindowPlan(s.cfg, s.get_model())
    try:
        init(s, plan)
        good = latest_good_checkpoint(s.exp_dir / "checkpoint", comm)
        start = dict((p, k) for k, p in list_checkpoints(s.exp_dir / "checkpoint"))[good] if good else 0
        with progress(f"{s.name}: 4D-Var windows", plan.n_cycles, rank=rank_of(comm)) as bar:
            bar.advance(start, status="resumed" if start else "")
            for k in range(start, plan.n_cycles):
                window(s, plan, k)
                bar.advance(status=f"window {k}")
        finalize(s, plan, force=rewrite or start < plan.n_cycles)
        decide_window(s, plan)
    finally:
        plan.destroy()


def init(s: Setup, plan: WindowPlan) -> bool:
    """Nature run, synthetic observations and the background (checkpoint 0); ``False`` if both already verified."""
    from twin.assimilation.cycle import ModelForecast, ObservationSchedule, twin_truth
    from twin.io.checkpoint import write_checkpoint
    from twin.models.priors import prior_center

    t_start = time.time()
    comm, model = s.comm, s.get_model()
    obs_path, ck0 = layout.observations_file(s.exp_dir), layout.checkpoint_file(s.exp_dir, 0)
    if rank_of(comm) == 0:
        (s.exp_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    from twin.campaign.experiments import draw_truth
    from twin.campaign.steps import network_geometry

    if is_valid_checkpoint(obs_path, comm) and is_valid_checkpoint(ck0, comm):
        earlier = _outdated_file_observations(s, plan, obs_path)
        if earlier is not None:  # twin assimilate delivered more files: the windows analysed keep their observations
            times = np.array([plan.time(j) for j in range(plan.n_times + 1)])
            _write_file_observations(s, plan, times, *network_geometry(plan.obs), s.provenance(), earlier)
            log.info("experiment %s: observations of %d more 4D-Var window(s) from the files delivered",
                     s.name, plan.n_cycles - earlier["n_windows"])
        s.record("init", "skipped", t_start)
        return False

    from twin.models.contract import initial_state

    grid, acfg = model.grid, s.cfg.assimilation
    x = initial_state(model)  # checked: a PETSc vector of the model's state
    try:
        x0 = grid.allgather(x).ravel()
    finally:
        x.destroy()
    prov = s.provenance()
    times = np.array([plan.time(j) for j in range(plan.n_times + 1)])
    geometry, networks = network_geometry(plan.obs)
    if plan.clock is not None:
        # observations from files: no nature run; the background below is the configured state
        true_params = {p.name: _value(model, p.name) for p in acfg.parameters}
        _write_file_observations(s, plan, times, geometry, networks, prov)
    else:
        draw_truth(s.cfg, model)
        true_params = {p.name: _value(model, p.name) for p in acfg.parameters}
        # The nature run is the filters' (twin_truth, one window per observation time) from a draw of the prior whose
        # centre, the configured state, is the background below (_true_initial_state)
        forecast = ModelForecast(model)
        try:
            schedule = ObservationSchedule(dt=plan.cycle.dt_obs, every=1, n_cycles=plan.n_times, t0=plan.t0)
            truth, ys = twin_truth(forecast, _true_initial_state(s, plan, x0), {}, schedule, plan.obs,
                                   ctx.streams(s.cfg))
        finally:
            forecast.destroy()
        write_checkpoint(obs_path, comm, cycle=0, time=plan.t0, provenance=prov, parallel=False,
                         arrays={"truth": np.array(truth), "observations": np.array(ys),
                                 "error_std": plan.obs.error_std, "times": times, **geometry},
                         meta={"kind": "observations", **networks,
                               "truth_parameters": {k: np.asarray(v).tolist() for k, v in true_params.items()}},
                         sensitive=s.cfg.campaign.sensitive)
        # the same observations, each at its own time t_0 + j dt_obs, as the file a real system would send
        from twin.campaign.outputs import time_encoding
        from twin.observations.export import write_observation_file

        time_units, scale = time_encoding(model, s.cfg.timeline.calendar_start)
        write_observation_file(layout.observation_export_file(s.exp_dir), comm, plan.obs, model, times,
                               np.array(ys), time_units=time_units, time_scale=scale, provenance=prov,
                               sensitive=s.cfg.campaign.sensitive)
    background = x0
    params = {}
    for p in acfg.parameters:
        par = model.parameters[p.name]
        value = prior_center(par.prior) if par.prior is not None else true_params[p.name]
        params[p.name] = np.full(grid.size, float(value)) if par.is_field and np.ndim(value) == 0 else value
    _write(s, 0, plan.t0, {model.name: background, "initial": background}, params, {}, plan.t0, [], prov)
    s.record("init", "done", t_start)
    log.info("experiment %s: 4D-Var over %d windows initialised", s.name, plan.n_cycles)
    return True


def _true_initial_state(s: Setup, plan: WindowPlan, x0: np.ndarray) -> np.ndarray:
    """The nature run's initial state (natural order, every rank): the configured state ``x0`` when it is not a
    control (``initial_state: false``: it is known); else ``x0`` plus white noise of ``experiments.truth.initial_std``
    when the campaign sets it (the filters' truth at the same seeds, :func:`twin.campaign.context.true_initial_state`),
    else a draw from the background covariance, ``x0 + B^{1/2} z`` (stream TRUTH, index ``TRUTH_INITIAL_STATE``).
    Either way the background is the prior's centre and the truth an independent draw from the prior, as in the
    filters' twin experiments. Collective."""
    from twin.campaign.experiments import truth_spec
    from twin.core.streams import TRUTH_INITIAL_STATE

    if not s.cfg.assimilation.initial_state:
        return x0
    spec = truth_spec(s.cfg)
    if spec is not None and spec.initial_std is not None:
        return ctx.true_initial_state(s.cfg, s.get_model(), spec.initial_std)
    grid, B = s.get_model().grid, plan.cycle.B
    z = vec_from(grid, ctx.rng(s.cfg, Purpose.TRUTH, TRUTH_INITIAL_STATE).standard_normal(x0.size))
    dx = B.create_vec()
    try:
        B.sqrt_mult(z, dx)
        return x0 + grid.allgather(dx).ravel()
    finally:
        z.destroy()
        dx.destroy()


def _outdated_file_observations(s: Setup, plan: WindowPlan, path) -> dict | None:
    """For a campaign fed by files whose ``observations.h5`` holds fewer windows or other files than its configuration
    now names (``twin assimilate`` delivered more), what the file holds (the arrays of
    :data:`twin.campaign.windows.PLACED`, ``windows`` and ``n_windows``); ``None`` when it is current or the campaign
    is a twin experiment."""
    from twin.campaign.windows import PLACED
    from twin.observations.networks import network_names, reads_files

    if plan.clock is None:
        return None
    networks = s.cfg.assimilation.observations
    wanted = [[name, f] for name, n in zip(network_names(networks), networks) if reads_files(n) for f in n.files()]
    with reader(path, s.comm) as r:
        listed = [[f.get("network"), f.get("file")] for f in r.meta.get("files", [])]
        n_times = r.read_array("times").size - 1
        if n_times == plan.n_times and listed == wanted:
            return None
        return {**{a: r.read_array(a) for a in (*PLACED, "windows")}, "n_windows": n_times // plan.cycle.S}


def _write_file_observations(s: Setup, plan: WindowPlan, times, geometry, networks, prov, earlier=None) -> None:
    """``observations.h5`` of a campaign fed by observation files: one entry per observation used, at its model step
    and in its window (:func:`twin.campaign.windows.placed_observations`), every file's SHA-256 and QC counts. Refuses
    a window without observations (one line naming it). ``earlier``: what ``observations.h5`` held before more files
    were delivered (``twin assimilate``); the windows it held must keep their observations bitwise. Collective."""
    from twin.campaign.windows import same_windows
    from twin.core.errors import WorkflowError
    from twin.io.checkpoint import write_checkpoint

    data = placed_observations(plan, s.name)
    if earlier is not None and not same_windows(data, earlier, earlier["n_windows"]):
        raise WorkflowError(f"experiment {s.name}: the observation files give other observations for the "
                            f"{earlier['n_windows']} windows already analysed than observations.h5 holds: a file it "
                            "read has changed; restore it (new observations go in new files, delivered with twin "
                            "assimilate)")
    for f in data["files"]:
        log.info("experiment %s: network %s from %s: %s", s.name, f["network"], f["file"],
                 ", ".join(f"{k} {v}" for k, v in f["qc"].items() if v))
    write_checkpoint(layout.observations_file(s.exp_dir), s.comm, cycle=0, time=plan.t0, provenance=prov,
                     parallel=False,
                     arrays={"observations": data["value"], "errors": data["error"], "rows": data["row"],
                             "steps": data["step"], "obs_times": data["obs_times"], "windows": data["windows"],
                             "error_std": plan.obs.error_std, "times": times, **geometry},
                     meta={"kind": "observations", "files": data["files"], **networks},
                     sensitive=s.cfg.campaign.sensitive)


def _window_observations(s: Setup, plan: WindowPlan, k: int, r) -> list:
    """The :class:`~twin.assimilation.fourdvar.Observation` list of window ``k`` from ``observations.h5`` (reader
    ``r``): a twin experiment's networks at ``t_0 + j dt_obs``, or the file observations of the window grouped by
    their model step (one operator of their rows and errors per step)."""
    from twin.assimilation.fourdvar import Observation
    from twin.observations.base import LinearObservationOperator

    grid, cyc = s.get_model().grid, plan.cycle
    if plan.clock is None:
        ys = r.read_array("observations")
        op = LinearObservationOperator(grid, plan.obs.matrix, plan.obs.error_std, name="observations")
        j_end = (k + 1) * cyc.S
        return [Observation(plan.time(j), op, ys[j - 1]) for j in range(j_end - cyc.S + 1, j_end + 1)]
    mine = np.flatnonzero(r.read_array("windows") == k)
    values, errors = r.read_array("observations")[mine], r.read_array("errors")[mine]
    rows, times = r.read_array("rows").astype(np.int64)[mine], r.read_array("obs_times")[mine]
    out = []
    for t in np.unique(times):
        at = times == t
        H = plan.obs.matrix[rows[at]]
        out.append(Observation(float(t), LinearObservationOperator(grid, H, errors[at], name="observations"),
                               values[at]))
    return out


def _fit(fn, c_map, value: float) -> dict[str, float]:
    """Observation-space statistics of a window without truth: :func:`twin.observations.innovations.fit_record` of
    the background trajectory (control 0) and the analysis ``c_map`` (one member each), and
    ``chi2_per_dof = 2 J(x_a) / m`` (see the module docstring)."""
    from twin.observations.innovations import fit_record

    obs = [ob for group in fn.groups for ob in group]
    y = np.concatenate([ob.values for ob in obs])
    r = np.concatenate([ob.operator.error_std for ob in obs])

    def observed(c):
        return y + np.concatenate([a for _, _, a in fn.innovations(c)]) * r

    c0 = fn.create_control()
    try:
        hb = observed(c0)
    finally:
        c0.destroy()
    rec = fit_record(y, hb[:, None], observed(c_map)[:, None], r)
    rec.pop("ensemble_hbht")
    rec["chi2_per_dof"] = 2.0 * float(value) / y.size
    return rec


def _value(model, name: str):
    """A parameter's value: a float, or the whole field in natural order (every rank)."""
    p = model.parameters[name]
    return model.grid.allgather(p.value).ravel() if p.is_field else float(p.value)


def _read_parameters(r, model) -> dict[str, Any]:
    """Scalar and field parameters of a 4D-Var checkpoint (floats, whole fields in natural order)."""
    params: dict[str, Any] = {n: float(np.asarray(v)) for n, v in r.scalar_parameters.items()}
    for name in r.parameter_fields:
        params[name] = r.read_field(name, "parameters").ravel()
    return params


def _write(s: Setup, cycle: int, t: float, states: dict[str, Any], params: dict[str, Any],
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
        parameters: dict[str, Any] = {}
        for k, v in params.items():
            if np.ndim(v):
                vecs.append(vec_from(grid, v))
                parameters[k] = (grid, vecs[-1])
            else:
                parameters[k] = float(v)
        write_checkpoint(layout.checkpoint_file(s.exp_dir, cycle), s.comm, cycle=cycle, time=t, fields=fields,
                         parameters=parameters, arrays=arrays or None, parallel=False,
                         meta={"kind": "4dvar", "initial_time": float(initial_time), "history": history},
                         provenance=prov, sensitive=s.cfg.campaign.sensitive)
    finally:
        for v in vecs:
            v.destroy()


def window(s: Setup, plan: WindowPlan, k: int) -> None:
    """4D-Var window ``k``: checkpoint ``k`` and the observations in, checkpoint ``k + 1`` and one diagnostics
    record out. Collective."""
    from twin.assimilation import diagnostics as diag
    from twin.assimilation.fourdvar import FourDVar
    from twin.assimilation.tao import minimise

    t_start = time.time()
    model, acfg, cyc = s.get_model(), s.cfg.assimilation, plan.cycle
    grid = model.grid
    with reader(layout.checkpoint_file(s.exp_dir, k), s.comm) as r:
        x_init = r.read_field("initial").ravel()
        params = _read_parameters(r, model)
        meta = r.meta
        parent, checksum = r.path, r.checksum
    with reader(layout.observations_file(s.exp_dir), s.comm) as r:
        # a twin experiment has its truth; observations from files have none
        truth = r.read_array("truth") if "truth" in r.array_names else None
        obs = _window_observations(s, plan, k, r)
    ts, te = cyc.window_of(k, plan.t0)
    j_end = (k + 1) * cyc.S
    # the background: the previous analysed initial state carried to s_k with the analysed parameters
    ctx.set_member_parameters(model, params)
    xb = vec_from(grid, x_init)
    xf = None
    fn = None
    backgrounds = {n: (vec_from(grid, v) if np.ndim(v) else v) for n, v in params.items()}
    try:
        if ts > meta["initial_time"]:
            model.advance(xb, meta["initial_time"], ts)
        xf = xb.copy()
        model.advance(xf, ts, te)
        fn = FourDVar(model, (ts, te), obs, xb, cyc.B,
                      [replace(p, background=backgrounds[p.name]) for p in cyc.parameters], name=cyc.name)
        res = minimise(fn, settings=cyc.settings)
        xa0 = fn.initial_state(res.control)
        xa = fn.forecast(res.control, te)
        values = _physical(grid, fn.parameter_values(res.control))
        states = {model.name: grid.allgather(xa).ravel(), "initial": grid.allgather(xa0).ravel(),
                  "forecast": grid.allgather(xf).ravel()}
        xa.destroy()
        xa0.destroy()
        arrays = {}
        if acfg.laplace is not None:
            states["samples"], states["sample_initial"], arrays = _laplace_samples(fn, res.control, acfg.laplace,
                                                                                   k, te)
        rec = {"cycle": k, "time": te, "cost": res.value, "cost_initial": res.initial_value,
               "gradient_norm": res.gradient_norm, "iterations": int(res.iterations),
               "converged": int(bool(res.converged)), "n_obs": int(sum(o.operator.n_obs for o in obs))}
        if truth is not None:
            rec.update(rmse=diag.rmse(states[model.name][:, None], truth[j_end]),
                       rmse_forecast=diag.rmse(states["forecast"][:, None], truth[j_end]))
            if "samples" in states:  # the Laplace samples against the truth, scored as the filters' members are
                sums = diag.block_sums(np.array(states["samples"]).T, truth[j_end])
                rec.update({n: v for n, v in diag.scores(sums, True).items() if n != "rmse"})
        else:  # no truth: the fit to the observations (after everything above: it runs the model again)
            rec.update(_fit(fn, res.control, res.value))
        # diagnostics are scalars: a field parameter is summarised by its domain mean
        rec.update({f"parameter_{n}": float(np.mean(v)) for n, v in values.items()})
        res.control.destroy()
    finally:
        if fn is not None:
            fn.destroy()
        xb.destroy()
        if xf is not None:
            xf.destroy()
        for v in backgrounds.values():
            if hasattr(v, "destroy"):
                v.destroy()
    history = list(meta.get("history", [])) + [rec]
    _write(s, k + 1, te, states, values, arrays, ts, history, s.provenance(parent, checksum))
    write_diagnostics(s, history)
    s.record("window", "done", t_start, cycle=k)
    if truth is not None:
        log.info("experiment %s window %d [%g, %g]: J %.4g -> %.4g (%d iterations), rmse %.4g (background %.4g)",
                 s.name, k, ts, te, rec["cost_initial"], rec["cost"], rec["iterations"], rec["rmse"],
                 rec["rmse_forecast"])
    else:
        log.info("experiment %s window %d [%g, %g]: J %.4g -> %.4g (%d iterations), %d observations, O-B std %.4g "
                 "-> O-A std %.4g, 2J/m %.3g", s.name, k, ts, te, rec["cost_initial"], rec["cost"],
                 rec["iterations"], rec["n_obs"], rec["omb_std"], rec["oma_std"], rec["chi2_per_dof"])


def _physical(grid, values: dict[str, Any]) -> dict[str, Any]:
    """:meth:`FourDVar.parameter_values` as floats and whole fields (natural order); the field vectors are freed."""
    out: dict[str, Any] = {}
    for n, v in values.items():
        if hasattr(v, "destroy"):
            out[n] = grid.allgather(v).ravel()
            v.destroy()
        else:
            out[n] = float(v)
    return out


def _laplace_samples(fn, c_map, spec, k: int, te: float):
    """Laplace posterior samples at the MAP point: states at the window end and start, and parameters (one value
    or one whole field per sample)."""
    from twin.assimilation.laplace import LaplacePosterior, low_rank_hessian

    grid = fn.model.grid
    H = low_rank_hessian(fn, c_map, spec.rank, spec.oversampling, seed=spec.seed + k)
    post = LaplacePosterior(fn, c_map, H)
    states, initial, params = [], [], {}
    try:
        for c in post.samples(spec.samples, seed=spec.seed + k):
            x0 = fn.initial_state(c)
            initial.append(grid.allgather(x0).ravel())
            x0.destroy()
            x = fn.forecast(c, te)
            states.append(grid.allgather(x).ravel())
            for n, v in _physical(grid, fn.parameter_values(c)).items():
                params.setdefault(f"samples_{n}", []).append(v)
            x.destroy()
            c.destroy()
    finally:
        post.destroy()
    return states, initial, {n: np.array(v) for n, v in params.items()}


def finalize(s: Setup, plan: WindowPlan, force: bool = False) -> bool:
    """``posterior.nc`` and ``forecast.nc`` from the checkpoints; ``diagnostics.nc`` completed. Collective."""
    t_start = time.time()
    if not force and outputs_valid(s):
        s.record("finalize", "skipped", t_start)
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
    write_scores(s, history, burn_in=s.cfg.assimilation.burn_in)
    if has_truth(s.exp_dir, s.comm):  # the free run is a twin experiment's reference; a real system has none
        write_free_run(s.exp_dir, s.comm)
    s.record("finalize", "done", t_start)
    log.info("experiment %s: outputs in %s", s.name, s.exp_dir)
    return True


def window_posterior(s: Setup, plan: WindowPlan):
    """Posterior samples at the start ``s_{K-1}`` of the last window (Laplace samples, else the MAP point) and the
    observation times of that window."""
    from twin.decision.prediction import PosteriorEnsemble

    K = plan.n_cycles
    with reader(layout.checkpoint_file(s.exp_dir, K), s.comm) as r:
        ts = float(r.meta["initial_time"])
        te = float(r.time)
        if "sample_initial" in r.fields:
            states = r.read_field("sample_initial")
            states = states.reshape(states.shape[0], -1)
            params = {n[len("samples_"):]: r.read_array(n) for n in r.array_names if n.startswith("samples_")}
        else:
            states = r.read_field("initial").reshape(1, -1)
            params = {n: np.asarray(v)[None, ...] for n, v in _read_parameters(r, s.get_model()).items()}
    tol = 1e-9 * plan.cycle.dt_obs
    times = [plan.time(j) for j in range(1, plan.n_times + 1) if ts + tol < plan.time(j) <= te + tol]
    return PosteriorEnsemble(states, params, ts), times


def decide_window(s: Setup, plan: WindowPlan) -> None:
    """The decision step from the last window's posterior (:func:`twin.campaign.decide.decide`). Collective."""
    from twin.campaign.decide import decide, wants_decision

    if not wants_decision(s.cfg):
        return
    window_ens, times = window_posterior(s, plan)
    decide(s, s.comm, window=window_ens, observation_times=times)
