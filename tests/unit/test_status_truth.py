"""``twin status`` tells the truth: the state it prints and its exit status, for a campaign not started (queued, or
never submitted),
running (a live heartbeat), finished, failed, crashed (a heartbeat whose process is gone, no ``done.json``), resumed,
and finished but damaged (a truncated, bit-flipped or empty last checkpoint; a missing ``decision.json`` or
``free_run.nc``). A real campaign is run once (online, one rank) and copied for each case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twin.campaign import layout
from twin.campaign.heartbeat import write_heartbeat
from twin.campaign.status import EXIT_ATTENTION, EXIT_COMPLETE, EXIT_IN_PROGRESS
from twin.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from campaign_case import l96_campaign  # noqa: E402

pytestmark = pytest.mark.timeout(300)
NAME = "truth"
CAMPAIGN = l96_campaign(NAME, cycles=4, every=2, extra="""\
    decision: {qois: [energy], horizon: 0.4}
    outputs: {checkpoint_every: 1}  # a checkpoint per cycle: the tests remove the newest
    """)


def _status(run: Path, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(["status", str(run)])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def _line(lines: list[str]) -> str:
    (line,) = [ln.strip() for ln in lines if ln.strip().startswith(f"{NAME}:")]
    return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    base = tmp_path_factory.mktemp("status")
    (base / "c.yaml").write_text(CAMPAIGN)
    run_online(load_campaign(base / "c.yaml"), MPI.COMM_SELF, base / "run")
    return base / "run"


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    return run, layout.experiment_dir(run, NAME)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_finished(finished, capsys):
    code, lines, err = _status(finished, capsys)
    assert code == EXIT_COMPLETE, err
    assert "1 experiment(s), 1 done; driver finished" in lines[0]
    assert _line(lines) == f"{NAME}: done, 4/4 cycles"
    promised = json.loads((layout.done_marker(layout.experiment_dir(finished, NAME))).read_text())["outputs"]
    assert {"decision.json", "free_run.nc", "posterior.nc", "forecast.nc", "diagnostics.nc"} <= set(promised)


def test_queued_not_started(tmp_path, capsys):
    from twin.campaign.experiments import prepare_experiments
    from twin.config.loader import load_campaign

    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    run = tmp_path / "run"
    prepare_experiments(load_campaign(tmp_path / "c.yaml"), run)  # what twin submit leaves before the job starts
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_IN_PROGRESS
    assert lines[0].endswith("0 done; driver none") and _line(lines) == f"{NAME}: pending, 0/4 cycles"
    # a submitted job that Slurm does not know (it ended before starting the driver: a bad script, '%' in a name)
    (run / "slurm").mkdir()
    (run / "slurm" / "jobs.txt").write_text("999999991 driver\n")
    code, lines, _ = _status(run, capsys)
    if shutil.which("squeue") is None:
        assert code == EXIT_IN_PROGRESS and "Slurm job 999999991 submitted; squeue not available" in lines[0]
    else:
        assert code == EXIT_ATTENTION
        assert "driver never started: Slurm job 999999991 is gone" in lines[0]


def test_a_batch_script_sbatch_did_not_take_is_not_queued(tmp_path, capsys):
    """``twin submit`` where sbatch is missing (or refuses the script) leaves the experiments prepared and the script
    written but no job: ``twin status`` says so and asks for the operator (it said pending, exit 3, for ever)."""
    (tmp_path / "c.yaml").write_text(CAMPAIGN + "resources: {type: slurm, partition: debug, ranks: 1}\n")
    env = dict(os.environ, PATH=str(tmp_path))  # no sbatch on it
    out = subprocess.run([sys.executable, "-m", "twin.cli", "submit", "c.yaml", "-o", "run"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "sbatch is not on PATH" in out.stderr, out.stdout + out.stderr
    run = tmp_path / "run"
    assert (run / "slurm" / "driver.sbatch").is_file() and not (run / "slurm" / "jobs.txt").exists()
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_ATTENTION, lines
    assert "no job was submitted (sbatch failed or was not found); run twin submit again" in lines[0]
    assert _line(lines) == f"{NAME}: pending, 0/4 cycles"


def test_running_with_a_live_heartbeat(finished, tmp_path, capsys):
    run, exp = _copy(finished, tmp_path)
    for k in (3, 4):
        layout.checkpoint_file(exp, k).unlink()
    layout.done_marker(exp).unlink()
    write_heartbeat(run)  # this process: alive
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_IN_PROGRESS
    assert "driver running" in lines[0]
    assert _line(lines) == f"{NAME}: running, 2/4 cycles"  # online: the cycle's forecasts are in memory
    for m in range(3):  # a workflow's member tasks leave their forecasts as files
        layout.forecast_file(exp, 2, m).parent.mkdir(parents=True, exist_ok=True)
        layout.forecast_file(exp, 2, m).write_bytes(b"")
    code, lines, _ = _status(run, capsys)
    assert _line(lines) == f"{NAME}: running, 2/4 cycles, cycle 2: 3/4 member forecasts"
    # from another machine: judged by the heartbeat's age
    beat = json.loads((run / "driver.json").read_text())
    beat.update(boot="elsewhere", host="another-host", pid=1, time=time.time() - 10)
    (run / "driver.json").write_text(json.dumps(beat))
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_IN_PROGRESS and "driver running" in lines[0]


def test_crashed_stale_heartbeat_then_resumed(finished, tmp_path, capsys):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    run, exp = _copy(finished, tmp_path)
    for k in (3, 4):
        layout.checkpoint_file(exp, k).unlink()
    for name in ("done.json", "posterior.nc", "forecast.nc", "decision.json", "free_run.nc"):
        (exp / name).unlink()
    write_heartbeat(run)
    beat = json.loads((run / "driver.json").read_text())
    (run / "driver.json").write_text(json.dumps(beat | {"pid": _dead_pid()}))  # killed: no last word
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert "driver lost" in lines[0] and _line(lines).startswith(f"{NAME}: interrupted, 2/4 cycles")
    assert f"error: experiment {NAME} interrupted (no live driver: run the campaign again to resume it)" in err
    # another machine's heartbeat older than the timeout: the same verdict
    (run / "driver.json").write_text(json.dumps(beat | {"boot": "x", "host": "h", "time": time.time() - 3600}))
    assert _status(run, capsys)[0] == EXIT_ATTENTION

    run_online(load_campaign(run / "campaign.yaml"), MPI.COMM_SELF, run)  # resumed
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_COMPLETE and _line(lines) == f"{NAME}: done, 4/4 cycles"


def test_failed(finished, tmp_path, capsys):
    run, exp = _copy(finished, tmp_path)
    layout.done_marker(exp).unlink()
    layout.write_json(layout.error_marker(exp), {"reason": "SolverError: TS diverged at t=0.3", "time": 0})
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert _line(lines) == f"{NAME}: failed, 4/4 cycles; SolverError: TS diverged at t=0.3"
    assert f"error: experiment {NAME} failed: SolverError: TS diverged at t=0.3" in err
    # the finalize step failed after writing the NetCDF files: stopped, not done
    layout.error_marker(exp).unlink()
    layout.write_json(layout.stopped_marker(exp), {"reason": "finalize failed: error: no decision"})
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_ATTENTION and _line(lines).startswith(f"{NAME}: stopped, 4/4 cycles; finalize failed: error: "
                                                              "no decision; remove "), _line(lines)


def _flip_a_data_byte(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        offset = f["fields/l96"].id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset + 17] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "the last checkpoint checkpoint/cycle_0004.h5 does not verify (cannot be opened as HDF5"),
    ("bitflip", "the last checkpoint checkpoint/cycle_0004.h5 does not verify (data of /fields/l96"),
    ("empty", "the last checkpoint checkpoint/cycle_0004.h5 does not verify (cannot be opened as HDF5"),
    ("decision", "finished earlier, but decision.json is missing: run the campaign again to write it"),
    ("free_run", "finished earlier, but free_run.nc is missing: run the campaign again to write it"),
    ("no_done", "the last checkpoint checkpoint/cycle_0004.h5 does not verify (cannot be opened as HDF5"),
])
def test_finished_but_damaged(finished, tmp_path, capsys, damage, expected):
    run, exp = _copy(finished, tmp_path)
    last = layout.checkpoint_file(exp, 4)
    if damage == "truncate":
        os.truncate(last, last.stat().st_size // 2)
    elif damage == "bitflip":
        _flip_a_data_byte(last)
    elif damage == "empty":
        os.truncate(last, 0)
    elif damage in ("decision", "free_run"):
        (exp / f"{damage}.{'json' if damage == 'decision' else 'nc'}").unlink()
    else:  # a run directory of an older version (no done.json), every output written, its last checkpoint cut
        layout.done_marker(exp).unlink()
        os.truncate(last, last.stat().st_size // 2)
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    line = _line(lines)
    assert line.startswith(f"{NAME}: damaged,") and expected in line, line
    assert "1 experiment(s), 0 done" in lines[0]
    assert f"error: experiment {NAME} damaged: " in err and "Traceback" not in err


def test_stopped_while_writing_its_outputs_is_interrupted(finished, tmp_path, capsys):
    """Found by a probe: Ctrl-C between forecast.nc and decision.json left an experiment without done.json whose
    NetCDF outputs were all there; status called it "damaged, finished earlier, but decision.json is missing" (the
    rule for run directories of older versions, which have no done.json). It never finished: interrupted, and the
    resume finishes it."""
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    run, exp = _copy(finished, tmp_path)
    layout.done_marker(exp).unlink()
    (exp / "decision.json").unlink()
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert _line(lines) == f"{NAME}: interrupted, 4/4 cycles", lines
    assert "damaged" not in err and "finished earlier" not in err
    run_online(load_campaign(run / "campaign.yaml"), MPI.COMM_SELF, run)
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_COMPLETE and _line(lines) == f"{NAME}: done, 4/4 cycles"


def test_status_exit_codes_from_the_command(finished, tmp_path):
    """The installed command, in a process of its own: exit 0 for a verified campaign, 1 for a damaged one."""
    run, exp = _copy(finished, tmp_path)
    ok = subprocess.run([sys.executable, "-m", "twin.cli", "status", str(run), "--json"], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["experiments"][0]["state"] == "done"
    _flip_a_data_byte(layout.checkpoint_file(exp, 4))
    bad = subprocess.run([sys.executable, "-m", "twin.cli", "status", str(run)], capture_output=True, text=True)
    assert bad.returncode == 1 and "damaged" in bad.stdout and "Traceback" not in bad.stderr


def test_a_zombie_driver_is_not_alive(finished, tmp_path, capsys):
    """A killed MPI rank stays a zombie until its launcher reaps it, for a second or more after mpiexec returned: its
    heartbeat's process is not a live driver (before, an immediate rerun was refused as busy, exit 3)."""
    run, _ = _copy(finished, tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):  # ended, not reaped: a zombie
        if Path(f"/proc/{child.pid}/stat").read_text().split(") ")[-1][:1] == "Z":
            break
        time.sleep(0.01)
    try:
        write_heartbeat(run)
        beat = json.loads((run / "driver.json").read_text())
        (run / "driver.json").write_text(json.dumps(beat | {"state": "running", "pid": child.pid}))
        from twin.campaign.heartbeat import driver_state

        assert driver_state(run) == "lost"
    finally:
        child.wait()


def test_a_driver_whose_process_id_another_process_took_is_lost(finished, tmp_path):
    """Found by a probe: a killed driver's process id, taken by another process (ids are reused: this machine wrapped
    them within 30 minutes), made its run directory "running" for good: every rerun refused, exit 3. The heartbeat
    names the process by id and start time; another process under the id is not the driver. The live driver is."""
    from twin.campaign.heartbeat import driver_state

    run, _ = _copy(finished, tmp_path)
    write_heartbeat(run, "running")
    assert driver_state(run) == "running"  # this process: the driver itself
    beat = json.loads((run / "driver.json").read_text())
    assert isinstance(beat["start"], int)
    (run / "driver.json").write_text(json.dumps(beat | {"pid": 1}))  # another process under the id (init)
    assert driver_state(run) == "lost"
    (run / "driver.json").write_text(json.dumps({k: v for k, v in beat.items() if k != "start"} | {"pid": 1}))
    assert driver_state(run) == "running"  # a heartbeat of an older twin names no start time: judged as before


def test_a_heartbeat_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path, caplog):
    """Found by a probe: a full disk ended a workflow driver with an uncaught OSError from its heartbeat."""
    import logging
    import os

    from twin.campaign import heartbeat

    run = tmp_path / "run"
    run.mkdir()
    (run / "driver.json").mkdir()  # the heartbeat's place cannot take a file
    with caplog.at_level(logging.WARNING, logger="twin.campaign"):
        for _ in range(3):
            heartbeat.write_heartbeat(run, "running")
    said = [r.getMessage() for r in caplog.records if "cannot write driver.json" in r.getMessage()]
    assert len(said) == 1 and "twin status shows no progress of this run until it can" in said[0], said
    assert os.path.isdir(run / "driver.json") and sorted(p.name for p in run.iterdir()) == ["driver.json"]


UNREADABLE = ("done.json is unreadable ({why}), so its outputs cannot be checked against what the run recorded: run "
              "the campaign again: the resume sets done.json aside and writes every output again from the checkpoints")


@pytest.mark.parametrize("text, why, truncate", [
    # the tester's case: done.json replaced with garbage and posterior.nc truncated (it said "1 done", exit 0)
    ("{garbage", "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", True),
    ('{"outputs": 5}', "its outputs are not a list of file names", False),  # the resume raised TypeError
    ("[1, 2]", "a JSON list, not an object", False),
    ("", "empty", False),
])
def test_an_unreadable_done_json_is_damage_and_the_resume_repairs_it(finished, tmp_path, capsys, text, why, truncate):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    run, exp = _copy(finished, tmp_path)
    size = (exp / "posterior.nc").stat().st_size
    layout.done_marker(exp).write_text(text)
    if truncate:  # and decision.json, which finalize does not verify: written again all the same
        os.truncate(exp / "posterior.nc", size // 2)
        (exp / "decision.json").write_text("{not json")
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert lines[0] == f"{run}: 1 experiment(s), 0 done; driver finished"
    assert _line(lines) == f"{NAME}: damaged, 4/4 cycles; " + UNREADABLE.format(why=why)
    assert err.splitlines() == [f"error: experiment {NAME} damaged: " + UNREADABLE.format(why=why)]

    run_online(load_campaign(run / "campaign.yaml"), MPI.COMM_SELF, run)  # what the advice says
    code, lines, err = _status(run, capsys)
    assert code == EXIT_COMPLETE and _line(lines) == f"{NAME}: done, 4/4 cycles", (lines, err)
    from twin.io.netcdf import verify_netcdf

    assert verify_netcdf(exp / "posterior.nc")[0]  # written again (its provenance names this run directory)
    assert json.loads(layout.done_marker(exp).read_text())["sizes"]["posterior.nc"] == \
        (exp / "posterior.nc").stat().st_size
    assert isinstance(json.loads((exp / "decision.json").read_text()), dict)
    assert [p.name for p in exp.glob("done.json.damaged-*")], sorted(p.name for p in exp.iterdir())


def test_a_check_that_could_not_run_is_not_damage(finished, tmp_path, capsys, monkeypatch):
    """The last checkpoint's verification runs in a process of its own; when that process cannot check (here PETSc
    cannot start on a malformed .petscrc in the working directory), status says so with the cause, exit 1, and does
    not call the run damaged or advise deleting done.json (it did)."""
    run, _ = _copy(finished, tmp_path)
    here = tmp_path / "rcdir"
    here.mkdir()
    (here / ".petscrc").write_text("garbage line here\n")
    monkeypatch.chdir(here)
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION, (lines, err)
    assert lines[0] == f"{run}: 1 experiment(s), 0 done; driver finished"
    line = _line(lines)
    head = f"{NAME}: unverified, 4/4 cycles; the last checkpoint checkpoint/cycle_0004.h5 could not be verified ("
    assert line.startswith(head), line
    assert line.endswith("); nothing was found damaged: run twin status again once that is fixed"), line
    assert "Unknown first token in options file .petscrc line 1: garbage" in line[len(head):], line
    assert "damaged," not in line and "delete" not in line and "Traceback" not in err
    said = line[len(f"{NAME}: unverified, 4/4 cycles; "):]
    assert err.splitlines() == [f"error: experiment {NAME} unverified: {said}"]
    # the same run verified from a clean directory is done
    monkeypatch.chdir(tmp_path)
    code, lines, _ = _status(run, capsys)
    assert code == EXIT_COMPLETE and _line(lines) == f"{NAME}: done, 4/4 cycles"


def test_the_cause_of_a_check_that_gave_no_answer_is_one_line():
    from twin.campaign.status import _cause

    petsc = ("[0]PETSC ERROR: --------------------- Error Message ------------------\n"
             "[0]PETSC ERROR: Invalid argument\n[0]PETSC ERROR: Unknown first token in options file x line 1: y\n"
             "[0]PETSC ERROR: See https://petsc.org/release/faq/ for trouble shooting.\n"
             "[0]PETSC ERROR: #1 PetscOptionsInsertFilePetsc() at options.c:526\n"
             "Traceback (most recent call last):\n  File \"x\", line 1\npetsc4py.PETSc.Error: error code 62\n")
    assert _cause(petsc, 1) == ("petsc4py.PETSc.Error: error code 62: Invalid argument: Unknown first token in "
                                "options file x line 1: y")
    assert _cause("noise\nerror: PETSc could not start: bad file; fix it\nTraceback\n", 2) == \
        "PETSc could not start: bad file; fix it"
    assert _cause("Traceback (most recent call last):\nModuleNotFoundError: No module named 'h5py'\n", 1) == \
        "ModuleNotFoundError: No module named 'h5py'"
    assert _cause("", -9) == "killed by SIGKILL"
    assert _cause("", 3) == "exit status 3, no output"


def test_an_experiment_removed_or_never_set_up_is_said(finished, tmp_path, capsys):
    """Exit 1 with no line (found by trying): an experiment matrix.json lists whose directory was removed, and a run
    directory whose experiments/ holds none with its experiment.yaml."""
    run, exp = _copy(finished, tmp_path)
    shutil.rmtree(exp)
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert err.strip().splitlines() == [
        f"error: experiment {NAME} is gone: matrix.json lists it, {exp} holds no experiment.yaml (removed?); run the "
        "campaign again to set it up and run it"]
    (run / "matrix.json").unlink()
    code, lines, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert err.strip().splitlines() == [
        f"error: no experiment in {run / 'experiments'} (none has its experiment.yaml): the campaign was not set up "
        "here, or its experiments were removed; run the campaign again"]


def test_an_experiment_file_that_cannot_be_read_says_why_its_cycle_count_is_unknown(finished, tmp_path, capsys):
    """Found by a probe: with an unrelated broken plugin installed (every campaign file then fails to load), a
    finished experiment showed 'done, 4/? cycles' and nothing said why."""
    run, exp = _copy(finished, tmp_path)
    cfg = layout.config_file(exp)
    cfg.write_text(cfg.read_text().replace("schema_version: 1", "schema_version: 99"))
    code, lines, err = _status(run, capsys)
    line = _line(lines)
    assert line.startswith(f"{NAME}: done, 4/? cycles; cycle count unknown: "), line
    assert "schema_version" in line, line
