"""`twin inspect` on a campaign run directory: it finds the checkpoints of every experiment, and it exits non-zero
(naming the file) when a check fails, here after one byte of a checkpoint's field data is flipped."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from twin.cli import main
from twin.core.grid import Grid
from twin.io.checkpoint import write_checkpoint
from twin.io.inspect import examine
from twin.io.netcdf import DiagnosticsFile

pytestmark = pytest.mark.filterwarnings("ignore:`product` is deprecated:DeprecationWarning")

EXPERIMENTS = ("alpha", "beta")
#: Open MPI refuses to start as root without these (containers run tests as root)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


@pytest.fixture
def run_dir(tmp_path, comm_self):
    """A campaign's layout: ``experiments/<name>/checkpoint/cycle_000k.h5`` (3 cycles) and a diagnostics file each;
    nothing in ``run/checkpoint``."""
    run = tmp_path / "run"
    g = Grid(comm_self, (6, 5), ((0, 1), (0, 1)))
    try:
        for name in EXPERIMENTS:
            exp = run / "experiments" / name
            (exp / "checkpoint").mkdir(parents=True)
            for cycle in range(3):
                members = [g.from_function(lambda X, Y, m=m, c=cycle: X * (m + 1) + c) for m in range(4)]
                write_checkpoint(exp / "checkpoint" / f"cycle_{cycle:04d}.h5", comm_self, cycle=cycle,
                                 time=0.5 * cycle, fields={"u": (g, members)}, parameters={"k": np.arange(4.0)},
                                 arrays={"alive": np.ones(4, bool)})
                for v in members:
                    v.destroy()
            DiagnosticsFile(exp / "diagnostics.nc", comm_self).append(0.0, {"rmse": 1.0}, cycle=0)
    finally:
        g.destroy()
    return run


def _flip_field_byte(path) -> None:
    """Flip one byte inside the stored data of ``/fields/u`` (its file offset from HDF5, so the byte is data)."""
    with h5py.File(path, "r") as f:
        offset = f["fields/u"].id.get_offset()
    assert offset is not None
    with open(path, "r+b") as fh:
        fh.seek(offset + 37)
        byte = fh.read(1)
        fh.seek(offset + 37)
        fh.write(bytes([byte[0] ^ 0x10]))


def test_run_directory_checkpoints_of_every_experiment(run_dir, capsys):
    result = examine(run_dir)
    assert result.ok and result.failures == []
    assert "checkpoints: none" not in result.text
    for name in EXPERIMENTS:
        assert f"checkpoints in experiments/{name}/checkpoint: 3" in result.text
    assert result.text.count("cycle_0002.h5: ok (sha256:") == 2 and result.text.count("<- latest good") == 2
    assert result.text.count("diagnostics (CF-1.10)") == 2

    assert main(["inspect", str(run_dir)]) == 0
    out = capsys.readouterr()
    assert "checkpoints in experiments/beta/checkpoint: 3" in out.out and out.err == ""


def test_corrupted_checkpoint_fails_the_check(run_dir, capsys):
    bad = run_dir / "experiments" / "beta" / "checkpoint" / "cycle_0002.h5"
    _flip_field_byte(bad)

    result = examine(run_dir)
    assert not result.ok and len(result.failures) == 1
    assert str(bad) in result.failures[0] and "/fields/u" in result.failures[0] and "corrupted" in result.failures[0]
    beta = result.text.split("checkpoints in experiments/beta/checkpoint")[1]
    assert "cycle_0002.h5: FAILED" in beta and "cycle_0001.h5: ok" in beta
    assert "cycle_0001.h5: ok" in beta.split("<- latest good")[0].splitlines()[-1]

    # the command: the summary on stdout, one error line naming the file on stderr, exit status 1
    assert main(["inspect", str(run_dir)]) == 1
    out = capsys.readouterr()
    errors = out.err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: checkpoint {bad} is not usable")
    assert main(["inspect", str(bad)]) == 1
    assert "checksum: FAILED" in capsys.readouterr().out
    # the healthy experiment alone still passes
    assert main(["inspect", str(run_dir / "experiments" / "alpha")]) == 0


def test_exit_status_of_the_command(run_dir):
    _flip_field_byte(run_dir / "experiments" / "alpha" / "checkpoint" / "cycle_0000.h5")
    proc = subprocess.run([sys.executable, "-m", "twin.cli", "inspect", str(run_dir)], capture_output=True,
                          text=True, timeout=120, env=ENV, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("error: checkpoint") == 1 and "cycle_0000.h5" in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "twin.cli", "inspect", str(run_dir / "nope")],
                             capture_output=True, text=True, timeout=120, env=ENV, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_a_directory_twin_did_not_write_is_a_bad_path(tmp_path, capsys):
    """``twin inspect /etc`` said 'run directory', listed no checkpoint and exited 0."""
    from twin.cli import main

    (tmp_path / "notes.txt").write_text("mine\n")
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not a twin run directory" in err and "Traceback" not in err


def test_an_output_a_finished_experiment_promised_and_lost_fails_the_check(run_dir, capsys):
    """``twin inspect RUN_DIR`` checked the files that are there and exited 0 when a finished experiment's output was
    deleted or cut (twin status and twin report called it damaged): one error line each, exit 1."""
    from twin.campaign.status import mark_done

    alpha, beta = (run_dir / "experiments" / name for name in EXPERIMENTS)
    mark_done(alpha)
    mark_done(beta)
    assert main(["inspect", str(run_dir)]) == 0
    capsys.readouterr()
    (alpha / "diagnostics.nc").unlink()
    with open(beta / "diagnostics.nc", "r+b") as f:
        f.truncate(100)
    assert main(["inspect", str(run_dir)]) == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert f"error: {alpha / 'diagnostics.nc'}: missing, though the run finished with it (run the campaign again to " \
           "write it)" in errors, errors
    assert any(ln.startswith(f"error: {beta / 'diagnostics.nc'}: 100 bytes, ") for ln in errors), errors
