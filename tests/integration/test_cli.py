"""The twin command as a user runs it: info (serial and under mpiexec), validate, run of the quickstart."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
TWIN = [sys.executable, "-m", "twin.cli"]


def _run(cmd, **kw):
    # stdin closed: mpiexec forwards its stdin to rank 0, and a test runner's may be its control channel (xdist)
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=kw.pop("cwd", ROOT), timeout=300,
                          stdin=subprocess.DEVNULL, **kw)


def _h5py_mpi(prefix):
    out = _run(prefix + [sys.executable, "-c", "import h5py; print(h5py.get_config().mpi)"])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[0] == "True"


def test_info_reports_parallel_hdf5_as_loaded_serially():
    out = _run(TWIN + ["info", "--json"])
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["ranks"] == 1 and info["petsc"].count(".") == 2 and info["cores"] >= 1
    assert info["hdf5_parallel"] is _h5py_mpi([])
    # Open MPI's version string ends in a NUL byte, which made `twin info | grep kinds` say "binary file matches"
    text = _run(TWIN + ["info"])
    assert text.returncode == 0 and "\x00" not in text.stdout and "MPI" in text.stdout, text.stdout


@pytest.mark.parametrize("args", [["info"], ["validate", *sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))]])
def test_output_to_a_reader_that_stopped_reading_ends_quietly(args):
    """Found by a probe: ``twin info | head -1`` died in PETSc's error banner and MPI_ABORT (status 59: PETSc's start
    installs its SIGPIPE handler), ``twin status RUN | head -1`` in a BrokenPipeError traceback (status 1). The
    reader here has gone before the command writes anything: status 141, as a shell reports a process SIGPIPE ended,
    and nothing on stderr. (``info`` starts PETSc; ``validate`` does not.)"""
    proc = subprocess.Popen(TWIN + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=ENV, cwd=ROOT)
    proc.stdout.close()  # the reader stops reading before the first line
    err = proc.stderr.read().decode(errors="replace")
    assert proc.wait(timeout=300) == 141, err
    assert err == "", err


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
def test_info_reports_parallel_hdf5_under_mpiexec():
    out = _run([MPIEXEC, "-n", "2"] + TWIN + ["info", "--json"])
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)  # rank 0 prints, the other rank stays quiet
    assert info["ranks"] == 2
    assert info["hdf5_parallel"] is _h5py_mpi([MPIEXEC, "-n", "1"])
    debian_mpi_h5py = Path("/usr/lib/python3/dist-packages/h5py._debian_h5py_mpi-3.7.0.dist-info").exists()
    if debian_mpi_h5py:
        # Debian's MPI build of h5py is what loads under mpiexec: twin must say so.
        assert info["hdf5_parallel"] is True


def test_validate_all_configs():
    out = _run(TWIN + ["validate", *sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))])
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def test_unknown_double_dash_option_is_refused():
    out = _run(TWIN + ["run", "configs/quickstart.yaml", "--bogus"])
    assert out.returncode == 2 and "PETSc options start with a single '-'" in out.stderr


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
def test_quickstart_runs_on_two_ranks_and_matches_one_rank(tmp_path):
    import numpy as np
    import xarray as xr

    two = _run([MPIEXEC, "-n", "2"] + TWIN + ["run", "configs/quickstart.yaml", "-o", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr
    assert f"done: outputs in {tmp_path / 'two'}" in two.stdout
    one = _run(TWIN + ["run", "configs/quickstart.yaml", "-o", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    with xr.open_dataset(tmp_path / "two" / "forecast.nc") as f2, xr.open_dataset(tmp_path / "one" / "forecast.nc") as f1:
        assert f2["T"].shape == (1, 6, 64, 64) and f2["T"].attrs["units"] == "K"
        assert f2.attrs["Conventions"] == "CF-1.10" and "schema_version: 1" in f2.attrs["twin_config"]
        assert int(f2.attrs["twin_ranks"]) == 2
        # 1 and 2 ranks agree to the solver tolerance (ksp_rtol 1e-10 in the file).
        assert np.max(np.abs(f2["T"].values - f1["T"].values)) < 1e-7
    with xr.open_dataset(tmp_path / "two" / "qoi.nc", decode_times=False) as q:
        heat = q["heat_content"].values
        # Heat leaves through the Dirichlet sides: the content falls monotonically.
        assert np.all(np.diff(heat) < 0) and heat[-1] > 0.1 * heat[0]
    summary = _run(TWIN + ["inspect", str(tmp_path / "two")])
    assert summary.returncode == 0, summary.stderr
    assert "forecast (CF-1.10)" in summary.stdout and summary.stdout.count("checksum: ok") == 2
    # A corrupted output is reported, not silently summarised.
    data = bytearray((tmp_path / "two" / "forecast.nc").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "two" / "forecast.nc").write_bytes(bytes(data))
    broken = _run(TWIN + ["inspect", str(tmp_path / "two" / "forecast.nc")])
    assert "checksum: ok" not in broken.stdout


def test_run_reports_config_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "quickstart.yaml").read_text().replace("shape: [64, 64]", "shape: [64, -1]"))
    out = _run(TWIN + ["run", str(bad)])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}:" in out.stderr and "greater than or equal to 1" in out.stderr


def test_run_as_workflow_defaults_to_the_outputs_directory(tmp_path):
    """`twin run FILE` with resources.workers > 1 runs the Parsl workflow in outputs.directory when no -o is given
    (it used to fail on Path(None))."""
    sys.path.insert(0, str(Path(__file__).parent))
    from campaign_case import write_campaign

    f = write_campaign(tmp_path / "c.yaml", cycles=1)
    f.write_text(f.read_text().replace("ranks_per_member: 2", "ranks_per_member: 1"))
    r = _run(TWIN + ["run", str(f)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    exp = tmp_path / "runs" / "l96camp" / "experiments" / "l96camp"
    assert (exp / "posterior.nc").is_file(), sorted(p.name for p in (tmp_path / "runs").rglob("*"))[:20]
