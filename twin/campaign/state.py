"""Whole states and field parameters of a campaign's model in natural order, for single and coupled models alike.

The campaign steps (:mod:`twin.campaign.steps`) hold every member's state as one NumPy vector in *natural order*
(``grid.allgather`` of the model's grid) and field parameters the same way. Two kinds of model need help with that:

* a coupled model (:class:`twin.coupling.coupled.CoupledModel`): its state vector is the concatenation of the
  components' *owned* blocks rank by rank, and its ``grid`` is only its first component's grid. :class:`CoupledState`
  presents it to the campaign as one model whose state lives on a 1-D "state index" grid of
  ``n = sum_c n_c`` points (``n_c = size_c * dof_c``), whose natural order is the components' natural orders one
  after the other (``coupling.components`` order). Advancing scatters that vector into the coupled state (component
  by component, through each component grid's natural ordering), runs the coupled model, and gathers it back. With
  the 1-D grid every generic part of a campaign (checkpoints, forecasts, ``posterior.nc``, posterior prediction)
  works unchanged; :meth:`CoupledState.block` says where component ``c`` sits in the vector.
* a model whose field parameters do not live on its state grid: the structure model's damage field lives on the
  node grid with one unknown per node while its state grid carries four (``u_x, u_y, v_x, v_y``). A field
  parameter is a dof-1 field on the points of its (component's) state grid; :func:`field_grid` gives a grid with
  that layout (the state grid itself when it has one unknown per point, else a dof-1 companion grid with the same
  sizes and process grid, hence the same ownership).

A member's state holds no coupling data: each :meth:`CoupledState.advance` recomputes the interface data at its start
from the state it is given (for an implicit scheme the acceleration history restarts too), so members advanced one
after another by one model (online mode) get exactly what fresh models would (workflow mode).

Gathering and scattering go through rank 0 (``Grid.allgather`` / ``Grid.set_global``): the campaign keeps whole
ensembles on every rank anyway (see :mod:`twin.campaign.steps`), so this costs nothing extra at campaign sizes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.models.base import Model, QoI


def companion_grid(grid: Grid, name: str | None = None) -> Grid:
    """A dof-1 grid with the points, extent and process grid of ``grid`` (same ownership of points)."""
    return Grid(grid.comm, grid.shape, grid.extent, dof=1, periodic=grid.periodic, centering=grid.centering,
                proc_sizes=grid.da.getProcSizes(), name=name or grid.name)


class CoupledState(Model):
    """A :class:`~twin.coupling.coupled.CoupledModel` seen by a campaign: one natural-order state on a 1-D grid.

    Parameters
    ----------
    coupled : CoupledModel
        The coupled model; this object takes ownership and destroys it.

    Attributes
    ----------
    coupled : CoupledModel
    dt : float
        The coupling window (the cycle clock counts windows, ``assimilation.schedule.every``).
    blocks : dict component -> slice
        Where each component's natural-order state sits in the whole state.
    """

    type_name = "coupled"
    state_names = ("state",)
    state_units = ("1",)
    length_units = "1"

    def __init__(self, coupled):
        super().__init__(coupled.name, coupled.comm)
        self.coupled = coupled
        self.time_units = coupled.time_units
        self.dt = float(coupled.window_length)
        sizes = {c: m.grid.size * m.grid.dof for c, m in coupled.models.items()}
        bounds = np.cumsum([0] + list(sizes.values()))
        self.blocks = {c: slice(int(a), int(b)) for c, a, b in zip(sizes, bounds[:-1], bounds[1:])}
        n = int(bounds[-1])
        # one "cell" per entry of the concatenated natural-order state; the coordinate is the entry's index
        self.grid = Grid(coupled.comm, (n,), [(0.0, float(n))], dof=1, name=f"{coupled.name} state")
        # the components' parameters under their qualified names ("mast.damage"); fields share the vector
        self.parameters = {k: replace(p, name=k) for k, p in coupled.parameters.items()}
        self._param_grids: dict[str, Grid] = {}
        for pname, p in self.parameters.items():
            if p.is_field:
                comp, _, _ = pname.partition(".")
                g = companion_grid(coupled.models[comp].grid, pname)
                probe = g.create_global()
                local = probe.getLocalSize()
                probe.destroy()
                if local != p.value.getLocalSize():
                    g.destroy()
                    raise ModelError(self.name, f"field parameter '{pname}' is not a one-value-per-point field on "
                                                f"component '{comp}''s grid; the campaign cannot gather it")
                self._param_grids[pname] = g
        self._work = coupled.create_state()

    # -- layout -------------------------------------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, Model]:
        """The component models by name."""
        return self.coupled.models

    def block(self, component: str) -> slice:
        """The entries of component ``component`` in the whole (natural-order) state."""
        if component not in self.blocks:
            raise ModelError(self.name, f"no component '{component}'; components are {list(self.blocks)}")
        return self.blocks[component]

    def parameter_grid(self, name: str) -> Grid:
        """The dof-1 grid of field parameter ``name`` (``<component>.<parameter>``)."""
        if name not in self._param_grids:
            raise ModelError(self.name, f"'{name}' is not a field parameter; fields: {sorted(self._param_grids)}")
        return self._param_grids[name]

    def split_natural(self, whole: np.ndarray) -> dict[str, np.ndarray]:
        """Whole state (natural order) -> component name -> that component's natural-order state."""
        whole = np.asarray(whole).ravel()
        return {c: whole[s] for c, s in self.blocks.items()}

    def _to_coupled(self, state: PETSc.Vec) -> None:
        """Copy the 1-D state ``state`` into the coupled state vector (collective)."""
        whole = self.grid.allgather(state).ravel()
        for c, part in self.split_natural(whole).items():
            m = self.coupled.models[c]
            tmp = m.grid.create_global()
            m.grid.set_global(part, tmp)
            view = self.coupled.component_view(self._work, c)
            tmp.copy(view)
            self.coupled.restore_view(self._work, c, view)
            tmp.destroy()

    def _from_coupled(self, state: PETSc.Vec) -> None:
        """Copy the coupled state vector into the 1-D state ``state`` (collective)."""
        parts = []
        for c, x in self.coupled.split(self._work).items():
            parts.append(self.coupled.models[c].grid.allgather(x).ravel())
            x.destroy()
        self.grid.set_global(np.concatenate(parts), state)

    def component_state(self, state: PETSc.Vec, component: str) -> PETSc.Vec:
        """A new vector on component ``component``'s grid holding its part of ``state`` (caller destroys)."""
        self._to_coupled(state)
        view = self.coupled.component_view(self._work, component)
        out = self.coupled.models[component].create_state()
        view.copy(out)
        self.coupled.restore_view(self._work, component, view)
        return out

    # -- the model contract -------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        x0 = self.coupled.initial_state()
        try:
            x0.copy(self._work)
        finally:
            x0.destroy()
        out = self.create_state()
        self._from_coupled(out)
        return out

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        self._to_coupled(state)
        # Every advance starts from the state it is given: the route data at the window start are recomputed from it
        # (the scheme's initialisation), and neither they nor the acceleration's memory are carried over from
        # whatever the coupled model advanced last, which in a campaign is another member.
        self.coupled.scheme.start_afresh()
        self.coupled.advance(self._work, t0, t1)
        self._from_coupled(state)

    def set_parameter(self, name: str, value: Any) -> None:
        """Set a parameter; a field is given as a vector on :meth:`parameter_grid` or as the whole field in
        natural order (on every rank)."""
        p = self.parameters.get(name)
        if p is None:
            raise ModelError(self.name, f"unknown parameter '{name}'; known: {sorted(self.parameters)}")
        if p.is_field and not isinstance(value, PETSc.Vec):
            g = self.parameter_grid(name)
            tmp = g.create_global()
            try:
                g.set_global(np.asarray(value, dtype=float).ravel(), tmp)
                self.coupled.set_parameter(name, tmp)
            finally:
                tmp.destroy()
        else:
            self.coupled.set_parameter(name, value)
            if not p.is_field:
                p.value = float(self.coupled.get_parameter(name))

    def get_parameter(self, name: str) -> Any:
        return self.coupled.get_parameter(name)

    def parameters_changed(self, names: Sequence[str]) -> None:
        for name in names:
            comp, _, pname = name.partition(".")
            self.coupled.models[comp].parameters_changed([pname])

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        self._to_coupled(state)
        return self.coupled.qoi(self._work, t)

    def adjoint(self, state0, t0, t1, lam, parameters: Sequence[str] = ()):
        raise ModelError(self.name, "campaigns run coupled models with ensemble methods only (no adjoint here)")

    def destroy(self) -> None:
        self._work.destroy()
        for g in self._param_grids.values():
            g.destroy()
        self._param_grids = {}
        self.grid.destroy()
        self.coupled.destroy()
        self.parameters = {}


@contextmanager
def field_grid(model: Model, name: str) -> Iterator[Grid]:
    """The dof-1 grid field parameter ``name`` of ``model`` lives on (module docstring); a companion grid made for
    the purpose is destroyed on exit. Collective (may create a DMDA)."""
    own = model.parameter_grid(name)
    if own.dof == 1:
        yield own
        return
    g = companion_grid(model.grid, f"{model.name}.{name}")
    try:
        yield g
    finally:
        g.destroy()


def gather_field(model: Model, name: str) -> np.ndarray:
    """The whole field parameter ``name`` in natural order on every rank. Collective."""
    with field_grid(model, name) as g:
        return g.allgather(model.parameters[name].value).ravel()


def field_size(model: Model, name: str) -> int:
    """Number of values of field parameter ``name`` (points of its grid)."""
    if isinstance(model, CoupledState):
        return model.parameter_grid(name).size
    return model.grid.size


def set_field(model: Model, name: str, values) -> None:
    """Set field parameter ``name`` from the whole field in natural order (on every rank), through the model's
    :meth:`set_parameter` (which validates it, e.g. damage in [0, 1)). Collective."""
    with field_grid(model, name) as g:
        tmp = g.create_global()
        try:
            g.set_global(np.asarray(values, dtype=float).ravel(), tmp)
            model.set_parameter(name, tmp)
        finally:
            tmp.destroy()


def state_size(model: Model) -> int:
    """Entries of the whole (natural-order) state."""
    return model.grid.size * model.grid.dof
