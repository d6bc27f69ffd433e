"""Faults at run time, caused for real: a ``twin run`` killed with SIGKILL and resumed, a member task killed by a
signal in workflow mode, the shutdown of a workflow driver by SIGTERM, a Slurm run directory with ``%``, and a full
disk (a small tmpfs).

Every test here starts real processes (``twin run``, Parsl workers, MPI tasks) and checks what an operator sees:
the exit status, the one line that says why, and the files left in the run directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from campaign_case import arrays, assert_same, l96_campaign
from twin.campaign import layout

pytestmark = pytest.mark.timeout(400)

TWIN = [sys.executable, "-m", "twin.cli"]


def _campaign(path: Path, *, cycles: int = 40, extra: str = "resources: {type: local, ranks: 1, workers: 1}\n",
              name: str = "kill") -> Path:
    """The Lorenz-96 ETKF case with ``cycles`` cycles of 2 steps (about 0.2 s each online), a checkpoint per cycle
    (the tests kill runs when a given cycle's checkpoint appears)."""
    text = l96_campaign(name, every=2, cycles=cycles, extra=extra + "outputs: {checkpoint_every: 1}\n")
    path.write_text(text.replace("timeline: {start: 0.0, end: 1.0, units: s}",
                                 f"timeline: {{start: 0.0, end: {cycles * 0.1:g}, units: s}}"))
    return path


def _start(args, **kw) -> subprocess.Popen:
    return subprocess.Popen(TWIN + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before the moment to kill it: {err[-2000:]}")
        if time.time() > deadline:
            pytest.fail("the run did not reach the moment to kill it in time")
        time.sleep(0.02)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _every_number(exp: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    out = arrays(exp)
    with xr.open_dataset(exp / "free_run.nc", decode_times=False) as ds:
        out.update({f"free_run.nc:{v}": ds[v].values for v in list(ds.data_vars) + list(ds.coords)})
    return out


# -- 1. temporary files of a killed run are swept on resume ----------------------------------------------------------
def test_sigkilled_run_resumes_bitwise_and_sweeps_its_temporary_files(tmp_path):
    campaign = _campaign(tmp_path / "c.yaml")
    run, ref = tmp_path / "run", tmp_path / "ref"
    exp = layout.experiment_dir(run, "kill")
    proc = _start(["run", campaign, "-o", run])
    try:
        _wait_for(proc, lambda: 6 in layout.checkpoint_cycles(exp))
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not layout.done_marker(exp).exists() and 40 not in layout.checkpoint_cycles(exp), "killed too late"
    early = {p: p.stat().st_mtime_ns for p in (layout.checkpoint_file(exp, k) for k in range(5))}

    strays_after_kill = sorted(p for p in run.rglob(".*.tmp-*") if p.is_file())  # the kill's own, if it hit a write
    # what a writer killed in the middle of a write leaves, in every kind of place, and look-alikes twin must keep
    (tmp_path / "outside").mkdir()
    leftovers = [run / ".driver.json.tmp-4242", exp / "checkpoint" / ".cycle_0007.h5.tmp-0123456789ab",
                 layout.forecast_dir(exp, 6) / ".member_0005.h5.tmp-a1b2c3d4e5f6", exp / ".tasks.json.tmp-17"]
    strangers = [exp / "notes.tmp-1", exp / ".cache.tmp-zz", exp / ".member_0001.h5.tmp-", tmp_path / "outside" /
                 ".member_0002.h5.tmp-abcdef012345", tmp_path / ".c.yaml.tmp-99"]
    for p in leftovers + strangers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x89HDF half written")
    (exp / ".dir.tmp-abc").mkdir()  # a directory is not a temporary file of twin's
    (run / "elsewhere").symlink_to(tmp_path / "outside")  # a link is not followed out of the run directory
    (run / ".link.tmp-abc").symlink_to(tmp_path / ".c.yaml.tmp-99")  # nor removed

    proc = _start(["run", campaign, "-o", run])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    gone = [p for p in leftovers + strays_after_kill if p.exists()]
    assert gone == []
    assert [p for p in strangers if not p.exists()] == []
    assert (exp / ".dir.tmp-abc").is_dir() and (run / ".link.tmp-abc").is_symlink()
    assert f"removed {len(leftovers) + len(strays_after_kill)} temporary file(s) left by an interrupted run" in err
    # it resumed: the checkpoints before the kill were not written again
    assert {p: p.stat().st_mtime_ns for p in early} == early
    assert layout.checkpoint_cycles(exp) == list(range(41))

    proc = _start(["run", campaign, "-o", ref])
    assert proc.communicate(timeout=300) and proc.returncode == 0
    assert_same(_every_number(exp), _every_number(layout.experiment_dir(ref, "kill")))


# -- 4. a member task killed by a signal is the infrastructure's failure, not the model's ---------------------------
def _task_pids(step: str, exp: Path, cycle: int, member: int) -> list[int]:
    """The Python processes of ``python -P -m twin.campaign.task STEP EXP --cycle K --member M`` (not the launcher
    or the shell that start them)."""
    want = ["twin.campaign.task", step, str(exp), "--cycle", str(cycle), "--member", str(member)]
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = [a.decode(errors="replace") for a in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if os.path.basename(args[0]).startswith("python") and "twin.campaign.task" in args:
            i = args.index("twin.campaign.task")
            if args[i:i + len(want)] == want:
                out.append(int(entry))
    return out


def test_a_member_task_killed_by_a_signal_stops_the_experiment_with_the_real_reason(tmp_path):
    """Workflow mode with a process per task (``launcher: mpiexec``), ``on_member_failure: drop``: member 2's forecast
    of cycle 1 is killed with SIGKILL (as the OOM killer does). It is not dropped (that is for the model's failures):
    the experiment stops, naming the member and the signal, ``twin run`` and ``twin status`` exit 1, and a rerun
    resumes and finishes it. (A warm worker killed under its task: tests/integration/test_warm_workers.py.)"""
    campaign = _campaign(tmp_path / "c.yaml", cycles=3, extra="""\
        resources: {type: local, ranks: 1, workers: 2, launcher: mpiexec, task: member}
        experiments: {retries: 0, on_member_failure: drop}
        """.replace("        ", ""))
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "kill")
    proc = _start(["run", campaign, "-o", run, "--workflow"])
    killed: list[int] = []
    deadline = time.time() + 300
    try:
        while not killed and time.time() < deadline and proc.poll() is None:
            for pid in _task_pids("forecast", exp, 1, 2):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)
        out, err = proc.communicate(timeout=300)
    finally:
        _kill_session(proc.pid)
    assert killed, f"member 2's task of cycle 1 was never seen running: {err[-2000:]}"
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    failed = layout.read_json(layout.error_marker(exp))
    reason = failed["reason"]
    assert failed["cycle"] == 1 and reason.startswith("member(s) 2 (")
    # Open MPI's words (once in CI its banner without the signal line: then its status, 137, says it)
    assert reason.startswith("member(s) 2 (") and "killed by signal 9 (Killed))" in reason, reason
    assert "failed, not by a model's solver failure (" in reason
    assert layout.member_files(exp, 1)[1] == {}  # nobody was dropped
    assert not layout.failed_marker(exp, 1, 2).exists()
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [f"error: experiment kill FAILED: {reason}"]

    status = subprocess.run(TWIN + ["status", str(run)], capture_output=True, text=True)
    assert status.returncode == 1
    assert "kill: failed, 1/3 cycles; member(s) 2 (" in status.stdout

    # the operator reruns: the failure was not the policy's stop, so the experiment resumes from its last cycle
    assert not layout.stopped_marker(exp).exists()
    again = _start(["run", campaign, "-o", run, "--workflow"])
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert layout.checkpoint_cycles(exp) == [0, 1, 2, 3] and layout.member_files(exp, 1) == ([0, 1, 2, 3], {})


# -- 5. a driver told to stop stops its Parsl interchange, workers and tasks ------------------------------------------
def _session(sid: int) -> set[int]:
    """Live processes of session ``sid``: the driver started with ``start_new_session`` and everything it started
    (Parsl's interchange, the worker pool that the local provider detaches from its parent, MPI tasks)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and _alive(int(entry)):
                    out.add(int(entry))
            except OSError:
                continue
    return out


def _kill_session(sid: int) -> None:
    for _ in range(50):
        pids = _session(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_sigterm_stops_the_workflow_driver_and_everything_it_started(tmp_path):
    """``scancel`` or ``kill`` sends SIGTERM to the driver: it runs Parsl's cleanup (the interchange, the worker pool
    and the running tasks end with it), records the driver as cancelled, prints one error line and exits non-zero;
    ``twin status`` then says interrupted and exits 1. With a process per task (``launcher: mpiexec``), so that the
    running tasks are processes of their own that must end too."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=6,
                         extra="resources: {type: local, ranks: 1, workers: 2, launcher: mpiexec, task: member}\n")
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "kill")
    proc = _start(["run", campaign, "-o", run, "--workflow"])
    try:
        _wait_for(proc, lambda: 1 in layout.checkpoint_cycles(exp) and _task_pids("forecast", exp, 1, 0)
                  + _task_pids("forecast", exp, 1, 1))
        started = _session(proc.pid) - {proc.pid}
        assert len(started) >= 4  # interchange, worker pool, workers, tasks
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        stopped_in = time.time() - t0
        deadline = time.time() + 30
        while _session(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in _session(proc.pid)}
    finally:
        _kill_session(proc.pid)
    assert proc.returncode == 128 + signal.SIGTERM  # as a shell reports a process SIGTERM ended (was 2: bad input)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert errors == ["error: the workflow driver received SIGTERM: its Parsl workers and blocks were stopped; run "
                      "the campaign again to resume it from its files"], err[-3000:]
    assert "Traceback" not in err
    assert left == {}, f"still running {time.time() - t0:.1f} s after SIGTERM: {left}"
    assert stopped_in < 60
    assert layout.read_json(run / "driver.json")["state"] == "cancelled"
    status = subprocess.run(TWIN + ["status", str(run)], capture_output=True, text=True)
    assert status.returncode == 1 and "driver cancelled" in status.stdout and "kill: interrupted" in status.stdout


@pytest.mark.parametrize("how", ["ctrl-c", "interchange-killed"])
def test_a_workflow_driver_ends_when_its_group_is_signalled_or_its_interchange_dies(tmp_path, how):
    """Found by a probe: a terminal's Ctrl-C (SIGINT to the foreground process group; ``timeout``, ``kill -- -PGID``
    alike) killed Parsl's interchange beside the driver, with a KeyboardInterrupt traceback, and the driver then
    waited for ever in Parsl's clean-up for the dead interchange's answer, ignoring SIGINT and SIGTERM: the terminal
    never came back and the run directory stayed "running" (exit 3) until the driver was SIGKILLed. The interchange
    now leaves the driver's group, and an interchange that died anyway (``scancel`` signals every process of a job)
    is cleaned up without it: status 130 or 143, one line, nothing left running, and the rerun finishes."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=40, extra="resources: {type: local, ranks: 1, workers: 2, task: member}\n")
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "kill")
    proc = _start(["run", campaign, "-o", run, "--workflow"])
    interchange = None
    try:
        _wait_for(proc, lambda: 2 in layout.checkpoint_cycles(exp))
        (interchange,) = [p for p in _children(proc.pid)
                          if b"interchange" in Path(f"/proc/{p}/cmdline").read_bytes()]
        t0 = time.time()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the driver's whole process group
        else:
            os.kill(interchange, signal.SIGKILL)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        stopped_in = time.time() - t0
        deadline = time.time() + 30
        while (_session(proc.pid) or _alive(interchange)) and time.time() < deadline:
            time.sleep(0.2)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in _session(proc.pid)}
        interchange_left = _alive(interchange)
    finally:
        _kill_session(proc.pid)
        if interchange is not None:
            with contextlib.suppress(OSError):
                os.kill(interchange, signal.SIGKILL)
    sig = "SIGINT" if how == "ctrl-c" else "SIGTERM"
    assert proc.returncode == 128 + getattr(signal, sig), err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: the workflow driver received {sig}: its Parsl workers and blocks were stopped; run "
                      "the campaign again to resume it from its files"], err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert stopped_in < 60 and left == {} and not interchange_left, left
    assert subprocess.run(TWIN + ["run", campaign, "-o", run, "--workflow"], capture_output=True, text=True,
                          timeout=300).returncode == 0


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


def _files(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_the_ranks_of_a_killed_mpiexec_die_with_it_and_write_nothing_after(tmp_path):
    """Open MPI starts each rank in a process group of its own, so ``kill -9`` of the launcher's group missed them:
    they ran on for about a second (still alive 0.7 s after, writing cycles). Each rank now dies with its launcher
    (:mod:`twin.core.launcher`): within 0.3 s, and the run directory holds the same files 1.5 s later."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=400)
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "kill")
    # env given: the C environment of this process, where PETSc's MPI singleton left its variables, is not passed on
    proc = subprocess.Popen(["mpiexec", "-n", "2", *TWIN, "run", str(campaign), "-o", str(run)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ))
    try:
        _wait_for(proc, lambda: 3 in layout.checkpoint_cycles(exp))
        ranks = _children(proc.pid)
        assert len(ranks) == 2 and all(os.getpgid(r) != proc.pid for r in ranks)  # groups of their own
        os.killpg(proc.pid, signal.SIGKILL)
        t0 = time.time()
        while any(_alive(r) for r in ranks) and time.time() - t0 < 10:
            time.sleep(0.005)
        gone_in = time.time() - t0
        right_after = _files(run)
        time.sleep(1.5)
        later = _files(run)
        proc.communicate()
    finally:
        _kill_session(proc.pid)
    assert gone_in < 0.3, f"the ranks outlived their launcher by {gone_in:.2f} s"
    assert later == right_after
    assert 400 not in layout.checkpoint_cycles(exp)


def test_a_run_directory_with_percent_is_refused_for_slurm(tmp_path):
    """Slurm expands ``%j``, ``%u`` ... in the batch script's file names: such a run directory is refused before
    anything is submitted, with what to do."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=2,
                         extra="resources: {type: slurm, partition: debug, ranks: 1, workers: 1}\n")
    res = subprocess.run(TWIN + ["submit", str(campaign), "-o", str(tmp_path / "run_%j")], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: {campaign}: run directory {tmp_path / 'run_%j'} contains '%', which Slurm expands in file names "
        "(%j: job id, %u: user ...): choose a name without '%' (-o)"]
    assert not (tmp_path / "run_%j").exists()


# -- 5. a full disk ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(where: Path, size: str):
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()[:200]}): the full-disk test needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.parametrize("size", ["256k", "640k"])  # full at the start; in the middle of the cycles (cycle 6 of 12)
def test_a_full_disk_stops_the_run_with_one_line_and_a_resume_finishes_it(tmp_path, size):
    """Filled at different moments (the observations; a checkpoint or the diagnostics mid-run): exit 1, one line naming
    the file, the space and what to do, no traceback, no temporary file; with space again, the same command
    finishes, and its numbers equal an uninterrupted run's bitwise."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=12)
    ref = subprocess.run(TWIN + ["run", str(campaign), "-o", str(tmp_path / "ref"), "--quiet"], capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    with _tmpfs(tmp_path / "disk", size) as disk:
        run = [*TWIN, "run", str(campaign), "-o", str(disk / "run"), "--quiet"]
        full = subprocess.run(run, capture_output=True, text=True, timeout=300)
        assert full.returncode == 1, (full.returncode, full.stderr[-3000:])
        assert "Traceback" not in full.stderr and "PETSC ERROR" not in full.stderr, full.stderr[-3000:]
        errors = [x for x in full.stderr.splitlines() if x.startswith("error: experiment")]
        assert len(errors) == 1 and "free space there" in errors[0] and "cannot write" in errors[0], full.stderr
        assert not list(disk.rglob("*.tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        again = subprocess.run(run, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert_same(_every_number(disk / "run" / "experiments" / "kill"),
                    _every_number(tmp_path / "ref" / "experiments" / "kill"))


def test_a_run_directory_that_cannot_be_written_is_not_bad_input(tmp_path):
    """Found by a probe: a disk full before the run wrote its first file, or a run directory made immutable, ended
    ``twin run`` with status 2 (bad input) where a full twin.log gave 1: the file system refused a write, so the run
    did not finish (1), with one line naming the file and what to do. Then the same command runs."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=2)
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=1k", "count=2000"], capture_output=True)
        run = [*TWIN, "run", str(campaign), "-o", str(disk / "run"), "--quiet"]
        full = subprocess.run(run, capture_output=True, text=True, timeout=300)
        assert full.returncode == 1, (full.returncode, full.stderr[-3000:])
        assert full.stderr.strip().splitlines()[-1] == (
            f"error: cannot write campaign.yaml in {disk / 'run'}: no space left on that file system; free space "
            "there and run the same command again (a run resumes where it stopped): nothing half-written was kept")
        (disk / "filler").unlink()
        assert subprocess.run(run, capture_output=True, text=True, timeout=300).returncode == 0


def _finished_run(tmp_path: Path) -> tuple[list[str], Path, dict[str, np.ndarray]]:
    """A finished 6-cycle run: its command, its experiment directory and every number it left."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=6)
    run = [*TWIN, "run", str(campaign), "-o", str(tmp_path / "run"), "--quiet"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    exp = tmp_path / "run" / "experiments" / "kill"
    return run, exp, _every_number(exp)


# -- 6. a damaged last checkpoint under a finished experiment -------------------------------------------------------
def test_a_damaged_last_checkpoint_is_set_aside_and_its_cycle_computed_again(tmp_path):
    """A finished run whose last checkpoint was damaged afterwards (bits flipped on disk): the same command does
    not skip the experiment as done; it keeps the damaged file for inspection, computes that cycle again from the
    checkpoint before it, and every number equals the undamaged run's bitwise."""
    run, exp, before = _finished_run(tmp_path)
    last = layout.checkpoint_file(exp, 6)
    import h5py

    with h5py.File(last, "r") as f:  # zeros over members' states (a spot that is free space would change nothing)
        offset = f["fields/l96"].id.get_offset() + 8
    data = bytearray(last.read_bytes())
    data[offset:offset + 64] = bytes(64)
    assert bytes(data) != last.read_bytes()
    last.write_bytes(bytes(data))
    again = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    aside = list((exp / "checkpoint").glob("cycle_0006.h5.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(data)
    assert_same(_every_number(exp), before)


# -- 6b. a crash of the machine lost checkpoints not yet made durable ------------------------------------------------
def test_a_lost_checkpoint_between_good_ones_ends_the_sequence_resumed_from(tmp_path):
    """The online driver makes its cycle checkpoints durable in groups, every few seconds: after a crash of the
    machine a checkpoint written since may be damaged while newer ones survived (the kernel writes files back in
    any order). Simulated: a finished run loses ``diagnostics.nc`` (so no checkpoint is known durable) and
    ``done.json``, and checkpoint 4 of 6 is damaged. The same command resumes from checkpoint 3, not from the good
    checkpoint 6 (whose history would have a hole), sets 4, 5 and 6 aside, and every number equals the undamaged
    run's bitwise."""
    run, exp, before = _finished_run(tmp_path)
    lost = layout.checkpoint_file(exp, 4)
    lost.write_bytes(lost.read_bytes()[:2048])  # what an unsynced file can be after a crash: cut short
    (exp / "diagnostics.nc").unlink()
    layout.done_marker(exp).unlink()
    again = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name.split(".damaged")[0] for p in (exp / "checkpoint").glob("*.damaged-*")) == [
        "cycle_0004.h5", "cycle_0005.h5", "cycle_0006.h5"]
    cycles = [r["cycle"] for r in layout.read_task_log(exp) if r["task"] == "analyse" and r["outcome"] == "done"]
    assert cycles[-3:] == [3, 4, 5]  # the three cycles computed again
    assert_same(_every_number(exp), before)


# -- 7. Ctrl-C -----------------------------------------------------------------------------------------------------
def test_ctrl_c_ends_a_run_with_one_line_and_status_130_and_the_rerun_finishes(tmp_path):
    campaign = _campaign(tmp_path / "c.yaml", cycles=40)
    exp = tmp_path / "run" / "experiments" / "kill"
    # a process started in the background by a shell without job control inherits SIGINT ignored: restore it
    proc = _start(["run", campaign, "-o", tmp_path / "run", "--quiet"],
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(proc, lambda: layout.checkpoint_file(exp, 3).exists())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)"), err[-2000:]
    again = subprocess.run(TWIN + ["run", str(campaign), "-o", str(tmp_path / "run"), "--quiet"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (exp / "done.json").is_file() and not list((tmp_path / "run").rglob("*.tmp-*"))


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_a_closed_terminal_ends_a_run_as_sigterm_does(tmp_path, sig):
    """Found by a probe: SIGHUP (the terminal or ssh session closed) and SIGQUIT met PETSc's handler, installed when
    PETSc starts: its crash banner ("recompile with debugging") and status 59. Now one line and 128 + the signal's
    number, as SIGTERM; the rerun finishes."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=400)
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "kill")
    proc = subprocess.Popen([*TWIN, "run", str(campaign), "-o", str(run), "--quiet"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(proc, lambda: 3 in layout.checkpoint_cycles(exp))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        _kill_session(proc.pid)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "PETSC ERROR" not in err and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (f"interrupted ({signal.Signals(sig).name}): every file written so far is "
                                            "complete; run the same command again to resume"), err[-2000:]
    again = subprocess.run([*TWIN, "run", str(campaign), "-o", str(run), "--quiet"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and layout.done_marker(exp).is_file(), again.stderr[-2000:]


def test_sigterm_ends_an_online_run_as_ctrl_c_does_also_under_mpiexec(tmp_path):
    """``kill`` or ``scancel`` of a serial run (SIGTERM): one line, status 143, the driver's last word 'cancelled'
    (it was killed by the signal: no line, and twin status said crashed). Under ``mpiexec``, which passes SIGTERM (and
    Ctrl-C, as SIGTERM) on to its ranks, rank 0 says the same line at most once, when the signal finds it outside an
    MPI call (inside one it waits for rank 1, which has stopped, until mpiexec kills it: seen once in CI), and never a
    traceback; mpiexec's own status is Open MPI's (1). The reruns finish."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=400)
    for launch, status in (([], 143), (["mpiexec", "-n", "2"], 1)):
        run = tmp_path / f"run{len(launch)}"
        exp = layout.experiment_dir(run, "kill")
        proc = subprocess.Popen([*launch, *TWIN, "run", str(campaign), "-o", str(run), "--quiet"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=dict(os.environ))
        try:
            _wait_for(proc, lambda: 3 in layout.checkpoint_cycles(exp))
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            _kill_session(proc.pid)
        assert proc.returncode == status, err[-2000:]
        said = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
        line = "interrupted (SIGTERM): every file written so far is complete; run the same command again to resume"
        assert "Traceback" not in err
        if not launch:
            assert said == [line], err[-2000:]
            assert layout.read_json(run / "driver.json")["state"] == "cancelled"
        else:
            assert said in ([line], []), err[-2000:]
        again = subprocess.run([*launch, *TWIN, "run", str(campaign), "-o", str(run), "--quiet"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                               env=dict(os.environ))
        assert again.returncode == 0, again.stderr[-2000:]
        assert layout.done_marker(exp).is_file()


def test_a_workflow_driver_killed_with_sigkill_leaves_nothing_running_after_the_resume(tmp_path):
    """SIGKILL gives the driver no chance to clean up: Parsl's interchange and the local worker pool it kept alive ran
    on (found by trying: still there 90 s after a resume). The driver's heartbeat names the processes it started;
    ``twin status`` says they still run, and the resume stops them before it starts its own."""
    from twin.campaign.heartbeat import _process_start

    campaign = _campaign(tmp_path / "c.yaml", cycles=8,
                         extra="resources: {type: local, ranks: 1, workers: 2, task: member}\n")
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, "kill")
    proc = _start(["run", campaign, "-o", run, "--workflow"])
    try:
        _wait_for(proc, lambda: 2 in layout.checkpoint_cycles(exp)
                  and layout.read_json(run / "driver.json").get("children"))
        children = layout.read_json(run / "driver.json")["children"]
        proc.kill()  # the driver alone, as the OOM killer would
        proc.wait(timeout=60)  # (its children hold its output pipes open)
        assert {c["group"] for c in children} == {False, True}  # the interchange, and the local block's group
        assert all(_process_start(c["pid"]) == c["start"] for c in children), "they did not outlive the driver"
        status = subprocess.run(TWIN + ["status", str(run)], capture_output=True, text=True)
        assert status.returncode == 1
        assert (f"driver lost; {len(children)} process(es) it started still run "
                f"({', '.join(str(c['pid']) for c in children)}): running the campaign again stops them") in status.stdout
        resume = subprocess.run(TWIN + ["run", str(campaign), "-o", str(run), "--workflow"], capture_output=True,
                                text=True, timeout=300, start_new_session=True)
        assert resume.returncode == 0, resume.stderr[-3000:]
        assert f"stopped {len(children)} process(es) that a lost driver of this run left running" in resume.stderr
        assert not [c for c in children if _process_start(c["pid"]) == c["start"]]
    finally:
        _kill_session(proc.pid)
        for c in layout.read_json(run / "driver.json").get("children", []) if run.exists() else []:
            with contextlib.suppress(OSError):
                (os.killpg if c["group"] else os.kill)(c["pid"], signal.SIGKILL)
    assert layout.read_json(layout.done_marker(exp))


# -- MPI's start in a process no launcher started -------------------------------------------------------------------
def _singleton_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_MCA_", "PMIX_", "OMPI_COMM_WORLD"))}
    return {**env, **extra}


@pytest.mark.parametrize("model", ["lorenz96", '"twin_lorenz63.model:Lorenz63"'])
def test_a_run_without_ssh_on_path_starts_mpi_and_finishes(tmp_path, model):
    """Found by a probe: a ``PATH`` without ``/usr/bin`` (a module environment or batch script that resets it) made
    Open MPI's singleton start look for ``ssh``/``rsh`` to start its daemon; MPI_Init ended the process with status 1
    and nothing said (its error block went to the stderr PETSc's start holds). ``twin run`` starts MPI as an isolated
    singleton now (no daemon) and finishes; also with a model class by import path, whose module starts PETSc when
    the campaign is read (a later probe)."""
    if model != "lorenz96":
        pytest.importorskip("twin_lorenz63", reason="needs the example plugin (make setup installs it)")
        text = (Path(__file__).resolve().parents[2] / "examples" / "lorenz63-plugin" / "campaign.yaml").read_text()
        campaign = tmp_path / "c.yaml"
        campaign.write_text(text.replace("type: lorenz63 ", f"type: {model} ").replace("end: 5.0", "end: 0.2")
                            .replace("cycles: 40}", "cycles: 2}"))
        name = "lorenz63_etkf"
    else:
        campaign, name = _campaign(tmp_path / "c.yaml", cycles=2), "kill"
    env = _singleton_env(PATH=str(tmp_path / "nothing-here"))
    out = subprocess.run([*TWIN, "run", str(campaign), "-o", str(tmp_path / "run"), "--quiet"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    assert layout.done_marker(tmp_path / "run" / "experiments" / name).is_file()
    info = subprocess.run([*TWIN, "info"], capture_output=True, text=True, timeout=120, env=env)
    assert info.returncode == 0 and "petsc" in info.stdout.lower(), info.stderr[-2000:]


def test_mpi_that_cannot_start_says_why(tmp_path):
    """Found by a probe: with a user's ``OMPI_MCA_pml`` naming a layer Open MPI does not have, ``twin run`` ended with
    status 1 and printed nothing (Open MPI's reason went into the stderr PETSc's start holds, lost with the process
    that MPI_Init ended). MPI now starts before that hold: its own lines say why."""
    campaign = _campaign(tmp_path / "c.yaml", cycles=2)
    out = subprocess.run([*TWIN, "run", str(campaign), "-o", str(tmp_path / "run"), "--quiet"], capture_output=True,
                         text=True, timeout=300, env=_singleton_env(OMPI_MCA_pml="no_such_layer"))
    assert out.returncode != 0
    assert "pml" in out.stderr.lower(), out.stderr[-3000:]


@pytest.mark.parametrize("own", [None, "^ucx"])
def test_the_singleton_settings_hold_only_while_mpi_starts(own):
    """The Open MPI settings of a singleton's start are not left in the environment (an ``mpiexec`` or a Slurm job
    the process starts would inherit them), and a user's own setting of one of them is kept as it was."""
    code = ("import os; from twin.core.petsc import init_petsc; init_petsc([]); "
            "from mpi4py import MPI; assert MPI.Is_initialized(); "
            "print(os.environ.get('OMPI_MCA_ess_singleton_isolated'), os.environ.get('OMPI_MCA_pml'))")
    env = _singleton_env(**({"OMPI_MCA_pml": own} if own else {}))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None", own or "None"]


def test_a_free_run_that_failed_after_the_outputs_is_written_by_the_rerun(tmp_path):
    """Found by a probe: when the free run (written last, after posterior/forecast/diagnostics.nc) failed (its model's
    error online, experiments.task_timeout in a workflow's finalize), the rerun found the outputs complete, skipped
    finalize and called the experiment done without free_run.nc. Now the rerun writes it, as the first run would."""
    run, exp, before = _finished_run(tmp_path)
    layout.done_marker(exp).unlink()
    (exp / "free_run.nc").unlink()  # what the failed free run left: the other outputs, no free run, no done.json
    again = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (exp / "free_run.nc").is_file() and "free_run.nc" in json.loads(layout.done_marker(exp).read_text())[
        "outputs"]
    assert_same(_every_number(exp), before)
