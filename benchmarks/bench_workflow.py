"""Parsl overhead of campaign tasks and campaign throughput, workflow mode against online mode.

1. Parsl's own cost per task: ``n`` empty bash apps (``true``) through the local HighThroughputExecutor that campaigns
   use (2 workers); overhead per task = wall time / n, throughput = n / wall time.
2. The cost of launching one member task: ``python -m twin.campaign.task forecast`` on a member whose forecast
   already exists (interpreter start, imports, verifying two files, no model run), serially.
3. A Lorenz-96 campaign (1 experiment, N = 8 members, 6 cycles, members on 1 rank) as a Parsl workflow and online in
   one process: wall times, tasks per second, and Parsl's share of the workflow's time (``tasks x overhead / wall``).

The goal of issue 9: <= 10 ms of Parsl overhead per task and < 5 % of campaign time for realistic member run times;
for Lorenz-96 members (milliseconds of model time) the task launch (2.) dominates instead.
"""

from __future__ import annotations

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
    resources: {type: local, ranks: 1, workers: 2, launcher: none}
    """)


def parsl_overhead(run_dir: Path, n: int = 200) -> float:
    import parsl

    from twin.config.schema import LocalResources
    from workflows.executors import build_config

    dfk = parsl.load(build_config(LocalResources(type="local", workers=2), run_dir))
    try:
        app = parsl.bash_app(_empty)
        app().result()  # workers up
        t0 = time.perf_counter()
        futures = [app() for _ in range(n)]
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
    finally:
        dfk.cleanup()
        parsl.clear()
    emit("workflow", "Parsl overhead per empty task (HTEX, 2 workers)", 1e3 * wall / n, "ms", tasks=n)
    emit("workflow", "Parsl throughput of empty tasks", n / wall, "tasks/s", tasks=n)
    return wall / n


def _empty() -> str:
    return "true"


def task_launch(exp_dir: Path, repeats: int = 5) -> float:
    cmd = [sys.executable, "-m", "twin.campaign.task", "forecast", str(exp_dir), "--cycle", "0", "--member", "0"]
    t0 = time.perf_counter()
    for _ in range(repeats):
        subprocess.run(cmd, check=True, capture_output=True)
    per = (time.perf_counter() - t0) / repeats
    emit("workflow", "launch of one member task (python -m twin.campaign.task, forecast already done)", per, "s",
         repeats=repeats)
    return per


def main() -> None:
    from mpi4py import MPI  # noqa: F401  (online mode below; Parsl workers are started before, in a clean env)

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign
    from workflows.campaign import run_workflow

    with tempfile.TemporaryDirectory(prefix="twin-bench-wf-") as tmp:
        tmp = Path(tmp)
        per_task = parsl_overhead(tmp / "parsl")
        path = tmp / "c.yaml"
        path.write_text(CAMPAIGN)
        loaded = load_campaign(path)
        t0 = time.perf_counter()
        result = run_workflow(loaded, tmp / "wf", interactive=False)
        wf = time.perf_counter() - t0
        assert result.ok, result
        t0 = time.perf_counter()
        run_online(loaded, MPI.COMM_SELF, tmp / "online")
        online = time.perf_counter() - t0
        launch = task_launch(tmp / "wf" / "experiments" / "bench")
        n = result.tasks_run
        ctx = dict(experiments=1, members=8, cycles=6, tasks=n, workers=2, cores=os.cpu_count())
        emit("workflow", "Lorenz-96 campaign, workflow mode (Parsl HTEX)", wf, "s", **ctx)
        emit("workflow", "Lorenz-96 campaign, online mode (1 process)", online, "s", **ctx)
        emit("workflow", "campaign throughput, workflow mode", n / wf, "tasks/s", **ctx)
        emit("workflow", "Parsl share of workflow campaign time", 100.0 * n * per_task / wf, "%", **ctx)
        emit("workflow", "task launch share of workflow campaign time (2 workers)", 100.0 * n * launch / (2 * wf),
             "%", **ctx)


if __name__ == "__main__":
    main()
