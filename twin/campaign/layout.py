"""Where a campaign keeps its files. Pure path arithmetic: no MPI, PETSc or HDF5 (the workflow process uses it).

::

    <run_dir>/
        campaign.yaml                    the campaign file as given (verbatim)
        twin.log                         log of the driver (workflow or online)
        runinfo/                         Parsl's run directory (workflow mode)
        experiments/<name>/
            experiment.yaml              the expanded, validated campaign of this experiment
            observations.h5              truth and synthetic observations at every cycle end (twin experiments)
            checkpoint/cycle_NNNN.h5     analysis ensemble at the start of cycle NNNN (0: the prior ensemble)
            forecast/cycle_NNNN/member_MMMM.h5       member MMMM advanced over cycle NNNN
            forecast/cycle_NNNN/member_MMMM.failed   JSON: why the member was dropped in that cycle
            stopped.json                 JSON: why the experiment stopped (policy "stop", too few members)
            tasks.jsonl                  one JSON line per task run or skipped (what, when, where: the host,
                                         except in a sensitive run; outcome)
            posterior.nc  forecast.nc  diagnostics.nc     written by ``finalize``

Cycle ``k`` forecasts from ``t_k`` to ``t_{k+1}`` (``t_k = start + k * cycle_length``) and assimilates the
observations of ``t_{k+1}``; its analysis is checkpoint ``k + 1``. A campaign of ``K`` cycles is complete when
checkpoint ``K`` and the NetCDF outputs exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

EXPERIMENTS = "experiments"
_CYCLE_RE = re.compile(r"^cycle_(\d+)\.h5$")
_MEMBER_RE = re.compile(r"^member_(\d+)\.(h5|failed)$")


def experiment_dir(run_dir: str | os.PathLike, name: str) -> Path:
    return Path(run_dir) / EXPERIMENTS / name


def experiment_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """The experiment directories of a run, sorted by name."""
    root = Path(run_dir) / EXPERIMENTS
    return sorted(p for p in root.iterdir() if (p / "experiment.yaml").is_file()) if root.is_dir() else []


def config_file(exp_dir: str | os.PathLike) -> Path:
    return Path(exp_dir) / "experiment.yaml"


def observations_file(exp_dir: str | os.PathLike) -> Path:
    return Path(exp_dir) / "observations.h5"


def observation_export_file(exp_dir: str | os.PathLike) -> Path:
    """A twin experiment's synthetic observations as a CF-DSG file (:mod:`twin.observations.export`)."""
    return Path(exp_dir) / "observations.nc"


def qc_file(exp_dir: str | os.PathLike) -> Path:
    """Observations left out by a filter's background check, one JSON line each (cycle, network, row)."""
    return Path(exp_dir) / "qc.jsonl"


def checkpoint_file(exp_dir: str | os.PathLike, cycle: int) -> Path:
    """Same name as :func:`twin.io.checkpoint.checkpoint_path` (``<exp>/checkpoint/cycle_NNNN.h5``)."""
    return Path(exp_dir) / "checkpoint" / f"cycle_{int(cycle):04d}.h5"


def forecast_dir(exp_dir: str | os.PathLike, cycle: int) -> Path:
    return Path(exp_dir) / "forecast" / f"cycle_{int(cycle):04d}"


def forecast_file(exp_dir: str | os.PathLike, cycle: int, member: int) -> Path:
    return forecast_dir(exp_dir, cycle) / f"member_{int(member):04d}.h5"


def failed_marker(exp_dir: str | os.PathLike, cycle: int, member: int) -> Path:
    return forecast_dir(exp_dir, cycle) / f"member_{int(member):04d}.failed"


def stopped_marker(exp_dir: str | os.PathLike) -> Path:
    """Written when the experiment's failure policy stopped it (``experiments.on_member_failure: stop``, too few
    members left): a resume skips it, since running it again would meet the same failure, until the file is
    removed (:func:`to_run_again`)."""
    return Path(exp_dir) / "stopped.json"


def to_run_again(exp_dir: str | os.PathLike) -> str:
    """What a stopped experiment's lines add: how to have the next run of the campaign take it up again. Members
    dropped in the cycle it stopped in (too few left for ``min_members``) stay dropped while their markers are there:
    those are named too (found by a probe: removing ``stopped.json`` alone stopped the rerun again at once)."""
    cycle = (read_json(stopped_marker(exp_dir)) or {}).get("cycle")
    dropped = member_files(exp_dir, cycle)[1] if isinstance(cycle, int) else {}
    markers = (f" and the markers of the members dropped in cycle {cycle} ({forecast_dir(exp_dir, cycle)}/"
               "member_*.failed, to forecast them again)") if dropped else ""
    return f"remove {stopped_marker(exp_dir)}{markers} to run it again (after changing what stopped it)"


def to_try_again(reason: str) -> str:
    """``reason`` of a failed experiment (``failed.json``) with what its final line adds: a rerun tries it again
    from its files (a probe found online mode's line without it, while the workflow's said it); nothing is added
    to a reason that says it already."""
    if "rerun" in reason or "run the same command again" in reason:
        return reason
    return f"{reason}; run the same command again to try it again from its files (after fixing the cause)"


def done_marker(exp_dir: str | os.PathLike) -> Path:
    """Written last, when every step of the experiment (outputs and decision) is complete: a resume skips it."""
    return Path(exp_dir) / "done.json"


def error_marker(exp_dir: str | os.PathLike) -> Path:
    """Written when the experiment raised (a PETSc error, a diverged solver, a non-finite value ...): the campaign
    went on with the others; a resume tries this one again."""
    return Path(exp_dir) / "failed.json"


def failure(exp_dir: str | os.PathLike) -> tuple[str, str] | None:
    """``("failed", reason)`` (``failed.json``: the experiment raised) or ``("stopped", reason)`` (``stopped.json``:
    its failure policy stopped it), or ``None`` for an experiment that did neither."""
    for marker, kind in ((error_marker(exp_dir), "failed"), (stopped_marker(exp_dir), "stopped")):
        info = read_json(marker)
        if info:
            return kind, str(info.get("reason", "unknown reason"))
    return None


def task_log(exp_dir: str | os.PathLike) -> Path:
    return Path(exp_dir) / "tasks.jsonl"


OUTPUTS = ("posterior.nc", "forecast.nc", "diagnostics.nc")


def checkpoint_cycles(exp_dir: str | os.PathLike) -> list[int]:
    """Cycles with a checkpoint file at its final name (temporary files never match), ascending; not verified."""
    d = Path(exp_dir) / "checkpoint"
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _CYCLE_RE.match(p.name)))


def member_files(exp_dir: str | os.PathLike, cycle: int) -> tuple[list[int], dict[int, str]]:
    """Members with a forecast file in ``cycle``, and the dropped members with the reason from their marker."""
    d = forecast_dir(exp_dir, cycle)
    done, failed = [], {}
    if d.is_dir():
        for p in d.iterdir():
            m = _MEMBER_RE.match(p.name)
            if not m:
                continue
            if m.group(2) == "h5":
                done.append(int(m.group(1)))
            else:
                failed[int(m.group(1))] = read_json(p).get("reason", "unknown")
    return sorted(done), failed


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A small JSON file's object, or ``{}`` if it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically (rename), for markers written by one process; owner-only (``0o600``) in
    an owner-only directory (a sensitive run, :func:`twin.io.atomic.is_private_directory`)."""
    from twin.core.private import PRIVATE_FILE_MODE, is_private_directory

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = is_private_directory(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE if private else 0o666)
    try:
        if private:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # a leftover temporary file keeps its old mode through O_TRUNC
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: no temporary file left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def log_task(exp_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one line to the experiment's task log.

    One ``write`` of one short line on a file opened with ``O_APPEND``: concurrent tasks on a POSIX file system do
    not interleave their lines. In an owner-only experiment directory (a sensitive run) the file is owner-only and
    the line names no host.
    """
    from twin.core.private import PRIVATE_FILE_MODE, is_private_directory

    private = is_private_directory(exp_dir)
    rec = {"time": time.time(), "pid": os.getpid(), **({} if private else {"host": socket.gethostname()}), **record}
    line = (json.dumps(rec, sort_keys=True) + "\n").encode()
    fd = os.open(task_log(exp_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE if private else 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_task_log(exp_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of the experiment's task log (a torn last line from a killed task is skipped)."""
    out = []
    try:
        text = task_log(exp_dir).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
