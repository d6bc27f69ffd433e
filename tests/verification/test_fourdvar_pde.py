"""Taylor tests of the 4D-Var gradient through the PDE models' TSAdjoint: shallow water (initial state with a
diffusion B on the three fields, and the log-transformed drag) and the tumour model (initial cell density, the
proliferation field k(x) with a diffusion prior, and a scalar diffusivity, both in log space). The remainder
|J(c + h dc) - J(c) - h dJ.dc| must fall as h^2 (rate > 1.9)."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.assimilation.covariance import DiffusionCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.var_control import ParameterControl
from twin.assimilation.verify import taylor_rates
from twin.observations.base import LinearObservationOperator, interpolation_matrix


def synthetic_observations(model, H, times, std, rng, perturb):
    x = model.initial_state()
    x.getArray()[...] *= perturb
    obs, t = [], 0.0
    for tk in times:
        model.advance(x, t, tk)
        t = tk
        obs.append(Observation(tk, H, H.apply(x) + std * rng.standard_normal(H.n_obs)))
    x.destroy()
    return obs


def test_taylor_shallow_water_state_and_drag():
    sw = pytest.importorskip("twin.kinds.shallow_water")
    L = 2.0e6
    model = sw.ShallowWater("sw4dvar", MPI.COMM_SELF, (12, 9), ((0, L), (0, 0.75 * L)), dt=120.0, mean_depth=1000.0,
                            parameters={"drag": 1e-5, "forcing_amplitude": 1e-5, "beta": 1e-11},
                            initial=("balanced_turbulence", {"speed": 20.0, "seed": 2}))
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0.1, 0.9, 10) * L, rng.uniform(0.1, 0.9, 10) * 0.75 * L])
    H = LinearObservationOperator(model.grid, interpolation_matrix(model.grid, pts, component=0), 0.5, name="h")
    obs = synthetic_observations(model, H, (1200.0, 2400.0), 0.5, rng, 1.0)
    B = DiffusionCovariance(model.grid, [0.5, 0.2, 0.2], length_scale=3e5, prefix="sw4dvar_B_")
    xb = model.initial_state()
    fn = FourDVar(model, (0.0, 2400.0), obs, xb, B, [ParameterControl("drag", std=0.5, background=2e-5)])
    c, dc = fn.create_control(), fn.create_control()
    fn.space.from_natural(0.3 * rng.standard_normal(fn.space.size), c)
    fn.space.from_natural(rng.standard_normal(fn.space.size), dc)
    rates, res = taylor_rates(fn, c, dc, (0.2, 0.1, 0.05, 0.025))
    assert rates.min() > 1.9, (rates, res)
    for v in (c, dc, xb):
        v.destroy()
    fn.destroy()
    for obj in (B, H, model):
        obj.destroy()


def test_taylor_tumour_state_k_field_and_diffusivity():
    tm = pytest.importorskip("twin.kinds.tumour")
    from twin.core.grid import Grid
    from twin.core.petsc import set_options

    grid = Grid(MPI.COMM_SELF, (16, 14), ((0.0, 40.0), (0.0, 35.0)), name="tumour")
    tissue = tm.brain_phantom(grid.mesh(), grid.extent, smoothing=3.0)
    k = 0.3 * np.ones(grid.shape[::-1])
    values = dict(D_white=1.5, D_grey=0.4, k=k, theta=1.0, alpha=0.15, alpha_beta=10.0, kappa=0.3, half_life=1.5)

    def seed(x, y):
        return 0.6 * np.exp(-((x - 17.0) ** 2 + (y - 18.0) ** 2) / (2 * 4.0 ** 2))

    set_options("tum4dvar_", {"ts_type": "cn", "snes_rtol": 1e-13, "snes_atol": 1e-14, "ksp_rtol": 1e-14})
    model = tm.TumourModel("tum4dvar", MPI.COMM_SELF, grid, tissue, values, initial=seed, dt=0.5)
    if not model.get_parameter("k").__class__.__name__ == "Vec":
        pytest.skip("tumour model has no field parameter k in this build")
    rng = np.random.default_rng(1)
    X, Y = grid.mesh()
    pts = np.column_stack([X.ravel(), Y.ravel()])[::7]
    H = LinearObservationOperator(grid, interpolation_matrix(grid, pts), 0.05, name="imaging")
    obs = synthetic_observations(model, H, (2.0, 4.0), 0.05, rng, 1.1)
    B = DiffusionCovariance(grid, 0.05, 4.0, prefix="tum4dvar_B_")
    Bk = DiffusionCovariance(grid, 0.3, 6.0, prefix="tum4dvar_Bk_")
    xb = model.initial_state()
    fn = FourDVar(model, (0.0, 4.0), obs, xb, B,
                  [ParameterControl("k", covariance=Bk, transform="log"),
                   ParameterControl("D_white", std=0.3, transform="log")])
    c, dc = fn.create_control(), fn.create_control()
    fn.space.from_natural(0.3 * rng.standard_normal(fn.space.size), c)
    fn.space.from_natural(rng.standard_normal(fn.space.size), dc)
    rates, res = taylor_rates(fn, c, dc, (0.2, 0.1, 0.05, 0.025))
    assert rates.min() > 1.9, (rates, res)
    for v in (c, dc, xb):
        v.destroy()
    fn.destroy()
    for obj in (B, Bk, H, model):
        obj.destroy()
