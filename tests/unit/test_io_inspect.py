"""`twin inspect`: summaries of checkpoints, NetCDF files and run directories, with checksum status."""

import numpy as np
import pytest
from export_case import export, gauges, heat_model

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.io.checkpoint import checkpoint_path, write_checkpoint
from twin.io.inspect import inspect
from twin.io.netcdf import DiagnosticsFile
from twin.io.provenance import collect, prepare_run_directory

pytestmark = pytest.mark.filterwarnings("ignore:`product` is deprecated:DeprecationWarning")


def test_inspect_run_directory(tmp_path, comm_self):
    run = prepare_run_directory(tmp_path / "run")
    g = Grid(comm_self, (5, 4), ((0, 1), (0, 1)))
    prov = collect(comm_self, config_text="name: demo\n")
    for cycle in (0, 1):
        u = g.from_function(lambda X, Y: X + cycle)
        write_checkpoint(checkpoint_path(run, cycle), comm_self, cycle=cycle, time=10.0 * cycle,
                         fields={"u": (g, u)}, rng={"noise": np.random.default_rng(cycle)},
                         meta={"inflation": 1.02}, provenance=prov)
        u.destroy()
    DiagnosticsFile(run / "diagnostics.nc", comm_self, provenance=prov).append(0.0, {"cost": 3.0}, cycle=0)
    model = heat_model(comm_self, 2)
    export(run / "obs.nc", comm_self, model, gauges(model), np.ones((3, 5)))
    model.grid.destroy()
    model.destroy()

    one = inspect(checkpoint_path(run, 1))
    assert "twin checkpoint" in one and "cycle 1, time 10.0" in one and "checksum: ok (sha256:" in one
    assert "u float64 (4, 5)" in one and "noise (PCG64)" in one and "meta: inflation" in one
    assert "config_sha256: " + prov.config_sha256 in one

    # damage cycle 1: the summary says so and points at cycle 0 as the latest good one
    with open(checkpoint_path(run, 1), "r+b") as f:
        f.truncate(2000)
    text = inspect(run)
    assert "cycle_0001.h5: FAILED: checkpoint" in text and "truncated" in text
    assert "cycle_0000.h5: ok (sha256:" in text and text.count("<- latest good") == 1
    assert "cycle_0000.h5: ok" in text.split("<- latest good")[0].splitlines()[-1]
    assert "diagnostics (CF-1.10)" in text and "observations (CF-1.10)" in text and "checksum: ok" in text
    assert "cost(time) float64 [1]" in text
    g.destroy()


def test_inspect_missing_and_unknown(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        inspect(tmp_path / "nope.h5")
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a twin output" in inspect(tmp_path / "notes.txt")


def test_inspect_refuses_a_pipe_rather_than_waiting_for_it(tmp_path):
    """A FIFO named like an output (found by trying: twin inspect waited on it for ever)."""
    import os

    fifo = tmp_path / "fifo.nc"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is not a regular file"):
        inspect(fifo)


def test_inspect_files_twin_did_not_write(tmp_path):
    """Someone else's HDF5 file was "twin checkpoint, checksum FAILED"; an empty .nc got xarray's advice to install
    IO backends (found by trying)."""
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1.0, 2.0]
    assert inspect(tmp_path / "other.h5") == f"{tmp_path / 'other.h5'}: HDF5, not written by twin (no format " \
                                             "attribute 'twin-checkpoint')"
    (tmp_path / "empty.nc").write_bytes(b"")
    assert inspect(tmp_path / "empty.nc") == f"{tmp_path / 'empty.nc'}: unreadable NetCDF (not NetCDF: empty, or not " \
                                             "NetCDF/HDF5 bytes)"
