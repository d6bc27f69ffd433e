"""STREAM-like memory bandwidth measured with PETSc vectors (the reference the model kernels are compared against).

Triad ``w = y + a x`` (``VecWAXPY``): 3 vectors of 8-byte doubles move per entry (2 reads, 1 write), the STREAM
convention (write-allocate traffic not counted). Vectors of 2^24 entries (128 MiB each) are far beyond cache.
"""

from __future__ import annotations

import time

from petsc4py import PETSc


def triad_bandwidth(n: int = 2**24, repeats: int = 10, comm=None) -> float:
    """Best-of-``repeats`` triad bandwidth in bytes per second over ``comm`` (collective)."""
    comm = comm or PETSc.COMM_WORLD
    x = PETSc.Vec().createMPI(n, comm=comm)
    y, w = x.duplicate(), x.duplicate()
    x.set(1.0)
    y.set(2.0)
    best = float("inf")
    for _ in range(repeats):
        comm.barrier()
        t = time.perf_counter()
        w.waxpy(3.0, x, y)
        comm.barrier()
        best = min(best, time.perf_counter() - t)
    for v in (x, y, w):
        v.destroy()
    return 3 * 8 * n / best
