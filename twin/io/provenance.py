"""Provenance: the attributes every twin output carries, so the chain of updates can be followed back from any file.

Each file written by :mod:`twin.io` records the fields below: a checkpoint as one attribute ``record`` of its
``/provenance`` group, the JSON object of them (:data:`RECORD`; a file of 23 attributes cost more to write than a
small model's states, and a checkpoint is written every cycle), a NetCDF file as global attributes with the prefix
``twin_``. Checkpoints written before the record kept one attribute per field; :meth:`Provenance.from_attrs` reads
both.

========================== ==============================================================================
``config``                  the configuration the output was made with, verbatim (the YAML text as read): a forecast's
                            campaign file; an experiment's ``experiment.yaml`` (the campaign file with the experiment's
                            matrix values applied)
``config_sha256``           SHA-256 of those bytes (UTF-8), hex
``campaign_sha256``         SHA-256 of the campaign file as given (``RUN_DIR/campaign.yaml``; ``sha256sum`` of the file
                            a user holds matches it); ``config_sha256`` when the configuration is the campaign file
``twin_version``            ``twin.__version__``
``git_revision``            ``git rev-parse HEAD`` of the source checkout (``+dirty`` if modified), or ``unknown``
``petsc_version``           PETSc version (petsc4py), e.g. ``3.18.5``
``mpi_library``             first line of ``MPI.Get_library_version()``
``hdf5_version``            HDF5 library version seen by h5py
``netcdf_version``          netCDF-C library version seen by netCDF4-python
``python_version``          Python version
``host``                    host name (``redacted`` when sensitive)
``user``                    login name (``redacted`` when sensitive)
``ranks``                   number of MPI ranks of the writing communicator
``start_time``/``end_time`` UTC, ISO 8601; ``end_time`` is set when the file is written
``parent_checkpoint``       path of the checkpoint this output continues from (relative when sensitive), or ``""``
``parent_checksum``         that checkpoint's checksum (``sha256:<hex>``), or ``""``
``sensitive``               ``1`` for campaigns marked sensitive (patient data), else ``0``
``observation_files``       the measured observation files the output's analyses read (JSON list: network, file
                            (its name only when sensitive), SHA-256, quality-control counts), or ``""`` (a twin
                            experiment)
``petsc_options``           the PETSc options of the command line of the process that wrote it
                            (``-l96_ts_rk_type 3``; values with a ``/`` are ``redacted`` when sensitive), or ``""``;
                            the YAML's ``solver:`` options are in ``config``
========================== ==============================================================================

Sensitive campaigns (``sensitive=True``) record no user or host name, record parent paths relative to the output, and
their run directories and files are created owner-only (``0o700`` / ``0o600``, see :mod:`twin.io.atomic`).

The git revision is looked up once per :func:`collect` call on rank 0 and broadcast; a missing ``git`` executable, a
tree that is not a checkout or a slow file system all give ``unknown``, never an error.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import getpass
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping

from twin.core.errors import OutputError
from twin.io.atomic import as_mpi_comm, make_directory

#: Attributes every provenance record has (the order used when printing).
FIELDS = ("config_sha256", "campaign_sha256", "twin_version", "git_revision", "petsc_version", "mpi_library", "hdf5_version",
          "netcdf_version", "python_version", "host", "user", "ranks", "start_time", "end_time", "parent_checkpoint",
          "parent_checksum", "sensitive", "observation_files", "petsc_options", "config")

REDACTED = "redacted"

#: the attribute of a checkpoint's ``/provenance`` group holding the whole record as JSON (:meth:`Provenance.record`)
RECORD = "record"


def utc_now() -> str:
    """The current UTC time, ISO 8601 with seconds (``2026-01-31T12:00:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_revision(path: str | os.PathLike | None = None, timeout: float = 5.0) -> str:
    """The git commit of the checkout containing ``path`` (default: the twin sources), ``unknown`` if there is none.

    The twin sources' revision is looked up once per process (two ``git`` processes, ~6 ms, were started for every
    file a campaign wrote): a run records the code it started with."""
    if path is None:
        return _own_revision(timeout)
    return _revision(Path(path), timeout)


@functools.lru_cache(maxsize=1)
def _own_revision(timeout: float) -> str:
    return _revision(Path(__file__).resolve().parent, timeout)


def _revision(where: Path, timeout: float) -> str:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if head.returncode:
            return "unknown"
        rev = head.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=timeout, env=env)
        if dirty.returncode == 0 and dirty.stdout.strip():
            rev += "+dirty"
        return rev or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of PETSc, MPI, HDF5 (h5py's) and netCDF-C; ``unknown`` for a library that cannot be imported (looked
    up once per process)."""
    return dict(_library_versions())


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    out = {"petsc_version": "unknown", "mpi_library": "unknown", "hdf5_version": "unknown",
           "netcdf_version": "unknown", "python_version": platform.python_version()}
    try:
        from petsc4py import PETSc

        out["petsc_version"] = ".".join(str(v) for v in PETSc.Sys.getVersion())
    except ImportError:
        pass
    try:
        from mpi4py import MPI

        out["mpi_library"] = MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0].split(",")[0]
    except ImportError:
        pass
    try:
        import h5py

        out["hdf5_version"] = h5py.version.hdf5_version
    except ImportError:
        pass
    try:
        import netCDF4

        out["netcdf_version"] = netCDF4.__netcdf4libversion__
    except ImportError:
        pass
    return out


def _twin_version() -> str:
    import twin

    return str(getattr(twin, "__version__", "unknown"))


@dataclasses.dataclass(frozen=True)
class Provenance:
    """The provenance record of one output (see the module docstring for the meaning of each field).

    Build it with :func:`collect` at the start of a run (or cycle), and call :meth:`finished` when writing a file.
    """

    config: str = ""
    config_sha256: str = ""
    campaign_sha256: str = ""
    twin_version: str = "unknown"
    git_revision: str = "unknown"
    petsc_version: str = "unknown"
    mpi_library: str = "unknown"
    hdf5_version: str = "unknown"
    netcdf_version: str = "unknown"
    python_version: str = "unknown"
    host: str = REDACTED
    user: str = REDACTED
    ranks: int = 1
    start_time: str = ""
    end_time: str = ""
    parent_checkpoint: str = ""
    parent_checksum: str = ""
    sensitive: int = 0
    observation_files: str = ""
    petsc_options: str = ""

    def finished(self, end_time: str | None = None) -> "Provenance":
        """A copy with ``end_time`` set (now, unless given)."""
        return dataclasses.replace(self, end_time=end_time or utc_now())

    def with_parent(self, path: str | os.PathLike | None, checksum: str = "", *,
                    relative_to: str | os.PathLike | None = None) -> "Provenance":
        """A copy naming ``path`` (with its ``checksum``) as the parent checkpoint.

        When the record is sensitive the path is stored relative to ``relative_to`` (the output's directory), or as a
        bare file name if it lies elsewhere, so that no home directory or user name leaks through a path.
        """
        if path is None:
            return dataclasses.replace(self, parent_checkpoint="", parent_checksum="")
        text = os.fspath(path)
        if self.sensitive:
            rel = os.path.relpath(os.path.abspath(text), os.path.abspath(relative_to or os.getcwd()))
            text = rel if not rel.startswith("..") else os.path.basename(text)
        return dataclasses.replace(self, parent_checkpoint=text, parent_checksum=checksum)

    def attrs(self) -> dict[str, Any]:
        """The record as a flat mapping of ``str`` and ``int`` values (HDF5 / NetCDF attributes)."""
        return {name: getattr(self, name) for name in FIELDS}

    def record(self) -> str:
        """The record as one JSON text (sorted keys; a checkpoint's attribute :data:`RECORD`)."""
        import json

        return json.dumps(self.attrs(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "Provenance":
        """Rebuild a record from attributes (unknown keys ignored, missing ones left at their defaults): one per
        field, or the JSON text of them all under :data:`RECORD` (checkpoints).

        Raises
        ------
        OutputError
            If :data:`RECORD` is not the JSON object of a record.
        """
        if RECORD in attrs:
            import json

            text = attrs[RECORD]
            text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
            try:
                attrs = json.loads(text)
            except ValueError as exc:
                raise OutputError(f"provenance record is not JSON: {exc}") from None
            if not isinstance(attrs, dict):
                raise OutputError("provenance record is not a JSON object of provenance fields")
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {}
        for key, value in attrs.items():
            if key not in known:
                continue
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            values[key] = int(value) if key in ("ranks", "sensitive") else str(value)
        return cls(**values)


def collect(comm=None, *, config_text: str = "", sensitive: bool = False, start_time: str | None = None,
            parent: str | os.PathLike | None = None, parent_checksum: str = "",
            relative_to: str | os.PathLike | None = None, observation_files=None,
            campaign_text: str | None = None) -> Provenance:
    """Gather the provenance of the current run (collective over ``comm`` when given).

    Parameters
    ----------
    comm : mpi4py or petsc4py communicator, optional
        The writing communicator (its size is recorded; rank 0 looks up git and broadcasts).
    config_text : str
        The configuration file's text, verbatim.
    sensitive : bool
        Record no user or host names (see the module docstring).
    start_time : str, optional
        ISO 8601 start of the run; now if not given.
    parent, parent_checksum : optional
        The checkpoint this output continues from (see :meth:`Provenance.with_parent`).
    relative_to : path-like, optional
        Directory parent paths are made relative to when sensitive.
    observation_files : list of dict, optional
        The observation files read (``{"network", "file", "sha256", "qc"}``; ``observations.h5``'s record of them).
    campaign_text : str, optional
        The campaign file as given, when ``config_text`` is one experiment's configuration made from it (its matrix
        values applied): its SHA-256 is recorded as ``campaign_sha256`` (the file's own hash; ``config_sha256`` when
        not given), so that an output is matched to the campaign file a user holds.
    """
    import json

    comm = as_mpi_comm(comm)
    rank = comm.Get_rank() if comm is not None else 0
    ranks = comm.Get_size() if comm is not None else 1
    base = None
    if rank == 0:
        base = dict(library_versions(), twin_version=_twin_version(), git_revision=git_revision())
        if not sensitive:
            base["host"] = socket.gethostname()
            try:
                base["user"] = getpass.getuser()
            except (KeyError, OSError):
                base["user"] = "unknown"
    if comm is not None and ranks > 1:
        base = comm.bcast(base, root=0)
    files = [dict(f, file=os.path.basename(str(f.get("file", ""))) if sensitive else str(f.get("file", "")))
             for f in observation_files or []]
    config_sha256 = sha256_text(config_text) if config_text else ""
    record = Provenance(config=config_text, config_sha256=config_sha256,
                        campaign_sha256=config_sha256 if campaign_text is None else sha256_text(campaign_text),
                        ranks=ranks, start_time=start_time or utc_now(), sensitive=int(bool(sensitive)),
                        observation_files=json.dumps(files, sort_keys=True) if files else "",
                        petsc_options=_petsc_options(sensitive), **base)
    if parent is not None:
        record = record.with_parent(parent, parent_checksum, relative_to=relative_to)
    return record


def _petsc_options(sensitive: bool) -> str:
    """The command line's PETSc options as one shell-quoted line; a value holding a path is ``redacted`` when
    ``sensitive`` (a path can name its user)."""
    import shlex

    from twin.core.petsc import command_line_options

    words = command_line_options()
    if sensitive:
        words = [REDACTED if "/" in w and not w.startswith("-") else w for w in words]
    return " ".join(shlex.quote(w) for w in words)


def refuse_link_out(link: Path, holder: Path) -> None:
    """:class:`OutputError` when ``link`` is a symbolic link leading out of ``holder`` (the directory it is in, or the
    run directory): twin writes nothing through such a link, planted after the run directory was chosen."""
    if link.is_symlink():
        target, base = link.resolve(), holder.resolve()
        if not (target == base or base in target.parents):
            raise OutputError(f"{link} is a symbolic link to {target}, outside {base}: twin does not write "
                              "through links that leave the run directory; remove the link or give the real "
                              "directory (allowed with --allow-outside)")


def prepare_run_directory(path: str | os.PathLike, *, sensitive: bool = False, comm=None) -> Path:
    """Create a run directory (and its ``checkpoint/`` folder), owner-only when ``sensitive``; rank 0 creates.

    A run directory or ``checkpoint/`` folder that is a symbolic link leading out of the directory that holds it is
    refused, before anything is written through it: where a campaign may write is decided once, by
    :func:`twin.driver.run_directory` (which follows every link), and a link planted later (``checkpoint -> /etc``,
    an experiment folder pointing elsewhere) must not move the outputs.

    Raises
    ------
    OutputError
        If a directory cannot be created, or is such a symbolic link.
    """
    comm = as_mpi_comm(comm)
    rank = comm.Get_rank() if comm is not None else 0
    path = Path(path)
    error = None
    if rank == 0:
        try:
            refuse_link_out(path, path.parent)
            make_directory(path, private=sensitive)
            refuse_link_out(path / "checkpoint", path)
            make_directory(path / "checkpoint", private=sensitive)
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            error = exc
    if comm is not None and comm.Get_size() > 1:
        message = comm.bcast(None if error is None else str(error), root=0)
        if message is not None and error is None:
            raise OutputError(message)
    if error is not None:
        raise error
    return path


def describe(attrs: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """Readable lines for a provenance mapping (the configuration shown by its hash and size, not verbatim)."""
    rec = Provenance.from_attrs(attrs)
    lines = []
    for name in FIELDS:
        value = getattr(rec, name)
        if name == "config":
            value = f"{len(value.splitlines())} lines" if value else "(none)"
        elif name == "sensitive":
            value = "yes" if value else "no"
        if value in ("", None):
            continue
        lines.append(f"{indent}{name}: {value}")
    return lines


__all__ = ["Provenance", "collect", "git_revision", "library_versions", "prepare_run_directory", "describe",
           "utc_now", "sha256_text", "FIELDS", "REDACTED", "RECORD"]
