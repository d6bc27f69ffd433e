"""Tumour model throughput: time steps per second (2-D 512^2 and 3-D 128^3, 1 and 2 ranks) and the effective memory
bandwidth of the right-hand-side evaluation as a fraction of the STREAM triad bandwidth measured in the same run.

RHS traffic model (bytes per evaluation): the AIJ diffusion matvec (values 8 B + column index per nonzero, row
pointers, x read, y written) plus the vectorised reaction update (u, k, k/theta read, F read and written: 5 x 8 B per
cell). NumPy temporaries are not counted, so the figure is what the kernel *needs*, and a fraction well below 1 shows
what the temporaries cost.

Usage: ``python -m benchmarks tumour`` (appends to benchmarks/RESULTS.md); ``--child DIM N STEPS`` is the MPI worker.
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.harness import PREFIX, emit, mpirun

CASES = [(2, 512, 10), (3, 128, 4)]


def _child(dim: int, n: int, steps: int) -> None:
    import numpy as np
    from petsc4py import PETSc

    from benchmarks.stream import triad_bandwidth
    from twin.core.grid import Grid
    from twin.core.petsc import set_options
    from twin.kinds.tumour import TumourModel, brain_phantom

    comm = PETSc.COMM_WORLD.tompi4py()
    ranks = comm.Get_size()
    L = 200.0
    name = f"bench{dim}d"
    set_options(f"{name}_", {"snes_rtol": 1e-8, "ksp_rtol": 1e-10})
    t_setup = time.perf_counter()
    grid = Grid(comm, (n,) * dim, ((0.0, L),) * dim, name=name)
    tissue = brain_phantom(grid.mesh(), grid.extent)
    values = dict(D_white=0.25, D_grey=0.05, k=0.05, theta=1.0, alpha=0.03, alpha_beta=10.0, kappa=0.0,
                  half_life=1.0)
    centre = [0.4 * L] + [0.55 * L] * (dim - 1)

    def seed(*X):
        return 0.5 * np.exp(-sum((x - c) ** 2 for x, c in zip(X, centre)) / (2 * 8.0 ** 2))

    model = TumourModel(name, comm, grid, tissue, values, initial=seed, dt=1.0)
    t_setup = time.perf_counter() - t_setup
    x = model.initial_state()
    model.advance(x, 0.0, 1.0)  # warm-up: TS, SNES, KSP set up
    comm.Barrier()
    t0 = time.perf_counter()
    model.advance(x, 1.0, 1.0 + steps)
    comm.Barrier()
    elapsed = time.perf_counter() - t0
    # RHS evaluation alone
    f = x.duplicate()
    reps = 20
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        model._rhs(None, 1.0, x, f)
    comm.Barrier()
    t_rhs = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        model.op.A.mult(x, f)
    comm.Barrier()
    t_mult = (time.perf_counter() - t0) / reps
    nbytes = comm.allreduce(model.op.bytes_per_apply())
    cells = grid.size
    rhs_bytes = nbytes + 5 * 8 * cells
    stream = triad_bandwidth(comm=PETSc.COMM_WORLD)
    if comm.Get_rank() == 0:
        ctx = dict(dim=dim, n=n, ranks=ranks, cells=cells, tissue_cells=int(tissue.mask.sum()), steps=steps,
                   ts="cn")
        emit("tumour", f"steps/s {dim}D {n}^{dim}, {ranks} rank(s)", steps / elapsed, "1/s", **ctx)
        emit("tumour", f"setup time {dim}D {n}^{dim}, {ranks} rank(s)", t_setup, "s", **ctx)
        emit("tumour", f"RHS time {dim}D {n}^{dim}, {ranks} rank(s)", t_rhs * 1e3, "ms", **ctx)
        emit("tumour", f"RHS bandwidth / STREAM {dim}D, {ranks} rank(s)", rhs_bytes / t_rhs / stream, "1",
             rhs_GBps=round(rhs_bytes / t_rhs / 1e9, 2), stream_GBps=round(stream / 1e9, 2), **ctx)
        emit("tumour", f"MatMult bandwidth / STREAM {dim}D, {ranks} rank(s)", nbytes / t_mult / stream, "1",
             mult_GBps=round(nbytes / t_mult / 1e9, 2), **ctx)
    for v in (x, f):
        v.destroy()
    model.destroy()


def main() -> None:
    speed = {}
    for dim, n, steps in CASES:
        for ranks in (1, 2):
            for rec in mpirun("benchmarks.bench_tumour", ranks, "--child", str(dim), str(n), str(steps)):
                print(PREFIX + json.dumps(rec), flush=True)
                if rec["metric"].startswith("steps/s"):
                    speed[(dim, ranks)] = rec["value"]
        if (dim, 1) in speed and (dim, 2) in speed:
            emit("tumour", f"2-rank speedup {dim}D {n}^{dim}", speed[(dim, 2)] / speed[(dim, 1)], "1", dim=dim, n=n)


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        _child(*(int(a) for a in sys.argv[i + 1:i + 4]))
    else:
        main()
