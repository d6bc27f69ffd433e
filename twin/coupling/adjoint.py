"""The discrete adjoint of a coupled model's explicit and (converged) implicit windows.

Forward window (explicit schemes, :mod:`twin.coupling.schemes`)
---------------------------------------------------------------
The route data ``v_r`` (mapped exports, one vector per route ``r``) at a window start are ``start_r = cur_r = v_r``.
The components advance in *stages*: ``[[A], [B]]`` for ``explicit_serial`` (order ``A, B``), one stage with every
component for ``explicit_parallel``. In a stage, component ``c`` takes ``m_c`` sub-steps ``x_c <- Phi_c(x_c, g^k)``
with imports ``g^k_r = start_r + theta_k (cur_r - start_r)``, ``theta_k = k / m_c`` (``time_interpolation: linear``,
``k < m_c``) or ``g^k_r = cur_r``; then each component of the stage exports ``e_c(x_c, g_c, p_c)`` (``g_c`` its
imports, ``cur`` of the routes into ``c``) and the routes it sends get ``cur_r <- s_r M_r e_c[f_r]`` (``M_r`` the
grid map, ``s_r`` the route's scale). The window ends with ``v_r = cur_r``.

Backward window
---------------
With ``lam_c = dJ/dx_c`` and ``dcur_r = dJ/dv_r`` at the window end, the stages are reversed: ``drecv_r = dcur_r``,
``dcur_r = 0`` for the routes the stage sends; the component's ``export_adjoint`` takes the cotangents
``s_r M_r^T drecv_r`` of its exports into ``lam_c``, its parameters and its imports (``dcur`` of its incoming
routes); then the sub-steps are reversed, each by the component's own ``adjoint`` (PETSc TSAdjoint in the models),
which also returns ``dJ/dg^k`` (parameter key ``"import:<field>"``), split by the transposed time interpolation into
``dcur_r += theta_k dg`` and ``dstart_r += (1 - theta_k) dg``. Finally ``dJ/dv_r = dcur_r + dstart_r``. The
transposes of the glue (maps: ``MatMultTranspose``; the interpolation weights) are written here by hand: they are
the exact transposes of the few linear operations the scheme does, and the Taylor tests check them.

Implicit windows
----------------
An implicit window (``implicit_serial`` / ``implicit_parallel``) repeats one *pass* of the stages above from the
window-start states ``x0`` until the interface data converge. Let ``g`` be the data of the routes a pass reads before
it writes them (routes into the first component for serial staggering, every route for parallel) and
``(x1, G, N) = Phi(x0, s, g, p)`` one pass: end states, the new data of those routes and of the others, with ``s``
the route data at the window start (time interpolation) and ``p`` the parameters. The window returns
``(x1, v_g = g*, v_N)`` at the converged ``g* = G(x0, s, g*, p)``; the forward's acceleration (constant, Aitken,
IQN-ILS) only decides how ``g*`` is reached, so it does not enter the derivative of the converged fixed point. By the
implicit-function theorem, with ``omega = (lam, dv_g, dv_N)`` the cotangents of the window's outputs and ``mu`` the
total cotangent of the ``g`` outputs,

    mu = dv_g + (dPhi/dg)^T (lam, mu, dv_N),        dJ/d(x0, s, p) = (dPhi/d(x0, s, p))^T (lam, mu, dv_N),

i.e. the adjoint fixed point ``mu = (dG/dg)^T mu + dJ/dg``. Each product with ``(dPhi/dg)^T`` is one backward pass
of the explicit machinery above run at ``g*`` (component adjoints, export adjoints, transposed maps and
interpolation), so the adjoint iteration has the spectrum of the forward's (``(dG/dg)^T`` has the eigenvalues of
``dG/dg``) and converges at the rate of the forward iteration. It is solved by a fresh instance of the scheme's
acceleration (its own history: the forward's belongs to the forward iteration) to the scheme's smallest relative
convergence limit (1e-10 without one), within ``max_iterations``; otherwise :class:`CouplingError` names the window.
The last backward pass (at the converged ``mu``) gives the state, parameter and start-data cotangents, so a window costs
as many backward passes as adjoint iterations. The pass is re-run at the converged data ``g*`` that
:meth:`~twin.coupling.coupled.CoupledModel.record` keeps per window (:attr:`~twin.coupling.tape.TapeEntry.windows`: the
route data at each window end, interface fields only); a window that did not converge in the forward
(``allow_nonconvergence``) has no fixed point to differentiate and the adjoint refuses it with :class:`CouplingError`.
The converged data satisfy the fixed point to the forward's tolerance, so the gradient is that of the converged map to
that accuracy.

Coupling data
-------------
The route data at the start of an ``advance`` call are part of the trajectory without being in the state vector;
:class:`~twin.coupling.tape.CouplingTape` keeps them, with the state, for each recorded call. The adjoint
(:meth:`CoupledAdjoint.run`) recomputes a call's forward run from its :class:`~twin.coupling.tape.TapeEntry`
(keeping every sub-step's component state in memory, ``O(steps x state)``) and returns the cotangent of the route
data at the call's start, which the adjoint of the previous call takes (:mod:`twin.coupling.tape`).

Contract used of the components (see twin/models/base.py)
---------------------------------------------------------------
* ``adjoint(state0, t0, t1, lam, parameters)`` accepts ``"import:<field>"`` in ``parameters`` and returns
  ``dJ/dg`` for that import (a vector on ``field_grid(field)``), the data being held constant over ``[t0, t1]``;
* ``export_adjoint(state, cotangents, lam, parameters)`` adds ``sum_e (de/dx)^T cotangents[e]`` to ``lam`` and
  returns ``sum_e (de/dp)^T cotangents[e]`` for each requested name (parameters and ``"import:<field>"``), with the
  exports ``e`` of :meth:`~twin.models.base.Model.exports` at ``state`` and the component's current imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.errors import CouplingError, ModelError
from twin.core.log import get_logger
from twin.coupling.acceleration import make_acceleration
from twin.coupling.schemes import Component, CouplingScheme
from twin.coupling.tape import TapeEntry, same_state
from twin.models.base import IMPORT_PREFIX, Model

log = get_logger("twin.coupling.adjoint")


@dataclass
class _WindowRecord:
    """What the backward pass of one window needs from its forward recomputation."""

    t0: float
    t1: float
    start: dict[str, PETSc.Vec]
    stage_data: list[dict[str, PETSc.Vec]] = field(default_factory=list)   # cur at each stage's start
    substates: dict[str, list[PETSc.Vec]] = field(default_factory=dict)   # component state before each sub-step
    final: dict[str, PETSc.Vec] = field(default_factory=dict)             # component state after its sub-steps

    def destroy(self) -> None:
        vecs = list(self.start.values()) + [v for d in self.stage_data for v in d.values()]
        vecs += [v for lst in self.substates.values() for v in lst] + list(self.final.values())
        for v in vecs:
            v.destroy()


def stages(scheme: CouplingScheme) -> list[list[Component]]:
    """The components of an explicit window in the groups that advance before exchanging (module docstring)."""
    return [[c] for c in scheme.order] if scheme.spec.serial else [list(scheme.order)]


class CoupledAdjoint:
    """Backward pass of :class:`~twin.coupling.coupled.CoupledModel` over one ``advance`` call (module docstring).

    Parameters
    ----------
    model : CoupledModel
    parameters : sequence of str
        Requested coupled parameter names ``<component>.<name>``.
    """

    def __init__(self, model, parameters: Sequence[str]):
        self.model = model
        self.scheme: CouplingScheme = model.scheme
        self.requested: dict[str, list[str]] = {c: [] for c in model.models}
        for name in parameters:
            comp, pname = self._split(name)
            self.requested[comp].append(pname)
        self.incoming = {c: [r for r in self.scheme.routes if r.target.name == c] for c in model.models}
        self.outgoing = {c: [r for r in self.scheme.routes if r.source.name == c] for c in model.models}
        for c, routes in self.outgoing.items():
            if routes and type(model.models[c]).export_adjoint is Model.export_adjoint:
                raise ModelError(model.name, f"component '{c}' (type '{model.models[c].type_name}') sends "
                                             f"{[r.spec.from_ for r in routes]} but has no export_adjoint, so its "
                                             f"exports cannot be differentiated")
        self.linear = self.scheme.config.time_interpolation == "linear"
        # the unknowns g of an implicit window: routes read in a pass before their sender has written them
        stage_of = {c.name: i for i, stage in enumerate(stages(self.scheme)) for c in stage}
        self.unknowns = [r for r in self.scheme.routes if stage_of[r.source.name] >= stage_of[r.target.name]]
        # a fresh instance of the scheme's acceleration solves the adjoint fixed points (never the forward's: its
        # history belongs to the forward iteration)
        self.acceleration = make_acceleration(self.scheme.spec.acceleration, model.comm) \
            if self.scheme.spec.implicit else None
        #: component states after their sub-steps in the window being reversed (for the export adjoints)
        self._final: dict[str, PETSc.Vec] = {}

    def _split(self, name: str) -> tuple[str, str]:
        comp, _, rest = name.partition(".")
        if comp not in self.model.models or not rest:
            raise ModelError(self.model.name, f"adjoint parameter '{name}' must be <component>.<name> with a "
                                              f"component in {sorted(self.model.models)}")
        if rest not in self.model.models[comp].parameters:
            raise ModelError(self.model.name, f"component '{comp}' has no parameter '{rest}'; known: "
                                              f"{sorted(self.model.models[comp].parameters)}")
        return comp, rest

    # -- forward recomputation ---------------------------------------------------------------------------------------
    def _imports(self, comp: Component, start: dict[str, PETSc.Vec], cur: dict[str, PETSc.Vec], k: int) -> list:
        """Set ``comp``'s imports for sub-step ``k`` exactly as the scheme does; returns ``(route, theta)`` pairs."""
        m = comp.substeps
        out = []
        for r in self.incoming[comp.name]:
            data, theta = cur[r.name], 1.0
            if self.linear and k < m:
                theta = k / m
                r.work.waxpy(-1.0, start[r.name], cur[r.name])
                r.work.aypx(theta, start[r.name])
                data = r.work
            comp.model.set_import(r.target_field, data)
            out.append((r, theta))
        return out

    def _window_forward(self, x: dict[str, PETSc.Vec], start: dict[str, PETSc.Vec], data: dict[str, PETSc.Vec],
                        t0: float, t1: float) -> _WindowRecord:
        """One pass over the window from the route data ``start`` (window start) and ``data`` (``cur``, updated in
        place as the stages send), keeping what :meth:`_window_backward` needs."""
        rec = _WindowRecord(t0, t1, {n: v.copy() for n, v in start.items()})
        for stage in stages(self.scheme):
            rec.stage_data.append({n: v.copy() for n, v in data.items()})
            for comp in stage:
                m, states = comp.substeps, rec.substates.setdefault(comp.name, [])
                for k in range(1, m + 1):
                    self._imports(comp, rec.start, data, k)
                    states.append(x[comp.name].copy())
                    ta, tb = t0 + (t1 - t0) * (k - 1) / m, t0 + (t1 - t0) * k / m
                    comp.model.advance(x[comp.name], ta * comp.time_factor, tb * comp.time_factor)
                rec.final[comp.name] = x[comp.name].copy()
            received = {}
            for comp in stage:
                if self.outgoing[comp.name]:
                    exports = comp.model.exports(x[comp.name])
                    for r in self.outgoing[comp.name]:
                        r.receive(exports)
                        received[r.name] = r.received.copy()
                    for v in exports.values():
                        v.destroy()
            for name, v in received.items():
                v.copy(data[name])
                v.destroy()
        return rec

    # -- backward ----------------------------------------------------------------------------------------------------
    def _window_backward(self, rec: _WindowRecord, lam: dict[str, PETSc.Vec], dcur: dict[str, PETSc.Vec],
                         grads: dict[str, dict[str, Any]], merge: bool = True) -> dict[str, PETSc.Vec] | None:
        """Reverse one pass. With ``merge`` the cotangent of the start data is added to ``dcur`` (explicit windows:
        start and cur are the same data); otherwise ``dcur`` ends as ``dJ/dcur`` at the pass start and the
        cotangent of the start data is returned (new vectors, owned by the caller)."""
        dstart = {n: v.duplicate() for n, v in dcur.items()}
        for v in dstart.values():
            v.set(0.0)
        for s, stage in reversed(list(enumerate(stages(self.scheme)))):
            cur = rec.stage_data[s]
            drecv = {}
            for comp in stage:
                for r in self.outgoing[comp.name]:
                    drecv[r.name] = dcur[r.name].copy()
                    dcur[r.name].set(0.0)
            for comp in stage:
                if self.outgoing[comp.name]:
                    self._export_backward(comp, cur, drecv, lam, dcur, grads)
            for comp in stage:
                for k in range(comp.substeps, 0, -1):
                    pairs = self._imports(comp, rec.start, cur, k)
                    m = comp.substeps
                    ta, tb = rec.t0 + (rec.t1 - rec.t0) * (k - 1) / m, rec.t0 + (rec.t1 - rec.t0) * k / m
                    names = self.requested[comp.name] + [IMPORT_PREFIX + r.target_field for r, _ in pairs]
                    res = comp.model.adjoint(rec.substates[comp.name][k - 1], ta * comp.time_factor,
                                             tb * comp.time_factor, lam[comp.name], names)
                    for r, theta in pairs:
                        dg = _take(res, IMPORT_PREFIX + r.target_field, comp.name)
                        dcur[r.name].axpy(theta, dg)
                        if theta != 1.0:
                            dstart[r.name].axpy(1.0 - theta, dg)
                        dg.destroy()
                    _accumulate(grads[comp.name], res, self.requested[comp.name], comp.name)
            for v in drecv.values():
                v.destroy()
        if not merge:
            return dstart
        for n, v in dstart.items():
            dcur[n].axpy(1.0, v)
            v.destroy()
        return None

    def _implicit_backward(self, rec: _WindowRecord, lam: dict[str, PETSc.Vec], dv: dict[str, PETSc.Vec],
                           grads: dict[str, dict[str, Any]], index: int) -> int:
        """Adjoint of a converged implicit window (module docstring, "Implicit windows"); ``lam`` and ``dv`` go
        from the window end to its start in place. Returns the number of adjoint iterations."""
        spec, comm = self.scheme.spec, self.model.comm
        names = [r.name for r in self.unknowns]
        rtol = max(min([m.limit for m in spec.convergence if m.kind == "relative"], default=1e-10), 1e-13)
        acc = self.acceleration
        b = _pack(dv, names)
        mu = b.copy()
        history: list[float] = []

        def dot(u: np.ndarray, w: np.ndarray) -> float:
            return float(comm.allreduce(float(np.dot(u, w))))

        acc.start_window()
        for k in range(1, spec.max_iterations + 1):
            lam_k = {c: v.copy() for c, v in lam.items()}
            dcur = {n: v.copy() for n, v in dv.items()}
            _unpack(mu, names, dcur)
            grads_k: dict[str, dict[str, Any]] = {c: {} for c in grads}
            dstart = self._window_backward(rec, lam_k, dcur, grads_k, merge=False)
            # dcur now holds (dPhi/dg)^T (lam, mu, dv_N): the image of mu is dv_g + that
            res = b + _pack(dcur, names) - mu
            rn, size = np.sqrt(dot(res, res)), np.sqrt(dot(mu + res, mu + res))
            history.append(rn / size if size > 0 else rn)
            done = rn <= rtol * size or rn == 0.0
            if done:
                for c, v in lam_k.items():
                    v.copy(lam[c])
                for n, v in dv.items():
                    dstart[n].copy(v)
                    if n not in names:
                        v.axpy(1.0, dcur[n])
                for c, got in grads_k.items():
                    _accumulate(grads[c], got, list(got), c)
            else:
                for got in grads_k.values():
                    for v in got.values():
                        if isinstance(v, PETSc.Vec):
                            v.destroy()
            for v in (*lam_k.values(), *dcur.values(), *dstart.values()):
                v.destroy()
            if done:
                acc.end_window()
                return k
            mu = acc.step(mu, mu + res)
            if not bool(comm.allreduce(bool(np.all(np.isfinite(mu))), op=MPI.LAND)):
                raise CouplingError(f"adjoint of coupling window {index} [{rec.t0:g}, {rec.t1:g}] of "
                                    f"'{self.model.name}': the {spec.acceleration.kind} update is not finite at "
                                    f"iteration {k}")
        raise CouplingError(
            f"adjoint of coupling window {index} [{rec.t0:g}, {rec.t1:g}] of '{self.model.name}' ({spec.kind}): the "
            f"adjoint fixed point mu = (dG/dg)^T mu + dJ/dg did not converge in {spec.max_iterations} iterations to "
            f"relative tolerance {rtol:g} (fields {names}); relative residual history "
            f"{[float(f'{v:.3e}') for v in history[-8:]]}; raise scheme.max_iterations")

    def _export_backward(self, comp: Component, cur, drecv, lam, dcur, grads) -> None:
        """Reverse of ``cur_r <- s_r M_r e_c[f_r]`` for the routes ``comp`` sends, at the export-time imports."""
        for r in self.incoming[comp.name]:
            comp.model.set_import(r.target_field, cur[r.name])
        cot: dict[str, PETSc.Vec] = {}
        for r in self.outgoing[comp.name]:
            back = r.map.apply_transpose(drecv[r.name])
            if r.scale != 1.0:
                back.scale(r.scale)
            if r.source_field in cot:
                cot[r.source_field].axpy(1.0, back)
                back.destroy()
            else:
                cot[r.source_field] = back
        names = self.requested[comp.name] + [IMPORT_PREFIX + r.target_field for r in self.incoming[comp.name]]
        final = self._final[comp.name]
        res = comp.model.export_adjoint(final, cot, lam[comp.name], names)
        for r in self.incoming[comp.name]:
            dg = _take(res, IMPORT_PREFIX + r.target_field, comp.name)
            dcur[r.name].axpy(1.0, dg)
            dg.destroy()
        _accumulate(grads[comp.name], res, self.requested[comp.name], comp.name)
        for v in cot.values():
            v.destroy()

    def _check_implicit_record(self, entry: TapeEntry, windows: list[tuple[float, float]]) -> None:
        """Before any solve: the forward kept the converged data of every window, and every window converged."""
        name = self.model.name
        if len(entry.windows) != len(windows):
            raise ModelError(name, f"adjoint from t={entry.time:g}: the recorded run kept the converged interface "
                                   f"data of {len(entry.windows)} window(s), {len(windows)} needed; run the forward "
                                   f"over the same interval with record()")
        bad = [f"[{a:g}, {b:g}]" for (a, b), ok in zip(windows, entry.converged) if not ok]
        if bad:
            raise CouplingError(f"adjoint of '{name}': coupling window(s) {bad} did not converge in the forward run "
                                f"(allow_nonconvergence), so the adjoint of the converged fixed point does not apply; "
                                f"raise scheme.max_iterations or improve the acceleration until every window converges")

    # -- one advance call -----------------------------------------------------------------------------------------------
    def run(self, entry: TapeEntry, t0: float, t1: float, lam: PETSc.Vec, pending) -> tuple[dict[str, Any], dict]:
        """Recompute the call's forward run from ``entry``, then take ``lam`` (coupled layout) from dJ/dx(t1) to
        dJ/dx(t0) in place. ``pending`` is the route cotangent handed down by the adjoint of the next call (or
        ``None``). Returns the coupled parameter gradients and the route cotangents at ``t0``."""
        model = self.model
        x = model.split(entry.state)
        data = {n: v.copy() for n, v in entry.routes.items()}
        records: list[_WindowRecord] = []
        lam_c = model.split(lam)
        grads: dict[str, dict[str, Any]] = {c: {} for c in model.models}
        dcur: dict[str, PETSc.Vec] = {}
        windows = model.windows(t0, t1)
        implicit = self.scheme.spec.implicit
        if implicit:
            self._check_implicit_record(entry, windows)
        unknowns = {r.name for r in self.unknowns}
        try:
            for i, (a, b) in enumerate(windows):
                if implicit:
                    # one pass with the converged data g* of the window (the forward's last pass)
                    start = entry.routes if i == 0 else entry.windows[i - 1]
                    for n, v in data.items():
                        (entry.windows[i] if n in unknowns else start)[n].copy(v)
                    records.append(self._window_forward(x, start, data, a, b))
                else:
                    records.append(self._window_forward(x, data, data, a, b))
            end = model.create_state()
            for c, v in x.items():
                view = model.component_view(end, c)
                v.copy(view)
                model.restore_view(end, c, view)
            use = pending is not None and abs(pending["time"] - t1) <= model.tape.tolerance and \
                same_state(pending["state"], end, rtol=1e-10)
            end.destroy()
            for r in self.scheme.routes:
                dcur[r.name] = pending["routes"][r.name].copy() if use else r.value.duplicate()
                if not use:
                    dcur[r.name].set(0.0)
            for i in reversed(range(len(records))):
                rec = records[i]
                self._final = rec.final
                if implicit:
                    its = self._implicit_backward(rec, lam_c, dcur, grads, i)
                    log.debug("%s adjoint window %d [%g, %g]: %d iteration(s)", model.name, i, rec.t0, rec.t1, its)
                else:
                    self._window_backward(rec, lam_c, dcur, grads)
            for c, v in lam_c.items():
                view = model.component_view(lam, c)
                v.copy(view)
                model.restore_view(lam, c, view)
        finally:
            for v in list(x.values()) + list(data.values()) + list(lam_c.values()):
                v.destroy()
            for rec in records:
                rec.destroy()
            self._final = {}
        out = {}
        for c, names in self.requested.items():
            for p in names:
                out[f"{c}.{p}"] = grads[c].get(p, 0.0)
        return out, dcur


def _pack(vecs: dict[str, PETSc.Vec], names: Sequence[str]) -> np.ndarray:
    """The owned parts of ``vecs[n]`` for ``n`` in ``names``, concatenated (a copy)."""
    parts = [vecs[n].getArray(readonly=True) for n in names]
    return np.concatenate(parts) if parts else np.zeros(0)


def _unpack(array: np.ndarray, names: Sequence[str], vecs: dict[str, PETSc.Vec]) -> None:
    """Inverse of :func:`_pack` into existing vectors."""
    pos = 0
    for n in names:
        a = vecs[n].getArray()
        a[...] = array[pos:pos + a.size]
        pos += a.size


def _take(result: dict[str, Any], key: str, component: str) -> PETSc.Vec:
    value = result.get(key)
    if not isinstance(value, PETSc.Vec):
        raise ModelError(component, f"the adjoint returned no import sensitivity '{key}' (a vector); a coupled "
                                    f"component's adjoint must accept '{IMPORT_PREFIX}<field>' requests")
    return value


def _accumulate(acc: dict[str, Any], result: dict[str, Any], names: Sequence[str], component: str) -> None:
    for p in names:
        if p not in result:
            raise ModelError(component, f"the adjoint returned no gradient for parameter '{p}'")
        v = result[p]
        if isinstance(v, PETSc.Vec):
            if p in acc:
                acc[p].axpy(1.0, v)
                v.destroy()
            else:
                acc[p] = v
        else:
            acc[p] = acc.get(p, 0.0) + float(v)
