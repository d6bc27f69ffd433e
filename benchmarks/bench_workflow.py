"""Workflow mode against online mode, and where a workflow task's time goes (issue 23, goal 2).

1. Parsl's own cost per task through the local HighThroughputExecutor campaigns use (2 workers): ``n`` empty bash
   apps (``true``, a new shell per task) and ``n`` empty python apps (a function call in a warm worker).
2. The parts of a task process: the interpreter alone; ``MPI_Init`` of a one-process task with Open MPI's defaults
   and with the local settings of :data:`workflows.executors.LOCAL_MPI_ENV`; a whole member task process
   (``python -m twin.campaign.task forecast`` of a member, the model run included) with each; side by side.
3. The Lorenz-96 benchmark campaign (1 experiment, N = 8 members, 6 cycles, 1-rank members, 2 workers), interleaved
   in one run: online in one process; as a workflow with warm workers (``launcher: worker``: every one-rank task runs
   in a Parsl worker that keeps PETSc, the imports and the experiment's setup); as a workflow with a process per
   task under ``mpiexec`` (the default launcher); and *before*: a process per task without launcher and with Open
   MPI's default settings, the code path before issue 23 (kept selectable here only). Each workflow's last
   checkpoint is compared bit for bit with online mode's.
4. A campaign whose members take about 1 s each (Lorenz-96, n = 20000, 3000 steps a cycle, N = 4, 2 cycles): online
   and as a warm workflow.

Ratios are wall(workflow) / wall(online) measured in the same run; the orchestration overhead per task is
(wall(workflow) - wall(online)) / tasks. Goals (issue 23): the Lorenz-96 campaign within 2x of online mode, the
1-s members within 1.2x, <= 50 ms of overhead per member when ranks_per_member = 1. The machine's load average is
recorded at the start and at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.harness import emit

CAMPAIGN = textwrap.dedent("""\
    schema_version: 1
    campaign: {name: bench, seed: 1}
    models:
      l96: {type: lorenz96, n: 40, dt: 0.05, initial_condition: random, perturbation: 1.0,
            forcing: {value: 8.0, prior: {dist: normal, mean: 8.0, std: 0.5}, estimable: true}}
    timeline: {start: 0.0, end: 1.0, units: s}
    assimilation:
      method: etkf
      N: 8
      schedule: {every: 2, cycles: 6}
      observations: [{type: all_points, component: 0, error_std: 1.0}]
    resources: {type: local, ranks: 1, workers: 2, launcher: LAUNCHER}
    """)

#: members of about 1 s each on the 2-core test machine (0.5 s for 1500 steps measured)
SLOW = (CAMPAIGN.replace("n: 40,", "n: 20000,").replace("end: 1.0", "end: 300.0").replace("N: 8", "N: 4")
        .replace("every: 2, cycles: 6", "every: 3000, cycles: 2"))


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parsl_overhead(run_dir: Path, n: int = 200) -> tuple[float, float]:
    import parsl

    from twin.config.schema import LocalResources
    from workflows.executors import build_config

    dfk = parsl.load(build_config(LocalResources(type="local", workers=2), run_dir))
    out = []
    try:
        for app in (parsl.bash_app(_empty), parsl.python_app(_nothing)):
            app().result()  # workers up
            t0 = time.perf_counter()
            futures = [app() for _ in range(n)]
            for f in futures:
                f.result()
            out.append((time.perf_counter() - t0) / n)
    finally:
        dfk.cleanup()
        parsl.clear()
    emit("workflow", "Parsl overhead per empty task, bash app (HTEX, 2 workers)", 1e3 * out[0], "ms", tasks=n)
    emit("workflow", "Parsl overhead per empty task, python app in a warm worker (HTEX, 2 workers)", 1e3 * out[1],
         "ms", tasks=n)
    return out[0], out[1]


def _empty() -> str:
    return "true"


def _nothing() -> None:
    return None


def _task_env(tuned: bool) -> dict:
    from workflows.executors import LOCAL_MPI_ENV, TASK_ENV, scrubbed_environ

    env = {**scrubbed_environ(), **TASK_ENV}
    return {**env, **LOCAL_MPI_ENV} if tuned else env


def _timed(cmd: list[str], env: dict, repeats: int) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        best.append(time.perf_counter() - t0)
    return sum(best) / len(best)


def task_parts(exp_dir: Path, repeats: int = 5) -> dict[str, float]:
    """The parts of one task process, default and tuned Open MPI settings interleaved."""
    py = sys.executable
    forecast = exp_dir / "forecast" / "cycle_0002" / "member_0003.h5"
    task = [py, "-P", "-m", "twin.campaign.task", "forecast", str(exp_dir), "--cycle", "2", "--member", "3"]
    mpi = [py, "-c", "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"]
    sums: dict[str, float] = {}
    for _ in range(repeats):
        for tuned in (False, True):
            name = "tuned" if tuned else "default"
            env = _task_env(tuned)
            sums["interpreter"] = sums.get("interpreter", 0.0) + _timed([py, "-c", "pass"], env, 1)
            sums[f"mpi_init_{name}"] = sums.get(f"mpi_init_{name}", 0.0) + _timed(mpi, env, 1)
            forecast.unlink(missing_ok=True)
            sums[f"task_{name}"] = sums.get(f"task_{name}", 0.0) + _timed(task, env, 1)
    parts = {k: v / (repeats * (2 if k == "interpreter" else 1)) for k, v in sums.items()}
    ctx = dict(repeats=repeats)
    emit("workflow", "python -c pass", parts["interpreter"], "s", **ctx)
    emit("workflow", "MPI_Init of a one-process task, Open MPI defaults", parts["mpi_init_default"], "s", **ctx)
    emit("workflow", "MPI_Init of a one-process task, LOCAL_MPI_ENV (ob1, isolated singleton)",
         parts["mpi_init_tuned"], "s", **ctx)
    emit("workflow", "one member task process (python -m twin.campaign.task forecast), Open MPI defaults",
         parts["task_default"], "s", **ctx)
    emit("workflow", "one member task process (python -m twin.campaign.task forecast), LOCAL_MPI_ENV",
         parts["task_tuned"], "s", **ctx)
    return parts


def _process_per_task_without_tuning():
    """The launcher of the code before issue 23: every task a new process, Open MPI's default settings."""
    from workflows.executors import Launcher

    class ProcessPerTask(Launcher):
        def in_worker(self, ranks: int) -> bool:
            return False

    return lambda resources, private=False: ProcessPerTask(kind=resources.launcher, private=private)


def _last_checkpoint(exp_dir: Path):
    import numpy as np

    from twin.campaign import layout
    from twin.io.checkpoint import CheckpointReader

    k = layout.checkpoint_cycles(exp_dir)[-1]
    with CheckpointReader(layout.checkpoint_file(exp_dir, k)) as r:
        return k, r.read_field("l96"), np.asarray(r.scalar_parameters["F"])


def _same(a: Path, b: Path) -> bool:
    ka, xa, fa = _last_checkpoint(a)
    kb, xb, fb = _last_checkpoint(b)
    return ka == kb and xa.tobytes() == xb.tobytes() and fa.tobytes() == fb.tobytes()


def _forecast_seconds(exp_dir: Path) -> float:
    recs = [json.loads(line) for line in (exp_dir / "tasks.jsonl").read_text().splitlines()]
    secs = [r["seconds"] for r in recs if r["task"] == "forecast" and r["outcome"] == "done"]
    return sum(secs) / len(secs)


def campaign(tmp: Path, text: str, label: str, modes: list[str], ctx: dict) -> dict[str, float]:
    """Run the campaign ``text`` online and as workflows (``modes``), interleaved; emit walls and ratios. (Run
    directories get names without blanks: Parsl's local provider does not quote its worker command's paths.)"""
    slug = label.split(",")[0].replace(" ", "_").replace("=", "")
    from mpi4py import MPI

    import workflows.campaign as wc
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    walls: dict[str, float] = {}
    tasks: dict[str, int] = {}
    for mode in ["online", *modes]:
        launcher = {"warm": "worker", "before": "none", "mpiexec": "mpiexec", "online": "none"}[mode]
        path = tmp / f"{slug}-{mode}.yaml"
        path.write_text(text.replace("LAUNCHER", launcher))
        loaded = load_campaign(path)
        run = tmp / f"{slug}-{mode}"
        original = wc.launcher_for
        if mode == "before":
            wc.launcher_for = _process_per_task_without_tuning()
        try:
            t0 = time.perf_counter()
            if mode == "online":
                run_online(loaded, MPI.COMM_SELF, run)
            else:
                result = wc.run_workflow(loaded, run, interactive=False)
                assert result.ok, result
                tasks[mode] = result.tasks_run
            walls[mode] = time.perf_counter() - t0
        finally:
            wc.launcher_for = original
    online = tmp / f"{slug}-online" / "experiments" / "bench"
    emit("workflow", f"{label}: online mode (1 process)", walls["online"], "s", **ctx)
    emit("workflow", f"{label}: online, mean member forecast step", 1e3 * _forecast_seconds(online), "ms", **ctx)
    names = {"warm": "workflow, warm workers (launcher worker)", "mpiexec": "workflow, a process per task (mpiexec)",
             "before": "workflow before issue 23 (a process per task, Open MPI defaults)"}
    for mode in modes:
        exp = tmp / f"{slug}-{mode}" / "experiments" / "bench"
        n = tasks[mode]
        emit("workflow", f"{label}: {names[mode]}", walls[mode], "s", tasks=n, **ctx)
        emit("workflow", f"{label}: {names[mode]}, ratio to online", walls[mode] / walls["online"], "x", **ctx)
        emit("workflow", f"{label}: {names[mode]}, overhead per task", 1e3 * (walls[mode] - walls["online"]) / n,
             "ms", tasks=n, **ctx)
        emit("workflow", f"{label}: {names[mode]}, mean member forecast step", 1e3 * _forecast_seconds(exp), "ms",
             **ctx)
        emit("workflow", f"{label}: {names[mode]}, last checkpoint bitwise equal to online", int(_same(exp, online)),
             "1", **ctx)
    return walls


def main() -> None:
    emit("workflow", "machine load at the start", os.getloadavg()[0], "1", detail=_load(), cores=os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="twin-bench-wf-") as tmp:
        tmp = Path(tmp)
        parsl_overhead(tmp / "parsl")
        ctx = dict(experiments=1, members=8, cycles=6, workers=2, cores=os.cpu_count())
        campaign(tmp, CAMPAIGN, "Lorenz-96 n=40", ["warm", "before", "mpiexec"], ctx)
        task_parts(tmp / "Lorenz-96_n40-online" / "experiments" / "bench")
        slow = dict(experiments=1, members=4, cycles=2, workers=2, n=20000, steps_per_cycle=3000,
                    cores=os.cpu_count())
        campaign(tmp, SLOW, "Lorenz-96 n=20000, ~1 s members", ["warm"], slow)
    emit("workflow", "machine load at the end", os.getloadavg()[0], "1", detail=_load(), cores=os.cpu_count())


if __name__ == "__main__":
    main()
