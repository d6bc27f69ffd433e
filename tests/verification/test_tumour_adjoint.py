"""Taylor tests of the TSAdjoint gradients of the tumour model.

For ``J(m) = 1/2 |N(t1; m) - y|^2`` the remainder ``|J(m + h dm) - J(m) - h dJ.dm|`` must fall as ``h^2`` when the
gradient is that of the discrete model; with a wrong gradient it falls as ``h``. Radiotherapy fractions and a
chemotherapy dose lie inside the window so the treatment jumps and the kill term are differentiated too.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.grid import Grid
from twin.core.petsc import set_options
from twin.kinds.tumour import TreatmentPlan, TumourModel, brain_phantom

T0, T1 = 0.0, 6.0


def _model(ts_type="cn", k_scalar=None):
    comm = MPI.COMM_SELF
    grid = Grid(comm, (20, 18), ((0.0, 40.0), (0.0, 36.0)), name="tumour")
    tissue = brain_phantom(grid.mesh(), grid.extent, smoothing=3.0)
    X, Y = grid.mesh()
    k = 0.3 * (1.0 + 0.5 * np.sin(X / 7.0) * np.cos(Y / 5.0)) if k_scalar is None else k_scalar
    values = dict(D_white=1.5, D_grey=0.4, k=k, theta=1.0, alpha=0.15, alpha_beta=10.0, kappa=0.3, half_life=1.5)
    plan = TreatmentPlan.from_lists([2.0, 3.5], [2.0, 3.0], [1.0], [1.0])

    def seed(x, y):
        return 0.6 * np.exp(-((x - 17.0) ** 2 + (y - 20.0) ** 2) / (2 * 4.0 ** 2))

    name = f"taylor_{ts_type}"
    set_options(f"{name}_", {"ts_type": ts_type, "snes_rtol": 1e-13, "snes_atol": 1e-14, "ksp_rtol": 1e-14})
    return TumourModel(name, comm, grid, tissue, values, initial=seed, plan=plan, dt=0.5)


@pytest.fixture(scope="module")
def setup():
    model = _model()
    rng = np.random.default_rng(3)
    y = model.initial_state()
    model.advance(y, T0, T1)
    y.getArray()[...] *= 1.0 + 0.2 * rng.standard_normal(y.getLocalSize())
    yield model, y, rng
    y.destroy()
    model.destroy()


def _cost(model, y, x0=None):
    x = (x0 or model._initial).copy()
    model.advance(x, T0, T1)
    d = x.getArray(readonly=True) - y.getArray(readonly=True)
    x.destroy()
    return 0.5 * float(d @ d)


def _gradient(model, y, names):
    x = model.initial_state()
    model.advance(x, T0, T1)
    lam = x.copy()
    lam.axpy(-1.0, y)
    grads = model.adjoint(model._initial, T0, T1, lam, names)
    x.destroy()
    return lam, grads


def _rate(remainders):
    r = np.asarray(remainders)
    return np.log2(r[:-1] / r[1:])


def _taylor(J, J0, dJdm, hs):
    rem = [abs(J(h) - J0 - h * dJdm) for h in hs]
    return _rate(rem), rem


HS = [4e-2, 2e-2, 1e-2, 5e-3]


def test_taylor_initial_state(setup):
    model, y, rng = setup
    J0 = _cost(model, y)
    lam, _ = _gradient(model, y, [])
    dx = model.create_state()
    dx.getArray()[...] = model._mask * rng.uniform(0.0, 0.3, dx.getLocalSize())
    dJ = lam.dot(dx)

    def J(h):
        x0 = model._initial.copy()
        x0.axpy(h, dx)
        v = _cost(model, y, x0)
        x0.destroy()
        return v

    rates, rem = _taylor(J, J0, dJ, HS)
    assert rem[0] > 1e-12, "remainder too small to measure"
    print("rates", rates)
    assert rates.min() > 1.9, (rates, rem)


def test_taylor_k_field(setup):
    model, y, rng = setup
    J0 = _cost(model, y)
    _, grads = _gradient(model, y, ["k"])
    k0 = model.k_field()
    dk = 0.2 * rng.standard_normal(k0.size) * model._mask
    dJ = float(grads["k"].getArray(readonly=True) @ dk)

    def J(h):
        model.set_parameter("k", k0 + h * dk)
        return _cost(model, y)

    rates, rem = _taylor(J, J0, dJ, HS)
    model.set_parameter("k", k0)
    print("rates", rates)
    assert rates.min() > 1.9, (rates, rem)


@pytest.mark.parametrize("name,scale", [("D_white", 1.0), ("D_grey", 0.5), ("alpha", 0.1), ("kappa", 0.3),
                                        ("theta", 0.5)])
def test_taylor_scalars(setup, name, scale):
    model, y, _ = setup
    J0 = _cost(model, y)
    _, grads = _gradient(model, y, [name])
    p0 = model.get_parameter(name)

    def J(h):
        model.set_parameter(name, p0 + h * scale)
        return _cost(model, y)

    rates, rem = _taylor(J, J0, grads[name] * scale, HS)
    model.set_parameter(name, p0)
    print(name, "rates", rates)
    assert rates.min() > 1.9, (name, rates, rem)


def test_all_gradients_at_once_match_single(setup):
    """Requesting every gradient together gives the same numbers as one at a time (layout of the mu vector)."""
    model, y, _ = setup
    _, together = _gradient(model, y, ["k", "D_white", "kappa", "alpha"])
    _, alone = _gradient(model, y, ["D_white"])
    _, k_alone = _gradient(model, y, ["k"])
    assert together["D_white"] == pytest.approx(alone["D_white"], rel=1e-10)
    np.testing.assert_allclose(together["k"].getArray(), k_alone["k"].getArray(), rtol=1e-10, atol=1e-14)


def test_taylor_beuler_scalar_k():
    """The adjoint is also exact for backward Euler and a scalar k."""
    model = _model("beuler", k_scalar=0.3)
    assert not model.parameters["k"].is_field
    rng = np.random.default_rng(5)
    y = model.initial_state()
    y.getArray()[...] = rng.uniform(0, 0.5, y.getLocalSize()) * model._mask
    J0 = _cost(model, y)
    _, grads = _gradient(model, y, ["k", "D_white"])
    assert isinstance(grads["k"], float)

    def J(h):
        model.set_parameter("k", 0.3 + h * 0.1)
        return _cost(model, y)

    rates, rem = _taylor(J, J0, grads["k"] * 0.1, HS)
    print("rates", rates)
    assert rates.min() > 1.9, (rates, rem)
    y.destroy()
    model.destroy()
