"""The online campaign driver: runs a validated campaign inside one MPI job (``twin run``).

It turns typed configuration into models on the job's communicator, advances them over the timeline with a progress
display, and leaves the outputs in the run directory:

* ``forecast.nc`` — the state fields at every output time (CF NetCDF, dims ``time, [member,] z, y, x``) and the
  quantities of interest as time series,
* ``twin.log`` — the log of rank 0,

each with provenance (configuration verbatim and its hash, versions, host, ranks, times).

Science code below this layer receives communicators and typed objects; only this driver (and the CLI above it)
knows about the job as a whole.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.config.loader import LoadedCampaign
from twin.core.calendar import cf_time_units
from twin.core.errors import ConfigError, TwinError
from twin.core.interval import Interval
from twin.core.log import get_logger, setup_logging
from twin.core.petsc import unread_options
from twin.core.progress import progress
from twin.core.units import compatible, convert
from twin.models import contract

log = get_logger("twin.driver")

#: how often a forecast run brings qoi.nc up to date (wall-clock seconds; and at its end)
QOI_FLUSH_SECONDS = 10.0


@dataclass
class RunResult:
    """What a run left behind."""

    run_dir: Path
    files: list[Path] = field(default_factory=list)
    qoi: dict[str, np.ndarray] = field(default_factory=dict)
    #: ``(experiment, reason)`` of every experiment that failed or was stopped: the command then exits non-zero
    unfinished: list[tuple[str, str]] = field(default_factory=list)
    #: experiments of the run (of a campaign; 0 for a forecast run)
    experiments: int = 0


def run_directory(loaded: LoadedCampaign, override: str | None = None) -> Path:
    """The run directory, resolved: ``override`` (``-o``) or ``outputs.directory`` with ``{name}`` replaced by the
    campaign name. It must lie below the working directory or an allowed root (:mod:`twin.config.confinement`).

    Raises
    ------
    ConfigError
        If it lies elsewhere (the problem points at ``outputs.directory`` in the file when that named it), or, for
        ``resources.type: slurm``, if its path contains ``%`` (Slurm would expand it).
    """
    from twin.config.confinement import allowed_roots, confine, outside_message

    cfg = loaded.config
    if override:
        path = confine(override)
    else:
        text = cfg.outputs.directory.replace("{name}", cfg.campaign.name)
        message = outside_message(text, allowed_roots(), "outputs.directory")
        if message is not None:
            raise ConfigError([loaded.problem(("outputs", "directory"), message)])
        path = Path(text).resolve()
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # a name of bytes that are not UTF-8: logs and NetCDF attributes could not hold it
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        where = "-o" if override else "outputs.directory, or the working directory"
        raise ConfigError(f"{loaded.path}: run directory {shown} is not valid UTF-8 (twin writes it into its logs and "
                          f"files as UTF-8): choose a name of UTF-8 characters ({where})") from None
    if cfg.resources.type == "slurm" and "%" in str(path):
        # sbatch expands %j, %x, %u ... in the log paths of the batch script: the job would write elsewhere, or die
        where = "-o" if override else "outputs.directory"
        raise ConfigError(f"{loaded.path}: run directory {path} contains '%', which Slurm expands in file names "
                          f"(%j: job id, %u: user ...): choose a name without '%' ({where})")
    return path


def output_times(timeline, model_time_units: str) -> np.ndarray:
    """Output times in the model's time units: start, every ``output_every``, and end. A model of dimensionless
    time takes the timeline's numbers as its own times, as an assimilation campaign's cycle clock does
    (:func:`twin.campaign.context.schedule`); a forecast of one ended in a traceback (``'s' are not convertible
    to '1'``)."""
    start, end = timeline.start, timeline.end
    if timeline.output_every:
        n = int(np.floor((end - start) / timeline.output_every + 1e-9))
        times = start + timeline.output_every * np.arange(n + 1)
        if end - times[-1] > 1e-9 * (end - start):
            times = np.append(times, end)
    else:
        times = np.array([start, end])
    if compatible(model_time_units, "1"):
        return np.asarray(times, dtype=float)
    return np.asarray(convert(times, timeline.units, model_time_units), dtype=float)


def build_model(loaded: LoadedCampaign, comm):
    """The campaign's model on ``comm``: its single component, or with a ``coupling`` section the coupled model of
    its components (:func:`twin.coupling.build.build_coupled`)."""
    from twin.models.registry import create_model

    cfg = loaded.config
    if cfg.coupling is not None:
        from twin.coupling.build import build_coupled

        return build_coupled(loaded, comm)
    if len(cfg.models) > 1 and cfg.coupling is None:
        raise ConfigError(f"{loaded.path}: models: {len(cfg.models)} components ({', '.join(cfg.models)}) need a "
                          f"'coupling' section saying how they exchange fields")
    name, mcfg = next(iter(cfg.models.items()))
    return create_model(name, mcfg, comm, getattr(cfg, "limits", None))


def run_campaign(loaded: LoadedCampaign, comm, run_dir: str | None = None, verbose: bool = False,
                 quiet: bool = False) -> RunResult:
    """Run ``loaded`` on ``comm``; returns the run directory and the files written. Collective.

    A sensitive campaign runs under an owner-only umask (:func:`twin.io.atomic.private_umask`): every file and
    directory it creates is ``0600``/``0700`` from creation."""
    from twin.io.atomic import private_umask

    with private_umask(loaded.config.campaign.sensitive):
        return _run_campaign(loaded, comm, run_dir, verbose, quiet)


def _run_campaign(loaded: LoadedCampaign, comm, run_dir: str | None, verbose: bool, quiet: bool) -> RunResult:
    import contextlib

    from twin.campaign.rundir import guard

    with contextlib.ExitStack() as stack:
        # the campaign's own run directory, and this command's alone while it runs
        out = guard(stack, run_directory(loaded, run_dir), loaded, comm)
        return _run_in(loaded, comm, out, verbose, quiet)


def _run_in(loaded: LoadedCampaign, comm, out: Path, verbose: bool, quiet: bool) -> RunResult:
    from twin.io.provenance import collect

    cfg = loaded.config
    rank, size = comm.Get_rank(), comm.Get_size()
    setup_logging(rank, size, verbose, logfile=str(out / "twin.log"), quiet=quiet)
    prov = collect(comm, config_text=loaded.text, sensitive=cfg.campaign.sensitive)
    log.info("campaign '%s' on %d rank(s); run directory %s", cfg.campaign.name, size, out)
    if rank == 0:
        from twin.campaign.heartbeat import sweep_on_resume

        sweep_on_resume(out)  # temporary files of a killed run, before anything writes here
    comm.Barrier()
    if cfg.assimilation is not None:
        from twin.campaign.online import run_online, unfinished

        dirs = run_online(loaded, comm, out, verbose=verbose, quiet=quiet)
        result = RunResult(out, sorted(p for p in out.rglob("*.nc")) + [out / "twin.log"],
                           unfinished=unfinished(dirs), experiments=len(dirs))
    else:
        result = _forecast(loaded, comm, out, prov)
    # a misspelt PETSc option changes nothing, silently, unless told; judged when every experiment ran to its end (an
    # experiment that failed early had not set up all its solvers: a correct option was said to change nothing)
    if not result.unfinished:
        for line in unread_options():
            log.warning(line)  # the line as the template: the repeat filter counts each option apart
    return result


def _field_name(part, name: str) -> str:
    """A state variable's name in ``forecast.nc``: its own, or ``<component>_<name>`` where that is a coordinate's
    (Lorenz-63's ``x``, ``y``, ``z``: its forecast ended in "variables {'x'} are found in both data_vars and
    coords", found by trying a forecast of the example plugin)."""
    from twin.io.netcdf import ENSEMBLE_COORDINATES

    return f"{part.name}_{name}" if name in ENSEMBLE_COORDINATES else name


def _ran_and_failed(exc, t0: float, units: str):
    """``exc``, raised by the forecast's time loop, as what ends the command with exit status 1 (the run started and
    did not finish; 2 is input refused before anything ran), written into twin.log as well."""
    exc.exit_status = 1
    log.error("the forecast stopped in the interval from t = %g %s: %s; the outputs are not written", t0, units,
              "; ".join(exc.lines()))
    return exc


@contract.attributed("the forecast")
def _forecast(loaded: LoadedCampaign, comm, out: Path, prov) -> RunResult:
    from twin.coupling.build import gather_outputs, output_models, write_coupling_diagnostics
    from twin.coupling.coupled import CoupledModel
    from twin.io.netcdf import DiagnosticsFile, VariableMeta, write_ensemble

    cfg = loaded.config
    model = build_model(loaded, comm)
    sensitive = cfg.campaign.sensitive
    files: list[Path] = []
    try:
        times = output_times(cfg.timeline, model.time_units)
        time_units, factor = cf_time_units(cfg.timeline.calendar_start, model.time_units), 1.0
        state = contract.initial_state(model)  # checked: a PETSc vector of the model's state
        # one forecast file per component of a coupled model, each on its own grid
        parts = output_models(model) if cfg.outputs.fields else {}
        snapshots = {stem: [f] for stem, f in gather_outputs(model, state).items()} if parts else {}
        qoi_file = DiagnosticsFile(out / "qoi.nc", comm, provenance=prov, time_units=time_units, sensitive=sensitive,
                                   title=f"twin quantities of interest: {cfg.campaign.name}",
                                   expected_records=len(times))
        series: dict[str, list[float]] = {}
        # qoi.nc is written every QOI_FLUSH_SECONDS and at the end: each write copies the file (atomic), so a write
        # per output time would cost a time quadratic in the output times
        pending: list = []
        every = Interval(QOI_FLUSH_SECONDS, comm)

        def flush() -> None:
            if pending:
                qoi_file.extend(pending)
                pending.clear()
            every.reset()

        def record(t: float) -> None:
            q = contract.qoi(model, state, t)  # checked: QoI name -> QoI
            qoi_file.meta.update({k: VariableMeta(v.long_name or k, v.units) for k, v in q.items()})
            pending.append((t * factor, {k: v.value for k, v in q.items()}, None))
            for k, v in q.items():
                series.setdefault(k, []).append(v.value)
            if every.due():  # rank 0's clock, for every rank (the write is collective)
                flush()

        record(times[0])
        t_wall = time.perf_counter()
        with progress(f"{model.name}: forecast", len(times) - 1, rank=comm.Get_rank()) as bar:
            for t0, t1 in zip(times[:-1], times[1:]):
                try:
                    model.advance(state, t0, t1)
                except Exception as exc:  # the run started and failed: a solver, a coupling that did not converge,
                    # a plugin's own error (named by its component and method)
                    named = exc if isinstance(exc, TwinError) else contract.describe(exc, "the forecast")
                    if named is None:
                        raise
                    raise _ran_and_failed(named, t0, model.time_units) from (None if named is exc else exc)
                if parts:
                    for stem, f in gather_outputs(model, state).items():
                        snapshots[stem].append(f)
                record(t1)
                bar.advance(status=f"t={t1:g} {model.time_units}")
        flush()
        log.info("forecast of %d output intervals took %.2f s", len(times) - 1, time.perf_counter() - t_wall)
        for stem, part in parts.items():
            fields = None
            if comm.Get_rank() == 0:
                stacked = np.stack(snapshots[stem])[None]  # (member=1, time, ...)
                if part.grid.dof == 1:
                    stacked = stacked[..., None]
                fields = {_field_name(part, name): stacked[..., i] for i, name in enumerate(part.state_names)}
            variables = {_field_name(part, name): VariableMeta(f"{part.name} {name}", units)
                         for name, units in zip(part.state_names, part.state_units)}
            files.append(Path(write_ensemble(out / f"{stem}.nc", part.grid, fields, times * factor, comm=comm,
                                             variables=variables, kind="forecast", time_units=time_units,
                                             space_units=part.length_units, provenance=prov.finished(),
                                             sensitive=sensitive, title=f"twin forecast: {cfg.campaign.name}",
                                             complevel=cfg.outputs.compression)))
        if isinstance(model, CoupledModel):
            files.append(write_coupling_diagnostics(model, out / "coupling.nc", comm, provenance=prov.finished(),
                                                    time_units=time_units, time_factor=factor, sensitive=sensitive,
                                                    title=f"twin coupling diagnostics: {cfg.campaign.name}"))
        state.destroy()
    finally:
        model.destroy()
    return RunResult(out, files + [out / "qoi.nc", out / "twin.log"],
                     {k: np.asarray(v) for k, v in series.items()})
