"""Workflow mode with warm workers (``launcher: worker``, one-rank tasks run inside the Parsl workers, issue 23): the
same analysis as online mode bit for bit, the model's failures retried then dropped by member, every step in the
workers; a worker killed with a real SIGKILL under its task stops its experiment at once with that reason, one
killed while it holds its pool's task-queue lock ends the run with an error that says so instead of leaving it
waiting forever, and one killed while it waits for that lock harms nothing (workflows/warm.py); a rerun resumes to
online mode's numbers. ``launcher: auto``, the default: one-rank tasks
in the warm workers and tasks of more ranks under ``mpiexec -n R``, or, with ``experiments.task_timeout``, every task
a process of its own under ``mpiexec``, which the time limit stops when it hangs."""

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

#: online runs of these campaigns checkpoint every cycle as the workflow does, so every checkpoint is compared; a task
#: per member in every cycle (their members would otherwise run as one task after the first cycle: test_task_granularity)
WARM = "resources: {type: local, ranks: 1, workers: 2, launcher: worker, task: member}\noutputs: {checkpoint_every: 1}\n"
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
#: 18 short cycles: the workers' warm-ups for the outputs take the idle moments of the first ones (workflows.warm; one
#: at a time, up to 0.3 s each, three workers' worth ran into analysis 10 once), and the kills while a worker waits
#: for a task (during analyses 12-16) leave cycles to run after them
KILLED = l96_campaign("l96kill", N=4, every=1, cycles=18, extra=WARM)


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


#: the system call (x86-64 numbers, ``/proc/<pid>/syscall``) a Parsl worker waits in when it holds its pool's
#: task-queue lock (``poll`` on the queue's pipe) or when it waits for the lock (``futex``: a semaphore)
HOLDS_LOCK, WAITS_FOR_LOCK = "7", "202"


class _Killer(threading.Thread):
    """SIGKILLs one Parsl worker of the run in ``run`` (found by the worker log it holds open) at the moment one of
    the tasks whose logs are ``task_logs`` runs: the worker running it (``target="busy"``), or another one that waits
    for a task (not one still busy with its warm-up) and holds its pool's task-queue lock (``"holder"``) or waits for
    the lock (``"waiter"``)."""

    def __init__(self, run: Path, task_logs: list[Path], target: str):
        super().__init__(daemon=True)
        self.run_dir, self.task_logs, self.target = str(run), [str(t) for t in task_logs], target
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
                if len(running) == 1 and len(workers) >= 2:
                    victims = running if self.target == "busy" else [p for p in workers if p != running[0]]
                    for victim in victims:
                        log = next(x for x in workers[victim] if "/worker_" in x and x.endswith(".log"))
                        if self._kill_if_still(victim, log):
                            return
            time.sleep(0.003)

    def _is_target(self, victim: int, log: str) -> bool:
        if self.target == "busy":
            return bool(_open_files(victim) & set(self.task_logs))
        return _waiting(log) and _syscall(victim) == (HOLDS_LOCK if self.target == "holder" else WAITS_FOR_LOCK)

    def _kill_if_still(self, victim: int, log: str) -> bool:
        """SIGKILL ``victim`` if it is still what was seen: stopped first (SIGSTOP), so that a task of a few
        milliseconds cannot end between the look and the kill (the worker then died idle, another test's case);
        resumed (SIGCONT) when it is not."""
        if not self._is_target(victim, log):
            return False
        os.kill(victim, signal.SIGSTOP)
        for _ in range(200):  # until the kernel says it is stopped
            if _state(victim) in ("T", "t", ""):
                break
            time.sleep(0.001)
        if not self._is_target(victim, log):
            os.kill(victim, signal.SIGCONT)
            return False
        os.kill(victim, signal.SIGKILL)
        self.killed = (victim, time.time())
        return True


def _syscall(pid: int) -> str:
    """The number of the system call ``pid`` is in (``/proc/<pid>/syscall``; ``running``, or ``""`` when gone)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return ""


def _state(pid: int) -> str:
    """The process state letter of ``pid`` (``/proc/<pid>/stat``), ``""`` when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _run_with_kill(tmp_path, tasks: list[str], target: str, retries: int, campaign: str = KILLED):
    from workflows.campaign import run_workflow

    path = tmp_path / "kill.yaml"
    path.write_text(campaign)
    loaded = load_campaign(path)
    policy = ExperimentsConfig(retries=retries)
    run = tmp_path / "wf"
    killer = _Killer(run, [run / "runinfo" / "tasks" / "l96kill" / f"{t}.err" for t in tasks], target)
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
    """SIGKILL (as the OOM killer sends) to the worker running one of member 2's forecasts, no retries: the
    experiment stops naming the member and the lost worker within Parsl's heartbeat period (5 s) and a margin,
    and, the stop being the infrastructure's, a rerun resumes it to online mode's numbers bit for bit."""
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from workflows.campaign import run_workflow

    # any of member 2's forecasts: one lasts milliseconds and can end before the killer has seen it run (CI did once)
    forecasts = [f"forecast_c{k:04d}_m0002" for k in range(1, 6)]
    loaded, policy, run, result, after = _run_with_kill(tmp_path, forecasts, "busy", retries=0)
    assert not isinstance(result, Exception), result
    assert not result.ok and result.states == {"l96kill": "failed"}
    assert after < 20.0, f"the run went on {after:.1f} s after the kill"
    exp = layout.experiment_dir(run, "l96kill")
    reason = layout.read_json(layout.error_marker(exp))["reason"]
    assert reason.startswith("member(s) 2 (the Parsl worker running it died (worker ") and "lost" in reason, reason
    assert layout.member_files(exp, 1)[1] == {}  # nobody was dropped for it
    assert not layout.stopped_marker(exp).exists()  # failed, not stopped by its policy: the rerun takes it up again

    again = run_workflow(loaded, run, experiments=policy, interactive=False)
    assert again.ok, again
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "l96kill")))


@pytest.mark.timeout(240)
def test_a_warm_worker_killed_holding_the_task_queue_ends_the_run_with_an_error_and_a_rerun_resumes(tmp_path):
    """SIGKILL to the worker that waits for a task, holding its pool's task-queue lock, while the other analyses a
    cycle. With this Parsl the lock dies with the worker and nothing runs again (the run waited forever, task_timeout
    or not); now the driver ends the run once the next tasks have waited STUCK_AFTER seconds with none starting, with
    a WorkflowError that says what happened and what to do, its heartbeat says crashed, no experiment is marked
    stopped, and a rerun resumes to online mode's numbers bitwise."""
    from mpi4py import MPI

    from twin.campaign.heartbeat import driver_state
    from twin.campaign.online import run_online
    from twin.core.errors import WorkflowError
    from workflows.campaign import run_workflow
    from workflows.warm import STUCK_AFTER

    analyses = [f"analyse_c{k:04d}" for k in range(12, 17)]  # by then the warm-ups are over, even on a loaded machine
    loaded, policy, run, result, after = _run_with_kill(tmp_path, analyses, "holder", retries=1)
    assert isinstance(result, WorkflowError), result
    assert "of Parsl's worker pool died while not running a task" in str(result)
    assert "no task has started since" in str(result) and "run the campaign again to resume it" in str(result)
    assert STUCK_AFTER <= after < STUCK_AFTER + 10.0, f"the run went on {after:.1f} s after the kill"
    assert driver_state(run) == "crashed"
    exp = layout.experiment_dir(run, "l96kill")
    assert not layout.stopped_marker(exp).exists()

    again = run_workflow(loaded, run, experiments=policy, interactive=False)
    assert again.ok, again
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "l96kill")))


@pytest.mark.timeout(240)
def test_a_warm_worker_killed_waiting_for_the_task_queue_harms_nothing(tmp_path):
    """SIGKILL to a worker that waits for its pool's task-queue lock (three workers: one analyses a cycle, one holds
    the lock, one waits for it), as the OOM killer may pick any worker. The lock lives on: Parsl replaces the worker,
    the run finishes with online mode's numbers bitwise, and the driver's log says what died and that tasks still
    start (it ended such runs with an error, and once in CI a worker that died outside a task for a cause never
    found ended a run that could have gone on)."""
    from mpi4py import MPI

    from twin.campaign.online import run_online

    three = KILLED.replace("workers: 2", "workers: 3")
    analyses = [f"analyse_c{k:04d}" for k in range(12, 17)]
    loaded, policy, run, result, _ = _run_with_kill(tmp_path, analyses, "waiter", retries=0, campaign=three)
    assert not isinstance(result, Exception) and result.ok, result
    log_text = (run / "twin.log").read_text()
    assert "of Parsl's worker pool died while not running a task of the campaign" in log_text
    assert "the pool goes on" in log_text
    exp = layout.experiment_dir(run, "l96kill")
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "l96kill")))


# -- launcher: auto, the default of local resources --------------------------------------------------------------------
def _command(task_err: Path) -> str:
    """The command line Parsl wrote at the top of a bash app's stderr ("" for a warm task, which has none)."""
    text = task_err.read_text(errors="replace")
    if "--> executable follows <--" not in text:
        return ""
    return text.split("--> executable follows <--", 1)[1].split("--> end executable <--", 1)[0]


def test_the_default_launcher_runs_one_rank_tasks_warm_and_mpi_tasks_under_mpiexec(tmp_path):
    """No ``launcher`` and no ``task_timeout``: every one-rank step (all of them with one-rank members; init, the
    analyses and finalize with two-rank members) runs in the two warm workers, and each two-rank member forecast is
    an ``mpiexec -n 2`` job of its own; the worker running such a job is recorded busy for it (then idle), under its
    own pid, as for a warm step. The log says which launcher the run used and why."""
    from twin.campaign.task import WorkerRegistry
    from workflows.campaign import run_workflow

    path = tmp_path / "auto.yaml"
    path.write_text(l96_campaign("l96auto", N=3, cycles=2,
                                 extra="resources: {type: local, ranks: 1, workers: 2, task: member}\n"))
    loaded = load_campaign(path)
    assert loaded.config.resources.launcher == "auto"
    policy = ExperimentsConfig(matrix={"ensemble.ranks_per_member": [1, 2]})
    run = tmp_path / "wf"
    result = run_workflow(loaded, run, experiments=policy, interactive=False)
    assert result.ok, result
    assert result.tasks_run == 2 * (1 + 2 * (3 + 1) + 1)
    log_text = (run / "twin.log").read_text()
    assert log_text.count("launcher: tasks of one rank run in warm Parsl workers, tasks of more ranks under mpiexec "
                          "(launcher: auto); set resources.launcher: mpiexec for a process per task") == 1
    workers = WorkerRegistry(run / "runinfo" / "workers").states()
    assert 1 <= len(workers) <= 2 and set(workers.values()) <= {WorkerRegistry.IDLE, WorkerRegistry.WARMING}
    one, two = sorted(result.states)
    assert [loaded.config.ensemble.ranks_per_member, one, two] == [1, "ranks-per-member-1", "ranks-per-member-2"]
    tasks = run / "runinfo" / "tasks"
    # one-rank members: every step in the warm workers, none a process of its own
    records = layout.read_task_log(layout.experiment_dir(run, one))
    assert len(records) == 1 + 2 * (3 + 1) + 1 and {r["pid"] for r in records} <= set(workers)
    assert all(_command(f) == "" for f in (tasks / one).glob("*.err"))
    # two-rank members: the forecasts are MPI jobs of their own, the other steps warm
    records = layout.read_task_log(layout.experiment_dir(run, two))
    forecasts = [r for r in records if r["task"] == "forecast"]
    assert len(forecasts) == 6 and {r["ranks"] for r in forecasts} == {2}
    assert len({r["pid"] for r in forecasts}) == 6 and not {r["pid"] for r in forecasts} & set(workers)
    assert {r["pid"] for r in records if r["task"] != "forecast"} <= set(workers)
    for f in (tasks / two).glob("*.err"):
        assert (" mpiexec -n 2 " in _command(f)) == f.name.startswith("forecast_"), f.name


#: a model class on PYTHONPATH whose member forecasts never return (a call stuck in C code, as a solver can be)
HANG = '''
import sys
import time

from twin.kinds.lorenz96.config import Lorenz96Config
from twin.kinds.lorenz96.model import Lorenz96


class HangConfig(Lorenz96Config):
    type: str


def _hang():
    if sys.argv[1:2] == ["forecast"]:  # a task process's member forecast: init's nature run goes on
        time.sleep(600)


class Hang(Lorenz96):
    config_class = HangConfig

    def advance(self, state, t0, t1):
        _hang()
        return super().advance(state, t0, t1)

    def advance_ensemble(self, *args, **kwargs):
        _hang()
        return super().advance_ensemble(*args, **kwargs)
'''


def _processes_of(exp: Path) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                words = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "twin.campaign.task" in words and str(exp) in words:
                out.append(int(entry))
    return out


@pytest.mark.timeout(240)
def test_the_default_launcher_with_a_task_timeout_runs_every_task_as_a_process_and_stops_a_hung_one(
        tmp_path, monkeypatch):
    """``experiments.task_timeout`` set and no ``launcher``: every task, one-rank ones included, is a process of its
    own under ``mpiexec -n 1`` (no warm workers), so the time limit stops member forecasts hung in a call that does
    not return: the experiment stops with the limit as its reason, the run ends soon after the limit, and the hung
    processes are gone with it."""
    from workflows.campaign import run_workflow

    (tmp_path / "mods" / "hangmodels").mkdir(parents=True)
    (tmp_path / "mods" / "hangmodels" / "__init__.py").write_text(HANG)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    paths = (str(tmp_path / "mods"), os.environ.get("PYTHONPATH"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    path = tmp_path / "hang.yaml"
    path.write_text(l96_campaign("l96hang", N=2, cycles=2, extra="resources: {type: local, ranks: 1, workers: 2}\n")
                    .replace("type: lorenz96", 'type: "hangmodels:Hang"'))
    loaded = load_campaign(path)
    policy = ExperimentsConfig(retries=0, task_timeout=15)
    run = tmp_path / "wf"
    t0 = time.monotonic()
    result = run_workflow(loaded, run, experiments=policy, interactive=False)
    took = time.monotonic() - t0
    assert not result.ok and result.states == {"l96hang": "failed"}
    assert took < 15 + 60, f"the run took {took:.0f} s with a 15 s time limit"
    assert "launcher: every task is a process of its own under mpiexec (launcher: auto with " \
           "experiments.task_timeout 15 s" in (run / "twin.log").read_text()
    assert not (run / "runinfo" / "workers").exists()  # no warm workers
    exp = layout.experiment_dir(run, "l96hang")
    reason = layout.read_json(layout.error_marker(exp))["reason"]
    assert reason.startswith("member(s) 0 (it ran longer than experiments.task_timeout (15 s) and was ended: raise "
                             "experiments.task_timeout)") and "not by a model's solver failure" in reason, reason
    tasks = run / "runinfo" / "tasks" / "l96hang"
    for name in ("init", "forecast_c0000_m0000", "forecast_c0000_m0001"):
        assert " mpiexec -n 1 " in _command(tasks / f"{name}.err"), name
    (init,) = [r for r in layout.read_task_log(exp) if r["task"] == "init"]
    assert init["outcome"] == "done" and init["pid"] != os.getpid()
    deadline = time.monotonic() + 30
    while _processes_of(exp) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(exp) == [], "hung task processes outlived the run"


#: a model whose member forecasts (not the nature run) take minutes in Python-level steps, where Parsl's time limit of
#: a warm worker's task can land
SLOW = '''
import inspect
import time

from twin.kinds.lorenz96.config import Lorenz96Config
from twin.kinds.lorenz96.model import Lorenz96


class SlowConfig(Lorenz96Config):
    type: str


class Slow(Lorenz96):
    config_class = SlowConfig

    def advance(self, state, t0, t1):
        if any(f.function == "forecast_member" for f in inspect.stack()):
            for _ in range(60000):
                time.sleep(0.01)
        return super().advance(state, t0, t1)

    def advance_ensemble(self, *args, **kwargs):
        return None
'''


@pytest.mark.timeout(240)
def test_a_warm_task_past_its_time_limit_is_said_as_the_task_timeout(tmp_path, monkeypatch):
    """Found by a probe: with ``launcher: worker`` a member forecast ended by ``experiments.task_timeout`` was reported
    as 'AppTimeout: ' and nothing more (the worker turned Parsl's time limit into a task failure of its own); now as
    with a task process: the limit, and what to change."""
    from workflows.campaign import run_workflow

    (tmp_path / "mods" / "slowmodels").mkdir(parents=True)
    (tmp_path / "mods" / "slowmodels" / "__init__.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    paths = (str(tmp_path / "mods"), os.environ.get("PYTHONPATH"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    path = tmp_path / "slow.yaml"
    path.write_text(l96_campaign("l96slow", N=2, cycles=2, extra="resources: {type: local, ranks: 1, workers: 2, "
                                                                   "launcher: worker}\n")
                    .replace("type: lorenz96", 'type: "slowmodels:Slow"'))
    result = run_workflow(load_campaign(path), tmp_path / "wf", experiments=ExperimentsConfig(retries=0, task_timeout=4),
                          interactive=False)
    assert not result.ok and result.states == {"l96slow": "failed"}
    reason = layout.read_json(layout.error_marker(layout.experiment_dir(tmp_path / "wf", "l96slow")))["reason"]
    assert "(it ran longer than experiments.task_timeout (4 s) and was ended: raise experiments.task_timeout)" in \
        reason and "AppTimeout" not in reason, reason
