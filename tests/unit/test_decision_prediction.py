"""Posterior prediction: risk measures against exact values, and calibrated credible intervals on a linear-Gaussian
problem forecast with a PETSc model (linear advection-diffusion)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import ModelError
from twin.decision.prediction import (PosteriorEnsemble, credible_interval, exceedance_probability,
                                      forecast_members, gaussian_superquantile, interval_coverage, risk, summarise,
                                      superquantile)
from twin.kinds.linear.model import LinearAdvectionDiffusion

COMM = MPI.COMM_SELF


def test_superquantile_of_discrete_samples_is_exact():
    x = np.arange(1.0, 11.0)
    assert superquantile(x, 0.8) == pytest.approx(9.5)  # mean of the two largest
    # alpha = 0.75: the tail of mass 2.5 holds 9, 10 and half of the atom at 8
    assert superquantile(x, 0.75) == pytest.approx((0.5 * 8 + 9 + 10) / 2.5)
    assert superquantile(x[::-1], 0.0) == pytest.approx(x.mean())
    # Rockafellar-Uryasev: the value is the minimum over t of t + E[(x - t)^+] / (1 - alpha)
    ts = np.linspace(0, 12, 2401)
    ru = min(t + np.mean(np.maximum(x - t, 0)) / 0.3 for t in ts)
    assert superquantile(x, 0.7) == pytest.approx(ru, abs=1e-3)
    with pytest.raises(ValueError):
        superquantile(x, 1.0)


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.95])
def test_superquantile_matches_gaussian_formula(alpha):
    rng = np.random.default_rng(4)
    mu, sigma = 2.0, 3.0
    s = rng.normal(mu, sigma, size=400_000)
    exact = gaussian_superquantile(mu, sigma, alpha)
    # e.g. alpha=0.9: mu + sigma * 1.7550 = 7.265
    assert superquantile(s, alpha) == pytest.approx(exact, rel=5e-3)
    assert risk(s, "cvar", alpha) == pytest.approx(exact, rel=5e-3)
    assert risk(s, "mean") == pytest.approx(mu, abs=0.02)
    assert gaussian_superquantile(0.0, 1.0, 0.9) == pytest.approx(1.7549833, rel=1e-6)


def test_summary_and_exceedance():
    rng = np.random.default_rng(0)
    s = rng.normal(0.0, 1.0, size=200_000)
    sm = summarise(s, "q", "m", limits=[1.6448536])
    assert sm.quantiles[0.05] == pytest.approx(-1.6449, abs=0.02)
    assert sm.quantiles[0.95] == pytest.approx(1.6449, abs=0.02)
    assert sm.exceedance[1.6448536] == pytest.approx(0.05, abs=0.003)
    assert exceedance_probability(np.array([[1.0, 3.0], [2.0, 0.0]]), 1.5).tolist() == [0.5, 0.5]
    assert credible_interval(np.arange(101.0), [0.1, 0.9]).tolist() == [10.0, 90.0]
    with pytest.raises(ValueError):
        risk(s, "var")


def _linear_map(model, n):
    """The matrix of the model's map u(0) -> u(T) (columns: advanced unit vectors), through Model.advance."""
    vec = model.create_state()
    M = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        model.grid.set_global(e, vec)
        model.advance(vec, 0.0, HORIZON)
        M[:, i] = model.grid.allgather(vec).ravel()
    vec.destroy()
    return M


HORIZON = 0.2


def test_credible_intervals_have_nominal_coverage():
    """Linear-Gaussian twin: prior x ~ N(0, B) on 24 cells, 4 noisy point observations, exact Kalman posterior,
    N posterior members forecast by the PETSc model to the horizon, QoI = mass of u in a window. Over repeated
    experiments the 90 % (and 50 %) credible intervals must cover the true QoI 90 % (50 %) of the time, and an
    overconfident posterior (covariance / 4) must not."""
    n = 24
    model = LinearAdvectionDiffusion("lin", COMM, n=n, length=1.0, dt=0.02, velocity=0.5, diffusivity=0.01)
    M = _linear_map(model, n)
    x = (np.arange(n) + 0.5) / n
    d = np.abs(x[:, None] - x[None, :])
    d = np.minimum(d, 1 - d)
    B = np.exp(-0.5 * (d / 0.1) ** 2) + 1e-6 * np.eye(n)
    obs = [2, 8, 14, 20]
    H = np.eye(n)[obs]
    r = 0.1
    K = B @ H.T @ np.linalg.inv(H @ B @ H.T + r * r * np.eye(len(obs)))
    P = B - K @ H @ B
    w, V = np.linalg.eigh(0.5 * (P + P.T))
    L = V * np.sqrt(np.clip(w, 0.0, None))  # P = L L^T
    window = np.where((x > 0.55) & (x < 0.8), 1.0 / n, 0.0)
    g = window @ M  # QoI: mass of u in the window at the horizon, as a linear function of u(0)
    # the forecast path through forecast_members gives the same QoI as the assembled map
    rng = np.random.default_rng(7)
    members = (L @ rng.standard_normal((n, 5))).T
    fc = forecast_members(model, PosteriorEnsemble(members), [0.1, HORIZON], qois=[],
                          extra={"window": lambda m, v, t: float(m.grid.allgather(v).ravel() @ window)})
    assert np.allclose(fc.values["window"][:, -1], members @ g, rtol=1e-10, atol=1e-13)
    assert fc.fan("window").shape == (3, 2)
    model.destroy()

    n_exp, N = 1000, 400
    wb, Vb = np.linalg.eigh(B)
    truth = (Vb * np.sqrt(np.clip(wb, 0, None))) @ rng.standard_normal((n, n_exp))
    y = H @ truth + r * rng.standard_normal((len(obs), n_exp))
    mean = K @ y
    q_true = g @ truth
    Z = rng.standard_normal((n_exp, N, n))
    samples = (g @ mean)[:, None] + Z @ (L.T @ g)  # (n_exp, N): QoI of N posterior members per experiment
    lo, hi = credible_interval(samples, [0.05, 0.95], axis=1)
    cov90 = interval_coverage(lo, hi, q_true)
    lo50, hi50 = credible_interval(samples, [0.25, 0.75], axis=1)
    cov50 = interval_coverage(lo50, hi50, q_true)
    assert abs(cov90 - 0.90) < 0.03, cov90
    assert abs(cov50 - 0.50) < 0.04, cov50
    narrow = (g @ mean)[:, None] + 0.5 * (Z @ (L.T @ g))
    lo_n, hi_n = credible_interval(narrow, [0.05, 0.95], axis=1)
    assert interval_coverage(lo_n, hi_n, q_true) < 0.75


def test_forecast_members_refuses_bad_times_and_qois():
    model = LinearAdvectionDiffusion("lin2", COMM, n=8)
    ens = PosteriorEnsemble(np.zeros((2, 8)), time=0.5)
    with pytest.raises(ModelError, match="increasing"):
        forecast_members(model, ens, [0.2, 0.6])
    with pytest.raises(ModelError, match="no QoI"):
        forecast_members(model, ens, [0.6], qois=["burden"])
    with pytest.raises(ModelError, match="samples"):
        PosteriorEnsemble(np.zeros((2, 8)), {"velocity": np.ones(3)})
    fc = forecast_members(model, ens, [0.6, 0.7])
    assert set(fc.values) == {"mass", "max"} and fc.values["mass"].shape == (2, 2)
    model.destroy()
