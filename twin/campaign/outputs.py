"""The NetCDF outputs of an experiment: ``diagnostics.nc`` (one record per cycle or iteration, from the records the
checkpoints carry) and the ensemble files ``posterior.nc`` and ``forecast.nc`` from whole arrays.

The records live in the checkpoints' metadata, so ``diagnostics.nc`` can always be rewritten from the checkpoints: a
resumed run leaves exactly the file an uninterrupted one would. A filter's checkpoint ``k + 1`` carries the record
of cycle ``k`` alone (meta ``record``; its size does not grow with the cycle count: 1000 cycles of a 40-variable
model wrote 280 MB of histories before); ES-MDA's and 4D-Var's checkpoints carry their whole (short) history
(``history``: iterations, windows). Checkpoints written before carry ``history`` in filters too, and are read alike.

Fields on their own coordinates (:func:`field_blocks`): a single model's state is one block on the model's grid
(variables named after its state, ``x``, ``y``, ``z`` coordinates, :func:`twin.io.netcdf.write_ensemble`); a coupled
model's natural-order state (:class:`twin.campaign.state.CoupledState`: the components one after another) is split
into one block per component, whose variables ``<component>_<state>`` lie on that component's own dimensions and
coordinates ``<component>_x``, ``<component>_y`` in its length units (:func:`fields_dataset`), never on the index of
the concatenated state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

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
    "n_rejected_background": ("observations left out by the background check (assimilation.background_check)",
                              "1"),
    # observation files: what their quality control left out in each cycle (twin.observations.file_network)
    "n_rejected_outside_domain": ("observations of the cycle from files outside the model's domain", "1"),
    "n_rejected_range": ("observations of the cycle from files outside their variable's range", "1"),
    "n_rejected_duplicate": ("observations of the cycle from files repeating an earlier one", "1"),
    "n_rejected_thinned": ("observations of the cycle from files thinned or superseded by a later report", "1"),
    "n_rejected_superobs": ("observations of the cycle from files averaged into super-observations", "1"),
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
    records = diagnostics_count(s.exp_dir / "diagnostics.nc", s.comm)
    if records == len(history):
        return
    if records == len(history) - 1:
        _write_records(s, history[-1:], meta=meta)
    else:
        _write_records(s, history, fresh=True, meta=meta)


def _write_records(s: Setup, records: list[dict[str, Any]], fresh: bool = False, meta: dict | None = None) -> None:
    """Append ``records`` to ``diagnostics.nc`` (``fresh``: to a new file, replacing the one there). Collective."""
    path = s.exp_dir / "diagnostics.nc"
    if fresh and rank_of(s.comm) == 0 and path.exists():
        path.unlink()
    if not records:
        return
    f = diagnostics_file(s, path)
    f.meta.update(meta or {})
    _, scale = time_encoding(s.get_model(), s.cfg.timeline.calendar_start)
    f.extend([(rec["time"] * scale, {k: v for k, v in rec.items() if k not in ("cycle", "time")}, rec["cycle"])
              for rec in records])


def cycle_record(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The diagnostics record a filter checkpoint carries: that of the cycle it ends (``None`` at cycle 0)."""
    if "record" in meta:
        return meta["record"]
    history = meta.get("history") or []  # written before records were kept one per checkpoint
    return history[-1] if history else None


def records_between(s: Setup, first: int, last: int) -> list[dict[str, Any]]:
    """The diagnostics records of cycles ``first .. last`` from the checkpoints that hold them: checkpoints
    ``first + 1 .. last + 1`` and the trails of those written after cycles that have none
    (:mod:`twin.campaign.checkpoints`). Collective.

    Raises
    ------
    WorkflowError
        When no checkpoint holds the record of one of those cycles.
    """
    from twin.campaign.checkpoints import checkpoint_cycles, reader
    from twin.core.errors import WorkflowError

    found: dict[int, dict[str, Any]] = {}
    for k, path in checkpoint_cycles(s.exp_dir, s.comm):
        if k <= first:
            continue
        with reader(path, s.comm) as r:
            meta = r.meta
        for rec in list(meta.get("trail", [])) + [cycle_record(meta)]:
            if rec is not None and first <= int(rec["cycle"]) <= last:
                found[int(rec["cycle"])] = rec
        if k > last:
            break
    missing = [k for k in range(first, last + 1) if k not in found]
    if missing:
        raise WorkflowError(f"experiment {s.name}: no checkpoint holds the diagnostics of cycle(s) "
                            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return [found[k] for k in range(first, last + 1)]


def append_cycle_records(s: Setup, records: list[dict[str, Any]]) -> None:
    """Make ``diagnostics.nc`` hold the records of cycles ``0 ..`` the last of ``records`` (consecutive cycles) of a
    filter campaign: append what it lacks, the records before ``records`` read from their checkpoints (the online
    driver appends every few seconds, so a killed run's file may be behind), or rebuild it from the checkpoints when
    it is ahead or unreadable (a resume from an earlier cycle). Collective."""
    if not records:
        return
    first, last = int(records[0]["cycle"]), int(records[-1]["cycle"])
    count = diagnostics_count(s.exp_dir / "diagnostics.nc", s.comm)
    if count == last + 1:
        return
    if 0 <= count < first:
        _write_records(s, records_between(s, count, first - 1) + records)
    elif first <= count <= last:
        _write_records(s, records[count - first:])
    else:
        _write_records(s, records_between(s, 0, first - 1) + records, fresh=True)


def state_units(model) -> tuple[str | None, str]:
    """The one unit of the model's state variables, or ``None`` when they have different ones (h in m, u in m/s),
    and the variables with their units (``"h [m], u [m/s], v [m/s]"``): the units of diagnostics over the whole state
    (RMSE, spread, innovations), which an aggregate of different units has none of
    (:func:`twin.io.netcdf.of_state`)."""
    parts = getattr(model, "models", None)  # a coupled model's state: its components' variables (it has none)
    if isinstance(parts, dict) and parts:
        names = [f"{c}.{n}" for c, m in parts.items() for n in m.state_names]
        units = [u for m in parts.values() for u in m.state_units]
    else:
        names, units = list(model.state_names), list(model.state_units)
    return (units[0] if len(set(units)) == 1 else None), ", ".join(f"{n} [{u}]" for n, u in zip(names, units))


def diagnostics_file(s: Setup, path):
    """The :class:`~twin.io.netcdf.DiagnosticsFile` of an experiment with the metadata of every diagnostic its
    analysis writes."""
    from twin.io.netcdf import DiagnosticsFile, VariableMeta

    from twin.io.netcdf import of_state

    model = s.get_model()
    units, mix = state_units(model)
    extra = {k: of_state(VariableMeta(ln, u), units, mix) for k, (ln, u) in EXTRA_DIAGNOSTICS.items()}
    single = getattr(s.cfg.assimilation, "method", None) == "4dvar"  # one analysis, no ensemble to average
    for p in model.estimable():
        extra[f"parameter_{p.name}"] = VariableMeta(
            f"{'MAP estimate (4D-Var analysis)' if single else 'ensemble mean'} of parameter {p.name}", p.units)
    if guarded.settings(s.cfg) is not None:
        from twin.decision.guardrails import diagnostics_variables

        extra.update(diagnostics_variables())
    time_units, _ = time_encoding(model, s.cfg.timeline.calendar_start)
    return DiagnosticsFile(path, s.comm, provenance=s.provenance(), variables=extra, state_units=units, state_mix=mix,
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
    model = s.get_model()
    _, scale = time_encoding(model, s.cfg.timeline.calendar_start)
    prov = s.provenance(parent)
    n = model.grid.size * model.grid.dof
    root = rank_of(s.comm) == 0
    P = np.asarray(posterior).reshape(posterior.shape[:2] + (n,)) if root else None
    F = np.asarray(forecast).reshape(forecast.shape[:2] + (n,)) if root else None
    write_state_ensemble(s, s.exp_dir / "posterior.nc", P, np.asarray(posterior_times) * scale, kind="posterior",
                         title=f"twin posterior ensemble of experiment {s.name}", provenance=prov)
    write_state_ensemble(s, s.exp_dir / "forecast.nc", F, np.asarray(forecast_times) * scale, kind="forecast",
                         title=f"twin forecast ensemble of experiment {s.name}", provenance=prov)


def outputs_valid(s: Setup) -> bool:
    """Whether all NetCDF outputs exist and verify (collective)."""
    from twin.io.netcdf import verify_netcdf

    ok = all((s.exp_dir / n).is_file() and verify_netcdf(s.exp_dir / n)[0] for n in layout.OUTPUTS) \
        if rank_of(s.comm) == 0 else False
    return s.comm.bcast(ok, root=0) if s.comm is not None and s.comm.Get_size() > 1 else ok


# -- fields on their own coordinates ----------------------------------------------------------------------------------
#: state names that would clash with a coordinate of the file: prefixed with the component
_RESERVED = ("x", "y", "z", "time", "member")
_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class FieldBlock:
    """One component's share of a natural-order state vector.

    Attributes
    ----------
    component : str or None
        The coupled component (``None``: the state of a single model).
    entries : slice
        Where the block sits in the whole state; its natural order is point-major with the dof fastest.
    grid : twin.core.grid.Grid
    names, units : tuple of str
        File variable name and units of each dof.
    state_names : tuple of str
        The model's own name of each dof.
    dims : tuple of str
        Spatial dimensions in file order (``([z,] y, x)``, prefixed with the component for a coupled model).
    length_units : str
    """

    component: str | None
    entries: slice
    grid: Any
    names: tuple[str, ...]
    units: tuple[str, ...]
    dims: tuple[str, ...]
    length_units: str
    state_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """The block's spatial shape in file order, with a trailing dof axis when it has several."""
        return tuple(self.grid.shape[::-1]) + ((self.grid.dof,) if self.grid.dof > 1 else ())

    def split(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """``(..., n_state)`` whole states -> variable name -> ``(...) + spatial`` arrays of this block."""
        values = np.asarray(values)
        lead = values.shape[:-1]
        a = values[..., self.entries].reshape(lead + self.shape)
        if self.grid.dof == 1:
            return {self.names[0]: a}
        return {name: a[..., c] for c, name in enumerate(self.names)}


def _names(model, prefix: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names, units = [], []
    for c, state_name in enumerate(model.state_names):
        units.append(model.state_units[c] if c < len(model.state_units) else "1")
        if prefix is not None:  # "<component>_x" is a coordinate: a state named x is "<component>_state_x"
            names.append(f"{prefix}_state_{state_name}" if state_name in _RESERVED else f"{prefix}_{state_name}")
        else:  # a state named like a coordinate (Lorenz-96's x) is prefixed with the component
            names.append(f"{model.name}_{state_name}" if state_name in _RESERVED else state_name)
    return tuple(names), tuple(units)


def field_blocks(model) -> list[FieldBlock]:
    """The blocks of ``model``'s natural-order state: one on the model's grid, or one per component of a coupled
    model (an object with ``blocks`` (component -> slice) and ``models`` (component -> model))."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, dict):
        grid = model.grid
        names, units = _names(model, None)
        n = grid.size * grid.dof
        return [FieldBlock(None, slice(0, n), grid, names, units, tuple(reversed(_AXES[:grid.dim])),
                           getattr(model, "length_units", "m"), tuple(model.state_names))]
    out = []
    for comp, entries in blocks.items():
        m = model.models[comp]
        names, units = _names(m, comp)
        dims = tuple(f"{comp}_{a}" for a in reversed(_AXES[:m.grid.dim]))
        out.append(FieldBlock(comp, entries, m.grid, names, units, dims, getattr(m, "length_units", "m"),
                              tuple(m.state_names)))
    return out


def _coordinates(block: FieldBlock) -> dict[str, tuple]:
    grid = block.grid
    where = "cell centre" if grid.centering == "cell" else "node"
    of = f" of {block.component}" if block.component else ""
    coords = {}
    for axis, dim in zip(range(grid.dim), reversed(block.dims)):
        name = _AXES[axis]
        attrs = {"long_name": f"{name} coordinate of {where}{of}", "units": block.length_units}
        attrs.update({"axis": "Z", "positive": "up"} if name == "z" else
                     {"axis": name.upper(), "standard_name": f"projection_{name}_coordinate"})
        coords[dim] = (dim, grid.axis_coordinates(axis), attrs)
    return coords


def fields_dataset(model, values: np.ndarray, lead: Mapping[str, tuple], *,
                   statistics: Mapping[str, tuple[str, str]] | None = None, what: str = ""):
    """An xarray Dataset of whole states on each block's own coordinates (:func:`field_blocks`).

    Parameters
    ----------
    values : ndarray ``(*lead sizes, n_state)`` or mapping suffix -> such arrays
        Whole states in natural order; with ``statistics``, one array per suffix.
    lead : mapping
        The leading dimensions in order: name -> ``(values, attrs)`` of their coordinate (``member``, ``time``).
    statistics : mapping, optional
        ``suffix -> (long-name prefix, cell_methods)``: one variable ``<name>_<suffix>`` per statistic of ``values``.
    what : str
        Appended to every long name (``"of the posterior ensemble"``).
    """
    import xarray as xr

    lead_dims = tuple(lead)
    arrays = values if statistics else {"": values}
    data_vars, coords = {}, {d: (d, np.asarray(v), dict(a)) for d, (v, a) in lead.items()}
    for block in field_blocks(model):
        coords.update(_coordinates(block))
        dims = lead_dims + block.dims
        for suffix, array in arrays.items():
            for name, part in block.split(array).items():
                units = block.units[block.names.index(name)]
                state = block.state_names[block.names.index(name)] if block.component else name
                of = f" of {block.component}" if block.component else ""
                if statistics:
                    prefix, method = statistics[suffix]
                    attrs = {"long_name": f"{prefix} {state}{of} {what}".strip(), "units": units,
                             "cell_methods": method}
                    data_vars[f"{name}_{suffix}"] = (dims, part, attrs)
                else:
                    data_vars[name] = (dims, part, {"long_name": f"{state}{of} {what}".strip(), "units": units})
    return xr.Dataset(data_vars, coords=coords)


def write_fields(path, ds, comm, *, kind: str, title: str, provenance, sensitive: bool, complevel: int = 1) -> None:
    """Write a :func:`fields_dataset` with the global attributes and data digest of every twin file (rank 0,
    atomically; collective). Data variables are compressed, chunked one leading index at a time."""
    from twin.io.atomic import atomic_output
    from twin.io.netcdf import global_attributes, record_checksum

    if rank_of(comm) == 0:
        ds.attrs.update(global_attributes(kind, title, provenance))
        encoding = {name: {"zlib": complevel > 0, "complevel": int(complevel), "_FillValue": np.nan,
                           "chunksizes": tuple(1 if d in ("member", "time") else n
                                               for d, n in zip(var.dims, var.shape))}
                    for name, var in ds.data_vars.items()}
        encoding.update({name: {"_FillValue": None} for name in ds.coords})
    with atomic_output(path, comm, private=sensitive) as tmp:
        if rank_of(comm) == 0:
            ds.to_netcdf(tmp, mode="w", format="NETCDF4", engine="netcdf4", encoding=encoding)
            record_checksum(tmp)


def write_state_ensemble(s: Setup, path, values: np.ndarray | None, times: np.ndarray, *, kind: str, title: str,
                         provenance) -> None:
    """An ensemble file (``posterior.nc``, ``forecast.nc``) from whole states ``(member, time, n_state)`` in natural
    order (needed on rank 0 only), ``times`` already in the file's CF time units. A single model's file is
    :func:`twin.io.netcdf.write_ensemble`'s; a coupled model's has every component's fields on its own coordinates
    (:func:`fields_dataset`). Collective."""
    from twin.io.netcdf import VariableMeta, time_attributes, write_ensemble

    model = s.get_model()
    time_units, _ = time_encoding(model, s.cfg.timeline.calendar_start)
    blocks = field_blocks(model)
    if blocks[0].component is None:
        block = blocks[0]
        variables = {n: VariableMeta(f"{n} of {model.name}", u) for n, u in zip(block.names, block.units)}
        fields = block.split(values) if rank_of(s.comm) == 0 else None
        write_ensemble(path, model.grid, fields, times, comm=s.comm, variables=variables, kind=kind, title=title,
                       time_units=time_units, space_units=block.length_units, provenance=provenance,
                       sensitive=s.cfg.campaign.sensitive, complevel=s.cfg.outputs.compression)
        return
    ds = None
    if rank_of(s.comm) == 0:
        values = np.asarray(values)
        lead = {"member": (np.arange(values.shape[0], dtype=np.int32),
                           {"standard_name": "realization", "long_name": "ensemble member index", "units": "1"}),
                "time": (np.asarray(times, dtype=float), time_attributes(time_units))}
        ds = fields_dataset(model, values, lead, what=f"of the {kind} ensemble")
    write_fields(path, ds, s.comm, kind=kind, title=title, provenance=provenance,
                 sensitive=s.cfg.campaign.sensitive, complevel=s.cfg.outputs.compression)


