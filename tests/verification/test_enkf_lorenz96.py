"""Ensemble filters against the literature on Lorenz-96, and against the Kalman filter on a linear-Gaussian model.

Lorenz-96 twin experiment (Sakov & Oke 2008, Tellus A 60, "A deterministic formulation of the ensemble Kalman filter",
Table 1; the same set-up as DAPPER's ``mods/Lorenz96/sakov2008.py``): 40 variables, F = 8, RK4 with dt = 0.05, every
variable observed every step with unit error variance (R = I), no model error. Reference time-averaged analysis
RMSEs, with the ensemble sizes and inflation stated there (DAPPER's reproductions of the paper's numbers):

* ETKF (symmetric square root with random rotation), N = 24, inflation 1.013: 0.18
* stochastic EnKF (perturbed observations), N = 40, inflation 1.06:          0.22
* LETKF, N = 7, inflation 1.04, Gaspari-Cohn localisation with DAPPER's ``loc_rad = 4`` (its GC half-width is
  ``1.82 loc_rad`` = 7.28 grid units), random rotation (Bocquet 2011 fig. 6 as reproduced by DAPPER):   0.22

Here: 2000 cycles after a 200-cycle spin-up of the truth, the first 200 cycles left out of the averages (the paper
runs 10^5 cycles; 1800 averaged cycles pin the mean to about +-3 %). Acceptance: within 10 % of the reference, with
spread/skill near one and innovation variance consistent with R + HPH^T. Measured (seeds below): ETKF 0.174, EnKF
0.209, LETKF 0.208.

These runs use the in-memory cycle driver (:class:`twin.assimilation.cycle.EnsembleCycle`): 2000 cycles through files
would take ~1000 s per filter. Its analysis is the campaign's (:class:`twin.assimilation.analysis.EnsembleAnalysis`),
and :func:`test_campaign_runs_the_verified_cycle` shows that a Lorenz-96 campaign run online
(:func:`twin.campaign.online.run_online`, what ``twin run`` runs: files, checkpoints, the PETSc TS model) gives the
same diagnostics, record for record, as this driver fed with the campaign's model, observations, method and random
streams. The Kalman limit of the ETKF is checked on a campaign itself (a linear
advection-diffusion twin run by :func:`twin.campaign.online.run_online`, read back from its files).
"""

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from mpi4py import MPI
from linear_case import linear_campaign

from twin.assimilation.cycle import EnsembleCycle, ObservationSchedule, twin_truth
from twin.observations.base import LinearObservations
from twin.assimilation.ensemble import ETKF, EnKF
from twin.assimilation.inflation import Inflation
from twin.assimilation.letkf import LETKF, Geometry
from twin.assimilation.transforms import ControlParameter, ControlVector
from twin.kinds.lorenz96.model import BatchedForecast

NX, F, DT = 40, 8.0, 0.05


@pytest.fixture(scope="module")
def experiment():
    fc = BatchedForecast(DT, F)
    sch = ObservationSchedule(DT, every=1, n_cycles=2000, burn_in=200)
    obs = LinearObservations(sp.identity(NX), 1.0, np.arange(NX, dtype=float)[:, None])
    x0 = np.full(NX, F)
    x0[0] += 0.01
    truth, y = twin_truth(fc, x0, {}, sch, obs, seed=2008, spinup_cycles=200)
    geo = Geometry(np.arange(NX, dtype=float)[:, None], 1, np.array([float(NX)]))
    return fc, sch, obs, truth, y, geo


def _run(method, experiment, seed=1):
    fc, sch, obs, truth, y, geo = experiment

    def initial(member, rng):
        return truth[0] + rng.standard_normal(NX), {}

    cyc = EnsembleCycle(method, fc, obs, sch, MPI.COMM_SELF, NX, geometry=geo, seed=seed)
    res = cyc.run(initial, y, truth)
    cyc.free()
    return res.averages, res.rank_histogram


@pytest.mark.parametrize("method, reference", [
    (ETKF(24, Inflation(1.013), rotate=True), 0.18),
    (EnKF(40, Inflation(1.06)), 0.22),
    (LETKF(7, 1.82 * 4, Inflation(1.04), rotate=True), 0.22),
], ids=["etkf-N24", "enkf-N40", "letkf-N7"])
def test_lorenz96_rmse_matches_sakov_oke_2008(experiment, method, reference):
    avg, hist = _run(method, experiment)
    assert avg["rmse_a"] == pytest.approx(reference, rel=0.10), avg
    assert avg["rmse_a"] < avg["rmse_f"]
    assert 0.8 < avg["spread_skill_a"] < 1.25, avg
    assert avg["innovation_var"] == pytest.approx(avg["innovation_expected_var"], rel=0.1)
    assert abs(avg["innovation_mean"]) < 0.05
    # the rank histogram is roughly flat (no bin below half or above twice the mean)
    assert hist.min() > 0.5 * hist.mean() and hist.max() < 2.0 * hist.mean(), hist


def test_joint_state_and_forcing_estimation(experiment):
    """F joins the control vector in log space: starting from F ~ logN(log 6, 0.1^2) the ETKF recovers F = 8 and
    every member keeps F > 0."""
    fc, _, obs, truth, y, _ = experiment
    sch = ObservationSchedule(DT, every=1, n_cycles=400, burn_in=200)
    control = ControlVector(NX, [ControlParameter("F", 1, "log")])

    def initial(member, rng):
        return truth[0] + rng.standard_normal(NX), {"F": 6.0 * np.exp(0.1 * rng.standard_normal())}

    cyc = EnsembleCycle(ETKF(30, Inflation(1.02), rotate=True), fc, obs, sch, MPI.COMM_SELF, NX, control=control,
                        seed=3)
    res = cyc.run(initial, y[:400], truth[:401])
    cyc.free()
    F_est = res.parameter_mean["F"]
    assert F_est[0] < 7.5
    assert np.mean(F_est[200:]) == pytest.approx(F, abs=0.1)
    # the control holds log F; the physical members are exp of it, hence positive
    assert res.final_members.shape == (NX + 1, 30)
    assert res.averages["rmse_a"] < 0.3


def _linear_model(n=6):
    """A stable linear model: a slightly damped rotation of pairs of variables plus weak coupling."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n))
    Q, _ = np.linalg.qr(A)
    return 0.98 * Q


def test_linear_gaussian_enkf_converges_to_kalman_filter():
    """On x_{k+1} = M x_k, y_k = H x_k + e (no model error), the stochastic EnKF whose initial ensemble has exactly
    the prior's mean and covariance, with N = 4000, is within its sampling error of the Kalman filter (a few % of
    the KF standard deviation). The ETKF's Kalman limit (round-off) is checked on a campaign below."""
    n, cycles = 6, 15
    M = _linear_model(n)
    H = np.zeros((3, n))
    H[[0, 1, 2], [0, 2, 4]] = 1.0
    r = np.full(3, 0.5)
    rng = np.random.default_rng(1)
    x_t = rng.standard_normal(n)
    m0, P0 = np.zeros(n), np.eye(n)
    ys, truth = [], [x_t.copy()]
    for _ in range(cycles):
        x_t = M @ x_t
        truth.append(x_t.copy())
        ys.append(H @ x_t + r * rng.standard_normal(3))
    ys, truth = np.array(ys), np.array(truth)
    m, P = _kalman_filter(M, H, r, m0, P0, ys)[-1]

    def forecast(states, params, t0, t1):
        return M @ states

    obs = LinearObservations(H, r)
    sch = ObservationSchedule(1.0, 1, cycles)
    N = 4000
    Z = np.random.default_rng(5).standard_normal((n, N))
    Z -= Z.mean(axis=1, keepdims=True)
    L = np.linalg.cholesky(Z @ Z.T / (N - 1))
    E0 = m0[:, None] + np.linalg.cholesky(P0) @ np.linalg.solve(L, Z)
    cyc = EnsembleCycle(EnKF(N), forecast, obs, sch, MPI.COMM_SELF, n, seed=4)
    res = cyc.run(lambda j, rng: (E0[:, j], {}), ys, truth, gather_final=True)
    cyc.free()
    E = res.final_ensemble
    assert np.max(np.abs(E.mean(axis=1) - m) / np.sqrt(np.diag(P))) < 0.1
    assert np.max(np.abs(np.cov(E) - P)) < 0.05 * np.max(np.abs(P))


def _kalman_filter(M, H, r, m, P, ys):
    """Kalman-filter analyses ``(m_k, P_k)`` of ``x_{k+1} = M x_k``, ``y_k = H x_k + e``, ``e ~ N(0, diag(r^2))``."""
    out = []
    for y in ys:
        m, P = M @ m, M @ P @ M.T
        K = P @ H.T @ np.linalg.inv(H @ P @ H.T + np.diag(r ** 2))
        m, P = m + K @ (y - H @ m), (np.eye(m.size) - K @ H) @ P
        out.append((m, P))
    return out


LINEAR_CAMPAIGN = linear_campaign("kalman_limit", N=12, cycles=6, solver="{ksp_type: preonly, pc_type: lu}",
                                  tail="resources: {type: local, ranks: 1, workers: 1}\n"
                                  "outputs: {checkpoint_every: 1}\n")  # the test reads every cycle's ensemble


def test_campaign_etkf_is_the_kalman_filter(tmp_path):
    """The Kalman limit through the product path: ``run_online`` on a linear advection-diffusion campaign (8 cells,
    PETSc TS with a direct solve, 3 point observations, ETKF with 12 members, no inflation). With ``x_{k+1} = M x_k``
    linear and ``H`` linear, the ETKF analysis mean and covariance are the Kalman filter's started from the initial
    ensemble's sample mean and covariance, to round-off. ``M`` is the model's one-cycle map applied to unit vectors;
    the ensembles, observations and errors are read back from the campaign's files."""
    from twin.campaign import context as ctx
    from twin.campaign import layout
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign
    from twin.io.checkpoint import CheckpointReader

    path = tmp_path / "kalman.yaml"
    path.write_text(LINEAR_CAMPAIGN)
    (exp,) = run_online(load_campaign(path), MPI.COMM_SELF, tmp_path / "run")
    assert (exp / "done.json").is_file()

    def ensemble(cycle):
        with CheckpointReader(layout.checkpoint_file(exp, cycle)) as r:
            return r.read_field("tracer").reshape(12, -1).T

    with CheckpointReader(layout.observations_file(exp)) as r:
        ys, err = r.read_array("observations"), r.read_array("error_std")
    cfg = load_campaign(layout.config_file(exp)).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        sch, obs = ctx.schedule(cfg, model), ctx.observations(cfg, model)
        n = model.grid.size
        M = np.empty((n, n))
        x = model.create_state()
        for j in range(n):
            model.grid.set_global(np.eye(n)[j], x)
            model.advance(x, *sch.window(0))
            M[:, j] = model.grid.allgather(x).ravel()
        x.destroy()
        H = obs.matrix.toarray()
    finally:
        model.destroy()
    E0 = ensemble(0)
    kf = _kalman_filter(M, H, err, E0.mean(axis=1), np.cov(E0), ys)
    for k, (m, P) in enumerate(kf):
        E = ensemble(k + 1)
        assert np.max(np.abs(E.mean(axis=1) - m) / np.sqrt(np.diag(P))) < 1e-10, k
        assert np.max(np.abs(np.cov(E) - P)) < 1e-10 * np.max(np.abs(P)), k
    # the analysis did something: the last covariance is well below the prior's
    assert np.trace(kf[-1][1]) < 0.5 * np.trace(np.cov(E0))


#: the methods' own settings in the campaign of test_campaign_runs_the_verified_cycle
L96_METHODS = {"etkf": {"rotate": True, "inflation": {"multiplicative": 1.1}},
               "enkf": {"inflation": {"multiplicative": 1.05, "rtps": 0.5}},
               "letkf": {"rotate": True, "localisation": {"radius": 4.0},
                         "inflation": {"multiplicative": 1.03, "rtpp": 0.3}}}


def _l96_campaign(method: str) -> str:
    """A Lorenz-96 twin campaign: 40 variables all observed, forcing estimated, 16 members, 6 cycles."""
    return yaml.safe_dump({
        "schema_version": 1,
        "campaign": {"name": f"l96_{method}", "seed": 7},
        "models": {"l96": {"type": "lorenz96", "n": 40, "dt": 0.05, "initial_condition": "random",
                           "perturbation": 1.0,
                           "forcing": {"value": 8.0, "prior": {"dist": "normal", "mean": 8.0, "std": 0.5},
                                       "estimable": True}}},
        "timeline": {"start": 0.0, "end": 1.0, "units": "s"},
        "resources": {"type": "local", "ranks": 1, "workers": 1},
        "assimilation": {"method": method, "N": 16, "seed": 3, "schedule": {"every": 1, "cycles": 6},
                         "observations": [{"type": "all_points", "component": 0, "error_std": 1.0}],
                         **L96_METHODS[method]},
    }, sort_keys=False)


@pytest.mark.parametrize("method", ["etkf", "enkf", "letkf"])
def test_campaign_runs_the_verified_cycle(tmp_path, method):
    """``run_online`` on a Lorenz-96 campaign (forcing estimated, inflation and relaxation, random rotations or
    perturbed observations, localisation for LETKF) and :class:`EnsembleCycle` fed with that campaign's model (the
    PETSc TS, member by member), observations, method, control vector, initial members and random streams give the
    same nature run and the same diagnostics record for record, and the same final ensemble: the cycle the
    literature tests above verify is the one campaigns run."""
    from twin.assimilation.cycle import ModelForecast
    from twin.campaign import context as ctx
    from twin.campaign import layout
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign
    from twin.io.checkpoint import CheckpointReader
    import xarray as xr

    path = tmp_path / "c.yaml"
    path.write_text(_l96_campaign(method))
    (exp,) = run_online(load_campaign(path), MPI.COMM_SELF, tmp_path / "run")
    assert (exp / "done.json").is_file()
    with CheckpointReader(layout.observations_file(exp)) as r:
        truth, ys = r.read_array("truth"), r.read_array("observations")
    with CheckpointReader(layout.checkpoint_file(exp, 6)) as r:
        final_states = r.read_field("l96").reshape(16, -1).T
        final_F = np.asarray(r.scalar_parameters["F"], dtype=float)
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        campaign = {k: ds[k].values for k in ds.data_vars if ds[k].dims == ("time",)}
    with xr.open_dataset(exp / "free_run.nc", decode_times=False) as ds:
        free = ds["rmse_free"].values[1:]

    cfg = load_campaign(layout.config_file(exp)).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    forecast = ModelForecast(model)
    try:
        obs, sch, control = ctx.observations(cfg, model), ctx.schedule(cfg, model), ctx.control_vector(model)
        # the nature run: twin_truth with the campaign's streams is the campaign's
        x0 = ctx.true_initial_state(cfg, model)
        again, y_again = twin_truth(forecast, x0, {"F": 8.0}, sch, obs, ctx.streams(cfg))
        assert np.array_equal(again, truth) and np.array_equal(y_again, ys)
        geometry = Geometry.from_grid(model.grid) if method == "letkf" else None
        cyc = EnsembleCycle(ctx.method(cfg, 16), forecast, obs, sch, MPI.COMM_SELF, model.grid.size,
                            geometry=geometry, control=control, seed=ctx.streams(cfg))
        res = cyc.run(lambda m, rng: ctx.initial_member(cfg, model, m), ys, truth, gather_final=True)
        cyc.free()
    finally:
        forecast.destroy()
        model.destroy()
    assert len(res.records) == 6 and set(res.records[0]) <= set(campaign)
    for key in res.records[0]:
        np.testing.assert_allclose([rec[key] for rec in res.records], campaign[key], rtol=1e-12, atol=1e-14,
                                   err_msg=key)
    np.testing.assert_allclose(res.final_ensemble[:-1], final_states, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.final_ensemble[-1], final_F, rtol=1e-12)
    # and the analysis did its job: well below the free run (the first cycles start off the attractor)
    assert np.all(campaign["rmse"] < campaign["rmse_forecast"])
    assert campaign["rmse"][-1] < 0.5 * free[-1], (campaign["rmse"], free)
