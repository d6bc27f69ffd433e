"""A run directory belongs to one campaign and is worked on by one command at a time (``twin.campaign.rundir``).

Found by trying: a second campaign run into the same directory replaced the first one's ``forecast.nc`` (or, for an
assimilation campaign, its ``matrix.json``, so that ``twin status`` and ``twin report`` showed both as one), two
``twin run`` of one campaign at once computed the same experiment side by side, and ``-o .`` wrote the outputs
among the user's own files; every command exited 0.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

TWIN = [sys.executable, "-m", "twin.cli"]

FORECAST = """\
schema_version: 1
campaign: {{name: {name}, seed: 1}}
models:
  heat:
    type: heat
    grid: {{shape: [{n}, {n}], extent: [[0.0, 1.0], [0.0, 1.0]], units: m}}
    parameters: {{kappa: {{value: 1.0e-3, units: m^2/s}}}}
    initial_condition: {{kind: gaussian, amplitude: 1.0, center: [0.3, 0.6], width: 0.08, background: 0.0}}
    time: {{dt: 1.0, units: s}}
    solver: {{ts_type: beuler, ksp_type: cg, pc_type: jacobi}}
timeline: {{start: 0.0, end: 4.0, units: s, output_every: 2.0}}
resources: {{type: local, ranks: 1}}
"""


def _twin(*args, cwd: Path):
    return subprocess.run(TWIN + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=240)


def _error_lines(run) -> list[str]:
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return [line for line in run.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def first(tmp_path):
    """A finished forecast run of campaign 'plate' in tmp_path/out."""
    (tmp_path / "plate.yaml").write_text(FORECAST.format(name="plate", n=8))
    run = _twin("run", "plate.yaml", "-o", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return tmp_path / "out"


def test_another_campaign_is_refused_and_the_first_ones_outputs_stay(tmp_path, first):
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.suffix == ".nc"}
    assert set(before) >= {"forecast.nc", "qoi.nc"}
    (tmp_path / "other.yaml").write_text(FORECAST.format(name="other", n=6))
    run = _twin("run", "other.yaml", "-o", "out", cwd=tmp_path)
    assert run.returncode == 2
    (line,) = _error_lines(run)
    assert "holds campaign 'plate'" in line and "not 'other'" in line and "choose another run directory" in line
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.suffix == ".nc"} == before
    # the same campaign again is a resume (here: the forecast written again)
    assert _twin("run", "plate.yaml", "-o", "out", cwd=tmp_path).returncode == 0


def test_a_directory_of_other_files_is_refused(tmp_path):
    (tmp_path / "plate.yaml").write_text(FORECAST.format(name="plate", n=8))
    (tmp_path / "notes.txt").write_text("mine\n")
    run = _twin("run", "plate.yaml", "-o", ".", cwd=tmp_path)
    assert run.returncode == 2
    (line,) = _error_lines(run)
    assert "holds other files and no twin run" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plate.yaml"]


def test_a_run_directory_of_an_older_version_is_taken_over(tmp_path, first):
    (first / "campaign.yaml").unlink()  # forecast runs did not keep it
    assert _twin("run", "plate.yaml", "-o", "out", cwd=tmp_path).returncode == 0
    assert "name: plate" in (first / "campaign.yaml").read_text()


def test_a_second_command_on_a_busy_run_directory_waits_for_another_time(tmp_path, first):
    fd = os.open(first, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running twin run or twin assimilate holds
        stamp = (first / "forecast.nc").stat().st_mtime_ns
        run = _twin("run", "plate.yaml", "-o", "out", cwd=tmp_path)
        assert run.returncode == 3
        (line,) = _error_lines(run)
        assert "another twin command (run or assimilate) is working on it" in line
        assert (first / "forecast.nc").stat().st_mtime_ns == stamp
    finally:
        os.close(fd)
    assert _twin("run", "plate.yaml", "-o", "out", cwd=tmp_path).returncode == 0


def test_a_report_that_cannot_be_written_is_one_line(tmp_path, first):
    (first / "report").write_text("not a folder\n")  # as root, permissions would not stop the writes: a file does
    run = _twin("report", "out", cwd=tmp_path)
    assert run.returncode == 2
    (line,) = _error_lines(run)
    assert line.startswith("error: the report cannot be written (") and "out/report" in line


def test_status_of_a_path_that_is_no_run_directory_says_what_it_is(tmp_path, first):
    for path, words in ((tmp_path / "nope", "does not exist: give the run directory of a campaign"),
                        (first, "is not a campaign run directory (no experiments/ in it); it holds a forecast run")):
        run = _twin("status", path, cwd=tmp_path)
        assert run.returncode == 2
        (line,) = _error_lines(run)
        assert words in line, line


def test_a_log_linked_out_of_the_run_directory_is_refused(tmp_path, first):
    """twin.log is appended to: a symbolic link planted in its place would take the log anywhere (found by trying:
    the rerun appended to the link's target)."""
    outside = tmp_path / "elsewhere.log"
    (first / "twin.log").unlink()
    (first / "twin.log").symlink_to(outside)
    run = _twin("run", "plate.yaml", "-o", "out", cwd=tmp_path)
    assert run.returncode == 2
    assert _error_lines(run) == [f"error: {first / 'twin.log'} is a symbolic link to {outside}: twin appends its log "
                                 "to a regular file in the run directory only; remove the link and run the command "
                                 "again"]
    assert not outside.exists()


def test_two_runs_started_at_once_on_a_new_directory_one_is_told_busy(tmp_path):
    """Found by trying: the second of two commands started together saw the first one's fresh ``checkpoint/`` and
    was told the directory 'holds other files' (exit 2, bad input) in 2 of 3 tries (and, once the fresh directory was
    accepted, in a CI run that found the first one's campaign.yaml still a temporary file under its lock); it is busy
    (exit 3, run again later), or, if the first finished meanwhile, a resume (exit 0)."""
    (tmp_path / "plate.yaml").write_text(FORECAST.format(name="plate", n=8))
    for attempt in range(3):
        out = f"out{attempt}"
        procs = [subprocess.Popen(TWIN + ["run", "plate.yaml", "-o", out], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes in ([0, 0], [0, 3]), results
        assert all("holds other files" not in err for _, err in results), results
