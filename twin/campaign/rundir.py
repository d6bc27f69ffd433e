"""Who may write a run directory: the campaign it belongs to, and one command at a time.

**Ownership.** The first run writes the campaign file it was started with into the run directory
(``campaign.yaml``). A later ``twin run`` or ``twin submit`` there must be of the same campaign (its ``campaign.name``:
a resume, or the same campaign extended); another campaign is refused before anything is written, since its
outputs (``forecast.nc``, ``qoi.nc``, ``matrix.json`` ...) would replace or mix with the first one's. A directory
that holds other files but no twin run (no ``campaign.yaml``, no ``twin.log``: ``-o .``, ``-o configs``) is refused
too. Run directories of older versions of twin, where forecast runs wrote no ``campaign.yaml``, have a ``twin.log``
and are taken over.

**One command at a time.** While ``twin run`` or ``twin assimilate`` works on a run directory, rank 0 holds an
exclusive ``flock`` on it; a second command there is refused with :class:`RunBusy` (exit 3: run it again later). A
live driver of it elsewhere (a ``twin run`` on another node of the cluster, whose lock a network file system may not
share) is recognised by its heartbeat (``driver.json``, :func:`twin.campaign.heartbeat.driver_state`). Where the file
system has no ``flock`` (some NFS and Lustre mounts), the heartbeat is the only guard.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from twin.campaign import layout
from twin.core.errors import ConfigError, TwinError, WorkflowError

#: the campaign file a run directory was started with
CAMPAIGN_FILE = "campaign.yaml"
#: twin's log, in every run directory twin has written
LOG_FILE = "twin.log"


class RunBusy(WorkflowError):
    """Another ``twin run`` or ``twin assimilate`` works on the run directory."""


def _stored_name(path: Path) -> str | None:
    """``campaign.name`` of the campaign file kept in a run directory, or ``None`` when it cannot be read."""
    from twin.config.loader import parse_yaml

    try:
        data, _ = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        return str(data["campaign"]["name"])
    except (OSError, UnicodeDecodeError, TwinError, KeyError, TypeError):
        return None


def check_owner(run_dir, loaded) -> None:
    """Refuse ``run_dir`` when it belongs to another campaign or holds files but no twin run (read-only; call it
    before anything is created there).

    Raises
    ------
    ConfigError
        With what to do: another run directory (``-o DIR`` or ``outputs.directory``).
    """
    run_dir = Path(run_dir)
    name = loaded.config.campaign.name
    stored = run_dir / CAMPAIGN_FILE
    if stored.is_file():
        other = _stored_name(stored)
        if other is None:
            raise ConfigError(f"{stored} cannot be read as a campaign file, so it is not known which campaign "
                              f"{run_dir} belongs to: choose another run directory (-o DIR or outputs.directory)")
        if other != name:
            raise ConfigError(f"{run_dir} holds campaign {other!r} ({stored}), not {name!r} of {loaded.path}: "
                              "choose another run directory (-o DIR or outputs.directory)")
        return
    if run_dir.is_dir() and not (run_dir / LOG_FILE).exists() and any(not _skeleton(p) for p in run_dir.iterdir()):
        if _held(run_dir):  # another command is creating it (its campaign.yaml being written): busy, not foreign
            raise RunBusy(f"{run_dir}: another twin command (run or assimilate) is working on it; run this command "
                          "again when it has finished")
        raise ConfigError(f"{run_dir} holds other files and no twin run (no {CAMPAIGN_FILE} or {LOG_FILE}): choose a "
                          "new or empty run directory (-o DIR or outputs.directory), so that twin's outputs do not "
                          "mix with them")


def _skeleton(entry: Path) -> bool:
    """Whether ``entry`` is what a twin command that is creating the run directory has made before it takes the lock
    (an empty ``checkpoint/``): a second command started at the same moment finds it and goes on to the lock, where it
    is told the directory is busy (exit 3) instead of that it holds other files; after the lock is taken,
    :func:`_held` says so."""
    try:
        return entry.name == "checkpoint" and entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir())
    except OSError:
        return False


def _held(run_dir: Path) -> bool:
    """Whether another process holds the lock of ``run_dir`` (:func:`locked`) at this moment."""
    import fcntl

    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def record_owner(run_dir, loaded) -> None:
    """Keep the campaign file in ``run_dir`` (``campaign.yaml``) unless it is there already (rank 0)."""
    from twin.io.atomic import write_text

    stored = Path(run_dir) / CAMPAIGN_FILE
    if not stored.exists():
        write_text(stored, loaded.text, private=loaded.config.campaign.sensitive)


@contextlib.contextmanager
def locked(run_dir):
    """Hold an exclusive lock on ``run_dir`` for the block (one process: rank 0), or raise :class:`RunBusy`."""
    import fcntl

    from twin.campaign.heartbeat import HEARTBEAT_FILE, driver_state

    run_dir = Path(run_dir)
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError as exc:
        raise WorkflowError(f"{run_dir}: cannot be opened ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir}: another twin command (run or assimilate) is working on it; run this command "
                          "again when it has finished") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        beat = layout.read_json(run_dir / HEARTBEAT_FILE)
        if driver_state(run_dir) == "running" and beat.get("pid") != os.getpid():
            raise RunBusy(f"{run_dir}: a twin run driver (process {beat.get('pid')} on {beat.get('host', '?')}, "
                          f"{HEARTBEAT_FILE}) is working on it; run this command again when it has finished")
        yield
    finally:
        os.close(fd)


def on_root(comm, fn):
    """``fn()`` on rank 0 (all ranks without ``comm``) and its result on every rank; an error there is raised on every
    rank as the same class with the same message, so that no rank is left waiting in a collective call."""
    if comm is None or comm.Get_size() == 1:
        return fn()
    result, error = None, None
    if comm.Get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - raised again below, on every rank
            error = exc
    result, failure = comm.bcast((result, None if error is None else (type(error), str(error))), root=0)
    if error is not None:
        raise error
    if failure is not None:
        cls, message = failure
        try:
            raise cls(message)
        except TypeError:  # an error class that takes other arguments
            raise WorkflowError(message) from None
    return result


def guard(stack: contextlib.ExitStack, run_dir, loaded, comm=None) -> Path:
    """Check who owns ``run_dir`` (:func:`check_owner`), create it (:func:`twin.io.provenance
    .prepare_run_directory`), hold its lock in ``stack`` (:func:`locked`) and keep the campaign file in it; collective
    over ``comm``, errors raised on every rank. Returns the run directory."""
    from twin.io.provenance import prepare_run_directory

    on_root(comm, lambda: check_owner(run_dir, loaded))
    out = prepare_run_directory(run_dir, sensitive=loaded.config.campaign.sensitive, comm=comm)
    on_root(comm, lambda: stack.enter_context(locked(out)) and None)
    on_root(comm, lambda: check_owner(out, loaded))  # again, holding the lock: a command that held it before may
    on_root(comm, lambda: record_owner(out, loaded))  # have made it another campaign's since the first look
    return out
