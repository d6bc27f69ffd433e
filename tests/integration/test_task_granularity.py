"""What one workflow task runs (``resources.task``, workflows/granularity.py, issue 23): ``auto`` runs an experiment's
first cycle as member tasks and, when its members are cheaper one after the other than as tasks of their own, the
rest as one task, with online mode's numbers bit for bit; members that cost more than a task keep their tasks;
``experiment`` runs one task per experiment (in a warm worker, or a process under ``mpiexec``) whose failure policy,
dropped members and stops end as they do in member tasks and online."""

from __future__ import annotations

import pytest
from campaign_case import arrays, assert_same, l96_campaign

from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(400)

#: online runs of these campaigns checkpoint every cycle as the workflow does, so every checkpoint is compared
OUTPUTS = "outputs: {checkpoint_every: 1}\n"
#: the divergence of tests/integration/test_campaign_failures.py: member 2 of the wide prior draws F = 244
WIDE_PRIOR = "{value: 8.0, prior: {dist: lognormal, median: 8.0, sigma: 1.2}, estimable: true}"
MATRIX = {"models.l96.forcing.prior.sigma": [1.2, 0.05]}
WIDE, NARROW = "sigma-1.2", "sigma-0.05"


def _campaign(tmp_path, task: str, launcher: str = "worker", **kw):
    text = l96_campaign("l96task", extra=f"resources: {{type: local, ranks: 1, workers: 2, launcher: {launcher}, "
                                         f"task: {task}}}\n" + OUTPUTS, **kw)
    path = tmp_path / f"{task}-{launcher}.yaml"
    path.write_text(text)
    return load_campaign(path)


def _online(loaded, run_dir, policy=None):
    from mpi4py import MPI

    from twin.campaign.online import run_online

    run_online(loaded, MPI.COMM_SELF, run_dir, experiments=policy)


def _tasks(run_dir, name):
    return sorted(p.name for p in (run_dir / "runinfo" / "tasks" / name).glob("*.err"))


def test_auto_runs_the_rest_of_an_experiment_of_tiny_members_as_one_task_with_online_numbers(tmp_path):
    from workflows.campaign import run_workflow

    loaded = _campaign(tmp_path, "auto", N=5, cycles=4)
    result = run_workflow(loaded, tmp_path / "wf", interactive=False)
    assert result.ok, result
    exp = layout.experiment_dir(tmp_path / "wf", "l96task")
    # cycle 0 as member tasks (init, 5 forecasts, the analysis), then one task for cycles 1-3 and the outputs
    assert _tasks(tmp_path / "wf", "l96task") == sorted(
        ["init.err", "analyse_c0000.err", "experiment.err"] + [f"forecast_c0000_m{m:04d}.err" for m in range(5)])
    assert result.tasks_run == 8
    assert layout.member_files(exp, 0)[0] == list(range(5)) and layout.member_files(exp, 1) == ([], {})
    said = (tmp_path / "wf" / "twin.log").read_text()
    assert "remaining cycles and its outputs run as one task" in said and "in cycle 0 (median of 5)" in said
    _online(loaded, tmp_path / "online")
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "l96task")))


def test_auto_keeps_member_tasks_for_members_that_cost_more_than_a_task(tmp_path, monkeypatch):
    import workflows.granularity as granularity
    from workflows.campaign import run_workflow

    # a task that costs nothing to orchestrate: two workers halve a cycle, so member tasks stay the cheaper way
    monkeypatch.setattr(granularity, "TASK_SECONDS", 0.0)
    loaded = _campaign(tmp_path, "auto", N=4, cycles=3)
    result = run_workflow(loaded, tmp_path / "wf", interactive=False)
    assert result.ok, result
    exp = layout.experiment_dir(tmp_path / "wf", "l96task")
    assert all(layout.member_files(exp, k)[0] == list(range(4)) for k in range(3))
    assert "experiment.err" not in _tasks(tmp_path / "wf", "l96task") and result.tasks_run == 1 + 3 * 5 + 1
    assert "run as one task" not in (tmp_path / "wf" / "twin.log").read_text()


def test_the_choice_weighs_a_cycle_one_after_the_other_against_tasks(tmp_path):
    from types import SimpleNamespace

    from workflows.granularity import whole_experiment

    exp = tmp_path / "exp"
    exp.mkdir()
    for m, seconds in enumerate([0.010, 0.012, 0.011, 0.5]):  # a slow member does not move the median
        layout.log_task(exp, {"task": "forecast", "outcome": "done", "seconds": seconds, "cycle": 0, "member": m})
    layout.log_task(exp, {"task": "forecast", "outcome": "done", "seconds": 9.0, "cycle": 1, "member": 0})
    local = SimpleNamespace(task="auto", workers=2)
    policy = SimpleNamespace(task_timeout=None)
    # 4 x 0.0115 s = 0.046 s alone, against 2 x (0.0115 + 0.05) + 0.05 = 0.173 s as warm tasks
    assert "took 12 ms each in cycle 0 (median of 4)" in whole_experiment(local, policy, 1, True, exp, 0, 4)
    # members of 9 s (cycle 1): 36 s alone against 18.1 s on two workers
    assert whole_experiment(local, policy, 1, True, exp, 1, 4) == ""
    # 64 workers on Slurm blocks: 4 members of 0.5 s each take 2 s alone, 0.6 s as tasks of their own
    layout.log_task(exp, {"task": "forecast", "outcome": "done", "seconds": 0.5, "cycle": 2, "member": 0})
    assert whole_experiment(SimpleNamespace(task="auto", workers=16, max_blocks=4), policy, 1, True, exp, 2, 4) == ""
    # ... but as processes of their own (1 s each to start), one after the other
    assert whole_experiment(local, policy, 1, False, exp, 2, 4) != ""
    # never for members of several ranks, a time limit per task, or a task the campaign chose
    assert whole_experiment(local, policy, 2, True, exp, 0, 4) == ""
    assert whole_experiment(local, SimpleNamespace(task_timeout=60.0), 1, True, exp, 0, 4) == ""
    assert whole_experiment(SimpleNamespace(task="member", workers=2), policy, 1, True, exp, 0, 4) == ""
    assert whole_experiment(local, policy, 1, True, exp, 5, 4) == ""  # nothing measured


def test_experiment_tasks_drop_a_diverging_member_as_member_tasks_and_online_do(tmp_path):
    from workflows.campaign import run_workflow

    loaded = _campaign(tmp_path, "experiment", seed=8675, forcing=WIDE_PRIOR, N=5, inflation=None, every=8,
                       cycles=2)
    policy = ExperimentsConfig(matrix=MATRIX, retries=1, on_member_failure="drop")
    result = run_workflow(loaded, tmp_path / "wf", experiments=policy, interactive=False)
    assert result.ok, result
    assert result.tasks_run == 2  # one per experiment
    assert list(result.dropped) == [WIDE] and list(result.dropped[WIDE]) == [2]
    assert "non-finite" in result.dropped[WIDE][2]
    for name in (WIDE, NARROW):
        assert _tasks(tmp_path / "wf", name) == ["experiment.err"]
    _online(loaded, tmp_path / "online", policy)
    for name in (WIDE, NARROW):
        assert_same(arrays(layout.experiment_dir(tmp_path / "wf", name)),
                    arrays(layout.experiment_dir(tmp_path / "online", name)))


def test_an_experiment_task_stopped_by_its_policy_is_said_and_skipped_on_rerun(tmp_path):
    from workflows.campaign import run_workflow

    loaded = _campaign(tmp_path, "experiment", seed=8675, forcing=WIDE_PRIOR, N=5, inflation=None, every=8,
                       cycles=2)
    policy = ExperimentsConfig(matrix=MATRIX, retries=0, on_member_failure="stop")
    result = run_workflow(loaded, tmp_path / "wf", experiments=policy, interactive=False)
    assert not result.ok and result.states == {WIDE: "stopped", NARROW: "done"}, result
    stopped = layout.read_json(layout.stopped_marker(layout.experiment_dir(tmp_path / "wf", WIDE)))
    assert stopped["cycle"] == 0 and "member(s) 2" in stopped["reason"] and "policy: stop" in stopped["reason"]
    said = (tmp_path / "wf" / "twin.log").read_text()
    assert f"experiment {WIDE} stopped: member(s) 2" in said
    again = run_workflow(loaded, tmp_path / "wf", experiments=policy, interactive=False)
    assert again.tasks_run == 0 and again.states == result.states


def test_experiment_tasks_as_processes_under_mpiexec_give_the_online_numbers(tmp_path):
    from workflows.campaign import run_workflow

    loaded = _campaign(tmp_path, "experiment", launcher="mpiexec", N=4, cycles=2)
    result = run_workflow(loaded, tmp_path / "wf", interactive=False)
    assert result.ok and result.tasks_run == 1, result
    assert sorted(p.name for p in (tmp_path / "wf" / "runinfo" / "tasks" / "l96task").iterdir()) == [
        "experiment.err", "experiment.out"]
    _online(loaded, tmp_path / "online")
    assert_same(arrays(layout.experiment_dir(tmp_path / "wf", "l96task")),
                arrays(layout.experiment_dir(tmp_path / "online", "l96task")))


def test_experiment_tasks_need_ranks_that_split_into_members(tmp_path):
    from twin.core.errors import WorkflowError
    from workflows.campaign import run_workflow

    text = l96_campaign("l96task", extra="ensemble: {ranks_per_member: 2}\n"
                                         "resources: {type: local, ranks: 3, workers: 1, task: experiment}\n")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(WorkflowError, match=r"resources.ranks \(3\) ranks, in groups of ensemble.ranks_per_member "
                                            r"\(2\): make resources.ranks a multiple of 2"):
        run_workflow(load_campaign(tmp_path / "c.yaml"), tmp_path / "wf", interactive=False)


def test_the_progress_display_says_the_cycle_of_an_experiment_running_as_one_task(tmp_path, caplog):
    from types import SimpleNamespace

    from twin.core.progress import Progress
    from workflows.campaign import CampaignWorkflow, _Experiment

    exp = tmp_path / "exp"
    (exp / "checkpoint").mkdir(parents=True)
    for k in (0, 3, 4):  # the newest checkpoint says how far its task is
        layout.checkpoint_file(exp, k).write_bytes(b"")
    running = _Experiment("exp", exp, 40, 4, 1, stage="experiment", pending={"future": ("experiment", None, None)})
    waiting = _Experiment("other", tmp_path / "other", 40, 4, 1, stage="forecast")
    bar = Progress("campaign tasks", 3, interactive=False, log_every=0.0)
    with caplog.at_level("INFO", logger="twin"):
        CampaignWorkflow._say_experiments(SimpleNamespace(exps=[running, waiting]), bar)
    assert "campaign tasks: 0/3 exp cycle 4/40" in caplog.text and "other" not in caplog.text
