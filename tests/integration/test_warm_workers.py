"""Workflow mode with warm workers (``launcher: worker``, one-rank tasks run inside the Parsl workers, issue 23): the
same analysis as online mode bit for bit, the model's failures retried then dropped by member, every step in the
workers. (A worker SIGKILLed under its task is not tested: with this Parsl the run then hangs until
experiments.task_timeout instead of failing the task as a lost worker; issue 23, and the reason the launcher is
opt-in.)"""

from __future__ import annotations

import os

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
