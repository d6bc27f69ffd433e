"""SIGKILL the workflow driver in the middle of a campaign and run it again: it resumes from the files, recomputes
nothing that had finished, and leaves exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from campaign_case import arrays, assert_same, write_campaign
from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(400)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the driver's session (driver, Parsl interchange and workers, running MPI tasks):
    what a batch system does to a job that hits its time limit."""
    for _ in range(50):
        pids = _session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)


def _driver(campaign, run_dir):
    return subprocess.Popen([sys.executable, "-m", "workflows", "run", str(campaign), "-o", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_campaign_resumes_without_recomputing(tmp_path):
    from mpi4py import MPI

    from twin.campaign.online import run_online

    campaign = write_campaign(tmp_path / "c.yaml")
    # members on one rank here (test_campaign_local covers 2-rank members): half the processes, same logic
    campaign.write_text(campaign.read_text().replace("ranks_per_member: 2", "ranks_per_member: 1")
                        .replace("workers: 2}", "workers: 2, task: member}"))
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "l96camp")
    proc = _driver(campaign, run)
    deadline = time.time() + 300
    try:
        # kill in the middle of cycle 1: its analysis input (checkpoint 1) exists and some member forecasts too
        while time.time() < deadline:
            if 1 in layout.checkpoint_cycles(exp) and layout.member_files(exp, 1)[0]:
                break
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the campaign did not reach cycle 1 in time")
    finally:
        _kill_session(proc.pid)
        proc.wait()
    assert 3 not in layout.checkpoint_cycles(exp), "killed too late: the campaign had finished"
    finished = {p: p.stat().st_mtime_ns for p in list((exp / "checkpoint").glob("cycle_*.h5"))
                + list((exp / "forecast").rglob("member_*.h5")) + [layout.observations_file(exp)]}
    done_before = {(r["task"], r.get("cycle"), r.get("member")) for r in layout.read_task_log(exp)
                   if r["outcome"] == "done"}
    n_records = len(layout.read_task_log(exp))

    proc = _driver(campaign, run)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    # nothing that had finished was written again or even run again
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    after = [r for r in layout.read_task_log(exp)[n_records:]]
    redone = [r for r in after if (r["task"], r.get("cycle"), r.get("member")) in done_before]
    assert not redone, redone
    assert any(r["task"] == "analyse" and r["cycle"] == 2 for r in after)
    assert layout.checkpoint_cycles(exp) == [0, 1, 2, 3]

    # the outputs equal those of an uninterrupted run (online mode gives the workflow's numbers bit for bit)
    loaded = load_campaign(campaign)
    run_online(loaded, MPI.COMM_SELF, tmp_path / "reference", experiments=ExperimentsConfig())
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "reference", "l96camp")))
