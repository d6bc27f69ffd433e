"""twin.io on two ranks: checkpoint round trips (parallel HDF5 collective writes when h5py has MPI, gathered writes
otherwise), decomposition-independent reading and verification, collective error reporting, NetCDF outputs gathered
to rank 0, and a bitwise restart of a PETSc TS run.

Run under ``mpiexec -n 2``; every test makes the same collective calls in the same order on both ranks.
"""

import os
import shutil
import stat
import tempfile

import h5py
import numpy as np
import pytest
from export_case import START, export, gauges, heat_model
from mpi4py import MPI

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.io.checkpoint import (CheckpointReader, checkpoint_path, latest_good_checkpoint, parallel_hdf5_available,
                                read_checkpoint, write_checkpoint)
from twin.io.netcdf import DiagnosticsFile, VariableMeta, gather_members, read_ensemble, verify_netcdf, write_ensemble
from twin.io.provenance import collect, prepare_run_directory
from twin.observations.dsg import read_dsg


def _load_restart_case():
    """The restart comparison shared with tests/integration (loaded by path: 'tests' is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "integration" / "test_io_restart.py"
    spec = importlib.util.spec_from_file_location("twin_test_io_restart", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_restart_comparison


run_restart_comparison = _load_restart_case()

pytestmark = pytest.mark.filterwarnings("ignore:`product` is deprecated:DeprecationWarning")

WORLD = MPI.COMM_WORLD


@pytest.fixture
def shared_dir():
    path = tempfile.mkdtemp(prefix="twin-io-mpi-") if WORLD.rank == 0 else None
    path = WORLD.bcast(path, root=0)
    yield path
    WORLD.barrier()
    if WORLD.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _fields(g):
    u = g.from_function(lambda X, Y: np.stack([np.sin(X) + 7 * Y, X * Y], axis=-1))
    ens = [g.from_function(lambda X, Y, m=m: np.stack([X + m, Y - m], axis=-1)) for m in range(3)]
    return u, ens


@pytest.mark.parametrize("parallel", [True, False])
def test_checkpoint_round_trip_two_ranks(shared_dir, parallel):
    if parallel and not parallel_hdf5_available(WORLD):
        pytest.skip("h5py is not built with MPI here (h5py.get_config().mpi is False)")
    g = Grid(WORLD, (9, 7), ((0, 1), (0, 2)), dof=2)
    u, ens = _fields(g)
    rng = np.random.default_rng(WORLD.bcast(123))
    path = os.path.join(shared_dir, "cycle_0005.h5")
    checksum = write_checkpoint(path, WORLD, cycle=5, time=0.5, fields={"u": (g, u), "ens": (g, ens)},
                                parameters={"D": 0.1}, arrays={"h": np.arange(4.0)}, rng={"r": rng},
                                meta={"inflation": [1.1, 1.2]}, provenance=collect(WORLD, config_text="a: 1\n"),
                                parallel=parallel)
    assert WORLD.allgather(checksum) == [checksum] * 2
    u2, ens2 = g.create_global(), [g.create_global() for _ in ens]
    data = read_checkpoint(path, WORLD, into={"u": (g, u2), "ens": (g, ens2)})
    assert np.array_equal(u2.getArray(), u.getArray())
    assert all(np.array_equal(a.getArray(), b.getArray()) for a, b in zip(ens, ens2))
    assert data.meta == {"inflation": [1.1, 1.2]} and data.parameters == {"D": 0.1}
    assert data.provenance.ranks == 2 and data.checksum == checksum
    assert data.rng["r"].random() == rng.random()
    # read with another decomposition: each rank alone, serially, verifies every block and sees the global field
    full = g.allgather(u)
    single = Grid(MPI.COMM_SELF, (9, 7), ((0, 1), (0, 2)), dof=2)
    with CheckpointReader(path, MPI.COMM_SELF) as r:
        assert np.array_equal(r.read_field("u"), full)
        v = single.create_global()
        r.load("u", single, v)
        assert np.array_equal(v.getArray().reshape(7, 9, 2), full)
    if parallel:
        with h5py.File(path, "r") as f:  # one block per rank and member in the manifest
            assert f["manifest"][...].tobytes().count(b'"blocks"') >= 2
    single.destroy()
    g.destroy()


def test_corruption_reported_on_every_rank(shared_dir):
    g = Grid(WORLD, (8, 8), ((0, 1), (0, 1)))
    u = g.from_function(lambda X, Y: X - Y)
    run = os.path.join(shared_dir, "run")
    prepare_run_directory(run, comm=WORLD)
    for cycle in (1, 2):
        write_checkpoint(checkpoint_path(run, cycle), WORLD, cycle=cycle, time=float(cycle), fields={"u": (g, u)})
    WORLD.barrier()
    if WORLD.rank == 0:  # flip the last byte of the field's data: a block verified by one rank only
        with h5py.File(checkpoint_path(run, 2), "r") as f:
            offset = f["fields/u"].id.get_offset() + f["fields/u"].id.get_storage_size() - 1
        with open(checkpoint_path(run, 2), "r+b") as fh:
            fh.seek(offset)
            b = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([b[0] ^ 0xFF]))
    WORLD.barrier()
    with pytest.raises(OutputError, match=r"cycle_0002.h5 is not usable: data of /fields/u"):
        read_checkpoint(checkpoint_path(run, 2), WORLD)
    assert latest_good_checkpoint(run, WORLD) == checkpoint_path(run, 1)
    g.destroy()


def test_netcdf_outputs_gathered_on_two_ranks(shared_dir):
    g = Grid(WORLD, (6, 5), ((0, 3), (0, 5)))
    vecs = [g.from_function(lambda X, Y, m=m: X * 10 + Y + m) for m in range(2)]
    stacked = gather_members(g, vecs)
    assert (stacked is None) == (WORLD.rank != 0)
    path = os.path.join(shared_dir, "posterior.nc")
    prov = collect(WORLD, sensitive=True)
    write_ensemble(path, g, {"c": None if stacked is None else stacked[:, None]}, [5.0], comm=WORLD,
                   variables={"c": VariableMeta("concentration", "mol m-3")}, provenance=prov, sensitive=True)
    ds = read_ensemble(path)
    X, Y = np.meshgrid(g.axis_coordinates(0), g.axis_coordinates(1))
    assert np.array_equal(ds["c"].values[1, 0], X * 10 + Y + 1)
    assert ds.attrs["twin_ranks"] == 2 and ds.attrs["twin_host"] == "redacted"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    d = DiagnosticsFile(os.path.join(shared_dir, "diagnostics.nc"), WORLD)
    for c in range(3):
        assert d.append(float(c), {"cost": 10.0 - c}, cycle=c) == c + 1
    assert list(d.read()["cost"].values) == [10.0, 9.0, 8.0]
    # a twin experiment's observation file, written collectively (rank 0 writes) on a grid over both ranks
    model = heat_model(WORLD, 2)
    obs = gauges(model)
    opath = export(os.path.join(shared_dir, "obs.nc"), WORLD, model, obs, np.ones((3, obs.n_obs)))
    model.grid.destroy()
    model.destroy()
    table = read_dsg(opath, {"T": {"name": "obs_T", "error": "obs_T_error", "units": "K"}}, start=START)
    assert np.array_equal(table.position, np.repeat(obs.locations, 3, axis=0))
    assert all(verify_netcdf(p) == (True, "ok") for p in (path, d.path, opath))
    for v in vecs:
        v.destroy()
    g.destroy()


def test_restart_bitwise_two_ranks_and_agrees_with_one_rank(shared_dir):
    run = os.path.join(shared_dir, "heat")
    prepare_run_directory(run, comm=WORLD)
    full, restarted, no_rng, (t_full, t_restart) = run_restart_comparison(WORLD, run)
    assert t_full == t_restart
    assert full.tobytes() == restarted.tobytes()
    assert np.abs(full - no_rng).max() > 1e-4
    serial_dir = os.path.join(shared_dir, f"serial{WORLD.rank}")
    prepare_run_directory(serial_dir)
    one_rank, _, _, _ = run_restart_comparison(MPI.COMM_SELF, serial_dir)
    assert np.abs(one_rank - full).max() <= 1e-14
