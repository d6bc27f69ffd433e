"""The model contract: what every component, and every coupled model, presents to the rest of twin.

A model owns a :class:`~twin.core.grid.Grid` and PETSc objects on a communicator it is given; it never decides where
it runs. Assimilation, coupling, I/O and workflows only use the methods below, so "tumour + tissue mechanics" is handled
exactly like "tumour alone".

State vectors are PETSc global vectors on ``model.grid`` (``dof`` unknowns per point). Time is in the model's time
units (declared in ``time_units``). Parameters are named; a parameter is a scalar (a Python float) or a field (a
global vector on the model grid); any may be *estimable*, which puts it into the control vector of assimilation in the
space given by its ``transform`` (``"log"`` for positive quantities, ``"logit"`` for values in (0, 1)).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid


@dataclass
class Parameter:
    """A named model parameter.

    Attributes
    ----------
    name : str
    value : float or PETSc.Vec
        Scalar value, or a global vector on the model grid for a field.
    units : str
        Units of ``value`` (the model's internal units).
    estimable : bool
        Whether assimilation may update it.
    transform : {"none", "log", "logit"}
        Space in which assimilation updates it (keeps bounds: positivity, (0, 1)).
    prior : Any
        The prior as given in the configuration (a typed config object), or ``None``.
    """

    name: str
    value: Any
    units: str = "1"
    estimable: bool = False
    transform: str = "none"
    prior: Any = None

    @property
    def is_field(self) -> bool:
        return isinstance(self.value, PETSc.Vec)


@dataclass
class QoI:
    """A scalar quantity of interest with its units and a human-readable name."""

    value: float
    units: str = "1"
    long_name: str = ""


class Model(ABC):
    """Base class of all models.

    Subclasses set ``self.grid``, ``self.parameters`` and implement :meth:`initial_state` and :meth:`advance`.
    Models with adjoints implement :meth:`adjoint`.

    Parameters
    ----------
    name : str
        Component name (from the YAML ``models:`` key); also the PETSc options prefix ``name_``.
    comm : mpi4py communicator
        Where the model runs.
    """

    #: registry key (``type:`` in YAML)
    type_name: str = ""
    #: names of the state's components (length ``grid.dof``), used for output variable names
    state_names: tuple[str, ...] = ("u",)
    #: units of each state component
    state_units: tuple[str, ...] = ("1",)
    #: units of time for t0/t1 passed to advance
    time_units: str = "s"
    #: units of the grid's coordinates
    length_units: str = "m"

    def __init__(self, name: str, comm):
        self.name = name
        self.comm = comm
        self.grid: Grid
        self.parameters: dict[str, Parameter] = {}
        self.imports: dict[str, PETSc.Vec] = {}

    @property
    def options_prefix(self) -> str:
        """PETSc options prefix for this component's solvers (``-<name>_ts_type`` etc.)."""
        return f"{self.name}_"

    # -- state ----------------------------------------------------------------------------------------------------
    def create_state(self) -> PETSc.Vec:
        """A new (zeroed) state vector."""
        v = self.grid.create_global()
        v.set(0.0)
        return v

    @abstractmethod
    def initial_state(self) -> PETSc.Vec:
        """The initial condition from the configuration, as a new vector."""

    @abstractmethod
    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        """Advance ``state`` in place from ``t0`` to ``t1``.

        Raises
        ------
        SolverError
            If the solve diverges; names the component, time and PETSc's reason.
        """

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint of :meth:`advance` over ``[t0, t1]``.

        On entry ``lam`` holds dJ/dx(t1); on exit dJ/dx(t0) (in place). ``state0`` is the state at ``t0`` (not
        modified; the forward trajectory is recomputed as needed). Returns dJ/dp over the window for each requested
        parameter: a float for scalars, a global vector for fields (derivative with respect to the parameter's value,
        not its transform).
        """
        raise ModelError(self.name, f"model type '{self.type_name}' has no adjoint")

    # -- parameters ------------------------------------------------------------------------------------------------
    def estimable(self) -> list[Parameter]:
        return [p for p in self.parameters.values() if p.estimable]

    def get_parameter(self, name: str) -> Any:
        try:
            return self.parameters[name].value
        except KeyError:
            raise ModelError(self.name, f"unknown parameter '{name}'; known: {sorted(self.parameters)}") from None

    def set_parameter(self, name: str, value: Any) -> None:
        """Set a parameter (a float, or for fields a vector/array of the owned block). Subclasses may validate."""
        p = self.parameters.get(name)
        if p is None:
            raise ModelError(self.name, f"unknown parameter '{name}'; known: {sorted(self.parameters)}")
        if p.is_field:
            if isinstance(value, PETSc.Vec):
                value.copy(p.value)
            else:
                p.value.getArray()[...] = np.asarray(value).ravel()
        else:
            p.value = float(value)
        self.parameters_changed([name])

    def parameters_changed(self, names: Sequence[str]) -> None:
        """Hook: called after parameters change (rebuild cached operators). Default: nothing."""

    # -- coupling -------------------------------------------------------------------------------------------------
    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """Named fields this model offers to a coupler (vectors on its grid). Default: none."""
        return {}

    def field_grid(self, name: str) -> Grid:
        """The grid an exported or imported field lives on (default: the state grid; face data may differ)."""
        return self.grid

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        """Receive a field from the coupler (already mapped to this grid)."""
        self.imports[name] = value

    # -- outputs ----------------------------------------------------------------------------------------------------
    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        """Quantities of interest at time ``t``. Collective. Default: none."""
        return {}

    def destroy(self) -> None:
        """Destroy the PETSc objects this model owns (and forget its YAML solver options)."""
        from twin.core.petsc import clear_options

        clear_options(self.options_prefix)
        for p in self.parameters.values():
            if p.is_field:
                p.value.destroy()
        self.grid.destroy()
