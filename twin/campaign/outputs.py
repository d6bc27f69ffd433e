"""The NetCDF outputs of an experiment: ``diagnostics.nc`` (one record per cycle or iteration, from the history a
checkpoint carries) and the ensemble files ``posterior.nc`` and ``forecast.nc`` from whole arrays.

The history (a list of per-cycle or per-iteration records) lives in the checkpoint's metadata, so ``diagnostics.nc``
can always be rewritten from the newest checkpoint: a resumed run leaves exactly the file an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from twin.campaign import guarded, layout
from twin.campaign.experiment import Setup, rank_of

#: Diagnostics written by the filters' analysis that are not in twin.io.netcdf.DIAGNOSTICS:
#: name -> (long name, units; "{state}" = the state's units).
EXTRA_DIAGNOSTICS = {
    "crps": ("continuous ranked probability score of the analysis ensemble", "{state}"),
    "coverage_90": ("fraction of state entries whose truth lies inside the analysis ensemble's 5-95 % interval",
                    "1"),
    "innovation_expected_std": ("innovation standard deviation expected from R and the forecast spread", "{state}"),
    "members": ("live ensemble members", "1"),
    # without a truth (observations from files): observation-space statistics (twin.observations.innovations)
    "omb_mean": ("mean of observation minus background (O-B)", "{state}"),
    "omb_std": ("standard deviation of O-B", "{state}"),
    "oma_mean": ("mean of observation minus analysis (O-A)", "{state}"),
    "oma_std": ("standard deviation of O-A", "{state}"),
    "chi2_per_dof": ("innovation chi-square per observation, d^T (HBH^T + R)^-1 d / m (1 when B and R are right)",
                     "1"),
    "desroziers_r": ("Desroziers estimate of the observation error variance, mean of (O-A)(O-B)", "{state}2"),
    "assumed_r": ("observation error variance the analysis assumed (mean)", "{state}2"),
    "desroziers_hbht": ("Desroziers estimate of the background error variance in observation space, mean of "
                        "(A-B)(O-B)", "{state}2"),
    "ensemble_hbht": ("forecast ensemble variance in observation space (mean)", "{state}2"),
}

#: Diagnostics of ES-MDA and 4D-Var campaigns that are neither in twin.io.netcdf.DIAGNOSTICS nor in
#: :data:`EXTRA_DIAGNOSTICS`: name -> (long name, units; "{state}" = the state's units).
METHOD_DIAGNOSTICS = {
    "iterations": ("minimiser iterations of the window", "1"),
    "converged": ("1 if the minimiser converged", "1"),
    "misfit": ("ensemble mean of the normalised data misfit |R^-1/2 (y - g(m))|^2 / n_obs", "1"),
    "alpha": ("ES-MDA inflation coefficient of the iteration (0: no update)", "1"),
    "iteration": ("ES-MDA iteration", "1"),
}


def append_diagnostics(s: Setup, history: list[dict[str, Any]], meta: dict | None = None) -> None:
    """Make ``diagnostics.nc`` hold exactly the records of ``history``: nothing to do when it does, append the last
    record when it holds the earlier ones, else rebuild it (after a crash between the checkpoint and the append).
    ``meta``: variable metadata beyond the usual diagnostics. Collective."""
    path = s.exp_dir / "diagnostics.nc"
    records = diagnostics_count(path, s.comm)
    if records == len(history):
        return
    if records == len(history) - 1:
        todo = history[-1:]
    else:
        if rank_of(s.comm) == 0 and path.exists():
            path.unlink()
        todo = history
    f = diagnostics_file(s, path)
    f.meta.update(meta or {})
    _, scale = time_encoding(s.get_model(), s.cfg.timeline.calendar_start)
    for rec in todo:
        values = {k: v for k, v in rec.items() if k not in ("cycle", "time")}
        f.append(rec["time"] * scale, values, cycle=rec["cycle"])


def _units(template: str, state: str) -> str:
    """``{state}`` replaced by the state's units; ``{state}2`` (a variance) squares them (nothing to square in 1)."""
    if template == "{state}2":
        return "1" if state in ("", "1") else f"({state})^2" if "/" in state or " " in state else f"{state}^2"
    return template.replace("{state}", state)


def diagnostics_file(s: Setup, path):
    """The :class:`~twin.io.netcdf.DiagnosticsFile` of an experiment with the metadata of every diagnostic its
    analysis writes."""
    from twin.io.netcdf import DiagnosticsFile, VariableMeta

    model = s.get_model()
    units = model.state_units[0]
    extra = {k: VariableMeta(ln, _units(u, units)) for k, (ln, u) in EXTRA_DIAGNOSTICS.items()}
    for p in model.estimable():
        extra[f"parameter_{p.name}"] = VariableMeta(f"ensemble mean of parameter {p.name}", p.units)
    if guarded.settings(s.cfg) is not None:
        from twin.decision.guardrails import diagnostics_variables

        extra.update(diagnostics_variables())
    time_units, _ = time_encoding(model, s.cfg.timeline.calendar_start)
    return DiagnosticsFile(path, s.comm, provenance=s.provenance(), variables=extra, state_units=units,
                           time_units=time_units, title=f"twin diagnostics of experiment {s.name}",
                           sensitive=s.cfg.campaign.sensitive)


def time_encoding(model, start=None) -> tuple[str, float]:
    """CF time units for the model's time and the factor that converts model time to them: seconds since the
    campaign's calendar start (``timeline.start`` as a date), or since 1970-01-01 (a twin experiment's time 0)."""
    from twin.core.calendar import cf_time_units
    from twin.core.units import compatible, convert
    from twin.io.netcdf import DEFAULT_TIME_UNITS

    if compatible(model.time_units, "s"):
        units = DEFAULT_TIME_UNITS if start is None else cf_time_units(start, "s")
        return units, float(convert(1.0, model.time_units, "s"))
    return f"{model.time_units} (model time units)" if model.time_units != "1" else "1", 1.0


def diagnostics_count(path: Path, comm) -> int:
    """Records in the diagnostics file ``path`` (-1 when it is missing or unreadable). Collective."""
    count = -1
    if rank_of(comm) == 0 and path.exists():
        import netCDF4

        try:
            with netCDF4.Dataset(path, "r") as nc:
                count = len(nc.dimensions["time"])
        except (OSError, KeyError, RuntimeError):
            count = -1
    return comm.bcast(count, root=0) if comm is not None and comm.Get_size() > 1 else count


def write_diagnostics(s: Setup, history: list[dict[str, Any]]) -> None:
    """:func:`append_diagnostics` with the metadata of the 4D-Var and ES-MDA diagnostics.
    Collective. Records carry ``cycle``, ``time`` (model time) and values."""
    from twin.io.netcdf import VariableMeta

    model = s.get_model()
    units = model.state_units[0]
    meta = {k: VariableMeta(ln, u.replace("{state}", units)) for k, (ln, u) in METHOD_DIAGNOSTICS.items()}
    for p in model.parameters.values():
        if not p.estimable:  # estimable ones already have theirs (diagnostics_file)
            meta[f"parameter_{p.name}"] = VariableMeta(f"estimate of parameter {p.name}", p.units)
        meta[f"parameter_spread_{p.name}"] = VariableMeta(f"ensemble spread of parameter {p.name}", p.units)
    append_diagnostics(s, history, meta)


def write_ensembles(s: Setup, posterior: np.ndarray, posterior_times, forecast: np.ndarray, forecast_times,
                    parent) -> None:
    """``posterior.nc`` and ``forecast.nc`` from whole ensembles of shape (member, time, n_state) in natural order
    (needed on rank 0 only). Collective."""
    from twin.io.netcdf import VariableMeta, write_ensemble

    model = s.get_model()
    grid = model.grid
    spatial = tuple(grid.shape[::-1]) + ((grid.dof,) if grid.dof > 1 else ())
    time_units, scale = time_encoding(model, s.cfg.timeline.calendar_start)
    variables, post, fore = {}, {}, {}
    P = np.asarray(posterior).reshape(posterior.shape[:2] + spatial)
    F = np.asarray(forecast).reshape(forecast.shape[:2] + spatial)
    for c, state_name in enumerate(model.state_names):
        units = model.state_units[c] if c < len(model.state_units) else "1"
        # a state named like a coordinate (Lorenz-96's x) is prefixed with the component, as in finalize
        name = f"{model.name}_{state_name}" if state_name in ("x", "y", "z", "time", "member") else state_name
        variables[name] = VariableMeta(f"{name} of {model.name}", units)
        post[name] = P[..., c] if grid.dof > 1 else P
        fore[name] = F[..., c] if grid.dof > 1 else F
    common = dict(comm=s.comm, variables=variables, time_units=time_units,
                  space_units=getattr(model, "length_units", "m"), provenance=s.provenance(parent),
                  sensitive=s.cfg.campaign.sensitive)
    write_ensemble(s.exp_dir / "posterior.nc", grid, post if rank_of(s.comm) == 0 else None,
                   np.asarray(posterior_times) * scale, kind="posterior",
                   title=f"twin posterior ensemble of experiment {s.name}", **common)
    write_ensemble(s.exp_dir / "forecast.nc", grid, fore if rank_of(s.comm) == 0 else None,
                   np.asarray(forecast_times) * scale, kind="forecast",
                   title=f"twin forecast ensemble of experiment {s.name}", **common)


def outputs_valid(s: Setup) -> bool:
    """Whether all NetCDF outputs exist and verify (collective)."""
    from twin.io.netcdf import verify_netcdf

    ok = all((s.exp_dir / n).is_file() and verify_netcdf(s.exp_dir / n)[0] for n in layout.OUTPUTS) \
        if rank_of(s.comm) == 0 else False
    return s.comm.bcast(ok, root=0) if s.comm is not None and s.comm.Get_size() > 1 else ok
