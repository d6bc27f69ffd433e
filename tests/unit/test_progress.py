"""The nested progress display (twin.core.progress): what it counts (campaign -> experiment k/n -> cycle k/n ->
members k/n), its ETA, the plain lines of a batch job, and the rich display on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from twin.core.progress import CampaignProgress, Counts, campaign_progress, progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_counts_and_eta():
    clock = Clock()
    c = Counts("camp", 2, clock)
    c.start_experiment(0, "a")
    c.start_cycles("cycles", 4)
    assert c.snapshot() == {"experiment": (1, 2), "cycle": (0, 4), "members": (0, 0)}
    assert c.cycle.eta(clock()) is None  # no pace before the first cycle
    c.start_members(3)
    c.member_done()
    assert c.snapshot()["members"] == (1, 3)
    clock.t += 10.0
    c.advance_cycle()
    assert c.snapshot() == {"experiment": (1, 2), "cycle": (1, 4), "members": (0, 0)}
    assert c.cycle.eta(clock()) == pytest.approx(30.0)  # 10 s a cycle, three to go
    assert c.line() == "campaign camp: experiment 1/2 (a): cycles 1/4, 10 s, ETA 30 s"
    c.advance_cycle(5)  # never beyond the total
    assert c.snapshot()["cycle"] == (4, 4)
    c.finish_experiment()
    c.start_experiment(1, "b")
    assert c.snapshot() == {"experiment": (2, 2), "cycle": (0, 0), "members": (0, 0)}
    assert c.campaign.done == 1


def test_progress_nests_under_the_campaign_and_logs_one_line_per_cycle_at_most(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="twin.progress")
    twin_log = logging.getLogger("twin")
    # an earlier in-process 'twin run' of the session may have left its handlers on the twin logger
    saved, twin_log.handlers = twin_log.handlers[:], []
    twin_log.propagate = True
    try:
        with campaign_progress("camp", 1, interactive=False, log_every=0.0, clock=clock) as shown:
            shown.experiment(0, "exp")
            with progress("exp: ES-MDA iterations", 3) as bar:
                assert shown.counts.snapshot()["cycle"] == (0, 3) and shown.counts.cycle.label == "ES-MDA iterations"
                for _ in range(3):
                    clock.t += 2.0
                    bar.advance()
    finally:
        twin_log.propagate = False
        twin_log.handlers = saved
    lines = [r.getMessage() for r in caplog.records if r.name == "twin.progress"]
    assert lines == [f"campaign camp: experiment 1/1 (exp): ES-MDA iterations {k}/3, {2 * k} s, ETA {6 - 2 * k} s"
                     for k in (1, 2, 3)]


def test_rich_display_writes_log_lines_through_its_console_and_restores_the_handler(capsys):
    handler = logging.StreamHandler(sys.stderr)
    twin_log = logging.getLogger("twin")
    # an earlier in-process 'twin run' of the session may have left its handlers (streams closed since) behind
    saved, twin_log.handlers = twin_log.handlers[:], []
    twin_log.addHandler(handler)
    try:
        with campaign_progress("camp", 2, interactive=True) as shown:
            assert shown._display is not None and handler.stream is not sys.stderr
            shown.experiment(0, "a")
            shown.cycles("cycles", 2)
            shown.members(2)
            shown.member_done()
            shown.advance()
            assert shown.counts.snapshot() == {"experiment": (1, 2), "cycle": (1, 2), "members": (0, 0)}
        assert handler.stream is sys.stderr
    finally:
        twin_log.handlers = saved
    assert "campaign camp: experiment 1/2 a" in capsys.readouterr().out


def test_other_ranks_show_nothing():
    p = CampaignProgress("camp", 1, rank=1, interactive=True)
    assert p._display is None
    p.close()


def test_counts_of_a_small_campaign(tmp_path, monkeypatch):
    """Two experiments of three cycles of four members, on one rank: the display sees experiment 1/2 then 2/2,
    cycles 0..3 of 3 in each, and every cycle's four members done before the cycle counts."""
    from mpi4py import MPI

    from campaign_case import l96_campaign
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    seen = []
    monkeypatch.setattr(CampaignProgress, "_show", lambda self: seen.append(self.counts.snapshot()))
    text = l96_campaign("progress", extra="experiments: {matrix: {assimilation.inflation.multiplicative: "
                                          "[1.0, 1.05]}}\n")
    (tmp_path / "c.yaml").write_text(text)
    run_online(load_campaign(tmp_path / "c.yaml"), MPI.COMM_WORLD, tmp_path / "run", quiet=True)
    for h in list(logging.getLogger("twin").handlers):
        logging.getLogger("twin").removeHandler(h)
        h.close()
    experiments = [s["experiment"] for s in seen]
    assert experiments[0] == (1, 2) and experiments[-1] == (2, 2) and set(experiments) == {(1, 2), (2, 2)}
    for k in (1, 2):
        mine = [s for s in seen if s["experiment"] == (k, 2)]
        cycles = [s["cycle"] for s in mine if s["cycle"][1]]
        assert cycles[0] == (0, 3) and cycles[-1] == (3, 3)
        assert sorted({c for c, _ in cycles}) == [0, 1, 2, 3]
        members = [s["members"] for s in mine if s["members"][1]]
        assert members.count((4, 4)) == 3 and max(m for m, _ in members) == 4  # three cycles of four members
    # the driver's heartbeat carries where it was last (twin status reads it while the driver runs)
    beat = json.loads((tmp_path / "run" / "driver.json").read_text())
    assert beat["state"] == "finished"
    assert {k: beat["progress"][k] for k in ("steps", "done", "total")} == {"steps": "cycles", "done": 3, "total": 3}
    assert beat["progress"]["experiment"] == sorted(p.name for p in (tmp_path / "run" / "experiments").iterdir())[-1]


def _mpiexec_twin_run(tmp_path: Path, under_terminal: bool) -> str:
    """``mpiexec -n 2 twin run`` of a small campaign, its output to a file, or to a pseudo-terminal (``script``)."""
    import os
    import shutil
    import subprocess

    from campaign_case import l96_campaign

    (tmp_path / "c.yaml").write_text(l96_campaign("tty", cycles=3, extra="resources: {type: local, ranks: 2}\n"))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    command = f"mpiexec -n 2 {sys.executable} -m twin.cli run c.yaml -o out"
    if under_terminal:
        if shutil.which("script") is None:
            pytest.skip("util-linux 'script' (a pseudo-terminal) is not installed")
        out = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=tmp_path, env=env, capture_output=True,
                             timeout=240)
        assert out.returncode == 0, out.stdout.decode(errors="replace")[-2000:]
        return out.stdout.decode(errors="replace")
    with open(tmp_path / "run.log", "wb") as log:
        done = subprocess.run(command.split(), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=240)
    text = (tmp_path / "run.log").read_text(errors="replace")
    assert done.returncode == 0, text[-2000:]
    return text


def test_mpiexec_output_to_a_file_has_no_display_codes(tmp_path):
    """Open MPI gives each rank a pseudo-terminal as standard output even when mpiexec writes to a file: the display's
    escape codes filled the log (475 lines of them in a demo's). A file gets plain lines; a terminal the display."""
    for sub in ("file", "tty"):
        (tmp_path / sub).mkdir()
    text = _mpiexec_twin_run(tmp_path / "file", under_terminal=False)
    assert "\x1b[" not in text and "done: outputs in" in text, text[-2000:]
    shown = _mpiexec_twin_run(tmp_path / "tty", under_terminal=True)
    assert "\x1b[" in shown and "campaign tty" in shown, shown[-2000:]
