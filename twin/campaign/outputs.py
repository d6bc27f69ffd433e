"""Outputs of the campaign methods that are not cycled filters (ES-MDA, cycled 4D-Var): the diagnostics file rebuilt
from the history a checkpoint carries, and the ensemble NetCDF files from whole arrays.

The history (a list of per-cycle or per-iteration records) lives in the checkpoint's metadata, so ``diagnostics.nc``
can always be rewritten from the newest checkpoint: a resumed run leaves exactly the file an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.campaign import layout
from twin.campaign.steps import Setup, _rank, append_diagnostics, time_encoding

#: Diagnostics of ES-MDA and 4D-Var campaigns that are neither in twin.io.netcdf.DIAGNOSTICS nor in
#: twin.campaign.steps.EXTRA_DIAGNOSTICS: name -> (long name, units; "{state}" = the state's units).
METHOD_DIAGNOSTICS = {
    "iterations": ("minimiser iterations of the window", "1"),
    "converged": ("1 if the minimiser converged", "1"),
    "misfit": ("ensemble mean of the normalised data misfit |R^-1/2 (y - g(m))|^2 / n_obs", "1"),
    "alpha": ("ES-MDA inflation coefficient of the iteration (0: no update)", "1"),
    "iteration": ("ES-MDA iteration", "1"),
}


def write_diagnostics(s: Setup, history: list[dict[str, Any]]) -> None:
    """:func:`~twin.campaign.steps.append_diagnostics` with the metadata of the 4D-Var and ES-MDA diagnostics.
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
    time_units, scale = time_encoding(model)
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
    write_ensemble(s.exp_dir / "posterior.nc", grid, post if _rank(s.comm) == 0 else None,
                   np.asarray(posterior_times) * scale, kind="posterior",
                   title=f"twin posterior ensemble of experiment {s.name}", **common)
    write_ensemble(s.exp_dir / "forecast.nc", grid, fore if _rank(s.comm) == 0 else None,
                   np.asarray(forecast_times) * scale, kind="forecast",
                   title=f"twin forecast ensemble of experiment {s.name}", **common)


def outputs_valid(s: Setup) -> bool:
    """Whether all NetCDF outputs exist and verify (collective)."""
    from twin.io.netcdf import verify_netcdf

    ok = all((s.exp_dir / n).is_file() and verify_netcdf(s.exp_dir / n)[0] for n in layout.OUTPUTS) \
        if _rank(s.comm) == 0 else False
    return s.comm.bcast(ok, root=0) if s.comm is not None and s.comm.Get_size() > 1 else ok


def vec_from(grid, array):
    """A new global vector holding ``array`` (whole state, natural order)."""
    v = grid.create_global()
    grid.set_global(np.asarray(array, dtype=float), v)
    return v
