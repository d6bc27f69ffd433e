"""Linear observation operators: exact on linear fields, adjoint consistent, bad input refused."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import ObservationError
from twin.core.grid import Grid
from twin.observations.base import LinearObservationOperator, interpolation_matrix


@pytest.fixture
def grid():
    g = Grid(MPI.COMM_SELF, (9, 7, 5), [(0, 3), (0, 2), (-1, 1)], dof=2)
    yield g
    g.destroy()


def test_multilinear_interpolation_is_exact_for_linear_fields(grid):
    rng = np.random.default_rng(0)
    # Stay between the first and last cell centres, where interpolation (not extrapolation) applies.
    lo = np.array([e[0] + h / 2 for e, h in zip(grid.extent, grid.spacing)])
    hi = np.array([e[1] - h / 2 for e, h in zip(grid.extent, grid.spacing)])
    pts = lo + (hi - lo) * rng.random((50, 3))
    x = grid.from_function(lambda X, Y, Z: np.stack([1 + 2 * X - Y + 0.5 * Z, X * Y], -1))
    op = LinearObservationOperator(grid, interpolation_matrix(grid, pts, component=0), 0.5)
    expected = 1 + 2 * pts[:, 0] - pts[:, 1] + 0.5 * pts[:, 2]
    assert np.allclose(op.apply(x), expected, atol=1e-12)
    op.destroy()
    x.destroy()


def test_transpose_passes_the_dot_product_test(grid):
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(*e, 20) for e in grid.extent])
    op = LinearObservationOperator(grid, interpolation_matrix(grid, pts, component=1), np.full(20, 0.3))
    x = grid.create_global()
    x.setArray(rng.standard_normal(x.getLocalSize()))
    y = rng.standard_normal(20)
    hty = grid.create_global()
    hty.set(0.0)
    op.apply_adjoint(x, y, hty)
    assert np.dot(op.apply(x), y) == pytest.approx(x.dot(hty), rel=1e-13)
    for v in (x, hty):
        v.destroy()
    op.destroy()


def test_point_outside_domain_is_refused(grid):
    with pytest.raises(ObservationError, match=r"outside the model domain"):
        interpolation_matrix(grid, [[1.0, 1.0, 0.0], [3.5, 0.0, 0.0]])


@pytest.mark.parametrize("err", [0.0, -1.0, np.nan])
def test_non_positive_errors_are_refused(grid, err):
    with pytest.raises(ObservationError, match="positive"):
        LinearObservationOperator(grid, interpolation_matrix(grid, [[1.0, 1.0, 0.0]]), err)
