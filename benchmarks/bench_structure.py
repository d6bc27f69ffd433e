"""Structure model: static solve time and CG+GAMG iterations for 256^2 .. 1024^2 Q1 elements, on 1 and 2 ranks.

The problem is a square plate (1 m, plane stress, E = 70 GPa, nu = 0.3) clamped on the left and sheared on the right,
with a damaged disc in the middle. Reported per size and rank count: assembly time of K (and of the loads), solve
time (GAMG set-up included), KSP iterations to a relative residual of 1e-8. Iterations should stay roughly flat under
refinement (the preconditioner scales); the solve time should roughly halve on 2 ranks on a 2-core machine when the
problem is memory-bandwidth bound.

Usage: ``python -m benchmarks structure`` (all sizes), or ``python -m benchmarks.bench_structure 256 512`` for some.
"""

from __future__ import annotations

import json
import os
import sys
import time

from benchmarks.harness import PREFIX, emit, mpirun

SIZES = (256, 512, 1024)


def _child(n: int) -> None:
    from mpi4py import MPI
    from petsc4py import PETSc

    from twin.core.petsc import set_options
    from twin.kinds.structure import Material, StructureModel
    from twin.kinds.structure.loads import LoadCase

    comm = MPI.COMM_WORLD
    set_options("plate_", {"ksp_rtol": 1e-8})
    comm.Barrier()
    t0 = time.perf_counter()
    m = StructureModel("plate", comm, (n, n), ((0, 1.0), (0, 1.0)), Material(70e9, 0.3, 2700.0),
                       {"left": "clamped"}, [LoadCase("shear", "traction", (0.0, -1e6), "right")],
                       damage=lambda X, Y: 0.5 * ((X - 0.5) ** 2 + (Y - 0.5) ** 2 < 0.1 ** 2))
    comm.Barrier()
    t_setup = time.perf_counter() - t0
    u = m.initial_state()
    comm.Barrier()
    t0 = time.perf_counter()
    its = m.solve_static(0.0, u)
    comm.Barrier()
    t_solve = time.perf_counter() - t0
    tip = u.norm(PETSc.NormType.NORM_INFINITY)
    ranks = comm.Get_size()
    if comm.Get_rank() == 0:
        # the load average shows whether other jobs shared the cores (timings are then not comparable)
        ctx = dict(elements=f"{n}x{n}", dofs=2 * (n + 1) ** 2, ranks=ranks, load_avg=round(os.getloadavg()[0], 1))
        emit("structure", f"static solve {n}^2, {ranks} rank(s)", t_solve, "s", iterations=its, **ctx)
        emit("structure", f"KSP iterations {n}^2, {ranks} rank(s)", its, "1", **ctx)
        emit("structure", f"model set-up and K assembly {n}^2, {ranks} rank(s)", t_setup, "s", **ctx)
        emit("structure", f"max |u| {n}^2, {ranks} rank(s)", tip, "m", **ctx)
    m.destroy()


def main(sizes=SIZES) -> None:
    for n in sizes:
        for ranks in (1, 2):
            for rec in mpirun("benchmarks.bench_structure", ranks, "--child", str(n)):
                print(PREFIX + json.dumps(rec), flush=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child(int(sys.argv[sys.argv.index("--child") + 1]))
    else:
        main(tuple(int(a) for a in sys.argv[1:]) or SIZES)
