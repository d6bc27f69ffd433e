"""LETKF twin experiment on the rotating shallow-water model with station observations (issue #7).

Set-up: 16 x 16 doubly periodic cells over 1600 km, mean depth 1000 m, dt = 300 s (PETSc TS, member by member through
:class:`~twin.assimilation.cycle.ModelForecast`). Truth and members are the same balanced turbulence (wavenumber 2,
max 10 m/s) plus independent balanced perturbations (wavenumber 2, max 3 m/s; seeds 100 for the truth, 1..N for the
members), so the truth is statistically a member. 64 stations on a regular 8 x 8 lattice observe h, u and v (errors
0.2 m, 0.3 m/s, 0.3 m/s) every 2 steps (10 min); LETKF N = 48, Gaspari-Cohn half-width 600 km, multiplicative
inflation 1.1; 40 cycles, the first 20 left out of the time averages.

Why the earlier set-up (N = 24, Gaspari-Cohn half-width 500 km, inflation 1.3) had spread/skill ~0.47, measured
(scratch runs with per-variable diagnostics and a Helmholtz / linear-balance split of error and spread):

* The initial ensemble is drawn consistently: over 40 truth draws against one 48-member ensemble, the mean squared
  error of the initial mean is 1.07-1.15 times the mean ensemble variance per variable (expected (N+1)/N = 1.02; the
  excess is the sampling error of one 48-member ensemble), so the truth is a plausible member.
* The cause is rank: the perturbation distribution has an effective dimension of 27 (41 directions for 99 % of its
  variance; SVD of 200 draws), more than the N - 1 = 23 directions of a 24-member ensemble. Localisation adds little
  rank here, because a half-width of 500 km (support 1000 km) covers most of the 1600 km periodic domain. The part of
  the truth's deviation outside the ensemble subspace is never corrected and never in the spread, so the very *first*
  analysis, before any dynamics, is already over-confident: spread/skill 0.43 (h), 0.29 (u), 0.36 (v) (inflation
  1.0). Global ETKF without inflation: N = 24 collapses (time-mean spread/skill 0.02), N = 48 still collapses (0.12),
  N = 96 (more members than the 41 directions) gives 0.62 with first-analysis values 0.73-0.93. Multiplicative
  inflation or RTPS cannot help: they only rescale spread inside the ensemble subspace (RTPS 0.8 at N = 48 gave an
  RMSE of 0.71 against 0.11 with inflation 1.1); balanced additive perturbations (climatological anomalies, 10-20 %)
  at N = 24, with inflation 1.0-1.1, left spread/skill at 0.28-0.33 and did not lower the RMSE.
* Gravity waves from unbalanced, localised increments are secondary: at N = 48 the divergent wind error is
  0.011-0.015 m/s against a rotational wind error of 0.06-0.2 m/s. What remains is that h is less dispersive than u
  and v (the h / u spread/skill ratio is ~0.7 in every set-up tried): the unbalanced part of h (h minus f0 psi / g)
  grows in the truth from 0.1 m to ~1 m in the first hour, the nonlinear adjustment of linearly balanced states at
  Rossby number ~0.8, and its error stays ~1.3-1.5 times its spread for about 20 cycles. Halving speeds (Rossby
  number 0.4) or changing the localisation radius (400-700 km) did not change the h / (u, v) ratio; spinning truth
  and members up for 3-12 h first made spread/skill worse (0.89 after 3 and 6 h, 0.73 after 12 h, against 1.01
  without; N = 48, 500 km, 30 cycles), presumably because the flow cascades to smaller scales, which adds directions
  to the error.

Choices, each for the reason above:

* N = 48: more members than the effective dimension of the error (27), so with localisation the ensemble spans the
  truth's deviation. First-analysis spread/skill (this set-up, second test): 0.24 (N = 24), 0.59 (48), 0.79 (72),
  0.87 (96); 48 is the smallest size whose cycled spread/skill settles near 1 (N = 32, 40 with inflation 1.3 and 500
  km: 0.73, 0.96 with larger RMSE), at half the cost of 96.
* Gaspari-Cohn half-width 600 km (support 1200 km): at N = 48 and inflation 1.1 the h RMSE is 0.145 against 0.162 at
  500 km and 0.201 at 400 km (30 cycles), with spread/skill 0.92, 1.01, 1.03; no localisation collapses (0.12).
* Multiplicative inflation 1.1, no RTPS: at N = 48 and 500 km (30 cycles, burn-in 10) 1.0 gives spread/skill 0.43
  (sampling error of the local transforms still shrinks the spread), 1.05 gives 0.76, 1.2 gives 1.19 with a 50 %
  larger RMSE; RTPS 0.2-0.3 (with inflation 1.0-1.05, 500-600 km) gave 0.61-0.84 with 10-30 % larger RMSE and did not
  lift h relative to u and v.
* h, u and v observed: observing h only (N = 48, inflation 1.2) gave RMSE 0.67 and spread/skill 0.61.
* 40 cycles, burn-in 20: the spread/skill of each analysis rises from 0.59 (cycle 0) to ~1 by cycle 20 and stays
  there (cycles 20-59 of a 60-cycle run: 0.86-1.18, mean ~1.0), as the inflation builds up spread in the
  under-dispersive unbalanced h; averaging from cycle 10 instead gives 0.86.

Measured with this test's seeds (one run): free-run RMSE 1.481 (h 2.031 m, u 1.101 m/s, v 1.114 m/s), LETKF
analysis RMSE 0.106 (h 0.155 m, u 0.072 m/s, v 0.065 m/s), ratio 0.071; time-mean spread/skill 0.96 (h 0.84,
u 1.18, v 1.29). The same set-up with truth and observation seeds 200, 300, 400: spread/skill 1.02, 0.96, 0.99
(h 0.88, 0.85, 0.87; u 1.32, 1.12, 1.32; v 1.33, 1.20, 1.18), analysis / free-run RMSE 0.087, 0.071, 0.082. h stays
the least dispersive variable and u, v the most (see above), so the per-variable band asserted is wider than the
overall one.
Cost: 2 x 48 members x 80 steps, forecast one by one; measured ~20 s of CPU time for this test while other jobs
loaded the 2 cores (load average ~9; 42-63 s wall clock then), against 3.8 s wall for the earlier 24-member,
30-cycle set-up on a quiet machine.
"""

import numpy as np
from mpi4py import MPI

from twin.assimilation.cycle import EnsembleCycle, ModelForecast, ObservationSchedule
from twin.observations.base import LinearObservations
from twin.assimilation.inflation import Inflation
from twin.assimilation.letkf import LETKF, Geometry
from twin.kinds.shallow_water import ShallowWater
from twin.kinds.shallow_water.observations import StationOperator

L, NC = 1.6e6, 16
VARIABLES = ("h", "u", "v")
RADIUS, INFLATION = 6.0e5, 1.1


def _balanced(seed, speed):
    m = ShallowWater("sw_da_ic", MPI.COMM_SELF, (NC, NC), ((0, L), (0, L)), dt=300.0, mean_depth=1000.0,
                     initial=("balanced_turbulence", {"speed": speed, "seed": seed, "wavenumber": 2}))
    x = m.initial_state()
    full = m.grid.allgather(x).ravel()
    x.destroy()
    m.destroy()
    return full


class _Recording:
    """A forecast that keeps the states it is given: from cycle 1 on these are the previous cycle's analysis
    ensemble, which gives per-variable diagnostics without changing the cycle driver."""

    def __init__(self, forecast):
        self.forecast = forecast
        self.inputs = []

    def __call__(self, states, params, t0, t1):
        self.inputs.append(states.copy())
        return self.forecast(states, params, t0, t1)


def _per_variable(ensembles, truths):
    """Per variable (state entries ``c::3``): RMSE of the mean and spread of each ensemble in ``ensembles``."""
    out = {}
    for c, v in enumerate(VARIABLES):
        err = np.array([np.sqrt(np.mean((E[c::3].mean(axis=1) - x[c::3]) ** 2)) for E, x in zip(ensembles, truths)])
        spr = np.array([np.sqrt(np.mean(E[c::3].var(axis=1, ddof=1))) for E in ensembles])
        out[v] = (err, spr)
    return out


class _Experiment:
    """Truth, observations and initial members of the twin experiment (see the module docstring)."""

    def __init__(self, n_members, n_cycles, burn_in):
        self.model = ShallowWater("sw_da", MPI.COMM_SELF, (NC, NC), ((0, L), (0, L)), dt=300.0, mean_depth=1000.0)
        centre = _balanced(0, 10.0)
        depth = centre[0::3].mean()

        def anomaly(seed):
            a = _balanced(seed, 3.0)
            a[0::3] -= depth
            return a

        truth0 = centre + anomaly(100)
        xs = (np.arange(8) + 0.5) * L / 8
        sites = np.array([[a, b] for a in xs for b in xs])
        self.op = StationOperator(self.model.grid, sites, list(VARIABLES), {"h": 0.2, "u": 0.3, "v": 0.3})
        self.obs = LinearObservations.from_operator(self.op)
        self.fc = ModelForecast(self.model)
        self.sch = ObservationSchedule(300.0, 2, n_cycles, burn_in=burn_in)
        rng = np.random.default_rng(100)
        x, truth, ys = truth0[:, None], [truth0], []
        for k in range(self.sch.n_cycles):
            x = self.fc(x, {}, *self.sch.window(k))
            truth.append(x[:, 0])
            ys.append(self.obs.perturbed(x[:, 0], rng))
        self.truth, self.ys = np.array(truth), np.array(ys)
        self.members = np.column_stack([centre + anomaly(j + 1) for j in range(n_members)])

    def assimilate(self, forecast):
        N = self.members.shape[1]
        cyc = EnsembleCycle(LETKF(N, RADIUS, Inflation(INFLATION)), forecast, self.obs, self.sch, MPI.COMM_SELF,
                            self.truth.shape[1], geometry=Geometry.from_grid(self.model.grid), seed=2)
        res = cyc.run(lambda j, rng: (self.members[:, j], {}), self.ys, self.truth)
        cyc.free()
        return res

    def destroy(self):
        self.fc.destroy()
        self.op.destroy()
        self.model.destroy()


def test_letkf_station_twin_experiment_beats_free_run_with_calibrated_spread():
    ex = _Experiment(48, 40, 20)
    rec = _Recording(ex.fc)
    res = ex.assimilate(rec)
    burn, n = ex.sch.burn_in, ex.sch.n_cycles
    analyses = rec.inputs[1:] + [res.final_members]
    E, free = ex.members.copy(), []
    for k in range(n):
        E = ex.fc(E, {}, *ex.sch.window(k))
        free.append(E)
    truths = ex.truth[1:]
    free_rmse = float(np.mean([np.sqrt(np.mean((F.mean(axis=1) - x) ** 2)) for F, x in zip(free, truths)][burn:]))
    avg = res.averages
    per_var = _per_variable(analyses, truths)
    free_var = _per_variable(free, truths)
    ex.destroy()

    # the recorded analyses are the cycle's own: their overall RMSE matches the driver's diagnostics
    overall = [np.sqrt(np.mean((A.mean(axis=1) - x) ** 2)) for A, x in zip(analyses, truths)]
    np.testing.assert_allclose(overall, res.diagnostics["rmse_a"], rtol=1e-10)
    # measured 0.071 (RMSE 0.106 vs free run 1.481)
    assert avg["rmse_a"] < 0.15 * free_rmse, (avg, free_rmse)
    assert avg["rmse_a"] < avg["rmse_f"]
    # measured 0.96
    assert 0.7 <= avg["spread_skill_a"] <= 1.3, avg
    for v, (err, spr) in per_var.items():
        ratio = spr[burn:].mean() / err[burn:].mean()
        # measured h 0.84, u 1.18, v 1.29 (other seeds up to 1.33): h is the least dispersive (module docstring)
        assert 0.65 <= ratio <= 1.45, (v, ratio)
        # measured analysis / free-run RMSE: h 0.076, u 0.065, v 0.058
        assert err[burn:].mean() < 0.15 * free_var[v][0][burn:].mean(), (v, err[burn:].mean())


def test_first_analysis_needs_more_members_than_the_error_dimension():
    """The diagnosis in one cycle: the initial ensemble is consistent with the truth (first forecast spread/skill
    measured 0.89 at N = 24, 0.95 at N = 96), yet with N = 24, fewer members than the ~27 effective directions of
    the perturbations, the first analysis is over-confident before any later dynamics can matter (measured 0.24);
    with N = 96 it is close to reliable (measured 0.87)."""
    for n, check in ((24, lambda r: r < 0.35), (96, lambda r: r > 0.75)):
        ex = _Experiment(n, 1, 0)
        res = ex.assimilate(ex.fc)
        ex.destroy()
        forecast_ratio = res.averages["spread_f"] / res.averages["rmse_f"]
        assert 0.8 <= forecast_ratio <= 1.2, (n, forecast_ratio)
        assert check(res.averages["spread_skill_a"]), (n, res.averages)
