"""Sampling of parameter priors: moments of scalar priors and the covariance of Gaussian random fields."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.config.common import GaussianFieldPrior, LogNormalPrior, NormalPrior, UniformPrior
from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.models.priors import fill_vec, prior_center, prior_transform, sample_prior


def test_scalar_moments():
    rng = np.random.default_rng(0)
    n = 40000
    x = sample_prior(NormalPrior(dist="normal", mean=2.0, std=0.5), rng, size=n)
    assert x.shape == (n,)
    assert abs(x.mean() - 2.0) < 4 * 0.5 / np.sqrt(n) and abs(x.std() - 0.5) < 0.01
    y = sample_prior(LogNormalPrior(dist="lognormal", median=0.1, sigma=0.3), rng, size=n)
    assert np.all(y > 0)
    assert abs(np.median(y) - 0.1) < 0.002 and abs(np.log(y).std() - 0.3) < 0.006
    u = sample_prior(UniformPrior(dist="uniform", low=-1.0, high=3.0), rng, size=n)
    assert u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1.0) < 0.03
    assert isinstance(sample_prior(NormalPrior(dist="normal", mean=0, std=1), rng), float)


def test_centre_and_transform():
    ln = LogNormalPrior(dist="lognormal", median=0.1, sigma=0.3)
    gf = GaussianFieldPrior(dist="gaussian_field", mean=np.log(0.05), std=0.3, length_scale=5.0)
    assert prior_center(ln) == 0.1 and prior_center(gf) == pytest.approx(0.05)
    assert prior_transform(ln) == "log" and prior_transform(gf) == "log"
    assert prior_transform(NormalPrior(dist="normal", mean=0, std=1)) == "none"


def test_gaussian_field_covariance():
    """Pointwise variance std^2 and correlation exp(-r^2 / (2 l^2)) at lags of 3 and 6 cells."""
    grid = Grid(MPI.COMM_SELF, (40, 32), ((0.0, 40.0), (0.0, 32.0)), name="grf")
    prior = GaussianFieldPrior(dist="gaussian_field", mean=1.0, std=0.5, length_scale=3.0, log=False)
    rng = np.random.default_rng(1)
    f = sample_prior(prior, rng, grid=grid, size=300)
    assert f.shape == (300, 32, 40)
    a = f - 1.0
    var = np.mean(a * a)
    assert var == pytest.approx(0.25, rel=0.05)
    for lag in (3, 6):
        cx = np.mean(a[:, :, :-lag] * a[:, :, lag:]) / var
        cy = np.mean(a[:, :-lag, :] * a[:, lag:, :]) / var
        expected = np.exp(-0.5 * lag ** 2 / 9.0)
        assert cx == pytest.approx(expected, abs=0.04) and cy == pytest.approx(expected, abs=0.04), (lag, cx, cy)
    # stationarity: corners have the same variance as the centre (no edge artefact from the embedding)
    assert np.mean(a[:, 0, 0] ** 2) == pytest.approx(0.25, rel=0.25)
    grid.destroy()


def test_log_field_is_positive_and_reproducible():
    grid = Grid(MPI.COMM_SELF, (16, 12, 8), ((0, 16), (0, 12), (0, 8)), name="grf3")
    prior = GaussianFieldPrior(dist="gaussian_field", mean=np.log(0.1), std=0.3, length_scale=2.0)
    a = sample_prior(prior, np.random.default_rng(7), grid=grid)
    b = sample_prior(prior, np.random.default_rng(7), grid=grid)
    assert a.shape == (8, 12, 16) and np.all(a > 0)
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.log(a)) == pytest.approx(np.log(0.1), abs=0.3)
    v = fill_vec(grid, a)
    np.testing.assert_array_equal(v.getArray(), a.ravel())
    v.destroy()
    grid.destroy()


def test_field_prior_needs_grid():
    prior = GaussianFieldPrior(dist="gaussian_field", mean=0.0, std=1.0, length_scale=1.0)
    with pytest.raises(ModelError, match="needs the grid"):
        sample_prior(prior, np.random.default_rng(0))
