"""Checkpoint readers bound what they allocate by the file's size before reading: crafted files that declare huge
objects are refused with a one-line error, having allocated next to nothing (measured with tracemalloc, which sees
NumPy's allocations, so a reader that allocated the declared size would show it)."""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import h5py
import numpy as np
import pytest

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.io.checkpoint import CheckpointReader, read_checkpoint, write_checkpoint
from twin.io.checkpoint.layout import attrs_digest, canonical_json
from twin.io.inspect import examine

GIB = 2**30
#: the most a refused read may allocate (the file is 64 KB; h5py and the reader's own bookkeeping need a little)
ALLOWANCE = 16 * 2**20


@pytest.fixture
def checkpoint(tmp_path, comm_self):
    """A genuine checkpoint of about 64 KB: one 80 x 100 float64 field, an array, metadata."""
    g = Grid(comm_self, (100, 80), ((0, 1), (0, 1)))
    u = g.from_function(lambda X, Y: np.sin(X) * Y)
    path = tmp_path / "cycle_0001.h5"
    try:
        write_checkpoint(path, comm_self, cycle=1, time=2.0, fields={"u": (g, u)},
                         arrays={"alive": np.ones(4, bool)}, meta={"inflation": 1.05})
    finally:
        u.destroy()
        g.destroy()
    assert 64_000 < path.stat().st_size < 80_000
    return path


def _refused(path, match: str) -> str:
    """Open ``path``; it must be refused with a message matching ``match``, within :data:`ALLOWANCE` bytes."""
    tracemalloc.start()
    try:
        with pytest.raises(OutputError, match=match) as info:
            CheckpointReader(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < ALLOWANCE, f"peak {peak / 2**20:.1f} MiB while refusing {path}"
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def _rewrite_manifest(f: h5py.File, manifest: dict | bytes) -> None:
    raw = manifest if isinstance(manifest, bytes) else canonical_json(manifest).encode()
    del f["manifest"]
    f.create_dataset("manifest", data=np.frombuffer(raw, dtype=np.uint8))
    f.attrs["checksum"] = "sha256:" + hashlib.sha256(raw).hexdigest()


def test_genuine_checkpoint_passes_the_bounds(checkpoint):
    data = read_checkpoint(checkpoint)
    assert data.cycle == 1 and data.meta == {"inflation": 1.05}


def test_declared_huge_manifest_is_refused_before_allocation(checkpoint):
    with h5py.File(checkpoint, "r+") as f:
        del f["manifest"]
        # declared, never written: HDF5 allocates no storage, the file stays at 64 KB
        f.create_dataset("manifest", shape=(3 * GIB // 2,), dtype=np.uint8)
    size = checkpoint.stat().st_size
    assert size < 100_000
    message = _refused(checkpoint, "declares")
    assert f"dataset /manifest declares {3 * GIB // 2} bytes in a file of {size} bytes" in message
    assert "nothing was read" in message

    # `twin inspect` reports it without listing (and so reading) the contents
    tracemalloc.start()
    try:
        result = examine(checkpoint)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < ALLOWANCE and not result.ok and "declares" in result.failures[0]
    assert "contents not listed" in result.text


def test_huge_dataset_with_recomputed_manifest_is_refused(checkpoint):
    """The checksum is not keyed: a crafted manifest that describes a huge dataset matches its checksum. The size
    bound still refuses the file before the dataset can be read."""
    with h5py.File(checkpoint, "r+") as f:
        manifest = json.loads(f["manifest"][...].tobytes())
        del f["arrays/alive"]
        big = f.create_dataset("arrays/alive", shape=(GIB // 4,), dtype="<f8")  # 2 GiB declared
        manifest["objects"]["/arrays/alive"] = {"attrs": attrs_digest(big.attrs), "dtype": "<f8",
                                                "shape": [GIB // 4], "blocks": []}
        _rewrite_manifest(f, manifest)
    message = _refused(checkpoint, "declares")
    assert f"dataset /arrays/alive declares {2 * GIB} bytes" in message


def test_manifest_that_is_not_a_twin_manifest_is_refused(checkpoint):
    """Deeply nested JSON with a matching checksum: an error naming the file, not a RecursionError."""
    with h5py.File(checkpoint, "r+") as f:
        _rewrite_manifest(f, b"[" * 20000 + b"]" * 20000)
    message = _refused(checkpoint, "not a twin checkpoint manifest")
    assert "RecursionError" in message


def test_malformed_block_list_is_refused(checkpoint):
    with h5py.File(checkpoint, "r+") as f:
        manifest = json.loads(f["manifest"][...].tobytes())
        manifest["objects"]["/fields/u"]["blocks"] = [[0, 0]]
        _rewrite_manifest(f, manifest)
    _refused(checkpoint, "block list of /fields/u is malformed")
