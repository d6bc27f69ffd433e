"""HDF5 checkpoints: round trip of every content type, integrity checks, fall-back to the previous good cycle."""

import os
import shutil

import h5py
import numpy as np
import pytest

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.io.checkpoint import (CheckpointReader, CheckpointWriter, checkpoint_path, latest_good_checkpoint,
                                list_checkpoints, read_checkpoint, write_checkpoint)
from twin.io.provenance import collect

# Debian h5py 3.7 calls np.product, deprecated in NumPy 1.25 (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:`product` is deprecated:DeprecationWarning")


@pytest.fixture
def grids(comm_self):
    g2 = Grid(comm_self, (7, 5), ((0.0, 1.0), (-1.0, 1.0)), dof=2, name="sw")
    g3 = Grid(comm_self, (4, 3, 2), ((0, 1), (0, 1), (0, 2)), periodic=(True, False, False), name="box")
    yield g2, g3
    g2.destroy()
    g3.destroy()


def _content(g2, g3):
    rng = np.random.default_rng(11)
    u = g2.from_function(lambda X, Y: np.stack([np.sin(3 * X) + Y, X * Y], axis=-1))
    ens = [g3.from_function(lambda X, Y, Z, m=m: X + 10 * Y + 100 * Z + 1000 * m) for m in range(4)]
    k = g3.from_function(lambda X, Y, Z: np.exp(-X))
    return u, ens, k, rng


def _write(path, g2, g3, comm, **kw):
    u, ens, k, rng = _content(g2, g3)
    rng.random(5)  # advance the stream: the checkpoint must hold the current state, not the seed
    checksum = write_checkpoint(
        path, comm, cycle=3, time=1.25, fields={"u": (g2, u), "ensemble": (g3, ens)},
        parameters={"k": (g3, k), "D": 2.5e-3, "r": np.array([0.1, 0.2, 0.3, 0.4])},
        arrays={"history": np.arange(12, dtype=np.int32).reshape(3, 4), "flags": np.array([True, False])},
        rng={"model_error": rng, "mt": np.random.Generator(np.random.MT19937(4))},
        meta={"coupler": {"iterations": [3, 4, 5], "residual": 1e-9}, "inflation": 1.07, "label": "x"},
        provenance=collect(comm, config_text="seed: 11\n"), **kw)
    return checksum, (u, ens, k, rng)


def test_round_trip_all_content_types(tmp_path, grids, comm_self):
    g2, g3 = grids
    path = checkpoint_path(tmp_path, 3)
    path.parent.mkdir()
    checksum, (u, ens, k, rng) = _write(path, g2, g3, comm_self)
    assert checksum.startswith("sha256:") and len(checksum) == 7 + 64
    u2 = g2.create_global()
    ens2 = [g3.create_global() for _ in ens]
    k2 = g3.create_global()
    data = read_checkpoint(path, comm_self, into={"u": (g2, u2), "ensemble": (g3, ens2), "parameters/k": (g3, k2)})
    assert np.array_equal(u2.getArray(), u.getArray())
    assert all(np.array_equal(a.getArray(), b.getArray()) for a, b in zip(ens, ens2))
    assert np.array_equal(k2.getArray(), k.getArray())
    assert (data.cycle, data.time, data.checksum) == (3, 1.25, checksum)
    assert data.meta == {"coupler": {"iterations": [3, 4, 5], "residual": 1e-9}, "inflation": 1.07, "label": "x"}
    assert data.parameters["D"] == 2.5e-3 and np.array_equal(data.parameters["r"], [0.1, 0.2, 0.3, 0.4])
    assert data.arrays["history"].dtype == np.int32 and data.arrays["history"][2, 3] == 11
    assert data.arrays["flags"].dtype == bool
    # the restored generators continue the saved streams exactly
    assert np.array_equal(data.rng["model_error"].random(8), rng.random(8))
    assert np.array_equal(data.rng["mt"].integers(0, 2**31, 5),
                          np.random.Generator(np.random.MT19937(4)).integers(0, 2**31, 5))
    assert data.provenance.config == "seed: 11\n" and data.provenance.end_time
    assert data.fields["ensemble"].members == 4 and data.fields["u"].grid["dof"] == 2
    with h5py.File(path) as f:  # natural C order of the global grid, documented axes
        assert f["fields/u"].shape == (5, 7, 2) and f["fields/ensemble"].shape == (4, 2, 3, 4)
        assert f["fields/ensemble"][2, 1, 0, 3] == pytest.approx(g3.axis_coordinates(0)[3] + 10 * g3.axis_coordinates(
            1)[0] + 100 * g3.axis_coordinates(2)[1] + 2000)
    for v in (u, u2, k, k2, *ens, *ens2):
        v.destroy()


def test_reader_refuses_wrong_grid_and_member_count(tmp_path, grids, comm_self):
    g2, g3 = grids
    path = tmp_path / "c.h5"
    _write(path, g2, g3, comm_self, digest="sha256")
    other = Grid(comm_self, (7, 6), ((0.0, 1.0), (-1.0, 1.0)), dof=2)
    with CheckpointReader(path, comm_self) as r:
        assert r.digest == "sha256"
        with pytest.raises(OutputError, match=r"field 'u' is on a grid of shape \[7, 5\] with dof 2"):
            r.load("u", other, other.create_global())
        with pytest.raises(OutputError, match="needs a list of 4 Vecs"):
            r.load("ensemble", g3, [g3.create_global()])
        with pytest.raises(OutputError, match="has no field 'v'"):
            r.load("v", g2, g2.create_global())
    other.destroy()


def test_bad_inputs_refused_before_writing(tmp_path, grids, comm_self):
    g2, _ = grids
    with pytest.raises(OutputError, match="not JSON-able"):
        write_checkpoint(tmp_path / "a.h5", comm_self, cycle=0, time=0.0, meta={"x": object()})
    with pytest.raises(OutputError, match="only numeric and boolean"):
        write_checkpoint(tmp_path / "b.h5", comm_self, cycle=0, time=0.0, arrays={"s": np.array(["a"])})
    assert os.listdir(tmp_path) == []  # no partial file, no temporary file


def _corrupt_data_byte(path):
    with h5py.File(path, "r") as f:
        offset = f["fields/u"].id.get_offset() + 17
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


def _corrupt_meta_byte(path):
    raw = bytearray(open(path, "rb").read())
    i = raw.find(b'"residual"')
    assert i > 0
    raw[i + 2] ^= 0x20  # "residual" -> "rEsidual" inside the JSON attribute
    open(path, "wb").write(bytes(raw))


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


def _delete_dataset(path):
    with h5py.File(path, "r+") as f:
        del f["arrays/history"]


def _drop_checksum(path):
    with h5py.File(path, "r+") as f:
        del f.attrs["checksum"]


def test_a_file_this_process_wrote_or_verified_is_checked_by_its_bytes_then_in_full_once_changed(
        tmp_path, grids, comm_self, monkeypatch):
    """Re-opening a checkpoint this process wrote (or verified) checks its bytes' CRC-32 and the manifest checksum
    only; a byte changed in place, at once after the write (same inode, same size, same coarse timestamps), makes it
    a new version that is verified in full and refused."""
    g2, g3 = grids
    path = tmp_path / "c.h5"
    _write(path, g2, g3, comm_self)
    walked = []
    full = CheckpointReader._check_objects
    monkeypatch.setattr(CheckpointReader, "_check_objects", lambda self: walked.append(1) or full(self))
    for _ in range(3):
        CheckpointReader(path, comm_self).close()
    assert walked == []
    _corrupt_data_byte(path)
    with pytest.raises(OutputError, match=r"data of /fields/u .* do not match their digest"):
        read_checkpoint(path, comm_self)
    assert walked == [1]


def test_a_copy_verifies_in_full(tmp_path, grids, comm_self, monkeypatch):
    """The manifest the writer makes from the attributes it wrote (not read back) is the one a full verification
    of the file in another process computes: a byte-for-byte copy (a new file to this process) verifies in full."""
    g2, g3 = grids
    path = tmp_path / "c.h5"
    checksum, _ = _write(path, g2, g3, comm_self)
    copy = tmp_path / "copy.h5"
    shutil.copyfile(path, copy)
    walked = []
    full = CheckpointReader._check_objects
    monkeypatch.setattr(CheckpointReader, "_check_objects", lambda self: walked.append(1) or full(self))
    assert read_checkpoint(copy, comm_self).checksum == checksum
    assert walked == [1]


@pytest.mark.parametrize("damage, message", [
    (_corrupt_data_byte, r"data of /fields/u .* do not match their digest"),
    (_corrupt_meta_byte, r"attributes of /meta changed or corrupted"),
    (_truncate, r"cannot be opened as HDF5, truncated"),
    (_delete_dataset, r"missing dataset /arrays/history"),
    (_drop_checksum, r"no checksum attribute"),
])
def test_damage_is_detected_and_named(tmp_path, grids, comm_self, damage, message):
    g2, g3 = grids
    good = tmp_path / "good.h5"
    _write(good, g2, g3, comm_self)
    bad = tmp_path / "cycle_0003.h5"
    shutil.copyfile(good, bad)
    damage(bad)
    with pytest.raises(OutputError, match=message) as info:
        read_checkpoint(bad, comm_self)
    assert str(bad) in str(info.value)
    CheckpointReader(good, comm_self).close()  # the original is untouched and still verifies


@pytest.mark.parametrize("digest", ["crc32", "sha256"])
def test_corrupted_block_detected_while_loading(tmp_path, grids, comm_self, digest):
    g2, g3 = grids
    path = tmp_path / "c.h5"
    _write(path, g2, g3, comm_self, digest=digest)
    _corrupt_data_byte(path)
    u = g2.create_global()
    with pytest.raises(OutputError, match=r"c.h5 is not usable: data of /fields/u \(block \[0, 0, 0\]..\[5, 7, 2\]\)"):
        read_checkpoint(path, comm_self, into={"u": (g2, u)})
    u.destroy()


def test_latest_good_checkpoint_falls_back(tmp_path, grids, comm_self):
    g2, g3 = grids
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    for cycle in (1, 2, 3):
        _write(checkpoint_path(run, cycle), g2, g3, comm_self)
    (run / "checkpoint" / ".cycle_0004.h5.tmp-abc123").write_bytes(b"crashed writer")
    assert [c for c, _ in list_checkpoints(run)] == [1, 2, 3]
    assert latest_good_checkpoint(run, comm_self) == checkpoint_path(run, 3)
    _corrupt_data_byte(checkpoint_path(run, 3))
    before = checkpoint_path(run, 3).read_bytes()
    assert latest_good_checkpoint(run, comm_self) == checkpoint_path(run, 2)
    assert checkpoint_path(run, 3).read_bytes() == before  # a bad file is reported, never modified
    _truncate(checkpoint_path(run, 2))
    assert latest_good_checkpoint(run / "checkpoint", comm_self) == checkpoint_path(run, 1)


def test_failed_write_keeps_previous_checkpoint(tmp_path, grids, comm_self):
    g2, g3 = grids
    path = tmp_path / "cycle_0001.h5"
    checksum, _ = _write(path, g2, g3, comm_self)
    with pytest.raises(RuntimeError, match="solver blew up"):
        with CheckpointWriter(path, comm_self, cycle=1, time=9.0) as w:
            w.add_array("partial", np.zeros(3))
            raise RuntimeError("solver blew up")
    assert sorted(os.listdir(tmp_path)) == ["cycle_0001.h5"]
    with CheckpointReader(path, comm_self) as r:
        assert r.checksum == checksum and r.time == 1.25


def test_sensitive_checkpoint_is_owner_only_and_anonymous(tmp_path, grids, comm_self):
    import stat

    from twin.io.provenance import prepare_run_directory

    g2, _ = grids
    run = prepare_run_directory(tmp_path / "patient", sensitive=True)
    u = g2.create_global()
    path = checkpoint_path(run, 0)
    write_checkpoint(path, comm_self, cycle=0, time=0.0, fields={"u": (g2, u)}, sensitive=True,
                     provenance=collect(comm_self, sensitive=True))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with CheckpointReader(path, comm_self) as r:
        assert r.provenance.host == r.provenance.user == "redacted" and r.provenance.sensitive == 1
    u.destroy()


def test_provenance_names_the_observation_files_by_name_only_when_sensitive():
    import json

    files = [{"network": "gauges", "file": "/home/alice/patient-17/visits.csv", "sha256": "ab" * 32,
              "qc": {"accepted": 48, "missing": 0}}]
    open_record = json.loads(collect(None, observation_files=files).observation_files)
    assert open_record == files
    (hidden,) = json.loads(collect(None, sensitive=True, observation_files=files).observation_files)
    assert hidden == dict(files[0], file="visits.csv")
    assert collect(None).observation_files == ""   # a twin experiment reads none
