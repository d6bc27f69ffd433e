"""The file-based steps of an assimilation campaign, shared by online mode and workflow mode.

Every step is a function over an experiment directory (:mod:`twin.campaign.layout`) and a communicator, reads its
inputs from files, writes its output atomically and is *idempotent*: a step whose output already exists and passes
verification does nothing (and says so in the task log), so a resumed campaign recomputes nothing that finished.

* :func:`init_experiment` — the nature run of the twin experiment and its synthetic observations
  (``observations.h5``), and the prior ensemble drawn from the parameter priors (checkpoint 0);
* :func:`forecast_member` — member ``m`` of checkpoint ``k`` advanced over cycle ``k`` on ``comm``
  (``forecast/cycle_k/member_m.h5``): with the model's solver (:func:`advance_member`), or, when ``comm`` is one rank
  and the model has a batched forecast, as a batch of one (:func:`batched_forecast`, which online mode runs on all
  the members of a rank at once; bitwise the solver's numbers, so the modes and layouts agree);
* :func:`analyse` — the forecasts of cycle ``k`` and the observations of ``t_{k+1}`` through the configured ensemble
  analysis (:class:`twin.assimilation.analysis.EnsembleAnalysis`: prior inflation, guardrails, ETKF/EnKF/LETKF,
  posterior relaxation, adaptive inflation; the analysis the verification tests run), checkpoint ``k + 1`` and one
  record appended to ``diagnostics.nc``;
* :func:`twin.campaign.finalize.finalize` — ``posterior.nc`` and ``forecast.nc``.

The analysis gathers the live members' control vectors (state and estimable parameters, :mod:`twin.assimilation
.transforms`) on every rank of ``comm`` and computes the transform from them redundantly: the observed ensemble
``H E`` is a sparse product over whole states, so the analysis is bitwise the same on any number of ranks and in
either mode. That holds the ensemble (``n x N``) on every rank, which suits the campaign sizes this is built for;
the same analysis also runs on blocks of rows spread over ranks, as the in-memory
:class:`twin.assimilation.cycle.EnsembleCycle` runs it.

The experiment's configuration and built objects are :class:`twin.campaign.experiment.Setup`; the files are read and
written by :mod:`twin.campaign.checkpoints` (HDF5) and :mod:`twin.campaign.outputs` (NetCDF).

Dropped members (failure policy ``drop``) keep their last analysis in the checkpoints, flagged in the ``alive`` array,
and are never forecast or analysed again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import guarded
from twin.campaign import layout
from twin.campaign.checkpoints import (is_valid_checkpoint, parallel_io, read_member, read_members, reader,
                                       write_ensemble_checkpoint, write_member_file)
from twin.campaign.experiment import Setup, setup
from twin.core.errors import SolverError, WorkflowError
from twin.core.log import get_logger
from twin.core.streams import Purpose
from twin.models.contract import attributed
from twin.io.checkpoint.layout import canonical_json, from_plain
from twin.observations.file_network import cycle_counts

log = get_logger("twin.campaign")

__all__ = ["init_experiment", "forecast_member", "advance_member", "batched_forecast", "mark_failed", "Prior",
           "read_prior", "analyse", "setup", "Setup", "reader"]


# -- init ------------------------------------------------------------------------------------------------------------
@attributed()
def init_experiment(exp_dir, comm, s: Setup | None = None) -> bool:
    """The observations of every cycle (``observations.h5``: a twin experiment's nature run and synthetic
    observations, or the measured observations of the campaign's files) and the prior ensemble (checkpoint 0).
    Collective on ``comm``.

    Returns ``False`` when both files already existed and verified (nothing done). An error of the model's own
    (not twin's) raised in one of its methods is one line naming the component and the method
    (:func:`twin.models.contract.attributed`).
    """
    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        obs_path, ck0 = layout.observations_file(s.exp_dir), layout.checkpoint_file(s.exp_dir, 0)
        if s.rank == 0:
            (s.exp_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        if comm is not None:
            comm.Barrier()
        if is_valid_checkpoint(obs_path, comm) and is_valid_checkpoint(ck0, comm):
            earlier = _outdated_file_observations(s, obs_path)
            if earlier is None:
                if s.cfg.assimilation.method != "4dvar":  # 4D-Var writes its windows' observations itself
                    export_observations_again(s)  # observations.nc is written once: cut while the run was stopped?
                s.record("init", "skipped", t_start)
                return False
            # a live twin's deliveries (twin assimilate): more files, more cycles; checkpoint 0 stays
            sch = s.schedule
            times = [sch.window(0)[0]] + [sch.window(k)[1] for k in range(sch.n_cycles)]
            _write_file_observations(s, s.observations, times, s.provenance(), earlier)
            s.record("init", "extended", t_start, cycles=sch.n_cycles)
            return True
        model, sch, obs = s.get_model(), s.schedule, s.observations
        N = s.n_members
        times = [sch.window(0)[0]] + [sch.window(k)[1] for k in range(sch.n_cycles)]
        prov = s.provenance()
        if getattr(obs, "file_series", None):
            _write_file_observations(s, obs, times, prov)
        else:
            _write_twin_observations(s, model, sch, obs, times, prov)
        # Prior ensemble: parameters from their priors, states around the configured initial state.
        members = ctx.prior_ensemble(s.cfg, model, N, s.name)
        write_ensemble_checkpoint(s, ck0, 0, times[0], [m[0] for m in members], [m[1] for m in members],
                                  np.ones(N, dtype=bool), {"inflation": s.cfg.assimilation.inflation.multiplicative,
                                                           "dropped": {}}, prov)
        s.record("init", "done", t_start)
        log.info("experiment %s: %d members, %d cycles of %g model time units initialised", s.name, N,
                 sch.n_cycles, sch.every * sch.dt)
        return True
    finally:
        if own:
            s.destroy()


def network_geometry(obs) -> tuple[dict, dict]:
    """What ``observations.h5`` keeps of the observation operator for readers of the run (the report draws the
    networks from it without building the model): the arrays ``locations`` (one row per observation, when the
    networks have positions) and the meta entry ``networks`` (``{name: [first row, end row]}``)."""
    arrays = {} if obs.locations is None else {"locations": np.asarray(obs.locations, dtype=float)}
    slices = obs.network_slices or {obs.name: slice(0, obs.n_obs)}
    return arrays, {"networks": {name: [int(sl.start), int(sl.stop)] for name, sl in slices.items()}}


@attributed("the nature run")
def _write_twin_observations(s: Setup, model, sch, obs, times, prov) -> None:
    """The nature run of a twin experiment and its synthetic observations (``observations.h5``)."""
    from twin.assimilation.cycle import ModelForecast, twin_truth
    from twin.io.checkpoint import write_checkpoint
    from twin.observations.networks import fault_offsets

    # Its initial state is an independent draw from the prior ensemble's distribution (configured state plus
    # background noise, from the TRUTH stream), not the prior's centre: a truth at the centre of the prior flatters
    # every score (the members are drawn around the configured state too, :func:`twin.campaign.context
    # .initial_member`).
    from twin.models.contract import finite_advance

    run = ModelForecast(model)

    def forecast(states, params, t0, t1):  # a truth that turns non-finite without an error is the model's breach
        out = run(states, params, t0, t1)
        finite_advance(model, states, out, t0, t1, "the nature run")
        return out

    try:
        x0 = ctx.true_initial_state(s.cfg, model)
        from twin.campaign.experiments import draw_truth

        # experiments.truth (or replicates): the true parameters drawn from their priors; without it the configured
        # values are the truth
        draw_truth(s.cfg, model)
        true_params = ctx.truth_parameters(model)
        # ModelForecast takes one column per member: (1,) for a scalar; the true fields are the model's own
        # configured values already (and are set whole, on any number of ranks, only by ctx)
        p = {k: float(v) for k, v in true_params.items() if not np.ndim(v)}
        truth, ys = twin_truth(forecast, x0, p, sch, obs, ctx.streams(s.cfg))
    except SolverError as exc:  # not a member's forecast: the twin experiment's truth
        raise exc.during("the nature run") from None
    finally:
        run.destroy()
    # Sensor faults declared for the twin experiment (observations[i].fault): added to the synthetic data only
    ys = ys + fault_offsets(s.cfg.assimilation.observations, obs, sch.n_cycles)
    geometry, networks = network_geometry(obs)
    write_checkpoint(layout.observations_file(s.exp_dir), s.comm, cycle=0, time=times[0], provenance=prov,
                     parallel=False, arrays={"truth": truth, "observations": ys, "error_std": obs.error_std,
                                             "times": np.array(times), **geometry},
                     meta={"kind": "observations", "truth_parameters": {k: np.asarray(v).tolist() for k, v in
                                                                        true_params.items()}, **networks},
                     sensitive=s.cfg.campaign.sensitive)
    # the same observations as the file a real system would send (the round trip of a file network)
    _export_observations(s, model, obs, np.array(times), ys, prov)


def _export_observations(s: Setup, model, obs, times, ys, prov) -> None:
    from twin.campaign.outputs import time_encoding
    from twin.observations.export import write_observation_file

    time_units, scale = time_encoding(model, s.cfg.timeline.calendar_start)
    write_observation_file(layout.observation_export_file(s.exp_dir), s.comm, obs, model, times, ys,
                           time_units=time_units, time_scale=scale, provenance=prov,
                           sensitive=s.cfg.campaign.sensitive)


def export_observations_again(s: Setup) -> bool:
    """Write a twin experiment's ``observations.nc`` again from ``observations.h5`` when it is missing (a finished
    run's damaged copy was set aside) or does not verify against the data checksum it records (cut or changed while
    the run was stopped: a probe found a resume keep a truncated one and done.json certify it); the damaged copy is
    kept as ``observations.nc.damaged-<time>``. ``False`` where there is nothing to write (observed through files:
    no nature run, no export). Collective."""
    from twin.campaign.checkpoints import reader

    comm = s.comm
    path = layout.observation_export_file(s.exp_dir)
    why = None
    if s.rank == 0:
        if not path.exists():
            why = "missing"
        else:
            from twin.io.netcdf import verify_netcdf

            good, said = verify_netcdf(path)
            if good is False:
                why = said
                aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
                try:
                    os.replace(path, aside)
                    log.warning("experiment %s: %s is %s: kept as %s, written again from observations.h5", s.name,
                                path.name, said, aside.name)
                except OSError as exc:
                    log.warning("experiment %s: %s is %s and could not be set aside (%s): written again from "
                                "observations.h5", s.name, path.name, said, exc.strerror or exc)
    if comm is not None:
        why = comm.bcast(why, root=0)
    if why is None:
        return False
    with reader(layout.observations_file(s.exp_dir), comm) as r:
        if "truth" not in r.array_names:
            return False
        times, ys = np.asarray(r.read_array("times"), dtype=float), r.read_array("observations")
    _export_observations(s, s.get_model(), s.observations, times, ys, s.provenance())
    return True


def file_values(obs, n_cycles: int) -> tuple[np.ndarray, np.ndarray]:
    """The values and errors of the ``file`` networks of ``obs`` per cycle, ``(n_cycles, n_obs)`` each (NaN where a
    site was silent, and in the rows of other networks)."""
    ys, errs = np.full((n_cycles, obs.n_obs), np.nan), np.full((n_cycles, obs.n_obs), np.nan)
    for name, fs in obs.file_series.items():
        rows = obs.network_slices[name]
        ys[:, rows], errs[:, rows] = fs.values, fs.errors
    return ys, errs


def unchanged_before(new: np.ndarray, old: np.ndarray) -> bool:
    """Whether the per-cycle array ``new`` holds ``old`` bitwise in its first cycles and columns (NaN equal to NaN),
    and nothing in the columns ``new`` adds to those cycles."""
    K, m = old.shape
    if new.shape[0] < K or new.shape[1] < m:
        return False
    a, b = np.ascontiguousarray(new[:K, :m]), np.ascontiguousarray(old)
    return a.tobytes() == b.tobytes() and bool(np.all(np.isnan(new[:K, m:])))


def _outdated_file_observations(s: Setup, path) -> dict | None:
    """For a campaign with ``file`` networks whose ``observations.h5`` holds fewer cycles or other files than its
    configuration now names (``twin assimilate`` delivered more), what the file holds (``observations``,
    ``errors``); ``None`` when it is current or the campaign has no file network."""
    from twin.observations.networks import network_names, reads_files

    networks = s.cfg.assimilation.observations
    if not any(reads_files(n) for n in networks):
        return None
    names = network_names(networks)
    wanted = [[name, f] for name, n in zip(names, networks) if reads_files(n) for f in n.files()]
    with reader(path, s.comm) as r:
        listed = [[f.get("network"), f.get("file")] for f in r.meta.get("files", [])]
        if r.read_array("times").size - 1 == s.schedule.n_cycles and listed == wanted:
            return None
        return {"observations": r.read_array("observations"), "errors": r.read_array("errors")}


def _write_file_observations(s: Setup, obs, times, prov, earlier: dict | None = None) -> None:
    """The measured observations of the campaign's files per cycle (``observations.h5``, no truth): values and
    errors per cycle (NaN where a site was silent), every file's SHA-256 and quality-control counts.

    ``earlier``: what ``observations.h5`` held before more files were delivered (a live twin); the cycles it held
    must keep their values and errors bitwise, else :class:`WorkflowError` (an earlier file changed)."""
    from twin.io.checkpoint import write_checkpoint
    from twin.observations.networks import file_records

    K = len(times) - 1
    ys, errs = file_values(obs, K)
    if earlier is not None and not (unchanged_before(ys, earlier["observations"])
                                    and unchanged_before(errs, earlier["errors"])):
        raise WorkflowError(f"experiment {s.name}: the observation files give other values for the "
                            f"{earlier['observations'].shape[0]} cycles already analysed than observations.h5 "
                            "holds: a file it read has changed; restore it (new observations go in new files, "
                            "delivered with twin assimilate)")
    files = file_records(obs)
    for f in files:
        log.info("experiment %s: network %s from %s: %s", s.name, f["network"], f["file"],
                 ", ".join(f"{k} {v}" for k, v in f["qc"].items() if v))
    geometry, networks = network_geometry(obs)
    write_checkpoint(layout.observations_file(s.exp_dir), s.comm, cycle=0, time=times[0], provenance=prov,
                     parallel=False, arrays={"observations": ys, "error_std": obs.error_std, "errors": errs,
                                             "times": np.array(times), **geometry},
                     meta={"kind": "observations", "files": files, **networks}, sensitive=s.cfg.campaign.sensitive)


def _rejections(earlier: list, obs, cycle: int, t: float, rows) -> list[dict]:
    """The background check's rejections so far (kept in the checkpoints): one record per observation, naming its
    network and its row there."""
    slices = obs.network_slices or {obs.name: slice(0, obs.n_obs)}
    out = list(earlier)
    for row in np.asarray(rows, dtype=int).tolist():
        net = next(n for n, sl in slices.items() if sl.start <= row < sl.stop)
        out.append({"cycle": cycle, "time": t, "check": "background", "network": net, "row": row - slices[net].start})
    return out


def _write_rejections(exp_dir, records: list[dict]) -> None:
    """Rewrite ``qc.jsonl`` (one line per rejected observation) from the checkpoint's records (one process)."""
    import json

    from twin.io.atomic import is_private_directory, write_text

    write_text(layout.qc_file(exp_dir), "".join(json.dumps(r, sort_keys=True) + "\n" for r in records),
               private=is_private_directory(exp_dir))


# -- forecast --------------------------------------------------------------------------------------------------------
def forecast_member(exp_dir, cycle: int, member: int, comm, s: Setup | None = None) -> bool:
    """Advance member ``member`` of checkpoint ``cycle`` over the cycle and write its forecast file. Collective.

    Returns ``False`` when a verified forecast file already existed (nothing done).

    Raises
    ------
    SolverError, ModelError
        When the model's solve fails, or its advance left non-finite values without raising (the caller's failure
        policy decides what happens to the member).
    WorkflowError
        When the member was dropped earlier or the checkpoint of the cycle is missing.
    """
    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        out = layout.forecast_file(s.exp_dir, cycle, member)
        if is_valid_checkpoint(out, comm):
            s.record("forecast", "skipped", t_start, cycle=cycle, member=member)
            return False
        if s.rank == 0:
            out.parent.mkdir(parents=True, exist_ok=True)
        model, sch = s.get_model(), s.schedule
        if not 0 <= cycle < sch.n_cycles:
            raise WorkflowError(f"experiment {s.name}: cycle {cycle} is outside 0..{sch.n_cycles - 1}")
        ck = layout.checkpoint_file(s.exp_dir, cycle)
        if not ck.is_file():
            raise WorkflowError(f"experiment {s.name}: member {member} cannot start cycle {cycle}: checkpoint {ck} "
                                "does not exist")
        with reader(ck, comm) as r:
            alive = r.read_array("alive")
            if not 0 <= member < alive.size:
                raise WorkflowError(f"experiment {s.name}: no member {member} (ensemble of {alive.size})")
            if not alive[member]:
                raise WorkflowError(f"experiment {s.name}: member {member} was dropped before cycle {cycle}")
            (state,), (params,) = read_members(s, r, [member])
            parent, checksum = r.path, r.checksum
        t1 = sch.window(cycle)[1]

        def write(vec):
            write_member_file(s, out, comm, cycle, t1, vec, params, member, s.provenance(parent, checksum),
                              parallel=parallel_io(8 * model.grid.size * model.grid.dof))

        # a batch of one where online mode batches (a member whole on one rank): both modes through one integrator
        batch = batched_forecast(s, cycle, [state], [params])
        if batch is not None and np.all(np.isfinite(batch)):
            vec = model.grid.set_global(batch[0], model.create_state())
            try:
                write(vec)
            finally:
                vec.destroy()
        else:
            advance_member(s, cycle, state, params, write)
        s.record("forecast", "done", t_start, cycle=cycle, member=member)
        return True
    finally:
        if own:
            s.destroy()


def advance_member(s: Setup, cycle: int, state, params, keep=None) -> np.ndarray | None:
    """Advance one member (whole state ``state`` in natural order, physical parameter values ``params``) over
    cycle ``cycle`` on ``s.comm``; ``keep(vec)`` gets the forecast vector (a workflow task writes its member file),
    else the forecast is returned as a whole state on every rank of ``s.comm``. Collective.

    Raises
    ------
    SolverError, ModelError
        When the model's solve fails, or its advance left non-finite values without raising (a
        :class:`~twin.models.contract.ContractError`: the member fails rather than its NaN reaching the analysis).
    """
    from twin.models.contract import finite_forecast

    model, sch = s.get_model(), s.schedule
    ctx.set_member_parameters(model, params)
    vec = model.create_state()
    try:
        model.grid.set_global(state, vec)
        t0, t1 = sch.window(cycle)
        model.advance(vec, t0, t1)
        finite_forecast(model, np.asarray(state), vec, t0, t1, f"a member's forecast of cycle {cycle}")
        if keep is not None:
            keep(vec)
            return None
        return model.grid.allgather(vec).ravel()
    finally:
        vec.destroy()


def batched_forecast(s: Setup, cycle: int, states, params) -> np.ndarray | None:
    """The forecasts over cycle ``cycle`` of members whose states are whole on this rank (``states``: whole states in
    natural order, ``params``: their physical parameter values) through the model's batched forecast
    (:meth:`twin.models.base.Model.advance_ensemble`, bitwise :meth:`~twin.models.base.Model.advance`'s numbers),
    one row per member; ``None`` where it does not apply: ``s.comm`` has more than one rank (a member's state is
    distributed over them and its solver runs on all of them) or the model has no batched forecast. Not collective.

    A row that is not finite is a member whose integration blew up: the caller runs it through
    :func:`advance_member`, which reports the failure the model's way (retries, dropping, stopping).

    Raises
    ------
    ModelError
        When the cycle's window is invalid for the model.
    """
    if (s.comm is not None and s.comm.Get_size() > 1) or not len(states):
        return None
    t0, t1 = s.schedule.window(cycle)
    out = s.get_model().advance_ensemble(np.asarray(states, dtype=float), list(params), t0, t1)
    return None if out is None else np.asarray(out, dtype=float)


def mark_failed(exp_dir, cycle: int, member: int, reason: str) -> None:
    """Record that ``member`` is dropped in ``cycle`` (policy ``drop``); the next analysis leaves it out."""
    layout.write_json(layout.failed_marker(exp_dir, cycle, member), {"cycle": cycle, "member": member,
                                                                      "reason": reason})


# -- analysis --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prior:
    """What an ensemble checkpoint holds for the cycle it starts (:func:`read_prior`): the ``alive`` flags, the
    members' whole states and physical parameter values (every member, dropped ones too), its ``meta`` (inflation,
    dropped members, guardrails ...), and its ``path`` and ``checksum`` (the parent of the files made from it);
    ``forecast``: the members' forecasts of the cycle that ends there, when the analysis that wrote it returned it
    (its array ``forecast``, NaN rows for members without one). An analysis the online driver did not write
    (``outputs.checkpoint_every``) has the ``path`` and ``checksum`` of the last checkpoint written, the parent of
    the next one."""

    alive: np.ndarray
    states: list
    params: list
    meta: dict
    path: Path
    checksum: str
    forecast: np.ndarray | None = None
    #: the checkpoint number whose analysis this is (``path`` is the checkpoint written last, when this one was not)
    cycle: int | None = None


def as_read(meta: dict) -> dict:
    """``meta`` as a checkpoint's reader returns it (each value through its canonical JSON: NumPy scalars become
    numbers, arrays come back tagged with their dtype), so that a cycle started from memory sees what one started
    from the file sees."""
    return {str(k): from_plain(json.loads(canonical_json(v))) for k, v in meta.items()}


def read_prior(s: Setup, cycle: int, comm) -> Prior:
    """Checkpoint ``cycle`` (verified) as a :class:`Prior`. Collective on ``comm``."""
    with reader(layout.checkpoint_file(s.exp_dir, cycle), comm) as r:
        alive = r.read_array("alive")
        states, params = read_members(s, r, range(alive.size))
        return Prior(alive, states, params, r.meta, r.path, r.checksum, cycle=cycle)


def write_held(s: Setup, analysed: Prior, trail: list) -> None:
    """Write the checkpoint of the online driver's last analysis ``analysed`` that it held back
    (``outputs.checkpoint_every``; ``trail``: the analyses held since the last checkpoint written, ``analysed`` the
    last of them), with the diagnostics records held for it, as :func:`analyse` would have written it: for an
    experiment that stops before its next checkpoint is due (the member policy), whose cycles so far would be lost
    otherwise. Collective."""
    k = int(analysed.cycle)
    t = float(s.schedule.window(k - 1)[1])
    write_ensemble_checkpoint(s, layout.checkpoint_file(s.exp_dir, k), k, t, analysed.states, analysed.params,
                              analysed.alive, analysed.meta, s.provenance(analysed.path, analysed.checksum),
                              forecast=analysed.forecast, durable=not s.lazy, trail=trail[:-1])
    s.pending += s.held
    s.held = []
    s.flush_diagnostics()


def analyse(exp_dir, cycle: int, comm, s: Setup | None = None, *, min_members: int = 2,
            forecasts: dict[int, np.ndarray] | None = None, prior: Prior | None = None, write: bool = True,
            trail: tuple | list = ()) -> Prior | None:
    """Analysis of cycle ``cycle``: checkpoint ``cycle + 1`` and one diagnostics record. Collective.

    The members' forecasts come from their member files (a workflow's tasks), or from ``forecasts`` (member ->
    whole state, the same on every rank: the online driver keeps them in memory), which checkpoint ``cycle + 1`` then
    keeps as its array ``forecast`` (the rows of the other members NaN) for ``forecast.nc`` and the decisions.
    ``prior``: checkpoint ``cycle`` as :func:`read_prior` read it for the forecasts (the online driver; read here
    otherwise), so that a cycle reads its checkpoint once. ``write=False`` (the online driver between checkpoints,
    ``outputs.checkpoint_every``): checkpoint ``cycle + 1`` is not written, only returned, and its diagnostics record
    waits for the next checkpoint; ``trail``: the analyses returned so since the last checkpoint, which checkpoint
    ``cycle + 1`` then holds (:mod:`twin.campaign.checkpoints`).
    Members with a failure marker in this cycle are dropped; every other live member must have its forecast. The
    analysis is :meth:`twin.assimilation.analysis.EnsembleAnalysis.analyse` of the configured method
    (:func:`twin.campaign.context.analysis`) on the live members' control vectors, with the random stream ANALYSIS of
    the cycle, the inflation factor the checkpoint carries and, with ``decision.guardrails``, the experiment's
    guardrails as its screen (:func:`twin.campaign.guarded.screen`). Returns checkpoint ``cycle + 1`` as
    :func:`read_prior` would read it (the online driver starts the next cycle from it without reading the file), or
    ``None`` when a verified checkpoint ``cycle + 1`` already existed.

    Raises
    ------
    WorkflowError
        When a live member's forecast is missing, or fewer than ``min_members`` members are left.
    AssimilationError
        When the analysis produced non-finite values.
    """
    own = s is None
    s = s or setup(exp_dir, comm)
    t_start = time.time()
    try:
        if not ctx.is_filter(s.cfg):
            raise WorkflowError(f"experiment {s.name}: method {s.cfg.assimilation.method!r} has no per-cycle ensemble "
                                "analysis; it runs online ('twin run' with resources.workers: 1)")
        out = layout.checkpoint_file(s.exp_dir, cycle + 1)
        if write and is_valid_checkpoint(out, comm):
            s.record("analyse", "skipped", t_start, cycle=cycle)
            return None
        model, sch, obs = s.get_model(), s.schedule, s.observations
        prior = prior or read_prior(s, cycle, comm)
        alive, meta, parent, checksum = prior.alive.astype(bool), prior.meta, prior.path, prior.checksum
        # copies: the analysis replaces the live members' entries, the caller's prior stays as it was read
        prior_states, prior_params = list(prior.states), [dict(p) for p in prior.params]
        done, failed = layout.member_files(s.exp_dir, cycle)
        if forecasts is not None:
            done = sorted(forecasts)
        dropped = dict(meta.get("dropped", {}))
        for m, reason in failed.items():
            if alive[m]:
                alive[m] = False
                dropped[str(m)] = {"cycle": cycle, "reason": reason}
                log.warning("experiment %s: member %d dropped in cycle %d: %s", s.name, m, cycle, reason)
        live = [int(m) for m in np.flatnonzero(alive)]
        missing = [m for m in live if m not in done]
        if missing:
            raise WorkflowError(f"experiment {s.name}: cycle {cycle} cannot be analysed: the forecasts of members "
                                f"{missing} are missing (run them first, or mark them failed)")
        if len(live) < min_members:  # said without the experiment's name: the lines that stop it name it
            if s.defer_records and write:  # the experiment ends here: diagnostics.nc holds every cycle before it
                from twin.campaign.outputs import append_cycle_records, cycle_record

                last = cycle_record(meta)  # checkpoint ``cycle`` holds the record of cycle - 1, the newest there is
                if last is not None:
                    append_cycle_records(s, [last])
            causes = "; ".join(f"{int(m)} in cycle {info.get('cycle')} ({info.get('reason', 'no reason recorded')})"
                               if isinstance(info, dict) else f"{int(m)}"
                               for m, info in sorted(dropped.items(), key=lambda item: int(item[0])))
            raise WorkflowError(f"only {len(live)} live member(s) left in cycle {cycle} (at least {min_members} "
                                f"needed); dropped: {causes}")
        states, params = [], []
        for m in live:
            if forecasts is not None:  # a forecast leaves the parameters as they were
                x, p = forecasts[m], dict(prior_params[m])
            else:
                with reader(layout.forecast_file(s.exp_dir, cycle, m), comm) as r:
                    x, p = read_member(s, r)
            states.append(x)
            params.append(p)
        # a twin experiment has its truth; observations from files have none, and per-cycle errors
        truth, y, err = s.cycle_observations(cycle)
        control = ctx.control_vector(model)
        E = control.pack(np.array(states).T, {k: np.array([p[k] for p in params]).T for k in params[0]}
                         if params[0] else {})
        t = float(sch.window(cycle)[1])
        guard = guarded.restore(s.cfg, int(np.size(y)), meta.get("guardrails"), cycle)
        result = ctx.analysis(s.cfg, model, obs, control, len(live)).analyse(
            E, y, err, float(meta.get("inflation", 1.0)), ctx.rng(s.cfg, Purpose.ANALYSIS, cycle), cycle=cycle,
            time=t, truth=truth, screen=guarded.screen(guard) if guard is not None else None)
        record = dict(result.record, cycle=cycle, time=t)
        if getattr(obs, "file_series", None):
            record.update(cycle_counts(obs.file_series, cycle))
        new_states, new_params = control.unpack(result.ensemble)
        for j, m in enumerate(live):
            prior_states[m] = new_states[:, j]
            for name, values in new_params.items():
                prior_params[m][name] = values[..., j] if np.ndim(values) > 1 else float(np.asarray(values)[j])
        # this cycle's diagnostics record only: the earlier ones are in their own checkpoints and in diagnostics.nc,
        # so a checkpoint's size does not grow with the cycle count
        new_meta = {"inflation": result.factor, "dropped": dropped, "record": record}
        if guard is not None:
            new_meta["guardrails"] = guarded.snapshot(guard)
        if s.cfg.assimilation.background_check is not None:
            new_meta["rejected"] = _rejections(meta.get("rejected", []), obs, cycle, t, result.rejected)
        kept = None
        if forecasts is not None:
            kept = np.full((alive.size, np.size(states[0])), np.nan)
            for m, x in forecasts.items():
                kept[m] = x
        if write:
            written = write_ensemble_checkpoint(s, out, cycle + 1, t, prior_states, prior_params, alive, new_meta,
                                                s.provenance(parent, checksum), forecast=kept, durable=not s.lazy,
                                                trail=trail)
        else:  # the next checkpoint's parent stays the last one written
            out, written = parent, checksum
        if s.rank == 0:
            guarded.write_flags(s.exp_dir, new_meta.get("guardrails"))
            if "rejected" in new_meta:
                _write_rejections(s.exp_dir, new_meta["rejected"])
        s.add_diagnostics(record, last=cycle == sch.n_cycles - 1, held=not write)
        s.record("analyse", "done", t_start, cycle=cycle)
        if "rmse" in record:
            log.info("experiment %s cycle %d: rmse %.4g -> %.4g, spread %.4g -> %.4g (%d members)", s.name, cycle,
                     record["rmse_forecast"], record["rmse"], record["spread_forecast"], record["spread"], len(live))
        else:
            log.info("experiment %s cycle %d: %d observations, O-B std %.4g, chi2/m %.3g, spread %.4g (%d members)",
                     s.name, cycle, record["n_obs"], record.get("omb_std", float("nan")),
                     record.get("chi2_per_dof", float("nan")), record["spread"], len(live))
        return Prior(alive, prior_states, prior_params, as_read(new_meta), out, written, kept, cycle=cycle + 1)
    finally:
        if own:
            s.destroy()
