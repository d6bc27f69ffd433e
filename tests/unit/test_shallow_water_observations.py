"""Atmosphere observation operators on the shallow-water C-grid: exact at grid points, linear fields reproduced,
adjoint consistent, swath geometry and error model, bad input refused."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import ObservationError
from twin.kinds.shallow_water import Bump, ShallowWater
from twin.kinds.shallow_water.staggering import coordinates
from twin.kinds.shallow_water.observations import GriddedSubsetOperator, StationOperator, SwathOperator, swath_points

L = 1.2e6


@pytest.fixture(scope="module")
def model():
    m = ShallowWater("sw_obs", MPI.COMM_SELF, (12, 8), ((0, L), (0, 0.8 * L)), dt=60.0, mean_depth=1000.0,
                     initial=("balanced_turbulence", {"speed": 10.0, "seed": 4}), tracer=Bump((L / 2, L / 2), L / 5, 1.0))
    yield m
    m.destroy()


def _field(model, kind_values):
    """A state whose components are given functions of their own C-grid coordinates."""
    x = model.create_state()
    a = model.grid.owned_array(x)
    for c, (kind, fn) in enumerate(kind_values):
        a[..., c] = fn(*coordinates(model.grid, kind))
    return x


def test_stations_on_grid_points_return_the_values_exactly(model):
    x = model.initial_state()
    a = model.grid.owned_array(x, readonly=True)
    Xu, Yu = coordinates(model.grid, "u")
    Xv, Yv = coordinates(model.grid, "v")
    idx = [(1, 2), (5, 7), (0, 0)]
    pts_u = np.array([[Xu[j, i], Yu[j, i]] for j, i in idx])
    pts_v = np.array([[Xv[j, i], Yv[j, i]] for j, i in idx])
    op_u = StationOperator(model.grid, pts_u, ["u"], 1.0)
    op_v = StationOperator(model.grid, pts_v, ["v"], 1.0)
    assert np.allclose(op_u.apply(x), [a[j, i, 1] for j, i in idx], rtol=0, atol=1e-12)
    assert np.allclose(op_v.apply(x), [a[j, i, 2] for j, i in idx], rtol=0, atol=1e-12)
    op_u.destroy()
    op_v.destroy()


def test_stations_reproduce_fields_linear_in_x_away_from_the_periodic_seam(model):
    dx, dy = model.grid.spacing
    x = _field(model, [("h", lambda X, Y: 1000 + 1e-4 * X - 2e-4 * Y), ("u", lambda X, Y: 3e-6 * X + 1e-6 * Y),
                       ("v", lambda X, Y: -2e-6 * X), ("tracer", lambda X, Y: 0 * X)])
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(dx, L - dx, 30), rng.uniform(dy, 0.8 * L - dy, 30)])
    op = StationOperator(model.grid, pts, ["h", "u", "v"], {"h": 2.0, "u": 1.0, "v": 1.0})
    y = op.apply(x)
    X, Y = pts[:, 0], pts[:, 1]
    assert np.allclose(y[:30], 1000 + 1e-4 * X - 2e-4 * Y, atol=1e-9)
    assert np.allclose(y[30:60], 3e-6 * X + 1e-6 * Y, atol=1e-9)
    assert np.allclose(y[60:], -2e-6 * X, atol=1e-9)
    assert np.array_equal(op.error_std, np.r_[np.full(30, 2.0), np.ones(60)])
    assert op.locations.shape == (90, 2)
    op.destroy()


@pytest.mark.parametrize("make", [
    lambda g: StationOperator(g, [[1e5, 2e5], [1.1e6, 9e5], [0.0, 0.0]], ["h", "u", "v", "tracer"], 1.0),
    lambda g: GriddedSubsetOperator(g, ["h", "v"], stride=(3, 2), error_std={"h": 1.0, "v": 0.5}),
    lambda g: SwathOperator(g, (2e5, 1e5), 60.0, 2e6, 5e4, width=2e5, n_across=5, variables=["h", "u"]),
])
def test_adjoint_passes_the_dot_product_test(model, make):
    op = make(model.grid)
    rng = np.random.default_rng(1)
    x = model.create_state()
    x.setArray(rng.standard_normal(x.getLocalSize()))
    y = rng.standard_normal(op.n_obs)
    hty = model.create_state()
    op.apply_adjoint(x, y, hty)
    assert np.dot(op.apply(x), y) == pytest.approx(x.dot(hty), rel=1e-13)
    op.destroy()


def test_gridded_subset_selects_strided_points_of_each_variable(model):
    x = model.initial_state()
    full = model.grid.owned_array(x, readonly=True)
    region = ((0.25 * L, 0.75 * L), (0.0, 0.8 * L))
    op = GriddedSubsetOperator(model.grid, ["h", "u"], stride=(2, 3), region=region, error_std=0.7)
    Xh, _ = coordinates(model.grid, "h")
    cols = np.flatnonzero((Xh[0] >= region[0][0]) & (Xh[0] <= region[0][1]))[::2]
    rows = np.arange(8)[::3]
    expected_h = full[np.ix_(rows, cols)][..., 0].ravel()
    y = op.apply(x)
    assert np.allclose(y[:expected_h.size], expected_h, rtol=0, atol=0)
    assert np.all(op.locations[:, 0] >= region[0][0]) and np.all(op.locations[:, 0] <= region[0][1])
    assert op.variables.count("h") == expected_h.size and np.all(op.error_std == 0.7)
    op.destroy()


def test_swath_geometry_wraps_and_error_grows_to_the_edges(model):
    pts, cross = swath_points(model.grid, (1.1e6, 0.1e6), 90.0, 1.5e6, 1e5, width=2e5, n_across=3)
    assert pts.shape == (16 * 3, 2)
    assert np.all(model.grid.contains(pts))
    # heading 90 degrees (along +y): the footprint at cross = -w/2 lies at x = 1.2e6, wrapped to 0; +w/2 at 1.0e6
    assert np.allclose(pts[::3, 0], 0.0) and np.allclose(pts[2::3, 0], 1.0e6)
    assert np.allclose(pts[1::3, 1], np.mod(0.1e6 + np.arange(16) * 1e5, 0.8 * L))
    op = SwathOperator(model.grid, (1.1e6, 0.1e6), 90.0, 1.5e6, 1e5, width=2e5, n_across=3, error_std=2.0,
                       edge_error_factor=3.0)
    assert np.allclose(op.error_std[:3], [6.0, 2.0, 6.0])
    op.destroy()


def test_bad_observation_requests_are_refused(model):
    with pytest.raises(ObservationError, match="outside the model domain"):
        StationOperator(model.grid, [[2 * L, 0.0]], ["h"])
    with pytest.raises(ObservationError, match=r"unknown variable 'w'"):
        StationOperator(model.grid, [[0.0, 0.0]], ["w"])
    with pytest.raises(ObservationError, match="no error_std"):
        StationOperator(model.grid, [[0.0, 0.0]], ["h", "u"], {"h": 1.0})
    with pytest.raises(ObservationError, match="positive"):
        StationOperator(model.grid, [[0.0, 0.0]], ["h"], 0.0)
    with pytest.raises(ObservationError, match="stride"):
        GriddedSubsetOperator(model.grid, ["h"], stride=(0, 1))
    with pytest.raises(ObservationError, match="edge_error_factor"):
        SwathOperator(model.grid, (0, 0), 0.0, 1e5, 1e4, error_std=1.0, edge_error_factor=0.5)
