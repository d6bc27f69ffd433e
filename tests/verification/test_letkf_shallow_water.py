"""LETKF twin experiment on the rotating shallow-water model with station observations.

Set-up: 16 x 16 doubly periodic cells over 1600 km, mean depth 1000 m, dt = 300 s (PETSc TS, member by member through
:class:`~twin.assimilation.cycle.ModelForecast`). Truth and members are the same balanced turbulence (wavenumber 2,
10 m/s) plus independent balanced perturbations (3 m/s), so the truth is statistically a member. 64 stations on a
regular 8 x 8 lattice observe h, u and v (errors 0.2 m, 0.3 m/s, 0.3 m/s) every 2 steps (10 min); LETKF N = 24,
Gaspari-Cohn half-width 500 km, multiplicative inflation 1.3; 30 cycles, the first 10 left out of the averages.

Measured (this set-up): free-run RMSE ~1.55, LETKF analysis RMSE ~0.32 (h, u, v together, m and m/s), spread/skill
~0.47. The analysis error is far below the free-run error; the spread/skill ratio is *not* near one: localised
increments are not geostrophically balanced and excite gravity waves common to all members, an error the ensemble
spread does not represent (more inflation makes both worse). This test guards the first property and records the
second; the issue's "spread/skill near 1" for shallow water is not met yet.
"""

import numpy as np
from mpi4py import MPI

from twin.assimilation.cycle import EnsembleCycle, LinearObservations, ModelForecast, ObservationSchedule
from twin.assimilation.inflation import Inflation
from twin.assimilation.letkf import LETKF, Geometry
from twin.models.shallow_water import ShallowWater
from twin.observations.atmosphere import StationOperator

L, NC, N = 1.6e6, 16, 24


def _balanced(seed, speed):
    m = ShallowWater("sw_da_ic", MPI.COMM_SELF, (NC, NC), ((0, L), (0, L)), dt=300.0, mean_depth=1000.0,
                     initial=("balanced_turbulence", {"speed": speed, "seed": seed, "wavenumber": 2}))
    x = m.initial_state()
    full = m.grid.allgather(x).ravel()
    x.destroy()
    m.destroy()
    return full


def test_letkf_station_twin_experiment_beats_free_run():
    model = ShallowWater("sw_da", MPI.COMM_SELF, (NC, NC), ((0, L), (0, L)), dt=300.0, mean_depth=1000.0)
    centre = _balanced(0, 10.0)
    depth = centre[0::3].mean()

    def anomaly(seed):
        a = _balanced(seed, 3.0)
        a[0::3] -= depth
        return a

    truth0 = centre + anomaly(100)
    xs = (np.arange(8) + 0.5) * L / 8
    sites = np.array([[a, b] for a in xs for b in xs])
    op = StationOperator(model.grid, sites, ["h", "u", "v"], {"h": 0.2, "u": 0.3, "v": 0.3})
    obs = LinearObservations.from_operator(op)
    fc = ModelForecast(model)
    sch = ObservationSchedule(300.0, 2, 30, burn_in=10)
    rng = np.random.default_rng(0)
    x, truth, ys = truth0[:, None], [truth0], []
    for k in range(sch.n_cycles):
        x = fc(x, {}, *sch.window(k))
        truth.append(x[:, 0])
        ys.append(obs.perturbed(x[:, 0], rng))
    truth, ys = np.array(truth), np.array(ys)
    members = {j: centre + anomaly(j + 1) for j in range(N)}

    cyc = EnsembleCycle(LETKF(N, 5.0e5, Inflation(1.3)), fc, obs, sch, MPI.COMM_SELF, truth0.size,
                        geometry=Geometry.from_grid(model.grid), seed=2)
    res = cyc.run(lambda j, rng: (members[j], {}), ys, truth)
    cyc.free()

    E = np.column_stack([members[j] for j in range(N)])
    free = []
    for k in range(sch.n_cycles):
        E = fc(E, {}, *sch.window(k))
        free.append(np.sqrt(np.mean((E.mean(axis=1) - truth[k + 1]) ** 2)))
    free_rmse = float(np.mean(free[sch.burn_in:]))
    avg = res.averages
    assert avg["rmse_a"] < 0.35 * free_rmse, (avg, free_rmse)
    assert avg["rmse_a"] < avg["rmse_f"]
    assert 0.3 < avg["spread_skill_a"] < 1.5, avg
    fc.destroy()
    op.destroy()
    model.destroy()
