"""Model types: the YAML ``type:`` of a model names a model class declared by an installed twin kind
(:mod:`twin.core.kinds`)."""

from __future__ import annotations

from typing import Callable

from twin.core import kinds
from twin.core.errors import ConfigError


def register_model(type_name: str) -> Callable[[type], type]:
    """Class decorator: the model class answers to ``type: <type_name>`` (its kind's :class:`~twin.core.kinds
    .ModelType` declares it to the registry)."""

    def deco(cls: type) -> type:
        cls.type_name = type_name
        return cls

    return deco


def model_types() -> dict[str, type]:
    """Every model class of the installed kinds by type name (imports the kinds' model modules)."""
    return {name: kinds.model_class(mt) for name, mt in kinds.model_types().items()}


def create_model(name: str, config, comm, limits=None):
    """Build the model named ``name`` from its typed configuration section on ``comm``.

    The model's ``from_config`` puts the section's ``solver:`` options into the PETSc options database under the
    prefix ``<name>_`` before it builds its solvers; its own defaults then fill only what neither the user nor the
    command line set (:func:`twin.core.petsc.set_default_options`), so the order never matters.

    The grid the model built is then held to the campaign's ``limits`` (:class:`twin.config.limits.LimitsConfig`;
    its defaults when ``None``), as its section's size was when the campaign was validated: a section that cannot
    say its size before the model is built (a BMI model without ``shape``, whose grid its own configuration file
    sets) is bounded here, before any ensemble of its states is allocated (:func:`check_built_size`).
    """
    types = kinds.model_types()
    mt = types.get(config.type)
    if mt is None:
        raise ConfigError(f"models.{name}.type: unknown model type {config.type!r}; known: {sorted(types)}")
    try:
        cls = kinds.model_class(mt)
    except ConfigError as exc:
        raise ConfigError(f"model '{name}': {exc}") from None
    if getattr(cls, "type_name", None) != config.type:
        raise ConfigError(f"model type {config.type!r}: its class {cls.__qualname__} answers to "
                          f"{getattr(cls, 'type_name', None)!r}; decorate it with register_model({config.type!r})")
    model = _build(cls, name, config, comm)
    from twin.models.contract import checked_model

    checked_model(model, name, config.type)
    try:
        check_built_size(name, model, limits)
    except BaseException:
        model.destroy()
        raise
    return model


def _build(cls, name: str, config, comm):
    """``cls.from_config``, with an error of the class's own (a ``KeyError``; not twin's, not PETSc's)
    as one :class:`~twin.models.contract.ContractError` line naming the component, its type and ``from_config``, and
    memory the process could not get (NumPy's or PETSc's allocation) as
    :class:`~twin.core.errors.OutOfMemory` naming the component, its grid and the ranks, instead of an allocation
    traceback.

    On several ranks the rank that failed prints that line itself and aborts the job (``MPI_Abort``, exit status 1):
    the other ranks may be waiting for it inside one of the build's collective operations, where they would wait
    until the job's time limit, and an error raised on a rank other than 0 is not printed."""
    from petsc4py import PETSc

    from twin.core.errors import OutOfMemory, TwinError
    from twin.core.petsc import is_out_of_memory
    from twin.models.contract import from_config_error

    try:
        return cls.from_config(name, config, comm)
    except (MemoryError, PETSc.Error) as exc:
        if not isinstance(exc, MemoryError) and not is_out_of_memory(exc):
            raise  # a PETSc error (an unknown solver type among the options ...) is reported as PETSc's
        shape = getattr(getattr(config, "grid", None), "shape", None)
        grid = f"its grid {' x '.join(map(str, shape))}" if shape else "it"
        what = str(exc) if isinstance(exc, MemoryError) else "PETSc could not allocate"
        ranks = comm.Get_size()
        where = f"rank {comm.Get_rank()} of {ranks}: " if ranks > 1 else ""
        error = OutOfMemory(name, f"out of memory while building {grid} on {ranks} rank(s) ({where}{what}): run it "
                                  "on more ranks or nodes, or make the grid smaller")
        if ranks > 1:
            from twin.core.comm import abort_job

            abort_job(comm, f"error: {error}", error.exit_status)
        raise error from None
    except TwinError:
        raise
    except Exception as exc:  # an error of the class's own: one line naming it and from_config
        raise from_config_error(exc, name, config.type) from exc


def check_built_size(name: str, model, limits=None) -> None:
    """:class:`ModelError` when the grid of the built ``model`` exceeds ``limits.grid_cells``, or
    ``limits.grid_cells_per_rank`` on the ranks of its communicator."""
    from twin.config.limits import LimitsConfig
    from twin.core.errors import ModelError

    grid = getattr(model, "grid", None)
    if grid is None:
        return
    limits = limits if limits is not None else LimitsConfig()
    cells, ranks = int(grid.size), int(model.comm.Get_size())
    if cells > limits.grid_cells:
        raise ModelError(name, f"its grid as built has {cells} cells, more than the limit of {limits.grid_cells} "
                               f"per model (limits.grid_cells; one state takes {cells * grid.dof * 8 / 1e9:.3g} GB "
                               "and an ensemble as many times over): if you mean it, raise limits.grid_cells in the "
                               "campaign file")
    if cells > limits.grid_cells_per_rank * ranks:
        raise ModelError(name, f"its grid as built has {cells} cells on {ranks} rank(s), more than the limit of "
                               f"{limits.grid_cells_per_rank} per rank (limits.grid_cells_per_rank): run it on at "
                               f"least {-(-cells // limits.grid_cells_per_rank)} ranks, or raise the limit if you "
                               "mean it")
