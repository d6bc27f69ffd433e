"""Grid-to-grid maps: conservative mapping preserves integrals to round-off, consistent mapping reproduces linear
fields exactly and converges at second order, nearest-neighbour mapping of point sets, clear errors."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import CouplingError
from twin.core.grid import Grid
from twin.coupling.mapping import PointSet, build_map, conservative_map, consistent_map, nearest_map

COMM = MPI.COMM_SELF
RNG = np.random.default_rng(7)


def _random(grid):
    v = grid.create_global()
    v.getArray()[...] = RNG.uniform(0.5, 2.0, v.getLocalSize())
    return v


@pytest.mark.parametrize("src_shape, dst_shape, src_box, dst_box", [
    ((17,), (6,), [(0, 1)], [(0, 1)]),
    ((13, 7), (8, 11), [(0, 1), (0, 2)], [(0, 1), (0, 2)]),
    ((13, 7), (10, 10), [(0.2, 0.9), (0.5, 1.5)], [(0, 1), (0, 2)]),     # target box covers the source box
    ((5, 6, 7), (7, 4, 3), [(0, 1), (0, 1), (0, 1)], [(0, 1), (0, 1), (0, 1)]),
])
def test_conservative_map_preserves_integral(src_shape, dst_shape, src_box, dst_box):
    src, dst = Grid(COMM, src_shape, src_box), Grid(COMM, dst_shape, dst_box)
    gmap = conservative_map(src, dst)
    x = _random(src)
    y = gmap.apply(x)
    assert dst.integrate(y) == pytest.approx(src.integrate(x), rel=1e-14, abs=0)
    # a constant stays constant where the target cells lie inside the source box
    x.set(3.0)
    gmap.apply(x, y)
    if src_box == dst_box:
        np.testing.assert_allclose(y.getArray(), 3.0, rtol=1e-14)
    for obj in (gmap, x, y, src, dst):
        obj.destroy()


def _linear(X, Y):
    return 1.5 - 2.0 * X + 0.75 * Y


@pytest.mark.parametrize("dst", [
    dict(shape=(9, 5), extent=[(0, 1), (0, 2)]),                       # same box, coarser: boundary half cells
    dict(shape=(23, 31), extent=[(0.1, 0.8), (0.3, 1.9)]),             # inside, finer, different extent
    dict(shape=(6, 6), extent=[(0, 1), (0, 2)], centering="node"),     # nodes on the boundary (extrapolation)
])
def test_consistent_map_reproduces_linear_fields_exactly(dst):
    src = Grid(COMM, (12, 10), [(0, 1), (0, 2)])
    tgt = Grid(COMM, **dst)
    gmap = consistent_map(src, tgt)
    y = gmap.apply(src.from_function(_linear))
    exact = tgt.from_function(_linear)
    np.testing.assert_allclose(y.getArray(), exact.getArray(), rtol=0, atol=1e-13)
    for obj in (gmap, y, exact, src, tgt):
        obj.destroy()


def test_consistent_map_converges_at_second_order():
    def f(X, Y):
        return np.sin(2.0 * X) * np.cos(3.0 * Y) + X * Y

    errors = []
    for n in (16, 32, 64, 128):
        src = Grid(COMM, (n, n), [(0, 1), (0, 1)])
        # target cells scale with the source cells, so the relative positions repeat under refinement
        tgt = Grid(COMM, (11 * n // 8, 5 * n // 8), [(0.125, 0.875), (0, 1)])
        gmap = consistent_map(src, tgt)
        y = gmap.apply(src.from_function(f))
        exact = tgt.from_function(f)
        errors.append(np.max(np.abs(y.getArray() - exact.getArray())))
        for obj in (gmap, y, exact, src, tgt):
            obj.destroy()
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    # the max error sits in the boundary half cells (linear extrapolation), where the rate approaches 2 from below
    slope = -np.polyfit(np.log([16, 32, 64, 128]), np.log(errors), 1)[0]
    assert slope > 1.9 and rates[-1] > 1.95 and np.all(rates > 1.85), (errors, rates, slope)


def test_identity_map_is_exact_and_dof_components_map_separately():
    g1 = Grid(COMM, (7, 5), [(0, 1), (0, 1)], dof=2)
    g2 = Grid(COMM, (7, 5), [(0, 1), (0, 1)], dof=2)
    x = _random(g1)
    for kind in ("consistent", "conservative", "nearest"):
        gmap = build_map(kind, g1, g2, f"id_{kind}")
        y = gmap.apply(x)
        np.testing.assert_allclose(y.getArray(), x.getArray(), rtol=1e-15, atol=1e-15)
        gmap.destroy()
        y.destroy()


def test_nearest_map_from_grid_and_point_set():
    src = Grid(COMM, (10, 4), [(0, 1), (0, 1)])
    pts = np.array([[0.01, 0.01], [0.52, 0.9], [0.99, 0.4]])
    target = PointSet(COMM, pts)
    x = src.from_function(lambda X, Y: 100 * np.floor(10 * X) + np.floor(4 * Y))
    y = nearest_map(src, target).apply(x)
    np.testing.assert_array_equal(y.getArray(), [0.0, 503.0, 901.0])
    # point set to point set: each target takes the nearest source value
    back = PointSet(COMM, np.array([[0.5, 0.85], [0.0, 0.0]]))
    z = nearest_map(target, back).apply(y)
    np.testing.assert_array_equal(z.getArray(), [503.0, 0.0])


def test_map_errors_are_typed():
    src = Grid(COMM, (4, 4), [(0, 1), (0, 1)])
    with pytest.raises(CouplingError, match="outside the source box"):
        consistent_map(src, Grid(COMM, (4, 4), [(0, 2), (0, 1)]), name="too_big")
    with pytest.raises(CouplingError, match="unknown kind 'cubic'"):
        build_map("cubic", src, src, "m")
    with pytest.raises(CouplingError, match="dof"):
        consistent_map(src, Grid(COMM, (4, 4), [(0, 1), (0, 1)], dof=2))
    other = Grid(COMM, (3, 3), [(0, 1), (0, 1)])
    gmap = consistent_map(src, other)
    with pytest.raises(CouplingError, match="source vector has 9"):
        gmap.apply(other.create_global())
    # zero outside when asked
    big = Grid(COMM, (4, 2), [(0, 2), (0, 1)])
    y = consistent_map(src, big, outside="zero").apply(src.from_function(lambda X, Y: 1.0 + 0 * X))
    np.testing.assert_allclose(y.getArray().reshape(2, 4), [[1, 1, 0, 0], [1, 1, 0, 0]])
    # a route asks for it by its key (the error's advice named a key that routes did not have: found by a probe)
    assert build_map("consistent", src, big, "route", outside="zero").apply(
        src.from_function(lambda X, Y: 1.0 + 0 * X)).getArray().sum() == pytest.approx(4.0)
    with pytest.raises(CouplingError, match="set outside: zero in the route"):
        build_map("consistent", src, big, "route")


def test_a_nearest_map_reaching_outside_its_source_says_so(caplog):
    """Grids 60 mm apart mapped by nearest ran without a word, the far grid taking the source's edge values (a
    probe): the map says how many target points lie outside the source's box."""
    src = Grid(COMM, (4, 4), [(0, 1), (0, 1)])
    with caplog.at_level("WARNING", logger="twin.coupling"):
        nearest_map(src, Grid(COMM, (4, 4), [(0.5, 1.5), (0, 1)]), name="apart")
    assert "mapping 'apart': 8 target point(s) lie outside the source box" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="twin.coupling"):
        nearest_map(src, Grid(COMM, (3, 3), [(0, 1), (0, 1)]), name="inside")
    assert "outside" not in caplog.text
