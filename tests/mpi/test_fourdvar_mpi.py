"""4D-Var gives the same cost, gradient and analysis on 1 and 2 ranks (linear model, diffusion B, two parameters).

Each rank builds the problem on COMM_SELF (the one-rank answer), then both ranks build it together on COMM_WORLD;
controls and gradients are compared in the rank-independent natural order of the control space.
"""

import numpy as np
from mpi4py import MPI

from twin.assimilation.covariance import DiffusionCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.tao import TaoSettings, minimise
from twin.assimilation.var_control import ParameterControl
from twin.config.common import LogNormalPrior, NormalPrior
from twin.kinds.linear.model import LinearAdvectionDiffusion
from twin.observations.base import LinearObservationOperator, interpolation_matrix


def run(comm, tag):
    priors = {"velocity": NormalPrior(dist="normal", mean=0.5, std=0.2),
              "diffusivity": LogNormalPrior(dist="lognormal", median=0.01, sigma=0.5)}
    model = LinearAdvectionDiffusion(f"linmpi{tag}", comm, n=32, dt=0.025, velocity=0.6, diffusivity=0.015,
                                     priors=priors)
    B = DiffusionCovariance(model.grid, 0.3, 0.08, prefix=f"linmpi{tag}_B_")
    H = LinearObservationOperator(model.grid, interpolation_matrix(model.grid, np.linspace(0.05, 0.95, 6)[:, None]),
                                  0.05, name="probes")
    rng = np.random.default_rng(7)
    truth = model.initial_state()
    truth.scale(1.2)
    obs, t = [], 0.0
    for tk in (0.1, 0.2, 0.3):
        model.advance(truth, t, tk)
        t = tk
        obs.append(Observation(tk, H, H.apply(truth) + 0.05 * rng.standard_normal(6)))
    xb = model.initial_state()
    fn = FourDVar(model, (0.0, 0.3), obs, xb, B, [ParameterControl("velocity"), ParameterControl("diffusivity")],
                  name=f"linmpi{tag}")
    c, g = fn.create_control(), fn.create_control()
    fn.space.from_natural(0.2 * rng.standard_normal(fn.space.size), c)
    J = fn.gradient(c, g)
    grad = fn.space.to_natural(g)
    res = minimise(fn, settings=TaoSettings(gatol=1e-6, grtol=0, max_iterations=500, prefix=f"linmpi{tag}_"))
    analysis = fn.space.to_natural(res.control)
    params = fn.parameter_values(res.control)
    for v in (c, g, truth, xb, res.control):
        v.destroy()
    fn.destroy()
    for obj in (B, H, model):
        obj.destroy()
    return J, grad, analysis, params, res.iterations


def test_gradient_and_analysis_same_on_one_and_two_ranks():
    world = MPI.COMM_WORLD
    assert world.Get_size() == 2
    J1, g1, a1, p1, _ = run(MPI.COMM_SELF, "s")
    J2, g2, a2, p2, _ = run(world, "w")
    assert abs(J1 - J2) <= 1e-10 * abs(J1)
    assert np.abs(g1 - g2).max() <= 1e-8 * np.abs(g1).max()
    # The minimiser stops at |g| <= 1e-6 along slightly different round-off paths: agreement to that level.
    assert np.abs(a1 - a2).max() <= 1e-4 * np.abs(a1).max()
    for name in p1:
        assert abs(p1[name] - p2[name]) <= 1e-5 * abs(p1[name])
