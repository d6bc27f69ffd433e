"""Gradient checks of the structure model: Taylor tests (remainder falls as h^2) for the damage field in static and
dynamic mode, scalar gradients (E0, load scales) against central differences, and dot-product tests of the
observation operators' adjoints."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.structure import Material, StructureModel
from twin.kinds.structure.loads import LoadCase, TimeFunction
from twin.kinds.structure.gauges import Accelerometers, DisplacementSensors, StrainGauges

COMM = MPI.COMM_SELF
GAUGES = np.array([[0.5, 0.2], [1.7, 0.8], [3.1, 0.5], [2.2, 0.05]])


def _model(mode):
    """A small cantilever with a smooth damage field, a harmonic tip load and a growth eigenstrain."""
    kw = {"mode": "dynamic", "dt": 2e-3} if mode == "dynamic" else {}
    m = StructureModel("s", COMM, (16, 4), ((0, 4.0), (0, 1.0)),
                          Material(E0=1e4, nu=0.3, rho=1.0, alpha=0.1, beta=1e-3), {"left": "clamped"},
                          [LoadCase("tip", "traction", (0.0, -10.0), "right",
                                    TimeFunction("harmonic", frequency=5.0, phase=0.5))],
                          damage=lambda X, Y: 0.2 + 0.1 * np.sin(X) * np.cos(Y), **kw)
    m.set_import("eigenstrain", m.mesh.scalar.from_function(lambda X, Y: 1e-3 * np.exp(-(X - 2.0) ** 2)))
    return m


class Misfit:
    """J(p) = 1/2 |H x(t1) - y|^2 with strain gauges and displacement sensors, y fixed."""

    def __init__(self, m, t1):
        self.m, self.t1 = m, t1
        self.ops = [StrainGauges(m.grid, GAUGES, [0.0, 0.5, 1.2, 2.0], 1e-6),
                    DisplacementSensors(m.grid, GAUGES[:2], [1, 0], 1e-4, half_sizes=(0.1, 0.05))]
        self.x0 = m.initial_state()
        if m.mode == "dynamic":
            m.grid.from_function(lambda X, Y: np.stack([1e-3 * X, 0 * X, 0 * X, 1e-2 * X * Y], -1), self.x0)
        self.y = [0.5 * op.apply(self.run()) for op in self.ops]

    def run(self):
        x = self.x0.copy()
        self.m.advance(x, 0.0, self.t1)
        return x

    def __call__(self):
        x = self.run()
        J, lam = 0.0, x.duplicate()
        lam.set(0.0)
        for op, y in zip(self.ops, self.y):
            r = op.apply(x) - y
            J += 0.5 * float(r @ r)
            op.apply_adjoint(x, r, lam)
        x.destroy()
        return J, lam


def _taylor(m, J, g, d0, dm):
    J0 = J()[0]
    dJ = g.dot(dm)
    rem = []
    for h in (0.1, 0.05, 0.025, 0.0125):
        m.set_parameter("damage", d0 + h * dm)
        rem.append(abs(J()[0] - J0 - h * dJ))
    m.set_parameter("damage", d0)
    return np.log2(np.array(rem[:-1]) / rem[1:]), rem


@pytest.mark.parametrize("mode, t1", [("static", 1.0), ("dynamic", 0.04)])
def test_taylor_damage_gradient(mode, t1):
    m = _model(mode)
    J = Misfit(m, t1)
    _, lam = J()
    lam_t0 = lam.copy()
    g = m.adjoint(J.x0, 0.0, t1, lam_t0, ["damage", "E0", "load_tip"])
    d0 = m.damage.copy()
    dm = d0.duplicate()
    m.mesh.scalar.from_function(lambda X, Y: 0.1 * np.cos(2 * X) * (1 + Y), dm)
    rates, rem = _taylor(m, lambda: J(), g["damage"], d0, dm)
    assert np.all(rates > 1.9), f"{mode}: Taylor remainders {rem}, rates {rates}"
    for name, base in (("E0", 1e4), ("load_tip", 1.0)):
        h = 1e-4 * base
        m.set_parameter(name, base + h)
        Jp = J()[0]
        m.set_parameter(name, base - h)
        Jm = J()[0]
        m.set_parameter(name, base)
        assert g[name] == pytest.approx((Jp - Jm) / (2 * h), rel=1e-5), name
    if mode == "static":
        assert lam_t0.norm() == 0.0  # the static state at t1 does not depend on the state at t0
    else:
        dx = J.x0.duplicate()
        m.grid.from_function(lambda X, Y: np.stack([X * Y, -X, Y, X * X], -1) * 1e-3, dx)
        x0 = J.x0.copy()
        eps = 1e-2
        J.x0.axpy(eps, dx)
        Jp = J()[0]
        J.x0.axpy(-2 * eps, dx)
        Jm = J()[0]
        x0.copy(J.x0)
        assert lam_t0.dot(dx) == pytest.approx((Jp - Jm) / (2 * eps), rel=1e-6)
    m.destroy()


def test_observation_adjoints_pass_the_dot_product_test():
    m = _model("dynamic")
    rng = np.random.default_rng(3)
    ops = [StrainGauges(m.grid, GAUGES, 0.3, 1e-6),
           DisplacementSensors(m.grid, GAUGES, [0, 1, 1, 0], 1e-4, half_sizes=(0.2, 0.04)),
           Accelerometers(m, GAUGES, [0.5 * np.pi, 0.0, 1.0, 0.5 * np.pi], 1e-2, time=0.013)]
    x = m.create_state()
    m.grid.owned_array(x)[...] = rng.standard_normal(m.grid.owned_array(x).shape)
    for op in ops:
        dy = rng.standard_normal(op.n_obs)
        out = m.create_state()
        op.apply_adjoint(x, dy, out)
        if isinstance(op, Accelerometers):
            zero = m.create_state()
            lin = op.apply(x) - op.apply(zero)  # the operator is affine: H'(x) dx = H(dx) - H(0)
        else:
            lin = op.apply(x)
        assert float(lin @ dy) == pytest.approx(out.dot(x), rel=1e-8), op.name
        op.destroy()
    m.destroy()


def test_strain_gauge_reads_uniform_strain_exactly():
    m = StructureModel("bar", COMM, (8, 2), ((0, 4.0), (0, 1.0)), Material(2e5, 0.25),
                       {"left": "roller", "bottom": "roller"}, [LoadCase("pull", "traction", (100.0, 0.0), "right")])
    u = m.initial_state()
    m.advance(u, 0.0, 1.0)
    gauges = StrainGauges(m.grid, [[1.3, 0.4], [3.9, 0.9], [2.0, 0.5]], [0.0, 0.5 * np.pi, np.pi / 4], 1e-6)
    eps = gauges.apply(u)
    exx, eyy = 100.0 / 2e5, -0.25 * 100.0 / 2e5  # uniaxial stress
    assert eps == pytest.approx([exx, eyy, 0.5 * (exx + eyy)], rel=1e-8)
    gauges.destroy()
    m.destroy()
