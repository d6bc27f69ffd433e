"""Coupling schemes over one time window ``[t0, t1]``: explicit serial/parallel, implicit serial/parallel, multirate.

Data flow
---------
A *route* sends an export of one component, mapped to the receiver's grid (:mod:`twin.coupling.mapping`) and scaled,
to an import of another; coordinates of components with different ``length_units`` are converted for the map. Each
route holds ``value`` (the data the receiver uses at the end of the window), ``start`` (the data at the start of the
window) and ``received`` (what the sender just produced).

Schemes (components A, B; ``order`` gives A)
--------------------------------------------
explicit_serial
    A advances with B's data from the previous window; B advances with A's new data; done (Gauss-Seidel, one pass).
explicit_parallel
    Both advance with the previous window's data, then exchange (Jacobi, one pass).
implicit_serial / implicit_parallel
    The window is repeated from the saved window-start states until every convergence measure holds (from the
    second iteration on: the first one's residual compares with data from before the window), the accelerated
    data updated by :mod:`twin.coupling.acceleration` between iterations. Hitting ``max_iterations`` raises
    :class:`CouplingError` naming the window, fields and residual history, unless ``allow_nonconvergence``.

Residuals and divergence
------------------------
The interface residual of a field is ``||x~ - x||_2`` (``x`` the data used, ``x~`` the partner's new data); relative
means divided by ``||x~||_2``. An explicit scheme has no iteration to fix a growing residual, so it watches it: when
it grows by ``divergence.factor`` or more in each of ``divergence.windows`` consecutive windows while being at least
``divergence.relative`` times the data (an unstable coupling oscillates with residuals as large as the data, whereas
physical growth has small relative residuals), it raises :class:`CouplingError` with the history.

Multirate
---------
A component with ``substeps: m`` advances ``m`` equal steps per window; before step ``k`` (1-based) its imports are
set to ``start + (k / m) (value - start)`` (``time_interpolation: linear``, data at the end of the sub-step as an
implicit step needs) or to ``value`` (``constant``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.errors import CouplingError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.core.units import convert
from twin.coupling.acceleration import make_acceleration
from twin.coupling.mapping import GridMap, PointSet, build_map, rescaled, site_map
from twin.models.base import Model

log = get_logger("twin.coupling")


def field_grid(model: Model, name: str) -> Grid | PointSet:
    """The layout of a model's coupling field (the contract's ``field_grid``: the state grid unless the model keeps
    the field elsewhere, e.g. on a face)."""
    return model.field_grid(name)


def to_natural(layout: Grid | PointSet, vec: PETSc.Vec) -> np.ndarray:
    """The whole field in natural order on every rank (flat). Collective."""
    if isinstance(layout, Grid):
        return np.asarray(layout.allgather(vec)).ravel()
    return np.concatenate(layout.comm.allgather(vec.getArray(readonly=True).copy()))


def from_natural(layout: Grid | PointSet, array: np.ndarray, vec: PETSc.Vec) -> None:
    """Fill ``vec`` from a whole field in natural order known on every rank."""
    if isinstance(layout, Grid):
        layout.set_global(np.asarray(array), vec)
    else:
        n = vec.getLocalSize()
        start = layout.offset * layout.dof
        vec.getArray()[...] = np.asarray(array).ravel()[start:start + n]


@dataclass
class Component:
    """A coupled model with its working state, sub-steps per window and time-unit factor."""

    name: str
    model: Model
    state: PETSc.Vec
    substeps: int = 1
    time_factor: float = 1.0
    saved: PETSc.Vec | None = None


class Route:
    """One field from ``source`` component to ``target`` component through a map (module docstring)."""

    def __init__(self, spec, source: Component, target: Component):
        self.spec = spec
        self.name = spec.to
        self.source, self.source_field = source, spec.source[1]
        self.target, self.target_field = target, spec.target[1]
        self.scale = float(spec.scale)
        src_layout = field_grid(source.model, self.source_field)
        self.layout = field_grid(target.model, self.target_field)
        self.map: GridMap = self._build_map(src_layout)
        self.value = self.map.matrix.createVecLeft()
        self.start, self.received, self.work = self.value.duplicate(), self.value.duplicate(), self.value.duplicate()
        for v in (self.value, self.start, self.received):
            v.set(0.0)

    def _build_map(self, src_layout: Grid | PointSet) -> GridMap:
        """The map source -> target, with the target's coordinates in the source's length units if they differ."""
        name = f"{self.spec.from_} -> {self.spec.to}"
        src_units, dst_units = self.source.model.length_units, self.target.model.length_units
        try:
            factor = float(convert(1.0, dst_units, src_units))
        except ValueError as exc:
            raise CouplingError(f"route {name}: length units of the components do not convert: {exc}") from None
        if self.spec.site is not None:
            try:
                point = [float(convert(c, self.spec.site.units, src_units)) for c in self.spec.site.point]
            except ValueError as exc:
                raise CouplingError(f"route {name}: site: {exc}") from None
            return site_map(self.spec.mapping, src_layout, self.layout, point, name=name)
        outside = self.spec.outside
        if factor == 1.0:
            return build_map(self.spec.mapping, src_layout, self.layout, name, outside)
        proxy = rescaled(self.layout, factor)
        try:
            gmap = build_map(self.spec.mapping, src_layout, proxy, name, outside)
        finally:
            if isinstance(proxy, Grid):
                proxy.destroy()
        gmap.target = self.layout
        return gmap

    def receive(self, exports: dict[str, PETSc.Vec]) -> None:
        vec = exports.get(self.source_field)
        if vec is None:
            raise CouplingError(f"route {self.spec.from_} -> {self.name}: component '{self.source.name}' exports "
                                f"{sorted(exports)}, not '{self.source_field}'")
        self.map.apply(vec, self.received)
        if self.scale != 1.0:
            self.received.scale(self.scale)

    def destroy(self) -> None:
        for obj in (self.map, self.value, self.start, self.received, self.work):
            obj.destroy()


#: residuals of a field a non-convergence message shows: the first and the last few of a long history
HISTORY_SHOWN = (3, 5)


def _history_text(residuals: dict[str, list[float]]) -> str:
    """``{field: [r1, r2, r3, '...', r_n-4 .. r_n]}`` (three significant digits): a history of thousands of
    iterations made a line of 100 KB."""
    head, tail = HISTORY_SHOWN
    out = {}
    for name, h in residuals.items():
        values = [f"{v:.3e}" for v in h]
        if len(values) > head + tail + 1:
            values = values[:head] + [f"... {len(values) - head - tail} more ..."] + values[-tail:]
        out[name] = "[" + ", ".join(values) + "]"
    return "{" + ", ".join(f"'{n}': {v}" for n, v in out.items()) + "}"


@dataclass
class WindowDiagnostics:
    """What one coupling window did (for ``diagnostics.nc`` and logs)."""

    window: int
    t0: float
    t1: float
    iterations: int = 0
    converged: bool = True
    residuals: dict[str, list[float]] = field(default_factory=dict)
    relative: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"window": self.window, "t0": self.t0, "t1": self.t1, "iterations": self.iterations,
                "converged": self.converged, "residuals": self.residuals, "relative": self.relative,
                "seconds": self.seconds}


class Packer:
    """Concatenates the owned parts of route vectors (the unknowns of an acceleration) and back."""

    def __init__(self, routes: list[Route]):
        self.routes = routes
        sizes = [r.value.getLocalSize() for r in routes]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def pack(self, attr: str) -> np.ndarray:
        parts = [getattr(r, attr).getArray(readonly=True) for r in self.routes]
        return np.concatenate(parts) if parts else np.zeros(0)

    def unpack(self, array: np.ndarray, attr: str) -> None:
        for r, a, b in zip(self.routes, self.bounds[:-1], self.bounds[1:]):
            getattr(r, attr).getArray()[...] = array[a:b]

    def to_natural(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of packed arrays -> per route, an array ``(n_rows, global size)`` in natural order. Collective."""
        out = {}
        for r, a, b in zip(self.routes, self.bounds[:-1], self.bounds[1:]):
            nat = []
            for row in rows:
                r.work.getArray()[...] = row[a:b]
                nat.append(to_natural(r.layout, r.work))
            out[r.name] = np.asarray(nat)
        return out

    def from_natural(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        n_rows = len(next(iter(arrays.values()))) if arrays else 0
        rows = np.zeros((n_rows, self.bounds[-1]))
        for r, a, b in zip(self.routes, self.bounds[:-1], self.bounds[1:]):
            for i in range(n_rows):
                from_natural(r.layout, arrays[r.name][i], r.work)
                rows[i, a:b] = r.work.getArray(readonly=True)
        return rows


class CouplingScheme:
    """Runs windows of a configured scheme over components (module docstring).

    Parameters
    ----------
    config : twin.config.coupling.CouplingConfig
    components : dict name -> Component
    comm : mpi4py communicator
    """

    def __init__(self, config, components: dict[str, Component], comm):
        self.config = config
        self.spec = config.scheme
        self.components = components
        self.comm = comm
        self.order = [components[n] for n in (self.spec.order or config.components)]
        self.routes = [Route(r, components[r.source[0]], components[r.target[0]]) for r in config.routes]
        self.by_name = {r.name: r for r in self.routes}
        if self.spec.accelerated is not None:
            acc = [self.by_name[n] for n in self.spec.accelerated]
        elif self.spec.serial:
            acc = [r for r in self.routes if r.target is self.order[0]]
        else:
            acc = list(self.routes)
        self.accelerated = acc
        self.packer = Packer(acc)
        self.acceleration = make_acceleration(self.spec.acceleration, comm) if self.spec.implicit else None
        self.window = 0
        self.initialized = False
        self.history: list[float] = []        # explicit schemes: total residual per window
        self.history_rel: list[float] = []

    def start_afresh(self) -> None:
        """Make the next advance a trajectory of its own: its route data computed from the state it is given
        (:meth:`initialize`), no divergence history and no acceleration memory of earlier windows. What a campaign
        asks before each member's forecast: the members share this scheme, and the next member started from the
        data, the quasi-Newton columns and the residual history the member before left (found by a probe: a 10 %
        different atmosphere in one member changed the next member's mast by 33 %)."""
        self.initialized = False
        self.history.clear()
        self.history_rel.clear()
        if self.acceleration is not None:
            self.acceleration = make_acceleration(self.spec.acceleration, self.comm)

    # -- data exchange -----------------------------------------------------------------------------------------------
    def initialize(self) -> None:
        """Fill every route's data from the components' current states (before the first window).

        In the scheme's order, each component first receives the data the components before it just sent, then
        sends: a component whose exports depend on its imports (the tissue's stress on the tumour's growth strain)
        exports what its own state and the current states of the others give, not what the imports it was left with
        by the trajectory it advanced before (another ensemble member's) would give. A campaign member's forecast,
        and its resume, then depend on its own state only."""
        sent: set[int] = set()
        for comp in self.order:
            for r in self.routes:
                if r.target is comp and id(r.source) in sent:
                    comp.model.set_import(r.target_field, r.received)
            self._send(comp)
            sent.add(id(comp))
        for r in self.routes:
            r.received.copy(r.value)
            r.received.copy(r.start)
        self.initialized = True

    def _send(self, comp: Component) -> list[Route]:
        routes = [r for r in self.routes if r.source is comp]
        if routes:
            exports = comp.model.exports(comp.state)
            for r in routes:
                r.receive(exports)
        return routes

    def _advance(self, comp: Component, t0: float, t1: float, diag: WindowDiagnostics) -> None:
        tic = time.perf_counter()
        incoming = [r for r in self.routes if r.target is comp]
        m = comp.substeps
        for k in range(1, m + 1):
            theta = k / m
            for r in incoming:
                data = r.value
                if self.config.time_interpolation == "linear" and k < m:
                    r.work.waxpy(-1.0, r.start, r.value)          # value - start
                    r.work.aypx(theta, r.start)                   # start + theta (value - start)
                    data = r.work
                comp.model.set_import(r.target_field, data)
            ta, tb = t0 + (t1 - t0) * (k - 1) / m, t0 + (t1 - t0) * k / m
            comp.model.advance(comp.state, ta * comp.time_factor, tb * comp.time_factor)
        diag.seconds[comp.name] = diag.seconds.get(comp.name, 0.0) + time.perf_counter() - tic

    def _residual(self, r: Route, diag: WindowDiagnostics) -> tuple[float, float]:
        r.work.waxpy(-1.0, r.value, r.received)
        res, size = r.work.norm(), r.received.norm()
        if not (np.isfinite(res) and np.isfinite(size)):
            raise CouplingError(f"coupling window {self.window} [{diag.t0:g}, {diag.t1:g}]: field {r.name} is not "
                                f"finite (sent by '{r.source.name}')")
        rel = res / size if size > 0 else res
        diag.residuals.setdefault(r.name, []).append(res)
        diag.relative.setdefault(r.name, []).append(rel)
        return res, rel

    # -- windows -----------------------------------------------------------------------------------------------------
    def run_window(self, t0: float, t1: float) -> WindowDiagnostics:
        """Advance every component's state from ``t0`` to ``t1`` (coupled time units) by the scheme."""
        if not self.initialized:
            self.initialize()
        diag = WindowDiagnostics(self.window, t0, t1)
        if self.spec.implicit:
            self._implicit(t0, t1, diag)
        else:
            self._explicit(t0, t1, diag)
        for r in self.routes:
            r.value.copy(r.start)
        self.window += 1
        return diag

    def _explicit(self, t0, t1, diag):
        total, data = 0.0, 0.0
        if self.spec.serial:
            first, second = self.order
            self._advance(first, t0, t1, diag)
            for r in self._send(first):
                r.received.copy(r.value)
            self._advance(second, t0, t1, diag)
            back = self._send(second)
        else:
            for comp in self.order:
                self._advance(comp, t0, t1, diag)
            back = [r for comp in self.order for r in self._send(comp)]
        for r in back:
            res, _ = self._residual(r, diag)
            total += res ** 2
            data += r.received.norm() ** 2
            r.received.copy(r.value)
        diag.iterations = 1
        self._watch(np.sqrt(total), np.sqrt(total) / np.sqrt(data) if data > 0 else np.inf, diag)

    def _watch(self, residual: float, relative: float, diag: WindowDiagnostics) -> None:
        div = self.spec.divergence
        self.history.append(residual)
        self.history_rel.append(relative)
        h = self.history[-(div.windows + 1):]
        growing = len(h) == div.windows + 1 and all(b >= div.factor * a and a > 0 for a, b in zip(h[:-1], h[1:]))
        if growing and min(self.history_rel[-div.windows:]) >= div.relative:
            raise CouplingError(
                f"explicit coupling ({self.spec.kind}) is unstable: the interface residual grew by at least "
                f"{div.factor}x in each of the last {div.windows} windows (window {self.window}, t in [{diag.t0:g}, "
                f"{diag.t1:g}]), fields {[r.name for r in self.routes]}; residual history "
                f"{[float(f'{v:.3e}') for v in self.history[-(div.windows + 3):]]}, relative "
                f"{[float(f'{v:.3g}') for v in self.history_rel[-(div.windows + 3):]]}. Use an implicit scheme, "
                f"exchange which component receives which interface condition, or shorten the window")
        # keep only what the test needs (bounded checkpoint)
        del self.history[: -(div.windows + 3)]
        del self.history_rel[: -(div.windows + 3)]

    def _save(self) -> None:
        for comp in self.order:
            if comp.saved is None:
                comp.saved = comp.state.duplicate()
            comp.state.copy(comp.saved)

    def _restore(self) -> None:
        for comp in self.order:
            comp.saved.copy(comp.state)

    def _implicit(self, t0, t1, diag):
        spec, acc = self.spec, self.acceleration
        self._save()
        acc.start_window()
        measured = {m.field for m in spec.convergence}
        accelerated = set(id(r) for r in self.accelerated)
        for k in range(1, spec.max_iterations + 1):
            if k > 1:
                self._restore()
            sent: list[Route] = []
            stages = [[c] for c in self.order] if spec.serial else [list(self.order)]
            for stage in stages:
                for comp in stage:
                    self._advance(comp, t0, t1, diag)
                for comp in stage:
                    for r in self._send(comp):
                        if id(r) not in accelerated:
                            if r.name in measured:
                                self._residual(r, diag)
                            r.received.copy(r.value)
                        sent.append(r)
            for r in self.accelerated:
                if r.name in measured:
                    self._residual(r, diag)
            diag.iterations = k
            # converged when two iterates agree: the first iteration's residual compares the partners' new data with
            # data from before the window, which a component that does not change it (a static solve fed stale data
            # first) meets at once, so a measure on that field "converged" in one iteration (found by a probe: with
            # the parallel scheme or the other order, every second window of tumour_mechanics stopped at iteration
            # 1 with the stress 10 % off)
            if k > 1 and self._converged(diag):
                break
            if k == spec.max_iterations:
                msg = (f"coupling window {self.window} [{t0:g}, {t1:g}] did not converge in {k} iterations "
                       f"({spec.kind}, {spec.acceleration.kind}); fields {sorted(measured)}; residual history "
                       f"{_history_text(diag.residuals)}")
                if not spec.allow_nonconvergence:
                    raise CouplingError(msg + "; raise max_iterations, change the acceleration or set "
                                              "allow_nonconvergence: true")
                log.warning("%s; continuing (allow_nonconvergence)", msg)
                diag.converged = False
                break
            x_new = acc.step(self.packer.pack("value"), self.packer.pack("received"))
            if not np.all(np.isfinite(x_new)):
                raise CouplingError(f"coupling window {self.window} [{t0:g}, {t1:g}]: the {spec.acceleration.kind} "
                                    f"update is not finite at iteration {k}")
            self.packer.unpack(x_new, "value")
        for r in self.accelerated:
            r.received.copy(r.value)
        acc.end_window()

    def _converged(self, diag: WindowDiagnostics) -> bool:
        for m in self.spec.convergence:
            values = diag.residuals if m.kind == "absolute" else diag.relative
            if values[m.field][-1] >= m.limit:
                return False
        return True

    # -- checkpointing -----------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Route data and acceleration history as natural-order arrays (same on every rank) + JSON. Collective."""
        arrays: dict[str, np.ndarray] = {}
        for r in self.routes:
            arrays[f"route/{r.name}/value"] = to_natural(r.layout, r.value)
            arrays[f"route/{r.name}/start"] = to_natural(r.layout, r.start)
        meta: dict[str, Any] = {"window": self.window, "initialized": self.initialized,
                                "history": list(self.history), "history_rel": list(self.history_rel)}
        if self.acceleration is not None:
            acc_arrays, acc_meta = self.acceleration.state()
            # every rank must take part in the gathers, so ask for the keys every rank has
            for key in ("previous", "V", "W", "previous_r", "previous_xt"):
                has = self.comm.allreduce(int(key in acc_arrays), op=MPI.MAX)
                if has:
                    for name, nat in self.packer.to_natural(acc_arrays[key]).items():
                        arrays[f"acceleration/{key}/{name}"] = nat
            meta["acceleration"] = acc_meta
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`state` (on any number of ranks; bitwise continuation on the same ranks)."""
        try:
            for r in self.routes:
                from_natural(r.layout, arrays[f"route/{r.name}/value"], r.value)
                from_natural(r.layout, arrays[f"route/{r.name}/start"], r.start)
            self.window = int(meta["window"])
            self.initialized = bool(meta["initialized"])
            self.history = [float(v) for v in meta["history"]]
            self.history_rel = [float(v) for v in meta["history_rel"]]
            if self.acceleration is not None:
                acc_arrays = {}
                for key in ("previous", "V", "W", "previous_r", "previous_xt"):
                    parts = {r.name: arrays[f"acceleration/{key}/{r.name}"] for r in self.accelerated
                             if f"acceleration/{key}/{r.name}" in arrays}
                    if parts:
                        acc_arrays[key] = self.packer.from_natural(parts)
                self.acceleration.restore(acc_arrays, meta["acceleration"])
        except KeyError as exc:
            raise CouplingError(f"coupling checkpoint is incomplete: missing {exc}") from None

    def destroy(self) -> None:
        for r in self.routes:
            r.destroy()
        for comp in self.order:
            if comp.saved is not None:
                comp.saved.destroy()
                comp.saved = None

