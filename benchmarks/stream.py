"""STREAM-like memory bandwidth measured with PETSc vectors (the reference the model kernels are compared against).

Triad ``w = y + a x`` (``VecWAXPY``): 3 vectors of 8-byte doubles move per entry (2 reads, 1 write), the STREAM
convention (write-allocate traffic not counted).

STREAM's rule is vectors several times larger than all caches, but a VM does not always show its caches: the AMD EPYC
development VM reports a 32 MiB L3, yet its triad falls from 27 GB/s (96 MiB of vectors, 1 rank) to 12.7 (384 MiB)
and only levels off at 7.3 GB/s from 768 MiB on (2 ranks: 36 GB/s at 384 MiB, 22.7 at 768 MiB, 14 from 1.5 GiB on),
so a fixed 2^24 entries measured a cache there, not memory. :func:`memory_bandwidth` therefore doubles the vectors
until the bandwidth stops falling, within a quarter of the memory available.
"""

from __future__ import annotations

import time

from mpi4py import MPI
from petsc4py import PETSc

#: entries per rank the search starts at (3 vectors of 64 MiB)
START_PER_RANK = 2**23
#: the bandwidth has levelled off when doubling the vectors changes it by less than this fraction
PLATEAU = 0.1
#: the vectors of the search take at most this fraction of the memory available
MEMORY_SHARE = 0.25


def triad_bandwidth(n: int = 2**24, repeats: int = 10, comm=None) -> float:
    """Best-of-``repeats`` triad bandwidth in bytes per second over ``comm`` on vectors of ``n`` entries (collective)."""
    comm = comm or PETSc.COMM_WORLD
    x = PETSc.Vec().createMPI(n, comm=comm)
    y, w = x.duplicate(), x.duplicate()
    x.set(1.0)
    y.set(2.0)
    w.set(0.0)
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


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def memory_bandwidth(repeats: int = 5, comm=None) -> tuple[float, int]:
    """The triad bandwidth out of every cache, in bytes per second, and the vector length it was measured at.

    Doubles the vectors from ``START_PER_RANK`` entries per rank until two doublings in a row each change the
    bandwidth by less than ``PLATEAU`` (one was not enough: once a 1-rank search stopped at 12.5 GB/s, where memory
    gives 7.3) or the next size would take more than ``MEMORY_SHARE`` of the memory available; returns the figure of
    the largest size measured. Collective, and every rank returns the same numbers.
    """
    comm = comm or PETSc.COMM_WORLD
    limit = comm.tompi4py().allreduce(_available_bytes(), op=MPI.MIN) * MEMORY_SHARE
    n = START_PER_RANK * comm.getSize()
    bw = triad_bandwidth(n, repeats, comm)
    level = 0
    while level < 2 and 3 * 8 * 2 * n <= limit:
        n *= 2
        previous, bw = bw, triad_bandwidth(n, repeats, comm)
        level = level + 1 if abs(bw - previous) < PLATEAU * previous else 0
    return bw, n
