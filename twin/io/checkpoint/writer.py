"""Writing checkpoints: :class:`CheckpointWriter` and :func:`write_checkpoint` (layout in :mod:`twin.io.checkpoint`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
from petsc4py import PETSc

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.io.atomic import as_mpi_comm, atomic_output
from twin.io.checkpoint.layout import (DIGESTS, FORMAT, FORMAT_VERSION, RNG_BIT_GENERATORS, attrs_digest, hyperslab,
                                       block_digest, canonical_json, parallel_hdf5_available, remember_verified)
from twin.io.provenance import RECORD, Provenance

log = get_logger("twin.io.checkpoint")

#: attribute values that read back from HDF5 as the same JSON (str, int, float, bool: their NumPy scalars' ``item``)
_PLAIN = (str, bool, int, float, np.integer, np.floating, np.bool_)
#: marks an attribute whose value must be read back from the file for the manifest (arrays, lists)
_READ_BACK = object()

#: members stacked per dataset write on one rank (a write per member cost more than a small model's values)
_STACK_BYTES = 64 * 2**20


class CheckpointWriter:
    """Writes one checkpoint file; collective over ``comm``. Use as a context manager (or call :meth:`close`).

    Parameters
    ----------
    path : path-like
        Final file name (its directory must exist); written under a temporary name until :meth:`close`.
    comm : mpi4py or petsc4py communicator, optional
        The communicator of the grids whose fields are written (``None``: serial).
    cycle : int
        Assimilation cycle index.
    time : float
        Model time of the states, in model seconds.
    provenance : Provenance, optional
        Stored as the attribute ``record`` of ``/provenance`` (:meth:`~twin.io.provenance.Provenance.record`); its
        ``end_time`` is set on close.
    sensitive : bool
        Owner-only file (``0o600``).
    parallel : bool, optional
        Force (``True``) or forbid (``False``) collective parallel HDF5; default: when available.
    digest : {"crc32", "sha256"}
        Block digest (see :mod:`twin.io.checkpoint`: CRC-32 by default for speed, SHA-256 on request).
    reserve : int
        Bytes the checkpoint will take (an estimate, :func:`write_checkpoint` makes one): refused before anything is
        written when the file system has less free (:func:`twin.io.atomic.atomic_output`).
    durable : bool
        Flushed to stable storage on close (default); ``False`` leaves that to a later
        :func:`twin.io.atomic.make_durable` (see :func:`~twin.io.atomic.atomic_output`).

    Notes
    -----
    Every method is collective: call them in the same order with the same names on every rank. Arrays, scalars,
    RNG states and metadata are taken from rank 0.
    """

    def __init__(self, path, comm=None, *, cycle: int, time: float, provenance: Provenance | None = None,
                 sensitive: bool = False, parallel: bool | None = None, digest: str = "crc32", reserve: int = 0,
                 durable: bool = True):
        if digest not in DIGESTS:
            raise OutputError(f"checkpoint {path}: unknown digest {digest!r} (use one of {', '.join(DIGESTS)})")
        self.path = Path(path)
        self.comm = as_mpi_comm(comm)
        self.rank = self.comm.Get_rank() if self.comm is not None else 0
        self.size = self.comm.Get_size() if self.comm is not None else 1
        self.parallel = parallel_hdf5_available(self.comm) if parallel is None else bool(parallel)
        if self.parallel and not parallel_hdf5_available(self.comm):
            raise OutputError(f"checkpoint {path}: parallel HDF5 requested but h5py is not built with MPI "
                              "or the communicator has one rank")
        self.digest = digest
        self.cycle, self.time = int(cycle), float(time)
        self.provenance = provenance
        self._blocks: dict[str, list] = {}
        #: attributes as written, per object, for the manifest (reading them back cost more than the values of a
        #: small model's checkpoint); objects whose attributes are not all plain scalars are read back instead
        self._attrs: dict[str, dict[str, Any]] = {}
        #: datasets written, ``path -> (dtype.str, shape)``: with :attr:`_attrs` the objects the manifest lists
        #: (visiting the file through h5py cost more than a small model's values)
        self._datasets: dict[str, tuple[str, list[int]]] = {}
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.path, self.comm, private=sensitive, reserve=reserve,
                                                           durable=durable))
        self._file = None
        try:
            if self.parallel:
                self._file = h5py.File(tmp, "w", driver="mpio", comm=self.comm)
            elif self.rank == 0:
                self._file = h5py.File(tmp, "w")
        except Exception as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self.checksum: str | None = None

    @property
    def _writes(self) -> bool:
        return self._file is not None

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
            return False
        self._abort(exc_type, exc, tb)
        return False

    def _abort(self, exc_type, exc, tb) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        self._stack.__exit__(exc_type, exc, tb)

    def _bcast(self, value):
        return self.comm.bcast(value, root=0) if self.size > 1 else value

    def _dataset(self, path: str, shape: tuple[int, ...], dtype, attrs: Mapping[str, Any]):
        if not self._writes:
            return None
        if path in self._file:
            raise OutputError(f"checkpoint {self.path}: {path} written twice")
        dset = self._file.create_dataset(path, shape=shape, dtype=dtype)
        self._datasets[path] = (np.dtype(dtype).str, [int(n) for n in shape])
        self._set_attrs(dset, path, attrs)
        return dset

    def _set_attrs(self, obj, path: str, attrs: Mapping[str, Any]) -> None:
        """Set ``attrs`` on the HDF5 object ``obj`` (at ``path``) and remember them for the manifest."""
        kept = self._attrs.setdefault(path, {})
        for key, value in attrs.items():
            obj.attrs[key] = value
            kept[key] = value if isinstance(value, _PLAIN) else _READ_BACK

    # -- content -------------------------------------------------------------------------------------------------
    def add_field(self, name: str, grid: Grid, vecs: PETSc.Vec | Sequence[PETSc.Vec], *, group: str = "fields",
                  units: str = "") -> None:
        """Write a state (one Vec) or an ensemble (a list of Vecs: ``member`` axis) on ``grid``; an ensemble may
        also be a NumPy array ``(member, grid.size * grid.dof)`` of whole states in natural order, taken from rank 0
        (without parallel HDF5 only: a state already whole needs no vector to be gathered from)."""
        whole = isinstance(vecs, np.ndarray)
        if whole and self.parallel:
            raise OutputError(f"checkpoint {self.path}: ensemble field '{name}' given as whole states; parallel HDF5 "
                              "writes vectors")
        members = list(vecs) if isinstance(vecs, (list, tuple)) or whole else [vecs]
        has_members = isinstance(vecs, (list, tuple)) or whole
        if has_members and not members:
            raise OutputError(f"checkpoint {self.path}: ensemble field '{name}' has no members")
        spatial = tuple(grid.shape[::-1]) + ((grid.dof,) if grid.dof > 1 else ())
        axes = (["member"] if has_members else []) + ["z", "y", "x"][3 - grid.dim:] + (
            ["component"] if grid.dof > 1 else [])
        shape = ((len(members),) if has_members else ()) + spatial
        dtype = np.dtype(PETSc.ScalarType)
        grid_attrs = {"shape": list(grid.shape), "extent": [list(e) for e in grid.extent], "dof": grid.dof,
                      "periodic": [bool(p) for p in grid.periodic], "centering": grid.centering, "name": grid.name}
        path = f"/{group}/{name}"
        dset = self._dataset(path, shape, dtype, {"axes": json.dumps(axes), "members": len(members) if has_members
                                                  else 0, "grid": canonical_json(grid_attrs), "units": units})
        blocks = []
        if has_members and not self.parallel:
            if whole:
                self._write_members(dset, len(members), spatial, blocks, lambda m: vecs[m].reshape(spatial))
            elif self.size == 1:
                self._write_members(dset, len(members), spatial, blocks,
                                    lambda m: grid.owned_array(members[m], readonly=True).reshape(spatial))
            else:
                self._write_members(dset, len(members), spatial, blocks, lambda m: grid.gather(members[m]))
            self._blocks[path] = sorted(blocks)
            return
        for m, vec in enumerate(members):
            lead = (m,) if has_members else ()
            if self.parallel or self.size == 1:  # on one rank the PETSc ordering is the natural one: no gather
                local = grid.owned_array(vec, readonly=True)
                start = lead + tuple(s.start for s in grid.owned_slices) + ((0,) if grid.dof > 1 else ())
                stop = tuple(a + 1 for a in lead) + tuple(s.stop for s in grid.owned_slices) + (
                    (grid.dof,) if grid.dof > 1 else ())
                if self.parallel:
                    with dset.collective:
                        dset[hyperslab(start, stop)] = local
                else:
                    dset[hyperslab(start, stop)] = local
                blocks.append([list(start), list(stop), block_digest(local, self.digest)])
            else:
                full = grid.gather(vec)
                if self._writes:
                    dset[lead] = full
                    start = lead + (0,) * len(spatial)
                    stop = tuple(a + 1 for a in lead) + spatial
                    blocks.append([list(start), list(stop), block_digest(full, self.digest)])
        if self.parallel:
            blocks = [b for part in self.comm.allgather(blocks) for b in part]
        self._blocks[path] = sorted(blocks)

    def _write_members(self, dset, n_members: int, spatial: tuple[int, ...], blocks: list, member) -> None:
        """An ensemble field without parallel HDF5: ``member(m)``, member ``m`` whole on rank 0 (called on every
        rank: gathering is collective), stacked into as few dataset writes as :data:`_STACK_BYTES` allows; one block
        per member."""
        per_member = max(1, _STACK_BYTES // max(1, 8 * int(np.prod(spatial))))
        for first in range(0, n_members, per_member):
            batch = []
            for m in range(first, min(first + per_member, n_members)):
                full = member(m)
                if self._writes:
                    batch.append(np.array(full, copy=True))
                    start, stop = (m,) + (0,) * len(spatial), (m + 1,) + spatial
                    blocks.append([list(start), list(stop), block_digest(batch[-1], self.digest)])
            if self._writes:
                dset[first:first + len(batch)] = np.stack(batch)

    def add_parameter(self, name: str, value, *, units: str = "1") -> None:
        """A scalar parameter (float, or an array with one value per member) or a field ``(grid, vec or [vecs])``."""
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Grid):
            self.add_field(name, value[0], value[1], group="parameters", units=units)
            return
        self.add_array(name, np.asarray(value, dtype=float), group="parameters", units=units)

    def add_array(self, name: str, array, *, group: str = "arrays", units: str = "") -> None:
        """A NumPy array (numeric or boolean), taken from rank 0."""
        array = self._bcast(np.asarray(array) if self.rank == 0 else None)
        if array.dtype.kind not in "biufc":
            raise OutputError(f"checkpoint {self.path}: array '{name}' has dtype {array.dtype}; only numeric and "
                              "boolean arrays are stored (put text in meta)")
        path = f"/{group}/{name}"
        dset = self._dataset(path, array.shape, array.dtype, {"units": units} if units else {})
        if self.rank == 0:
            dset[...] = array
        self._blocks[path] = [[[0] * array.ndim, list(array.shape), block_digest(array, self.digest)]]

    def add_rng(self, name: str, generator: np.random.Generator | Mapping[str, Any]) -> None:
        """The state of a NumPy Generator (or a ``bit_generator.state`` dict), as JSON attributes; never pickled."""
        state = generator.bit_generator.state if isinstance(generator, np.random.Generator) else dict(generator)
        state = self._bcast(state)
        if state.get("bit_generator") not in RNG_BIT_GENERATORS:
            raise OutputError(f"checkpoint {self.path}: RNG '{name}' uses an unsupported bit generator "
                              f"{state.get('bit_generator')!r}")
        if self._writes:
            grp = self._file.require_group(f"/rng/{name}")
            self._set_attrs(grp, f"/rng/{name}", {"bit_generator": state["bit_generator"],
                                                  "state": canonical_json(state)})

    def add_meta(self, meta: Mapping[str, Any]) -> None:
        """JSON-able metadata (one attribute per key of ``meta``), taken from rank 0."""
        meta = self._bcast(dict(meta) if self.rank == 0 else None)
        encoded = {}
        for key, value in meta.items():
            try:
                encoded[str(key)] = canonical_json(value)
            except (TypeError, ValueError) as exc:
                raise OutputError(f"checkpoint {self.path}: meta['{key}'] is not JSON-able: {exc}") from None
        if self._writes:
            self._set_attrs(self._file.require_group("/meta"), "/meta", encoded)

    # -- finishing --------------------------------------------------------------------------------------------------
    def _attrs_digest(self, path: str) -> str:
        """The digest of the attributes of the object at ``path`` from the values written when they are all plain
        scalars (as reading them back gives), else read back."""
        kept = self._attrs.get(path, {})
        if not any(v is _READ_BACK for v in kept.values()):
            return attrs_digest(kept)
        obj = self._file[path]
        return attrs_digest(obj.attrs, skip=("checksum",) if path == "/" else ())

    def _objects(self) -> list[str]:
        """Every group and dataset below ``/`` this writer made: those it wrote or gave attributes, and the groups
        holding them."""
        made = (set(self._attrs) | set(self._datasets)) - {"/"}
        for path in list(made):
            parts = path.strip("/").split("/")
            made.update("/" + "/".join(parts[:i]) for i in range(1, len(parts)))
        return sorted(made)

    def _manifest(self) -> bytes:
        objects: dict[str, dict] = {}
        for path in self._objects():
            entry = {"attrs": self._attrs_digest(path)}
            if path in self._datasets:
                dtype, shape = self._datasets[path]
                entry.update(dtype=dtype, shape=shape, blocks=self._blocks.get(path, []))
            objects[path] = entry
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "cycle": self.cycle, "time": self.time,
                    "digest": self.digest, "root_attrs": self._attrs_digest("/"), "objects": objects}
        try:  # plain JSON already (ints, strings, lists): canonical_json's walk through it cost more than its values
            return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
        except TypeError:
            return canonical_json(manifest).encode()

    def close(self) -> str:
        """Write provenance and manifest, close, and rename into place; returns the checksum (all ranks)."""
        if self.checksum is not None:
            return self.checksum
        try:
            # rank 0's clock, so that every rank writes identical (collective) attributes
            prov_attrs = self._bcast({RECORD: self.provenance.finished().record()} if self.provenance is not None
                                     else {})
            if self._writes:
                f = self._file
                self._set_attrs(f, "/", {"format": FORMAT, "format_version": FORMAT_VERSION, "cycle": self.cycle,
                                         "time": self.time})
                self._set_attrs(f.require_group("/provenance"), "/provenance", prov_attrs)
                for group in ("/fields", "/parameters", "/arrays", "/rng", "/meta"):
                    f.require_group(group)
                    self._attrs.setdefault(group, {})
                manifest = np.frombuffer(self._manifest(), dtype=np.uint8)
                dset = f.create_dataset("/manifest", shape=manifest.shape, dtype=np.uint8)
                if self.rank == 0:
                    dset[...] = manifest
                checksum = "sha256:" + hashlib.sha256(manifest.tobytes()).hexdigest()
                f.attrs["checksum"] = checksum
                # detached first: a close that fails (a full disk) leaves the file half-closed, and closing it again
                # in _abort makes HDF5 touch freed objects (a segmentation fault, seen with h5py 3.7)
                self._file = None
                f.close()
            else:
                checksum = None
            self.checksum = self._bcast(checksum)
        except BaseException as exc:
            self._abort(type(exc), exc, exc.__traceback__)
            raise
        self._stack.__exit__(None, None, None)
        log.debug("checkpoint %s written (cycle %d, t=%g, %s)", self.path, self.cycle, self.time, self.checksum)
        return self.checksum


def write_checkpoint(path, comm=None, *, cycle: int, time: float,
                     fields: Mapping[str, tuple[Grid, Any]] | None = None,
                     parameters: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None,
                     rng: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
                     provenance: Provenance | None = None, sensitive: bool = False, parallel: bool | None = None,
                     digest: str = "crc32", durable: bool = True) -> str:
    """Write a complete checkpoint in one call (collective); returns its checksum ``sha256:<hex>``.

    ``fields`` maps names to ``(grid, vec)`` or ``(grid, [vecs])`` (ensemble); ``parameters`` to floats, per-member
    arrays or ``(grid, vec)``; ``rng`` to Generators; ``meta`` to JSON-able values. See :class:`CheckpointWriter`.
    """
    with CheckpointWriter(path, comm, cycle=cycle, time=time, provenance=provenance, sensitive=sensitive,
                          parallel=parallel, digest=digest, durable=durable,
                          reserve=_size_estimate(fields, parameters, arrays, meta, provenance)) as w:
        for name, (grid, vecs) in (fields or {}).items():
            w.add_field(name, grid, vecs)
        for name, value in (parameters or {}).items():
            w.add_parameter(name, value)
        for name, value in (arrays or {}).items():
            w.add_array(name, value)
        for name, gen in (rng or {}).items():
            w.add_rng(name, gen)
        if meta:
            w.add_meta(meta)
    remember_verified(path, w.checksum)  # written here: a read in this process checks its bytes' CRC-32 only
    return w.checksum


def _size_estimate(fields, parameters, arrays, meta, provenance) -> int:
    """Bytes a checkpoint of these contents takes, about: the values, the metadata as JSON, the provenance (the
    configuration verbatim) and 64 KiB of HDF5 structure."""
    total = 1 << 16
    for grid, vecs in (fields or {}).values():
        members = len(vecs) if isinstance(vecs, (list, tuple, np.ndarray)) else 1
        total += members * int(grid.size) * int(grid.dof) * 8
    for value in (parameters or {}).values():
        if isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "size"):
            total += int(value[0].size) * 8
        else:
            total += int(np.asarray(value).nbytes) if np.ndim(value) else 8
    for value in (arrays or {}).values():
        total += int(np.asarray(value).nbytes)
    total += len(json.dumps(meta, default=str)) if meta else 0
    if provenance is not None:
        total += len(getattr(provenance, "config", "") or "")
    return total
