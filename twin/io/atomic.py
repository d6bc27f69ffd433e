"""Atomic file output: write under a temporary name in the target directory, fsync, then ``os.replace``.

Every writer in :mod:`twin.io` goes through :func:`atomic_output`, so a crash (or a failed rank) at any point leaves
either the previous complete file or no file at the final name, never a partial file that looks complete. Temporary
files are named ``.<final name>.tmp-<token>`` (hidden, and never matching ``cycle_*.h5``), in the *same* directory so
that the rename is atomic on POSIX file systems.

On several MPI ranks, rank 0 chooses the temporary name and broadcasts it; every rank writes (for parallel HDF5) or
only rank 0 writes (gathered output); then all ranks agree on success (``allreduce``) and, after that barrier, rank 0
alone fsyncs, renames and fsyncs the directory. A failure on any rank removes the temporary file and raises
:class:`~twin.core.errors.OutputError` on every rank, so no rank is left waiting in a collective call.

Owner-only output (``private=True``, used by sensitive campaigns) creates the temporary file with mode ``0o600``
*before* any library opens it (HDF5 and netCDF truncate an existing file and keep its mode), so the data are never
readable by others, not even during the write.

Private run directories
-----------------------
A sensitive campaign's run directory is created owner-only (``0o700``, :func:`make_directory` with
``private=True``, which makes every directory it creates on the way owner-only too). Writers that are not handed the
campaign's ``sensitive`` flag (the log, markers, the driver's heartbeat, the task log) tell from
:func:`is_private_directory` that their output must be private and must name no host or user: the property lives in
the file system, so it holds in every process that touches the run (Parsl workers, ``twin status`` on another host).
A run directory that is owner-only for another reason (a umask of ``077``) is treated the same way, which only
withholds more. The drivers of a sensitive campaign run under an owner-only umask (:func:`private_umask`), so every
file and directory is owner-only from its creation, whoever creates it; :func:`seal_private` makes owner-only, when
the driver finishes, what other processes created with their own umask (a batch system's log files).

Leftovers of a killed run
-------------------------
A process killed while writing (SIGKILL, the OOM killer, a node lost) leaves its temporary file behind; nothing reads
it (readers skip :func:`is_temporary` names), but it holds disk space. :func:`sweep_temporary` removes them when a
run directory is resumed: regular files named exactly as twin names its temporary files, inside the run directory
only (symbolic links are neither followed nor removed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from twin.core.errors import ObservationError, OutputError, TwinError, WriteError
from twin.core.log import get_logger
from twin.core.private import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, is_private_directory

log = get_logger("twin.io.atomic")

T = TypeVar("T")

#: Mode of a private (sensitive) file and directory.


def _rank_size(comm) -> tuple[int, int]:
    if comm is None:
        return 0, 1
    return comm.Get_rank(), comm.Get_size()


def as_mpi_comm(comm):
    """An mpi4py communicator for ``comm`` (mpi4py, petsc4py or ``None`` for a serial call)."""
    if comm is None:
        return None
    if hasattr(comm, "tompi4py"):
        return comm.tompi4py()
    return comm


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a temporary file of :func:`atomic_output` (to be ignored by readers)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp-" in name


#: twin's temporary names: ``.<final name>.tmp-<hex token>`` (:func:`atomic_output`) or ``-<pid>`` (small JSON
#: markers, decision records, the report)
_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]+$")


def sweep_temporary(root: str | os.PathLike) -> list[Path]:
    """Remove twin's leftover temporary files below ``root`` (a run or experiment directory); returns them.

    Only regular files whose names match twin's own pattern are removed; symbolic links, directories and files of
    other programs are left, and links to directories are not followed, so nothing outside ``root`` is touched.
    Call it only when no other process writes in ``root`` (a resume, before anything runs): it would remove a live
    writer's file. A file that vanishes or cannot be removed meanwhile is skipped.
    """
    removed: list[Path] = []
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        return removed
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            if not _TEMPORARY.match(name):
                continue
            p = Path(dirpath) / name
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                os.remove(p)
            except OSError:
                continue
            removed.append(p)
    return sorted(removed)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable() -> None:
    """Commit every file written so far to stable storage: the group commit of files written with
    ``atomic_output(durable=False)``.

    One ``sync`` for all of them: an ``fsync`` per file forces a journal commit each (1-5 ms a file on ext4 here,
    whether at once or later), which was the largest cost of a small model's cycle; ``sync`` commits once
    (20 ms for 200 files). It is system-wide: called every few seconds, not per file."""
    os.sync()


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory entry (makes a rename durable); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_directory(path: str | os.PathLike, private: bool = False) -> Path:
    """Create ``path`` (and parents); with ``private`` the leaf directory and every parent created on the way are
    owner-only (``0o700``; existing parents are left as they are)."""
    path = Path(path)
    try:
        if private:
            missing = [p for p in (path, *path.parents) if not p.exists()]
            for p in reversed(missing):
                p.mkdir(exist_ok=True, mode=PRIVATE_DIR_MODE)
                os.chmod(p, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask and ACL defaults
            os.chmod(path, PRIVATE_DIR_MODE)
        else:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create directory {path}: {exc.strerror or exc}") from None
    return path


#: umask of a sensitive run's processes: every file (``0o600``) and directory (``0o700``) owner-only from creation
PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_umask(private: bool) -> Iterator[None]:
    """With ``private``, run the block under the owner-only umask :data:`PRIVATE_UMASK` (restored afterwards).

    Every file and directory created meanwhile, by twin or by any library (HDF5, netCDF, Parsl, the JSON markers,
    ``decision.json``, forecast directories), is owner-only from the moment it exists, not made so afterwards. The
    umask is process-wide: other threads of the process are covered too, which only withholds more.
    """
    if not private:
        yield
        return
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def seal_private(root: str | os.PathLike) -> int:
    """Make every directory (``0o700``) and file (group and other bits cleared) below the private directory ``root``
    owner-only; returns the number of entries changed (``0`` and nothing done when ``root`` is not private).

    For files created with the process umask by code that does not know the run is sensitive (Parsl's run
    information, libraries' side files). Entries owned by someone else and symbolic links are left alone; an entry
    that vanishes or cannot be changed while the walk runs is skipped (the directory above it is owner-only anyway).
    """
    root = Path(root)
    if not is_private_directory(root):
        return 0
    uid, changed = os.geteuid(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
                if st.st_uid != uid or stat.S_ISLNK(st.st_mode):
                    continue
                mode = stat.S_IMODE(st.st_mode)
                want = PRIVATE_DIR_MODE if stat.S_ISDIR(st.st_mode) else mode & ~0o077
                if mode != want:
                    os.chmod(p, want)
                    changed += 1
            except OSError:
                continue
    return changed


def _create_temporary(final: Path, token: str, private: bool) -> Path:
    tmp = final.with_name(f".{final.name}.tmp-{token}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE if private else 0o666)
    os.close(fd)
    if private:
        os.chmod(tmp, PRIVATE_FILE_MODE)  # the umask cannot widen it, but a pre-existing ACL default might
    return tmp


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, comm=None, *, private: bool = False,
                  overwrite: bool = True, reserve: int = 0, durable: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path to write; renamed to ``path`` when the block succeeds on all ranks.

    Parameters
    ----------
    path : path-like
        Final file name. Its directory must exist (see :func:`make_directory`).
    comm : mpi4py or petsc4py communicator, optional
        Collective over ``comm`` when given: every rank must enter and leave the block.
    private : bool
        Create the file owner-only (``0o600``).
    overwrite : bool
        If false, refuse (before writing anything) when ``path`` exists.
    reserve : int
        Bytes the file will take (an estimate): refused before anything is written unless the file system has that
        much free, plus :data:`FREE_SPACE_MARGIN`. HDF5 does not survive running out of space in the middle of a
        file (h5py 3.7 then crashes in its clean-up with a segmentation fault), so its writers check first.
    durable : bool
        Flush the file and the rename to stable storage before returning (default). ``False``: the rename is atomic
        for every process (a killed writer leaves the old file or the new one) but a crash of the machine may lose
        it or leave it damaged until :func:`make_durable`; for files a reader verifies and can compute again (the
        online driver's cycle checkpoints).

    Raises
    ------
    OutputError
        If the directory is missing, the file exists and ``overwrite`` is false, the rename fails, or writing failed
        on another rank. An exception raised inside the block propagates unchanged on its rank (after the temporary
        file is removed).
    """
    comm = as_mpi_comm(comm)
    rank, size = _rank_size(comm)
    final = Path(path)
    problem = None
    tmp = None
    if rank == 0:
        if not final.parent.is_dir():
            problem = f"cannot write {final}: directory {final.parent} does not exist"
        elif not overwrite and final.exists():
            problem = f"refusing to overwrite existing file {final}"
        elif reserve and (free := _free_bytes(final.parent)) < reserve + FREE_SPACE_MARGIN:
            problem = (f"cannot write {final.name} in {final.parent}: it needs about {_mib(reserve)} (and "
                       f"{_mib(FREE_SPACE_MARGIN)} to spare) and that file system has {_mib(free)} free; free space "
                       "there (or write the run elsewhere with -o) and run the same command again to resume")
        elif reserve and (most := _largest_file()) < reserve + FREE_SPACE_MARGIN:
            problem = (f"cannot write {final.name} in {final.parent}: it needs about {_mib(reserve)} (and "
                       f"{_mib(FREE_SPACE_MARGIN)} to spare) and this process may write files of at most "
                       f"{_mib(most)} (its file size limit, ulimit -f); raise the limit and run the same command "
                       "again to resume")
        else:
            try:
                tmp = _create_temporary(final, secrets.token_hex(6), private)
            except OSError as exc:
                problem = (f"cannot create a temporary file next to {final}: {exc.strerror or exc}; the directory "
                           "cannot be written (permissions, a read-only or full file system): fix that and run the "
                           "same command again to resume")
    if size > 1:
        problem, tmp = comm.bcast((problem, tmp), root=0)
    if problem:
        refused = problem.startswith(("cannot write", "cannot create a temporary")) and "does not exist" not in problem
        raise (WriteError if refused else OutputError)(problem)

    error: BaseException | None = None
    try:
        yield tmp
    except OSError as exc:
        error = _write_failure(exc, final) or exc
    except BaseException as exc:  # noqa: BLE001 - re-raised below after the ranks agree
        error = _write_failure(exc, final) or exc
    ok = error is None
    if size > 1:
        ok = bool(comm.allreduce(int(ok), op=_min_op()))
    if ok and rank == 0:
        try:
            if durable:
                fsync_file(tmp)
            os.replace(tmp, final)
            if durable:
                fsync_directory(final.parent)
        except OSError as exc:
            error = _disk_full(exc, final) or WriteError(f"cannot move {tmp.name} to {final}: {exc.strerror or exc}")
            ok = False
    if size > 1:
        ok = bool(comm.bcast(ok, root=0))
    if not ok:
        if rank == 0:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if error is None:
            raise OutputError(f"writing {final} failed on another rank; nothing was written")
        raise error
    log.debug("wrote %s", final)


#: free space kept beyond a writer's estimate (file system metadata, HDF5's own structures, the rename)
FREE_SPACE_MARGIN = 1 << 18


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 1 << 62  # unknown: let the write find out


def _largest_file() -> int:
    """The largest file this process may write (``RLIMIT_FSIZE``, ``ulimit -f``): past it a write fails with EFBIG in
    the middle of the file, which HDF5 survives no better than a full disk."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return 1 << 62
    return 1 << 62 if soft == resource.RLIM_INFINITY else int(soft)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2g} MiB"


def _disk_full(exc: OSError, final: Path) -> OutputError | None:
    """The one-line error for a write that ran out of space (ENOSPC) or quota (EDQUOT), else ``None``."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    what = "no space left" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
    return WriteError(f"cannot write {final.name} in {final.parent}: {what} on that file system; free space there "
                      "and run the same command again (a run resumes where it stopped): nothing half-written was "
                      "kept")


def _write_failure(exc: BaseException, final: Path) -> OutputError | None:
    """The one-line error for a writer's failure the file system caused, whatever library raised it, else ``None``
    (twin's own errors, a signal, a program's fault pass unchanged). HDF5 and netCDF-C do not say ENOSPC when the
    space goes while they write: HDF5 raises ``RuntimeError: ... file write failed ... errno = 28``, netCDF-C
    ``RuntimeError: NetCDF: HDF error`` or, creating a file, ``PermissionError`` (EACCES); a probe filling a run's
    disk got those as the run's error, without the file, or with the wrong cause. A writer that failed on a file
    system with next to no space left is taken for one that ran out of it."""
    if isinstance(exc, TwinError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError):
        full = _disk_full(exc, final)
        if full is not None:
            return full
        if exc.errno == errno.EFBIG:
            return WriteError(f"cannot write {final.name} in {final.parent}: the file is larger than this process "
                              "may write (its file size limit, ulimit -f); raise the limit and run the same command "
                              "again to resume")
    said = " ".join(str(exc).split())
    if "errno = 28" in said or "No space left" in said or (
            isinstance(exc, (OSError, RuntimeError)) and _free_bytes(final.parent) < FREE_SPACE_MARGIN):
        return WriteError(f"cannot write {final.name} in {final.parent}: no space left on that file system "
                          f"({type(exc).__name__}: {said[:160]}); free space there and run the same command again "
                          "(a run resumes where it stopped): nothing half-written was kept")
    return None


def _min_op():
    from mpi4py import MPI

    return MPI.MIN


def root_call(comm, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and broadcast its result; an exception there is raised on every rank.

    A :class:`~twin.core.errors.TwinError` is re-raised as itself on rank 0 (as an ``ObservationError`` or
    ``OutputError`` with the same message on the other ranks); any other exception becomes an ``OutputError``.

    Used for output gathered to one rank (NetCDF files), so that a failure on rank 0 does not leave the other ranks
    waiting in the next collective call.
    """
    comm = as_mpi_comm(comm)
    rank, size = _rank_size(comm)
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised (as itself on rank 0) below
            error = exc
    if size > 1:
        message = None if error is None else (type(error).__name__, str(error))
        result, message = comm.bcast((result, message), root=0)
        if message is not None and rank != 0:
            cls = ObservationError if message[0] == "ObservationError" else OutputError
            raise cls(message[1])
    if error is not None:
        if isinstance(error, TwinError):
            raise error
        raise OutputError(f"{type(error).__name__}: {error}") from error
    return result


def write_bytes(path: str | os.PathLike, data: bytes, comm=None, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (rank 0 writes; collective over ``comm``)."""
    rank, _ = _rank_size(as_mpi_comm(comm))
    with atomic_output(path, comm, private=private) as tmp:
        if rank == 0:
            with open(tmp, "wb") as f:
                f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, comm=None, *, private: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (rank 0 writes; collective over ``comm``)."""
    return write_bytes(path, text.encode("utf-8"), comm, private=private)
