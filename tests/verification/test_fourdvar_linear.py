"""4D-Var on the linear advection-diffusion model: gradient (Taylor test), equality with the Kalman filter, and the
Laplace posterior.

Linear model, linear observations, Gaussian background and observation errors and no model error: the 4D-Var cost is
quadratic, its minimiser is the mean of the Gaussian posterior of ``x(t0)`` given all observations of the window, and
that minimiser propagated to the window end equals the Kalman filter mean at the window end (the Kalman smoother at
``t0``); the inverse Hessian propagated to the end equals the Kalman filter covariance (e.g. Lorenc 1986, QJRMS 112;
Kalnay 2003, sec. 5.6). The Kalman filter here is dense linear algebra on the model's own propagator ``M`` (columns by
``model.advance`` of unit vectors), so both sides use the same discrete model.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

from twin.assimilation.covariance import DiffusionCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.laplace import LaplacePosterior, low_rank_hessian
from twin.assimilation.tao import TaoSettings, minimise
from twin.assimilation.var_control import ParameterControl
from twin.assimilation.verify import taylor_rates
from twin.config.common import LogNormalPrior, NormalPrior
from twin.kinds.linear.model import LinearAdvectionDiffusion
from twin.observations.base import LinearObservationOperator, interpolation_matrix

N = 24
OBS_TIMES = (0.1, 0.2, 0.3, 0.4)
ERR = 0.05


def make_problem(comm, seed=0, params=False):
    priors = {"velocity": NormalPrior(dist="normal", mean=0.5, std=0.2),
              "diffusivity": LogNormalPrior(dist="lognormal", median=0.01, sigma=0.5)}
    model = LinearAdvectionDiffusion("lin4dvar", comm, n=N, dt=0.025, velocity=0.6, diffusivity=0.015,
                                     priors=priors)
    rng = np.random.default_rng(seed)
    B = DiffusionCovariance(model.grid, 0.3, 0.08, prefix="lin4dvar_B_")
    xb = model.initial_state()
    v = model.create_state()
    model.grid.set_global(rng.standard_normal(N), v)
    truth = model.create_state()
    B.sqrt_mult(v, truth)
    truth.axpy(1.0, xb)
    H = LinearObservationOperator(model.grid, interpolation_matrix(model.grid, np.linspace(0.05, 0.95, 5)[:, None]),
                                  ERR, name="probes")
    obs, x, t = [], truth.copy(), 0.0
    for tk in OBS_TIMES:
        model.advance(x, t, tk)
        t = tk
        obs.append(Observation(tk, H, H.apply(x) + ERR * rng.standard_normal(H.n_obs)))
    controls = [ParameterControl("velocity"), ParameterControl("diffusivity")] if params else []
    fn = FourDVar(model, (0.0, OBS_TIMES[-1]), obs, xb, B, controls)
    return model, fn, B, H, [xb, v, truth, x]


def test_taylor_linear_state_and_parameters():
    model, fn, B, H, vecs = make_problem(MPI.COMM_SELF, params=True)
    rng = np.random.default_rng(1)
    c, dc = fn.create_control(), fn.create_control()
    fn.space.from_natural(0.3 * rng.standard_normal(fn.space.size), c)
    fn.space.from_natural(rng.standard_normal(fn.space.size), dc)
    rates, res = taylor_rates(fn, c, dc)
    assert rates.min() > 1.9, (rates, res)
    # parameters alone (the state fixed): the parameter gradients come from TSAdjoint's mu
    dp = fn.create_control()
    full = np.zeros(fn.space.size)
    full[-2:] = rng.standard_normal(2)
    fn.space.from_natural(full, dp)
    rates, res = taylor_rates(fn, c, dp)
    assert rates.min() > 1.9, (rates, res)
    for v in (c, dc, dp, *vecs):
        v.destroy()
    fn.destroy()
    for obj in (B, H, model):
        obj.destroy()


def test_4dvar_equals_kalman_filter_and_laplace_covariance():
    model, fn, B, H, vecs = make_problem(MPI.COMM_SELF)
    grid = model.grid
    # Dense propagator of one observation interval, background covariance and observation matrix.
    e, y = grid.create_global(), grid.create_global()
    M = np.zeros((N, N))
    S = np.zeros((N, N))
    for k in range(N):
        unit = np.zeros(N)
        unit[k] = 1.0
        grid.set_global(unit, e)
        e.copy(y)
        model.advance(y, 0.0, 0.1)
        M[:, k] = grid.allgather(y)
        B.sqrt_mult(e, y)
        S[:, k] = grid.allgather(y)
    Hm = H.matrix.toarray()
    R = ERR**2 * np.eye(H.n_obs)
    x = grid.allgather(fn.xb).copy()
    P = S @ S.T
    for ob in fn.observations:
        x, P = M @ x, M @ P @ M.T
        K = P @ Hm.T @ np.linalg.inv(Hm @ P @ Hm.T + R)
        x = x + K @ (ob.values - Hm @ x)
        P = (np.eye(N) - K @ Hm) @ P

    res = minimise(fn, settings=TaoSettings(gatol=1e-6, grtol=0, max_iterations=500, prefix="lin4dvar_"))
    assert res.converged
    xa = fn.forecast(res.control, OBS_TIMES[-1])
    xa_full = grid.allgather(xa)
    increment = np.abs(grid.allgather(fn.forecast(fn.create_control(), OBS_TIMES[-1])) - x).max()
    assert increment > 0.05  # the observations matter, so the comparison below means something
    assert np.abs(xa_full - x).max() < 1e-5, np.abs(xa_full - x).max()

    # Laplace: the misfit Hessian has rank <= 20 (observation count), so rank 20 is exact for this quadratic J.
    hess = low_rank_hessian(fn, res.control, rank=20, oversampling=4, seed=3)
    post = LaplacePosterior(fn, res.control, hess)
    V = hess.vectors
    C = np.eye(N) - V @ np.diag(hess.eigenvalues / (1 + hess.eigenvalues)) @ V.T
    Mw = np.linalg.matrix_power(M, len(OBS_TIMES))
    P_4dvar = Mw @ S @ C @ S.T @ Mw.T
    # finite-difference Hessian products (step 1e-4) on gradients accurate to ~1e-10: agreement to ~1e-5 relative
    assert np.abs(P_4dvar - P).max() < 1e-4 * np.abs(P).max()
    assert np.allclose(post.control_variance(), np.diag(C))
    for v in (e, y, xa, *vecs):
        v.destroy()
    post.destroy()
    res.control.destroy()
    fn.destroy()
    for obj in (B, H, model):
        obj.destroy()


def test_parameter_estimation_with_laplace_intervals():
    """Twin experiment: velocity and diffusivity (with the initial state) from noisy probes; the MAP is close to the
    truth and the 90% Laplace intervals of both parameters contain it."""
    model, fn, B, H, vecs = make_problem(MPI.COMM_SELF, seed=4, params=True)
    res = minimise(fn, settings=TaoSettings(gatol=1e-5, grtol=0, max_iterations=500, prefix="lin4dvar_p_"))
    assert res.converged
    hess = low_rank_hessian(fn, res.control, rank=22, oversampling=6, seed=1)
    post = LaplacePosterior(fn, res.control, hess)
    intervals = post.scalar_intervals(level=0.9)
    truth = {"velocity": 0.6, "diffusivity": 0.015}
    for name, (lo, mid, hi) in intervals.items():
        assert lo < truth[name] < hi, (name, lo, mid, hi)
        assert lo < mid < hi
    prior_width = {"velocity": 2 * 1.645 * 0.2, "diffusivity": 0.01 * (np.exp(1.645 * 0.5) - np.exp(-1.645 * 0.5))}
    for name, (lo, _, hi) in intervals.items():
        assert hi - lo < 0.75 * prior_width[name], name  # the data inform both parameters
    fields = post.field_intervals(level=0.9, n_samples=100, seed=2)
    lo, mid, hi = fields["initial_state"]
    inside = (lo <= model.grid.allgather(vecs[2])) & (model.grid.allgather(vecs[2]) <= hi)
    assert inside.mean() > 0.75
    post.destroy()
    res.control.destroy()
    for v in vecs:
        v.destroy()
    fn.destroy()
    for obj in (B, H, model):
        obj.destroy()
