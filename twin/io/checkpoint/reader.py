"""Reading and verifying checkpoints: :class:`CheckpointReader`, :func:`read_checkpoint` and
:func:`latest_good_checkpoint` (layout and integrity rules in :mod:`twin.io.checkpoint`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
from petsc4py import PETSc

from twin.core.errors import BUSY, FileBusy, OutputError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.io.atomic import as_mpi_comm
from twin.io.checkpoint.layout import (DIGESTS, FORMAT, FORMAT_VERSION, FieldInfo, attrs_digest, block_digest,
                                       from_plain, hyperslab, known_checksum, list_checkpoints, make_generator,
                                       parallel_hdf5_available, remember_verified)
from twin.io.provenance import Provenance

log = get_logger("twin.io.checkpoint")


class CheckpointReader:
    """An open, verified checkpoint (collective over ``comm``). Use as a context manager.

    Parameters
    ----------
    path : path-like
    comm : mpi4py or petsc4py communicator, optional
    verify : bool or "deferred"
        Check every block digest on open (in parallel over the ranks), in addition to the manifest checksum and the
        attributes, which are always checked. ``"deferred"``: blocks are checked as :meth:`load` reads them and the
        rest by :meth:`finish_verification`, which the caller must then call (collective).
    parallel : bool, optional
        Use the ``mpio`` driver (default: when h5py has MPI and ``comm`` has more than one rank).

    Raises
    ------
    OutputError
        If the file is missing, truncated, not a twin checkpoint, or fails any integrity check (the message names the
        file and each problem found, on every rank).
    """

    def __init__(self, path, comm=None, *, verify: bool | str = True, parallel: bool | None = None):
        self.path = Path(path)
        self.comm = as_mpi_comm(comm)
        self.rank = self.comm.Get_rank() if self.comm is not None else 0
        self.size = self.comm.Get_size() if self.comm is not None else 1
        self.parallel = parallel_hdf5_available(self.comm) if parallel is None else bool(parallel)
        self._file = None
        self._verified: set[tuple[str, int]] = set()
        self._problems: list[str] = []
        problems: list[str] = []
        try:
            if not self.path.is_file():
                problems.append("no such file")
            elif self.parallel:
                self._file = h5py.File(self.path, "r", driver="mpio", comm=self.comm)
            else:
                self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if "unable to lock file" in str(exc):  # another process holds it open for writing: not damage
                problems.append(f"{BUSY} ({exc})")
            else:
                problems.append(f"cannot be opened as HDF5, truncated or not a checkpoint ({exc})")
        remembered = known_checksum(self.path) if verify is True and not problems else None
        known = verify is True and self._everyone(remembered is not None)
        if not problems and not known:
            problems += self._check_declared_sizes()
        if not problems:
            problems += self._read_header()
        if known and not self._everyone(not problems and self.checksum == remembered):
            known = False  # not the version remembered after all: everything is checked
            problems = problems or self._check_declared_sizes()
        if not problems and not known:
            problems += self._check_objects()
            if not problems and verify is True:
                problems += self._check_blocks()
        self._raise_if(problems)
        if verify is True and not known:
            remember_verified(self.path, self.checksum)

    def _everyone(self, flag: bool) -> bool:
        """``flag`` on every rank (collective)."""
        if self.size > 1:
            return min(self.comm.allgather(bool(flag)))
        return bool(flag)

    # -- checks ------------------------------------------------------------------------------------------------------
    def _raise_if(self, problems: list[str]) -> None:
        if self.size > 1:
            problems = list(dict.fromkeys(p for part in self.comm.allgather(problems) for p in part))
        if problems:
            self.close()
            busy = [p for p in problems if p.startswith(BUSY)]
            if busy:
                raise FileBusy(f"checkpoint {self.path} {busy[0]}: close it there (an h5py.File in mode 'a' or 'r+', "
                               "a viewer) and run the command again; nothing was changed")
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise OutputError(f"checkpoint {self.path} is not usable: {shown}")

    def _check_declared_sizes(self) -> list[str]:
        try:
            limit = self.path.stat().st_size
        except OSError as exc:
            return [f"cannot be read ({exc.strerror or exc})"]
        return oversized_objects(self._file, limit)

    def _read_header(self) -> list[str]:
        f = self._file
        try:
            if f.attrs.get("format") != FORMAT:
                return [f"not a twin checkpoint (format attribute {f.attrs.get('format')!r})"]
            if int(f.attrs.get("format_version", -1)) > FORMAT_VERSION:
                return [f"format version {f.attrs['format_version']} is newer than this twin ({FORMAT_VERSION})"]
            self.checksum = str(f.attrs.get("checksum", ""))
            if not self.checksum.startswith("sha256:"):
                return ["no checksum attribute (incomplete file)"]
            if "manifest" not in f:
                return ["the manifest dataset is missing"]
            dset = f["manifest"]
            if not isinstance(dset, h5py.Dataset) or dset.dtype != np.uint8 or dset.ndim != 1:
                return ["the manifest is not a one-dimensional byte dataset"]
            raw = dset[...].tobytes()
        except Exception as exc:  # noqa: BLE001 - corrupted metadata surfaces as many HDF5 error types
            return [f"unreadable header ({type(exc).__name__}: {exc})"]
        if "sha256:" + hashlib.sha256(raw).hexdigest() != self.checksum:
            return ["checksum mismatch: the manifest does not match the recorded checksum (corrupted)"]
        try:
            self.manifest = json.loads(raw)
            self.cycle = int(self.manifest["cycle"])
            self.time = float(self.manifest["time"])
            self.digest = self.manifest.get("digest", "sha256")
            if not isinstance(self.manifest["objects"], dict) or self.digest not in DIGESTS:
                raise ValueError("objects or digest malformed")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # the checksum matched, so the manifest was written like this: not by twin's writer
            return [f"the manifest is not a twin checkpoint manifest ({type(exc).__name__}: {exc})"]
        return []

    def _check_objects(self) -> list[str]:
        f, problems = self._file, []
        objects = self.manifest["objects"]
        try:
            if attrs_digest(f.attrs, skip=("checksum",)) != self.manifest["root_attrs"]:
                problems.append("root attributes (cycle, time, format) changed since writing")
            present = set()
            f.visit(lambda name: present.add("/" + name))
            for name, entry in objects.items():
                obj = f.get(name)
                if obj is None:
                    kind = "dataset" if "shape" in entry else "group"
                    problems.append(f"missing {kind} {name}")
                    continue
                if attrs_digest(obj.attrs) != entry["attrs"]:
                    problems.append(f"attributes of {name} changed or corrupted")
                if "shape" in entry and (not isinstance(obj, h5py.Dataset) or obj.dtype.str != entry["dtype"]
                                         or list(obj.shape) != entry["shape"]):
                    problems.append(f"dataset {name} has the wrong type or shape")
            for name in sorted(present - set(objects) - {"/manifest"}):
                problems.append(f"unexpected object {name} (not in the manifest)")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"unreadable metadata ({type(exc).__name__}: {exc})")
        return problems

    def _check_blocks(self) -> list[str]:
        """Check the blocks not yet verified by any rank, dealt round-robin to the ranks."""
        done = self._verified
        if self.size > 1:
            done = set().union(*self.comm.allgather(self._verified))
        problems, k = [], 0
        for name in sorted(self.manifest["objects"]):
            blocks = self.manifest["objects"][name].get("blocks", [])
            if not all(isinstance(b, list) and len(b) == 3 for b in blocks):
                problems.append(f"the manifest's block list of {name} is malformed")
                continue
            for index, (start, stop, expected) in enumerate(blocks):
                if (name, index) in done:
                    continue
                mine = k % self.size == self.rank
                k += 1
                if not mine:
                    continue
                try:
                    data = self._file[name][hyperslab(start, stop)]
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"cannot read {name}{start}:{stop} ({type(exc).__name__})")
                    continue
                if block_digest(np.asarray(data), self.digest) != expected:
                    problems.append(f"data of {name} (block {start}..{stop}) do not match their digest (corrupted)")
        return problems

    def finish_verification(self) -> None:
        """Check the blocks :meth:`load` did not read (collective); raise if any block failed.

        Raises
        ------
        OutputError
            Naming the file and every block whose digest does not match.
        """
        self._raise_if(self._problems + self._check_blocks())
        self._problems = []

    def _check_loaded(self, path: str, box: tuple[slice, ...], data: np.ndarray) -> None:
        start = [s.start for s in box]
        stop = [s.stop for s in box]
        for index, (b_start, b_stop, expected) in enumerate(self.manifest["objects"][path].get("blocks", [])):
            if b_start == start and b_stop == stop:
                if block_digest(np.asarray(data), self.digest) != expected:
                    self._problems.append(f"data of {path} (block {start}..{stop}) do not match their digest "
                                          "(corrupted)")
                self._verified.add((path, index))
                return

    # -- contents ----------------------------------------------------------------------------------------------------
    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    @property
    def provenance(self) -> Provenance:
        return Provenance.from_attrs(dict(self._file["provenance"].attrs))

    @property
    def meta(self) -> dict[str, Any]:
        return {k: from_plain(json.loads(v)) for k, v in self._file["meta"].attrs.items()}

    def _names(self, group: str) -> list[str]:
        return sorted(self._file[group].keys()) if group in self._file else []

    def field_info(self, name: str, group: str = "fields") -> FieldInfo:
        path = f"/{group}/{name}"
        dset = self._file.get(path)
        if dset is None or "grid" not in dset.attrs:
            have = [n for n in self._names(group) if "grid" in self._file[group][n].attrs]
            raise OutputError(f"checkpoint {self.path} has no field '{name}' in /{group} (has: "
                              f"{', '.join(have) or 'none'})")
        return FieldInfo(name, tuple(dset.shape), int(dset.attrs["members"]), json.loads(dset.attrs["grid"]),
                         str(dset.attrs.get("units", "")))

    @property
    def fields(self) -> dict[str, FieldInfo]:
        return {n: self.field_info(n) for n in self._names("fields")}

    @property
    def parameter_fields(self) -> dict[str, FieldInfo]:
        return {n: self.field_info(n, "parameters") for n in self._names("parameters")
                if "grid" in self._file["parameters"][n].attrs}

    @property
    def scalar_parameters(self) -> dict[str, float | np.ndarray]:
        out = {}
        for n in self._names("parameters"):
            dset = self._file["parameters"][n]
            if "grid" not in dset.attrs:
                value = dset[()]
                out[n] = float(value) if np.ndim(value) == 0 else np.asarray(value)
        return out

    @property
    def array_names(self) -> list[str]:
        return self._names("arrays")

    @property
    def rng_names(self) -> list[str]:
        return self._names("rng")

    def read_array(self, name: str, group: str = "arrays") -> np.ndarray:
        if f"/{group}/{name}" not in self._file:
            raise OutputError(f"checkpoint {self.path} has no array '{name}' (has: "
                              f"{', '.join(self._names(group)) or 'none'})")
        return np.asarray(self._file[group][name][()])

    def rng_state(self, name: str) -> dict[str, Any]:
        if name not in self.rng_names:
            raise OutputError(f"checkpoint {self.path} has no RNG '{name}' (has: {', '.join(self.rng_names)})")
        return from_plain(json.loads(self._file["rng"][name].attrs["state"]))

    def generator(self, name: str) -> np.random.Generator:
        """A NumPy Generator continuing exactly where the saved one stopped."""
        state = self.rng_state(name)
        return make_generator(state["bit_generator"], state)

    def load(self, name: str, grid: Grid, vecs: PETSc.Vec | Sequence[PETSc.Vec], *, group: str = "fields") -> None:
        """Fill ``vecs`` (a Vec, or a list for an ensemble field) with field ``name``; collective.

        Raises
        ------
        OutputError
            If the field is missing, was written on a grid of another shape or dof, or the number of members differs.
        """
        info = self.field_info(name, group)
        if list(grid.shape) != info.grid["shape"] or grid.dof != info.grid["dof"]:
            raise OutputError(f"checkpoint {self.path}: field '{name}' is on a grid of shape {info.grid['shape']} "
                              f"with dof {info.grid['dof']}, not {list(grid.shape)} with dof {grid.dof}")
        many = isinstance(vecs, (list, tuple))
        if many != info.has_members or (many and len(vecs) != info.members):
            want = f"a list of {info.members} Vecs" if info.has_members else "one Vec"
            raise OutputError(f"checkpoint {self.path}: field '{name}' needs {want} to load into")
        dset = self._file[group][name]
        dof = (slice(0, grid.dof),) if grid.dof > 1 else ()
        for m, vec in enumerate(vecs if many else [vecs]):
            box = ((slice(m, m + 1),) if many else ()) + grid.owned_slices + dof
            # read straight into the Vec's memory (its owned block has the box's shape without the member axis)
            dest = grid.owned_array(vec).reshape(tuple(s.stop - s.start for s in box))
            if self.parallel:
                with dset.collective:
                    dset.read_direct(dest, source_sel=box)
            else:
                dset.read_direct(dest, source_sel=box)
            self._check_loaded(f"/{group}/{name}", box, dest)

    def read_field(self, name: str, group: str = "fields") -> np.ndarray:
        """The whole field (all members) in natural C order, on every rank."""
        self.field_info(name, group)
        return np.asarray(self._file[group][name][()])


def oversized_objects(file: h5py.File, limit: int) -> list[str]:
    """Datasets and attributes of an open HDF5 file that declare more than ``limit`` bytes (the file's size), found
    from the metadata alone; one problem per object.

    Every dataset a checkpoint writer creates is contiguous and uncompressed and is written in full, and HDF5 stores
    attribute values whole, so nothing in a genuine file is larger than the file. A corrupted or crafted header can
    declare any size (a 64 KB file declaring a 1.5 GiB manifest), and h5py allocates the declared size before it
    reads: readers check this first and read nothing from a file that fails it.
    """
    problems: list[str] = []

    def declared(shape, dtype) -> int:
        return math.prod(shape or ()) * np.dtype(dtype).itemsize

    def check(name, obj):
        where = "/" + name if name else "/"
        for key in obj.attrs:
            attr = obj.attrs.get_id(key)
            size = declared(attr.shape, attr.dtype)
            if size > limit:
                problems.append(f"attribute {key!r} of {where} declares {size} bytes in a file of {limit} bytes "
                                "(corrupted or crafted; nothing was read)")
        if isinstance(obj, h5py.Dataset):
            size = declared(obj.shape, obj.dtype)
            if size > limit:
                problems.append(f"dataset {where} declares {size} bytes in a file of {limit} bytes (corrupted or "
                                "crafted; nothing was read)")

    try:
        check("", file)
        file.visititems(check)
    except Exception as exc:  # noqa: BLE001 - corrupted metadata surfaces as many HDF5 error types
        problems.append(f"unreadable metadata ({type(exc).__name__}: {exc})")
    return problems


@dataclass
class CheckpointData:
    """The non-field contents of a checkpoint, as returned by :func:`read_checkpoint`."""

    path: Path
    cycle: int
    time: float
    checksum: str
    provenance: Provenance
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, np.random.Generator] = field(default_factory=dict)
    fields: dict[str, FieldInfo] = field(default_factory=dict)


def read_checkpoint(path, comm=None, *, into: Mapping[str, tuple[Grid, Any]] | None = None,
                    verify: bool = True) -> CheckpointData:
    """Verify a checkpoint, load fields into Vecs and return everything else (collective).

    ``into`` maps field names to ``(grid, vec or [vecs])``; a name ``parameters/<name>`` loads a field parameter.
    """
    with CheckpointReader(path, comm, verify="deferred" if verify else False) as r:
        for key, (grid, vecs) in (into or {}).items():
            group, _, name = key.rpartition("/")
            r.load(name, grid, vecs, group=group or "fields")
        if verify:
            r.finish_verification()  # blocks the loads did not read; raises on any mismatch
        return CheckpointData(r.path, r.cycle, r.time, r.checksum, r.provenance, r.meta,
                              {n: r.read_array(n) for n in r.array_names}, r.scalar_parameters,
                              {n: r.generator(n) for n in r.rng_names}, r.fields)


def chained(found: Sequence[tuple[int, Path]], comm=None) -> tuple[int, str]:
    """How many of the checkpoints ``found`` (``(cycle, path)``, oldest first) form one chain from the first, and
    why the chain ends where it does (``""`` when all of them do). Collective; rank 0 reads.

    Each checkpoint's provenance names the checksum of the checkpoint it continues (``parent_checksum``; the first
    of an experiment names none), and each holds only the cycles since that one. A checkpoint whose parent is not
    the file before it continues something that is not there: the one before it was deleted (its cycles are lost
    with it), or it was copied from another run (restored from the wrong backup, a run of the same name with another
    seed). The chain, and with it what a resume may start from, ends before it. A file that cannot be read ends it
    too (its verification says why). Checkpoints written without a parent checksum are not judged."""
    comm = as_mpi_comm(comm)
    answer = None
    if comm is None or comm.Get_rank() == 0:
        answer = (len(found), "")
        before = None
        for i, (_, path) in enumerate(found):
            try:
                with CheckpointReader(path, verify=False, parallel=False) as r:
                    checksum, parent = r.checksum, r.provenance.parent_checksum
            except FileBusy as exc:  # said on every rank below (the others wait in bcast)
                answer = (-1, str(exc))
                break
            except (OutputError, KeyError, ValueError, OSError):
                answer = (i, "")
                break
            if i == 0 and parent:
                answer = (0, f"{path.name} continues a checkpoint that is not in {path.parent} (the experiment's "
                             "first checkpoint continues none): the older ones were deleted")
                break
            if i > 0 and parent and before and parent != before:
                answer = (i, f"{path.name} does not continue {found[i - 1][1].name} (its parent checkpoint was "
                             "deleted, or it was copied from another run)")
                break
            before = checksum
    if comm is not None and comm.Get_size() > 1:
        answer = comm.bcast(answer, root=0)
    if answer[0] < 0:
        raise FileBusy(answer[1])
    return answer


def latest_good_checkpoint(directory, comm=None, newest: int | None = None) -> Path | None:
    """The newest checkpoint in ``directory`` (of cycle ``newest`` at most, when given) that passes full
    verification and continues, through the ones before it, the experiment's first (:func:`chained`), or ``None``
    (collective).

    Bad files are skipped with a warning naming the problem; they are never modified or removed.
    """
    comm = as_mpi_comm(comm)
    candidates = list_checkpoints(directory) if comm is None or comm.Get_rank() == 0 else None
    if comm is not None and comm.Get_size() > 1:
        candidates = comm.bcast(candidates, root=0)
    length, why = chained(candidates, comm)
    if why:
        log.warning("%s: resuming before it; the cycles after are computed again", why)
    return newest_verified([(c, p) for c, p in candidates[:length] if newest is None or c <= newest], comm)


def newest_verified(candidates: Sequence[tuple[int, Path]], comm=None) -> Path | None:
    """The newest of ``candidates`` (``(cycle, path)``, oldest first) that passes full verification, or ``None``
    (collective); bad files are skipped with a warning, one held open elsewhere raises :class:`FileBusy`."""
    for _, path in reversed(candidates):
        try:
            CheckpointReader(path, comm, verify=True).close()
            return path
        except FileBusy:
            raise
        except OutputError as exc:
            log.warning("skipping %s", exc)
    return None
