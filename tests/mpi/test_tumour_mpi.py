"""The tumour model on 2 ranks agrees with 1 rank to solver tolerance: forward run (with treatment), adjoint
gradients, priors and imaging operators. Every rank also runs the serial model on COMM_SELF for the reference."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.config.common import GaussianFieldPrior
from twin.core.grid import Grid
from twin.core.petsc import set_options
from twin.models.priors import sample_prior
from twin.kinds.tumour import TreatmentPlan, TumourModel, brain_phantom
from twin.kinds.tumour.imaging import CellularityOperator, TumourVolumeOperator

WORLD = MPI.COMM_WORLD
TOL = {"snes_rtol": 1e-12, "snes_atol": 1e-14, "ksp_rtol": 1e-13}


def _model(comm, name):
    grid = Grid(comm, (30, 26), ((0.0, 60.0), (0.0, 52.0)), name=name)
    tissue = brain_phantom(grid.mesh(), grid.extent, smoothing=3.0)
    X, Y = grid.mesh()
    k = 0.2 * (1.0 + 0.4 * np.sin(X / 9.0) * np.cos(Y / 7.0))
    values = dict(D_white=1.0, D_grey=0.3, k=k, theta=1.0, alpha=0.1, alpha_beta=10.0, kappa=0.2, half_life=1.0)
    plan = TreatmentPlan.from_lists([3.0, 4.0], [2.0], [2.0], [1.0])
    set_options(f"{name}_", TOL)
    return TumourModel(name, comm, grid, tissue, values, plan=plan, dt=0.5,
                       initial=lambda x, y: 0.7 * np.exp(-((x - 25.0) ** 2 + (y - 28.0) ** 2) / 30.0))


@pytest.fixture(scope="module")
def models():
    par, ser = _model(WORLD, "tmpi"), _model(MPI.COMM_SELF, "tser")
    assert par.grid.local_shape != ser.grid.local_shape  # really decomposed
    yield par, ser
    par.destroy()
    ser.destroy()


def _run(model, t1=8.0):
    x = model.initial_state()
    model.advance(x, 0.0, t1)
    return x


def test_forward_agrees(models):
    par, ser = models
    xp, xs = _run(par), _run(ser)
    full = par.grid.allgather(xp)
    ref = xs.getArray(readonly=True).reshape(ser.grid.local_shape)
    assert np.max(np.abs(full - ref)) / np.max(np.abs(ref)) < 1e-9
    qp, qs = par.qoi(xp, 8.0), ser.qoi(xs, 8.0)
    assert qp["burden"].value == pytest.approx(qs["burden"].value, rel=1e-10)
    assert qp["volume"].value == qs["volume"].value
    for v in (xp, xs):
        v.destroy()


def test_adjoint_agrees(models):
    par, ser = models
    out = {}
    for key, model in (("par", par), ("ser", ser)):
        x = _run(model)
        lam = x.copy()  # J = |N(t1)|^2 / 2
        grads = model.adjoint(model.initial_state(), 0.0, 8.0, lam, ["k", "D_white", "alpha", "kappa"])
        out[key] = (model.grid.allgather(lam), model.grid.allgather(grads["k"]), grads)
        x.destroy()
    (lp, kp, gp), (ls, ks, gs) = out["par"], out["ser"]
    assert np.max(np.abs(lp - ls)) / np.max(np.abs(ls)) < 1e-8
    assert np.max(np.abs(kp - ks)) / np.max(np.abs(ks)) < 1e-8
    for name in ("D_white", "alpha", "kappa"):
        assert gp[name] == pytest.approx(gs[name], rel=1e-8), name
        assert gp[name] == WORLD.bcast(gp[name], root=0)  # the same value on every rank


def test_priors_identical_on_ranks(models):
    par, _ = models
    prior = GaussianFieldPrior(dist="gaussian_field", mean=np.log(0.1), std=0.3, length_scale=8.0)
    field = sample_prior(prior, np.random.default_rng(42), grid=par.grid)
    gathered = WORLD.allgather(field)
    np.testing.assert_array_equal(gathered[0], gathered[1])


def test_imaging_operators_agree(models):
    par, ser = models
    xp, xs = _run(par, 4.0), _run(ser, 4.0)
    for key, model, x in (("par", par, xp), ("ser", ser, xs)):
        cell = CellularityOperator(model.grid, 1.0, 0.05, resolution=[4.0, 4.0], mask=model.tissue.mask)
        vol = TumourVolumeOperator(model.grid, 1.0, 0.2, 5.0, mask=model.tissue.mask)
        if key == "par":
            yp, vp = cell.apply(x), vol.apply(x)
        else:
            ys, vs = cell.apply(x), vol.apply(x)
        cell.destroy()
    np.testing.assert_allclose(yp, ys, rtol=1e-8, atol=1e-12)
    assert vp[0] == pytest.approx(vs[0], rel=1e-8)
    for v in (xp, xs):
        v.destroy()


def _preconditioner(name, options):
    """The PC type of a fresh model's time stepper on ``WORLD`` with ``options`` in its ``solver:`` section, and the
    Krylov iterations of its last linear solve after two steps."""
    model = _model(WORLD, name)
    set_options(f"{name}_", options)
    x = _run(model, 1.0)
    ksp = model._ts.getSNES().getKSP()
    kind, its = ksp.getPC().getType(), ksp.getIterationNumber()
    x.destroy()
    model.destroy()
    return kind, its


def test_parallel_default_preconditioner():
    """On 2 ranks the default is point Jacobi (block-Jacobi ILU(0) needs more iterations the more blocks there are);
    a preconditioner the user names, or options of block-Jacobi's blocks, are kept."""
    assert WORLD.size == 2
    kind, its = _preconditioner("tpc1", {})
    assert kind == "jacobi"
    # Jacobi's iterations are the same on one rank as on two (to a couple, from the reductions' rounding)
    model = _model(MPI.COMM_SELF, "tpcs")
    set_options("tpcs_", {"pc_type": "jacobi"})
    x = _run(model, 1.0)
    serial_its = model._ts.getSNES().getKSP().getIterationNumber()
    x.destroy()
    model.destroy()
    assert abs(its - serial_its) <= 2, (its, serial_its)
    assert _preconditioner("tpc2", {"pc_type": "bjacobi"})[0] == "bjacobi"
    assert _preconditioner("tpc3", {"sub_pc_type": "icc"})[0] == "bjacobi"
    assert _preconditioner("tpc4", {"pc_type": "none"})[0] == "none"
