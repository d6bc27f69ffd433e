"""Structure model: static solve time and CG+GAMG iterations for 256^2 .. 1024^2 Q1 elements, on 1 and 2 ranks.

The problem is a square plate (1 m, plane stress, E = 70 GPa, nu = 0.3) clamped on the left and sheared on the right,
with a damaged disc in the middle. Reported per size and rank count: assembly time of K (and of the loads), solve
time (GAMG set-up included), KSP iterations to a relative residual of 1e-8. Iterations should stay roughly flat under
refinement (the preconditioner scales); the solve time should roughly halve on 2 ranks on a 2-core machine when the
problem is memory-bandwidth bound.

The flagship's damage identification (issue 22, point 5), ``python -m benchmarks.bench_structure flagship``:
configs/structure.yaml run as a user runs it (``twin run`` on 2 ranks, then ``twin report``) and, from its files
(:func:`twin.kinds.structure.report.damage_summary`), the damaged patch's posterior mean ``d`` against the truth
(goal: within 25 %), the posterior sd over the prior sd of ``d`` at the patch nodes the assimilated gauges see
(goal: at most 1), the guardrails' excluded gauges and the wall time of the run.

Usage: ``python -m benchmarks structure`` (all sizes and the flagship), ``python -m benchmarks.bench_structure 256
512`` for some sizes, ``python -m benchmarks.bench_structure flagship`` for the flagship alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import PREFIX, ROOT, emit, mpirun

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


def flagship() -> None:
    """The flagship campaign at full size on 2 ranks, its report, and the damage posterior's numbers."""
    from twin.campaign import layout
    from twin.kinds.structure.report import damage_fields, damage_summary, gauge_nodes, node_shape

    twin = str(Path(sys.executable).with_name("twin"))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    scratch = ROOT.parent / "runs"  # below the working directory (twin confines run directories there)
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-structure-", dir=scratch) as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        subprocess.run(["mpiexec", "-n", "2", twin, "run", str(ROOT.parent / "configs" / "structure.yaml"), "-o",
                        str(run_dir), "-q"], check=True, capture_output=True, env=env, cwd=ROOT.parent)
        seconds = time.perf_counter() - t0
        subprocess.run([twin, "report", str(run_dir)], check=True, capture_output=True, cwd=ROOT.parent)
        (exp,) = layout.experiment_dirs(run_dir)
        decision = json.loads((exp / "decision.json").read_text())["structure"]
        flags = [json.loads(line) for line in (exp / "flags.jsonl").read_text().splitlines() if line.strip()]
        excluded = sorted({int(f["sensor"]) for f in flags if f.get("kind") == "sensor_drift" and
                           f.get("action") == "excluded"})
        fields = damage_fields(exp, decision["component"])
        gauges = [p for i, p in enumerate(decision["gauges"]["points"]) if i not in excluded]
        shape = node_shape(fields["posterior_mean"].size, decision["extent"], decision.get("nodes"))
        s = damage_summary(fields, gauge_nodes(shape, decision["extent"], gauges))
    ctx = dict(load_avg=round(os.getloadavg()[0], 1), excluded_gauges=excluded)
    emit("structure", "flagship run time (twin run, 2 ranks)", seconds, "s", **ctx)
    emit("structure", "flagship damaged patch: posterior mean d", s["patch_posterior"], "1", truth=s["patch_truth"],
         prior=round(s["patch_prior"], 4), nodes=s["patch_nodes"], **ctx)
    emit("structure", "flagship damaged patch: posterior / true mean d", s["patch_ratio"], "1", goal="0.75-1.25",
         met=bool(abs(s["patch_ratio"] - 1) <= 0.25), **ctx)
    emit("structure", "flagship posterior sd / prior sd of d, patch nodes the gauges see", s["sd_ratio_patch_seen"],
         "1", goal="<= 1", met=bool(s["sd_ratio_patch_seen"] <= 1), **ctx)
    emit("structure", "flagship posterior sd / prior sd of d, nodes the gauges see", s["sd_ratio_seen"], "1", **ctx)


def main(sizes=SIZES, with_flagship: bool = True) -> None:
    for n in sizes:
        for ranks in (1, 2):
            for rec in mpirun("benchmarks.bench_structure", ranks, "--child", str(n)):
                print(PREFIX + json.dumps(rec), flush=True)
    if with_flagship:
        flagship()


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child(int(sys.argv[sys.argv.index("--child") + 1]))
    elif sys.argv[1:] == ["flagship"]:
        flagship()
    else:
        sizes = tuple(int(a) for a in sys.argv[1:])
        main(sizes or SIZES, with_flagship=not sizes)
