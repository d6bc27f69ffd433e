"""Machine memory bandwidth (STREAM triad with PETSc vectors, out of every cache) on 1 and 2 ranks."""

from __future__ import annotations

import sys

from benchmarks.harness import emit, mpirun


def _child() -> None:
    from petsc4py import PETSc

    from benchmarks.stream import memory_bandwidth

    bw, entries = memory_bandwidth()
    if PETSc.COMM_WORLD.getRank() == 0:
        emit("stream", f"triad bandwidth, {PETSc.COMM_WORLD.getSize()} rank(s)", bw / 1e9, "GB/s",
             ranks=PETSc.COMM_WORLD.getSize(), entries=entries)


def main() -> None:
    from benchmarks.harness import PREFIX
    import json

    for ranks in (1, 2):
        for rec in mpirun("benchmarks.bench_stream", ranks, "--child"):
            print(PREFIX + json.dumps(rec), flush=True)


if __name__ == "__main__":
    _child() if "--child" in sys.argv else main()
