"""Names, paths and canonical encodings of the checkpoint layout (see :mod:`twin.io.checkpoint` for the layout).

Canonical bytes: a block digest is taken over the array in C order, little-endian; attribute digests over the JSON
of the attributes with sorted keys and no spaces (arrays as lists), so that any reader recomputes them exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from twin.core.errors import OutputError
from twin.io.atomic import as_mpi_comm, is_temporary

FORMAT = "twin-checkpoint"
FORMAT_VERSION = 1
DIGESTS = ("sha256", "crc32")
RNG_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_CYCLE_RE = re.compile(r"^cycle_(\d+)\.h5$")


#: How many verified file versions a process remembers (:func:`remember_verified`), and the largest file remembered
KNOWN_FILES = 4096
KNOWN_MAX_BYTES = 64 * 2**20
_known: "OrderedDict[tuple, str]" = OrderedDict()


def file_version(path) -> tuple | None:
    """What identifies one version of a file of at most :data:`KNOWN_MAX_BYTES`: device, inode, size and the CRC-32
    of its bytes (``None`` for a larger file or one that cannot be read). Reading a small file whole costs far less
    than verifying it object by object through HDF5 (about 6 ms for a member file, 20 us to read and CRC it)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > KNOWN_MAX_BYTES:
                return None
            return (st.st_dev, st.st_ino, st.st_size, zlib.crc32(f.read()))
    except OSError:
        return None


def remember_verified(path, checksum: str) -> None:
    """Record that this process verified (or wrote) this version of ``path`` in full, with this manifest checksum:
    opening it again checks its bytes' CRC-32 and its manifest checksum only
    (:class:`~twin.io.checkpoint.reader.CheckpointReader`); a changed byte is a new version, verified in full."""
    key = file_version(path)
    if key is None:
        return
    _known[key] = checksum
    _known.move_to_end(key)
    while len(_known) > KNOWN_FILES:
        _known.popitem(last=False)


def known_checksum(path) -> str | None:
    """The manifest checksum this process verified for the current version of ``path``, if it did."""
    key = file_version(path)
    return _known.get(key) if key is not None else None


def checkpoint_path(run_dir: str | Path, cycle: int) -> Path:
    """``<run_dir>/checkpoint/cycle_NNNN.h5``."""
    return Path(run_dir) / "checkpoint" / f"cycle_{int(cycle):04d}.h5"


def parallel_hdf5_available(comm) -> bool:
    """Whether collective parallel HDF5 writes are used on ``comm`` (MPI h5py and more than one rank)."""
    comm = as_mpi_comm(comm)
    return comm is not None and comm.Get_size() > 1 and bool(h5py.get_config().mpi)


# -- canonical encodings -----------------------------------------------------------------------------------------------
def to_plain(value: Any) -> Any:
    """JSON-able Python value for an attribute value, array, or RNG state (arrays tagged with their dtype)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(to_plain(value), sort_keys=True, separators=(",", ":"))


def attrs_digest(attrs: Mapping[str, Any], skip: Iterable[str] = ()) -> str:
    items = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items() if k not in skip}
    return hashlib.sha256(canonical_json(items).encode()).hexdigest()


def block_digest(array: np.ndarray, algorithm: str = "sha256") -> str:
    """Digest of an array's bytes in C order, little-endian (the canonical bytes of a block)."""
    a = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    buf = memoryview(a).cast("B") if a.size else b""
    if algorithm == "crc32":
        return f"{zlib.crc32(buf) & 0xFFFFFFFF:08x}"
    return hashlib.sha256(buf).hexdigest()


def hyperslab(start: Sequence[int], stop: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def make_generator(name: str, state: Mapping[str, Any]) -> np.random.Generator:
    if name not in RNG_BIT_GENERATORS:
        raise OutputError(f"unknown bit generator {name!r} (known: {', '.join(RNG_BIT_GENERATORS)})")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)


@dataclass
class FieldInfo:
    """What a checkpoint says about one grid field (read from the dataset attributes)."""

    name: str
    shape: tuple[int, ...]
    members: int
    grid: dict
    units: str = ""

    @property
    def has_members(self) -> bool:
        return self.members > 0


def list_checkpoints(directory) -> list[tuple[int, Path]]:
    """``(cycle, path)`` of the checkpoint files in ``directory`` (or ``directory/checkpoint``), ascending."""
    directory = Path(directory)
    if (directory / "checkpoint").is_dir():
        directory = directory / "checkpoint"
    found = []
    for p in directory.glob("cycle_*.h5") if directory.is_dir() else []:
        m = _CYCLE_RE.match(p.name)
        if m and not is_temporary(p):
            found.append((int(m.group(1)), p))
    return sorted(found)
