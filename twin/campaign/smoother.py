"""ES-MDA calibration as a campaign (``assimilation.method: esmda``), online: parameters and initial state from all the
observations of one window (Emerick & Reynolds 2013). The update is :meth:`twin.assimilation.esmda.ESMDA.update`,
the iteration :func:`twin.assimilation.calibration.esmda_calibrate` runs too.

The window is the schedule's span ``[t_0, t_K]`` (``K = schedule.cycles`` observation times ``t_k = t_0 + k every
dt``). The control of member ``j`` is ``m_j = [x_j(t_0); T(p_j)]`` (:mod:`twin.assimilation.transforms`). With
coefficients ``alpha_1 .. alpha_I`` (``esmda_alphas``, ``sum 1/alpha_i = 1``), iteration ``i``:

    Y = g(M)            every member run over the window, H x(t_k) stacked for k = 1 .. K     (member forecasts)
    M <- M + C_MY (C_YY + alpha_i R)^-1 (y + sqrt(alpha_i) R^1/2 z_j - Y)                     (update)

then the posterior ensemble is run once more over the window. Files (:mod:`twin.campaign.layout`; the "cycle" of a
file is the iteration):

* ``observations.h5`` and ``checkpoint/cycle_0000.h5`` — the nature run, its observations and the prior ensemble,
  exactly as for the filters (:func:`twin.campaign.steps.init_experiment`); the twin experiment's observations also
  go to ``observations.nc`` (:mod:`twin.observations.export`);
* ``forecast/cycle_i/member_m.h5`` — member ``m`` of checkpoint ``i`` run over the window: its states at
  ``t_0 .. t_K`` (field ``<component>``, one row per time; with observation files, at every model step an
  observation is used at too, in time order) and its parameters;
* ``checkpoint/cycle_{i+1}.h5`` — the ensemble after update ``i`` (states at ``t_0``, parameters, diagnostics
  history); the random numbers of update ``i`` come from stream ANALYSIS, index ``i``, so a resumed run is identical;
* ``diagnostics.nc`` — per iteration (and once for the posterior, ``alpha = 0``): ``misfit``, ``rmse_forecast`` and
  ``spread_forecast`` of the trajectories against the truth, ``rmse``/``spread`` of the updated initial state,
  ``parameter_<p>`` and ``parameter_spread_<p>`` after the update;
* ``posterior.nc`` / ``forecast.nc`` — the posterior / prior ensemble trajectories at ``t_0 .. t_K``.

Observations from files (``type: file`` networks, a twin of a real system): there is no nature run. Every observation
of the files inside the window ``(t_0, t_K]`` is used at the model step nearest its time (``t_0 + n dt``, the rule
of :mod:`twin.observations.file_network`), with its own error; the member runs stop at those steps as well as at
``t_0 .. t_K``, and ``g(M)`` stacks ``H x(t_n)`` per observation, ordered by step, then network row.
``observations.h5`` holds them one per entry (arrays ``observations``, ``errors``, ``rows`` of the stacked operator,
``steps``, ``obs_times``) with every file's SHA-256 and quality-control counts (meta ``files``); missing values, times
outside the window, positions outside the domain and duplicates are counted there and not used. The prior ensemble is
drawn as for a twin experiment. Without a truth, ``diagnostics.nc`` holds no RMSE but the observation-space statistics
of the filters (:func:`twin.observations.innovations.fit`): O-B of the prior ensemble and O-A of the ensemble of that
iteration (the posterior's in the last record), chi-square per degree of freedom of the prior innovations and
Desroziers' estimates. A twin experiment's ``observations.nc`` fed back this way gives its analyses bitwise
(``tests/integration/test_observation_roundtrip_smoothers.py``).

With ``assimilation.localisation`` the update is local instead (:func:`twin.assimilation.esmda.esmda_local_update`:
the perturbed-data update with its gain tapered by the Gaspari-Cohn function of the distance between each entry's
grid point and each datum; scalar parameters get the untapered gain), and ``inflation.parameter_rtps`` relaxes the
scalar parameters' spread towards its value before each update.

A member forecast that fails is retried ``experiments.retries`` times; then the experiment stops (an ES-MDA update
needs the same members in every iteration).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import layout
from twin.campaign.checkpoints import (is_valid_checkpoint, read_member, read_members, reader, vec_from,
                                       write_ensemble_checkpoint, write_member_file)
from twin.campaign.experiment import Setup, setup
from twin.campaign.outputs import outputs_valid, write_diagnostics, write_ensembles
from twin.campaign.steps import init_experiment
from twin.core.errors import AssimilationError, ConfigError, ModelError, SolverError, WorkflowError
from twin.core.log import get_logger
from twin.core.streams import Purpose
from twin.models.contract import attributed

log = get_logger("twin.campaign.smoother")


def alphas(cfg) -> np.ndarray:
    """The configured ES-MDA coefficients (default: four of 4)."""
    from twin.assimilation.esmda import DEFAULT_ITERATIONS, check_alphas, default_alphas

    a = cfg.assimilation.esmda_alphas
    return check_alphas(a if a else default_alphas(DEFAULT_ITERATIONS))


@attributed()
def run_experiment(exp_dir, comm, s: Setup, policy, rewrite: bool = False) -> None:
    """Run (or resume) the ES-MDA campaign of ``exp_dir`` on ``comm``, members over sub-communicators; ``rewrite``:
    write the outputs again even where the steps are all done (a finished run's outputs were damaged). Collective."""
    from mpi4py import MPI

    from twin.core.comm import split_ensemble
    from twin.core.progress import progress
    from twin.io.checkpoint import latest_good_checkpoint, list_checkpoints

    n_iter = len(alphas(s.cfg))
    rpm = min(ctx.ranks_per_member(s.cfg), comm.Get_size())
    ens = split_ensemble(comm, s.n_members, rpm)
    g = setup(exp_dir, ens.member_comm) if ens.member_comm != MPI.COMM_NULL else None
    try:
        _init(exp_dir, comm, s, g, ens)
        good = latest_good_checkpoint(s.exp_dir / "checkpoint", comm)
        start = dict((p, k) for k, p in list_checkpoints(s.exp_dir / "checkpoint"))[good] if good else 0
        with progress(f"{s.name}: ES-MDA iterations", n_iter + 1, rank=comm.Get_rank()) as bar:
            bar.advance(start, status="resumed" if start else "")
            for i in range(start, n_iter + 1):
                failed = 0
                for m in (ens.members if g is not None else []):
                    failed |= not _forecast_with_retries(exp_dir, i, m, g, policy)
                if comm.allreduce(failed, op=MPI.MAX):
                    raise WorkflowError(f"experiment {s.name}: a member forecast failed in ES-MDA iteration {i}")
                comm.Barrier()
                update(s, i)
                bar.advance(status=f"iteration {i}")
        finalize(s, force=rewrite or start <= n_iter)
        decide_window(s)
    finally:
        if g is not None:
            g.destroy()
        ens.free()


def from_files(cfg) -> bool:
    """Whether the campaign observes a real system through ``type: file`` networks (no nature run)."""
    from twin.observations.networks import reads_files

    return any(reads_files(n) for n in cfg.assimilation.observations or [])


def _init(exp_dir, comm, s: Setup, g: Setup | None, ens) -> None:
    """The nature run (its parameters drawn from their priors when ``experiments.truth`` says so), observations and
    prior ensemble (:func:`twin.campaign.steps.init_experiment`); with observation files :func:`_init_files`.
    Collective.

    With field parameters on more than one rank the nature run is made by the single-rank group of rank 0 (the
    others wait): the nature run of :func:`~twin.campaign.steps.init_experiment` hands the model whole fields,
    which a model distributed over several ranks does not take.
    """
    from twin.campaign.experiments import draw_truth

    if from_files(s.cfg):
        _init_files(s)
        return
    fields = any(p.is_field for p in s.get_model().estimable())
    if comm.Get_size() == 1 or not fields:
        draw_truth(s.cfg, s.get_model())
        init_experiment(exp_dir, comm, s)
        return
    if g is None or g.comm.Get_size() > 1:
        raise ConfigError(f"experiment {s.name}: ES-MDA with field parameters needs single-rank members on "
                          f"{comm.Get_size()} ranks (set ensemble.ranks_per_member: 1)")
    if ens.group == 0:
        draw_truth(g.cfg, g.get_model())
        init_experiment(exp_dir, g.comm, g)
    comm.Barrier()


def _init_files(s: Setup) -> bool:
    """``observations.h5`` of a campaign fed by observation files (see the module docstring) and the prior ensemble
    (checkpoint 0, drawn as :func:`twin.campaign.steps.init_experiment` draws it). ``False`` when both verified
    already. Collective."""
    from twin.campaign.steps import network_geometry
    from twin.io.checkpoint import write_checkpoint
    from twin.observations.networks import file_records, timed_observations

    t_start = time.time()
    obs_path, ck0 = layout.observations_file(s.exp_dir), layout.checkpoint_file(s.exp_dir, 0)
    if s.rank == 0:
        (s.exp_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    s.comm.Barrier()
    if is_valid_checkpoint(obs_path, s.comm) and is_valid_checkpoint(ck0, s.comm):
        s.record("init", "skipped", t_start)
        return False
    model, sch, obs = s.get_model(), s.schedule, s.observations
    data = timed_observations(obs)
    times = [sch.window(0)[0]] + [sch.window(k)[1] for k in range(sch.n_cycles)]
    prov = s.provenance()
    files = file_records(obs)
    for f in files:
        log.info("experiment %s: network %s from %s: %s", s.name, f["network"], f["file"],
                 ", ".join(f"{k} {v}" for k, v in f["qc"].items() if v))
    geometry, networks = network_geometry(obs)
    write_checkpoint(obs_path, s.comm, cycle=0, time=times[0], provenance=prov, parallel=False,
                     arrays={"observations": data["value"], "errors": data["error"], "rows": data["row"],
                             "steps": data["step"], "obs_times": np.array([sch.t0 + int(n) * sch.dt
                                                                           for n in data["step"]]),
                             "error_std": obs.error_std, "times": np.array(times), **geometry},
                     meta={"kind": "observations", "files": files, **networks}, sensitive=s.cfg.campaign.sensitive)
    N = s.n_members
    members = ctx.prior_ensemble(s.cfg, model, N, s.name)
    write_ensemble_checkpoint(s, ck0, 0, times[0], [m[0] for m in members], [m[1] for m in members],
                              np.ones(N, dtype=bool), {"dropped": {}, "history": []}, prov)
    s.record("init", "done", t_start)
    log.info("experiment %s: %d members, %d observations from files over [%g, %g]", s.name, N,
             data["value"].size, times[0], times[-1])
    return True


def timeline(s: Setup) -> tuple[np.ndarray, list[float], np.ndarray]:
    """The model steps the member runs stop at (``t_0 + n dt``, ascending), their times, and the positions of the
    schedule's times ``t_0 .. t_K`` among them: ``t_0 .. t_K`` for a twin experiment; with observation files also
    every step an observation is used at (read from ``observations.h5``). Collective."""
    sch = s.schedule
    schedule_steps = np.arange(sch.n_cycles + 1, dtype=np.int64) * int(sch.every)
    steps = schedule_steps
    if from_files(s.cfg):
        with reader(layout.observations_file(s.exp_dir), s.comm) as r:
            steps = np.union1d(schedule_steps, r.read_array("steps").astype(np.int64))
    # t_0 + n dt with n an integer: for n = (k + 1) every exactly the schedule's sch.window(k)[1]
    times = [sch.t0 + int(n) * sch.dt for n in steps]
    return steps, times, np.searchsorted(steps, schedule_steps)


def predicted(s: Setup, traj: np.ndarray, data: dict | None) -> np.ndarray:
    """``g(M)``: the observed values of every member trajectory ``traj`` (N, stops, n_state), one row per datum:
    the networks' rows at ``t_1 .. t_K`` stacked (twin experiment, ``data`` None), or per observation of the files
    (``data``: ``rows`` and the ``stop`` index of each)."""
    H = s.observations.matrix
    if data is None:
        return np.concatenate([np.asarray(H @ traj[:, k].T) for k in range(1, traj.shape[1])])
    Y = np.empty((data["rows"].size, traj.shape[0]))
    for j in np.unique(data["stop"]):
        at = data["stop"] == j
        Y[at] = np.asarray(H @ traj[:, j].T)[data["rows"][at]]
    return Y


def window_posterior(s: Setup, iteration: int | None = None):
    """The ensemble of checkpoint ``iteration`` (default: the posterior) as samples at the window start."""
    from twin.decision.prediction import PosteriorEnsemble

    it = len(alphas(s.cfg)) if iteration is None else iteration
    with reader(layout.checkpoint_file(s.exp_dir, it), s.comm) as r:
        states, params = read_members(s, r, range(s.n_members))
    names = params[0].keys() if params else []
    return PosteriorEnsemble(np.array(states), {n: np.array([p[n] for p in params]) for n in names},
                             float(s.schedule.window(0)[0]))


def decide_window(s: Setup) -> None:
    """The decision step (:func:`twin.campaign.decide.decide`) from the posterior samples at the window start,
    run through the observation times. Collective; nothing without a ``decision`` section."""
    from twin.campaign.decide import decide, wants_decision

    if not wants_decision(s.cfg):
        return
    sch = s.schedule
    decide(s, s.comm, window=window_posterior(s), observation_times=[sch.window(k)[1] for k in range(sch.n_cycles)])


def _forecast_with_retries(exp_dir, i: int, m: int, g: Setup, policy) -> bool:
    for attempt in range(policy.retries + 1):
        try:
            forecast_window(exp_dir, i, m, g.comm, g)
            return True
        except (SolverError, ModelError) as exc:
            log.warning("experiment %s: member %d failed in ES-MDA iteration %d (attempt %d of %d): %s",
                        g.name, m, i, attempt + 1, policy.retries + 1, exc)
    return False


def forecast_window(exp_dir, iteration: int, member: int, comm, s: Setup) -> bool:
    """Member ``member`` of checkpoint ``iteration`` run over the whole window; its states at ``t_0 .. t_K`` go to
    ``forecast/cycle_<iteration>/member_<member>.h5``. ``False`` when that file already verified. Collective."""
    t_start = time.time()
    out = layout.forecast_file(s.exp_dir, iteration, member)
    if is_valid_checkpoint(out, comm):
        s.record("forecast", "skipped", t_start, cycle=iteration, member=member)
        return False
    if comm.Get_rank() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    model = s.get_model()
    _, times, _ = timeline(s)
    with reader(layout.checkpoint_file(s.exp_dir, iteration), comm) as r:
        (state,), (params,) = read_members(s, r, [member])
        parent, checksum = r.path, r.checksum
    ctx.set_member_parameters(model, params)
    x = vec_from(model.grid, state)
    vecs = [x.copy()]
    try:
        for a, b in zip(times[:-1], times[1:]):
            model.advance(x, a, b)
            vecs.append(x.copy())
        write_member_file(s, out, comm, iteration, times[-1], vecs, params, member, s.provenance(parent, checksum))
    finally:
        x.destroy()
        for v in vecs:
            v.destroy()
    s.record("forecast", "done", t_start, cycle=iteration, member=member)
    return True


def _trajectories(s: Setup, iteration: int, stops: int | None = None):
    """Every member's trajectory (N, stops, n_state: the steps of :func:`timeline`) and physical parameters from the
    forecasts of ``iteration``."""
    stops = len(timeline(s)[0]) if stops is None else stops
    traj, params = [], []
    for m in range(s.n_members):
        with reader(layout.forecast_file(s.exp_dir, iteration, m), s.comm) as r:
            traj.append(r.read_field(s.get_model().name).reshape(stops, -1))
            _, p = read_member(s, r)
            params.append(p)
    return np.array(traj), params


def update(s: Setup, iteration: int) -> None:
    """ES-MDA iteration ``iteration``: the member trajectories and all the observations in; checkpoint
    ``iteration + 1`` out (the last call, ``iteration == len(alphas)``, records the posterior only). Collective."""
    from twin.assimilation import diagnostics as diag
    from twin.assimilation.esmda import data_misfit

    t_start = time.time()
    a = alphas(s.cfg)
    out = layout.checkpoint_file(s.exp_dir, iteration + 1)
    if iteration < a.size and is_valid_checkpoint(out, s.comm):
        s.record("analyse", "skipped", t_start, cycle=iteration)
        return
    model, obs, sch = s.get_model(), s.observations, s.schedule
    with reader(layout.checkpoint_file(s.exp_dir, iteration), s.comm) as r:
        meta, parent, checksum = r.meta, r.path, r.checksum
        alive = r.read_array("alive")
    steps, _, on_schedule = timeline(s)
    data = None
    with reader(layout.observations_file(s.exp_dir), s.comm) as r:
        # a twin experiment has its truth; observations from files have none, one error and row per observation
        truth = r.read_array("truth") if "truth" in r.array_names else None
        y = r.read_array("observations")
        if "rows" in r.array_names:
            data = {"rows": r.read_array("rows").astype(np.int64),
                    "stop": np.searchsorted(steps, r.read_array("steps").astype(np.int64))}
            err = r.read_array("errors")
        else:
            err = r.read_array("error_std")
    traj, params = _trajectories(s, iteration, steps.size)
    N = traj.shape[0]
    Y = predicted(s, traj, data)
    yv = np.asarray(y, dtype=float).ravel()
    r = np.broadcast_to(np.asarray(err, dtype=float), np.shape(y)).ravel()
    misfit = data_misfit(Y, yv, r)
    rec = {"cycle": iteration, "time": float(sch.window(sch.n_cycles - 1)[1]), "iteration": iteration,
           "misfit": misfit, "members": N, "n_obs": int(yv.size)}
    if truth is not None:
        mean_traj = traj[:, on_schedule].mean(axis=0)
        rec["rmse_forecast"] = float(np.sqrt(np.mean((mean_traj - truth) ** 2)))
    rec["spread_forecast"] = float(np.sqrt(np.mean(traj[:, on_schedule].var(axis=0, ddof=1))))
    if truth is None:
        # no truth: the fit in observation space, the prior ensemble's innovations against this iteration's
        # residuals (the filters' statistics, twin.observations.innovations)
        from twin.observations.innovations import fit_record

        Yb = Y if iteration == 0 else predicted(s, _trajectories(s, 0, steps.size)[0], data)
        rec.update(fit_record(yv, Yb, Y, r))
    history = list(meta.get("history", []))
    if iteration == a.size:
        rec.update(alpha=0.0, **_parameter_stats(params))
        history.append(rec)
        write_diagnostics(s, history)
        s.record("analyse", "done", t_start, cycle=iteration)
        log.info("experiment %s posterior: misfit %.4g, %s", s.name, misfit,
                 f"trajectory rmse {rec['rmse_forecast']:.4g}" if truth is not None else
                 f"O-A std {rec['oma_std']:.4g} (O-B std {rec['omb_std']:.4g}), chi2/m {rec['chi2_per_dof']:.3g}")
        return
    control = ctx.control_vector(model)
    E = control.pack(traj[:, 0].T, {k: np.array([p[k] for p in params]).T for k in params[0]} if params[0] else {})
    local = ctx.local_context(s.cfg, model, obs, control)
    if local is not None:
        # the data are the networks' rows stacked over the observation times (or one row per observation of the
        # files): their locations repeat
        local = local.observed(np.tile(np.arange(obs.n_obs), sch.n_cycles) if data is None else data["rows"])
    try:
        Ea = ctx.method(s.cfg, N).update(E, Y, yv, r, iteration, ctx.rng(s.cfg, Purpose.ANALYSIS, iteration), local)
    except AssimilationError as exc:
        raise AssimilationError(f"experiment {s.name}: {exc}") from None
    states, new = control.unpack(Ea)
    new_params = [{n: (v[..., j] if np.ndim(v) > 1 else float(np.asarray(v)[j])) for n, v in new.items()}
                  for j in range(N)]
    n = control.n_state
    if truth is not None:
        rec["rmse"] = diag.rmse(Ea[:n], truth[0])
    rec.update(alpha=float(a[iteration]), spread=diag.spread(Ea[:n]), **_parameter_stats(new_params))
    history.append(rec)
    write_ensemble_checkpoint(s, out, iteration + 1, float(sch.window(0)[0]), list(states.T), new_params, alive,
                              {"history": history, "alphas": a.tolist()}, s.provenance(parent, checksum))
    write_diagnostics(s, history)
    s.record("analyse", "done", t_start, cycle=iteration)
    log.info("experiment %s ES-MDA iteration %d (alpha %g): misfit %.4g, %s", s.name, iteration, a[iteration],
             misfit, ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k.startswith("parameter_")))


def _parameter_stats(params: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for name in (params[0] if params else {}):
        v = np.array([np.mean(p[name]) for p in params])
        out[f"parameter_{name}"] = float(v.mean())
        out[f"parameter_spread_{name}"] = float(v.std(ddof=1))
    return out


def finalize(s: Setup, force: bool = False) -> bool:
    """``posterior.nc`` (trajectories of the posterior ensemble) and ``forecast.nc`` (of the prior). Collective."""
    t_start = time.time()
    if not force and outputs_valid(s):
        s.record("finalize", "skipped", t_start)
        return False
    n_iter, sch = len(alphas(s.cfg)), s.schedule
    steps, _, on_schedule = timeline(s)
    prior, _ = _trajectories(s, 0, steps.size)
    post, _ = _trajectories(s, n_iter, steps.size)
    times = [sch.window(0)[0]] + [sch.window(k)[1] for k in range(sch.n_cycles)]
    write_ensembles(s, post[:, on_schedule], times, prior[:, on_schedule], times,
                    layout.checkpoint_file(s.exp_dir, n_iter))
    s.record("finalize", "done", t_start)
    log.info("experiment %s: outputs in %s", s.name, s.exp_dir)
    return True
