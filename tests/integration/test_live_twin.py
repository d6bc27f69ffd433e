"""A live twin (``twin assimilate RUN_DIR FILE...``): a file campaign run on the first of three consecutive
observation files, then given the second and the third as they "arrive", ends bitwise where one campaign over all the
observations at once ends; the same file again changes nothing; observations at or before the last analysis, a run
that is not a file campaign, a missing file, a file with other variables, a file that leaves a cycle without
observations, one that adds a station and one far beyond the campaign's limits are refused in one line with the run
directory untouched; a SIGKILL during ``twin assimilate`` followed by the same command again loses nothing.

The observations are the Lorenz-96 ETKF twin experiment's (``observations.nc``), cut in time into three files of four
cycles each by plain netCDF4 code (a CF-1.10 timeSeries, the exported layout).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from live_case import NETWORK, deliver_in_three
from live_case import ok as _ok
from live_case import station_file as _write
from live_case import twin as _twin
from live_case import values as _values

ROOT = Path(__file__).resolve().parents[2]
EXP = "lorenz96_etkf"
CYCLES = 12


def _snapshot(run: Path) -> dict[str, tuple[str, int]]:
    """Every file of a run directory: its SHA-256 and modification time."""
    out = {}
    for p in sorted(run.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(run))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The twin experiment, its observations cut into three files, one campaign over all of them, and a live run of
    the first file to which the second and third are delivered one after the other (a copy of the live run before
    the deliveries is kept for the kill test)."""
    text = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
    assert NETWORK in text and "cycles: 30" in text
    text = text.replace("cycles: 30", f"cycles: {CYCLES}")
    # a checkpoint per cycle: the kill test stops a delivery in the middle of its cycles
    text = text.replace("outputs:\n", "outputs:\n  checkpoint_every: 1\n")
    out = deliver_in_three(tmp_path_factory.mktemp("live"), text, EXP, f"cycles: {CYCLES}", "cycles: 4",
                           keep="killed")
    obs = out["obs"]
    assert obs["y"].shape == (40, CYCLES) and np.allclose(obs["t"], 0.1 * np.arange(1, CYCLES + 1))
    return out


def test_three_deliveries_give_the_campaign_over_all_observations(live):
    d = live["dir"]
    exp, ref = d / "live" / "experiments" / EXP, d / "all" / "experiments" / EXP
    assert "part2.nc: assimilated" in live["runs"][0].stdout and f"{EXP} 8 cycles" in live["runs"][0].stdout
    assert f"{EXP} 12 cycles" in live["runs"][1].stdout
    post = _values(exp / "posterior.nc", "l96_x")
    assert post.shape == (20, CYCLES + 1, 40)
    assert np.array_equal(post, _values(ref / "posterior.nc", "l96_x"))  # bitwise
    assert np.array_equal(_values(exp / "forecast.nc", "l96_x"), _values(ref / "forecast.nc", "l96_x"))
    for name in ("chi2_per_dof", "spread", "n_obs", "parameter_F"):
        assert np.array_equal(_values(exp / "diagnostics.nc", name), _values(ref / "diagnostics.nc", name)), name
    ours, theirs = (json.loads((e / "decision.json").read_text()) for e in (exp, ref))
    assert ours["qois"] == theirs["qois"] and ours["time"] == pytest.approx(1.2)
    # the record: each delivered file kept under its SHA-256 with the cycles it added
    record = json.loads((d / "live" / "deliveries.json").read_text())["deliveries"]
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in live["parts"]]
    assert [r["sha256"] for r in record] == shas[1:]
    assert [r["cycles"][EXP] for r in record] == [[4, 8], [8, 12]]
    for r in record:
        assert hashlib.sha256((d / "live" / r["stored"]).read_bytes()).hexdigest() == r["sha256"]
    # observations.h5 names every file with its SHA-256 and QC counts: 160 observations assimilated from each
    from twin.io.checkpoint import CheckpointReader

    with CheckpointReader(exp / "observations.h5") as r:
        files = r.meta["files"]
        assert r.read_array("observations").shape == (CYCLES, 40)
    assert [f["sha256"] for f in files] == shas and [f["qc"]["accepted"] for f in files] == [160] * 3
    # twin status and twin report see the extended campaign
    status = _twin(d, "status", "live")
    assert status.returncode == 0 and f"{EXP}: done, 12/12 cycles" in status.stdout, status.stdout + status.stderr
    html = (d / "live" / "report" / "index.html").read_text()
    assert "part3.nc" in html and "FAILED" not in html


def test_the_same_file_twice_changes_nothing(live):
    d = live["dir"]
    before = _snapshot(d / "live")
    again = shutil.copy(live["parts"][1], d / "part2_resent.nc")  # same bytes, another name
    for f in (live["parts"][1], again, live["parts"][0]):  # the campaign's own file too
        out = _twin(d, "assimilate", "live", str(f))
        assert out.returncode == 0, out.stderr
        assert "already assimilated" in out.stdout and "nothing to do" in out.stdout and out.stderr == ""
    assert _snapshot(d / "live") == before  # files, checksums and times unchanged


def test_observations_at_or_before_the_last_analysis_are_refused(live):
    d = live["dir"]
    before = _snapshot(d / "live")
    # 1.15 lies before the last analysis at 1.2 (its cycle was analysed), 1.3 after it: the file is refused whole
    early = _write(d / "early.nc", live["obs"], [10, 11], times=[1.15, 1.3])
    out = _twin(d, "assimilate", "live", str(early))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(early) in lines[0] and "'obs_x'" in lines[0] and "time 1.15" in lines[0]
    assert "at or before the last analysis time 1.2" in lines[0] and "does not rewind" in lines[0]
    assert _snapshot(d / "live") == before


def test_bad_deliveries_are_refused_in_one_line_and_leave_the_run_untouched(live):
    d = live["dir"]
    later = {**live["obs"], "t": live["obs"]["t"] + 1.2}  # cycles 13..16: acceptable but for what is tested
    o = live["obs"]
    extra = {"y": np.vstack([o["y"], o["y"][:1]]), "e": np.vstack([o["e"], o["e"][:1]]), "t": later["t"],
             "x": np.append(o["x"], 0.5)}  # a 41st station, between two grid points
    cases = [
        ("experiment", _write(d / "later.nc", later, slice(0, 4)), "not observed through files"),
        ("live", d / "missing.nc", "does not exist"),
        ("live", _write(d / "other.nc", {**later, "name": "obs_y"}, slice(0, 4)), "has no variable 'obs_x'"),
        # cycles 13..16 would be empty: a filter cannot analyse a cycle without observations
        ("live", _write(d / "gap.nc", {**o, "t": o["t"] + 1.6}, slice(0, 4)), "cycle 12 (1.2, 1.3]"),
        ("live", _write(d / "extra.nc", extra, slice(0, 4)), "41 sites instead of its 40"),
        # 10^9 cycles ahead: beyond the campaign's step limit, said of the file, not of experiment.yaml
        ("live", _write(d / "far.nc", {**o, "t": o["t"] + 1e8}, slice(0, 4)), "would extend experiment"),
    ]
    for run, path, says in cases:
        before = _snapshot(d / run)
        out = _twin(d, "assimilate", run, str(path))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert says in lines[0] and (str(path) in lines[0] or run == "experiment"), lines[0]
        assert _snapshot(d / run) == before
    # a run directory that is not there (was "no experiments/ in it", where twin status says it does not exist)
    out = _twin(d, "assimilate", "nodir", str(live["parts"][1]))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: {d / 'nodir'} does not exist: give the run directory of a campaign (twin run -o DIR)"], out.stderr


def _kill_when(d: Path, args: list[str], ready) -> int:
    """Start ``twin assimilate``, SIGKILL it once ``ready()`` holds; returns its exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "twin.cli", "assimilate", *args], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(60)


def test_a_sigkill_during_assimilate_then_the_same_command_loses_nothing(live):
    d = live["dir"]
    run = d / "killed"
    args = ["killed", str(live["parts"][1]), str(live["parts"][2]), "--quiet"]
    # killed once as soon as the delivery is recorded, once in the middle of the new cycles
    assert _kill_when(d, args, lambda: (run / "deliveries.json").exists()) == -signal.SIGKILL
    ck = run / "experiments" / EXP / "checkpoint"
    assert _kill_when(d, args, lambda: (ck / "cycle_0007.h5").exists()) == -signal.SIGKILL
    assert not (ck / "cycle_0012.h5").exists()
    status = _twin(d, "status", "killed")
    assert status.returncode == 1 and "interrupted" in status.stdout, status.stdout + status.stderr
    out = _ok(d, "assimilate", *args)
    assert "accepted earlier" in out.stdout and "12 cycles" in out.stdout
    ref = d / "all" / "experiments" / EXP
    assert np.array_equal(_values(run / "experiments" / EXP / "posterior.nc", "l96_x"),
                          _values(ref / "posterior.nc", "l96_x"))
    record = json.loads((run / "deliveries.json").read_text())["deliveries"]
    assert [r["name"] for r in record] == ["part2.nc", "part3.nc"]
    assert sorted(p.name for p in (run / "deliveries").iterdir()) == sorted(
        Path(r["stored"]).name for r in record)
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]  # no temporary file left behind
    assert _twin(d, "status", "killed").returncode == 0


def test_a_moved_run_directory_goes_on_where_it_is(live):
    """A live run given the second file, copied elsewhere (shutil.copytree) and its original deleted, takes the third
    file like the run that stayed: the same analyses, bitwise, read from its own deliveries/; a delivered file
    changed in it afterwards is refused in one line."""
    d = live["dir"]
    _ok(d, "run", "live.yaml", "-o", "moving", "--quiet")
    # the same bytes twice in one command: assimilated once, the second named with the first (was an empty place)
    dup = shutil.copy(live["parts"][1], d / "part2_twice.nc")
    out = _ok(d, "assimilate", "moving", str(live["parts"][1]), str(dup), "--quiet")
    assert f"{dup}: already assimilated (sha256 " in out.stdout, out.stdout
    assert f", given before in this command as {live['parts'][1]}); nothing to do for it" in out.stdout, out.stdout
    moved = d / "elsewhere" / "moved"
    shutil.copytree(d / "moving", moved)
    shutil.rmtree(d / "moving")
    out = _ok(d, "assimilate", str(moved), str(live["parts"][2]))
    assert "part3.nc: assimilated" in out.stdout and f"{EXP} 12 cycles" in out.stdout, out.stdout
    exp = moved / "experiments" / EXP
    for ref in (d / "live" / "experiments" / EXP, d / "all" / "experiments" / EXP):
        assert np.array_equal(_values(exp / "posterior.nc", "l96_x"), _values(ref / "posterior.nc", "l96_x"))
        assert np.array_equal(_values(exp / "forecast.nc", "l96_x"), _values(ref / "forecast.nc", "l96_x"))
        assert np.array_equal(_values(exp / "diagnostics.nc", "chi2_per_dof"),
                              _values(ref / "diagnostics.nc", "chi2_per_dof"))
    # the experiment reads the delivered files of the directory it is in
    text = (exp / "experiment.yaml").read_text()
    assert "moving" not in text and text.count(str((moved / "deliveries").resolve())) == 2, text
    assert _twin(d, "status", str(moved)).returncode == 0
    # the same file again changes nothing
    again = _ok(d, "assimilate", str(moved), str(live["parts"][2]))
    assert "already assimilated" in again.stdout
    # a kept delivery changed afterwards: refused, naming it and the experiment
    record = json.loads((moved / "deliveries.json").read_text())["deliveries"]
    kept = moved / record[0]["stored"]
    original = kept.read_bytes()
    kept.write_bytes(original + b"\0")
    before = _snapshot(moved)
    out = _twin(d, "assimilate", str(moved))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert kept.name in lines[0] and f"experiment {EXP}" in lines[0] and "has changed" in lines[0]
    assert "restore the file" in lines[0] and "another run directory" in lines[0]
    assert _snapshot(moved) == before
    kept.write_bytes(original)
    assert "nothing to do" in _ok(d, "assimilate", str(moved)).stdout
