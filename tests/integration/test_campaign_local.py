"""A local campaign end to end on the real Parsl HighThroughputExecutor: 2 experiments x 2 cycles x 4 members, each
member forecast a 2-rank MPI job; the same analysis as online mode, bitwise."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from campaign_case import EXPERIMENTS, MATRIX, arrays, assert_same, write_campaign
from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(400)


def test_workflow_process_imports_no_mpi_or_petsc():
    code = ("import sys, workflows.campaign, workflows.executors, workflows.jobscripts, twin.cli_campaign, "
            "twin.campaign.status, twin.campaign.experiments; "
            "bad = [m for m in ('mpi4py', 'petsc4py', 'h5py') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_local_campaign_with_mpi_members(tmp_path):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.campaign.status import status
    from twin.io.netcdf import verify_netcdf
    from workflows.campaign import run_workflow

    loaded = load_campaign(write_campaign(tmp_path / "c.yaml", cycles=2))
    policy = ExperimentsConfig(matrix=MATRIX)
    result = run_workflow(loaded, tmp_path / "wf", experiments=policy, interactive=False)
    assert result.ok, result
    assert result.tasks_run == 2 * (1 + 2 * (4 + 1) + 1) and result.tasks_failed == 0
    for name in EXPERIMENTS:
        d = layout.experiment_dir(tmp_path / "wf", name)
        assert layout.checkpoint_cycles(d) == [0, 1, 2]
        for out in layout.OUTPUTS:
            assert verify_netcdf(d / out) == (True, "ok")
        forecasts = [r for r in layout.read_task_log(d) if r["task"] == "forecast" and r["outcome"] == "done"]
        assert sorted((r["cycle"], r["member"]) for r in forecasts) == [(k, m) for k in range(2) for m in range(4)]
        assert {r["ranks"] for r in forecasts} == {2}  # every member ran as a 2-rank MPI job
        assert len({r["pid"] for r in forecasts}) == 8  # in processes of its own, not in the driver
    st = status(tmp_path / "wf")
    assert st.complete and [e.state for e in st.experiments] == ["done", "done"]
    assert (tmp_path / "wf" / "twin.log").stat().st_size > 0
    assert (tmp_path / "wf" / "runinfo").is_dir()

    # the same campaign online in this process: the same numbers, bit for bit
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=policy)
    for name in EXPERIMENTS:
        a = arrays(layout.experiment_dir(tmp_path / "wf", name))
        b = arrays(layout.experiment_dir(tmp_path / "online", name))
        assert_same(a, b)
    # inflation is a real setting: the two experiments differ
    a0 = arrays(layout.experiment_dir(tmp_path / "wf", EXPERIMENTS[0]))
    a1 = arrays(layout.experiment_dir(tmp_path / "wf", EXPERIMENTS[1]))
    assert not np.array_equal(a0["cycle2:state"], a1["cycle2:state"])
    assert np.all(np.isfinite(a0["diagnostics.nc:rmse"]))
