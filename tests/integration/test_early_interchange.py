"""The interchange of a local workflow is started before the driver imports Parsl and taken by Parsl's executor
(issue 23, goal 2; the time it saves is in benchmarks/bench_workflow.py); one that Parsl does not take ends quietly
and leaves no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_case import l96_campaign

from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(300)

WARM = "resources: {type: local, ranks: 1, workers: 1, launcher: worker}\n"


def _interchanges_left() -> list[int]:
    """This process's children that run the interchange command and have not ended (zombies count as ended)."""
    out = []
    for task in os.scandir(f"/proc/{os.getpid()}/task"):
        for pid in Path(task.path, "children").read_text().split():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"workflows.interchange" in cmd and state not in ("Z", "X"):
                out.append(int(pid))
    return out


def test_a_local_run_uses_the_interchange_started_before_parsl(tmp_path):
    from workflows.campaign import run_workflow

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("early", N=3, cycles=2, extra=WARM))
    result = run_workflow(load_campaign(path), tmp_path / "wf", verbose=True, interactive=False)
    assert result.ok, result
    said = re.findall(r"Parsl's interchange is the one started early \(process (\d+)\)",
                      (tmp_path / "wf" / "twin.log").read_text())
    assert len(said) == 1
    # the interchange that ran the run (its own log, one start) is that process
    log = (tmp_path / "wf" / "runinfo" / "000" / "twin_local" / "interchange.log").read_text()
    assert set(re.findall(r"MainProcess-(\d+)", log)) == {said[0]}
    assert log.count("Starting main interchange method") == 1
    assert _interchanges_left() == []


def test_an_early_interchange_is_taken_once_and_only_for_its_own_command():
    import subprocess as sp

    from workflows.early_interchange import EarlyInterchange
    from workflows.executors import interchange_command

    early = EarlyInterchange()
    try:
        assert early.claim(["python", "-m", "other"], stdin=sp.PIPE) is None
        assert early.claim(interchange_command(), stdin=sp.PIPE, cwd="/") is None
        assert early.claim(interchange_command(), stdin=sp.PIPE) is early.proc
        assert early.claim(interchange_command(), stdin=sp.PIPE) is None
    finally:
        early.claimed = False
        early.discard()
    assert early.proc.returncode == 0


def test_an_interchange_given_no_configuration_ends_quietly():
    out = subprocess.run([sys.executable, "-m", "workflows.interchange"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_a_run_that_ends_before_parsl_starts_leaves_no_interchange(tmp_path):
    from twin.core.errors import TwinError
    from workflows.campaign import run_workflow

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(l96_campaign("first", N=3, cycles=1, extra=WARM))
    second.write_text(l96_campaign("second", N=3, cycles=1, extra=WARM))
    run = tmp_path / "wf"
    assert run_workflow(load_campaign(first), run, interactive=False).ok
    with pytest.raises(TwinError, match="first"):  # another campaign's run directory: refused before Parsl
        run_workflow(load_campaign(second), run, interactive=False)
    assert _interchanges_left() == []
