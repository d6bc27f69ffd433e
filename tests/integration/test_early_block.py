"""The first worker pool of a local workflow is started before Parsl asks for it and given to Parsl's provider
(issue 23, goal 2; the time it saves is in benchmarks/bench_workflow.py); one that Parsl does not take ends quietly
and leaves no process behind."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from campaign_case import l96_campaign

from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(300)

WARM = "resources: {type: local, ranks: 1, workers: 1, launcher: worker}\n"


def _early_pools() -> list[int]:
    """Processes of this machine that run a worker pool waiting for its arguments and have not ended."""
    from workflows.pool import ARGS_ON_STDIN

    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"workflows.pool" in cmd and ARGS_ON_STDIN.encode() in cmd and state not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _exit_status(script: Path, timeout: float = 30.0) -> str:
    """What a block's ``<script>.ec`` holds once the block has ended (``-`` while it runs)."""
    ec = Path(f"{script}.ec")
    deadline = time.monotonic() + timeout
    while ec.read_text().strip() == "-" and time.monotonic() < deadline:
        time.sleep(0.02)
    return ec.read_text().strip()


def test_a_local_run_uses_the_pool_started_before_parsl(tmp_path):
    from workflows.campaign import run_workflow

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("early", N=3, cycles=2, extra=WARM))
    run = tmp_path / "wf"
    result = run_workflow(load_campaign(path), run, verbose=True, interactive=False)
    assert result.ok, result
    said = re.findall(r"Parsl's first block is the worker pool started early \(process (\d+)\)",
                      (run / "twin.log").read_text())
    assert len(said) == 1
    # Parsl asked its provider for one block and started no script of its own: the run's only pool is the early one
    parsl_log = (run / "runinfo" / "000" / "parsl.log").read_text()
    assert parsl_log.count("Submitting to provider with job_name parsl.twin_local.block-0") == 1
    assert not list((run / "runinfo" / "000").glob("submit_scripts/*.sh"))
    managers = list((run / "runinfo" / "twin_local").glob("block-0/*/manager.log"))
    assert len(managers) == 1
    assert list((run / "runinfo" / "early_block").glob("*.sh"))
    assert _early_pools() == []


def test_an_early_block_is_taken_once_and_only_for_its_own_command(tmp_path):
    from workflows.early_block import EarlyBlock
    from workflows.executors import pool_command

    block = EarlyBlock(tmp_path, "parsl.test.block-0.early")
    try:
        assert block.claim("python -m other --port=1") is None
        job = block.claim(f"{pool_command()} --help")  # the words after the pool command reach the pool
        assert job == {"job_id": str(block.pid), "remote_pid": block.pid, "script_path": str(block.script)}
        assert block.claim(f"{pool_command()} --help") is None
    finally:
        block.discard()
    assert _exit_status(block.script) == "0"
    assert "--block_id" in Path(f"{block.script}.out").read_text()  # Parsl's pool printed its usage


def test_a_discarded_block_ends_quietly(tmp_path):
    from twin.campaign.heartbeat import process_alive
    from workflows.early_block import EarlyBlock

    block = EarlyBlock(tmp_path, "parsl.test.block-0.early")
    block.discard()
    assert not process_alive(block.pid)
    assert _exit_status(block.script) == "0"
    assert Path(f"{block.script}.err").read_text() == ""


def test_a_block_that_does_not_end_is_killed_with_its_group(tmp_path, monkeypatch):
    import workflows.early_block as eb
    from twin.campaign.heartbeat import process_alive

    monkeypatch.setattr(eb, "DISCARD_WAIT", 0.0)  # no time to read the closed pipe: the group is killed
    block = eb.EarlyBlock(tmp_path, "parsl.test.block-0.early")
    assert os.getpgid(block.pid) != os.getpgrp()
    block.discard()
    deadline = time.monotonic() + 10
    while (process_alive(block.pid) or _early_pools()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(block.pid)
    assert _early_pools() == []
    assert Path(f"{block.script}.ec").read_text().strip() == "-"  # killed: no exit status was written


def test_a_run_that_ends_before_parsl_starts_leaves_no_pool(tmp_path, monkeypatch):
    import workflows.campaign as wc
    from twin.core.errors import ConfigError

    def refused(*args, **kwargs):
        raise ConfigError("refused after the run directory was taken")

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("refused", N=3, cycles=1, extra=WARM))
    monkeypatch.setattr(wc, "prepare_experiments", refused)
    with pytest.raises(ConfigError, match="refused"):
        wc.run_workflow(load_campaign(path), tmp_path / "wf", interactive=False)
    script = next((tmp_path / "wf" / "runinfo" / "early_block").glob("*.sh"))
    assert _exit_status(script) == "0"
    assert _early_pools() == []
