"""Shallow-water verification: manufactured solution (order 2 in space, 4 in time for RK4), gravity-wave speed
sqrt(g H), geostrophic steady state to truncation error."""

import math

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.shallow_water import Bump, ShallowWater
from twin.kinds.shallow_water.staggering import coordinates

L, H, G, F0, DRAG, AMP = 1.0e6, 1000.0, 9.81, 1.0e-4, 1.0e-5, 1.0e-5
K = 2 * np.pi / L
OMEGA = 2 * np.pi / 2.0e4


def h_(x, y, t):
    return H + 10 * np.sin(K * x) * np.cos(K * y) * (1 + 0.3 * np.sin(OMEGA * t))


def u_(x, y, t):
    return 5 * np.cos(K * x + 0.3) * np.sin(2 * K * y) * np.cos(OMEGA * t) + 2


def v_(x, y, t):
    return 4 * np.sin(2 * K * x) * np.cos(K * y + 0.5) * (1 + 0.5 * np.sin(OMEGA * t)) - 1


def phi_(x, y, t):
    return h_(x, y, t) * (0.5 + 0.3 * np.cos(K * x) * np.sin(K * y) * np.cos(OMEGA * t))


#: a smooth periodic (h, u, v, phi) that solves nothing in particular: the sources make it a solution
EXACT = (h_, u_, v_, phi_)


def d(fn, wrt, x, y, t, eps=1e-30):
    """Partial derivative by complex step (exact to round-off for analytic functions)."""
    args = [np.asarray(x, complex), np.asarray(y, complex), np.asarray(t, complex)]
    args[wrt] = args[wrt] + 1j * eps
    return np.imag(fn(*args)) / eps


def sources(grid):
    """``S(t)`` at the C-grid points of the owned block: the continuous residual of the exact solution."""
    pts = {k: coordinates(grid, k) for k in ("h", "u", "v")}
    h, u, v, phi = EXACT
    cache = {}

    def flux(a, b):
        return lambda x, y, t: a(x, y, t) * b(x, y, t)

    def S(t):
        # RK4 evaluates each step's end time again as the next step's start: keep the last few
        if t not in cache:
            if len(cache) > 2:
                cache.clear()
            cache[t] = evaluate(t)
        return cache[t]

    def evaluate(t):
        xh, yh = pts["h"]
        xu, yu = pts["u"]
        xv, yv = pts["v"]
        s_h = d(h, 2, xh, yh, t) + d(flux(h, u), 0, xh, yh, t) + d(flux(h, v), 1, xh, yh, t)
        U, V = u(xu, yu, t), v(xu, yu, t)
        s_u = (d(u, 2, xu, yu, t) + U * d(u, 0, xu, yu, t) + V * d(u, 1, xu, yu, t) - F0 * V
               + G * d(h, 0, xu, yu, t) + DRAG * U - AMP * np.cos(K * yu))
        U, V = u(xv, yv, t), v(xv, yv, t)
        s_v = (d(v, 2, xv, yv, t) + U * d(v, 0, xv, yv, t) + V * d(v, 1, xv, yv, t) + F0 * U
               + G * d(h, 1, xv, yv, t) + DRAG * V)
        s_p = d(phi, 2, xh, yh, t) + d(flux(phi, u), 0, xh, yh, t) + d(flux(phi, v), 1, xh, yh, t)
        return [s_h, s_u, s_v, s_p]

    return S


def manufactured_run(n, steps, T=2000.0, name="sw_mms"):
    """Error (max over components, each relative to its range) at ``T`` and the final state array."""
    m = ShallowWater(f"{name}_{n}_{steps}", MPI.COMM_SELF, (n, n), ((0, L), (0, L)), dt=T / steps, mean_depth=H,
                     initial=("geostrophic_balance", {"amplitude": 0.0}), tracer=Bump((0, 0), L, 0.0),
                     parameters={"gravity": G, "f0": F0, "drag": DRAG, "forcing_amplitude": AMP})
    x = m.create_state()
    a = m.grid.owned_array(x)
    kinds = ("h", "u", "v", "h")
    for c, kind in enumerate(kinds):
        a[..., c] = EXACT[c](*coordinates(m.grid, kind), 0.0)
    m.set_sources(sources(m.grid))
    m.advance(x, 0.0, T)
    a = m.grid.owned_array(x, readonly=True).copy()
    err = max(np.abs(a[..., c] - EXACT[c](*coordinates(m.grid, kind), T)).max() / np.ptp(a[..., c])
              for c, kind in enumerate(kinds))
    m.destroy()
    return err, a


def test_manufactured_solution_converges_at_second_order_in_space():
    errors = [manufactured_run(n, 40, T=1000.0)[0] for n in (16, 32, 64)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    print(f"shallow water MMS space: errors {errors}, orders {orders}")
    assert errors[-1] < 1e-2
    assert np.all(orders > 1.8)


def test_manufactured_solution_converges_at_fourth_order_in_time_with_rk4():
    _, ref = manufactured_run(16, 128, name="sw_mms_t")
    errors = []
    for steps in (8, 16, 32):
        _, a = manufactured_run(16, steps, name="sw_mms_t")
        errors.append(np.abs(a - ref).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    print(f"shallow water MMS time (RK4): errors {errors}, orders {orders}")
    assert np.all(orders > 3.7)


def test_linear_gravity_waves_travel_at_sqrt_gH():
    n, a0 = 32, 1e-2
    c0 = math.sqrt(G * H)
    T = 0.4 * L / c0
    m = ShallowWater("sw_gravity_wave", MPI.COMM_SELF, (n, 3), ((0, L), (0, 3 * L / n)), dt=T / 40, mean_depth=H,
                     initial=("geostrophic_balance", {"amplitude": 0.0}), parameters={"gravity": G, "f0": 0.0})
    x = m.create_state()
    a = m.grid.owned_array(x)
    xh, _ = coordinates(m.grid, "h")
    xu, _ = coordinates(m.grid, "u")
    a[..., 0] = H + a0 * np.cos(K * xh)
    a[..., 1] = math.sqrt(G / H) * a0 * np.cos(K * xu)  # a right-going wave
    phase0 = np.angle(np.fft.fft(a[..., 0].mean(axis=0))[1])
    m.advance(x, 0.0, T)
    a = m.grid.owned_array(x, readonly=True)
    phase1 = np.angle(np.fft.fft(a[..., 0].mean(axis=0))[1])
    speed = -(phase1 - phase0) / (K * T)
    dx = L / n
    discrete = c0 * math.sin(K * dx / 2) / (K * dx / 2)  # C-grid dispersion relation
    print(f"gravity wave speed {speed:.4f} m/s, sqrt(gH) = {c0:.4f} m/s, C-grid theory {discrete:.4f} m/s")
    assert speed == pytest.approx(c0, rel=0.02)
    assert speed == pytest.approx(discrete, rel=2e-4)
    m.destroy()


def test_geostrophic_balance_stays_steady_to_truncation_error():
    drift = []
    for n in (16, 32):
        m = ShallowWater(f"sw_geo_{n}", MPI.COMM_SELF, (n, n), ((0, 4 * L), (0, 4 * L)), dt=600.0, mean_depth=H,
                         initial=("geostrophic_balance", {"amplitude": 10.0}), parameters={"f0": F0})
        x = m.initial_state()
        x0 = m.grid.owned_array(x, readonly=True).copy()
        m.advance(x, 0.0, 86400.0)
        a = m.grid.owned_array(x, readonly=True)
        drift.append(max(np.abs(a[..., 0] - x0[..., 0]).max() / 10.0,
                         np.abs(a[..., 1:] - x0[..., 1:]).max() / np.abs(x0[..., 1]).max()))
        m.destroy()
    print(f"geostrophic drift after one day: {drift}, order {math.log2(drift[0] / drift[1]):.2f}")
    assert drift[1] < 0.02
    assert drift[0] / drift[1] > 3.4


def test_unstable_jet_is_barotropically_unstable():
    m = ShallowWater("sw_jet", MPI.COMM_SELF, (64, 64), ((0, 4 * L), (0, 4 * L)), dt=500.0, mean_depth=H,
                     initial=("unstable_jet", {"speed": 20.0, "perturbation": 1.0}), parameters={"f0": F0})
    x = m.initial_state()
    vmax = []
    for day in range(5):
        m.advance(x, day * 86400.0, (day + 1) * 86400.0)
        vmax.append(np.abs(m.grid.owned_array(x, readonly=True)[..., 2]).max())
    growth = vmax[4] / vmax[2]
    print(f"unstable jet: max |v| per day {vmax}, growth days 3-5 x{growth:.1f}")
    assert growth > 8  # exponential growth of the seeded wave (e-folding about 0.8 day here)
    m.destroy()
