"""Workflow mode against online mode, and where a workflow task's time goes (issue 23, goal 2).

1. Parsl's own cost per task through the local HighThroughputExecutor campaigns use (2 workers): ``n`` empty bash
   apps (``true``, a new shell per task) and ``n`` empty python apps (a function call in a warm worker).
2. The parts of a task process: the interpreter alone; ``MPI_Init`` of a one-process task with Open MPI's defaults
   and with the local settings of :data:`workflows.executors.LOCAL_MPI_ENV`; a whole member task process
   (``python -m twin.campaign.task forecast`` of a member, the model run included) with each; side by side.
3. The Lorenz-96 benchmark campaign (1 experiment, N = 8 members, 6 cycles, 1-rank members, 2 workers), interleaved in
   one run: online in one process (first, paying its imports as a ``twin run`` would, and again at the end with them
   done); as a workflow with warm workers and the default ``resources.task: auto`` (after the first cycle's member
   tasks, the rest of the experiment as one task when its members are too small for tasks of their own:
   :mod:`workflows.granularity`); as a workflow with warm workers and a task per member (``launcher: worker``, ``task:
   member``: every one-rank task runs in a Parsl worker that keeps PETSc, the imports and the experiment's setup; what
   the default, ``launcher: auto``, does with one-rank tasks and no ``experiments.task_timeout``); the same with this code's cuts of the fixed cost undone (*warm, before*: every
   experiment scanned by a process of its own before Parsl starts, Parsl's strategy every 2 s, also before the first
   block, no warm-up tasks, the final status verifying the last checkpoint in a process of its own, Parsl's pool module
   as the pool's main module, the interchange, pool and workers importing Parsl whole, the interchange started by
   Parsl); and as a workflow with a process per task under ``mpiexec`` (``launcher: mpiexec``, the
   default before ``auto``; ``auto`` with a ``task_timeout``). Each workflow's last checkpoint is compared bit for bit
   with online mode's. Where the warm run's time goes, from the timestamps of its files (Parsl's logs, the task log):
   the driver before Parsl, Parsl's interchange, its worker pool, the workers' start, the first step's wait for its
   worker's imports, ``init``, the cycles and ``finalize``, and the end of the run.
4. A campaign whose members take at least 1 s each (Lorenz-96, n = 20000, 5000 steps a cycle, N = 4, 2 cycles):
   online and as a warm workflow with 2 workers (two members at once on the 2 cores; ``task: auto``, which keeps
   member tasks for these, and ``task: member``) and with 1 worker (one at a time, as online mode runs them).
5. The Lorenz-96 campaign of 3. through the ``twin run`` command as a user runs it (a new process each time, online,
   as a warm workflow with the defaults and with ``task: member``, interleaved, 10 times each, first in the run): what
   both commands pay before their first step is in it.

Ratios are wall(workflow) / wall(online) measured in the same run; the orchestration overhead per task is
(wall(workflow) - wall(online)) / tasks, with a task per member. Goals (issue 23): the Lorenz-96 campaign within 2x of
online mode as users run it (5.; in this process online mode's imports are done before its run, the workers' are
not), the 1-s members within 1.2x, <= 50 ms of overhead per member when ranks_per_member = 1. The machine's load
average is recorded at the start and at the end.
"""

from __future__ import annotations

import contextlib
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
    resources: {type: local, ranks: 1, workers: 2, launcher: LAUNCHER, task: TASK}
    """)

#: members of at least 1 s each on the 2-core test machine (3000 steps took 0.64 s in a warm worker at load 2.5 and
#: 0.9-1.4 s at load 4-5, 2026-12-06: 5000 steps)
SLOW = (CAMPAIGN.replace("n: 40,", "n: 20000,").replace("end: 1.0", "end: 500.0").replace("N: 8", "N: 4")
        .replace("every: 2, cycles: 6", "every: 5000, cycles: 2"))


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parsl_overhead(run_dir: Path, n: int = 200) -> tuple[float, float]:
    import parsl

    from twin.config.schema import LocalResources
    from workflows.executors import build_config, load_parsl

    resources = LocalResources(type="local", workers=2)
    dfk = load_parsl(build_config(resources, run_dir), resources)
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
    """The parts of one task process, default and tuned Open MPI settings interleaved (the forecast of cycle 0,
    from the checkpoint every run has: an online run checkpoints every 10 s, so not necessarily every cycle)."""
    py = sys.executable
    forecast = exp_dir / "forecast" / "cycle_0000" / "member_0003.h5"
    task = [py, "-P", "-m", "twin.campaign.task", "forecast", str(exp_dir), "--cycle", "0", "--member", "3"]
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


class _FixedCostAsBefore:
    """Undo this code's cuts of a warm run's fixed cost (issue 23, 2026-12-06): every experiment scanned by a
    process of its own before Parsl starts, Parsl's strategy every 2 s (also before the first block), no warm-up
    tasks, the final status verifying the last checkpoint in a process of its own, Parsl's pool module as the
    pool's main module (its spawned helpers import Parsl again), and the interchange, the pool and its workers
    importing Parsl whole (2026-12-07), the interchange and the first worker pool started by Parsl, not before
    (2026-12-07, sessions 22 and 23; the
    driver's import of Parsl without typeguard's instrumentation shows only in :func:`as_users_run`: this process
    has imported Parsl once)."""

    def __enter__(self):
        import workflows.campaign as wc
        import workflows.executors as ex
        import workflows.warm as ww

        self.pool = (ex.POOL_COMMAND_MODULE, ww.POOL_COMMAND_MODULE, ex.STRATEGY_FIRST_PERIOD,
                     ex.INTERCHANGE_COMMAND_MODULE)
        ex.POOL_COMMAND_MODULE = ww.POOL_COMMAND_MODULE = "parsl.executors.high_throughput.process_worker_pool"
        ex.INTERCHANGE_COMMAND_MODULE = "parsl.executors.high_throughput.interchange"
        ex.STRATEGY_FIRST_PERIOD = 2.0

        class ScanAll(wc._Scans):
            def __init__(self, dirs, python=sys.executable):
                super().__init__([], python)
                self.done = _scan_every(dirs, python)

            def results(self):
                return self.done

        self.saved = (wc._Scans, ex.STRATEGY_PERIOD["local"], ww.WarmPool.warm_up, wc.status, wc._early_interchange,
                      wc._early_block)
        status = wc.status
        wc._Scans = ScanAll
        wc._early_interchange = lambda resources: None
        wc._early_block = lambda resources, run_dir: None
        ex.STRATEGY_PERIOD["local"] = 2.0
        ww.WarmPool.warm_up = lambda self, dirs, petsc_options=None: None
        wc.status = lambda run_dir, verify=True: status(run_dir, verify=True)
        return self

    def __exit__(self, *exc):
        import workflows.campaign as wc
        import workflows.executors as ex
        import workflows.warm as ww

        (wc._Scans, ex.STRATEGY_PERIOD["local"], ww.WarmPool.warm_up, wc.status, wc._early_interchange,
         wc._early_block) = self.saved
        (ex.POOL_COMMAND_MODULE, ww.POOL_COMMAND_MODULE, ex.STRATEGY_FIRST_PERIOD,
         ex.INTERCHANGE_COMMAND_MODULE) = self.pool


def _scan_every(dirs, python) -> dict:
    """``task scan`` of every experiment, checkpoint or not, in parallel processes, waited for (the code before)."""
    from workflows.executors import scrubbed_environ

    env = {**scrubbed_environ(), "PYTHONDONTWRITEBYTECODE": "1"}
    procs = {d: subprocess.Popen([python, "-P", "-m", "twin.campaign.task", "scan", str(d)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env) for d in dirs}
    return {d: json.loads(p.communicate()[0].strip().splitlines()[-1]) for d, p in procs.items()}


def _epoch(root: Path, pattern: str, needle: str, last: bool = False) -> float | None:
    """The epoch time that starts the first (or last) line holding ``needle`` of the Parsl logs ``root/pattern``."""
    hits = []
    for f in sorted(root.glob(pattern)):
        try:
            hits += [float(ln.split()[0]) for ln in f.read_text(errors="replace").splitlines() if needle in ln]
        except (OSError, ValueError, IndexError):
            continue
    return (max(hits) if last else min(hits)) if hits else None


def breakdown(run: Path, t_start: float, t_end: float) -> dict[str, float]:
    """Where a warm workflow run's wall time went, from its files' timestamps (seconds, in order)."""
    runinfo = run / "runinfo"
    recs = [json.loads(ln) for ln in (run / "experiments" / "bench" / "tasks.jsonl").read_text().splitlines()]
    init = next(r for r in recs if r["task"] == "init")
    marks = [
        ("driver before Parsl (prepare, logging, scans, imports)",
         _epoch(runinfo, "000/parsl.log", "Starting DataFlowKernel")),
        ("Parsl: interchange started", _epoch(runinfo, "000/twin_local/interchange.log", "Connected to client")),
        ("Parsl: worker pool started and registered (strategy tick, pool imports)",
         _epoch(runinfo, "000/twin_local/interchange.log", "Registered manager")),
        ("Parsl: workers spawned (each re-imports Parsl)",
         _epoch(runinfo, "twin_local/block-*/*/worker_*.log", "started", last=True)),
        ("first worker's imports, PETSc and setup before init", init["time"] - init["seconds"]),
        ("init step", init["time"]),
        ("cycles and finalize (tasks)", max(r["time"] for r in recs)),
        ("end of run (results, Parsl clean-up, status)", t_end),
    ]
    out, prev = {}, t_start
    for name, t in marks:
        if t is None:
            continue
        out[name], prev = t - prev, t
    return out


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


def _steady_cycle_seconds(exp_dir: Path) -> float | None:
    """Seconds per cycle once a run is going: between the ends of the second and the last analyses (``None`` with
    fewer than 3 cycles)."""
    recs = [json.loads(line) for line in (exp_dir / "tasks.jsonl").read_text().splitlines()]
    ends = sorted(r["time"] for r in recs if r["task"] == "analyse" and r["outcome"] == "done")
    return (ends[-1] - ends[1]) / (len(ends) - 2) if len(ends) >= 3 else None


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
    for mode in ["online", *modes, "online-again"]:
        launcher = {"warm": "worker", "warm-auto": "worker", "warm-1": "worker", "warm-before": "worker",
                    "mpiexec": "mpiexec"}.get(mode, "none")
        # a task per member, where the per-task overhead is measured; warm-auto: the default, resources.task: auto
        body = text.replace("LAUNCHER", launcher).replace("TASK", "auto" if mode == "warm-auto" else "member")
        if mode == "warm-1":
            body = body.replace("workers: 2", "workers: 1")
        path = tmp / f"{slug}-{mode}.yaml"
        path.write_text(body)
        loaded = load_campaign(path)
        run = tmp / f"{slug}-{mode}"
        with _FixedCostAsBefore() if mode == "warm-before" else contextlib.nullcontext():
            t0, e0 = time.perf_counter(), time.time()
            if mode.startswith("online"):
                run_online(loaded, MPI.COMM_SELF, run)
            else:
                result = wc.run_workflow(loaded, run, interactive=False)
                assert result.ok, result
                tasks[mode] = result.tasks_run
            walls[mode] = time.perf_counter() - t0
        if mode in ("warm", "warm-before", "warm-auto"):
            for part, secs in breakdown(run, e0, time.time()).items():
                emit("workflow", f"{label}: {mode} run, {part}", secs, "s", **ctx)
    online = tmp / f"{slug}-online" / "experiments" / "bench"
    emit("workflow", f"{label}: online mode (1 process)", walls["online"], "s", **ctx)
    emit("workflow", f"{label}: online mode again (imports done)", walls["online-again"], "s", **ctx)
    emit("workflow", f"{label}: online, mean member forecast step", 1e3 * _forecast_seconds(online), "ms", **ctx)
    online_cycle = _steady_cycle_seconds(online)
    if online_cycle is not None:
        emit("workflow", f"{label}: online, seconds per cycle once going", online_cycle, "s", **ctx)
    names = {"warm": "workflow, warm workers (launcher worker), a task per member",
             "warm-auto": "workflow, warm workers, resources.task auto (the default)",
             "mpiexec": "workflow, a process per task (launcher mpiexec)",
             "warm-before": "workflow, warm workers, fixed-cost cuts undone",
             "warm-1": "workflow, warm, 1 worker"}
    for mode in modes:
        exp = tmp / f"{slug}-{mode}" / "experiments" / "bench"
        n = tasks[mode]
        emit("workflow", f"{label}: {names[mode]}", walls[mode], "s", tasks=n, **ctx)
        emit("workflow", f"{label}: {names[mode]}, ratio to online", walls[mode] / walls["online"], "x", **ctx)
        emit("workflow", f"{label}: {names[mode]}, ratio to online with its imports done",
             walls[mode] / walls["online-again"], "x", **ctx)
        emit("workflow", f"{label}: {names[mode]}, overhead per task", 1e3 * (walls[mode] - walls["online"]) / n,
             "ms", tasks=n, **ctx)
        emit("workflow", f"{label}: {names[mode]}, mean member forecast step", 1e3 * _forecast_seconds(exp), "ms",
             **ctx)
        cycle = _steady_cycle_seconds(exp)
        if cycle is not None and online_cycle is not None:
            emit("workflow", f"{label}: {names[mode]}, seconds per cycle once going", cycle, "s", **ctx)
            if mode != "warm-auto":  # its cycles after the first may be one task
                emit("workflow", f"{label}: {names[mode]}, overhead per task once going (vs online, per cycle / "
                     "tasks)", 1e3 * (cycle - online_cycle) / (int(ctx["members"]) + 1), "ms", **ctx)
        emit("workflow", f"{label}: {names[mode]}, last checkpoint bitwise equal to online", int(_same(exp, online)),
             "1", **ctx)
    return walls


def as_users_run(tmp: Path, repeats: int = 3) -> dict[str, float]:
    """The Lorenz-96 benchmark campaign through the ``twin run`` command, as a user runs it: a new process each time
    (the interpreter, the imports, MPI's and PETSc's start, the run, the outputs), online (``workers: 1``) and as a
    warm workflow (``workers: 2, launcher: worker``), interleaved ``repeats`` times; the medians, and the ratio as the
    median of each pair's (a drift of the machine's speed moves both runs of a pair). The in-process comparison of
    :func:`campaign` leaves out what both commands pay before their first step. :func:`main` runs this first: after
    the in-process runs (PETSc and Parsl started and stopped in the benchmark's process) the same ``twin run`` online
    took 1.4-1.8 s instead of 1.1-1.3 s on the 2-core test machine, for no cause found, which flattered the ratio
    (1.85x against 2.55x measured alone, 2026-12-07)."""
    import statistics

    walls: dict[str, list[float]] = {"online": [], "workflow": [], "member": []}
    default = CAMPAIGN.replace(", task: TASK", "")  # as a user writes it: resources.task auto, the default
    texts = {"online": default.replace("LAUNCHER", "auto").replace("workers: 2", "workers: 1"),
             "workflow": default.replace("LAUNCHER", "worker"),
             "member": CAMPAIGN.replace("LAUNCHER", "worker").replace("TASK", "member")}
    for mode, text in texts.items():
        (tmp / f"cli-{mode}.yaml").write_text(text)
    for i in range(repeats):
        for mode in texts:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "-q", f"cli-{mode}.yaml", "-o",
                                  f"cli-{mode}-{i}"], cwd=tmp, capture_output=True, text=True, timeout=600)
            walls[mode].append(time.perf_counter() - t0)
            assert out.returncode == 0, out.stderr[-2000:]
    ctx = dict(experiments=1, members=8, cycles=6, repeats=repeats, cores=os.cpu_count())
    median = {mode: statistics.median(w) for mode, w in walls.items()}
    emit("workflow", "Lorenz-96 n=40 as users run it: twin run, online (median)", median["online"], "s",
         walls=" ".join(f"{w:.2f}" for w in walls["online"]), **ctx)
    emit("workflow", "Lorenz-96 n=40 as users run it: twin run, warm workflow, resources.task auto (median)",
         median["workflow"], "s", walls=" ".join(f"{w:.2f}" for w in walls["workflow"]), **ctx)
    emit("workflow", "Lorenz-96 n=40 as users run it: twin run, warm workflow, resources.task member (median)",
         median["member"], "s", walls=" ".join(f"{w:.2f}" for w in walls["member"]), **ctx)
    emit("workflow", "Lorenz-96 n=40 as users run it: task member / online (median of the pairs)",
         statistics.median(w / o for o, w in zip(walls["online"], walls["member"])), "x", **ctx)
    median["ratio"] = statistics.median(w / o for o, w in zip(walls["online"], walls["workflow"]))
    emit("workflow", "Lorenz-96 n=40 as users run it: workflow / online (median of the pairs)", median["ratio"], "x",
         **ctx)
    # what the workflow adds, whatever online mode costs: 2x holds only while online mode takes at least this long
    emit("workflow", "Lorenz-96 n=40 as users run it: workflow - online", median["workflow"] - median["online"], "s",
         **ctx)
    return median


def main() -> None:
    emit("workflow", "machine load at the start", os.getloadavg()[0], "1", detail=_load(), cores=os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="twin-bench-wf-") as tmp:
        tmp = Path(tmp)
        users = as_users_run(tmp, repeats=10)  # first, from a process that has started neither PETSc nor Parsl
        parsl_overhead(tmp / "parsl")
        ctx = dict(experiments=1, members=8, cycles=6, workers=2, cores=os.cpu_count())
        small = campaign(tmp, CAMPAIGN, "Lorenz-96 n=40", ["warm-auto", "warm", "warm-before", "mpiexec"], ctx)
        task_parts(tmp / "Lorenz-96_n40-online" / "experiments" / "bench")
        slow = dict(experiments=1, members=4, cycles=2, n=20000, steps_per_cycle=5000, cores=os.cpu_count())
        large = campaign(tmp, SLOW, "Lorenz-96 n=20000, >= 1 s members", ["warm-auto", "warm", "warm-1"], slow)
    # with the defaults of local resources (launcher auto: one-rank members in the warm workers; task auto). The small
    # campaign's goal is measured as users run it (below): in this process online mode's imports, PETSc and Parsl are
    # done before its run while the workflow's workers are new processes that import twin and start PETSc again
    # (0.4-0.7 s, longer than online's whole run of 0.6 s), so its in-process ratio is no goal's measure
    ratio = small["warm-auto"] / small["online"]
    emit("workflow", "Lorenz-96 n=40 in this process (online's imports done, the workers' not), default workflow / "
         "online", ratio, "x")
    ratio = large["warm-auto"] / large["online"]  # the campaign as configured: 2 workers
    emit("workflow", "goal 2: Lorenz-96 n=20000, >= 1 s members, default workflow / online (goal <= 1.2)", ratio, "x",
         met=ratio <= 1.2, missed_by=None if ratio <= 1.2 else round(ratio / 1.2, 2))
    ratio = users["ratio"]
    emit("workflow", "goal 2: Lorenz-96 n=40 as users run it, twin run workflow / twin run online (goal <= 2)", ratio,
         "x", met=ratio <= 2.0, missed_by=None if ratio <= 2.0 else round(ratio / 2.0, 2))
    emit("workflow", "machine load at the end", os.getloadavg()[0], "1", detail=_load(), cores=os.cpu_count())


if __name__ == "__main__":
    main()
