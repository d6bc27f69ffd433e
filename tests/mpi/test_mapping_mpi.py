"""Maps between grids decomposed differently on 2 ranks agree with the same maps built on one rank."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.grid import Grid
from twin.coupling.mapping import PointSet, build_map, nearest_map

WORLD = MPI.COMM_WORLD


def _field(X, Y):
    return np.sin(3 * X) * np.cos(2 * Y) + X


def _map_all(kind, comm, src_procs, dst_procs):
    src = Grid(comm, (13, 9), [(0, 1), (0, 2)], proc_sizes=src_procs)
    dst = Grid(comm, (8, 17), [(0, 1), (0, 2)], proc_sizes=dst_procs)
    gmap = build_map(kind, src, dst, f"{kind}_test")
    x = src.from_function(_field)
    y = gmap.apply(x)
    out = dst.allgather(y), src.integrate(x), dst.integrate(y)
    for obj in (gmap, x, y, src, dst):
        obj.destroy()
    return out


@pytest.mark.parametrize("kind", ["consistent", "conservative", "nearest"])
def test_differently_decomposed_grids_match_serial(kind):
    assert WORLD.Get_size() == 2, "run under mpiexec -n 2"
    # source split along x, target split along y: every target row needs values owned by the other rank
    par, s_int, d_int = _map_all(kind, WORLD, (2, 1), (1, 2))
    ser, _, _ = _map_all(kind, MPI.COMM_SELF, None, None)
    np.testing.assert_allclose(par, ser, rtol=0, atol=1e-14)
    if kind == "conservative":
        assert d_int == pytest.approx(s_int, rel=1e-14)


def test_point_set_owned_by_one_rank_only():
    rank = WORLD.Get_rank()
    src = Grid(WORLD, (10, 10), [(0, 1), (0, 1)], proc_sizes=(1, 2))
    pts = np.array([[0.05, 0.95], [0.95, 0.05], [0.55, 0.45]]) if rank == 1 else np.zeros((0, 2))
    target = PointSet(WORLD, pts)
    x = src.from_function(lambda X, Y: 10 * np.floor(10 * X) + np.floor(10 * Y))
    y = nearest_map(src, target).apply(x)
    got = np.concatenate(WORLD.allgather(y.getArray().copy()))
    np.testing.assert_array_equal(got, [9.0, 90.0, 54.0])
