"""Verification of the tumour model's discretisation: manufactured solutions (order 2 in space and time with
Crank-Nicolson, 2-D and 3-D), time-order self-convergence (backward Euler 1, Crank-Nicolson 2), exact mass
conservation of the diffusion, and the Fisher-KPP front speed ``2 sqrt(k D)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.grid import Grid
from twin.core.petsc import set_options
from twin.kinds.tumour import TreatmentPlan, TumourModel, brain_phantom
from twin.kinds.tumour.phantom import Tissue, box_tissue

L = 10.0
DW, DG, K, THETA, KAPPA, HALF = 0.8, 0.2, 0.7, 1.0, 0.4, 2.0
TOL = {"snes_rtol": 1e-12, "snes_atol": 1e-14, "ksp_rtol": 1e-13}


def _g(t):
    return 1.0 + 0.5 * np.sin(t)


def _dg(t):
    return 0.5 * np.cos(t)


def _exact(t, X):
    P = np.prod([np.cos(np.pi * x / L) for x in X], axis=0)
    return THETA * _g(t) * (0.4 + 0.2 * P)


def _white(X):
    return 0.5 + 0.3 * np.cos(np.pi * X[0] / L)


def _source(t, X):
    """s = dN/dt - div(D grad N) - k N (1 - N/theta) + kappa C(t) N for the manufactured N."""
    dim = len(X)
    w = _white(X)
    D = DG + (DW - DG) * w
    dDdx = (DW - DG) * (-0.3 * np.pi / L) * np.sin(np.pi * X[0] / L)
    c = [np.cos(np.pi * x / L) for x in X]
    s_ = [np.sin(np.pi * x / L) for x in X]
    P = np.prod(c, axis=0)
    amp = THETA * _g(t) * 0.2
    lap = -dim * (np.pi / L) ** 2 * amp * P
    dNdx = amp * (-np.pi / L) * s_[0] * np.prod(c[1:], axis=0)
    div = D * lap + dDdx * dNdx
    N = _exact(t, X)
    C = np.exp(-np.log(2.0) * t / HALF)
    return THETA * _dg(t) * (0.4 + 0.2 * P) - div - K * N * (1 - N / THETA) + KAPPA * C * N


def _mms_model(n, dim, dt, ts_type, name):
    comm = MPI.COMM_SELF
    grid = Grid(comm, (n,) * dim, ((0.0, L),) * dim, name=name)
    tissue = Tissue(np.ones(grid.shape[::-1], bool), _white(grid.mesh()))
    values = dict(D_white=DW, D_grey=DG, k=K, theta=THETA, alpha=0.1, alpha_beta=10.0, kappa=KAPPA, half_life=HALF)
    set_options(f"{name}_", {"ts_type": ts_type, **TOL})
    X = grid.owned_mesh()
    src = lambda t: _source(t, X).ravel()  # noqa: E731
    plan = TreatmentPlan.from_lists(chemo_times=[0.0], chemo_doses=[1.0])
    return TumourModel(name, comm, grid, tissue, values, initial=lambda *Y: _exact(0.0, Y), plan=plan, dt=dt,
                       source=src)


def _mms_error(n, dim, dt, ts_type="cn", T=1.0):
    model = _mms_model(n, dim, dt, ts_type, f"mms{dim}d_{ts_type}_{n}")
    x = model.initial_state()
    model.advance(x, 0.0, T)
    err = x.getArray(readonly=True) - _exact(T, model.grid.owned_mesh()).ravel()
    out = float(np.sqrt(np.mean(err ** 2)))
    x.destroy()
    model.destroy()
    return out


def _orders(errors):
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


@pytest.mark.parametrize("dim,sizes", [(2, (12, 24, 48)), (3, (6, 12, 24))])
def test_mms_order_space_and_time(dim, sizes):
    """Crank-Nicolson with dt proportional to h: second order in h and dt together."""
    errors = [_mms_error(n, dim, dt=0.5 * sizes[0] / n / 2) for n in sizes]
    orders = _orders(errors)
    print(dim, "D MMS errors", errors, "orders", orders)
    assert np.all(orders > 1.85) and np.all(orders < 2.3), (errors, orders)


@pytest.mark.parametrize("ts_type,order", [("beuler", 1.0), ("cn", 2.0)])
def test_time_order_self_convergence(ts_type, order):
    """On a fixed grid the differences of solutions with dt, dt/2, dt/4 fall as dt^p."""
    n, T = 16, 2.0
    sols = []
    for dt in (0.4, 0.2, 0.1, 0.05):
        model = _mms_model(n, 2, dt, ts_type, f"tord_{ts_type}_{int(round(1 / dt))}")
        x = model.initial_state()
        model.advance(x, 0.0, T)
        sols.append(x.getArray(readonly=True).copy())
        x.destroy()
        model.destroy()
    diffs = [np.sqrt(np.mean((a - b) ** 2)) for a, b in zip(sols[:-1], sols[1:])]
    orders = _orders(diffs)
    print(ts_type, "self-convergence orders", orders)
    assert np.all(np.abs(orders - order) < 0.15), (diffs, orders)


def test_mass_conserved_without_reaction():
    """k = 0, no treatment: the total cell count is conserved to solver tolerance on a brain phantom."""
    comm = MPI.COMM_SELF
    grid = Grid(comm, (40, 36), ((0.0, 80.0), (0.0, 72.0)), name="mass")
    tissue = brain_phantom(grid.mesh(), grid.extent)
    values = dict(D_white=2.0, D_grey=0.5, k=0.0, theta=1.0, alpha=0.1, alpha_beta=10.0, kappa=0.0, half_life=1.0)
    set_options("mass_", TOL)
    model = TumourModel("mass", comm, grid, tissue, values, dt=1.0,
                        initial=lambda x, y: 0.9 * np.exp(-((x - 30) ** 2 + (y - 40) ** 2) / 30.0))
    x = model.initial_state()
    m0 = model.qoi(x, 0.0)["burden"].value
    model.advance(x, 0.0, 40.0)
    m1 = model.qoi(x, 40.0)["burden"].value
    a = x.getArray(readonly=True)
    assert np.all(a[model._mask == 0] == 0.0), "density leaked out of the tissue"
    # the lesion has spread: the check is not trivially satisfied by a frozen state
    assert model.qoi(x, 40.0)["volume"].value != model.qoi(model.initial_state(), 0.0)["volume"].value
    print("relative mass change", abs(m1 - m0) / m0)
    assert abs(m1 - m0) / m0 < 1e-10
    x.destroy()
    model.destroy()


def _front(profile, x, level):
    """Position where a decreasing profile crosses ``level`` (linear interpolation)."""
    i = int(np.flatnonzero(profile < level)[0])
    return x[i - 1] + (profile[i - 1] - level) / (profile[i - 1] - profile[i]) * (x[i] - x[i - 1])


def test_fisher_kpp_front_speed():
    """A thin strip: after the front is established it moves at 2 sqrt(k D) within a few percent."""
    comm = MPI.COMM_SELF
    D, k = 1.0, 1.0
    grid = Grid(comm, (400, 2), ((0.0, 100.0), (0.0, 0.5)), name="fkpp")
    values = dict(D_white=D, D_grey=D, k=k, theta=1.0, alpha=0.1, alpha_beta=10.0, kappa=0.0, half_life=1.0)
    set_options("fkpp_", {"snes_rtol": 1e-10})
    model = TumourModel("fkpp", comm, grid, box_tissue(grid.shape[::-1]), values, dt=0.1,
                        initial=lambda x, y: np.where(x < 5.0, 1.0, 0.0))
    x = model.initial_state()
    xc = grid.axis_coordinates(0)
    pos = {}
    t = 0.0
    for t_next in (20.0, 30.0):
        model.advance(x, t, t_next)
        t = t_next
        pos[t] = _front(x.getArray(readonly=True).reshape(grid.local_shape).mean(axis=0), xc, 0.5)
    speed = (pos[30.0] - pos[20.0]) / 10.0
    c = 2.0 * np.sqrt(k * D)
    # Bramson's correction for pulled fronts, -3/(2 lambda t) with lambda = sqrt(k/D), averaged over [20, 30]
    bramson = c - 1.5 * np.sqrt(D / k) * np.log(30.0 / 20.0) / 10.0
    print("front speed", speed, "theory", c, "with Bramson's correction", bramson)
    assert abs(speed - c) / c < 0.05
    assert abs(speed - bramson) / c < 0.01
    x.destroy()
    model.destroy()
