"""The driver's heartbeat (``driver.json``): which process drives a run, whether it still lives, how far an online
driver is, and the processes it started that outlive it.

Every driver (online ``twin run``, a workflow driver, ``twin assimilate``) rewrites the file every few seconds and at
the end (:func:`write_heartbeat`); :func:`driver_state` reads it as ``running``, ``finished``, ``crashed``, ``lost`` or
``none`` (:mod:`twin.campaign.status` shows it, :mod:`twin.campaign.rundir` refuses a second command while it
runs). A resume first removes what a killed driver left: its temporary files (:func:`sweep_on_resume`) and, for a
workflow driver killed with SIGKILL, the Parsl processes its heartbeat names (:func:`stop_left_behind`). No MPI or
PETSc here (login nodes, the workflow driver).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from twin.campaign import layout

#: the heartbeat file in a run directory
HEARTBEAT_FILE = "driver.json"
#: seconds after which a driver heartbeat from another host counts as dead
HEARTBEAT_TIMEOUT = 120.0


def _boot() -> str:
    """A short digest of this machine's boot id: tells a heartbeat written on this machine (whose process can then
    be looked up) from one written elsewhere, without naming the host (sensitive runs record no host name)."""
    import hashlib

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    return hashlib.sha256(("twin heartbeat " + boot).encode()).hexdigest()[:16]


def write_heartbeat(run_dir, state: str = "running", progress: dict | None = None,
                    children: list[dict] | None = None) -> None:
    """Record the driver's process, host and time (called by the drivers every few seconds and at the end), and
    with ``progress`` where an online driver is (``{"experiment": name, "steps": "cycles", "done": k, "total": n}``),
    which ``twin status`` shows while the driver runs: its checkpoints come every few seconds (issue 23). With
    ``children`` (:func:`process_record` of each), the processes a workflow driver started on this machine (Parsl's
    interchange, local worker blocks), which outlive a driver killed with SIGKILL: :func:`stop_left_behind`.

    A sensitive run (an owner-only run directory, :func:`twin.io.atomic.is_private_directory`) records no host
    name, only a digest of the machine's boot id (:func:`_boot`), which lets :func:`driver_state` on the same
    machine look the process up. The final heartbeat (any state but ``running``) also makes every file and
    directory of a sensitive run owner-only (:func:`twin.io.atomic.seal_private`), for the files that libraries
    created with the process umask.
    """
    from twin.io.atomic import is_private_directory, seal_private

    private = is_private_directory(run_dir)
    beat = {"pid": os.getpid(), "start": _process_start(os.getpid()), "time": time.time(), "state": state,
            "boot": _boot()}
    if not private:
        beat["host"] = socket.gethostname()
    if progress is not None:
        beat["progress"] = progress
    if children:
        beat["children"] = children
    try:
        layout.write_json(Path(run_dir) / HEARTBEAT_FILE, beat)
    except OSError as exc:  # a full or read-only file system: the run goes on (or ends) with its own errors
        if str(run_dir) not in _UNWRITABLE:
            _UNWRITABLE.add(str(run_dir))
            from twin.core.log import get_logger

            get_logger("twin.campaign").warning(
                "cannot write %s (%s): twin status shows no progress of this run until it can", HEARTBEAT_FILE,
                exc.strerror or exc)
        return
    if private and state != "running":
        seal_private(run_dir)


#: run directories whose heartbeat could not be written (said once; found by a probe: a full disk ended a workflow
#: driver with an uncaught OSError from its heartbeat)
_UNWRITABLE: set[str] = set()


def _process_start(pid) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``), ``None`` if it does not run (or
    has ended and waits to be reaped, a zombie): a process id with its start time names one process, not a later one
    that reuses the id."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, ValueError, TypeError, IndexError):
        return None


def process_record(pid: int, group: bool = False) -> dict:
    """A process a driver started, for its heartbeat: ``{"pid", "start", "group"}`` (``group``: the whole process
    group of ``pid`` is the driver's, e.g. a local Parsl block: its worker pool and workers)."""
    return {"pid": int(pid), "start": _process_start(pid), "group": bool(group)}


def left_behind(run_dir) -> list[dict]:
    """The processes a lost driver of ``run_dir`` started on this machine that still run (the records of its last
    heartbeat whose process id still has the same start time)."""
    hb = layout.read_json(Path(run_dir) / HEARTBEAT_FILE)
    if hb.get("boot") != _boot() or driver_state(run_dir) != "lost":
        return []
    out = []
    for c in hb.get("children", []) if isinstance(hb.get("children"), list) else []:
        if isinstance(c, dict) and c.get("start") is not None and _process_start(c.get("pid")) == c.get("start"):
            out.append(c)
    return out


def stop_left_behind(run_dir, grace: float = 5.0) -> list[int]:
    """Stop the processes a lost driver of ``run_dir`` left running (:func:`left_behind`): SIGTERM, and SIGKILL for
    those still there after ``grace`` seconds. Returns their process ids. Call it before a new driver writes its
    heartbeat (the old one's names them)."""
    import signal

    left = left_behind(run_dir)

    def send(sig) -> None:
        for c in left:
            pid = int(c["pid"])
            try:
                group = os.getpgid(pid) if c.get("group") else None
                if group is not None and group != os.getpgrp():  # never this process's own group
                    os.killpg(group, sig)
                else:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    if not left:
        return []
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_process_start(c["pid"]) == c["start"] for c in left):
        time.sleep(0.1)
    if any(_process_start(c["pid"]) == c["start"] for c in left):
        send(signal.SIGKILL)
    return [int(c["pid"]) for c in left]


def process_alive(pid) -> bool:
    """Whether process ``pid`` runs here: it exists and is not a zombie (a killed MPI rank stays one until its
    launcher reaps it, seconds after ``mpiexec`` returned; Linux's ``/proc`` says so, elsewhere it counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except PermissionError:  # another user's process: it exists
        return True
    except (OSError, ValueError, TypeError):
        return False
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")


def driver_state(run_dir) -> str:
    """``running`` (alive), ``finished``, ``crashed`` (an error escaped it), ``lost`` (gone without a last word:
    killed, its node lost) or ``none`` (never started).

    A heartbeat written on this machine (same boot, or same host name) is judged by its process; one from elsewhere
    by its age (:data:`HEARTBEAT_TIMEOUT`).
    """
    hb = layout.read_json(Path(run_dir) / HEARTBEAT_FILE)
    if not hb:
        return "none"
    if hb.get("state") != "running":
        return str(hb.get("state"))
    here = (hb.get("boot") and hb.get("boot") == _boot()) or hb.get("host") == socket.gethostname()
    if here:
        if not process_alive(hb.get("pid")):
            return "lost"
        # the same process, not a later one that got its id (process ids are reused; found by a probe: a killed
        # driver's id taken by another process blocked the run directory for good)
        start = hb.get("start")
        if start is not None and hb.get("boot") == _boot() and _process_start(hb.get("pid")) not in (None, start):
            return "lost"
        return "running"
    return "running" if time.time() - float(hb.get("time", 0)) < HEARTBEAT_TIMEOUT else "lost"


def sweep_on_resume(run_dir, scope=None) -> list[Path]:
    """Remove the temporary files a killed run left in ``scope`` (default: the whole ``run_dir``) before a run
    resumes there (:func:`twin.io.atomic.sweep_temporary`); returns them.

    Nothing is removed while another driver of ``run_dir`` is alive (:func:`driver_state`): its writes in progress
    are such files. Call it before this process writes its own heartbeat.
    """
    from twin.core.log import get_logger
    from twin.io.atomic import sweep_temporary

    run_dir = Path(run_dir)
    scope = run_dir if scope is None else Path(scope)
    hb = layout.read_json(run_dir / HEARTBEAT_FILE)
    if scope == run_dir and driver_state(run_dir) == "running" and hb.get("pid") != os.getpid():
        get_logger("twin.campaign").warning(
            "another driver of %s seems alive (driver.json, process %s): its temporary files are left in place",
            run_dir, hb.get("pid"))
        return []
    removed = sweep_temporary(scope)
    if removed:
        get_logger("twin.campaign").info(
            "removed %d temporary file(s) left by an interrupted run: %s", len(removed),
            ", ".join(str(p.relative_to(run_dir)) if run_dir in p.parents else p.name for p in removed[:5])
            + (" ..." if len(removed) > 5 else ""))
    return removed
