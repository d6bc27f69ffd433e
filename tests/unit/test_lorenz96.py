"""Lorenz-96 behind the model contract: TS RK4 vs the NumPy reference, Taylor test of the TSAdjoint gradient (rate 2),
tangent-linear / adjoint dot-product test, bad input, configuration."""

import numpy as np
import pytest
from mpi4py import MPI
from petsc4py import PETSc

from twin.kinds.lorenz96.config import Lorenz96Config
from twin.core.errors import ModelError
from twin.kinds.lorenz96.model import BatchedForecast, Lorenz96, rk4_ensemble
from twin.models.registry import model_types

N, DT, T1 = 40, 0.05, 0.5  # 10 RK4 steps


@pytest.fixture
def model():
    m = Lorenz96("l96u", MPI.COMM_SELF, n=N, dt=DT, initial_condition="random", perturbation=1.0, seed=3)
    yield m
    m.destroy()


def _full(m, v):
    return m.grid.allgather(v)


def test_ts_matches_numpy_reference_to_roundoff(model):
    x = model.initial_state()
    x0 = _full(model, x)
    model.advance(x, 0.0, T1)
    ref = rk4_ensemble(x0, 8.0, DT, 0.0, T1)
    assert np.max(np.abs(_full(model, x) - ref)) < 1e-12
    # members as columns, one forcing per member
    E = np.column_stack([x0, x0 + 0.1])
    out = rk4_ensemble(E, np.array([8.0, 7.5]), DT, 0.0, T1)
    assert np.max(np.abs(out[:, 0] - ref)) < 1e-13
    assert np.max(np.abs(out[:, 1] - rk4_ensemble(x0 + 0.1, 7.5, DT, 0.0, T1))) < 1e-13
    assert np.allclose(BatchedForecast(DT, 8.0)(x0[:, None], {}, 0.0, T1)[:, 0], ref, atol=1e-13)
    x.destroy()


def _cost(x0, F):
    """J = 1/2 |x(T1)|^2 through the NumPy reference (the same discrete RK4 as the TS)."""
    return 0.5 * np.sum(rk4_ensemble(x0, F, DT, 0.0, T1) ** 2)


def test_adjoint_taylor_rate_two(model):
    x = model.initial_state()
    x0 = _full(model, x)
    xT = rk4_ensemble(x0, 8.0, DT, 0.0, T1)
    lam = model.grid.set_global(xT, model.create_state())  # dJ/dx(T1) = x(T1)
    grads = model.adjoint(x, 0.0, T1, lam, ["F"])
    gx = _full(model, lam)
    rng = np.random.default_rng(7)
    dx, dF = rng.standard_normal(N), 0.8
    J0 = _cost(x0, 8.0)
    hs = 1e-3 * 0.5 ** np.arange(4)
    rem = [abs(_cost(x0 + h * dx, 8.0 + h * dF) - J0 - h * (gx @ dx + grads["F"] * dF)) for h in hs]
    rates = np.log2(np.array(rem[:-1]) / np.array(rem[1:]))
    assert np.all(rates > 1.9), (rem, rates)
    # and without the gradient the remainder is only first order
    rem1 = [abs(_cost(x0 + h * dx, 8.0 + h * dF) - J0) for h in hs]
    assert np.all(np.log2(np.array(rem1[:-1]) / np.array(rem1[1:])) < 1.2)
    for v in (x, lam):
        v.destroy()


def test_tangent_linear_adjoint_dot_product(model):
    x = model.initial_state()
    rng = np.random.default_rng(11)
    dx_np, lam_np, dF = rng.standard_normal(N), rng.standard_normal(N), 0.3
    dx = model.grid.set_global(dx_np, model.create_state())
    lam = model.grid.set_global(lam_np, model.create_state())
    model.tangent_linear(x, 0.0, T1, dx, dF)
    grads = model.adjoint(x, 0.0, T1, lam, ["F"])
    lhs = dx.dot(model.grid.set_global(lam_np, model.create_state()))
    rhs = dx_np @ _full(model, lam) + dF * grads["F"]
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    # the TLM is the derivative of the forecast: finite difference agrees to O(h)
    h = 1e-6
    fd = (rk4_ensemble(_full(model, x) + h * dx_np, 8.0 + h * dF, DT, 0.0, T1)
          - rk4_ensemble(_full(model, x), 8.0, DT, 0.0, T1)) / h
    assert np.max(np.abs(fd - _full(model, dx))) < 1e-4 * np.max(np.abs(fd))
    for v in (x, dx, lam):
        v.destroy()


def test_bad_input_refused(model):
    with pytest.raises(ModelError, match="at least 4 variables"):
        Lorenz96("bad", MPI.COMM_SELF, n=3)
    with pytest.raises(ModelError, match="dt must be positive"):
        Lorenz96("bad", MPI.COMM_SELF, dt=0.0)
    with pytest.raises(ModelError, match=r"unknown initial condition 'spiral'; known: \['perturbed_rest', 'random'\]"):
        Lorenz96("bad", MPI.COMM_SELF, initial_condition="spiral")
    x = model.initial_state()
    with pytest.raises(ModelError, match="not a whole number of RK4 steps dt=0.05"):
        model.advance(x, 0.0, 0.23)
    with pytest.raises(ModelError, match="t1 > t0"):
        model.advance(x, 0.5, 0.5)
    with pytest.raises(ModelError, match="unknown parameters"):
        model.adjoint(x, 0.0, T1, x.duplicate(), ["G"])
    with pytest.raises(ValueError, match="whole number of steps"):
        rk4_ensemble(np.ones(8), 8.0, 0.05, 0.0, 0.07)
    x.destroy()


def test_config_registry_and_qoi():
    assert model_types()["lorenz96"] is Lorenz96
    cfg = Lorenz96Config.model_validate({"type": "lorenz96", "n": 12, "dt": 0.01,
                                         "forcing": {"value": 10.0, "estimable": True,
                                                     "prior": {"dist": "lognormal", "median": 8.0, "sigma": 0.2}},
                                         "solver": {"ts_max_snes_failures": 1}})
    m = Lorenz96.from_config("l96cfg", cfg, MPI.COMM_SELF)
    assert m.parameters["F"].estimable and m.parameters["F"].transform == "log" and m.forcing == 10.0
    x = m.initial_state()
    full = _full(m, x)
    assert full[0] == pytest.approx(10.01) and np.all(full[1:] == 10.0)
    q = m.qoi(x, 0.0)
    assert q["mean"].value == pytest.approx(10.0 + 0.01 / 12)
    assert q["energy"].value == pytest.approx(0.5 * np.mean(full ** 2))
    x.destroy()
    m.destroy()
    with pytest.raises(ValueError, match="dimensionless"):
        Lorenz96Config.model_validate({"type": "lorenz96", "forcing": {"value": 8.0, "units": "m"}})
    with pytest.raises(ValueError):
        Lorenz96Config.model_validate({"type": "lorenz96", "n": 3})


def test_a_given_initial_state_is_the_initial_state():
    state = np.linspace(-3.0, 9.0, 12)
    cfg = Lorenz96Config.model_validate({"type": "lorenz96", "n": 12, "initial_state": state.tolist()})
    m = Lorenz96.from_config("l96ic", cfg, MPI.COMM_SELF)
    x = m.initial_state()
    assert np.array_equal(_full(m, x), state)
    x.destroy()
    m.destroy()
    with pytest.raises(ValueError, match="initial_state has 3 values; the ring has n = 12 variables"):
        Lorenz96Config.model_validate({"type": "lorenz96", "n": 12, "initial_state": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="finite number"):
        Lorenz96Config.model_validate({"type": "lorenz96", "n": 4, "initial_state": [1.0, 2.0, float("nan"), 3.0]})


def test_solver_options_use_component_prefix():
    """-<name>_ts_rk_type is honoured: a first-order RK changes the result (the options prefix works)."""
    opts = PETSc.Options()
    opts.setValue("l96opt_ts_rk_type", "1fe")
    try:
        m = Lorenz96("l96opt", MPI.COMM_SELF, n=N, dt=DT, initial_condition="random", perturbation=1.0)
        x = m.initial_state()
        x0 = _full(m, x)
        m.advance(x, 0.0, DT)
        euler = x0 + DT * ((np.roll(x0, -1) - np.roll(x0, 2)) * np.roll(x0, 1) - x0 + 8.0)
        assert np.allclose(_full(m, x), euler, atol=1e-13)
        x.destroy()
        m.destroy()
    finally:
        opts.delValue("l96opt_ts_rk_type")
