"""Observation operators give the same values on a grid split over 2 ranks as on one rank."""

import numpy as np
from mpi4py import MPI

from twin.core.grid import Grid
from twin.observations.base import LinearObservationOperator, interpolation_matrix


def _observe(comm, pts, field):
    g = Grid(comm, (12, 10), [(0, 1), (0, 1)], periodic=(True, False))
    x = g.create_global()
    g.set_global(field, x)
    op = LinearObservationOperator(g, interpolation_matrix(g, pts), 1.0)
    y = op.apply(x)
    out = g.create_global()
    out.set(0.0)
    op.apply_adjoint(x, np.arange(len(pts), dtype=float), out)
    adj = g.allgather(out)
    for o in (x, out):
        o.destroy()
    op.destroy()
    g.destroy()
    return y, adj


def test_same_observations_on_one_and_two_ranks():
    rng = np.random.default_rng(3)
    pts = rng.random((25, 2))
    field = rng.standard_normal((10, 12))
    y2, a2 = _observe(MPI.COMM_WORLD, pts, field)
    y1, a1 = _observe(MPI.COMM_SELF, pts, field)
    assert np.allclose(y1, y2, rtol=0, atol=1e-14)
    assert np.allclose(a1, a2, rtol=0, atol=1e-14)
