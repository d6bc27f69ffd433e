"""A PETSc DMDA solve gives the same answer on 1 and 2 ranks.

Poisson problem -lap u = f on the unit square, u = 0 on the boundary, 5-point finite differences on the nodes of a
Grid, CG + Jacobi to a tight tolerance. The two-rank solution (gathered) and the one-rank solution (each rank solves
the whole problem on COMM_SELF) must agree to solver tolerance, and both must be close to the exact solution
sin(pi x) sin(pi y).
"""

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.grid import Grid


def solve_poisson(comm, n=33):
    grid = Grid(comm, (n, n), [(0.0, 1.0), (0.0, 1.0)], centering="node")
    da = grid.da
    A = da.createMatrix()
    h = grid.spacing[0]
    (xs, xe), (ys, ye) = grid.owned
    row = PETSc.Mat.Stencil()
    col = PETSc.Mat.Stencil()
    for j in range(ys, ye):
        for i in range(xs, xe):
            row.index = (i, j)
            if i in (0, n - 1) or j in (0, n - 1):
                A.setValueStencil(row, row, 1.0)
                continue
            for (di, dj), v in (((0, 0), 4.0 / h**2), ((-1, 0), -1 / h**2), ((1, 0), -1 / h**2),
                                ((0, -1), -1 / h**2), ((0, 1), -1 / h**2)):
                col.index = (i + di, j + dj)
                A.setValueStencil(row, col, v)
    A.assemble()
    X, Y = grid.owned_mesh()
    b = grid.create_global()
    f = 2 * np.pi**2 * np.sin(np.pi * X) * np.sin(np.pi * Y)
    boundary = (X == 0) | (X == 1) | (np.isclose(X, 1)) | (Y == 0) | np.isclose(Y, 1)
    grid.owned_array(b)[...] = np.where(boundary, 0.0, f)
    u = grid.create_global()
    ksp = PETSc.KSP().create(comm=comm)
    ksp.setOperators(A)
    ksp.setType("cg")
    ksp.getPC().setType("jacobi")
    ksp.setTolerances(rtol=1e-12, atol=1e-14)
    ksp.solve(b, u)
    assert ksp.getConvergedReason() > 0
    full = grid.allgather(u)
    exact = np.sin(np.pi * grid.mesh()[0]) * np.sin(np.pi * grid.mesh()[1])
    for obj in (A, b, u, ksp):
        obj.destroy()
    grid.destroy()
    return full, exact


def test_poisson_same_on_one_and_two_ranks():
    world = MPI.COMM_WORLD
    assert world.Get_size() == 2
    two, exact = solve_poisson(world)
    one, _ = solve_poisson(MPI.COMM_SELF)
    assert np.max(np.abs(two - one)) < 1e-9 * np.max(np.abs(one))
    # Second-order finite differences with h = 1/32: error ~ pi^2 h^2 / 12 relative.
    assert np.max(np.abs(two - exact)) < 1e-3


def test_gather_scatter_round_trip_on_two_ranks():
    grid = Grid(MPI.COMM_WORLD, (7, 5, 3), [(0, 1), (0, 2), (0, 3)], dof=2)
    rng = np.random.default_rng(1)
    field = rng.standard_normal((3, 5, 7, 2)) if MPI.COMM_WORLD.rank == 0 else None
    v = grid.scatter(field, grid.create_global())
    back = grid.gather(v)
    if MPI.COMM_WORLD.rank == 0:
        assert np.array_equal(back, field)
    full = grid.allgather(v)
    assert np.array_equal(grid.owned_array(v), full[grid.owned_slices])
    v.destroy()
    grid.destroy()


def test_ensemble_split_two_ranks():
    from twin.core.comm import split_ensemble

    lay = split_ensemble(MPI.COMM_WORLD, n_members=5, ranks_per_member=1)
    assert lay.n_groups == 2 and lay.member_comm.Get_size() == 1
    assert lay.members == list(range(MPI.COMM_WORLD.rank, 5, 2))
    lay2 = split_ensemble(MPI.COMM_WORLD, n_members=3, ranks_per_member=2)
    assert lay2.n_groups == 1 and lay2.member_comm.Get_size() == 2 and lay2.members == [0, 1, 2]
    lay.free()
    lay2.free()


def test_a_grid_too_small_for_the_ranks_is_one_line_on_every_rank_without_a_hang():
    """Found by a probe: Lorenz-96 with 4 points on 3 ranks hung 60 s, then MPI_Abort (PETSc checks each rank's block on
    that rank alone: the ranks with too small a block fail, the others wait in the next collective call); a 2 x 2
    grid on 3 ranks gave a Python traceback per rank. Now a ModelError on every rank alike, saying what to change."""
    import pytest

    from twin.core.errors import ModelError

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        pytest.skip("written for 2 ranks")
    with pytest.raises(ModelError, match=r"model 'l96': 3 points cannot be split over 2 MPI ranks: each rank needs a "
                                         r"block of at least 2 \(the stencil's width\); run it on at most 1 rank\(s\) "
                                         r"\(mpiexec -n 1\) or on a larger grid"):
        Grid(comm, (3,), [(0.0, 3.0)], stencil_width=2, periodic=True, name="l96")
    with pytest.raises(ModelError, match=r"model 'tiny': a grid of shape \(1, 1\) cannot be laid out on 2 MPI "
                                         r"rank\(s\): PETSc says Partition in . direction is too fine"):
        Grid(comm, (1, 1), [(0.0, 1.0), (0.0, 1.0)], name="tiny")
    # 2-D/3-D: PETSc splits 3 points 2 + 1, and only the rank with the 1-point block failed (the other hung): now
    # PETSc's layout is asked first and every rank refuses alike
    with pytest.raises(ModelError, match=r"model 'sq': a grid of shape \(3, 3\) cannot be laid out on 2 MPI rank\(s\): "
                                         r"PETSc splits it 1 x 2, which leaves a rank a block 1 point\(s\) wide along y, "
                                         r"less than the stencil's width 2"):
        Grid(comm, (3, 3), [(0.0, 1.0)] * 2, stencil_width=2, name="sq")
    with pytest.raises(ModelError, match=r"block 1 point\(s\) wide along z"):
        Grid(comm, (3, 3, 3), [(0.0, 1.0)] * 3, stencil_width=2, stencil="box", name="cube")
    for shape in ((5, 3), (4, 4), (2, 2, 5)):  # uneven or narrow but wide enough: laid out as PETSc chooses
        g = Grid(comm, shape, [(0.0, 1.0)] * len(shape), stencil_width=2 if shape != (2, 2, 5) else 1, name="ok")
        assert min(hi - lo for lo, hi in g.da.getRanges()) >= 2 or shape == (2, 2, 5)
        g.destroy()
    g = Grid(comm, (4,), [(0.0, 4.0)], stencil_width=2, periodic=True, name="fits")  # 2 points each: enough
    assert g.da.getRanges()[0][1] - g.da.getRanges()[0][0] == 2
    g.destroy()
