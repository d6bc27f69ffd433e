"""The free run of a twin experiment: the background run forward without any data (the reference an analysis beats).

A twin experiment's ``observations.h5`` holds the nature run ``x_t(t_j)`` at the observation/cycle times
``t_0 .. t_K`` (:mod:`twin.campaign.steps`, :mod:`twin.campaign.variational`), and checkpoint 0 the background:
the prior ensemble (filters) or the perturbed background state (4D-Var). The free run starts from the mean of those
initial states, ``x_f(t_0) = mean_m x_m(t_0)``, with every estimable parameter at the centre of its prior
(:func:`twin.models.priors.prior_center`: what the model would use without data), and is advanced with the model's
own solver over the same times. Its error

    rmse_free(t_j) = sqrt( mean_i (x_f(t_j) - x_t(t_j))_i^2 )      (all state entries, in the state's units)

is directly comparable with the analysis ``rmse`` of ``diagnostics.nc`` (same definition, ensemble mean).

With a ``decision`` section the file also carries, at the decision's output times after ``t_K``
(:func:`twin.campaign.decide.output_times`), the decision QoIs of the nature run continued with the true parameters
(``truth_<qoi>``; what the forecast fan should contain) and of the free run continued (``free_<qoi>``), and the same
QoIs at ``t_0 .. t_K``.

Output: ``<experiment>/free_run.nc`` (CF, ``time`` in the model's time encoding, provenance; variables
``rmse_free``, ``truth_<qoi>``, ``free_<qoi>``; ``rmse_free`` is NaN after ``t_K``). It is written by
:func:`write_free_run`, which a campaign's last step calls (collective on the communicator given); a campaign of a
real system (observations from files) has no nature run and no free run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.campaign import layout
from twin.core.errors import OutputError
from twin.core.log import get_logger

log = get_logger("twin.campaign.free_run")

FREE_RUN_FILE = "free_run.nc"


def _initial_mean(path, name: str, n: int, comm) -> np.ndarray:
    """Mean of the live initial states in checkpoint ``path`` (one state of ``n`` entries, or one per member)."""
    from twin.campaign.checkpoints import reader

    with reader(path, comm) as r:
        states = np.asarray(r.read_field(name), dtype=float).reshape(-1, n)
        alive = r.read_array("alive").astype(bool) if "alive" in r.array_names else None
    if alive is not None and alive.size == states.shape[0]:
        states = states[alive]
    return states.mean(axis=0)


def has_truth(exp_dir, comm) -> bool:
    """Whether the experiment is a twin experiment: its ``observations.h5`` holds the nature run."""
    from twin.campaign.checkpoints import reader

    path = layout.observations_file(Path(exp_dir))
    if not path.is_file():
        return False
    with reader(path, comm) as r:
        return "truth" in r.array_names


def write_free_run(exp_dir, comm) -> Path:
    """Compute the free run of experiment ``exp_dir`` and write ``free_run.nc``; returns its path. Collective.

    Raises
    ------
    OutputError
        When the experiment has no nature run (``observations.h5``) or no checkpoint 0.
    """
    from twin.campaign.decide import output_times, wants_decision
    from twin.campaign.checkpoints import reader
    from twin.campaign.outputs import state_units, time_encoding
    from twin.campaign.experiment import setup
    from twin.io.netcdf import DiagnosticsFile, VariableMeta, of_state
    from twin.models.priors import prior_center

    exp_dir = Path(exp_dir)
    obs_path, ck0 = layout.observations_file(exp_dir), layout.checkpoint_file(exp_dir, 0)
    for p in (obs_path, ck0):
        if not p.is_file():
            raise OutputError(f"free run of {exp_dir.name}: {p.name} not found (not a twin experiment, or not run)")
    s = setup(exp_dir, comm)
    try:
        model = s.get_model()
        grid = model.grid
        with reader(obs_path, comm) as r:
            truth, times = r.read_array("truth"), np.asarray(r.read_array("times"), dtype=float)
            drawn = r.meta.get("truth_parameters", {})
        x0 = _initial_mean(ck0, model.name, truth.shape[1], comm)
        if x0.size != truth.shape[1]:
            raise OutputError(f"free run of {exp_dir.name}: checkpoint 0 holds {x0.size} state entries, the nature "
                              f"run {truth.shape[1]}")
        decision = s.cfg.decision if wants_decision(s.cfg) else None
        qois = list(decision.qois) if decision is not None else []
        later = (output_times(times[-1], decision.horizon, getattr(model, "dt", None))
                 if decision is not None else np.array([]))
        # the nature run's parameters as it ran (observations.h5): drawn from the priors for a cohort or replicates
        # (experiments.truth), the configured values otherwise
        true_values = {p.name: float(drawn.get(p.name, p.value)) for p in model.estimable() if not p.is_field}
        fields = {p.name: np.asarray(drawn[p.name], dtype=float) for p in model.estimable()
                  if p.is_field and p.name in drawn}
        units: dict[str, str] = {}
        centres = {p.name: prior_center(p.prior) for p in model.estimable() if not p.is_field and p.prior is not None}

        def run(start: np.ndarray, t_all: np.ndarray, where: str) -> tuple[list[np.ndarray], dict[str, list[float]]]:
            from twin.campaign.checkpoints import vec_from
            from twin.models.contract import finite_advance

            x = vec_from(grid, start)
            states, series = [start], {q: [] for q in qois}
            try:
                for q in qois:
                    series[q].append(_qoi(model, x, t_all[0], q, units))
                for a, b in zip(t_all[:-1], t_all[1:]):
                    model.advance(x, float(a), float(b))
                    states.append(grid.allgather(x).ravel())
                    # as in the nature run: a state that turns non-finite without an error is the model's breach
                    finite_advance(model, states[-2], states[-1], float(a), float(b), where)
                    for q in qois:
                        series[q].append(_qoi(model, x, b, q, units))
            finally:
                x.destroy()
            return states, series

        # the nature run continued beyond t_K with its true parameters
        from twin.campaign.context import set_member_parameters, truth_parameters

        configured_fields = {k: v for k, v in truth_parameters(model).items() if np.ndim(v)} if fields else {}
        set_member_parameters(model, {**true_values, **fields})
        _, truth_late = (run(truth[-1], np.concatenate([[times[-1]], later]), "the nature run continued") if qois
                         else (None, {}))
        set_member_parameters(model, configured_fields)  # the free run keeps the configured fields
        truth_early = {q: [] for q in qois}
        for j in range(len(times)) if qois else []:
            xv = _vec(grid, truth[j])
            try:
                for q in qois:
                    truth_early[q].append(_qoi(model, xv, times[j], q, units))
            finally:
                xv.destroy()
        for name, value in centres.items():
            model.set_parameter(name, value)
        t_all = np.concatenate([times, later])
        states, free_series = run(x0, t_all, "the free run")
        for name, value in true_values.items():
            model.set_parameter(name, float(value))
        time_units, scale = time_encoding(model, s.cfg.timeline.calendar_start)
        variables = {"rmse_free": of_state(VariableMeta("RMSE of the free run (background without data) against the "
                                                        "truth", "{state}"), *state_units(model))}
        for q in qois:
            variables[f"truth_{q}"] = VariableMeta(f"{q} of the nature run", units.get(q, "1"))
            variables[f"free_{q}"] = VariableMeta(f"{q} of the free run", units.get(q, "1"))
        path = exp_dir / FREE_RUN_FILE
        if comm.Get_rank() == 0 and path.exists():
            path.unlink()
        out = DiagnosticsFile(path, comm, provenance=s.provenance(ck0), variables=variables, time_units=time_units,
                              title=f"twin free run of experiment {s.name}", sensitive=s.cfg.campaign.sensitive)
        n = len(times)
        records = []
        for j, t in enumerate(t_all):
            rec = {"rmse_free": float(np.sqrt(np.mean((states[j] - truth[j]) ** 2))) if j < n else float("nan")}
            for q in qois:
                rec[f"truth_{q}"] = truth_early[q][j] if j < n else truth_late[q][j - n + 1]
                rec[f"free_{q}"] = free_series[q][j]
            records.append((float(t) * scale, rec, j if j < n else None))
        out.extend(records)  # one write (record by record, each append copies the file: quadratic in the cycles)
        log.info("experiment %s: free run written (%s); final rmse %.4g", s.name, path,
                 float(np.sqrt(np.mean((states[n - 1] - truth[n - 1]) ** 2))))
        return path
    finally:
        s.destroy()


def _vec(grid, array):
    from twin.campaign.checkpoints import vec_from

    return vec_from(grid, array)


def _qoi(model, x, t: float, name: str, units: dict[str, str]) -> float:
    from twin.models.contract import qoi

    q = qoi(model, x, float(t))  # checked: QoI name -> QoI
    if name not in q:
        raise OutputError(f"free run: model '{model.name}' has no quantity of interest '{name}'; it has "
                          f"{sorted(q)}")
    units[name] = q[name].units
    return float(q[name].value)
