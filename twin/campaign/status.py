"""``twin status RUN_DIR``: what each experiment of a campaign has done, read from the files, and verified.

No MPI or PETSc in this process (it runs on a login node while the campaign runs elsewhere, and inside the workflow
driver): the state comes from file names (:mod:`twin.campaign.layout`; a checkpoint at its final name is complete,
because every writer renames atomically), the markers, and the driver's heartbeat file ``driver.json``
(:mod:`twin.campaign.heartbeat`). What a finished experiment claims is checked before it is reported: every output its
``done.json`` lists is there, not empty, and of the size ``done.json`` records for it (:func:`damaged_outputs`: one
``stat`` per file, so cheap on a login node; ``twin inspect`` reads the files in full), and its last checkpoint
verifies in full (checksum and data digests, in a process of its own: :func:`verify_last_checkpoints`). A resume makes
the same output check (:func:`twin.campaign.online._finished`).

States of an experiment
-----------------------
``done``         every step finished (``done.json``; for run directories of older versions: the last checkpoint and
                 the NetCDF outputs exist), every promised output is there and the last checkpoint verifies;
``damaged``      it finished, but a promised output is missing, empty, or of another size than when the run
                 finished (truncated or changed; ``done.json`` of older versions records no sizes: missing or empty
                 only), or the last checkpoint is missing or does not verify (truncated, bit-flipped, empty); the
                 message names the file, what is wrong and what to do: run the campaign again, whose resume keeps
                 a damaged output as ``<name>.damaged-<time>`` and writes it again; or its ``done.json`` is there
                 but cannot be read (not JSON, not an object, outputs or sizes of the wrong shape:
                 :func:`read_done`), so what it finished with cannot be checked (the resume takes it as unfinished,
                 or sets ``done.json`` aside, and writes the outputs again where they do not verify);
``unverified``   it finished and nothing was found damaged, but the last checkpoint's verification could not be
                 carried out (the verifying process failed before answering: PETSc could not start, a missing
                 module ...); the message gives the cause in one line, and nothing is to be deleted;
``running``      not done, and the driver is alive (its process on this machine, or a heartbeat younger than 2
                 minutes from elsewhere); an online driver's heartbeat carries the cycles it has done (about
                 a second behind), shown with the last checkpoint's cycle when it is ahead of it;
``interrupted``  not done, some progress, no live driver (resume it with ``twin run``/``twin submit`` again);
``failed``       the experiment raised (``failed.json``: a resume tries it again); the message says why;
``stopped``      its failure policy stopped it (``stopped.json``: a resume skips it until the file is removed); the
                 message says why and what to remove (also the markers of members dropped in that cycle);
``pending``      nothing written yet.

The driver's state is ``running``, ``finished``, ``crashed`` (an error escaped the driver), ``lost`` (its process is
gone, or its heartbeat stale, without a last word: killed, out of memory, its node lost) or ``none``; with ``none``
and a job submitted by ``twin submit``, Slurm's view of that job (queued, starting, or ended without starting the
driver), or that ``twin submit`` wrote its batch script but no job was submitted (sbatch failed or was missing).

Exit status of ``twin status`` (:attr:`CampaignStatus.exit_status`): 0 every experiment done and verified; 1 the
operator must act (an experiment failed, is damaged, unverified or interrupted; the driver crashed or was lost; the
batch job ended without starting it or was never submitted); 3 still to come (running, queued, not started).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from twin.campaign import layout
from twin.campaign.heartbeat import HEARTBEAT_FILE, driver_state, left_behind
from twin.core.errors import BUSY, ConfigError



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
    #: an experiment fed by observation files: its quality-control counts summed over its networks
    #: (:func:`observation_qc`), else ``None``
    observations: dict[str, int | None] | None = None

    def qc_line(self) -> str | None:
        """One line of the quality-control counts of an experiment fed by files (``None`` for a twin experiment)."""
        q = self.observations
        if not q:
            return None
        bg = q.get("background")
        used = q["accepted"] - (bg or 0)
        parts = [f"{used} used", f"{q['missing']} missing", f"{q['outside_time']} outside the time span",
                 f"{q['outside_domain']} outside the domain", f"{q['duplicate']} duplicate",
                 f"{q['range']} out of range", f"{q['thinned']} thinned or superseded"]
        if q.get("superobservations") is not None:
            parts.append(f"{q['superobs']} averaged into {q['superobservations']} super-observations")
        parts.append("no background check" if bg is None else f"{bg} rejected by the background check")
        return f"{self.name} observations: " + ", ".join(parts)

    def line(self) -> str:
        total = "?" if self.n_cycles is None else str(self.n_cycles)
        text = f"{self.name}: {self.state}, {self.cycles_done}/{total} cycles"
        if self.state in ("running", "interrupted") and self.n_members and self.members_done:
            # a workflow's member tasks leave files; the online driver keeps a cycle's forecasts in memory
            text += f", cycle {self.cycles_done}: {self.members_done}/{self.n_members} member forecasts"
        if self.dropped:
            text += "; dropped members: " + ", ".join(f"{m} ({r})" for m, r in sorted(self.dropped.items()))
        if self.message:
            text += f"; {self.message}"
        return text


#: exit status of ``twin status``: complete and verified / the operator must act / still to come
EXIT_COMPLETE, EXIT_ATTENTION, EXIT_IN_PROGRESS = 0, 1, 3
#: experiment states that need the operator (``failed``, ``stopped``, ``damaged``, ``unverified``, or ``interrupted``
#: with no live driver)
NEEDS_ACTION = ("failed", "stopped", "damaged", "unverified", "interrupted")
#: the "state" of a batch script ``twin submit`` wrote but ``sbatch`` did not accept (no job was recorded)
NOT_SUBMITTED = "not submitted"
#: Slurm job states of a job that will not start the driver any more
_ENDED = (NOT_SUBMITTED, "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
          "PREEMPTED", "TIMEOUT", "")


@dataclass
class CampaignStatus:
    run_dir: Path
    driver: str
    experiments: list[ExperimentStatus]
    #: ``(job id, Slurm state)`` of the submitted job while no driver has started (``twin submit``)
    batch_job: tuple[str, str] | None = None
    #: process ids a lost driver started that still run here (:func:`twin.campaign.heartbeat.left_behind`)
    left: list[int] = field(default_factory=list)
    #: experiments the campaign set up (``matrix.json``) whose directory has no ``experiment.yaml`` any more
    missing: list[str] = field(default_factory=list)

    def driver_text(self) -> str:
        if self.left:
            return (f"{self.driver}; {len(self.left)} process(es) it started still run ("
                    f"{', '.join(map(str, self.left))}): running the campaign again stops them")
        if self.batch_job is None:
            return self.driver
        job, state = self.batch_job
        if state == NOT_SUBMITTED:
            return (f"none: twin submit wrote its batch script in {self.run_dir / 'slurm'} but no job was submitted "
                    "(sbatch failed or was not found); run twin submit again")
        if state in ("PENDING", "CONFIGURING", "REQUEUED", "RESV_DEL_HOLD", "REQUEUE_HOLD"):
            return f"queued (Slurm job {job} {state.lower()})"
        if state in ("RUNNING", "COMPLETING"):
            return f"starting (Slurm job {job} {state.lower()})"
        if state == "unknown":
            return f"none (Slurm job {job} submitted; squeue not available here)"
        return (f"never started: Slurm job {job} {'is gone' if not state else state.lower()} and no driver wrote "
                f"driver.json; see {self.run_dir / 'slurm'} and submit again")

    def lines(self) -> list[str]:
        done = sum(e.state == "done" for e in self.experiments)
        head = f"{self.run_dir}: {len(self.experiments)} experiment(s), {done} done; driver {self.driver_text()}"
        out = [head]
        for e in self.experiments:
            out.append("  " + e.line())
            qc = e.qc_line()
            if qc:
                out.append("    " + qc)
        return out

    @property
    def complete(self) -> bool:
        return bool(self.experiments) and not self.missing and all(e.state == "done" for e in self.experiments)

    def problems(self) -> list[str]:
        """What needs the operator beyond the experiments' own states, one line each (the ``error:`` lines)."""
        out = [f"experiment {name} is gone: matrix.json lists it, {self.run_dir / 'experiments' / name} holds no "
               "experiment.yaml (removed?); run the campaign again to set it up and run it" for name in self.missing]
        if not self.experiments and not self.missing and self.driver != "running":
            out.append(f"no experiment in {self.run_dir / 'experiments'} (none has its experiment.yaml): the campaign "
                       "was not set up here, or its experiments were removed; run the campaign again")
        return out

    @property
    def exit_status(self) -> int:
        """:data:`EXIT_COMPLETE` when every experiment is done and verified; :data:`EXIT_ATTENTION` when one failed,
        is damaged or unverified or was interrupted (its driver is gone), or the driver crashed or its batch job ended;
        :data:`EXIT_IN_PROGRESS` otherwise (running, queued, not started)."""
        if self.complete:
            return EXIT_COMPLETE
        if (any(e.state in NEEDS_ACTION for e in self.experiments) or self.driver in ("crashed", "lost")
                or self.missing):
            return EXIT_ATTENTION
        if self.batch_job is not None and self.batch_job[1] in _ENDED:
            return EXIT_ATTENTION
        if not self.experiments:
            return EXIT_ATTENTION
        return EXIT_IN_PROGRESS


def _sizes(exp_dir: Path) -> tuple[int | None, int | None, bool, str]:
    """Number of cycles and members from ``experiment.yaml``, read through the campaign schema (MPI-free), whether
    it asks for a decision, and why the file could not be read (``""`` when it could); ``None`` for what an
    unreadable or assimilation-free file does not say."""
    from twin.campaign.decide import wants_decision
    from twin.config.loader import load_campaign

    try:
        cfg = load_campaign(layout.config_file(exp_dir)).config
    except (ConfigError, OSError) as exc:  # e.g. an installed plugin that cannot be imported: say it, not just "?"
        return None, None, False, " ".join(str(exc).split())
    a = cfg.assimilation
    schedule = getattr(a, "schedule", None)
    cycles = getattr(schedule, "cycles", None) if schedule is not None else getattr(a, "cycles", None)
    if getattr(a, "method", None) == "esmda":  # its checkpoints count iterations, one per coefficient
        from twin.assimilation.esmda import DEFAULT_ITERATIONS

        cycles = len(a.esmda_alphas) if a.esmda_alphas else DEFAULT_ITERATIONS
    members = getattr(a, "N", None)
    return (None if cycles is None else int(cycles)), (None if members is None else int(members)), \
        wants_decision(cfg), ""


def read_done(exp_dir) -> tuple[dict[str, Any] | None, str]:
    """An experiment's ``done.json``: ``(record, "")`` when it is there and readable, ``(None, "")`` without one,
    ``(None, problem)`` when it is there but cannot be used: unreadable, not JSON, not a non-empty JSON object, its
    ``outputs`` not a list of file names or its ``sizes`` not a map of names to bytes (:func:`mark_done`; versions
    before the list of outputs wrote ``{"time": ...}`` alone, which is readable and promises nothing)."""
    import json

    path = layout.done_marker(exp_dir)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"
    try:
        data = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError too
        return None, "empty" if not text.strip() else f"not JSON: {' '.join(str(exc).split())[:200]}"
    if not isinstance(data, dict):
        return None, f"a JSON {type(data).__name__ if data is not None else 'null'}, not an object"
    if not data:
        return None, "an empty JSON object"
    outputs = data.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(n, str) and n not in ("", ".", "..") and "/" not in n
                                                for n in outputs):
        return None, "its outputs are not a list of file names"
    sizes = data.get("sizes", {})
    if not isinstance(sizes, dict) or not all(type(v) is int and v >= 0 for v in sizes.values()):
        return None, "its sizes are not file sizes in bytes"
    return data, ""


def promised_outputs(exp_dir) -> list[str] | None:
    """The outputs a finished experiment promises: the list in its ``done.json``, or ``None`` without one or with
    one that cannot be read (:func:`read_done`)."""
    done, _ = read_done(exp_dir)
    if done is None:
        return None
    return list(done.get("outputs", []))


#: outputs listed in ``done.json`` whose size is not recorded: the task log, to which a step run again on a finished
#: experiment (``twin task finalize``) appends a ``skipped`` line
UNSIZED = (layout.task_log(".").name,)


def mark_done(exp_dir) -> None:
    """Write ``done.json`` (last, when every step of the experiment is complete) listing its outputs (the NetCDF and
    JSON files of the experiment directory) and their sizes in bytes (but for :data:`UNSIZED`):
    ``{"time": ..., "outputs": [name, ...], "sizes": {name: bytes}}``, which :func:`damaged_outputs` compares with
    the files for :func:`experiment_status` and a resume."""
    exp_dir = Path(exp_dir)
    outputs = sorted(p.name for p in exp_dir.iterdir() if p.suffix in (".nc", ".json", ".jsonl") and p.is_file()
                     and p.name != layout.done_marker(exp_dir).name and not p.name.startswith("."))
    sizes = {n: (exp_dir / n).stat().st_size for n in outputs if n not in UNSIZED}
    layout.write_json(layout.done_marker(exp_dir), {"time": time.time(), "outputs": outputs, "sizes": sizes})


def damaged_outputs(exp_dir, promised: list[str] | None = None) -> dict[str, str]:
    """``{name: what is wrong}`` for the outputs of a finished experiment that are not as the run left them:
    ``"missing"``, ``"empty"`` or ``"<now> bytes, <then> when the run finished: truncated or changed"``; ``{}`` when
    all are. ``promised``: the outputs to check (default: those ``done.json`` lists, none without one); the sizes
    are those ``done.json`` records (:func:`mark_done`). Without a recorded size (``done.json`` of older versions, the
    task log) only a missing or empty file counts, and a JSON-lines file may be empty (nothing was logged). A
    ``done.json`` that is there but cannot be read (:func:`read_done`) is, without ``promised``, the one damaged
    output: ``{"done.json": "unreadable (<why>)"}`` (the resume then sets it aside and writes every output again).

    One ``stat`` per output, no file read: ``twin status`` runs on login nodes against large files
    (``twin inspect`` checks their contents). Used by :func:`experiment_status` and by the resume check
    (:func:`twin.campaign.online._finished`), which sets damaged outputs aside so that the resume writes them again.
    """
    import stat as stat_

    exp_dir = Path(exp_dir)
    done, problem = read_done(exp_dir)
    if promised is None:
        if problem:  # the resume's check: done.json itself is set aside and the outputs are written again
            return {layout.done_marker(exp_dir).name: f"unreadable ({problem})"}
        promised = list(done.get("outputs", [])) if done else []
    sizes = done.get("sizes", {}) if done else {}
    out: dict[str, str] = {}
    for name in promised:
        try:
            st = os.stat(exp_dir / name)
        except OSError:
            out[name] = "missing"
            continue
        if not stat_.S_ISREG(st.st_mode):
            out[name] = "missing"
            continue
        then = sizes.get(name)
        then = then if type(then) is int and then >= 0 else None
        if st.st_size == 0 and (then or (then is None and not name.endswith(".jsonl"))):
            out[name] = "empty" if then is None else f"empty, {then} bytes when the run finished"
        elif then is not None and st.st_size != then:
            out[name] = f"{st.st_size} bytes, {then} when the run finished: truncated or changed"
    return out


def set_aside_outputs(exp_dir: Path, damaged: dict[str, str]) -> None:
    """Move the damaged outputs of a finished experiment out of the way (``<name>.damaged-<time>``, kept for
    inspection, as a resume does with a damaged checkpoint) so that the resume writes them again; ``damaged``:
    ``{name: what is wrong}`` (:func:`damaged_outputs`). One process (rank 0, or a workflow's driver)."""
    from twin.core.log import get_logger

    log = get_logger("twin.campaign")
    exp_dir = Path(exp_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name, why in damaged.items():
        path = exp_dir / name
        if why == "missing" or name != path.name or not path.is_file():  # only a file of this directory is moved
            log.warning("experiment %s finished earlier, but %s is %s: computing its outputs again", exp_dir.name,
                        name, why)
            continue
        aside = path.with_name(f"{name}.damaged-{stamp}")
        try:
            os.replace(path, aside)
        except OSError as exc:  # one process is here (rank 0): an error would leave the other ranks waiting
            log.warning("experiment %s finished earlier, but %s is %s and could not be set aside (%s): computing "
                        "its outputs again", exp_dir.name, name, why, exc.strerror or exc)
            continue
        log.warning("experiment %s finished earlier, but %s is %s: kept as %s for inspection; computing its "
                    "outputs again", exp_dir.name, name, why, aside.name)


class Unverified(str):
    """The problem :func:`verify_last_checkpoints` gives for a checkpoint it could not check (the verifying process
    failed before it answered: PETSc could not start, a module is missing, it was killed or timed out): not damage,
    since nothing was found wrong, only not verified. Its text is the cause in one line."""


def _cause(stderr: str, returncode: int | None) -> str:
    """One line saying why the verifying process gave no answer: its own ``error:`` line, else the last line of its
    traceback with PETSc's message when PETSc raised, else its exit status."""
    import signal

    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = next((ln[len("error: "):] for ln in lines if ln.startswith("error: ")), "")
    if said:
        text = said
    else:
        petsc, inside = [], False
        for ln in lines:
            if "PETSC ERROR:" not in ln:
                continue
            msg = ln.split("PETSC ERROR:", 1)[1].strip()
            if "Error Message" in msg:
                inside, petsc = True, []
            elif inside and (not msg or msg.startswith(("See ", "Petsc ", "#", "-----"))):
                inside = False
            elif inside:
                petsc.append(msg)
        last = next((ln for ln in reversed(lines) if "PETSC ERROR:" not in ln), "")
        if last and petsc:
            text = f"{last}: {': '.join(petsc)}"
        elif last or petsc:
            text = last or ": ".join(petsc)
        elif returncode is not None and returncode < 0:
            try:
                text = f"killed by {signal.Signals(-returncode).name}"
            except ValueError:
                text = f"killed by signal {-returncode}"
        else:
            text = f"exit status {returncode}, no output"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


def verify_last_checkpoints(paths: list[Path]) -> dict[str, str]:
    """``{path: problem}`` (``""`` when it verifies) from a full verification of each checkpoint, run by
    ``python -m twin.io.inspect --verify`` in a process of its own: the checkpoint reader needs PETSc, and this
    process (a workflow driver, ``twin status`` on a login node) must not initialise MPI. A checkpoint the process
    could not check (it failed before answering, e.g. PETSc could not start on a malformed ``.petscrc``) has an
    :class:`Unverified` problem, the cause: not damage."""
    import json
    import subprocess
    import sys

    if not paths:
        return {}
    # an MPI singleton's runtime variables would make the child try to join this process's (absent) MPI job
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMIX_", "ORTE_", "OPAL_", "PMI_", "HYDRA_", "I_MPI_"))
           or k.startswith("OMPI_ALLOW_RUN_AS_ROOT")}
    timeout = 3600
    try:
        proc = subprocess.run([sys.executable, "-P", "-m", "twin.io.inspect", "--verify", *map(str, paths)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {str(p): Unverified(f"the check took longer than {timeout} s") for p in paths}
    except OSError as exc:
        return {str(p): Unverified(f"{sys.executable} could not be started: {exc.strerror or exc}") for p in paths}
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = None
    if not isinstance(answer, dict) or not all(isinstance(answer.get(str(p)), str) for p in paths):
        cause = Unverified(_cause(proc.stderr, proc.returncode))
        return {str(p): cause for p in paths}
    return {str(p): answer[str(p)] for p in paths}


def _finished_claim(exp_dir: Path, n_cycles: int | None, decision: bool, cks: list[int]) -> list[str] | None:
    """What an experiment that claims to be finished must have, by name (``None``: it does not claim so): the
    outputs listed in ``done.json``; for run directories of older versions, which have none, the NetCDF outputs
    and ``decision.json`` when the campaign asks for a decision, all of them there once the last checkpoint exists.
    Without ``done.json`` an experiment that lacks one of them has not finished: a run stopped while it wrote its
    outputs (Ctrl-C between ``forecast.nc`` and ``decision.json``) is interrupted, not damaged."""
    done, problem = read_done(exp_dir)
    if done is not None:
        return list(done.get("outputs", []))
    if problem:  # done.json is there but unreadable: it claims to be finished, and promises nothing readable
        return []
    outputs = list(layout.OUTPUTS) + (["decision.json"] if decision else [])
    if n_cycles is not None and cks and max(cks) >= n_cycles and all((exp_dir / n).is_file() for n in outputs):
        return outputs
    return None


def _h5py():
    """h5py, imported so that it cannot start MPI: a parallel h5py imports ``mpi4py.MPI``, which would initialise
    MPI in this process (a login node's ``twin status``); reading a file needs no MPI."""
    import sys

    if "h5py" not in sys.modules and "mpi4py.MPI" not in sys.modules:
        try:
            import mpi4py

            mpi4py.rc.initialize = mpi4py.rc.finalize = False
        except ImportError:
            pass
    import h5py

    return h5py


def observation_file_records(path: Path) -> list[dict]:
    """The ``files`` records of an experiment's ``observations.h5`` (network, file, SHA-256, QC counts:
    :func:`twin.observations.networks.file_records`), read from the checkpoint's ``/meta`` attribute directly (the
    checkpoint reader needs PETSc); ``[]`` for a twin experiment or an unreadable file."""
    import json

    try:
        with _h5py().File(path, "r") as f:
            text = f["meta"].attrs["files"] if "meta" in f and "files" in f["meta"].attrs else None
    except (OSError, KeyError, ValueError):
        return []
    if text is None:
        return []
    try:
        files = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except ValueError:
        return []
    return [f for f in files if isinstance(f, dict) and isinstance(f.get("qc"), dict)] \
        if isinstance(files, list) else []


def observation_qc(exp_dir) -> dict[str, int | None] | None:
    """The quality-control counts of an experiment fed by observation files, summed over its networks and files:
    the flags of ``observations.h5`` (:data:`twin.observations.qc.FLAGS`; ``accepted`` passed every check made when
    the files were read), ``superobservations`` (``None`` without ``superobs``) and ``background``: the observations
    the background check left out so far, the lines of ``qc.jsonl`` (``None`` when the campaign has no background
    check: no such file). ``None`` for an experiment not fed by files, or before its ``observations.h5`` exists."""
    exp_dir = Path(exp_dir)
    path = layout.observations_file(exp_dir)
    if not path.is_file():
        return None
    files = observation_file_records(path)
    if not files:
        return None
    totals: dict[str, int | None] = {k: 0 for k in ("accepted", "missing", "outside_time", "outside_domain", "range",
                                                    "duplicate", "thinned", "superobs")}
    for f in files:
        for k, v in f["qc"].items():
            if k != "background":
                totals[k] = int(totals.get(k) or 0) + int(v)
    have = [f["superobservations"] for f in files if "superobservations" in f]
    totals["superobservations"] = int(sum(have)) if have else None
    qc_file = layout.qc_file(exp_dir)
    try:
        totals["background"] = sum(1 for line in qc_file.read_text().splitlines() if line.strip())
    except OSError:
        totals["background"] = None
    return totals


def experiment_status(exp_dir, driver_alive: bool = False, verified: dict[str, str] | None = None,
                      live: dict | None = None) -> ExperimentStatus:
    """The state of one experiment (see the module docstring). ``verified``: problems of last checkpoints found by
    :func:`verify_last_checkpoints` (``{path: problem}``); a finished experiment whose last checkpoint is not in it
    is judged by its files' names and sizes alone. ``live``: the running driver's progress from its heartbeat
    (:func:`twin.campaign.heartbeat.write_heartbeat`); a running experiment's cycles are the driver's count when it is ahead of the last
    checkpoint (the message then names that checkpoint: what a resume would start from)."""
    exp_dir = Path(exp_dir)
    n_cycles, n_members, decision, unread = _sizes(exp_dir)
    cks = layout.checkpoint_cycles(exp_dir)
    done_cycles = max(cks) if cks else 0
    dropped: dict[int, str] = {}
    for k in range(done_cycles + 1):
        for m, reason in layout.member_files(exp_dir, k)[1].items():
            dropped.setdefault(m, f"cycle {k}: {reason}")
    members_done = len(layout.member_files(exp_dir, done_cycles)[0])
    found = layout.failure(exp_dir)
    promised = None if found else _finished_claim(exp_dir, n_cycles, decision, cks)
    if found:
        state, message = found[0], (found[1] if found[0] == "failed" else
                                     f"{found[1]}; {layout.to_run_again(exp_dir)}")
    elif promised is not None:
        problems, unsure = _damage(exp_dir, n_cycles, cks, promised, verified or {})
        unreadable = read_done(exp_dir)[1]
        if unreadable:
            problems.insert(0, f"done.json is unreadable ({unreadable}), so its outputs cannot be checked against "
                               "what the run recorded: run the campaign again: the resume sets done.json aside and "
                               "writes every output again from the checkpoints")
        if problems:
            state, message = "damaged", "; ".join(problems + ([unsure] if unsure else []))
        elif unsure:
            state, message = "unverified", unsure
        else:
            state, message = "done", ""
        if not problems and not unsure and n_cycles is not None:
            done_cycles = n_cycles
    elif not cks and members_done == 0 and not layout.observations_file(exp_dir).exists():
        state, message = ("running" if driver_alive else "pending"), ""
    else:
        state, message = ("running" if driver_alive else "interrupted"), ""
    if state == "running" and live and live.get("experiment") == exp_dir.name and live.get("total") == n_cycles:
        ahead = live["done"]
        if ahead > done_cycles:
            message = f"last checkpoint at cycle {done_cycles}" if cks else "no checkpoint yet"
            done_cycles, members_done = ahead, 0
    if unread:
        message = "; ".join(m for m in (message, f"cycle count unknown: {unread}") if m)
    return ExperimentStatus(exp_dir.name, state, done_cycles, n_cycles, n_members, members_done, dropped, message,
                            observation_qc(exp_dir))


def _damage(exp_dir: Path, n_cycles: int | None, cks: list[int], promised: list[str],
            verified: dict[str, str]) -> tuple[list[str], str]:
    """What a finished experiment lacks: promised outputs missing, empty or of another size than when the run
    finished (:func:`damaged_outputs`), a last checkpoint missing or failing verification; each with what to do.
    Also what could not be checked (``""`` when everything was): a last checkpoint whose verification could not be
    carried out (:class:`Unverified`), which is not damage."""
    problems = []
    damaged = damaged_outputs(exp_dir, promised)
    missing = [n for n, why in damaged.items() if why == "missing"]
    if missing:
        problems.append(f"finished earlier, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
                        "run the campaign again to write {}".format('it' if len(missing) == 1 else 'them'))
    for name, why in damaged.items():
        if why != "missing":
            problems.append(f"{name} is {why} (run the campaign again: the resume keeps it as "
                            f"{name}.damaged-<time> and writes it again)")
    unsure = ""
    last = max(cks) if cks else None
    if n_cycles is not None and (last is None or last < n_cycles):
        problems.append(f"the last checkpoint checkpoint/cycle_{n_cycles:04d}.h5 is missing: delete done.json and "
                        "run the campaign again to recompute it")
    elif last is not None:
        path = layout.checkpoint_file(exp_dir, last)
        problem = verified.get(str(path), "")
        if isinstance(problem, Unverified):
            unsure = (f"the last checkpoint checkpoint/{path.name} could not be verified ({problem}); nothing was "
                      "found damaged: run twin status again once that is fixed")
        elif BUSY in problem:  # HDF5's file lock: another process has it open for writing, which is not damage
            unsure = (f"the last checkpoint checkpoint/{path.name} {BUSY}: close it there and run twin status "
                      "again; nothing was found damaged")
        elif problem:
            problem = problem.split(" is not usable: ", 1)[-1]
            problems.append(f"the last checkpoint checkpoint/{path.name} does not verify ({problem}): delete "
                            "done.json and run the campaign again to recompute it")
    return problems, unsure


def _batch_job(run_dir: Path) -> tuple[str, str] | None:
    """``(job id, Slurm state)`` of the last job ``twin submit`` recorded for ``run_dir`` (``slurm/jobs.txt``);
    the state is ``""`` when Slurm does not know the job (any more), ``"unknown"`` without ``squeue``, and
    :data:`NOT_SUBMITTED` (no job id) when ``twin submit`` wrote a batch script but recorded no job."""
    import shutil
    import subprocess

    try:
        lines = (run_dir / "slurm" / "jobs.txt").read_text().split()
    except OSError:
        lines = []
    if not lines:
        # twin submit writes its batch script before sbatch and records the job only once sbatch took it
        scripts = sorted((run_dir / "slurm").glob("*.sbatch")) if (run_dir / "slurm").is_dir() else []
        return ("", NOT_SUBMITTED) if scripts else None
    job = lines[-2] if len(lines) >= 2 else lines[-1]
    if shutil.which("squeue") is None:
        return job, "unknown"
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return job, "unknown"
    return job, out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def status(run_dir, verify: bool = True) -> CampaignStatus:
    """The status of every experiment of the campaign in ``run_dir``; with ``verify`` the last checkpoint of every
    finished experiment is verified in full (:func:`verify_last_checkpoints`)."""
    run_dir = Path(run_dir)
    driver = driver_state(run_dir)
    live = layout.read_json(run_dir / HEARTBEAT_FILE).get("progress") if driver == "running" else None
    live = live if isinstance(live, dict) and isinstance(live.get("done"), int) else None
    dirs = layout.experiment_dirs(run_dir)
    verified: dict[str, str] = {}
    if verify:
        lasts = []
        for d in dirs:
            cks = layout.checkpoint_cycles(d)
            if cks and not layout.failure(d) and (layout.done_marker(d).is_file()
                                                  or all((d / n).is_file() for n in layout.OUTPUTS)):
                lasts.append(layout.checkpoint_file(d, max(cks)))
        verified = verify_last_checkpoints(lasts)
    exps = [experiment_status(d, driver == "running", verified, live) for d in dirs]
    job = _batch_job(run_dir) if driver == "none" else None
    left = [int(c["pid"]) for c in left_behind(run_dir)] if driver == "lost" else []
    # while a driver runs, it may be making the experiments matrix.json lists
    return CampaignStatus(run_dir, driver, exps, job, left, _missing(run_dir, dirs) if driver != "running" else [])


def _missing(run_dir: Path, dirs: list[Path]) -> list[str]:
    """The experiments ``matrix.json`` lists (the campaign's set-up) that have no directory with its
    ``experiment.yaml`` (:func:`layout.experiment_dirs`); none when the file is absent or unreadable."""
    matrix = layout.read_json(run_dir / "matrix.json")
    here = {d.name for d in dirs}
    return sorted(n for n in matrix if isinstance(n, str) and n not in here) if isinstance(matrix, dict) else []


def summary(st: CampaignStatus) -> dict[str, Any]:
    """A status as plain data (``twin status --json``)."""
    return {"run_dir": str(st.run_dir), "driver": st.driver, "complete": st.complete, "exit_status": st.exit_status,
            "batch_job": None if st.batch_job is None else {"id": st.batch_job[0], "state": st.batch_job[1]},
            "left_behind": st.left, "missing": st.missing, "problems": st.problems(),
            "experiments": [e.__dict__ | {"dropped": {str(k): v for k, v in e.dropped.items()}}
                            for e in st.experiments]}
