"""The HDF5 files of an experiment's ensemble (:mod:`twin.io.checkpoint`): ensemble checkpoints (every member's state
and estimable parameters, the ``alive`` flags and the metadata the next step needs) and member files (one member's
forecast), read back as whole states in natural order and physical parameter values.

An ensemble checkpoint written after cycles that have none (``outputs.checkpoint_every``, the online driver's) also
holds their *trail*: the arrays ``trail_cycles`` (the checkpoint numbers ``k`` of those analyses, oldest first),
``trail_alive`` (``k x member``), ``trail_states`` (``k x member x whole state``: the analyses) and ``trail_forecast``
(the forecasts of the cycles ending there, NaN rows for members without one), and the meta entry ``trail`` (their
diagnostics records). :func:`read_cycles` gives every analysis a checkpoint holds, its own and its trail's.

Field parameters live on their own (dof-1) grids (:func:`twin.campaign.state.field_grid`; a coupled model's fields are
not on its state grid), which are kept alive until a file is written.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from twin.campaign.state import field_grid
from twin.core.errors import OutputError, WorkflowError
from twin.core.log import get_logger

log = get_logger("twin.campaign")

#: Files smaller than this are written by rank 0 and read independently by every rank: opening a file with the
#: ``mpio`` driver costs ~0.2 s per collective open on a laptop, far more than moving a few MB through rank 0.
PARALLEL_HDF5_BYTES = 64 * 2**20


def parallel_io(path_or_bytes) -> bool | None:
    """``False`` (serial HDF5) for small files, ``None`` (parallel when available) for large ones."""
    size = Path(path_or_bytes).stat().st_size if not isinstance(path_or_bytes, int) else path_or_bytes
    return None if size > PARALLEL_HDF5_BYTES else False


def reader(path, comm, verify: bool = True):
    """A verified :class:`~twin.io.checkpoint.CheckpointReader` with serial or parallel HDF5 by file size."""
    from twin.io.checkpoint import CheckpointReader

    parallel = parallel_io(path) if Path(path).is_file() else False
    if comm is not None and comm.Get_size() > 1:
        parallel = comm.bcast(parallel, root=0)
    return CheckpointReader(path, comm, verify=verify, parallel=parallel)


def is_valid_checkpoint(path, comm) -> bool:
    """Whether ``path`` exists and passes full verification (collective)."""
    exists = Path(path).is_file()
    if comm is not None and comm.Get_size() > 1:
        exists = comm.bcast(exists, root=0)
    if not exists:
        return False
    try:
        reader(path, comm).close()
    except OutputError as exc:
        log.warning("will recompute: %s", exc)
        return False
    return True


def vec_from(grid, array):
    """A new global vector of ``grid`` holding ``array`` (whole state, natural order)."""
    v = grid.create_global()
    grid.set_global(np.asarray(array, dtype=float), v)
    return v


def destroy_all(vecs) -> None:
    for v in vecs:
        v.destroy()


def _parameters(s, params: Sequence[dict[str, Any]], grids: ExitStack, keep: list, ensemble: bool) -> dict[str, Any]:
    """The ``parameters`` argument of :func:`~twin.io.checkpoint.write_checkpoint` for the members' physical values
    ``params``: for an ``ensemble`` scalars as arrays over members and fields as lists of vectors on their own grids
    (entered into ``grids``; the vectors are appended to ``keep`` for the caller to destroy), for a member file (one
    member) the scalar and the vector themselves."""
    model = s.get_model()
    out: dict[str, Any] = {}
    for p in model.estimable():
        values = [pm[p.name] for pm in params]
        if p.is_field:
            pgrid = grids.enter_context(field_grid(model, p.name))
            fv = [vec_from(pgrid, v) for v in values]
            keep += fv
            out[p.name] = (pgrid, fv if ensemble else fv[0])
        else:
            out[p.name] = np.array([float(np.asarray(v).reshape(())) for v in values]) if ensemble else values[0]
    return out


#: the arrays of a checkpoint's trail (the analyses of the cycles since the previous checkpoint)
TRAIL_ARRAYS = ("trail_cycles", "trail_alive", "trail_states", "trail_forecast")


def trail_contents(trail) -> tuple[dict[str, np.ndarray], list]:
    """The trail arrays (:data:`TRAIL_ARRAYS`) and diagnostics records of ``trail``: the analyses since the previous
    checkpoint, oldest first, as :func:`twin.campaign.steps.analyse` returned them (``cycle``, ``alive``,
    ``states``, ``meta["record"]``, ``forecast``). Empty for an empty trail."""
    if not trail:
        return {}, []
    states = np.stack([np.asarray(p.states, dtype=float).reshape(len(p.alive), -1) for p in trail])
    forecast = np.stack([np.asarray(p.forecast, dtype=float).reshape(states.shape[1:]) if p.forecast is not None
                         else np.full(states.shape[1:], np.nan) for p in trail])
    arrays = {"trail_cycles": np.array([p.cycle for p in trail], dtype=np.int64),
              "trail_alive": np.stack([np.asarray(p.alive, dtype=bool) for p in trail]),
              "trail_states": states, "trail_forecast": forecast}
    return arrays, [p.meta.get("record") for p in trail]


@dataclass(frozen=True)
class Stored:
    """One analysis as a checkpoint holds it (:func:`read_cycles`): the ``alive`` flags, the members' states
    (``member x whole state``), the ``meta`` (the checkpoint's own; ``{"record": ...}`` for a cycle of its trail) and
    the forecasts of the cycle that ends there (``None`` when the checkpoint keeps none)."""

    alive: np.ndarray
    states: np.ndarray
    meta: dict
    forecast: np.ndarray | None


def read_cycles(s, r) -> dict[int, Stored]:
    """Every analysis the open ensemble checkpoint ``r`` holds, by checkpoint number: its own and its trail's."""
    model = s.get_model()
    names = r.array_names
    alive = r.read_array("alive").astype(bool)
    states = np.asarray(r.read_field(model.name), dtype=float).reshape(alive.size, -1)
    meta = r.meta
    out = {int(r.cycle): Stored(alive, states, meta, r.read_array("forecast") if "forecast" in names else None)}
    if "trail_cycles" in names:
        cycles, alives = r.read_array("trail_cycles"), r.read_array("trail_alive").astype(bool)
        xs, fs = r.read_array("trail_states"), r.read_array("trail_forecast")
        records = meta.get("trail", [])
        if not (len(cycles) == len(alives) == len(xs) == len(fs) == len(records)):
            raise OutputError(f"checkpoint {r.path}: its trail arrays and records disagree in length")
        for i, k in enumerate(cycles.tolist()):
            out[int(k)] = Stored(alives[i], xs[i], {"record": records[i]}, fs[i])
    return out


def checkpoint_cycles(exp_dir, comm=None) -> list[tuple[int, Path]]:
    """``(cycle, path)`` of an experiment's checkpoints, oldest first (rank 0's listing). Collective when ``comm``
    has more than one rank."""
    from twin.io.checkpoint import list_checkpoints

    found = None
    if comm is None or comm.Get_rank() == 0:
        found = [(k, str(p)) for k, p in list_checkpoints(Path(exp_dir) / "checkpoint")]
    if comm is not None and comm.Get_size() > 1:
        found = comm.bcast(found, root=0)
    return [(k, Path(p)) for k, p in found]


def holding(exp_dir, cycle: int, comm=None, found=None) -> Path | None:
    """The checkpoint that holds the analysis of checkpoint number ``cycle``: its own, else the first after it (whose
    trail holds it); ``None`` when there is none. ``found``: :func:`checkpoint_cycles` of ``exp_dir``, listed here
    when not given (collective)."""
    found = checkpoint_cycles(exp_dir, comm) if found is None else found
    return next((p for k, p in found if k >= cycle), None)


class CycleStore:
    """The analyses of an experiment by checkpoint number, as :func:`twin.campaign.finalize.finalize` takes them
    (``known``): those held in memory (``known``: :func:`twin.campaign.steps.analyse`'s results), the others read
    from the checkpoint that holds them (its own, or the trail of the next one), one checkpoint's contents kept at
    a time. ``get`` is collective (call it with the same numbers on every rank)."""

    def __init__(self, s, comm, known=None):
        self.s, self.comm, self.known = s, comm, known or {}
        self._read: dict[int, Stored] = {}
        self._found = None

    def get(self, cycle: int, default=None):
        """The analysis of checkpoint number ``cycle`` (``default`` when no checkpoint holds it)."""
        if cycle in self.known:
            return self.known[cycle]
        if cycle not in self._read:
            if self._found is None:
                self._found = checkpoint_cycles(self.s.exp_dir, self.comm)
            path = holding(self.s.exp_dir, cycle, found=self._found)
            if path is None:
                return default
            with reader(path, self.comm) as r:
                self._read = read_cycles(self.s, r)
        return self._read.get(cycle, default)


def write_ensemble_checkpoint(s, path, cycle: int, t: float, states, params, alive, meta, prov,
                              forecast=None, durable: bool = True, trail=()) -> str:
    """Checkpoint ``cycle`` at time ``t`` of the whole ensemble: ``states`` (whole states, natural order) and
    ``params`` (physical values) of every member, the ``alive`` flags and ``meta``; ``forecast``: the members'
    forecasts of the cycle that ends here (member x whole state, NaN rows for members without one), kept as the array
    ``forecast`` when the online driver held them in memory (:func:`cycle_forecasts`). ``durable=False``: flushed
    to stable storage by the next :func:`twin.io.atomic.make_durable` (the online driver's, every few seconds).
    ``trail``: the analyses since the previous checkpoint, not written (see the module docstring). Collective."""
    from twin.io.checkpoint import write_checkpoint

    model = s.get_model()
    grid = model.grid
    nbytes = 8 * len(states) * grid.size * grid.dof * (2 if forecast is not None else 1)
    parallel = parallel_io(nbytes)
    # whole states (every rank has them) go to rank 0's serial writer as they are; parallel HDF5 writes vectors
    vecs = [vec_from(grid, x) for x in states] if parallel is None else []
    field_vecs: list = []
    arrays = {"alive": np.asarray(alive, dtype=bool)}
    if forecast is not None:
        arrays["forecast"] = np.asarray(forecast, dtype=float)
    trail_arrays, records = trail_contents(trail)
    if trail_arrays:
        arrays.update(trail_arrays)
        meta = dict(meta, trail=records)
    try:
        with ExitStack() as grids:
            parameters = _parameters(s, params, grids, field_vecs, ensemble=True)
            ensemble = vecs or np.asarray(states, dtype=float).reshape(len(states), -1)
            return write_checkpoint(path, s.comm, cycle=cycle, time=t, fields={model.name: (grid, ensemble)},
                                    parallel=parallel,
                                    parameters=parameters, arrays=arrays,
                                    meta=meta, provenance=prov, sensitive=s.cfg.campaign.sensitive,
                                    durable=durable)
    finally:
        destroy_all(vecs)
        destroy_all(field_vecs)


def write_member_file(s, path, comm, cycle: int, t: float, states, params: dict[str, Any], member: int, prov,
                      parallel=False) -> str:
    """A member file: one member's ``states`` (a PETSc vector on the model grid, or a list of them for a trajectory)
    and its physical parameter values ``params``, with ``meta = {"member": member}``. Collective on ``comm``."""
    from twin.io.checkpoint import write_checkpoint

    model = s.get_model()
    field_vecs: list = []
    try:
        with ExitStack() as grids:
            parameters = _parameters(s, [params], grids, field_vecs, ensemble=False)
            return write_checkpoint(path, comm, cycle=cycle, time=t, fields={model.name: (model.grid, states)},
                                    parallel=parallel, parameters=parameters, meta={"member": member},
                                    provenance=prov, sensitive=s.cfg.campaign.sensitive)
    finally:
        destroy_all(field_vecs)


def read_members(s, reader, members) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Whole states and physical parameter values of ``members`` from an ensemble checkpoint (every rank)."""
    model = s.get_model()
    states_all = reader.read_field(model.name)
    scalars = reader.scalar_parameters
    fields = {p.name: reader.read_field(p.name, "parameters") for p in model.estimable() if p.is_field}
    states, params = [], []
    for m in members:
        states.append(states_all[m].ravel())
        pm = {}
        for p in model.estimable():
            pm[p.name] = fields[p.name][m].ravel() if p.is_field else float(np.asarray(scalars[p.name])[m])
        params.append(pm)
    return states, params


def read_member(s, reader) -> tuple[np.ndarray, dict[str, Any]]:
    """The state (whole, natural order; a trajectory's states one after the other) and physical parameter values
    of a member file (every rank)."""
    model = s.get_model()
    state = reader.read_field(model.name).ravel()
    scalars = reader.scalar_parameters
    p = {}
    for par in model.estimable():
        p[par.name] = (reader.read_field(par.name, "parameters").ravel() if par.is_field
                       else float(np.asarray(scalars[par.name])))
    return state, p


def cycle_forecasts(s, cycle: int, comm) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
    """Every member forecast of cycle ``cycle``, ``member -> (whole state, physical parameter values)`` (every rank):
    from checkpoint ``cycle + 1``'s array ``forecast``, or the trail of the checkpoint after it (the online driver's;
    parameters from checkpoint ``cycle``, which must exist), else from the member files of a workflow's tasks.
    Collective.

    Raises
    ------
    WorkflowError
        When no checkpoint holds cycle ``cycle + 1``, or the forecasts are kept but checkpoint ``cycle`` (their
        parameters) was not written (``outputs.checkpoint_every``).
    """
    from twin.campaign import layout

    path = holding(s.exp_dir, cycle + 1, comm)
    if path is None:
        raise WorkflowError(f"experiment {s.name}: no checkpoint holds cycle {cycle}'s forecasts (checkpoint "
                            f"{cycle + 1} or later)")
    with reader(path, comm) as r:
        kept = None
        if path == layout.checkpoint_file(s.exp_dir, cycle + 1):
            kept = r.read_array("forecast") if "forecast" in r.array_names else None
        elif "trail_cycles" in r.array_names:
            rows = r.read_array("trail_cycles").tolist()
            kept = r.read_array("trail_forecast")[rows.index(cycle + 1)] if cycle + 1 in rows else None
    if kept is not None:
        members = [m for m in range(kept.shape[0]) if np.all(np.isfinite(kept[m]))]
        parent = layout.checkpoint_file(s.exp_dir, cycle)
        exists = parent.is_file()
        if comm is not None and comm.Get_size() > 1:
            exists = comm.bcast(exists, root=0)
        if not exists:
            raise WorkflowError(f"experiment {s.name}: cycle {cycle}'s forecasts need the members' parameters of "
                                f"checkpoint {cycle}, which was not written (outputs.checkpoint_every)")
        with reader(parent, comm) as r:
            _, params = read_members(s, r, members)
        return {m: (kept[m], p) for m, p in zip(members, params)}
    out = {}
    for m in layout.member_files(s.exp_dir, cycle)[0]:
        with reader(layout.forecast_file(s.exp_dir, cycle, m), comm) as r:
            out[m] = read_member(s, r)
    return out
