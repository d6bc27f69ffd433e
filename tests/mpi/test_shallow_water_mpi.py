"""Shallow water on 2 ranks agrees with 1 rank to round-off: forward stepping, Jacobians, TSAdjoint gradients,
tangent-linear model, QoIs and observation operators."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.shallow_water import Bump, ShallowWater
from twin.kinds.shallow_water.observations import GriddedSubsetOperator, StationOperator, SwathOperator

L = 2.0e6
SHAPE = (14, 10)


def make(name, comm, proc_sizes=None):
    return ShallowWater(name, comm, SHAPE, ((0, L), (0, 0.75 * L)), dt=150.0, mean_depth=1000.0,
                        initial=("balanced_turbulence", {"speed": 20.0, "seed": 3}),
                        tracer=Bump((L / 2, L / 3), L / 6, 1.0), topography=Bump((L / 3, L / 2), L / 8, 80.0),
                        parameters={"drag": 1e-5, "forcing_amplitude": 1e-5, "beta": 1e-11},
                        sites={"a": (0.21 * L, 0.33 * L), "b": (0.77 * L, 0.6 * L)}, threshold=1000.0,
                        proc_sizes=proc_sizes)


@pytest.fixture(scope="module")
def pair():
    par = make("sw_mpi", MPI.COMM_WORLD)
    ser = make("sw_mpi_serial", MPI.COMM_SELF)
    yield par, ser
    par.destroy()
    ser.destroy()


def _random_state(m, seed):
    """The same random field on any decomposition (drawn whole in natural order, then distributed)."""
    rng = np.random.default_rng(seed)
    full = rng.standard_normal((SHAPE[1], SHAPE[0], m.grid.dof))
    return m.grid.set_global(full, m.create_state())


@pytest.mark.parametrize("proc_sizes", [(2, 1), (1, 2)])
def test_forward_run_agrees_with_one_rank(pair, proc_sizes):
    _, ser = pair
    par = make(f"sw_mpi_fwd_{proc_sizes[0]}{proc_sizes[1]}", MPI.COMM_WORLD, proc_sizes)
    assert MPI.COMM_WORLD.Get_size() == 2
    xp, xs = par.initial_state(), ser.initial_state()
    assert np.array_equal(par.grid.allgather(xp), ser.grid.allgather(xs))
    par.advance(xp, 0.0, 40 * 150.0)
    ser.advance(xs, 0.0, 40 * 150.0)
    a, b = par.grid.allgather(xp), ser.grid.allgather(xs)
    assert np.abs(a - b).max() <= 1e-13 * np.abs(b).max()
    qp, qs = par.qoi(xp, 0.0), ser.qoi(xs, 0.0)
    assert set(qp) == set(qs)
    for k in qs:
        assert qp[k].value == pytest.approx(qs[k].value, rel=1e-13, abs=1e-12)
    par.destroy()


def test_jacobians_agree_with_one_rank(pair):
    par, ser = pair
    xp, xs = par.initial_state(), ser.initial_state()
    dp, ds = _random_state(par, 1), _random_state(ser, 1)
    out = []
    for m, x, d in ((par, xp, dp), (ser, xs, ds)):
        J, Jp = m._jacobians()
        m._rhs_jacobian(None, 0.0, x, J, J)
        m._rhs_jacobian_p(None, 0.0, x, Jp)
        y = x.duplicate()
        J.multTranspose(d, y)
        z = Jp.createVecRight()
        Jp.multTranspose(d, z)
        out.append((m.grid.allgather(y), np.concatenate(m.grid.comm_mpi().allgather(z.getArray().copy()))))
    assert np.abs(out[0][0] - out[1][0]).max() <= 1e-12 * np.abs(out[1][0]).max()
    assert np.allclose(out[0][1], out[1][1], rtol=1e-12, atol=0)


def test_adjoint_and_tangent_linear_agree_with_one_rank(pair):
    par, ser = pair
    T = 10 * 150.0
    res = []
    for m in (par, ser):
        x0 = m.initial_state()
        lam = _random_state(m, 2)
        grads = m.adjoint(x0, 0.0, T, lam, ["drag", "gravity", "forcing_amplitude", "beta"])
        dx = _random_state(m, 3)
        m.tangent_linear(x0, dx, 0.0, T)
        res.append((m.grid.allgather(lam), grads, m.grid.allgather(dx)))
    (lp, gp, tp), (ls, gs, ts) = res
    assert np.abs(lp - ls).max() <= 1e-12 * np.abs(ls).max()
    assert np.abs(tp - ts).max() <= 1e-12 * np.abs(ts).max()
    for k in gs:
        assert gp[k] == pytest.approx(gs[k], rel=1e-11)


def test_observation_operators_agree_with_one_rank(pair):
    par, ser = pair
    pts = np.array([[0.1 * L, 0.1 * L], [0.95 * L, 0.7 * L], [0.5 * L, 0.0]])
    makers = [lambda g: StationOperator(g, pts, ["h", "u", "v", "tracer"], {"h": 1, "u": 2, "v": 2, "tracer": 0.1}),
              lambda g: GriddedSubsetOperator(g, ["h", "v"], stride=(3, 2), error_std=1.0),
              lambda g: SwathOperator(g, (0.1 * L, 0.2 * L), 30.0, 3 * L, 1e5, width=3e5, n_across=4,
                                      error_std=1.5, edge_error_factor=2.0)]
    for make_op in makers:
        yp, ys = [], []
        for m, out in ((par, yp), (ser, ys)):
            op = make_op(m.grid)
            x = m.initial_state()
            out.append(op.apply(x))
            w = m.create_state()
            op.apply_adjoint(x, np.linspace(-1, 1, op.n_obs), w)
            out.append(m.grid.allgather(w))
            op.destroy()
        assert np.allclose(yp[0], ys[0], rtol=1e-14, atol=0)
        assert np.allclose(yp[1], ys[1], rtol=1e-14, atol=1e-14)
