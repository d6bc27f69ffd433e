"""Strong-constraint 4D-Var: the cost function of one assimilation window and its gradient by the model's adjoint.

Cost, over a window ``[t0, t1]`` with observations ``y_k`` at times ``t0 <= t_k <= t1``::

    J(x0, p) = 1/2 |x0 - xb|^2_{B^-1} + 1/2 |T(p) - T(pb)|^2_{Bp^-1} + 1/2 sum_k |y_k - H_k(x(t_k))|^2_{R_k^-1}

``x(t)`` is the model trajectory from ``x0`` with parameters ``p`` (:meth:`Model.advance`), ``xb`` the background
state, ``B`` its error covariance, ``T`` the parameter transform (``log`` for positive quantities, ``logit`` for
(0, 1), ``none``), ``pb`` the prior mean of the parameters and ``Bp`` the prior covariance in transformed space;
``R_k = diag(error_std^2)`` comes from each :class:`~twin.observations.base.ObservationOperator`.

Controls: the problem is solved in the variables of the control-variable transform::

    x0 = xb + B^{1/2} v,        T(p) = T(pb) + Bp^{1/2} w

so the background terms are ``1/2 |v|^2 + 1/2 |w|^2`` and the Hessian is ``I +`` (misfit Hessian), well conditioned.
Either part may be absent: no ``B`` means the initial state is not a control; no parameters means state-only 4D-Var.

Gradient, by the adjoint (no finite differences, no hand-written adjoint integrator): one forward pass stores the
states at the observation times; then, backwards over the observation times, ``lambda += H_k'^T R_k^-1 (H_k x_k -
y_k)`` is injected at ``t_k`` and :meth:`Model.adjoint` (PETSc TSAdjoint in the models) carries ``lambda`` to the
previous observation time and accumulates ``dJ/dp``. The forward pass of a gradient *records*
(:meth:`Model.record`: TS-based models keep the TS that ran each interval, with its trajectory) and the backward pass
consumes the records (:meth:`Model.adjoint_recorded`), so the forward is not run again: a gradient costs one forward
and one adjoint pass. Value-only evaluations (:meth:`FourDVar.value`) do not record. Finally
``dJ/dv = v + B^{T/2} lambda(t0)`` and ``dJ/dw = w + Bp^{T/2} (dT^-1/deta * dJ/dp)``.

Hessian-vector products are central finite differences of gradients (:meth:`FourDVar.hessian_mult`), exact up to
round-off for a linear model with linear observations (quadratic ``J``) and second-order accurate otherwise; a
second-order adjoint would need second-derivative callbacks that the model contract does not ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.assimilation.var_control import ControlSpace, ParameterControl
from twin.assimilation.covariance import CovarianceOperator
from twin.core.errors import AssimilationError, ObservationError
from twin.core.log import get_logger
from twin.models.base import Model
from twin.observations.base import ObservationOperator

log = get_logger(__name__)


@dataclass
class Observation:
    """Observations ``y`` of one operator at one time.

    Attributes
    ----------
    time : float
        In the model's time units.
    operator : ObservationOperator
        ``H`` (with its error standard deviations, ``R = diag(error_std^2)``).
    values : ndarray, shape (operator.n_obs,)
        ``y``, the same on every rank.
    """

    time: float
    operator: ObservationOperator
    values: np.ndarray

    def __post_init__(self):
        self.time = float(self.time)
        self.values = np.asarray(self.values, dtype=float).ravel()
        name = getattr(self.operator, "name", "obs")
        if not np.isfinite(self.time):
            raise ObservationError(f"observation '{name}': time must be finite, got {self.time}")
        if self.values.size != self.operator.n_obs:
            raise ObservationError(f"observation '{name}' at t={self.time:g}: {self.values.size} values for an "
                                   f"operator with {self.operator.n_obs} observations")
        if not np.all(np.isfinite(self.values)):
            raise ObservationError(f"observation '{name}' at t={self.time:g}: values must be finite")


def _schedule(t0: float, t1: float, observations: Sequence[Observation]) -> tuple[list[float], list[list[Observation]]]:
    """Distinct observation times in the window (``t0`` first) with the observations at each; validates times."""
    if not observations:
        raise AssimilationError(f"4D-Var window [{t0:g}, {t1:g}] has no observations: nothing to assimilate "
                                "(lengthen the window or check the observation times)")
    tol = 1e-9 * max(1.0, abs(t1 - t0))
    for ob in observations:
        if ob.time < t0 - tol or ob.time > t1 + tol:
            raise AssimilationError(f"observation '{ob.operator.name}' at t={ob.time:g} lies outside the 4D-Var "
                                    f"window [{t0:g}, {t1:g}]")
    times = [t0]
    groups: list[list[Observation]] = [[]]
    for ob in sorted(observations, key=lambda o: o.time):
        t = min(max(ob.time, t0), t1)
        if t - times[-1] > tol:
            times.append(t)
            groups.append([])
        groups[-1].append(ob)
    return times, groups


class FourDVar:
    """The reduced functional ``J(c)`` of one 4D-Var window, ``c = (v, w)`` the control vector.

    Parameters
    ----------
    model : Model
        Any model honouring the contract with an :meth:`~Model.adjoint`.
    window : (float, float)
        ``(t0, t1)``, model time units.
    observations : sequence of Observation
        At least one, all with ``t0 <= time <= t1``.
    background : PETSc.Vec
        ``xb``, the background (prior mean) state at ``t0``; copied. With ``B=None`` it is the fixed initial state.
    B : CovarianceOperator, optional
        Background-error covariance; ``None`` leaves the initial state out of the controls.
    parameters : sequence of ParameterControl
        Estimable parameters in the control vector.
    name : str
        Used in messages and as the start of TAO/KSP option prefixes.

    Notes
    -----
    Evaluating ``J`` sets the model's parameters to the evaluated control; :meth:`apply` sets the model to a given
    control (the analysis) explicitly. The last forward pass is cached: a gradient records its forward pass and
    consumes the records, a value at the point of the last gradient costs nothing, and a gradient at the point of the
    last value-only pass runs the forward again, recording.
    """

    def __init__(self, model: Model, window: tuple[float, float], observations: Sequence[Observation],
                 background: PETSc.Vec, B: CovarianceOperator | None = None,
                 parameters: Sequence[ParameterControl] = (), name: str = "fourdvar"):
        t0, t1 = (float(t) for t in window)
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 < t0:
            raise AssimilationError(f"4D-Var window [{t0}, {t1}] must be finite with t1 >= t0")
        if background is None:
            raise AssimilationError("4D-Var needs a background (initial) state for the window")
        if B is None and not parameters:
            raise AssimilationError("4D-Var has no controls: give a background covariance B (initial state) and/or "
                                    "estimable parameters")
        self.model = model
        self.name = name
        self.t0, self.t1 = t0, t1
        self.observations = list(observations)
        self.times, self.groups = _schedule(t0, t1, self.observations)
        self.B = B
        self.xb = background.copy()
        self.space = ControlSpace(model, B, parameters, name=name)
        self.n_forward = 0
        self.n_backward = 0
        self._cache: tuple[np.ndarray, dict] | None = None
        self._vs = model.create_state()

    # -- control <-> model --------------------------------------------------------------------------------------------
    @property
    def comm(self):
        """The PETSc communicator of the control vector."""
        return self.model.grid.da.getComm()

    def create_control(self) -> PETSc.Vec:
        """A zero control vector: the background state and the prior-mean parameters."""
        return self.space.create_vec()

    def initial_state(self, c: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec:
        """``x0 = xb + B^{1/2} v`` for control ``c`` (a new vector unless ``out`` is given)."""
        out = out if out is not None else self.model.create_state()
        self.xb.copy(out)
        if self.B is not None:
            self.space.get_state(c, self._vs)
            tmp = self.B.create_vec()
            self.B.sqrt_mult(self._vs, tmp)
            out.axpy(1.0, tmp)
            tmp.destroy()
        return out

    def apply(self, c: PETSc.Vec) -> None:
        """Set the model's estimable parameters to their values in control ``c``."""
        for name, value in self.space.parameter_values(c).items():
            self.model.set_parameter(name, value)
            if isinstance(value, PETSc.Vec):
                value.destroy()

    def parameter_values(self, c: PETSc.Vec) -> dict[str, Any]:
        """Physical parameter values of control ``c`` (floats; new vectors for fields)."""
        return self.space.parameter_values(c)

    def forecast(self, c: PETSc.Vec, t: float) -> PETSc.Vec:
        """The state at time ``t >= t0`` of the trajectory of control ``c`` (sets the model's parameters)."""
        self.apply(c)
        x = self.initial_state(c)
        if t > self.t0:
            self.model.advance(x, self.t0, t)
        return x

    # -- cost and gradient -------------------------------------------------------------------------------------------
    def _forward(self, c: PETSc.Vec, record: bool = False) -> dict:
        """The forward pass at ``c`` (cached). With ``record`` the model keeps, per observation interval, a tape
        (:meth:`Model.record`) for the adjoint; a cached pass without live tapes is then run again, recording."""
        key = c.getArray(readonly=True).copy()
        if self._cache is not None:
            same = self._cache[0].shape == key.shape and np.array_equal(self._cache[0], key)
            if self.model.grid.comm_mpi().allreduce(bool(same), op=_land()):
                cached = self._cache[1]
                if not record or cached["tapes"] is not None:
                    return cached
            self._drop_cache()
        self.apply(c)
        states = [self.initial_state(c)]
        tapes: list | None = [] if record else None
        self.n_forward += 1
        jo = 0.0
        weighted: list[list[np.ndarray]] = []
        for k, (t, group) in enumerate(zip(self.times, self.groups)):
            if k > 0:
                x = states[-1].copy()
                states.append(x)
                try:
                    if tapes is not None:
                        tapes.append(self.model.record(x, self.times[k - 1], t, self.space.parameter_names))
                    else:
                        self.model.advance(x, self.times[k - 1], t)
                except Exception:
                    _free(states, tapes)
                    raise
            wk = []
            for ob in group:
                d = ob.operator.apply(states[k]) - ob.values
                w = d / ob.operator.error_std**2
                jo += 0.5 * float(d @ w)
                wk.append(w)
            weighted.append(wk)
        jb = 0.5 * c.dot(c)
        result = {"J": jb + jo, "Jb": jb, "Jo": jo, "states": states, "weighted": weighted, "tapes": tapes}
        self._cache = (key, result)
        return result

    def _drop_cache(self) -> None:
        """Forget the cached forward pass: its states and any tapes (trajectories) not yet used."""
        if self._cache is not None:
            _free(self._cache[1]["states"], self._cache[1]["tapes"])
        self._cache = None

    def value(self, c: PETSc.Vec) -> float:
        """``J(c)``. Collective."""
        return self._forward(c)["J"]

    def terms(self, c: PETSc.Vec) -> dict[str, float]:
        """The background (``Jb``) and observation (``Jo``) parts of ``J(c)`` and the total ``J``."""
        r = self._forward(c)
        return {"J": r["J"], "Jb": r["Jb"], "Jo": r["Jo"]}

    def gradient(self, c: PETSc.Vec, g: PETSc.Vec) -> float:
        """Fill ``g`` with ``dJ/dc`` by the adjoint and return ``J(c)``. Collective.

        The forward pass records (unless a recorded pass at ``c`` is cached) and the adjoint consumes the tapes, so a
        gradient costs one forward and one backward pass; a second gradient at the same ``c`` records again.
        """
        r = self._forward(c, record=True)
        states, weighted, tapes = r["states"], r["weighted"], r["tapes"]
        # The tapes are consumed below (also on error): the cache keeps the states and J, not the tapes.
        r["tapes"] = None
        names = self.space.parameter_names
        lam = self.model.create_state()
        lam.set(0.0)
        dp: dict[str, Any] = {}
        try:
            for k in reversed(range(len(self.times))):
                for ob, w in zip(self.groups[k], weighted[k]):
                    ob.operator.apply_adjoint(states[k], w, lam)
                if k > 0:
                    seg = self.model.adjoint_recorded(tapes[k - 1], lam, names)
                    for p in names:
                        if p not in seg:
                            raise AssimilationError(f"model '{self.model.name}' returned no gradient for parameter "
                                                    f"'{p}'")
                        _accumulate(dp, p, seg[p])
        except BaseException:
            lam.destroy()
            _free([], tapes)
            raise
        self.n_backward += 1
        for p in names:
            dp.setdefault(p, 0.0)
        self.space.assemble_gradient(c, lam if self.B is not None else None, dp, g)
        lam.destroy()
        for v in dp.values():
            if isinstance(v, PETSc.Vec):
                v.destroy()
        return r["J"]

    def hessian_mult(self, c: PETSc.Vec, dc: PETSc.Vec, out: PETSc.Vec, step: float = 1e-4) -> None:
        """``out = H(c) dc`` by central differences of adjoint gradients, ``(g(c + e dc) - g(c - e dc)) / (2 e)``.

        ``e = step * max(1, |c|) / |dc|``: exact up to round-off when ``J`` is quadratic, error ``O(e^2)`` otherwise.
        """
        norm = dc.norm()
        if norm == 0.0:
            out.set(0.0)
            return
        e = step * max(1.0, c.norm()) / norm
        cp, gm = c.copy(), c.duplicate()
        cp.axpy(e, dc)
        self.gradient(cp, out)
        cp.axpy(-2.0 * e, dc)
        self.gradient(cp, gm)
        out.axpy(-1.0, gm)
        out.scale(0.5 / e)
        cp.destroy()
        gm.destroy()

    def innovations(self, c: PETSc.Vec) -> list[tuple[float, str, np.ndarray]]:
        """Normalised departures ``(H x_k - y_k) / error_std`` per observation: ``(time, operator name, array)``."""
        r = self._forward(c)
        out = []
        for k, group in enumerate(self.groups):
            for ob, w in zip(group, r["weighted"][k]):
                out.append((self.times[k], ob.operator.name, w * ob.operator.error_std))
        return out

    def destroy(self) -> None:
        """Free the vectors this functional owns (not the model, covariances or observation operators)."""
        self._drop_cache()
        self.space.destroy()
        for v in (self.xb, self._vs):
            v.destroy()


def _free(states: list, tapes: list | None) -> None:
    for x in states:
        x.destroy()
    for tape in tapes or ():
        tape.free()


def _land():
    from mpi4py import MPI

    return MPI.LAND


def _accumulate(acc: dict[str, Any], name: str, value: Any) -> None:
    if isinstance(value, PETSc.Vec):
        if name in acc:
            acc[name].axpy(1.0, value)
        else:
            acc[name] = value.copy()
    else:
        acc[name] = acc.get(name, 0.0) + float(value)
