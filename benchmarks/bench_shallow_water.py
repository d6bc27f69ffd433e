"""Shallow-water model throughput: RK4 steps per second at 256^2, 512^2 and 1024^2 on 1 and 2 ranks, and the RHS
evaluation's effective memory bandwidth as a fraction of the STREAM triad bandwidth measured in the same run.

The RHS moves at least ``2 * dof * 8`` bytes per grid point (read the state, write the tendency; ghost exchange
and the kernel's temporaries not counted), so the fraction is a lower bound on the traffic the NumPy kernel causes,
and says how far the vectorised-NumPy implementation is from a bandwidth-bound compiled one.
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.harness import PREFIX, emit, mpirun

SIZES = (256, 512, 1024)
STEPS = {256: 20, 512: 8, 1024: 4}


def _child() -> None:
    from petsc4py import PETSc

    from benchmarks.stream import triad_bandwidth
    from twin.models.shallow_water import ShallowWater

    comm = PETSc.COMM_WORLD
    ranks = comm.getSize()
    stream = triad_bandwidth(comm=comm)
    rank0 = comm.getRank() == 0
    if rank0:
        emit("shallow_water", f"STREAM triad, {ranks} rank(s)", stream / 1e9, "GB/s", ranks=ranks)
    for n in SIZES:
        length = 4.0e6
        model = ShallowWater(f"bench_sw_{n}", comm.tompi4py(), (n, n), ((0, length), (0, length)), dt=1.0,
                             mean_depth=1000.0, initial=("balanced_turbulence", {"speed": 20.0, "wavenumber": 8}),
                             parameters={"f0": 1e-4})
        x = model.initial_state()
        dt = 0.8 * model.stable_time_step(x)
        model.dt = dt
        F = x.duplicate()
        model._rhs(None, 0.0, x, F)
        best = float("inf")
        for _ in range(5):
            comm.barrier()
            t = time.perf_counter()
            model._rhs(None, 0.0, x, F)
            comm.barrier()
            best = min(best, time.perf_counter() - t)
        model.advance(x, 0.0, dt)
        steps = STEPS[n]
        comm.barrier()
        t = time.perf_counter()
        model.advance(x, dt, dt * (1 + steps))
        comm.barrier()
        elapsed = time.perf_counter() - t
        bytes_moved = 2 * model.grid.dof * 8 * n * n
        if rank0:
            ctx = dict(ranks=ranks, grid=f"{n}x{n}", ts="rk4")
            emit("shallow_water", f"RK4 steps/s {n}^2, {ranks} rank(s)", steps / elapsed, "steps/s", **ctx)
            emit("shallow_water", f"RHS time {n}^2, {ranks} rank(s)", best * 1e3, "ms", **ctx)
            emit("shallow_water", f"RHS bandwidth {n}^2, {ranks} rank(s)", bytes_moved / best / 1e9, "GB/s", **ctx)
            emit("shallow_water", f"RHS fraction of STREAM {n}^2, {ranks} rank(s)", bytes_moved / best / stream,
                 "1", **ctx)
        F.destroy()
        x.destroy()
        model.destroy()


def main() -> None:
    for ranks in (1, 2):
        for rec in mpirun("benchmarks.bench_shallow_water", ranks, "--child"):
            print(PREFIX + json.dumps(rec), flush=True)


if __name__ == "__main__":
    _child() if "--child" in sys.argv else main()
