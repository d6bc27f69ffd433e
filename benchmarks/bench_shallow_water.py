"""Shallow-water model throughput: the RHS evaluation's effective memory bandwidth as a fraction of the STREAM triad
bandwidth, measured side by side at 256^2, 512^2 and 1024^2 on 1 and 2 ranks, RK4 steps per second, and the 4D-Var
gradient/forward cost ratio of the shallow-water case of bench_fourdvar.

The RHS moves at least ``2 * dof * 8`` bytes per grid point (read the state, write the tendency; ghost exchange
and the kernel's temporaries not counted), so the fraction is a lower bound on the traffic the kernel causes. The
RHS (``ShallowWater._rhs``: ghost exchange and compiled kernel) and the triad are timed in alternating rounds, best
of each, so that a load change on a shared machine hits both alike; each record carries the 1-minute load average
at the time. STREAM here is memory's bandwidth: the triad on vectors that :func:`benchmarks.stream.memory_bandwidth`
found to be out of every cache. The state itself (6 MiB at 512^2, 25 MiB at 1024^2) may fit a cache, so the triad
on vectors of the state's length is reported beside it, with the RHS's fraction of that (how close the kernel comes
to the bandwidth its own working set could have). Goals (issue 23): fraction of STREAM >= 0.5 at 512^2 and 1024^2
on 1 and 2 ranks, gradient/forward <= 3; every goal record says whether it was met and, if not, by how much it was
missed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from benchmarks.bench_fourdvar import goal_context, gradient_forward_ratio, shallow_water_functional
from benchmarks.harness import PREFIX, emit, mpirun

SIZES = (256, 512, 1024)
STEPS = {256: 20, 512: 8, 1024: 4}
#: alternating rounds of (STREAM triad, RHS repeats)
ROUNDS = 4
RHS_REPEATS = {256: 20, 512: 10, 1024: 5}
FRACTION_GOAL = 0.5
FRACTION_GOAL_SIZES = (512, 1024)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _child() -> None:
    from petsc4py import PETSc

    from benchmarks.stream import memory_bandwidth, triad_bandwidth
    from twin.kinds.shallow_water import ShallowWater

    comm = PETSc.COMM_WORLD
    ranks = comm.getSize()
    rank0 = comm.getRank() == 0
    _, stream_entries = memory_bandwidth(comm=comm)
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
        best_rhs, best_stream, best_state = float("inf"), 0.0, 0.0
        for _ in range(ROUNDS):
            best_stream = max(best_stream, triad_bandwidth(stream_entries, repeats=5, comm=comm))
            best_state = max(best_state, triad_bandwidth(x.getSize(), repeats=20, comm=comm))
            for _ in range(RHS_REPEATS[n]):
                comm.barrier()
                t = time.perf_counter()
                model._rhs(None, 0.0, x, F)
                comm.barrier()
                best_rhs = min(best_rhs, time.perf_counter() - t)
        model.advance(x, 0.0, dt)
        steps = STEPS[n]
        comm.barrier()
        t = time.perf_counter()
        model.advance(x, dt, dt * (1 + steps))
        comm.barrier()
        elapsed = time.perf_counter() - t
        bytes_moved = 2 * model.grid.dof * 8 * n * n
        fraction = bytes_moved / best_rhs / best_stream
        if rank0:
            ctx = dict(ranks=ranks, grid=f"{n}x{n}", ts="rk4", load1=_load())
            emit("shallow_water", f"STREAM triad {n}^2 run, {ranks} rank(s)", best_stream / 1e9, "GB/s",
                 entries=stream_entries, **ctx)
            emit("shallow_water", f"triad on state-size vectors {n}^2, {ranks} rank(s)", best_state / 1e9, "GB/s",
                 entries=x.getSize(), **ctx)
            emit("shallow_water", f"RK4 steps/s {n}^2, {ranks} rank(s)", steps / elapsed, "steps/s", **ctx)
            emit("shallow_water", f"RHS time {n}^2, {ranks} rank(s)", best_rhs * 1e3, "ms", **ctx)
            emit("shallow_water", f"RHS bandwidth {n}^2, {ranks} rank(s)", bytes_moved / best_rhs / 1e9, "GB/s",
                 **ctx)
            goal = goal_context(fraction, FRACTION_GOAL, at_least=True) if n in FRACTION_GOAL_SIZES else {}
            emit("shallow_water", f"RHS fraction of STREAM {n}^2, {ranks} rank(s)", fraction, "1", **ctx, **goal)
            emit("shallow_water", f"RHS fraction of the state-size triad {n}^2, {ranks} rank(s)",
                 bytes_moved / best_rhs / best_state, "1", **ctx)
        F.destroy()
        x.destroy()
        model.destroy()


def main() -> None:
    for ranks in (1, 2):
        for rec in mpirun("benchmarks.bench_shallow_water", ranks, "--child"):
            print(PREFIX + json.dumps(rec), flush=True)
    gradient_forward_ratio("shallow water", shallow_water_functional(), benchmark="shallow_water", shape="48x36",
                           steps=20, load1=_load())


if __name__ == "__main__":
    _child() if "--child" in sys.argv else main()
