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

Adjoint
-------
:meth:`CoupledModel.adjoint` is the discrete adjoint of explicit windows (serial or parallel staggering, sub-steps,
linear or constant time interpolation) and of converged implicit windows (implicit-function theorem: an adjoint fixed
point per window) built from the components' adjoints and export derivatives (:mod:`twin.coupling.adjoint`, which also
states the optional methods a component needs). A :meth:`CoupledModel.record` call (what 4D-Var uses for the forward
pass of a gradient) keeps the state and the route data at its start on a bounded tape (:mod:`twin.coupling.tape`), and
for implicit schemes the converged route data at each window end (interface fields); plain :meth:`advance` calls
(forecasts, ensemble members) keep nothing, so long runs of large models do not fill memory with copies. An ``advance``
that starts *earlier* than the time the route data belong to (a re-run, as 4D-Var evaluations do) first restores the
route data recorded at that time, so re-runs from a time see the same coupling data there.

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
from twin.coupling.adjoint import CoupledAdjoint
from twin.coupling.schemes import Component, CouplingScheme, WindowDiagnostics
from twin.coupling.tape import CouplingTape
from twin.models.base import Model, QoI
from twin.models import contract

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
        self.tape = CouplingTape(1e-9 * self.window_length)
        self._taping = False
        #: the time the routes' data belong to (None: unknown, e.g. after a restore)
        self.data_time: float | None = None
        self._pending: dict[str, Any] | None = None

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
            x0 = contract.initial_state(model)  # checked: a PETSc vector of the component's state
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
        windows = self.windows(t0, t1)
        self._scatter_in(state)
        try:
            if not self.scheme.initialized:  # the route data from this state: nothing to rewind to
                self.scheme.initialize()
            else:
                self._rewind(t0)
            self.tape.remember_routes(t0, self.scheme.routes)
            entry = self.tape.record(t0, state, self.scheme.routes) if self._taping else None
            for a, b in windows:
                diag = self.scheme.run_window(a, b)
                self.diagnostics.append(diag)
                if entry is not None and self.scheme.spec.implicit:
                    # the converged interface data of the window: what the adjoint's implicit-function term needs
                    entry.add_window(self.scheme.routes, diag.converged)
                log.debug("%s window %d [%g, %g]: %d iteration(s)", self.name, diag.window, a, b, diag.iterations)
            self.data_time = float(t1)
        finally:
            self._gather_out(state)

    def _rewind(self, t0: float) -> None:
        """Before a run from ``t0`` earlier than the routes' data: restore the data remembered at ``t0``, if any,
        and start a new divergence watch (the residuals of the old trajectory are not comparable)."""
        if self.data_time is None or t0 >= self.data_time - self.tape.tolerance:
            return
        self.scheme.history.clear()
        self.scheme.history_rel.clear()
        routes = self.tape.routes_at(t0)
        if routes is None:
            log.debug("%s: re-run from t=%g without remembered coupling data; using the current data", self.name, t0)
            return
        for r in self.scheme.routes:
            routes[r.name].copy(r.value)
            routes[r.name].copy(r.start)

    def record(self, state, t0: float, t1: float, parameters: Sequence[str] = ()):
        """:meth:`Model.record`, keeping the coupling data at ``t0`` on the tape for :meth:`adjoint`."""
        self._taping = True
        try:
            return super().record(state, t0, t1, parameters)
        finally:
            self._taping = False

    def adjoint(self, state0, t0, t1, lam, parameters: Sequence[str] = ()):
        """Discrete adjoint of :meth:`advance` over ``[t0, t1]`` (:mod:`twin.coupling.adjoint`; implicit windows by
        the adjoint of their converged fixed point, raising :class:`~twin.core.errors.CouplingError` if that adjoint
        fixed point does not converge or a forward window did not).

        ``state0`` must be a state this model was advanced from at ``t0`` by :meth:`record` (the route data recorded
        then are part of the trajectory). Parameters are named ``<component>.<name>``. The cotangent of the route data at ``t0`` is
        kept for the adjoint of the previous interval (matched by time and state), as the forward keeps the data.
        """
        adj = CoupledAdjoint(self, parameters)
        entry = self.tape.find(t0, state0)
        if entry is None:
            raise ModelError(self.name, f"no adjoint over [{t0:g}, {t1:g}]: this state was not advanced from t={t0:g} "
                                        f"by record() (or the record was dropped); the coupling data at t0 are part of the "
                                        f"trajectory, so advance from state0 at t0 first")
        grads, droutes = adj.run(entry, t0, t1, lam, self._pending)
        self._drop_pending()
        self._pending = {"time": float(t0), "state": state0.copy(), "routes": droutes}
        return grads

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending["state"].destroy()
            for v in self._pending["routes"].values():
                v.destroy()
        self._pending = None

    # -- parameters, coupling fields, QoIs ----------------------------------------------------------------------------
    def _split_name(self, name: str) -> tuple[Model, str]:
        comp, _, rest = name.partition(".")
        if comp not in self.models or not rest:
            raise ModelError(self.name, f"'{name}' must be <component>.<name> with a component in "
                                        f"{sorted(self.models)}")
        return self.models[comp], rest

    def parameter_grid(self, name: str):
        """The grid of field parameter ``<component>.<name>`` (the component's)."""
        model, local = self._split_name(name)
        return model.parameter_grid(local)
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
            for k, q in contract.qoi(self.models[c], x, t * factor).items():  # checked: name -> QoI
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
        self.data_time = None
        self.origin = None if meta.get("origin") is None else float(meta["origin"])

    def mean_iterations(self, since: int = 0) -> float:
        """Mean coupling iterations per window over the diagnostics from index ``since``."""
        its = [d.iterations for d in self.diagnostics[since:]]
        if not its:
            raise CouplingError(f"coupled model '{self.name}' has run no windows yet")
        return float(np.mean(its))

    def destroy(self) -> None:
        self._drop_pending()
        self.tape.destroy()
        self.scheme.destroy()
        for c, comp in self.components.items():
            comp.state.destroy()
            self._is[c].destroy()
            comp.model.destroy()
        self._layout.destroy()
        self.parameters = {}
