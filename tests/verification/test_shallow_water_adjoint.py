"""Shallow-water verification: conservation (mass and tracer to round-off, energy drift bounded), Taylor tests of the
TSAdjoint gradient (initial state and parameters, rate 2), tangent-linear / adjoint dot-product test to round-off."""

import math

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.shallow_water import Bump, ShallowWater

L = 2.0e6


def model(name, shape=(12, 9), **kw):
    kw.setdefault("dt", 120.0)
    kw.setdefault("parameters", {"drag": 1e-5, "forcing_amplitude": 1e-5, "beta": 1e-11})
    return ShallowWater(name, MPI.COMM_SELF, shape, ((0, L), (0, 0.75 * L)), mean_depth=1000.0,
                        initial=("balanced_turbulence", {"speed": 20.0, "seed": 2}),
                        tracer=Bump((L / 2, L / 3), L / 6, 1.0), **kw)


def available_energy(m, x):
    """Total energy minus that of the resting state of the same mass (no topography here)."""
    q = m.qoi(x, 0.0)
    area = L * 0.75 * L
    h_mean = q["mass"].value / area
    return q["energy"].value - 0.5 * m.get_parameter("gravity") * h_mean ** 2 * area


def test_mass_and_tracer_mass_conserved_to_round_off_energy_drift_bounded():
    m = ShallowWater("sw_conserve", MPI.COMM_SELF, (32, 32), ((0, L), (0, L)), dt=300.0, mean_depth=1000.0,
                     initial=("balanced_turbulence", {"speed": 20.0, "seed": 1}),
                     tracer=Bump((L / 2, L / 2), L / 5, 1.0), topography=Bump((L / 4, L / 4), L / 8, 50.0))
    x = m.initial_state()
    q0 = m.qoi(x, 0.0)
    m.advance(x, 0.0, 400 * 300.0)  # 400 steps, about 9 eddy turnover times of the smallest eddies
    q1 = m.qoi(x, 0.0)
    mass = abs(q1["mass"].value - q0["mass"].value) / q0["mass"].value
    tracer = abs(q1["tracer_mass"].value - q0["tracer_mass"].value) / q0["tracer_mass"].value
    m.destroy()
    flat = ShallowWater("sw_conserve_flat", MPI.COMM_SELF, (32, 32), ((0, L), (0, L)), dt=300.0, mean_depth=1000.0,
                        initial=("balanced_turbulence", {"speed": 20.0, "seed": 1}))
    x = flat.initial_state()
    e0 = available_energy(flat, x)
    flat.advance(x, 0.0, 400 * 300.0)
    drift = abs(available_energy(flat, x) - e0) / e0
    flat.destroy()
    print(f"relative change over 400 steps: mass {mass:.2e}, tracer mass {tracer:.2e}, "
          f"available energy {drift:.2e}")
    assert mass < 1e-14
    assert tracer < 1e-13
    assert drift < 1e-3


def _taylor(J, J0, grad_dir, hs):
    rem = [abs(J(h) - J0 - h * grad_dir) for h in hs]
    return rem, [math.log2(rem[i] / rem[i + 1]) for i in range(len(rem) - 1)]


@pytest.fixture(scope="module")
def window():
    m = model("sw_taylor")
    x0 = m.initial_state()
    rng = np.random.default_rng(5)
    w = x0.duplicate()
    w.setArray(rng.standard_normal(w.getLocalSize()))
    T = 30 * 120.0

    def cost(x):
        y = x.copy()
        m.advance(y, 0.0, T)
        value = 0.5 * y.dot(w) ** 2 / w.getSize() + 0.5 * y.dot(y) / w.getSize()
        y.destroy()
        return value

    xT = x0.copy()
    m.advance(xT, 0.0, T)
    lam = w.copy()  # dJ/dx(T) of the cost above
    lam.scale(xT.dot(w) / w.getSize())
    lam.axpy(1.0 / w.getSize(), xT)
    grads = m.adjoint(x0, 0.0, T, lam, ["drag", "gravity", "f0"])
    yield m, x0, cost, lam, grads, T
    m.destroy()


def test_taylor_initial_state_gradient_rate_two(window):
    m, x0, cost, lam, _, _ = window
    rng = np.random.default_rng(7)
    dx = x0.duplicate()
    dx.setArray(rng.standard_normal(dx.getLocalSize()) * np.tile([1.0, 0.02, 0.02, 1e-3], m.grid.size))
    J0 = cost(x0)

    def J(h):
        xh = x0.copy()
        xh.axpy(h, dx)
        return cost(xh)

    rem, rates = _taylor(J, J0, lam.dot(dx), [0.4, 0.2, 0.1, 0.05])
    print(f"Taylor (initial state): remainders {rem}, rates {rates}")
    assert min(rates) > 1.9


@pytest.mark.parametrize("name, scale", [("drag", 1e-5), ("gravity", 9.81), ("f0", 1e-4)])
def test_taylor_parameter_gradients_rate_two(window, name, scale):
    m, x0, cost, _, grads, _ = window
    p0 = m.get_parameter(name)
    J0 = cost(x0)

    def J(h):
        m.set_parameter(name, p0 + h * scale)
        try:
            return cost(x0)
        finally:
            m.set_parameter(name, p0)

    rem, rates = _taylor(J, J0, scale * grads[name], [0.08, 0.04, 0.02])
    print(f"Taylor ({name}): remainders {rem}, rates {rates}")
    assert min(rates) > 1.9


def test_tangent_linear_and_adjoint_pass_the_dot_product_test(window):
    m, x0, _, _, _, T = window
    rng = np.random.default_rng(11)
    dx, y = x0.duplicate(), x0.duplicate()
    dx.setArray(rng.standard_normal(dx.getLocalSize()))
    y.setArray(rng.standard_normal(y.getLocalSize()))
    Mdx = dx.copy()
    m.tangent_linear(x0, Mdx, 0.0, T)
    MTy = y.copy()
    m.adjoint(x0, 0.0, T, MTy)
    lhs, rhs = Mdx.dot(y), dx.dot(MTy)
    print(f"dot-product test: <M dx, y> = {lhs!r}, <dx, M^T y> = {rhs!r}, rel {abs(lhs - rhs) / abs(lhs):.1e}")
    assert lhs == pytest.approx(rhs, rel=1e-12)
