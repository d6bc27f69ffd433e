"""A live twin: ``twin assimilate RUN_DIR FILE...`` continues a filter or 4D-Var campaign observed through files with
the observations that arrived after it ran.

A run of an ETKF, EnKF, LETKF (on one model or a coupled one) or cycled 4D-Var campaign whose observations come from
a ``type: file`` network (:class:`twin.config.observation_networks.FileNetwork`) or a kind's network read from files
(a patient's visit tables) is extended by newly delivered files of the same
layout and variables. With ``t_K`` the campaign's last analysis time (4D-Var: the end of its last window) and ``L``
its cycle length (4D-Var: the window shift ``S dt_obs``), :class:`twin.campaign.extension.Cycles`:

* **the rule**: a delivered observation must be later than ``t_K`` (4D-Var: the model step nearest it, where it is
  used, must be); one at or before it is refused, naming the file and the first such observation, and nothing is
  changed (a live twin does not rewind its analyses);
* **the cycles**: the campaign gets ``K' - K`` more cycles (4D-Var: windows, ``assimilation.cycles``) of the same
  length, the fewest that reach the latest new observation (``t_K' >= t_max``); every new cycle must hold an
  observation (a filter cannot analyse an empty cycle, nor 4D-Var an empty window);
* **ES-MDA** is refused: it calibrates one window from the prior, so new observations make a new calibration, not
  more cycles (run the campaign again with the new files in the network's ``deliveries``);
* **the same file twice** (same SHA-256, whatever its name) changes nothing: the command says it was assimilated
  already and exits 0;
* **the result** equals one campaign run over all the files at once: the delivered files are read after the
  campaign's own file as one network (:func:`twin.observations.networks.build`), so every cycle's observations are
  those of a single campaign over everything, and the analyses of the cycles already run are kept (their
  observations are checked to be bitwise unchanged before anything is written).

The steps, each atomic, in an order that a rerun of the same command after a kill at any point completes:

1. **check** (nothing is written): the run is a filter campaign observed through files, no other driver works on it,
   every file exists, reads with the network's variables and obeys the rule, the extended campaign validates and
   keeps the earlier cycles' observations; every file an experiment has read still has the SHA-256 its
   ``observations.h5`` records (else refused, as ``twin run`` refuses its resume); a run directory that was moved or
   copied first has its ``experiment.yaml`` point at its own ``deliveries/`` (:func:`_rehome`);
2. **keep**: every new file is copied to ``RUN_DIR/deliveries/<sha256[:16]>-<name>`` and recorded in
   ``RUN_DIR/deliveries.json`` (its SHA-256, name, origin, time of arrival, network, the cycles it added). The
   record is the point of no return: a recorded file is assimilated by every later run of the command;
3. **extend**: each experiment's ``experiment.yaml`` (the run's stored campaign, the configuration in the provenance
   of every file written from then on) gets the recorded files as its network's ``deliveries``, the new
   ``schedule.cycles`` and, if needed, a later ``timeline.end``; its ``done.json`` is removed first;
4. **resume** (the online driver, :mod:`twin.campaign.online`, in this process): ``observations.h5`` is rewritten with
   the new cycles (:func:`twin.campaign.steps.init_experiment`; each file's SHA-256 and quality-control counts in
   its ``files`` record), the new cycles are forecast and analysed from the last verified checkpoint, and the
   posterior, forecast, diagnostics and decision outputs are written again (``posterior.nc`` is removed first, so
   that finalize runs), then ``done.json``. The command line writes the report (``twin report``) last.

Two commands on one run directory do not run at once: the run directory is locked (``flock``) while the command
works on it, and a live ``twin run`` driver of it (``driver.json``) makes the command wait for another day
(:class:`~twin.campaign.rundir.RunBusy`, :mod:`twin.campaign.rundir`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.campaign import layout
from twin.campaign.deliveries import Delivery, classify, keep, pending, stored_name
from twin.campaign.extension import Plan, plan
from twin.campaign.rundir import RunBusy, locked, on_root
from twin.core.errors import ConfigError, ObservationError, TwinError, WorkflowError
from twin.core.log import get_logger

log = get_logger("twin.campaign.live")

@dataclass
class LiveResult:
    """What ``twin assimilate`` did: the files given, the experiment directories, each experiment's cycles after
    it, the experiments that failed or were stopped, and whether anything ran."""

    run_dir: Path
    deliveries: list[Delivery]
    experiments: list[Path] = field(default_factory=list)
    cycles: dict[str, int] = field(default_factory=dict)
    unfinished: list[tuple[str, str]] = field(default_factory=list)
    ran: bool = False


# -- the experiments -------------------------------------------------------------------------------------------------
def file_network(cfg, exp_dir: Path, wanted: str | None = None) -> tuple[int, str, Any]:
    """``(index, name, section)`` of the ``file`` network that delivered files feed: ``wanted``, or the campaign's
    only one.

    Raises
    ------
    ConfigError
        For a campaign that is not a filter or 4D-Var campaign observed through files, or no such network.
    """
    from twin.campaign import context as ctx
    from twin.observations.networks import network_names, reads_files

    a = cfg.assimilation
    method = getattr(a, "method", None)
    where = f"experiment {exp_dir.name} ({layout.config_file(exp_dir)})"
    if method == "esmda":
        raise ConfigError(f"{where} runs ES-MDA, which calibrates one window from the prior: new observations make "
                          "another window, not more cycles; run the campaign again with the new files added to the "
                          "network's 'deliveries' (twin assimilate continues filter and 4D-Var campaigns)")
    if method not in (*ctx.FILTERS, "4dvar"):
        raise ConfigError(f"{where} runs {method or 'no assimilation'}: twin assimilate continues filter campaigns "
                          f"({', '.join(ctx.FILTERS)}) and 4D-Var campaigns whose observations come from files")
    networks = list(a.observations)
    files = [(i, name, n) for i, (n, name) in enumerate(zip(networks, network_names(networks)))
             if reads_files(n) and "deliveries" in type(n).model_fields]
    if not files:
        raise ConfigError(f"{where} is not observed through files (it has no 'type: file' network nor another that "
                          "reads files, such as imaging_visits): twin assimilate "
                          "continues a campaign whose observations come from files")
    if wanted is not None:
        chosen = [f for f in files if f[1] == wanted]
        if not chosen:
            raise ConfigError(f"{where} has no file network named {wanted!r}; it has "
                              f"{', '.join(f[1] for f in files)}")
        return chosen[0]
    if len(files) > 1:
        raise ConfigError(f"{where} has {len(files)} file networks ({', '.join(f[1] for f in files)}): say which one "
                          "the files feed with --network NAME")
    return files[0]


def _experiments(run_dir: Path, wanted: str | None):
    """``[(experiment directory, loaded experiment, network index, network name)]`` of a run directory."""
    from twin.config.loader import load_campaign

    dirs = layout.experiment_dirs(run_dir)
    if not dirs:
        raise ConfigError(f"{run_dir} holds no experiment (no experiments/*/experiment.yaml): run the campaign first "
                          "with twin run")
    out = []
    for d in dirs:
        loaded = load_campaign(layout.config_file(d))
        i, name, _ = file_network(loaded.config, d, wanted)
        out.append((d, loaded, i, name))
    return out


def _finished(exp_dir: Path) -> bool:
    """``done.json`` exists and every output it lists is still there."""
    done = layout.read_json(layout.done_marker(exp_dir))
    return bool(done) and all((exp_dir / name).is_file() for name in done.get("outputs", []))


def _policy(run_dir: Path):
    """The failure policy of the campaign that started the run (``RUN_DIR/campaign.yaml``; the ``experiments`` section
    is not in the experiments' own files), or the defaults."""
    from twin.campaign.experiments import experiments_section
    from twin.config.experiments import ExperimentsConfig
    from twin.config.loader import parse_yaml, validate_data

    path = run_dir / "campaign.yaml"
    try:
        data, idx = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        return experiments_section(validate_data(data, str(path), idx))
    except (OSError, UnicodeDecodeError, TwinError):
        return ExperimentsConfig()


# -- a run directory that was moved or copied -------------------------------------------------------------------------
def _here(run_dir: Path, path: str) -> str:
    """``path``, a delivered file an ``experiment.yaml`` lists, as the file of this run directory it stands for.

    A run directory written before its files were recorded relative to it lists them by their absolute path when
    they were kept, ``<old run dir>/deliveries/<name>``; once the directory is moved or copied that path leads to the
    original directory (which may be gone, or hold other files). A listed path outside ``run_dir`` whose part from its
    last ``deliveries/`` on names a file of ``run_dir``'s ``deliveries/`` is that file (absolute, resolved as
    :func:`twin.campaign.deliveries.pending` compares them); any other path is left as it is."""
    from twin.campaign.deliveries import DELIVERIES

    p = Path(path)
    if not p.is_absolute():
        return path
    root = run_dir.resolve()
    if p == root or root in p.parents:
        return path
    parts = p.parts
    if DELIVERIES not in parts[:-1]:
        return path
    k = len(parts) - 1 - parts[::-1].index(DELIVERIES)
    here = (run_dir / Path(*parts[k:])).resolve()
    return str(here) if here.is_file() and root in here.parents else path


def _rehome(run_dir: Path, exps, sensitive: bool) -> bool:
    """Point every experiment's ``deliveries`` at this run directory's kept files where they lead elsewhere
    (:func:`_here`: the run directory was moved or copied) and write its ``experiment.yaml`` again; whether any
    was written (rank 0). Without it a copied run read, and checked new files against, the original's deliveries,
    and refused its own earlier delivery as new ("at or before the last analysis time")."""
    from twin.config.loader import parse_yaml
    from twin.config.writer import dump_yaml
    from twin.io.atomic import write_text

    written = False
    for d, loaded, i, _ in exps:
        listed = list(loaded.config.assimilation.observations[i].deliveries)
        mapped = [_here(run_dir, p) for p in listed]
        if mapped == listed:
            continue
        config = layout.config_file(d)
        data, _ = parse_yaml(config.read_text(encoding="utf-8"), str(config))
        networks = data["assimilation"]["observations"]
        entry = networks[i] if isinstance(networks, list) else networks
        if [str(p) for p in entry.get("deliveries", [])] != listed:
            continue  # not as loaded: leave it to the checks that follow
        entry["deliveries"] = mapped
        write_text(config, dump_yaml(data, default_flow_style=None, width=120), private=sensitive)
        log.info("experiment %s: %d delivered file(s) listed outside %s read from its deliveries/ (the run "
                 "directory was moved or copied)", d.name, sum(a != b for a, b in zip(mapped, listed)), run_dir)
        written = True
    return written


def _refuse_changed_files(exps) -> None:
    """:class:`ConfigError` (one line) when an observation file an experiment has read (its campaign's ``file`` or
    a delivery) no longer has the SHA-256 its ``observations.h5`` records (rank 0): ``twin assimilate`` would
    otherwise go on from analyses of the old content with the new (:func:`twin.campaign.experiments
    .changed_observation_file`, which ``twin run`` applies on its resume too)."""
    from twin.campaign.experiments import changed_observation_file

    for d, loaded, _, _ in exps:
        problem = changed_observation_file(d, loaded.config, d.name)
        if problem:
            raise ConfigError(problem)


# -- the command -----------------------------------------------------------------------------------------------------
_ERRORS = {"ConfigError": ConfigError, "ObservationError": ObservationError, "RunBusy": RunBusy}


def _raise_everywhere(error: Exception | None, messages) -> None:
    """Raise ``error`` here, or the first rank's error (a twin error of the same type and message) when another
    rank had one: no rank is left waiting in a collective call."""
    first = next((m for m in messages if m is not None), None)
    if first is None:
        return
    if error is not None:
        raise error
    raise _ERRORS.get(first[0], WorkflowError)(first[1])


def _agree(comm, fn):
    """``fn()`` on every rank; an error on any rank is raised on every rank."""
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - raised again below, on every rank
        error = exc
    _raise_everywhere(error, comm.allgather(None if error is None else (type(error).__name__, str(error))))
    return result


def assimilate(run_dir, files, comm, *, network: str | None = None, verbose: bool = False,
               quiet: bool = False) -> LiveResult:
    """Continue the run in ``run_dir`` with the observation files ``files`` (steps in the module docstring).
    Collective on ``comm``.

    Returns
    -------
    LiveResult
        ``ran`` is ``False`` when there was nothing to do (every file assimilated already, every experiment done):
        then nothing in the run directory was written.

    Raises
    ------
    ConfigError, ObservationError, WorkflowError
        Bad input, refused before anything was written (one line).
    RunBusy
        Another command works on the run directory.
    """
    from twin.io.atomic import private_umask

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} does not exist{' as a directory' if run_dir.exists() else ''}: give the run "
                          "directory of a campaign (twin run -o DIR)")
    if not (run_dir / layout.EXPERIMENTS).is_dir():
        raise ConfigError(f"{run_dir} is not a campaign run directory (no experiments/ in it)")
    with contextlib.ExitStack() as stack:
        on_root(comm, lambda: stack.enter_context(locked(run_dir)) and None)
        exps = _agree(comm, lambda: _experiments(run_dir, network))
        sensitive = exps[0][1].config.campaign.sensitive
        if on_root(comm, functools.partial(_rehome, run_dir, exps, sensitive)):
            exps = _agree(comm, lambda: _experiments(run_dir, network))  # read again as written
        on_root(comm, functools.partial(_refuse_changed_files, exps))
        with private_umask(sensitive):
            return _assimilate(run_dir, [Path(f) for f in files], comm, exps, sensitive, verbose, quiet)


def _assimilate(run_dir: Path, files: list[Path], comm, exps, sensitive: bool, verbose: bool,
                quiet: bool) -> LiveResult:
    deliveries = _agree(comm, lambda: classify(run_dir, files, exps))
    new = [f for f in deliveries if f.state == "new"]
    waiting = pending(run_dir, exps)
    up_to_date = all(_finished(e) and not waiting[e] for e, *_ in exps)
    for f in deliveries:
        if f.state == "recorded" and up_to_date:
            f.state = "assimilated"
    result = LiveResult(run_dir, deliveries, [e for e, *_ in exps])
    if not new and up_to_date:
        return result  # nothing written
    if new:
        # 1. check every experiment extended by the new files (after those recorded but not applied yet)
        sources = [str(f.path.resolve()) for f in new]
        plans = {e: _agree(comm, functools.partial(plan, e, comm, i, waiting[e] + sources)) for e, _, i, _ in exps}
        # 2. keep: the copies, then the record (rank 0)
        on_root(comm, functools.partial(keep, run_dir, new, exps[0][3], list(plans.values()), sensitive))
        for f in new:
            f.stored = stored_name(f.sha256, f.path, bool(f.companions))
    # 3. extend every experiment.yaml that does not list every recorded file yet
    waiting = pending(run_dir, exps)
    for e, _, i, _ in exps:
        if waiting[e]:
            extended = _agree(comm, functools.partial(plan, e, comm, i, waiting[e], check=False))
            on_root(comm, functools.partial(_extend, e, extended, sensitive))
    # 4. resume
    result.unfinished = _resume(run_dir, comm, result.experiments, verbose, quiet)
    result.ran = True
    result.cycles = _agree(comm, lambda: {e.name: _cycles(e) for e in result.experiments})
    return result


def _cycles(exp_dir: Path) -> int:
    from twin.config.loader import load_campaign

    a = load_campaign(layout.config_file(exp_dir)).config.assimilation
    return int(a.cycles if a.method == "4dvar" else a.schedule.cycles)


def _extend(exp_dir: Path, p: Plan, sensitive: bool) -> None:
    """Write the extended ``experiment.yaml``, ``done.json`` removed first (rank 0)."""
    from twin.io.atomic import write_text

    layout.done_marker(exp_dir).unlink(missing_ok=True)
    write_text(layout.config_file(exp_dir), p.text, private=sensitive)
    log.info("experiment %s: %d -> %d cycles", exp_dir.name, p.cycles_before, p.cycles_after)


def _resume(run_dir: Path, comm, dirs: list[Path], verbose: bool, quiet: bool) -> list[tuple[str, str]]:
    """Bring every unfinished experiment up to date with the online driver (collective)."""
    from twin.campaign.online import Heartbeat, contained, unfinished
    from twin.campaign.heartbeat import sweep_on_resume
    from twin.core.log import setup_logging

    rank = comm.Get_rank()
    setup_logging(rank, comm.Get_size(), verbose, logfile=str(run_dir / "twin.log"), quiet=quiet)
    policy = _policy(run_dir)
    if rank == 0:
        sweep_on_resume(run_dir)
        for d in dirs:
            if not _finished(d):  # its outputs are older than its cycles: finalize writes them again
                (d / "posterior.nc").unlink(missing_ok=True)
    comm.Barrier()
    beat = Heartbeat(run_dir) if rank == 0 else None
    state = "crashed"
    t0 = time.perf_counter()
    try:
        for d in dirs:
            contained(d, comm, policy)
        state = "finished"
    finally:
        if beat is not None:
            beat.stop(state)
    log.info("twin assimilate: %s brought up to date in %.1f s", run_dir, time.perf_counter() - t0)
    return unfinished(dirs)
