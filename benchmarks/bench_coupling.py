"""Coupler benchmarks: grid-mapping throughput against a plain sparse MatMult of the same size (1 and 2 ranks), and
average coupling iterations per window of constant relaxation, Aitken and IQN-ILS on partitioned heat conduction and
on the tumour <-> tissue mechanics twin (``configs/tumour_mechanics.yaml``, at its resolution and at twice it)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from benchmarks.harness import PREFIX, emit, mpirun

SRC, DST = (768, 512), (1000, 700)


def _best(fn, repeats: int, comm) -> float:
    best = float("inf")
    for _ in range(repeats):
        comm.barrier()
        t = time.perf_counter()
        fn()
        comm.barrier()
        best = min(best, time.perf_counter() - t)
    return best


def _mapping_child() -> None:
    from mpi4py import MPI
    from petsc4py import PETSc

    from twin.core.grid import Grid
    from twin.coupling.mapping import build_map

    comm = MPI.COMM_WORLD
    src = Grid(comm, SRC, [(0, 1), (0, 1)])
    # the target decomposed the other way round, so mapping needs communication when run in parallel
    dst = Grid(comm, DST, [(0, 1), (0, 1)], proc_sizes=(1, comm.Get_size()) if comm.Get_size() > 1 else None)
    x = src.from_function(lambda X, Y: np.sin(3 * X) * Y)
    for kind in ("consistent", "conservative"):
        t = time.perf_counter()
        gmap = build_map(kind, src, dst, kind)
        build = time.perf_counter() - t
        y = gmap.matrix.createVecLeft()
        seconds = _best(lambda: [gmap.apply(x, y) for _ in range(20)], 5, comm) / 20
        nnz = int(gmap.matrix.getInfo()["nz_used"])   # MAT_GLOBAL_SUM by default
        # a plain AIJ matrix of the same shape and nonzeros per row, banded (the cheapest possible pattern)
        n_rows, n_cols = gmap.matrix.getSize()
        (rl, cl) = gmap.matrix.getLocalSize()
        r0 = gmap.matrix.getOwnershipRange()[0]
        per_row = max(1, round(nnz / n_rows))
        rows = np.arange(r0, r0 + rl)
        cols = (np.minimum(rows * n_cols // n_rows, n_cols - per_row)[:, None] + np.arange(per_row)).ravel()
        plain = PETSc.Mat().createAIJ(size=((rl, n_rows), (cl, n_cols)),
                                      csr=(np.arange(0, rl * per_row + 1, per_row, dtype=PETSc.IntType),
                                           cols.astype(PETSc.IntType), np.ones(rl * per_row)), comm=comm)
        plain_seconds = _best(lambda: [plain.mult(x, y) for _ in range(20)], 5, comm) / 20
        if comm.Get_rank() == 0:
            ctx = dict(ranks=comm.Get_size(), source=list(SRC), target=list(DST), nnz=nnz)
            emit("coupling", f"{kind} map throughput, {comm.Get_size()} rank(s)", n_rows / seconds / 1e6,
                 "Mvalues/s", **ctx)
            emit("coupling", f"{kind} map time / plain MatMult time, {comm.Get_size()} rank(s)",
                 seconds / plain_seconds, "1", **ctx)
            emit("coupling", f"{kind} map build time, {comm.Get_size()} rank(s)", build, "s", **ctx)
        for obj in (gmap, y, plain):
            obj.destroy()


def _iterations() -> None:
    from mpi4py import MPI

    from twin.kinds.heat.examples import partitioned_heat

    gaussian = {"kind": "gaussian", "center": [0.4, 0.3], "width": 0.08}
    for nx, ny in ((16, 8), (64, 32)):
        for tag, acc in [("constant", {"kind": "constant", "relaxation": 0.5}),
                         ("aitken", {"kind": "aitken", "relaxation": 0.5}),
                         ("iqn_ils", {"kind": "iqn_ils", "relaxation": 0.5}),
                         ("iqn_ils_reuse3", {"kind": "iqn_ils", "relaxation": 0.5, "reuse": 3})]:
            pair = partitioned_heat(MPI.COMM_SELF, tag=f"_{tag}_{nx}", nx=nx, ny=ny, split=nx // 4, kappa=1.0,
                                    dt=0.05, initial=gaussian, scheme={"acceleration": acc})
            x = pair.initial_state()
            t = time.perf_counter()
            pair.advance(x, 0.0, 1.0)
            seconds = time.perf_counter() - t
            emit("coupling", f"partitioned heat {nx}x{ny}: mean iterations per window, {tag}",
                 pair.mean_iterations(), "iterations", windows=len(pair.diagnostics), tolerance="1e-10 relative",
                 seconds=round(seconds, 3))
            pair.destroy()
            x.destroy()


TUMOUR_ACCELERATIONS = [
    ("constant w=0.5", {"kind": "constant", "relaxation": 0.5}),
    ("aitken w0=0.5", {"kind": "aitken", "relaxation": 0.5}),
    ("aitken w0=1", {"kind": "aitken", "relaxation": 1.0}),
    ("iqn_ils w0=0.5", {"kind": "iqn_ils", "relaxation": 0.5}),
    ("iqn_ils w0=0.5 reuse=1 filter=1e-2 (configured)", {"kind": "iqn_ils", "relaxation": 0.5, "reuse": 1,
                                                         "filter": 1e-2}),
    ("iqn_ils w0=0.5 reuse=3", {"kind": "iqn_ils", "relaxation": 0.5, "reuse": 3}),
    ("iqn_ils w0=1", {"kind": "iqn_ils", "relaxation": 1.0}),
]


def _tumour_mechanics_iterations() -> None:
    """Mean iterations per 5-day window over the 60 days of the tumour-mechanics twin, one rank, per acceleration
    (relative tolerance 1e-8 on the stress); at the configured grids and with both grids refined twice."""
    import tempfile
    from pathlib import Path

    import yaml
    from mpi4py import MPI

    from twin.config import load_campaign
    from twin.coupling.build import build_coupled

    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tumour_mechanics.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for refine in (1, 2):
            for tag, acc in TUMOUR_ACCELERATIONS:
                data = yaml.safe_load(yaml.safe_dump(base))
                for comp in ("tumour", "tissue"):
                    data["models"][comp]["grid"]["shape"] = [n * refine for n in data["models"][comp]["grid"]["shape"]]
                data["coupling"]["scheme"]["acceleration"] = acc
                path = Path(tmp) / "campaign.yaml"
                path.write_text(yaml.safe_dump(data))
                model = build_coupled(load_campaign(path), MPI.COMM_SELF)
                x = model.initial_state()
                t = time.perf_counter()
                model.advance(x, 0.0, 60.0)
                seconds = time.perf_counter() - t
                shape = data["models"]["tumour"]["grid"]["shape"]
                emit("coupling", f"tumour-mechanics {shape[0]}x{shape[1]}: mean iterations per window, {tag}",
                     model.mean_iterations(), "iterations", windows=len(model.diagnostics),
                     max_iterations=max(d.iterations for d in model.diagnostics), tolerance="1e-8 relative",
                     seconds=round(seconds, 3))
                x.destroy()
                model.destroy()


def main() -> None:
    for ranks in (1, 2):
        for rec in mpirun("benchmarks.bench_coupling", ranks, "--child"):
            print(PREFIX + json.dumps(rec), flush=True)
    _iterations()
    _tumour_mechanics_iterations()


if __name__ == "__main__":
    _mapping_child() if "--child" in sys.argv else main()
