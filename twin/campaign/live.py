"""A live twin: ``twin assimilate RUN_DIR FILE...`` continues a filter or 4D-Var campaign observed through files with
the observations that arrived after it ran.

A run of an ETKF, EnKF, LETKF (on one model or a coupled one) or cycled 4D-Var campaign whose observations come from
a ``type: file`` network (:class:`twin.config.observation_networks.FileNetwork`) or a kind's network read from files
(a patient's visit tables) is extended by newly delivered files of the same
layout and variables. With ``t_K`` the campaign's last analysis time (4D-Var: the end of its last window) and ``L``
its cycle length (4D-Var: the window shift ``S dt_obs``), :class:`Cycles`:

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
   keeps the earlier cycles' observations;
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
(:class:`RunBusy`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.campaign import layout
from twin.campaign.deliveries import Delivery, classify, keep, pending, stored_name
from twin.core.errors import ConfigError, ObservationError, TwinError, WorkflowError
from twin.core.log import get_logger

log = get_logger("twin.campaign.live")

class RunBusy(WorkflowError):
    """Another ``twin assimilate`` or a live ``twin run`` driver works on the run directory."""


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


# -- the plan of one experiment --------------------------------------------------------------------------------------
@dataclass
class Plan:
    """An experiment extended by delivered files: its new ``experiment.yaml`` text and its cycles before and after."""

    exp_dir: Path
    text: str
    cycles_before: int
    cycles_after: int


@dataclass
class Cycles:
    """The analysis times of a campaign, ``t_0 + k L`` for ``k = 1 .. K``: a filter's cycles (``L`` = ``every dt``)
    or 4D-Var's windows (``L`` = ``S dt_obs``, the end of each). ``step``: with 4D-Var the model's time step, on
    whose nearest step each observation is used (``None``: a filter analyses an observation at the first analysis at
    or after it). ``key``: where the count is in the configuration."""

    t0: float
    length: float
    K: int
    key: tuple[str, ...]
    step: float | None = None

    @classmethod
    def of(cls, s) -> "Cycles":
        """The cycles of the experiment set up in ``s`` (:class:`twin.campaign.experiment.Setup`). Collective."""
        if s.cfg.assimilation.method != "4dvar":
            sch = s.schedule
            return cls(float(sch.t0), float(sch.every * sch.dt), int(sch.n_cycles), ("schedule", "cycles"))
        from twin.campaign.windows import WindowPlan

        plan = WindowPlan(s.cfg, s.get_model())
        try:
            return cls(plan.t0, plan.cycle.S * plan.cycle.dt_obs, plan.n_cycles, ("cycles",),
                       float(plan.clock.dt))
        finally:
            plan.destroy()

    @property
    def last(self) -> float:
        """The last analysis time (the end of the last window)."""
        return self.t0 + self.K * self.length

    def used_at(self, times: np.ndarray) -> np.ndarray:
        """When observations at ``times`` are compared with the model: their own times (filters) or the model step
        nearest each (4D-Var; half-way: the later, the rule of :class:`twin.observations.file_network.StepClock`)."""
        times = np.asarray(times, dtype=float)
        if self.step is None:
            return times
        return self.t0 + np.floor((times - self.t0) / self.step + 0.5) * self.step

    def to_cover(self, t: float) -> int:
        """The fewest cycles (at least ``K``) whose last analysis time is at or after ``t``."""
        n = max(self.K, int(np.ceil((t - self.t0) / self.length - 1e-9)))
        while self.t0 + n * self.length < t - 1e-9 * self.length:
            n += 1
        return n


def _time_text(t: float, units: str) -> str:
    return f"{t:.9g}" + ("" if units in ("", "1") else f" {units}")


def plan(exp_dir: Path, comm, network: int, paths: list[str], check: bool = True) -> Plan:
    """The extension of one experiment by the files ``paths`` (fed to its network number ``network``). Collective:
    builds the experiment's model on ``comm`` to read the files in its units and cycles; writes nothing.

    With ``check``, also what :mod:`this module <twin.campaign.live>` promises before anything is written: the cycles
    already in ``observations.h5`` keep their observations bitwise and every new cycle has one.

    Raises
    ------
    ObservationError
        For a file that cannot be read with the network's variables, an observation at or before the last analysis
        time, a file without an observation inside the model's domain, or a new cycle without observations.
    ConfigError
        When the extended campaign does not validate (e.g. more steps than the limits allow).
    WorkflowError
        When the files would change the observations of cycles already analysed.
    """
    from twin.campaign.experiment import setup
    from twin.config.loader import parse_yaml, validate_data
    from twin.config.writer import dump_yaml
    from twin.core.units import compatible, convert
    from twin.observations import qc
    from twin.campaign import context as ctx
    from twin.observations.networks import read_file, reading_model

    s = setup(exp_dir, comm)
    try:
        cfg, model, cycles = s.cfg, s.get_model(), Cycles.of(s)
        spec = cfg.assimilation.observations[network]
        observed = reading_model(spec, model, ctx.components(model))  # a coupled model's component it observes
        K, last = cycles.K, cycles.last
        tol = 1e-9 * cycles.length
        latest = last
        for path in paths:
            table = read_file(spec, path, observed, cfg.timeline.calendar_start)
            early = np.flatnonzero(cycles.used_at(table.time) <= last + tol)
            if early.size:
                i = int(early[0])
                request = getattr(spec, "variables", {}).get(str(table.variable[i]))
                named = (request.name or request.standard_name) if request is not None else None
                raise ObservationError(
                    f"observation file {table.source}: observation {table.row[i]} of "
                    f"'{named or table.variable[i]}' at time "
                    f"{_time_text(table.time[i], table.time_units)} is at or before the last analysis time "
                    f"{_time_text(last, table.time_units)} of experiment {s.name}"
                    + ("" if cycles.step is None else " (4D-Var uses it at its nearest model step)")
                    + f" ({early.size} of {len(table)} observations are): twin assimilate takes only observations "
                    "after the last analysis (it does not rewind); leave the earlier ones out of the file")
            usable = ~qc.missing(table.value, table.error) & ~qc.outside_domain(table.position, observed.grid.extent)
            if not usable.any():
                raise ObservationError(f"observation file {table.source}: none of its {len(table)} observations lies "
                                       f"inside the model's domain {[list(e) for e in observed.grid.extent]} (in "
                                       f"{observed.length_units}) with a value and an error")
            latest = max(latest, float(np.max(cycles.used_at(table.time[usable]))))
        K_new = cycles.to_cover(latest)
        config = layout.config_file(exp_dir)
        data, _ = parse_yaml(config.read_text(encoding="utf-8"), str(config))
        functools.reduce(dict.get, cycles.key[:-1], data["assimilation"])[cycles.key[-1]] = K_new
        networks = data["assimilation"]["observations"]
        entry = networks[network] if isinstance(networks, list) else networks
        entry["deliveries"] = list(entry.get("deliveries", [])) + [str(p) for p in paths]
        span = K_new * cycles.length  # model time after the start
        if not compatible(model.time_units, "1"):
            span = float(convert(span, model.time_units, cfg.timeline.units))
        if cfg.timeline.start + span > cfg.timeline.end:
            data["timeline"]["end"] = float(cfg.timeline.start + span)
        new_cfg = validate_data(data, str(config))
        text = dump_yaml(data, default_flow_style=None, width=120)
        if check and K_new > K:
            _check_observations(s, new_cfg, model, K, K_new, paths)
        return Plan(exp_dir, text, K, K_new)
    finally:
        s.destroy()


def _check_observations(s, new_cfg, model, K: int, K_new: int, paths: list[str]) -> None:
    """The extended campaign's observations keep those of the ``K`` cycles in ``observations.h5`` and give each new
    cycle one at least."""
    if new_cfg.assimilation.method == "4dvar":
        _check_windows(s, new_cfg, model, K, paths)
        return
    from twin.campaign import context as ctx
    from twin.campaign.checkpoints import is_valid_checkpoint, reader
    from twin.campaign.steps import file_values, unchanged_before

    obs = ctx.observations(new_cfg, model)
    ys, errs = file_values(obs, K_new)
    sch = ctx.schedule(new_cfg, model)
    for k in range(K, K_new):
        if not np.isfinite(ys[k]).any():
            a, b = sch.window(k)
            raise ObservationError(f"{', '.join(map(str, paths))}: cycle {k} ({a:.9g}, {b:.9g}] of experiment {s.name} "
                                   "would have no observation, and a filter cannot analyse an empty cycle: deliver "
                                   "observations for every cycle up to the latest one")
    path = layout.observations_file(s.exp_dir)
    if not is_valid_checkpoint(path, s.comm):
        return  # nothing analysed from it yet: the resume writes it whole
    with reader(path, s.comm) as r:
        old_y, old_e = r.read_array("observations"), r.read_array("errors")
        before = {name: int(b) - int(a) for name, (a, b) in r.meta.get("networks", {}).items()}
    after = {name: sl.stop - sl.start for name, sl in obs.network_slices.items()}
    for name, m in after.items():
        if before.get(name, m) != m:
            raise ObservationError(f"{', '.join(map(str, paths))}: network {name} of experiment {s.name} would "
                                   f"observe {m} sites instead of its {before[name]}: a live twin keeps the sites its "
                                   "campaign started with (its guardrails, localisation and diagnostics are per "
                                   "site); leave the other sites out of the files, or start a new campaign with them")
    if not (unchanged_before(ys, old_y) and unchanged_before(errs, old_e)):
        raise WorkflowError(f"{', '.join(map(str, paths))}: with these files the observations of the {old_y.shape[0]} "
                            f"cycles experiment {s.name} has analysed would change (new sites before old ones, or an "
                            "earlier file changed since): deliver observations of the same sites, and leave the "
                            "campaign's files as they were")


def _check_windows(s, new_cfg, model, K: int, paths: list[str]) -> None:
    """:func:`_check_observations` of a 4D-Var campaign: every window of the extended campaign gets observations
    (:func:`twin.campaign.windows.placed_observations` refuses one without) and the ``K`` windows analysed keep
    theirs bitwise."""
    from twin.campaign.checkpoints import is_valid_checkpoint, reader
    from twin.campaign.windows import PLACED, WindowPlan, placed_observations, same_windows

    plan = WindowPlan(new_cfg, model)
    try:
        placed = placed_observations(plan, s.name)
    finally:
        plan.destroy()
    path = layout.observations_file(s.exp_dir)
    if not is_valid_checkpoint(path, s.comm):
        return  # nothing analysed from it yet: the resume writes it whole
    with reader(path, s.comm) as r:
        stored = {a: r.read_array(a) for a in (*PLACED, "windows")}
    if not same_windows(placed, stored, K):
        raise WorkflowError(f"{', '.join(map(str, paths))}: with these files the observations of the {K} windows "
                            f"experiment {s.name} has analysed would change (new sites before old ones, or an "
                            "earlier file changed since): deliver observations of the same sites, and leave the "
                            "campaign's files as they were")


# -- the command -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(run_dir: Path):
    """Hold an exclusive lock on the run directory (rank 0), or raise :class:`RunBusy`."""
    import fcntl

    from twin.campaign.status import HEARTBEAT_FILE, driver_state

    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError as exc:
        raise WorkflowError(f"{run_dir}: cannot be opened ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir}: another twin assimilate is working on it; run this command again when it "
                          "has finished") from None
        beat = layout.read_json(run_dir / HEARTBEAT_FILE)
        if driver_state(run_dir) == "running" and beat.get("pid") != os.getpid():
            raise RunBusy(f"{run_dir}: a twin run driver (process {beat.get('pid')}, {HEARTBEAT_FILE}) is working on "
                          "it; run this command again when it has finished")
        yield
    finally:
        os.close(fd)


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


def _on_root(comm, fn):
    """``fn()`` on rank 0 and its result on every rank; an error there is raised on every rank."""
    result, error = None, None
    if comm.Get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - raised again below, on every rank
            error = exc
    result, message = comm.bcast((result, None if error is None else (type(error).__name__, str(error))), root=0)
    _raise_everywhere(error, [message])
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
    if not (run_dir / layout.EXPERIMENTS).is_dir():
        raise ConfigError(f"{run_dir} is not a campaign run directory (no experiments/ in it)")
    with contextlib.ExitStack() as stack:
        _on_root(comm, lambda: stack.enter_context(_locked(run_dir)) and None)
        exps = _agree(comm, lambda: _experiments(run_dir, network))
        sensitive = exps[0][1].config.campaign.sensitive
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
        _on_root(comm, functools.partial(keep, run_dir, new, exps[0][3], list(plans.values()), sensitive))
        for f in new:
            f.stored = stored_name(f.sha256, f.path, bool(f.companions))
    # 3. extend every experiment.yaml that does not list every recorded file yet
    waiting = pending(run_dir, exps)
    for e, _, i, _ in exps:
        if waiting[e]:
            extended = _agree(comm, functools.partial(plan, e, comm, i, waiting[e], check=False))
            _on_root(comm, functools.partial(_extend, e, extended, sensitive))
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
    from twin.campaign.status import sweep_on_resume
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
