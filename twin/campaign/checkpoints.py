"""The HDF5 files of an experiment's ensemble (:mod:`twin.io.checkpoint`): ensemble checkpoints (every member's state
and estimable parameters, the ``alive`` flags and the metadata the next step needs) and member files (one member's
forecast), read back as whole states in natural order and physical parameter values.

Field parameters live on their own (dof-1) grids (:func:`twin.campaign.state.field_grid`; a coupled model's fields are
not on its state grid), which are kept alive until a file is written.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from twin.campaign.state import field_grid
from twin.core.errors import OutputError
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


def write_ensemble_checkpoint(s, path, cycle: int, t: float, states, params, alive, meta, prov,
                              forecast=None, durable: bool = True) -> str:
    """Checkpoint ``cycle`` at time ``t`` of the whole ensemble: ``states`` (whole states, natural order) and
    ``params`` (physical values) of every member, the ``alive`` flags and ``meta``; ``forecast``: the members'
    forecasts of the cycle that ends here (member x whole state, NaN rows for members without one), kept as the array
    ``forecast`` when the online driver held them in memory (:func:`cycle_forecasts`). ``durable=False``: flushed
    to stable storage by the next :func:`twin.io.atomic.make_durable` (the online driver's, every few seconds).
    Collective."""
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
    from checkpoint ``cycle + 1``'s array ``forecast`` (the online driver's; parameters from checkpoint ``cycle``),
    else from the member files of a workflow's tasks. Collective."""
    from twin.campaign import layout

    with reader(layout.checkpoint_file(s.exp_dir, cycle + 1), comm) as r:
        kept = r.read_array("forecast") if "forecast" in r.array_names else None
    if kept is not None:
        members = [m for m in range(kept.shape[0]) if np.all(np.isfinite(kept[m]))]
        with reader(layout.checkpoint_file(s.exp_dir, cycle), comm) as r:
            _, params = read_members(s, r, members)
        return {m: (kept[m], p) for m, p in zip(members, params)}
    out = {}
    for m in layout.member_files(s.exp_dir, cycle)[0]:
        with reader(layout.forecast_file(s.exp_dir, cycle, m), comm) as r:
            out[m] = read_member(s, r)
    return out
