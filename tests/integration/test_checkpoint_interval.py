"""``outputs.checkpoint_every`` / ``checkpoint_seconds``: an online filter campaign checkpoints every n-th cycle or
once so many wall-clock seconds have passed (default 10 s), and at the last cycle, each checkpoint
holding the analyses, forecasts and diagnostics of the cycles since the one before (its trail), so that the outputs
hold every cycle and a resume from the last checkpoint computes the cycles after it again, bitwise."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from campaign_case import arrays, assert_same, l96_campaign
from twin.campaign import layout
from twin.campaign.outputs import diagnostics_count
from twin.io.checkpoint import CheckpointReader

pytestmark = pytest.mark.timeout(400)

TWIN = [sys.executable, "-m", "twin.cli"]


def _campaign(path: Path, *, cycles: int, every: int | None, seconds: float | None = None) -> Path:
    """The Lorenz-96 ETKF case of the fault tests with ``cycles`` cycles, checkpointed every ``every`` cycles or
    ``seconds`` seconds (neither: the default)."""
    extra = "resources: {type: local, ranks: 1, workers: 1}\n"
    if every is not None:
        extra += f"outputs: {{checkpoint_every: {every}}}\n"
    if seconds is not None:
        extra += f"outputs: {{checkpoint_seconds: {seconds}}}\n"
    text = l96_campaign("iv", every=2, cycles=cycles, extra=extra)
    path.write_text(text.replace("timeline: {start: 0.0, end: 1.0, units: s}",
                                 f"timeline: {{start: 0.0, end: {cycles * 0.1:g}, units: s}}"))
    return path


def _run(campaign: Path, out: Path) -> Path:
    done = subprocess.run([*TWIN, "run", str(campaign), "-o", str(out), "--quiet"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return layout.experiment_dir(out, "iv")


def _outputs(exp: Path) -> dict[str, np.ndarray]:
    """The NetCDF numbers of an experiment (not its checkpoints, which differ in number)."""
    return {k: v for k, v in arrays(exp).items() if not k.startswith("cycle")}


@pytest.fixture(scope="module")
def every_cycle(tmp_path_factory) -> Path:
    """The reference: the same campaign checkpointed every cycle."""
    tmp = tmp_path_factory.mktemp("every1")
    return _run(_campaign(tmp / "c.yaml", cycles=10, every=1), tmp / "run")


def test_checkpoints_every_four_cycles_hold_every_cycle_bitwise(tmp_path, every_cycle):
    """10 cycles checkpointed every 4: files at 0, 4, 8 and 10 (the last); posterior.nc, forecast.nc and
    diagnostics.nc equal the every-cycle run's bitwise, and so do the checkpoints written, and checkpoint 8's
    trail holds the analyses and forecasts of checkpoints 5, 6 and 7 as the every-cycle run wrote them."""
    exp = _run(_campaign(tmp_path / "c.yaml", cycles=10, every=4), tmp_path / "run")
    assert layout.checkpoint_cycles(exp) == [0, 4, 8, 10]
    assert layout.checkpoint_cycles(every_cycle) == list(range(11))
    assert_same(_outputs(exp), _outputs(every_cycle))
    for k in (0, 4, 8, 10):
        with CheckpointReader(layout.checkpoint_file(exp, k)) as a, \
                CheckpointReader(layout.checkpoint_file(every_cycle, k)) as b:
            assert a.read_field("l96").tobytes() == b.read_field("l96").tobytes()
    with CheckpointReader(layout.checkpoint_file(exp, 8)) as r:
        assert r.read_array("trail_cycles").tolist() == [5, 6, 7]
        states, forecasts = r.read_array("trail_states"), r.read_array("trail_forecast")
        records = r.meta["trail"]
    assert [rec["cycle"] for rec in records] == [4, 5, 6]
    for i, k in enumerate((5, 6, 7)):
        with CheckpointReader(layout.checkpoint_file(every_cycle, k)) as r:
            assert states[i].tobytes() == r.read_field("l96").reshape(states[i].shape).tobytes()
            assert forecasts[i].tobytes() == r.read_array("forecast").tobytes()
            assert records[i]["rmse"] == r.meta["record"]["rmse"]
    with CheckpointReader(layout.checkpoint_file(exp, 4)) as r:  # the first after checkpoint 0: cycles 1, 2, 3
        assert r.read_array("trail_cycles").tolist() == [1, 2, 3]
    with CheckpointReader(layout.checkpoint_file(exp, 10)) as r:  # the last, 2 after checkpoint 8: cycle 9
        assert r.read_array("trail_cycles").tolist() == [9]


def test_a_run_stopped_between_checkpoints_resumes_from_the_last_and_matches_bitwise(tmp_path, every_cycle):
    """What a run killed after checkpoint 8 of 10 leaves (checkpoint 10, done.json and the outputs gone; and no
    diagnostics.nc, so its records must come from the checkpoints' trails): the same command computes cycles 8 and
    9 again, reads the earlier cycles' analyses from the trails of checkpoints 4 and 8, and every output equals the
    every-cycle run's bitwise."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=10, every=4)
    exp = _run(campaign, tmp_path / "run")
    for path in [layout.checkpoint_file(exp, 10), layout.done_marker(exp)] + [exp / n for n in layout.OUTPUTS]:
        path.unlink()
    _run(campaign, tmp_path / "run")
    cycles = [r["cycle"] for r in layout.read_task_log(exp) if r["task"] == "analyse" and r["outcome"] == "done"]
    assert cycles[10:] == [8, 9]  # after the first run's ten, the two after checkpoint 8
    assert layout.checkpoint_cycles(exp) == [0, 4, 8, 10]
    assert_same(_outputs(exp), _outputs(every_cycle))


def _resumed_log(campaign: Path, out: Path) -> str:
    done = subprocess.run([*TWIN, "run", str(campaign), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_deleted_checkpoint_ends_what_a_resume_starts_from(tmp_path, every_cycle):
    """Found by a probe: an operator who deleted an older checkpoint (to free space) after a kill got a run that
    recomputed the rest and then failed at the end, "no checkpoint holds the diagnostics of cycle(s) [4]", the same
    at every rerun. Each checkpoint holds the cycles since the one it continues: a resume now starts from the last
    checkpoint before the gap, sets the later ones aside, and every output equals the uninterrupted run's bitwise."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=10, every=1)
    exp = _run(campaign, tmp_path / "run")
    for path in [layout.checkpoint_file(exp, 4), layout.checkpoint_file(exp, 10), layout.done_marker(exp)] + \
            [exp / n for n in layout.OUTPUTS]:
        path.unlink()
    said = _resumed_log(campaign, tmp_path / "run")
    assert "experiment iv: cycle_0005.h5 does not continue cycle_0003.h5 (its parent checkpoint was deleted, or it " \
           "was copied from another run): resuming from the checkpoint before it" in said, said[-3000:]
    cycles = [r["cycle"] for r in layout.read_task_log(exp) if r["task"] == "analyse" and r["outcome"] == "done"]
    assert cycles[10:] == [3, 4, 5, 6, 7, 8, 9]
    assert len(list((exp / "checkpoint").glob("cycle_0005.h5.damaged-*"))) == 1
    assert_same(_outputs(exp), _outputs(every_cycle))


def test_a_cut_observations_nc_is_written_again_on_resume(tmp_path, every_cycle):
    """Found by a probe: ``observations.nc`` is written once, at the experiment's start; cut while a killed run was
    stopped, the resume kept it and done.json certified it (exit 0, ``twin status`` done). A resume now checks it
    against its data checksum and writes it again from ``observations.h5``, the cut one kept for inspection."""
    from twin.io.netcdf import verify_netcdf

    campaign = _campaign(tmp_path / "c.yaml", cycles=10, every=4)
    exp = _run(campaign, tmp_path / "run")
    for path in [layout.checkpoint_file(exp, 10), layout.done_marker(exp)] + [exp / n for n in layout.OUTPUTS]:
        path.unlink()
    export = layout.observation_export_file(exp)
    with open(export, "r+b") as f:
        f.truncate(100)
    said = _resumed_log(campaign, tmp_path / "run")
    assert f"experiment iv: {export.name} is unreadable" in said and "written again from observations.h5" in said, \
        said[-3000:]
    assert verify_netcdf(export) == (True, "ok")
    assert export.read_bytes() != b"" and len(list(exp.glob(f"{export.name}.damaged-*"))) == 1
    assert_same(_outputs(exp), _outputs(every_cycle))


def test_a_checkpoint_held_open_by_another_process_is_not_damage(tmp_path, every_cycle):
    """Found by a probe: a checkpoint another process holds open for writing (a notebook's ``h5py.File(..., 'a')``)
    failed HDF5's file lock and was called damaged: renamed, its cycles computed again, and ``twin status`` advised
    deleting done.json. Now the run stops at once with one line saying so (exit 3, as for a busy run directory),
    nothing renamed; once it is closed, the same command finishes, bitwise."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=10, every=4)
    exp = _run(campaign, tmp_path / "run")
    for path in [layout.checkpoint_file(exp, 10), layout.done_marker(exp)] + [exp / n for n in layout.OUTPUTS]:
        path.unlink()
    held = layout.checkpoint_file(exp, 8)
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'a'); "
                               "print('open', flush=True); sys.stdin.read()", str(held)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        busy = subprocess.run([*TWIN, "run", str(campaign), "-o", str(tmp_path / "run"), "--quiet"],
                              capture_output=True, text=True, timeout=300)
    finally:
        holder.communicate("", timeout=30)
    assert busy.returncode == 3, busy.stderr[-3000:]
    assert f"error: checkpoint {held} is open in another process that may be writing it (HDF5's file lock)" in \
        busy.stderr and "Traceback" not in busy.stderr, busy.stderr[-3000:]
    assert not list((exp / "checkpoint").glob("*.damaged-*")) and held.is_file()
    _run(campaign, tmp_path / "run")
    assert_same(_outputs(exp), _outputs(every_cycle))


def test_a_checkpoint_of_another_run_is_not_resumed_from(tmp_path, every_cycle):
    """Found by a probe: a checkpoint copied in from another run of the same campaign name (another seed: a wrong
    backup) was resumed from without a word, and the outputs belonged to neither run. It does not continue this
    run's checkpoint before it: the resume starts before it and the outputs equal this run's bitwise."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=10, every=1)
    other = tmp_path / "other.yaml"
    other.write_text(campaign.read_text().replace("seed: ", "seed: 1", 1))
    assert other.read_text() != campaign.read_text()
    theirs = _run(other, tmp_path / "other")
    exp = _run(campaign, tmp_path / "run")
    for path in [layout.checkpoint_file(exp, c) for c in (8, 9, 10)] + [layout.done_marker(exp)] + \
            [exp / n for n in layout.OUTPUTS]:
        path.unlink()
    shutil.copy(layout.checkpoint_file(theirs, 8), layout.checkpoint_file(exp, 8))
    said = _resumed_log(campaign, tmp_path / "run")
    assert "experiment iv: cycle_0008.h5 does not continue cycle_0007.h5" in said, said[-3000:]
    assert_same(_outputs(exp), _outputs(every_cycle))


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec on PATH")
def test_a_run_resumed_on_another_rank_count_says_so(tmp_path, every_cycle):
    """Written on 2 ranks up to checkpoint 8, resumed on 1 (found by a probe: it resumed without a word, its cycles
    then round-off apart from the uninterrupted run's and its outputs' provenance naming 1 rank): the log says the
    checkpoint's rank count and that the cycles from there differ by round-off; and they do, by round-off only."""
    import os

    campaign = _campaign(tmp_path / "c.yaml", cycles=10, every=4)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    two = subprocess.run(["mpiexec", "-n", "2", *TWIN, "run", str(campaign), "-o", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert two.returncode == 0, two.stderr[-3000:]
    exp = layout.experiment_dir(tmp_path / "run", "iv")
    for path in [layout.checkpoint_file(exp, 10), layout.done_marker(exp)] + [exp / n for n in layout.OUTPUTS]:
        path.unlink()
    one = subprocess.run([*TWIN, "run", str(campaign), "-o", str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert ("experiment iv: resumed at cycle 8 on 1 rank(s); its checkpoint was written on 2: the cycles from here "
            "differ from an uninterrupted run on 2 rank(s) by round-off") in one.stderr
    got, want = _outputs(exp), _outputs(every_cycle)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_a_killed_run_resumes_bitwise_and_its_diagnostics_never_run_ahead_of_its_checkpoints(tmp_path):
    """Killed (SIGKILL) while running 60 cycles checkpointed every 8: ``diagnostics.nc`` holds no cycle after the
    last checkpoint (a resume computes those again), and the resumed run's outputs equal an uninterrupted run's
    bitwise."""
    import os
    import signal

    campaign = _campaign(tmp_path / "c.yaml", cycles=60, every=8)
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "iv")
    proc = subprocess.Popen([*TWIN, "run", str(campaign), "-o", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (exp / "checkpoint").is_dir() or 16 not in layout.checkpoint_cycles(exp):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "the run did not reach checkpoint 16 in time"
            time.sleep(0.01)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
    last = max(layout.checkpoint_cycles(exp))
    assert 16 <= last < 60 and not layout.done_marker(exp).exists(), "killed too late"
    assert all(k % 8 == 0 for k in layout.checkpoint_cycles(exp))
    if (exp / "diagnostics.nc").exists():
        assert diagnostics_count(exp / "diagnostics.nc", None) <= last
    _run(campaign, run)
    assert layout.checkpoint_cycles(exp) == list(range(0, 60, 8)) + [60]
    ref = _run(_campaign(tmp_path / "ref.yaml", cycles=60, every=8), tmp_path / "ref")
    assert_same(arrays(exp), arrays(ref))


def test_by_default_a_short_run_checkpoints_at_its_start_and_end_and_seconds_zero_every_cycle(tmp_path, every_cycle):
    """The default interval is 10 s of wall-clock time: 10 Lorenz-96 cycles (well under a second) write checkpoints 0
    and 10 only, with the outputs of the every-cycle run bitwise; ``checkpoint_seconds: 0`` writes every cycle's."""
    exp = _run(_campaign(tmp_path / "c.yaml", cycles=10, every=None), tmp_path / "run")
    assert layout.checkpoint_cycles(exp) == [0, 10]
    assert_same(_outputs(exp), _outputs(every_cycle))
    with CheckpointReader(layout.checkpoint_file(exp, 10)) as r:
        assert r.read_array("trail_cycles").tolist() == list(range(1, 10))
    zero = _run(_campaign(tmp_path / "z.yaml", cycles=10, every=None, seconds=0), tmp_path / "zero")
    assert layout.checkpoint_cycles(zero) == list(range(11))
    assert_same(arrays(zero), arrays(every_cycle))


def test_a_checkpoint_is_written_once_its_seconds_have_passed(tmp_path):
    """``checkpoint_seconds: 0.02`` over 60 cycles (each a few milliseconds or more): checkpoints fall between start
    and end as the clock says, each holding the cycles since the one before as its trail, and the outputs equal a
    run checkpointed every 8 cycles bitwise (they do not depend on where the checkpoints fell)."""
    exp = _run(_campaign(tmp_path / "c.yaml", cycles=60, every=None, seconds=0.02), tmp_path / "run")
    written = layout.checkpoint_cycles(exp)
    assert written[0] == 0 and written[-1] == 60 and len(written) > 2, written
    for before, k in zip(written, written[1:]):
        with CheckpointReader(layout.checkpoint_file(exp, k)) as r:  # no trail after the cycle before
            trail = r.read_array("trail_cycles").tolist() if k > before + 1 else []
        assert trail == list(range(before + 1, k))
    ref = _run(_campaign(tmp_path / "ref.yaml", cycles=60, every=8), tmp_path / "ref")
    assert_same(_outputs(exp), _outputs(ref))


def test_twin_status_follows_the_driver_between_checkpoints(tmp_path):
    """With checkpoints 10 minutes apart, ``twin status`` of a running online campaign still shows the cycles the
    driver has done (its heartbeat carries them, rewritten about every second) and names the last checkpoint; once
    the driver is killed it shows what a resume starts from: the checkpoint's cycle, interrupted, exit status 1."""
    # enough cycles that the driver cannot finish them between two status calls on a loaded machine (4000 could: a CI
    # run at load 4-5 saw the second call find every cycle done)
    cycles = 12000
    campaign = _campaign(tmp_path / "c.yaml", cycles=cycles, every=None, seconds=600)
    run = tmp_path / "run"
    proc = subprocess.Popen([*TWIN, "run", str(campaign), "-o", str(run), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = subprocess.run([*TWIN, "status", str(run), "--json"], capture_output=True, text=True, timeout=60)
            if done.stdout.strip():
                exp = json.loads(done.stdout)["experiments"]
                if exp and exp[0]["state"] == "running" and exp[0]["cycles_done"] > 0:
                    seen.append((exp[0]["cycles_done"], exp[0]["message"], done.returncode))
                    if len(seen) == 2:
                        break
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert len(seen) == 2, f"twin status never showed the running driver's cycles: {seen}"
    (first, message, code), (second, _, _) = seen
    assert 0 < first < second < cycles and code == 3
    assert message == "last checkpoint at cycle 0"
    assert layout.checkpoint_cycles(layout.experiment_dir(run, "iv")) == [0]
    done = subprocess.run([*TWIN, "status", str(run), "--json"], capture_output=True, text=True, timeout=60)
    exp = json.loads(done.stdout)["experiments"][0]
    assert (exp["state"], exp["cycles_done"], done.returncode) == ("interrupted", 0, 1)
