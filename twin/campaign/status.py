"""``twin status RUN_DIR``: what each experiment of a campaign has done, read from the files alone.

No MPI, PETSc or HDF5 here (it runs on a login node while the campaign runs elsewhere): the state comes from file
names (:mod:`twin.campaign.layout`; a checkpoint at its final name is complete, because every writer renames
atomically), the failure markers, and the driver's heartbeat file ``driver.json``.

States of an experiment
-----------------------
``done``         every step finished (``done.json``; for run directories of older versions: the last checkpoint and
                 the NetCDF outputs exist);
``running``      not done, and the driver is alive (its process on this host, or a heartbeat younger than 2 minutes);
``interrupted``  not done, some progress, no live driver (resume it with ``twin run``/``twin submit`` again);
``failed``       the experiment raised (``failed.json``: a resume tries it again) or was stopped by the failure policy
                 (``stopped.json``); the message says why;
``pending``      nothing written yet.

The driver's state is ``running``, ``finished``, ``crashed`` (an error escaped the driver), ``stopped`` (its process
is gone without saying so) or ``none``.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from twin.campaign import layout
from twin.core.errors import ConfigError

HEARTBEAT_FILE = "driver.json"
#: seconds after which a driver heartbeat from another host counts as dead
HEARTBEAT_TIMEOUT = 120.0


@dataclass
class ExperimentStatus:
    """The progress of one experiment."""

    name: str
    state: str
    cycles_done: int
    n_cycles: int | None
    n_members: int | None
    members_done: int = 0
    dropped: dict[int, str] = field(default_factory=dict)
    message: str = ""

    def line(self) -> str:
        total = "?" if self.n_cycles is None else str(self.n_cycles)
        text = f"{self.name}: {self.state}, {self.cycles_done}/{total} cycles"
        if self.state in ("running", "interrupted") and self.n_members:
            text += f", cycle {self.cycles_done}: {self.members_done}/{self.n_members} member forecasts"
        if self.dropped:
            text += "; dropped members: " + ", ".join(f"{m} ({r})" for m, r in sorted(self.dropped.items()))
        if self.message:
            text += f"; {self.message}"
        return text


@dataclass
class CampaignStatus:
    run_dir: Path
    driver: str
    experiments: list[ExperimentStatus]

    def lines(self) -> list[str]:
        done = sum(e.state == "done" for e in self.experiments)
        head = f"{self.run_dir}: {len(self.experiments)} experiment(s), {done} done; driver {self.driver}"
        return [head] + ["  " + e.line() for e in self.experiments]

    @property
    def complete(self) -> bool:
        return bool(self.experiments) and all(e.state == "done" for e in self.experiments)


def write_heartbeat(run_dir, state: str = "running") -> None:
    """Record the driver's process, host and time (called by the drivers every few seconds and at the end).

    A sensitive run (an owner-only run directory, :func:`twin.io.atomic.is_private_directory`) records no host
    name: :func:`driver_state` then judges the driver by the age of its heartbeat alone. The final heartbeat (any
    state but ``running``) also makes every file and directory of a sensitive run owner-only
    (:func:`twin.io.atomic.seal_private`), for the files that libraries created with the process umask.
    """
    from twin.io.atomic import is_private_directory, seal_private

    private = is_private_directory(run_dir)
    beat = {"pid": os.getpid(), "time": time.time(), "state": state}
    if not private:
        beat["host"] = socket.gethostname()
    layout.write_json(Path(run_dir) / HEARTBEAT_FILE, beat)
    if private and state != "running":
        seal_private(run_dir)


def driver_state(run_dir) -> str:
    """``running`` (alive), ``finished``, ``stopped`` (not alive) or ``none`` (never started)."""
    hb = layout.read_json(Path(run_dir) / HEARTBEAT_FILE)
    if not hb:
        return "none"
    if hb.get("state") != "running":
        return str(hb.get("state"))
    if hb.get("host") == socket.gethostname():
        try:
            os.kill(int(hb["pid"]), 0)
            return "running"
        except (OSError, ValueError, KeyError):
            return "stopped"
    return "running" if time.time() - float(hb.get("time", 0)) < HEARTBEAT_TIMEOUT else "stopped"


def _sizes(exp_dir: Path) -> tuple[int | None, int | None]:
    """Number of cycles and members from ``experiment.yaml``, read through the campaign schema (MPI-free); ``None``
    for what an unreadable or assimilation-free file does not say."""
    from twin.config.loader import load_campaign

    try:
        a = load_campaign(layout.config_file(exp_dir)).config.assimilation
    except (ConfigError, OSError):
        return None, None
    schedule = getattr(a, "schedule", None)
    cycles = getattr(schedule, "cycles", None) if schedule is not None else getattr(a, "cycles", None)
    members = getattr(a, "N", None)
    return (None if cycles is None else int(cycles)), (None if members is None else int(members))


def experiment_status(exp_dir, driver_alive: bool = False) -> ExperimentStatus:
    exp_dir = Path(exp_dir)
    n_cycles, n_members = _sizes(exp_dir)
    cks = layout.checkpoint_cycles(exp_dir)
    done_cycles = max(cks) if cks else 0
    dropped: dict[int, str] = {}
    for k in range(done_cycles + 1):
        for m, reason in layout.member_files(exp_dir, k)[1].items():
            dropped.setdefault(m, f"cycle {k}: {reason}")
    members_done = len(layout.member_files(exp_dir, done_cycles)[0])
    found = layout.failure(exp_dir)
    complete = layout.done_marker(exp_dir).is_file() or (
        n_cycles is not None and done_cycles >= n_cycles and all((exp_dir / n).is_file() for n in layout.OUTPUTS))
    if complete:
        state, message = "done", ""
        if n_cycles is not None:
            done_cycles = n_cycles
    elif found:
        state, message = "failed", found[1] if found[0] == "failed" else f"stopped: {found[1]}"
    elif not cks and members_done == 0 and not layout.observations_file(exp_dir).exists():
        state, message = ("running" if driver_alive else "pending"), ""
    else:
        state, message = ("running" if driver_alive else "interrupted"), ""
    return ExperimentStatus(exp_dir.name, state, done_cycles, n_cycles, n_members, members_done, dropped, message)


def status(run_dir) -> CampaignStatus:
    """The status of every experiment of the campaign in ``run_dir``."""
    run_dir = Path(run_dir)
    driver = driver_state(run_dir)
    exps = [experiment_status(d, driver == "running") for d in layout.experiment_dirs(run_dir)]
    return CampaignStatus(run_dir, driver, exps)


def summary(run_dir) -> dict[str, Any]:
    """The status as plain data (``twin status --json``)."""
    st = status(run_dir)
    return {"run_dir": str(st.run_dir), "driver": st.driver, "complete": st.complete,
            "experiments": [e.__dict__ | {"dropped": {str(k): v for k, v in e.dropped.items()}}
                            for e in st.experiments]}
