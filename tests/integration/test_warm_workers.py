"""Workflow mode with warm workers (``launcher: worker``, one-rank tasks run inside the Parsl workers, issue 23): the
same analysis as online mode bit for bit, the model's failures retried then dropped by member, every step in the
workers; a worker killed with a real SIGKILL under its task stops its experiment at once with that reason, and one
killed while it waits for a task ends the run with an error that says so instead of leaving it waiting forever
(workflows/warm.py); a rerun resumes either to online mode's numbers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from campaign_case import arrays, assert_same, l96_campaign

from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(400)

WARM = "resources: {type: local, ranks: 1, workers: 2, launcher: worker}\n"
#: the divergence of tests/integration/test_campaign_failures.py: member 2 of the wide prior draws F = 244
FAILING = l96_campaign("l96fail", seed=8675, forcing="{value: 8.0, prior: {dist: lognormal, median: 8.0, sigma: 1.2}, "
                       "estimable: true}", N=5, inflation=None, every=8, cycles=2, extra=WARM)
MATRIX = {"models.l96.forcing.prior.sigma": [1.2, 0.05]}
WIDE, NARROW = "sigma-1.2", "sigma-0.05"


def test_warm_workers_give_the_online_analysis_and_drop_the_diverging_member(tmp_path):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.campaign.status import status
    from workflows.campaign import run_workflow

    path = tmp_path / "fail.yaml"
    path.write_text(FAILING)
    loaded = load_campaign(path)
    policy = ExperimentsConfig(matrix=MATRIX, retries=1, on_member_failure="drop")
    result = run_workflow(loaded, tmp_path / "wf", experiments=policy, interactive=False)
    assert result.ok, result
    assert result.dropped == {WIDE: {2: result.dropped[WIDE][2]}} and "non-finite" in result.dropped[WIDE][2]
    assert "model failed: model 'l96'" in result.dropped[WIDE][2]  # the line the task gave
    wide = layout.experiment_dir(tmp_path / "wf", WIDE)
    done, failed = layout.member_files(wide, 0)
    assert done == [0, 1, 3, 4] and list(failed) == [2]
    # every step ran in the two warm workers (processes that outlive their tasks), none in the driver
    records = layout.read_task_log(wide) + layout.read_task_log(layout.experiment_dir(tmp_path / "wf", NARROW))
    pids = {r["pid"] for r in records}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert len([r for r in records if r["task"] == "forecast" and r["outcome"] == "done"]) == 2 * 5 * 2 - 2
    assert all(st.state == "done" for st in status(tmp_path / "wf").experiments)

    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    for name in (WIDE, NARROW):
        assert_same(arrays(layout.experiment_dir(tmp_path / "wf", name)),
                    arrays(layout.experiment_dir(tmp_path / "online", name)))


# -- a warm worker killed with SIGKILL ---------------------------------------------------------------------------------
KILLED = l96_campaign("l96kill", N=4, every=2, cycles=6, extra=WARM)


def _open_files(pid: int) -> set[str]:
    try:
        return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return set()


def _waiting(worker_log: str) -> bool:
    """Whether a Parsl worker waits for a task, by the last line about tasks of its own log (Parsl's words): none
    received yet, or the last one finished."""
    try:
        lines = Path(worker_log).read_text(errors="replace").splitlines()
    except OSError:
        return False
    about = [ln for ln in lines if "executor task" in ln or "started" in ln]
    return bool(about) and ("All processing finished" in about[-1] or about[-1].endswith("started"))


class _Killer(threading.Thread):
    """SIGKILLs one Parsl worker of the run in ``run`` (found by the worker log it holds open) at the moment one of
    the tasks whose logs are ``task_logs`` runs: the worker running it (``busy=True``) or another one that waits for
    a task (``busy=False``; not one still busy with its warm-up)."""

    def __init__(self, run: Path, task_logs: list[Path], busy: bool):
        super().__init__(daemon=True)
        self.run_dir, self.task_logs, self.busy = str(run), [str(t) for t in task_logs], busy
        self.killed: tuple[int, float] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            if any(os.path.exists(t) for t in self.task_logs):
                pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
                files = {p: _open_files(p) for p in pids}
                workers = {p: f for p, f in files.items()
                           if any(x.startswith(self.run_dir) and "/worker_" in x and x.endswith(".log") for x in f)}
                running = [p for p, f in workers.items() if f & set(self.task_logs)]
                if len(running) == 1 and len(workers) == 2:
                    victim = running[0] if self.busy else next(p for p in workers if p != running[0])
                    log = next(x for x in workers[victim] if "/worker_" in x and x.endswith(".log"))
                    if self.busy or _waiting(log):
                        os.kill(victim, signal.SIGKILL)
                        self.killed = (victim, time.time())
                        return
            time.sleep(0.003)


def _run_with_kill(tmp_path, tasks: list[str], busy: bool, retries: int):
    from workflows.campaign import run_workflow

    path = tmp_path / "kill.yaml"
    path.write_text(KILLED)
    loaded = load_campaign(path)
    policy = ExperimentsConfig(retries=retries)
    run = tmp_path / "wf"
    killer = _Killer(run, [run / "runinfo" / "tasks" / "l96kill" / f"{t}.err" for t in tasks], busy)
    killer.start()
    try:
        try:
            result = run_workflow(loaded, run, experiments=policy, interactive=False)
        except Exception as exc:  # noqa: BLE001 - the test looks at what ended the run
            result = exc
    finally:
        killer.stop.set()
        killer.join()
    ended = time.time()
    assert killer.killed is not None, f"no worker was killed (tasks {tasks}): {result!r}"
    return loaded, policy, run, result, ended - killer.killed[1]


@pytest.mark.timeout(240)
def test_a_warm_worker_killed_under_its_task_stops_the_experiment_with_the_reason_at_once(tmp_path):
    """SIGKILL (as the OOM killer sends) to the worker running member 2's forecast of cycle 1, no retries: the
    experiment stops naming the member and the lost worker within Parsl's heartbeat period (5 s) and a margin,
    and, the stop being the infrastructure's, a rerun resumes it to online mode's numbers bit for bit."""
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from workflows.campaign import run_workflow

    loaded, policy, run, result, after = _run_with_kill(tmp_path, ["forecast_c0001_m0002"], busy=True, retries=0)
    assert not isinstance(result, Exception), result
    assert not result.ok and result.states == {"l96kill": "failed"}
    assert after < 20.0, f"the run went on {after:.1f} s after the kill"
    exp = layout.experiment_dir(run, "l96kill")
    reason = layout.read_json(layout.stopped_marker(exp))["reason"]
    assert reason.startswith("member(s) 2 (the Parsl worker running it died (worker ") and "lost" in reason, reason
    assert layout.member_files(exp, 1)[1] == {}  # nobody was dropped for it

    layout.stopped_marker(exp).unlink()  # what the operator does, as the message says
    again = run_workflow(loaded, run, experiments=policy, interactive=False)
    assert again.ok, again
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "l96kill")))


@pytest.mark.timeout(240)
def test_a_warm_worker_killed_while_it_waits_ends_the_run_with_an_error_and_a_rerun_resumes(tmp_path):
    """SIGKILL to a worker that waits for a task while the other analyses a cycle. With this Parsl the worker can
    take its pool's task-queue lock with it, and nothing runs again (the run waited forever, task_timeout or not);
    now the driver ends the run within seconds with a WorkflowError that says what happened and what to do, its
    heartbeat says crashed, no experiment is marked stopped, and a rerun resumes to online mode's numbers bitwise."""
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.campaign.status import driver_state
    from twin.core.errors import WorkflowError
    from workflows.campaign import run_workflow

    analyses = [f"analyse_c{k:04d}" for k in range(2, 6)]  # by then the warm-ups are over, even on a loaded machine
    loaded, policy, run, result, after = _run_with_kill(tmp_path, analyses, busy=False, retries=1)
    assert isinstance(result, WorkflowError), result
    assert "of Parsl's worker pool died while it was not running a task" in str(result)
    assert "run the campaign again to resume it" in str(result)
    assert after < 15.0, f"the run went on {after:.1f} s after the kill"
    assert driver_state(run) == "crashed"
    exp = layout.experiment_dir(run, "l96kill")
    assert not layout.stopped_marker(exp).exists()

    again = run_workflow(loaded, run, experiments=policy, interactive=False)
    assert again.ok, again
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "l96kill")))
