"""A coupled model: several components advanced together by a coupling scheme, presenting the model contract.

State
-----
The coupled state is one PETSc vector on the common communicator whose owned part is the concatenation of the
components' owned parts (component order of the ``coupling.components`` list); :meth:`CoupledModel.component_view`
gives a component's block through an index set (``VecGetSubVector``, no copy for contiguous blocks). Assimilation,
I/O and workflows see one state vector, as for a single model.

Time
----
The coupled model's time units are those of its first component; other components' times are converted. The window
``coupling.window`` is converted to these units; ``advance(t0, t1)`` runs ``ceil((t1 - t0) / window)`` windows of
equal length (so a run split into several ``advance`` calls on window boundaries is the same as one call).

Names
-----
Parameters, exports and QoIs of component ``c`` appear as ``c.<name>``.

Checkpoints
-----------
:meth:`CoupledModel.coupling_state` returns the part of the coupled state that is not in the state vector (route
data at the window start, acceleration history, window counter, explicit-divergence history) as plain NumPy arrays
in natural order plus a JSON-serialisable dict; :meth:`CoupledModel.restore_coupling_state` puts it back, so a
restart from (state vector, coupling state) continues bit-for-bit on the same ranks.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import CouplingError, ModelError
from twin.core.log import get_logger
from twin.core.units import convert
from twin.coupling.schemes import Component, CouplingScheme, WindowDiagnostics
from twin.models.base import Model, QoI

log = get_logger("twin.coupling.coupled")


class CoupledModel(Model):
    """Components coupled by a :class:`~twin.coupling.schemes.CouplingScheme`.

    Parameters
    ----------
    name : str
        Name of the coupled model (used in errors and logs).
    comm : mpi4py communicator
        Common communicator of all components.
    components : dict name -> Model
        Built component models, all on ``comm``; the coupled model takes ownership and destroys them.
    config : twin.config.coupling.CouplingConfig
        The ``coupling`` section.
    """

    type_name = "coupled"

    def __init__(self, name: str, comm, components: dict[str, Model], config):
        super().__init__(name, comm)
        missing = [c for c in config.components if c not in components]
        if missing:
            raise ModelError(name, f"coupling names components {missing} that are not built; have "
                                   f"{sorted(components)}")
        self.config = config
        self.models = {c: components[c] for c in config.components}
        first = self.models[config.components[0]]
        self.time_units = first.time_units
        self.grid = first.grid
        try:
            self.window_length = float(config.window.to(self.time_units))
        except ValueError as exc:
            raise ModelError(name, f"coupling window: {exc}") from None
        comps = {}
        for c, model in self.models.items():
            factor = float(convert(1.0, self.time_units, model.time_units))
            comps[c] = Component(c, model, model.create_state(), int(config.substeps.get(c, 1)), factor)
        self.components = comps
        self.state_names = tuple(f"{c}.{s}" for c, m in self.models.items() for s in m.state_names)
        self.state_units = tuple(u for m in self.models.values() for u in m.state_units)
        self.parameters = {f"{c}.{p}": par for c, m in self.models.items() for p, par in m.parameters.items()}
        self.diagnostics: list[WindowDiagnostics] = []
        self.origin: float | None = None
        # layout of the concatenated state
        local = [comp.state.getLocalSize() for comp in comps.values()]
        total = sum(comp.state.getSize() for comp in comps.values())
        self._layout = PETSc.Vec().createMPI((sum(local), total), comm=comm)
        start = self._layout.getOwnershipRange()[0]
        offsets = np.concatenate([[0], np.cumsum(local)])
        self._is = {c: PETSc.IS().createStride(n, start + int(o), 1, comm=comm)
                    for c, n, o in zip(comps, local, offsets[:-1])}
        self.scheme = CouplingScheme(config, comps, comm)

    @classmethod
    def from_config(cls, name: str, cfg, comm, components: dict[str, Model] | None = None) -> "CoupledModel":
        """Build from the ``coupling`` section; ``components`` are the already built models of ``models:``."""
        if components is None:
            raise ModelError(name, "a coupled model is built from its component models; pass components=")
        return cls(name, comm, components, cfg)

    # -- state layout ------------------------------------------------------------------------------------------------
    def create_state(self) -> PETSc.Vec:
        v = self._layout.duplicate()
        v.set(0.0)
        return v

    def component_view(self, state: PETSc.Vec, component: str) -> PETSc.Vec:
        """The block of ``state`` belonging to ``component`` (return it with :meth:`restore_view`)."""
        return state.getSubVector(self._is[component])

    def restore_view(self, state: PETSc.Vec, component: str, view: PETSc.Vec) -> None:
        state.restoreSubVector(self._is[component], view)

    def _scatter_in(self, state: PETSc.Vec) -> None:
        for c, comp in self.components.items():
            view = self.component_view(state, c)
            view.copy(comp.state)
            self.restore_view(state, c, view)

    def _gather_out(self, state: PETSc.Vec) -> None:
        for c, comp in self.components.items():
            view = self.component_view(state, c)
            comp.state.copy(view)
            self.restore_view(state, c, view)

    def split(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """Copies of the component states (new vectors on each component's grid)."""
        out = {}
        for c, comp in self.components.items():
            view = self.component_view(state, c)
            out[c] = comp.state.duplicate()
            view.copy(out[c])
            self.restore_view(state, c, view)
        return out

    # -- the model contract ------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        state = self.create_state()
        for c, model in self.models.items():
            x0 = model.initial_state()
            view = self.component_view(state, c)
            x0.copy(view)
            self.restore_view(state, c, view)
            x0.destroy()
        return state

    def windows(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """The coupling windows covering ``[t0, t1]``.

        Window edges are ``origin + k * window`` for integer ``k`` (``origin`` is the first ``t0`` ever advanced
        from, kept in checkpoints), so a run split into several calls, or restarted, steps through exactly the same
        floating-point times as an uninterrupted one.
        """
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 < t0:
            raise ModelError(self.name, f"cannot advance from t={t0} to t={t1}")
        if self.origin is None:
            self.origin = float(t0)
        w, tol = self.window_length, 1e-9 * self.window_length
        k = int(np.floor((t0 - self.origin) / w + 1e-9)) + 1
        edges = [t0]
        while self.origin + k * w < t1 - tol:
            edges.append(self.origin + k * w)
            k += 1
        if t1 > t0:
            edges.append(t1)
        return list(zip(edges[:-1], edges[1:]))

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        self._scatter_in(state)
        try:
            for a, b in self.windows(t0, t1):
                diag = self.scheme.run_window(a, b)
                self.diagnostics.append(diag)
                log.debug("%s window %d [%g, %g]: %d iteration(s)", self.name, diag.window, a, b, diag.iterations)
        finally:
            self._gather_out(state)

    def adjoint(self, state0, t0, t1, lam, parameters: Sequence[str] = ()):
        raise ModelError(self.name, "a coupled model has no adjoint yet (use ensemble methods)")

    # -- parameters, coupling fields, QoIs ----------------------------------------------------------------------------
    def _split_name(self, name: str) -> tuple[Model, str]:
        comp, _, rest = name.partition(".")
        if comp not in self.models or not rest:
            raise ModelError(self.name, f"'{name}' must be <component>.<name> with a component in "
                                        f"{sorted(self.models)}")
        return self.models[comp], rest

    def set_parameter(self, name: str, value: Any) -> None:
        model, pname = self._split_name(name)
        model.set_parameter(pname, value)

    def get_parameter(self, name: str) -> Any:
        model, pname = self._split_name(name)
        return model.get_parameter(pname)

    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        out = {}
        for c, x in self.split(state).items():
            for k, v in self.models[c].exports(x).items():
                out[f"{c}.{k}"] = v
        return out

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        model, field = self._split_name(name)
        model.set_import(field, value)

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        out = {}
        for c, x in self.split(state).items():
            factor = self.components[c].time_factor
            for k, q in self.models[c].qoi(x, t * factor).items():
                out[f"{c}.{k}"] = q
            x.destroy()
        return out

    # -- checkpoints and diagnostics --------------------------------------------------------------------------------
    def coupling_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (natural order, identical on every rank) and JSON values to restart exactly. Collective."""
        arrays, meta = self.scheme.state()
        meta["origin"] = self.origin
        return arrays, meta

    def restore_coupling_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`coupling_state`; the state vector is restored separately (it is the model state)."""
        self.scheme.restore(arrays, meta)
        self.origin = None if meta.get("origin") is None else float(meta["origin"])

    def mean_iterations(self, since: int = 0) -> float:
        """Mean coupling iterations per window over the diagnostics from index ``since``."""
        its = [d.iterations for d in self.diagnostics[since:]]
        if not its:
            raise CouplingError(f"coupled model '{self.name}' has run no windows yet")
        return float(np.mean(its))

    def destroy(self) -> None:
        self.scheme.destroy()
        for c, comp in self.components.items():
            comp.state.destroy()
            self._is[c].destroy()
            comp.model.destroy()
        self._layout.destroy()
        self.parameters = {}
