"""Checkpoint I/O throughput against a raw sequential disk write of the same size, measured in the same run.

An ensemble of 8 members of a 2048 x 2048 float64 field (256 MiB) is checkpointed with :func:`write_checkpoint`
(atomic: temporary file, fsync, rename) and read back with :func:`read_checkpoint` (full verification, loading into
Vecs). The reference is rank 0 writing the same number of bytes with one ``write`` and ``fsync`` (and reading them
back). Before each read the page cache of the file is dropped (``posix_fadvise(DONTNEED)``) so reads come from disk.
Modes: 1 rank (serial), 2 ranks gathered to rank 0, 2 ranks with collective parallel HDF5 (when h5py has MPI); block
digests SHA-256 (default) and CRC-32. Goal: checkpoint throughput >= 50% of the raw write.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from benchmarks.harness import PREFIX, emit, mpirun

N, MEMBERS, REPEATS = 2048, 8, 3


def _drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _child() -> None:
    import numpy as np
    from mpi4py import MPI

    from twin.core.grid import Grid
    from twin.io.checkpoint import parallel_hdf5_available, read_checkpoint, write_checkpoint

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    directory = comm.bcast(tempfile.mkdtemp(prefix="twin-bench-io-", dir=os.environ.get("TWIN_BENCH_DIR")) if rank == 0
                           else None)
    grid = Grid(comm, (N, N), ((0.0, 1.0), (0.0, 1.0)))
    rng = np.random.default_rng(rank)
    vecs = []
    for _ in range(MEMBERS):
        v = grid.create_global()
        grid.owned_array(v)[...] = rng.random(grid.local_shape)
        vecs.append(v)
    nbytes = MEMBERS * N * N * 8

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(REPEATS):
            comm.Barrier()
            t = time.perf_counter()
            fn()
            comm.Barrier()
            best = min(best, time.perf_counter() - t)
        return best

    raw_path = os.path.join(directory, "raw.bin")
    payload = np.random.default_rng(7).random(nbytes // 8).tobytes() if rank == 0 else b""

    def raw_write():
        if rank == 0:
            with open(raw_path, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())

    def raw_read():
        if rank == 0:
            _drop_cache(raw_path)
            with open(raw_path, "rb") as f:
                f.read()

    raw_w = timed(raw_write)
    raw_r = timed(raw_read)
    if rank == 0:
        emit("io", "raw sequential write + fsync", nbytes / raw_w / 1e9, "GB/s", MiB=nbytes >> 20)
        emit("io", "raw sequential read (cold)", nbytes / raw_r / 1e9, "GB/s", MiB=nbytes >> 20)
        os.remove(raw_path)

    modes = [False] + ([True] if parallel_hdf5_available(comm) else [])
    for parallel in modes:
        for digest in ("sha256", "crc32"):
            path = os.path.join(directory, "cycle_0001.h5")
            targets = [grid.create_global() for _ in range(MEMBERS)]
            write = timed(lambda: write_checkpoint(path, comm, cycle=1, time=0.0, fields={"u": (grid, vecs)},
                                                   parallel=parallel, digest=digest))

            def read():
                if rank == 0:
                    _drop_cache(path)
                comm.Barrier()
                read_checkpoint(path, comm, into={"u": (grid, targets)})

            rd = timed(read)
            same = all(np.array_equal(a.getArray(), b.getArray()) for a, b in zip(vecs, targets))
            mode = "parallel HDF5" if parallel else ("gathered to rank 0" if size > 1 else "serial")
            if rank == 0:
                ctx = dict(ranks=size, mode=mode, digest=digest, MiB=nbytes >> 20, bitwise=same)
                emit("io", f"checkpoint write, {size} rank(s), {mode}, {digest}", nbytes / write / 1e9, "GB/s",
                     ratio_to_raw_write=round(raw_w / write, 3), **ctx)
                emit("io", f"checkpoint read+verify, {size} rank(s), {mode}, {digest}", nbytes / rd / 1e9, "GB/s",
                     ratio_to_raw_read=round(raw_r / rd, 3), **ctx)
                os.remove(path)
            for v in targets:
                v.destroy()
    for v in vecs:
        v.destroy()
    grid.destroy()
    comm.Barrier()
    if rank == 0:
        os.rmdir(directory)


def main() -> None:
    for ranks in (1, 2):
        for rec in mpirun("benchmarks.bench_io", ranks, "--child"):
            print(PREFIX + json.dumps(rec), flush=True)


if __name__ == "__main__":
    _child() if "--child" in sys.argv else main()
