"""Lorenz-96: the community's reference model for validating data-assimilation methods.

Equations (Lorenz 1996; Lorenz & Emanuel 1998), for ``i = 0 .. n-1`` on a periodic ring::

    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F

Symbols: ``x_i`` the (dimensionless) state, ``F`` the forcing (dimensionless, 8 gives chaos with ~13 positive Lyapunov
exponents for n = 40), ``t`` dimensionless time (``dt = 0.05`` corresponds to 6 hours of atmospheric time).

Discretisation: the classical four-stage Runge-Kutta scheme with a fixed step ``dt`` through PETSc TS (``TSRK``,
type ``4``, no adaptivity). A window ``[t0, t1]`` must be a whole number ``n`` of steps (time is counted in steps, so
no float drift decides the step sequence), and the TS takes exactly ``n`` steps of exactly ``dt``
(``TS_EXACTFINALTIME_STEPOVER`` with at most ``n`` steps): ``MATCHSTEP`` would shorten or stretch the last step by
the round-off between ``t1`` and the accumulated step times (``0.2 - 0.15000000000000002``), so a window's numbers
would depend on where it lies on the time axis, and a batched forecast could not give the same numbers.
The RHS Jacobian is assembled (4 entries per row) and ``dF/dF = 1`` is given as ``RHSJacobianP`` so TSAdjoint yields
the discrete adjoint with respect to the initial state and the forcing. :meth:`Lorenz96.record` runs a window on a
pooled TS that saves its trajectory (in memory) and :meth:`Lorenz96.adjoint_recorded` integrates back over it, so a
4D-Var gradient does not run the forward twice nor build a TS per window. The variables live on a 1-D periodic
:class:`~twin.core.grid.Grid` (node centred, ``x_i`` at coordinate ``i``) with stencil width 2.

Two hand-written pieces, and why:

* :meth:`Lorenz96.tangent_linear`: petsc4py 3.18 has no binding of ``TSForwardSetSensitivities``, so the tangent
  linear model is the exact derivative of the same RK4 stages, built from the same assembled Jacobian. It is
  checked against TSAdjoint by the dot-product test.
* :func:`rk4_ensemble`: a vectorised NumPy RK4 of a whole ensemble (members as columns, optionally one forcing per
  member). PETSc TS costs ~0.1 ms of overhead per member and window for 40 unknowns, which dominates an ensemble
  forecast of tiny states; :meth:`Lorenz96.advance_ensemble` (the campaigns' batched forecast) and
  :class:`BatchedForecast` (the in-memory DA cycle and the benchmarks) run it. It performs PETSc's ``TSRK`` 4
  arithmetic operation for operation, so it gives the TS path's numbers **bitwise** (tested, on one and two ranks):
  the right-hand side as ``_rhs`` evaluates it, the stages ``Y_i = x + (h a_i) K_{i-1}`` (``VecMAXPY`` with the
  tableau's zero coefficients adds exact zeros) and the update ``x + (((w_1 K_1 + w_2 K_2) + w_3 K_3) + w_4 K_4)``
  with ``w_j = h b_j`` (PETSc 3.18's ``VecMAXPY`` kernel sums four vectors left to right, then adds them to ``x``).
  This holds for a PETSc built without fused multiply-adds in its vector kernels (Debian's generic x86-64 build);
  a build that fuses them would differ by round-off, which ``tests/unit/test_batched_forecast.py`` would show.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.petsc import (
    set_default_options,
    set_from_options,
    set_options,
    trajectory_in_memory,
)
from twin.models.base import Model, Parameter, QoI, Tape, TSPool, solve_adjoint
from twin.models.registry import register_model

# Relative tolerance under which (t1 - t0) / dt counts as a whole number of steps (round-off in the times).
_STEP_TOL = 1e-9


def n_steps(t0: float, t1: float, dt: float) -> int | None:
    """Number of RK4 steps of ``dt`` in ``[t0, t1]``, or ``None`` if the window is not a whole number of steps."""
    ratio = (t1 - t0) / dt
    n = round(ratio)
    return n if n >= 1 and abs(ratio - n) <= _STEP_TOL * max(1.0, abs(ratio)) else None


def l96_tendency(x: np.ndarray, forcing: float | np.ndarray) -> np.ndarray:
    """Lorenz-96 right-hand side of full states along axis 0 (any trailing axes are members).

    One periodic padding (two entries before, one after) and slices, instead of three ``np.roll`` copies.
    """
    n = x.shape[0]
    g = np.concatenate((x[-2:], x, x[:1]), axis=0)
    return (g[3:] - g[:n]) * g[1:n + 1] - x + forcing


def rk4_ensemble(states: np.ndarray, forcing: float | np.ndarray, dt: float, t0: float, t1: float) -> np.ndarray:
    """Advance full Lorenz-96 states (shape ``(n,)`` or ``(n, members)``) from ``t0`` to ``t1`` with classical RK4.

    Parameters
    ----------
    states : ndarray
        Full states in natural order, members as columns. Not modified.
    forcing : float or ndarray of shape (members,)
        ``F``, one value or one per member (joint state-parameter estimation).
    dt : float
        Step; ``t1 - t0`` must be a whole number of steps (``ValueError`` otherwise).

    Returns
    -------
    ndarray
        The states at ``t1``, same shape as ``states``.
    """
    steps = n_steps(t0, t1, dt)
    if steps is None:
        raise ValueError(f"window [{t0}, {t1}] is not a whole number of steps dt={dt}")
    x = np.array(states, dtype=float, copy=True)
    f = np.asarray(forcing, dtype=float)
    h = dt
    # PETSc's coefficients: h times the tableau's a (1/2, 1/2, 1) and b (1/6, 1/3, 1/3, 1/6), as TSRK forms them
    a, w1, w2 = h * 0.5, h * (1.0 / 6), h * (1.0 / 3)
    for _ in range(steps):
        k1 = l96_tendency(x, f)
        k2 = l96_tendency(x + a * k1, f)
        k3 = l96_tendency(x + a * k2, f)
        k4 = l96_tendency(x + h * k3, f)
        x += ((w1 * k1 + w2 * k2) + w2 * k3) + w1 * k4
    return x


class BatchedForecast:
    """Ensemble forecast callable for the DA cycle (:mod:`twin.assimilation.cycle`): all members at once with
    :func:`rk4_ensemble`, one forcing per member when ``F`` is estimated.

    Parameters
    ----------
    dt : float
        RK4 step.
    forcing : float
        ``F`` used when the members carry no ``F`` of their own.
    """

    def __init__(self, dt: float, forcing: float):
        self.dt = float(dt)
        self.forcing = float(forcing)

    def __call__(self, states: np.ndarray, params: dict[str, np.ndarray], t0: float, t1: float) -> np.ndarray:
        return rk4_ensemble(states, params.get("F", self.forcing), self.dt, t0, t1)


@register_model("lorenz96")
class Lorenz96(Model):
    """The Lorenz-96 model behind the model contract.

    Parameters
    ----------
    name : str
        Component name; PETSc options prefix ``<name>_`` (e.g. ``-l96_ts_rk_type``).
    comm : mpi4py communicator
    n : int
        Number of variables (>= 4).
    forcing : float
        ``F``.
    dt : float
        RK4 step (> 0).
    estimable : bool
        Whether ``F`` is estimable.
    prior : config prior or None
        Prior of ``F``; a log-normal prior makes assimilation update ``log F``.
    initial_condition : {"perturbed_rest", "random"}
    perturbation : float
        Size of the initial perturbation.
    seed : int
        Seed of the ``random`` initial condition (same field on any number of ranks).
    state : array-like, optional
        The initial state itself (``n`` values); replaces ``initial_condition``.
    """

    state_names = ("x",)
    state_units = ("1",)
    time_units = "1"

    def __init__(self, name: str, comm, *, n: int = 40, forcing: float = 8.0, dt: float = 0.05,
                 estimable: bool = False, prior: Any = None, initial_condition: str = "perturbed_rest",
                 perturbation: float = 0.01, seed: int = 0, state: Any = None):
        super().__init__(name, comm)
        if int(n) < 4:
            raise ModelError(name, f"Lorenz-96 needs at least 4 variables (stencil i-2..i+1), got n={n}")
        if not (np.isfinite(dt) and dt > 0):
            raise ModelError(name, f"time step dt must be positive and finite, got {dt}")
        if not np.isfinite(forcing):
            raise ModelError(name, f"forcing F must be finite, got {forcing}")
        if initial_condition not in ("perturbed_rest", "random"):
            raise ModelError(name, f"unknown initial condition {initial_condition!r}; known: "
                             "['perturbed_rest', 'random']")
        self.n = int(n)
        self.dt = float(dt)
        self.initial_condition_name = initial_condition
        self.perturbation = float(perturbation)
        self.seed = int(seed)
        self.state0 = None if state is None else np.asarray(state, dtype=float)
        if self.state0 is not None and (self.state0.shape != (self.n,) or not np.all(np.isfinite(self.state0))):
            raise ModelError(name, f"the initial state must be {self.n} finite values, got shape {self.state0.shape}")
        self.grid = Grid(comm, (self.n,), [(0.0, float(self.n))], dof=1, stencil_width=2, periodic=True,
                         centering="node", name=name)
        transform = "log" if getattr(prior, "dist", None) == "lognormal" else "none"
        self.parameters = {"F": Parameter("F", float(forcing), "1", bool(estimable), transform, prior)}
        self._local = self.grid.create_local()
        self._offset, self._m = self.grid.ghost_offsets()[0], self.grid.local_shape[0]
        self._J = self._create_jacobian()
        r0, r1 = self._J.getOwnershipRange()
        rows = np.arange(r0, r1)
        cols = np.stack([(rows - 2) % self.n, (rows - 1) % self.n, rows, (rows + 1) % self.n], axis=1)
        self._jac_indptr = np.arange(0, 4 * (r1 - r0) + 1, 4, dtype=PETSc.IntType)
        self._jac_cols = cols.astype(PETSc.IntType).ravel()
        self._jac_values = np.zeros((r1 - r0, 4))
        self._jac_values[:, 2] = -1.0
        self._Jp = self._create_jacobian_p()
        self._ts: PETSc.TS | None = None
        # TS objects with trajectory saving for record/adjoint_recorded, reused across windows and gradients.
        self._adjoint_ts = TSPool(lambda: self._make_ts(save_trajectory=True))
        # Fixed RK4 steps (no adaptivity) and the adjoint's trajectory kept in memory, not in TS-data-* folders.
        set_default_options(self.options_prefix, {"ts_adapt_type": "none", "ts_trajectory_type": "memory"})

    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "Lorenz96":
        """Build from a :class:`~twin.kinds.lorenz96.config.Lorenz96Config`."""
        set_options(f"{name}_", cfg.solver)  # the user's options; the defaults never overwrite them
        return cls(name, comm, n=cfg.n, forcing=cfg.forcing.to("1"), dt=cfg.dt, estimable=cfg.forcing.estimable,
                   prior=cfg.forcing.prior, initial_condition=cfg.initial_condition,
                   perturbation=cfg.perturbation, seed=cfg.seed, state=cfg.initial_state)

    # -- operators -------------------------------------------------------------------------------------------------
    @property
    def forcing(self) -> float:
        return float(self.parameters["F"].value)

    def _create_jacobian(self) -> PETSc.Mat:
        nloc = self.grid.create_global().getLocalSize()
        J = PETSc.Mat().createAIJ(size=((nloc, self.n), (nloc, self.n)), comm=self.grid.da.getComm())
        J.setPreallocationNNZ((4, 4))
        J.setUp()
        return J

    def _create_jacobian_p(self) -> PETSc.Mat:
        """``df/dF``: an ``n x 1`` column of ones (constant)."""
        nloc = self._J.getLocalSize()[0]
        Jp = PETSc.Mat().createAIJ(size=((nloc, self.n), (PETSc.DECIDE, 1)), comm=self.grid.da.getComm())
        Jp.setPreallocationNNZ((1, 1))
        r0, r1 = Jp.getOwnershipRange()
        m = r1 - r0
        Jp.setValuesCSR(np.arange(m + 1, dtype=PETSc.IntType), np.zeros(m, dtype=PETSc.IntType), np.ones(m))
        Jp.assemble()
        return Jp

    def _neighbours(self, x: PETSc.Vec) -> tuple[np.ndarray, ...]:
        """Views ``x_{i-2}, x_{i-1}, x_i, x_{i+1}`` over the owned points (from the ghosted local vector)."""
        self.grid.global_to_local(x, self._local)
        g = self._local.getArray(readonly=True)
        o, m = self._offset, self._m
        return g[o - 2:o - 2 + m], g[o - 1:o - 1 + m], g[o:o + m], g[o + 1:o + 1 + m]

    def _rhs(self, ts, t, x: PETSc.Vec, f: PETSc.Vec) -> None:
        xm2, xm1, x0, xp1 = self._neighbours(x)
        f.getArray()[...] = (xp1 - xm2) * xm1 - x0 + self.forcing

    def _jacobian(self, ts, t, x: PETSc.Vec, J: PETSc.Mat, P: PETSc.Mat) -> None:
        # Called at every stage of every step by the adjoint: the CSR structure is built once (in __init__).
        xm2, xm1, _, xp1 = self._neighbours(x)
        vals = self._jac_values
        vals[:, 0] = -xm1
        vals[:, 1] = xp1 - xm2
        vals[:, 3] = xm1
        P.setValuesCSR(self._jac_indptr, self._jac_cols, vals.ravel(), addv=PETSc.InsertMode.INSERT_VALUES)
        P.assemble()
        if J != P:
            J.assemble()

    def _jacobian_p(self, ts, t, x: PETSc.Vec, Jp: PETSc.Mat) -> None:
        """Constant; nothing to update."""

    def _make_ts(self, save_trajectory: bool) -> PETSc.TS:
        ts = PETSc.TS().create(comm=self.grid.da.getComm())
        ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        ts.setType(PETSc.TS.Type.RK)
        ts.setRKType(PETSc.TS.RKType.RK4)
        ts.setRHSFunction(self._rhs)
        ts.setRHSJacobian(self._jacobian, self._J, self._J)
        ts.setRHSJacobianP(self._jacobian_p, self._Jp)
        ts.setTimeStep(self.dt)
        # exactly the window's steps of dt (run_fixed sets their number): no last step cut to t1 (module docstring)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.STEPOVER)
        # The prefix first: setSaveTrajectory creates the trajectory object, which takes its options from it.
        ts.setOptionsPrefix(self.options_prefix)
        if save_trajectory:
            ts.setSaveTrajectory()
        with trajectory_in_memory():
            set_from_options(ts)
        return ts

    # -- contract --------------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        F, eps = self.forcing, self.perturbation
        if self.state0 is not None:
            full = self.state0.copy()
        elif self.initial_condition_name == "random":
            full = F + eps * np.random.default_rng(self.seed).standard_normal(self.n)
        else:
            full = np.full(self.n, F)
            full[0] += eps
        return self.grid.set_global(full, self.create_state())

    def fixed_steps(self, t0: float, t1: float) -> tuple[int, float]:
        """The steps of a window: exactly ``dt`` each (the steps of :func:`rk4_ensemble`, time counted in steps; module
        docstring), so unlike :meth:`Model.fixed_steps` a window must be a whole number of steps, and not empty."""
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
            raise ModelError(self.name, f"advance needs finite t1 > t0, got t0={t0}, t1={t1}")
        steps = n_steps(t0, t1, self.dt)
        if steps is None:
            raise ModelError(self.name, f"window [{t0:g}, {t1:g}] of length {t1 - t0:g} is not a whole number of "
                             f"RK4 steps dt={self.dt:g}; choose observation times on multiples of dt")
        return steps, self.dt

    def _run(self, ts: PETSc.TS, state: PETSc.Vec, t0: float, t1: float) -> None:
        self.run_fixed(ts, state, t0, t1)
        if not np.isfinite(state.norm(PETSc.NormType.NORM_INFINITY)):
            raise SolverError(self.name, ts.getTime(), f"{self.ts_reason(ts)} with a non-finite state",
                              hint=f"reduce dt={self.dt} or check F={self.forcing}", units=self.time_units)

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        if self._ts is None:
            self._ts = self._make_ts(save_trajectory=False)
        self._run(self._ts, state, t0, t1)

    def _check_gradient_names(self, parameters: Sequence[str]) -> None:
        unknown = [p for p in parameters if p not in self.parameters]
        if unknown:
            raise ModelError(self.name, f"no adjoint for unknown parameters {unknown}; "
                             f"known: {sorted(self.parameters)}")

    def record(self, state: PETSc.Vec, t0: float, t1: float, parameters: Sequence[str] = ()) -> Tape:
        """:meth:`advance` on a pooled TS that saves its trajectory; the tape holds that TS for the adjoint."""
        steps, _ = self.fixed_steps(t0, t1)
        ts = self._adjoint_ts.acquire(steps)
        try:
            self._run(ts, state, t0, t1)
        except BaseException:
            self._adjoint_ts.release(ts)
            raise
        return Tape(float(t0), float(t1), data=(ts, steps), release=lambda tape: self._adjoint_ts.release(ts))

    def adjoint_recorded(self, tape: Tape, lam: PETSc.Vec, parameters: Sequence[str] = ()) -> dict[str, Any]:
        """TSAdjoint over the recorded RK4 window: ``lam`` goes from dJ/dx(t1) to dJ/dx(t0); returns
        ``{"F": dJ/dF}`` when asked."""
        try:
            self._check_gradient_names(parameters)
            if not tape.alive:
                raise ModelError(self.name, f"the tape of [{tape.t0:g}, {tape.t1:g}] was already used or freed")
            ts, steps = tape.data
            mu = self._Jp.createVecRight()
            try:
                mu.set(0.0)
                ts.setCostGradients(lam, mu)
                ts.adjointSetSteps(steps)
                solve_adjoint(ts, self.name)
                self._adjoint_ts.mark_traversed(ts)
                dF = float(mu.sum())
            finally:
                mu.destroy()
        finally:
            tape.free()
        return {"F": dF} if "F" in parameters else {}

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """TSAdjoint of the RK4 window from ``state0`` (the forward is recomputed; :meth:`record` avoids that)."""
        self._check_gradient_names(parameters)
        return self.adjoint_by_recording(state0, t0, t1, lam, parameters)

    def tangent_linear(self, state0: PETSc.Vec, t0: float, t1: float, dx: PETSc.Vec, dF: float = 0.0) -> None:
        """Tangent-linear model of the RK4 window: ``dx`` goes from dx(t0) to dx(t1) in place, for a forcing change
        ``dF``. The exact derivative of the discrete RK4 stages (see the module docstring for why by hand)."""
        steps, h = self.fixed_steps(t0, t1)
        x = state0.copy()
        vecs = [x.duplicate() for _ in range(7)]
        Y, dY, K1, K2, K3, K4, acc = vecs
        dKs = [x.duplicate() for _ in range(4)]
        try:
            for _ in range(steps):
                acc.set(0.0)
                Ks = (K1, K2, K3, K4)
                for s, (a, b) in enumerate(((0.0, 1 / 6), (0.5, 1 / 3), (0.5, 1 / 3), (1.0, 1 / 6))):
                    # stage s: Y = x + a h K_{s-1}, dY = dx + a h dK_{s-1}
                    x.copy(Y)
                    dx.copy(dY)
                    if s > 0:
                        Y.axpy(a * h, Ks[s - 1])
                        dY.axpy(a * h, dKs[s - 1])
                    self._rhs(None, 0.0, Y, Ks[s])
                    self._jacobian(None, 0.0, Y, self._J, self._J)
                    self._J.mult(dY, dKs[s])
                    dKs[s].shift(dF)
                    acc.axpy(b * h, dKs[s])
                dx.axpy(1.0, acc)
                x.axpy(h / 6.0, K1)
                x.axpy(h / 3.0, K2)
                x.axpy(h / 3.0, K3)
                x.axpy(h / 6.0, K4)
        finally:
            for v in (x, *vecs, *dKs):
                v.destroy()

    def advance_ensemble(self, states: np.ndarray, parameters: Sequence[Mapping[str, Any]], t0: float,
                         t1: float) -> np.ndarray:
        """All members at once with :func:`rk4_ensemble` (bitwise :meth:`advance`'s numbers; module docstring),
        each with its own ``F`` when it carries one. Rows that blew up are non-finite (no error raised here).
        ``None`` (no batched forecast: every member through :meth:`advance`) when PETSc options made the TS other
        than the fixed-step RK4 that :func:`rk4_ensemble` repeats (``-l96_ts_rk_type 3``, ``solver: {ts_type:
        euler}``): the user's integrator, whichever the layout."""
        self.fixed_steps(t0, t1)  # the window's check and message, as advance gives them
        if not self._ts_is_rk4():
            return None
        x = np.asarray(states, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.n or len(parameters) != x.shape[0]:
            raise ModelError(self.name, f"advance_ensemble needs states of shape (members, {self.n}) and one "
                             f"parameter mapping per member, got {x.shape} and {len(parameters)}")
        forcing = np.array([float(p.get("F", self.forcing)) for p in parameters])
        with np.errstate(over="ignore", invalid="ignore"):
            return rk4_ensemble(x.T, forcing, self.dt, t0, t1).T

    def _ts_is_rk4(self) -> bool:
        """Whether the TS :meth:`advance` runs is, after the options, the classical RK4 without step adaptivity."""
        if self._ts is None:
            self._ts = self._make_ts(save_trajectory=False)
        ts = self._ts
        if ts.getType() != PETSc.TS.Type.RK or ts.getRKType() != PETSc.TS.RKType.RK4:
            return False  # (the step is the model's dt whatever -ts_dt says: run_fixed sets it for every window)
        # petsc4py 3.18 has no TSGetAdapt: the option the TS read (the default set in __init__ unless replaced)
        return PETSc.Options().getString(f"{self.options_prefix}ts_adapt_type", "none") == "none"

    def batched_forecast(self) -> BatchedForecast:
        """The vectorised NumPy ensemble forecast with this model's ``dt`` and ``F`` (see the module docstring)."""
        return BatchedForecast(self.dt, self.forcing)

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        """Mean of ``x`` and mean energy ``<x^2>/2`` (collective)."""
        mean = state.sum() / self.n
        energy = 0.5 * state.dot(state) / self.n
        return {"mean": QoI(float(mean), "1", "mean of x"), "energy": QoI(float(energy), "1", "mean energy x^2/2")}

    def destroy(self) -> None:
        if self._ts is not None:
            self._ts.destroy()
            self._ts = None
        self._adjoint_ts.destroy()
        for obj in (self._local, self._J, self._Jp):
            obj.destroy()
        super().destroy()
