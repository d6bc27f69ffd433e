"""The one multilinear-interpolation weight function (``twin.core.grid.multilinear_weights``) behind the observation
operators' point interpolation, the coupling's consistent maps and the shallow-water QoIs at sites: weights sum to one,
linear functions are reproduced exactly, periodic axes wrap, and the boundary half cells extrapolate as asked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from twin.core.grid import Grid, multilinear_weights

COMM = MPI.COMM_SELF


def _interpolate(grid: Grid, values: np.ndarray, points, extrapolate: str = "constant") -> np.ndarray:
    """``values`` at the grid points (C-order array of shape ``grid.shape[::-1]``) interpolated at ``points``."""
    index, weights = multilinear_weights(grid, points, extrapolate)
    return sum(w * values[tuple(idx[::-1])] for idx, w in zip(index, weights))


def _linear(grid: Grid, coeffs: np.ndarray, c0: float, points=None) -> np.ndarray:
    """``c0 + coeffs . x`` at ``points``, or at every grid point (C-order array) when ``points`` is None."""
    if points is None:
        return c0 + sum(c * X for c, X in zip(coeffs, grid.mesh()))
    return c0 + np.asarray(points) @ coeffs


def test_hand_computed_bilinear_weights_on_a_cell_grid():
    g = Grid(COMM, (4, 2), [(0.0, 4.0), (0.0, 2.0)])
    # centres at x = 0.5 .. 3.5, y = 0.5, 1.5: the point (1.25, 0.75) is a quarter past centre 0 in y, 3/4 past centre 0
    # in x
    index, weights = multilinear_weights(g, [[1.25, 0.75]])
    assert index.shape == (4, 2, 1) and weights.shape == (4, 1)
    corners = {(int(i[0, 0]), int(i[1, 0])): float(w[0]) for i, w in zip(index, weights)}
    assert corners == pytest.approx({(0, 0): 0.25 * 0.75, (0, 1): 0.25 * 0.25, (1, 0): 0.75 * 0.75,
                                     (1, 1): 0.75 * 0.25})
    # corner order: itertools.product((0, 1), repeat=dim), axis 0 slowest
    assert [tuple(int(v) for v in i[:, 0]) for i in index] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    g.destroy()


def test_boundary_half_cells_extrapolate_constant_or_linear():
    g = Grid(COMM, (4,), [(0.0, 1.0)])
    values = _linear(g, np.array([2.0]), 1.0)
    points = np.array([[0.0], [0.05], [0.95], [1.0]])
    nearest = values[[0, 0, -1, -1]]
    assert np.allclose(_interpolate(g, values, points, "constant"), nearest, rtol=0, atol=1e-14)
    assert np.allclose(_interpolate(g, values, points, "linear"), 1.0 + 2.0 * points[:, 0], rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="extrapolate"):
        multilinear_weights(g, points, "quadratic")
    g.destroy()


def test_periodic_axis_wraps_and_a_single_point_axis_is_taken_whole():
    g = Grid(COMM, (5, 1), [(0.0, 5.0), (0.0, 1.0)], periodic=[True, False])
    index, weights = multilinear_weights(g, [[0.2, 0.3]])
    # x = 0.2 lies between the last centre (4.5, index 4) and the first (0.5, index 0) across the periodic edge
    assert set(index[:, 0, 0].tolist()) == {4, 0} and set(index[:, 1, 0].tolist()) == {0}
    shifted = multilinear_weights(g, [[0.2 + 5.0, 0.3]])
    assert np.array_equal(shifted[0][..., 0], index[..., 0])
    assert np.allclose(shifted[1][:, 0], weights[:, 0], rtol=0, atol=1e-14)
    g.destroy()


@st.composite
def grids_and_points(draw):
    dim = draw(st.integers(1, 3))
    centering = draw(st.sampled_from(["cell", "node"]))
    shape = [draw(st.integers(2, 6) if centering == "node" else st.integers(1, 6)) for _ in range(dim)]
    lo = [draw(st.floats(-10.0, 10.0)) for _ in range(dim)]
    length = [draw(st.floats(0.1, 20.0)) for _ in range(dim)]
    periodic = [draw(st.booleans()) for _ in range(dim)]
    unit = draw(st.lists(st.lists(st.floats(0.0, 1.0), min_size=dim, max_size=dim), min_size=1, max_size=8))
    points = np.asarray(lo) + np.asarray(unit) * np.asarray(length)
    coeffs = np.asarray([draw(st.floats(-3.0, 3.0)) for _ in range(dim)])
    return (shape, [(a, a + b) for a, b in zip(lo, length)], periodic, centering), points, coeffs


@settings(max_examples=80, deadline=None)
@given(grids_and_points(), st.sampled_from(["constant", "linear"]))
def test_weights_sum_to_one_and_reproduce_linear_functions(case, extrapolate):
    (shape, extent, periodic, centering), points, coeffs = case
    g = Grid(COMM, shape, extent, periodic=periodic, centering=centering)
    try:
        index, weights = multilinear_weights(g, points, extrapolate)
        assert index.shape == (2 ** g.dim, g.dim, len(points)) and weights.shape == (2 ** g.dim, len(points))
        assert np.allclose(weights.sum(axis=0), 1.0, rtol=0, atol=1e-12)
        for a in range(g.dim):
            assert np.all((index[:, a] >= 0) & (index[:, a] < g.shape[a]))
        if extrapolate == "constant":
            assert np.all(weights >= -1e-12)
        # exact for linear functions along the non-periodic axes with more than one point, everywhere in the box with
        # linear extrapolation and between the outermost points with constant extrapolation (constant along the others)
        c = np.where([not p and n > 1 for p, n in zip(g.periodic, g.shape)], coeffs, 0.0)
        axes = [g.axis_coordinates(a) for a in range(g.dim)]
        inner = np.ones(len(points), dtype=bool)
        if extrapolate == "constant":
            for a in range(g.dim):
                if c[a] != 0.0:
                    inner &= (points[:, a] >= axes[a][0]) & (points[:, a] <= axes[a][-1])
        got = _interpolate(g, _linear(g, c, 1.5), points[inner], extrapolate)
        scale = 1.5 + np.sum(np.abs(c) * np.max(np.abs(np.asarray(extent)), axis=1))
        assert np.allclose(got, _linear(g, c, 1.5, points[inner]), rtol=0, atol=1e-11 * scale)
        # at the grid points themselves any field is reproduced (periodic axes included)
        values = np.random.default_rng(len(points)).standard_normal(g.shape[::-1])
        nodes = np.stack([X.ravel() for X in g.mesh()], axis=1)
        assert np.allclose(_interpolate(g, values, nodes, extrapolate), values.ravel(), rtol=0, atol=1e-12)
    finally:
        g.destroy()
