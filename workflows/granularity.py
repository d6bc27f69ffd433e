"""What one task of a workflow runs (``resources.task``): a member's forecast, or the rest of an experiment.

A task per member forecast (and one per analysis) spreads an experiment's members over the workers, at a cost per
task that does not depend on the member: Parsl's dispatch, the member's file written by its task and read back by the
analysis, the analysis a task of its own; 10-20 ms in a warm worker, about 1 s for a process of its own under
``mpiexec`` (``benchmarks/bench_workflow.py``). Members that take less than that are cheaper one after the other in one
process, as online mode runs them (in memory, at once through the model's batched forecast where it has one): a task
per experiment (:func:`twin.campaign.task._experiment`), experiments in parallel over the workers.

``task: auto`` (the default) decides per experiment, by measurement: its first cycle of this run goes as member
tasks; after its analysis, the seconds each member's forecast took inside its task (the experiment's task log) give
the cycle's cost both ways, ``N * t`` one after the other against ``ceil(N / slots) * (t + o) + o`` as tasks (``o``:
:data:`TASK_SECONDS` for warm workers, :data:`PROCESS_SECONDS` for a process per task; ``slots``: the run's workers),
and the rest of the experiment becomes one task when that is cheaper. It resumes from the checkpoint the analysis
wrote, bitwise as member tasks would have gone on (tests). Not switched: members of more than one rank (their tasks
are sized for them), and campaigns with ``experiments.task_timeout`` (a limit meant for one member's task). On the
2-core test machine the Lorenz-96 benchmark campaign (N = 8, members of 10-15 ms) switches and its members of >= 1 s
do not.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from twin.campaign import layout

#: Orchestration seconds of a member task in a warm worker, the bound issue 23 sets (measured 7-14 ms, plus the
#: analysis's reading of the member files)
TASK_SECONDS = 0.05
#: Orchestration seconds of a member task that is a process of its own (the interpreter, MPI and PETSc start:
#: 0.7-1.5 s measured)
PROCESS_SECONDS = 1.0


def member_seconds(exp_dir: Path, cycle: int) -> list[float]:
    """Seconds the member forecasts of ``cycle`` took inside their tasks (the last record of each member in the
    experiment's task log)."""
    last: dict[int, float] = {}
    for rec in layout.read_task_log(exp_dir):
        if rec.get("task") == "forecast" and rec.get("outcome") == "done" and rec.get("cycle") == cycle:
            try:
                last[int(rec["member"])] = float(rec["seconds"])
            except (KeyError, TypeError, ValueError):
                continue
    return list(last.values())


def slots(resources) -> int:
    """Tasks the run's workers hold at once."""
    return int(resources.workers) * int(getattr(resources, "max_blocks", 1))


def whole_experiment(resources, policy, ranks_per_member: int, warm: bool, exp_dir: Path, cycle: int,
                     n_members: int) -> str:
    """Why the rest of an experiment should run as one task after the analysis of ``cycle`` (a line for the log), or
    ``""`` to go on with member tasks. ``warm``: one-rank tasks run in warm workers."""
    if resources.task != "auto" or ranks_per_member != 1 or policy.task_timeout is not None:
        return ""
    took = member_seconds(exp_dir, cycle)
    if not took or n_members < 1:
        return ""
    t = statistics.median(took)
    o = TASK_SECONDS if warm else PROCESS_SECONDS
    alone, tasks = n_members * t, math.ceil(n_members / slots(resources)) * (t + o) + o
    if alone > tasks:
        return ""
    return (f"its members' forecasts took {t * 1000:.0f} ms each in cycle {cycle} (median of {len(took)}): "
            f"{alone:.2f} s a cycle one after the other against about {tasks:.2f} s as tasks of their own, so its "
            "remaining cycles and its outputs run as one task (resources.task: member keeps a task per member)")
