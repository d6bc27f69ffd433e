"""Building the observation networks of ``assimilation.observations`` on a model: one stacked linear operator.

Each network (:mod:`twin.config.observation_networks`) becomes a sparse matrix in the model grid's natural ordering
with its error standard deviations and positions; the campaign assimilates the networks together as one
:class:`~twin.assimilation.cycle.LinearObservations` whose rows are the networks' rows in the order given.
``network_slices`` of the result says which rows belong to which network (diagnostics, guardrails).

Every check runs here, before any forecast: positions inside the model domain (after unit conversion), components
and variables the model has, and unique network names. The network types of the kinds are built by the kinds'
``build`` (:class:`twin.core.kinds.NetworkType`), with the helpers here (:func:`positions`, :func:`scale`,
:func:`from_operator`), and check that they fit the model.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from twin.core.errors import ObservationError
from twin.core.kinds import reads_files  # noqa: F401  (the campaign layers ask it here)
from twin.core.units import convert
from twin.observations.base import (
    LinearObservations,
    grid_points,
    interpolation_matrix,
    natural_index,
)


def where(i: int) -> str:
    """The YAML path of network ``i`` (for error messages)."""
    return f"assimilation.observations[{i}]"


def positions(values, spec, model, i: int, what: str = "points") -> np.ndarray:
    """Positions of a network in the model's length units; refuses wrong dimensions and points outside."""
    p = np.atleast_2d(np.asarray(values, dtype=float))
    grid = model.grid
    if p.shape[1] != grid.dim:
        raise ObservationError(f"{where(i)}.{what}: {p.shape[1]} coordinates for a {grid.dim}-D domain")
    if spec.units:
        try:
            p = p * float(convert(1.0, spec.units, model.length_units))
        except ValueError as exc:
            raise ObservationError(f"{where(i)}.units: {exc}") from None
    if not np.all(np.isfinite(p)):
        raise ObservationError(f"{where(i)}.{what}: positions must be finite")
    inside = grid.contains(p)
    if not inside.all():
        j = int(np.flatnonzero(~inside)[0])
        given = f" (in {spec.units})" if spec.units else ""
        raise ObservationError(f"{where(i)}.{what}[{j}] = {np.asarray(values)[j].tolist()}{given} lies outside "
                               f"the model domain {[list(e) for e in grid.extent]} (in {model.length_units})")
    return p


def scale(spec, model) -> float:
    """Factor from the network's ``units`` to the model's length units."""
    return float(convert(1.0, spec.units, model.length_units)) if spec.units else 1.0


def _component(spec, model, i: int) -> int:
    dof = model.grid.dof
    if spec.variable is not None:
        names = list(getattr(model, "state_names", ()))
        if spec.variable not in names:
            raise ObservationError(f"{where(i)}.variable: '{spec.variable}' is not a state variable of model "
                                   f"'{model.name}'; it has {names}")
        return names.index(spec.variable)
    c = 0 if spec.component is None else int(spec.component)
    if c >= dof:
        raise ObservationError(f"{where(i)}.component: the model has {dof} state component(s), got component {c}")
    return c


def from_operator(op, name: str) -> LinearObservations:
    """The matrix, errors and positions of an observation operator object, which is then destroyed."""
    try:
        return LinearObservations(op.matrix, op.error_std, op.locations, name)
    finally:
        op.destroy()


def _build_one(spec, model, i: int, name: str) -> LinearObservations:
    grid = model.grid
    kind = spec.type
    if kind == "points":
        pts = positions(spec.points, spec, model, i)
        return LinearObservations(interpolation_matrix(grid, pts, _component(spec, model, i)), spec.error_std, pts,
                                  name)
    if kind == "all_points":
        comp = _component(spec, model, i)
        index = [c.ravel() for c in np.meshgrid(*[np.arange(n) for n in reversed(grid.shape)], indexing="ij")][::-1]
        cols = natural_index(grid, index, comp)
        m = cols.size
        H = sp.csr_matrix((np.ones(m), (np.arange(m), cols)), shape=(m, grid.size * grid.dof))
        return LinearObservations(H, spec.error_std, grid_points(grid), name)
    from twin.core.kinds import network_types

    declared = network_types().get(kind)
    if declared is not None:
        return declared.build(spec, model, i, name)
    raise ObservationError(f"{where(i)}.type: unknown network type {kind!r}")


def _embed(part: LinearObservations, offset: int, n: int) -> LinearObservations:
    """``part`` acting on a block at ``offset`` of a whole state of ``n`` entries (coupled models)."""
    H = part.matrix.tocoo()
    matrix = sp.csr_matrix((H.data, (H.row, H.col + offset)), shape=(H.shape[0], n))
    return LinearObservations(matrix, part.error_std, part.locations, part.name)


def _observed(spec, model, i: int, components) -> tuple[Any, int | None]:
    """The model network ``spec`` observes and the offset of its block in the whole state: ``model`` itself
    (offset ``None``) or, with ``spec.model``, that component of a coupled model (``components``: see
    :func:`build`)."""
    known = list(components or {})
    if spec.model is None:
        if components:
            raise ObservationError(f"{where(i)}.model: the campaign is coupled; name the component observed "
                                   f"(one of {known})")
        return model, None
    if spec.model not in known:
        raise ObservationError(f"{where(i)}.model: '{spec.model}' is not a component of the campaign's model"
                               + (f"; components are {known}" if known else " (the campaign is not coupled)"))
    return components[spec.model]


def _build_on(spec, model, i: int, name: str, components) -> LinearObservations:
    """One network on ``model``, or with ``spec.model`` on that component of a coupled model (embedded at the
    component's block of the whole natural-order state; ``components``: see :func:`build`)."""
    target, offset = _observed(spec, model, i, components)
    part = _build_one(spec, target, i, name)
    return part if offset is None else _embed(part, offset, model.grid.size * model.grid.dof)


class _OnCampaignClock:
    """A coupled campaign's component seen with the campaign's time units: the observation times of its files are
    placed on the campaign's cycles, which count in the first component's units (:class:`twin.coupling.coupled
    .CoupledModel`); everything else is the component's."""

    def __init__(self, model, time_units: str):
        self._model = model
        self.time_units = time_units

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def fault_offsets(networks: Sequence[Any], obs: LinearObservations, n_cycles: int) -> np.ndarray:
    """What the declared sensor faults (``fault:`` of a network) add to the synthetic observations: an array
    ``(n_cycles, n_obs)``, zero where no fault acts. ``obs`` is the stacked operator of :func:`build`."""
    out = np.zeros((int(n_cycles), obs.n_obs))
    for i, (spec, rows) in enumerate(zip(networks, obs.network_slices.values())):
        f = spec.fault
        if f is None:
            continue
        n_rows = rows.stop - rows.start
        if f.sensor >= n_rows:
            raise ObservationError(f"{where(i)}.fault.sensor: the network has {n_rows} observations, no sensor "
                                   f"{f.sensor}")
        k = np.arange(n_cycles)
        out[:, rows.start + f.sensor] = np.where(k >= f.start, f.bias + f.drift_per_cycle * (k - f.start + 1), 0.0)
    return out


def network_names(networks: Sequence[Any]) -> list[str]:
    """The name of each network: its ``name``, else its type (``<type>_<i>`` among several networks)."""
    return [spec.name or (spec.type if len(networks) == 1 else f"{spec.type}_{i}")
            for i, spec in enumerate(networks)]


def build(networks: Sequence[Any], model, components: Mapping[str, tuple[Any, int]] | None = None, *,
          cycle_edges: Sequence[float] | None = None, start=None, clock=None) -> LinearObservations:
    """The stacked observation operator of ``networks`` on ``model`` (collective: operators may build PETSc
    matrices). The result has ``network_slices``: ``{name: slice of rows}``, ``network_models``: ``{name:
    component observed}`` (``None`` on a single model), ``network_specs``: ``{name: network section}`` and
    ``components`` (as given; ``{}`` on a single model), which the export of a twin experiment's observations reads
    (:mod:`twin.observations.export`).

    ``components``: for a coupled model whose whole state (``model.grid``, natural order) concatenates its
    components' states, ``{component name: (component model, offset of its block)}``; every network then names the
    component it observes (``model:``) and its rows act on that block.

    ``cycle_edges`` (model time) and ``start`` (the calendar start, or ``None``) place the observations of ``file``
    networks in the campaign's cycles (:func:`twin.observations.file_network.series`); the result then also has
    ``file_series``: ``{name: FileSeries}`` with their values per cycle and quality control. With ``clock`` (a
    :class:`~twin.observations.file_network.StepClock`: ES-MDA and 4D-Var) instead, every observation of a file is
    placed at its own model step (:func:`twin.observations.file_network.timed`) and ``file_series`` holds
    :class:`~twin.observations.file_network.TimedSeries` (all of them together: :func:`timed_observations`)."""
    if not networks:
        raise ObservationError("assimilation.observations: no observation networks given")
    parts, names, files = [], [], {}
    for i, (spec, name) in enumerate(zip(networks, network_names(networks))):
        if name in names:
            raise ObservationError(f"{where(i)}.name: network name '{name}' is used twice; names must be unique")
        names.append(name)
        try:
            if reads_files(spec):
                files[name] = _file_series(spec, model, i, name, components, cycle_edges, start, clock)
                parts.append(files[name].observations)
            else:
                parts.append(_build_on(spec, model, i, name, components))
        except ObservationError as exc:
            msg = str(exc)
            raise ObservationError(msg if msg.startswith("assimilation.") else f"{where(i)} ({spec.type}): {msg}") \
                from None
    if len(parts) == 1:
        out = parts[0]
    else:
        locs = [p.locations for p in parts]
        have = [loc is not None for loc in locs]
        locations = np.concatenate(locs) if all(have) else None
        out = LinearObservations(sp.vstack([p.matrix for p in parts]).tocsr(),
                                 np.concatenate([p.error_std for p in parts]), locations,
                                 "+".join(names))
    bounds = np.cumsum([0] + [p.n_obs for p in parts])
    out.network_slices = {n: slice(int(a), int(b)) for n, a, b in zip(names, bounds[:-1], bounds[1:])}
    out.network_models = {n: spec.model for n, spec in zip(names, networks)}
    out.network_specs = dict(zip(names, networks))
    out.components = dict(components or {})
    out.file_series = files
    return out


def _declared_reader(spec):
    """The kind's declaration of network type ``spec.type`` when it reads measured observations from files
    (:class:`twin.core.kinds.NetworkType` with ``read``), else ``None``."""
    from twin.core.kinds import network_types

    declared = network_types().get(getattr(spec, "type", None))
    return declared if declared is not None and declared.read is not None else None


def _file_series(spec, whole, i: int, name: str, components, cycle_edges, start, clock=None):
    """The :class:`~twin.observations.file_network.FileSeries` (with ``cycle_edges``) or
    :class:`~twin.observations.file_network.TimedSeries` (with ``clock``) of a ``file`` network or a kind's network
    read from files: its ``file`` and then its ``deliveries`` read as one table
    (:func:`twin.observations.files.read_network_file`); ``parts`` of the result name each file with its SHA-256 and
    its rows in that table, ``dropped`` the values each file's reader counted missing (:func:`file_records`).

    On a coupled model (``components``) the network names its component (``model:``, refused as for synthetic
    networks, :func:`_build_on`): the files are read, checked and placed in the cycles on that component (its
    variables, units, domain; times in the campaign's time units) and the rows of the result act on the component's
    block of the whole state, exactly as a synthetic network's rows on that component."""
    from twin.observations.file_network import series, timed
    from twin.observations.files import read_network_file

    if cycle_edges is None and clock is None:
        raise ObservationError(f"{where(i)}: an observation file needs the campaign's cycles or observation times")
    model, offset = _reading(spec, whole, components, i)
    declared = _declared_reader(spec)
    if declared is not None:  # a kind's network of measured observations (twin.core.kinds.NetworkType.read)
        tables = [declared.read(spec, path, model, start) for path in spec.files()]
        checks = {} if declared.sites is None else {"sites": partial(declared.sites, spec)}
    else:
        tables = [read_network_file(spec, path, model, start) for path in spec.files()]
        checks = quality_control(spec, model, i)
    table = _concatenate_files(tables)
    try:
        fs = timed(table, model, clock, name, **checks) if clock is not None else \
            series(table, model, cycle_edges, name, **checks)
    except ValueError as exc:
        msg = str(exc)
        raise ObservationError(f"{where(i)}.{msg}" if msg.startswith("superobs:") else msg) from None
    if offset is not None:
        fs.observations = _embed(fs.observations, offset, whole.grid.size * whole.grid.dof)
    bounds = np.cumsum([0] + [len(t) for t in tables])
    fs.parts = [(t.source, t.sha256, slice(int(a), int(b))) for t, a, b in zip(tables, bounds[:-1], bounds[1:])]
    fs.dropped = [int(sum(t.missing.values())) for t in tables]
    return fs


def quality_control(spec, model, i: int) -> dict:
    """The optional checks of a ``file`` network for :func:`~twin.observations.file_network.series` and
    :func:`~twin.observations.file_network.timed`: ``ranges`` (``{variable: (low, high)}``, the variables'
    ``range``) and the ``thinning`` or ``superobs`` box side in the model's length units."""
    out: dict = {"ranges": {v: f.bounds() for v, f in spec.variables.items() if f.range is not None}}
    for key in ("thinning", "superobs"):
        box = getattr(spec, key, None)
        if box is None:
            continue
        try:
            out[key] = float(convert(box.spacing, box.units, model.length_units)) if box.units else float(box.spacing)
        except ValueError as exc:
            raise ObservationError(f"{where(i)}.{key}.units: {exc}") from None
    return out


def timed_observations(obs) -> dict[str, np.ndarray]:
    """Every observation of the ``file`` networks of ``obs`` (built with a ``clock``, :func:`build`) as one list
    ordered by model step, then row of ``obs``, then file row: arrays ``step`` (model step), ``row`` (row of the
    stacked operator ``obs``), ``value`` and ``error`` (standard deviation)."""
    parts = [(fs.step, fs.site + obs.network_slices[name].start, fs.value, fs.error, fs.row)
             for name, fs in (getattr(obs, "file_series", None) or {}).items()]
    step, row, value, error, file_row = (np.concatenate(a) for a in zip(*parts))
    order = np.lexsort((file_row, row, step))
    return {"step": step[order].astype(np.int64), "row": row[order].astype(np.int64), "value": value[order],
            "error": error[order]}


def reading_model(spec, whole, components=None, i: int = 0):
    """The model the files of network ``spec`` are read on: ``whole``, or on a coupled model (``components``, see
    :func:`build`) the component the network names, on the campaign's clock (as :func:`build` reads them)."""
    return _reading(spec, whole, components, i)[0]


def _reading(spec, whole, components, i: int):
    """:func:`reading_model` and the offset of the component's block in the whole state (``None``: one model)."""
    model, offset = _observed(spec, whole, i, components)
    if offset is not None and model.time_units != whole.time_units:
        model = _OnCampaignClock(model, whole.time_units)
    return model, offset


def read_file(spec, path, model, start):
    """One file of the network ``spec`` read for ``model`` (:func:`reading_model`): a ``file`` network's
    (:func:`twin.observations.files.read_network_file`) or a kind's network of measured observations (its ``read``,
    :class:`twin.core.kinds.NetworkType`)."""
    from twin.observations.files import read_network_file

    declared = _declared_reader(spec)
    if declared is not None:
        return declared.read(spec, path, model, start)
    return read_network_file(spec, path, model, start)


def _concatenate_files(tables):
    """The observations of several files of one network as one table, in the order given (the first file's source
    and checksum; missing values summed per variable)."""
    from twin.observations.table import ObservationTable

    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    for t in tables[1:]:
        if t.position.shape[1] != first.position.shape[1]:
            raise ObservationError(f"observation file {t.source}: positions have {t.position.shape[1]} coordinates, "
                                   f"those of {first.source} {first.position.shape[1]}: a network's files share "
                                   "one layout")
        if sorted(t.auxiliary) != sorted(first.auxiliary):
            raise ObservationError(f"observation file {t.source}: auxiliary variables {sorted(t.auxiliary)}, those of "
                                   f"{first.source} {sorted(first.auxiliary)}: a network's files share one layout")
    missing: dict[str, int] = {}
    for t in tables:
        for k, v in t.missing.items():
            missing[k] = missing.get(k, 0) + int(v)
    return ObservationTable(np.concatenate([t.time for t in tables]),
                            np.concatenate([t.position for t in tables], axis=0),
                            np.concatenate([t.variable for t in tables]), np.concatenate([t.value for t in tables]),
                            np.concatenate([t.error for t in tables]), np.concatenate([t.row for t in tables]),
                            first.source, first.sha256, {k: v for t in tables for k, v in t.units.items()}, missing,
                            first.time_units, first.length_units,
                            {k: np.concatenate([t.auxiliary[k] for t in tables]) for k in first.auxiliary})


def file_records(obs) -> list[dict]:
    """Every observation file of the ``file`` networks of ``obs`` (the result of :func:`build`), in order: its
    network, path, SHA-256 and quality-control counts (``{check: observations}``, :data:`twin.observations.qc
    .FLAGS`; ``missing`` includes the values the reader left out: ``_FillValue``, NaN, outside ``valid_range``), as
    ``observations.h5`` and the report keep them. A network with ``superobs`` adds ``superobservations``: how many
    super-observations replaced the reports flagged ``superobs`` (each counted with the file of its first report)."""
    from twin.observations.qc import FLAGS, NAMES

    out = []
    for name, fs in (getattr(obs, "file_series", None) or {}).items():
        parts = getattr(fs, "parts", None) or [(fs.source, fs.sha256, slice(0, fs.qc.flags.size))]
        dropped = list(getattr(fs, "dropped", None) or []) or [0] * len(parts)
        superobs = getattr(fs, "superobs_rows", None)
        for (source, sha, rows), gone in zip(parts, dropped):
            c = np.bincount(fs.qc.flags[rows], minlength=len(FLAGS))
            counts = {NAMES[i]: int(c[i]) for i in range(len(FLAGS))}
            counts["missing"] += int(gone)
            record = {"network": name, "file": source, "sha256": sha, "qc": counts}
            if superobs is not None:
                record["superobservations"] = int(np.count_nonzero((superobs >= rows.start) & (superobs < rows.stop)))
            out.append(record)
    return out
