"""Lorenz-63 on twin's model contract: a PETSc TS with its discrete adjoint.

Equations (Lorenz 1963), dimensionless::

    dx/dt = sigma (y - x)
    dy/dt = x (rho - z) - y
    dz/dt = x y - beta z

Symbols: ``x`` the intensity of convection, ``y`` the temperature difference between rising and falling currents,
``z`` the distortion of the vertical temperature profile; ``sigma`` the Prandtl number, ``rho`` the reduced Rayleigh
number, ``beta`` an aspect factor (10, 28 and 8/3 give the butterfly attractor, leading Lyapunov exponent ~0.9).

Layout: the three variables are the entries 0, 1, 2 of a periodic 1-D :class:`~twin.core.grid.Grid` of three nodes
with stencil width 1, so every entry sees the other two as its neighbours ``i - 1`` and ``i + 1``, and the model runs
on one, two or three ranks like any DMDA model (the conformance kit checks that 1 and 2 ranks agree). That is
deliberate for an example: a user's own PDE model has a real grid, and its code has the same shape as this one.

Discretisation: classical RK4 with a fixed step ``dt`` through PETSc TS (``TSRK`` type ``4``, no adaptivity); a window
must be a whole number of steps. The RHS Jacobian (3 x 3) and ``df/dp`` for ``p = (sigma, rho, beta)``
(``RHSJacobianP``) are assembled, so TSAdjoint gives the discrete adjoint with respect to the initial state and the
three parameters; :meth:`Lorenz63.record` keeps the TS of a window with its trajectory so that a 4D-Var gradient
costs one forward and one backward pass.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.petsc import reason_name, set_default_options, set_from_options, set_options, trajectory_in_memory
from twin.models.base import Model, Parameter, QoI, Tape, TSPool, solve_adjoint
from twin.models.registry import register_model
from twin_lorenz63.config import Lorenz63Config

#: the parameters, in the order of the columns of df/dp
PARAMETERS = ("sigma", "rho", "beta")
# Relative tolerance under which (t1 - t0) / dt counts as a whole number of steps (round-off in the times).
_STEP_TOL = 1e-9


def n_steps(t0: float, t1: float, dt: float) -> int | None:
    """Number of RK4 steps of ``dt`` in ``[t0, t1]``, or ``None`` if the window is not a whole number of steps."""
    ratio = (t1 - t0) / dt
    n = round(ratio)
    return n if n >= 1 and abs(ratio - n) <= _STEP_TOL * max(1.0, abs(ratio)) else None


def tendency(x: np.ndarray, sigma: float, rho: float, beta: float) -> np.ndarray:
    """The Lorenz-63 right-hand side of full states ``(3,)`` or ``(3, members)`` (NumPy reference)."""
    return np.stack([sigma * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1], x[0] * x[1] - beta * x[2]])


@register_model("lorenz63")
class Lorenz63(Model):
    """The Lorenz-63 model behind the model contract.

    Parameters
    ----------
    name : str
        Component name; PETSc options prefix ``<name>_`` (e.g. ``-l63_ts_monitor``).
    comm : mpi4py communicator
        At most three ranks (three grid points).
    dt : float
        RK4 step (> 0).
    parameters : dict
        ``{name: (value, estimable, prior)}`` for ``sigma``, ``rho`` and ``beta``; a log-normal prior makes
        assimilation update the logarithm.
    initial_state : sequence of 3 floats
        ``(x, y, z)`` at the start.
    """

    state_names = ("x",)
    state_units = ("1",)
    time_units = "1"
    #: the YAML section, for a campaign that names this class by import path (type: "twin_lorenz63.model:Lorenz63")
    config_class = Lorenz63Config

    def __init__(self, name: str, comm, *, dt: float = 0.01, parameters: dict[str, tuple] | None = None,
                 initial_state: Sequence[float] = (1.0, 1.0, 1.0)):
        super().__init__(name, comm)
        if not (np.isfinite(dt) and dt > 0):
            raise ModelError(name, f"time step dt must be positive and finite, got {dt}")
        x0 = np.asarray(initial_state, dtype=float)
        if x0.shape != (3,) or not np.all(np.isfinite(x0)):
            raise ModelError(name, f"initial_state must be three finite numbers (x, y, z), got {list(x0)}")
        self.dt = float(dt)
        self.x0 = x0
        given = dict(parameters or {})
        unknown = sorted(set(given) - set(PARAMETERS))
        if unknown:
            raise ModelError(name, f"unknown parameters {unknown}; known: {list(PARAMETERS)}")
        defaults = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}
        for p in PARAMETERS:
            value, estimable, prior = given.get(p, (defaults[p], False, None))
            if not np.isfinite(value):
                raise ModelError(name, f"parameter {p} must be finite, got {value}")
            transform = "log" if getattr(prior, "dist", None) == "lognormal" else "none"
            self.parameters[p] = Parameter(p, float(value), "1", bool(estimable), transform, prior)
        comm_size = comm.Get_size() if hasattr(comm, "Get_size") else comm.getSize()
        if comm_size > 3:
            raise ModelError(name, f"Lorenz-63 has three variables and runs on at most 3 ranks, not {comm_size}; "
                                   "set ensemble.ranks_per_member to 1, 2 or 3")
        self.grid = Grid(comm, (3,), [(0.0, 3.0)], dof=1, stencil_width=1, periodic=True, centering="node",
                         name=name)
        self._local = self.grid.create_local()
        (self._start, self._stop), = self.grid.owned
        self._offset = self.grid.ghost_offsets()[0]
        self._rows = np.arange(self._start, self._stop)
        nloc = self._stop - self._start
        self._J = self._create_matrix((nloc, 3))
        self._Jp = self._create_matrix((PETSc.DECIDE, len(PARAMETERS)))
        # every row of J and of df/dp is dense in its three columns: the CSR structure is built once
        m = self._stop - self._start
        self._indptr = np.arange(0, 3 * m + 1, 3, dtype=PETSc.IntType)
        self._cols = np.tile(np.arange(3, dtype=PETSc.IntType), m)
        self._ts: PETSc.TS | None = None
        self._adjoint_ts = TSPool(lambda: self._make_ts(save_trajectory=True))
        set_default_options(self.options_prefix, {"ts_adapt_type": "none", "ts_trajectory_type": "memory"})

    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "Lorenz63":
        """Build from a :class:`~twin_lorenz63.config.Lorenz63Config` (its ``solver:`` options first)."""
        set_options(f"{name}_", cfg.solver)
        params = {p: (getattr(cfg, p).to("1"), getattr(cfg, p).estimable, getattr(cfg, p).prior) for p in PARAMETERS}
        return cls(name, comm, dt=cfg.dt, parameters=params, initial_state=cfg.initial_state)

    # -- operators -------------------------------------------------------------------------------------------------
    def _create_matrix(self, columns: tuple[int, int]) -> PETSc.Mat:
        """A 3-row matrix with the state's row layout and ``columns`` (local, global) columns."""
        nloc = self._stop - self._start
        A = PETSc.Mat().createAIJ(size=((nloc, 3), columns), comm=self.grid.da.getComm())
        A.setPreallocationNNZ((3, 3))
        A.setUp()
        return A

    def _values(self, x: PETSc.Vec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, z)`` as seen from each owned entry: the entry itself and its two ring neighbours, each an array
        over the owned rows. Entry ``i`` sees ``i - 1, i, i + 1`` (mod 3); the variable ``v`` is at entry ``v``."""
        self.grid.global_to_local(x, self._local)
        g = self._local.getArray(readonly=True)
        o, m = self._offset, self._stop - self._start
        window = np.stack([g[o - 1:o - 1 + m], g[o:o + m], g[o + 1:o + 1 + m]])  # (3 neighbours, owned rows)
        # neighbour k of row i holds variable (i - 1 + k) mod 3; pick variable v for each row
        pick = (np.arange(3)[:, None] - self._rows[None, :] + 1) % 3  # (variable, row) -> neighbour index
        values = np.take_along_axis(window, pick, axis=0)
        return values[0], values[1], values[2]

    def _param(self, name: str) -> float:
        return float(self.parameters[name].value)

    def _rhs(self, ts, t, x: PETSc.Vec, f: PETSc.Vec) -> None:
        X, Y, Z = self._values(x)
        full = tendency(np.stack([X, Y, Z]), self._param("sigma"), self._param("rho"), self._param("beta"))
        f.getArray()[...] = full[self._rows, np.arange(self._rows.size)]

    def _jacobian_rows(self, X, Y, Z) -> np.ndarray:
        s, r, b = self._param("sigma"), self._param("rho"), self._param("beta")
        zero = np.zeros_like(X)
        full = np.array([[-s + zero, s + zero, zero],
                         [r - Z, -1.0 + zero, -X],
                         [Y, X, -b + zero]])  # (row, column, owned entry)
        return full[self._rows, :, np.arange(self._rows.size)]

    def _jacobian(self, ts, t, x: PETSc.Vec, J: PETSc.Mat, P: PETSc.Mat) -> None:
        rows = self._jacobian_rows(*self._values(x))
        P.setValuesCSR(self._indptr, self._cols, rows.ravel(), addv=PETSc.InsertMode.INSERT_VALUES)
        P.assemble()
        if J != P:
            J.assemble()

    def _jacobian_p(self, ts, t, x: PETSc.Vec, Jp: PETSc.Mat) -> None:
        X, Y, Z = self._values(x)
        zero = np.zeros_like(X)
        full = np.array([[Y - X, zero, zero],  # d f / d (sigma, rho, beta)
                         [zero, X, zero],
                         [zero, zero, -Z]])
        rows = full[self._rows, :, np.arange(self._rows.size)]
        Jp.setValuesCSR(self._indptr, self._cols, rows.ravel(), addv=PETSc.InsertMode.INSERT_VALUES)
        Jp.assemble()

    def _make_ts(self, save_trajectory: bool) -> PETSc.TS:
        ts = PETSc.TS().create(comm=self.grid.da.getComm())
        ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        ts.setType(PETSc.TS.Type.RK)
        ts.setRKType(PETSc.TS.RKType.RK4)
        ts.setRHSFunction(self._rhs)
        ts.setRHSJacobian(self._jacobian, self._J, self._J)
        ts.setRHSJacobianP(self._jacobian_p, self._Jp)
        ts.setTimeStep(self.dt)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        # the prefix first: setSaveTrajectory creates the trajectory object, which takes its options from it
        ts.setOptionsPrefix(self.options_prefix)
        if save_trajectory:
            ts.setSaveTrajectory()
        with trajectory_in_memory():
            set_from_options(ts)
        return ts

    # -- contract --------------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        return self.grid.set_global(self.x0, self.create_state())

    def _check_window(self, t0: float, t1: float) -> int:
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
            raise ModelError(self.name, f"advance needs finite t1 > t0, got t0={t0}, t1={t1}")
        steps = n_steps(t0, t1, self.dt)
        if steps is None:
            raise ModelError(self.name, f"window [{t0:g}, {t1:g}] of length {t1 - t0:g} is not a whole number of "
                                        f"RK4 steps dt={self.dt:g}; choose observation times on multiples of dt")
        return steps

    def _run(self, ts: PETSc.TS, state: PETSc.Vec, t0: float, t1: float, steps: int) -> None:
        ts.setTime(t0)
        ts.setStepNumber(0)
        ts.setTimeStep(self.dt)
        ts.setMaxTime(t1)
        ts.setMaxSteps(steps)
        ts.solve(state)
        reason = ts.getConvergedReason()
        if reason < 0:
            raise SolverError(self.name, ts.getTime(), reason_name(PETSc.TS.ConvergedReason, reason))
        if not np.isfinite(state.norm(PETSc.NormType.NORM_INFINITY)):
            raise SolverError(self.name, ts.getTime(), "non-finite state",
                              hint=f"reduce dt={self.dt} or check sigma, rho, beta")

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        steps = self._check_window(t0, t1)
        if self._ts is None:
            self._ts = self._make_ts(save_trajectory=False)
        self._run(self._ts, state, t0, t1, steps)

    def record(self, state: PETSc.Vec, t0: float, t1: float, parameters: Sequence[str] = ()) -> Tape:
        """:meth:`advance` on a pooled TS that saves its trajectory; the tape holds that TS for the adjoint."""
        steps = self._check_window(t0, t1)
        ts = self._adjoint_ts.acquire(steps)
        try:
            self._run(ts, state, t0, t1, steps)
        except BaseException:
            self._adjoint_ts.release(ts)
            raise
        return Tape(float(t0), float(t1), data=(ts, steps), release=lambda tape: self._adjoint_ts.release(ts))

    def adjoint_recorded(self, tape: Tape, lam: PETSc.Vec, parameters: Sequence[str] = ()) -> dict[str, Any]:
        """TSAdjoint over the recorded window: ``lam`` goes from dJ/dx(t1) to dJ/dx(t0); returns dJ/dp for the
        parameters asked for."""
        try:
            unknown = [p for p in parameters if p not in PARAMETERS]
            if unknown:
                raise ModelError(self.name, f"no adjoint for unknown parameters {unknown}; known: {list(PARAMETERS)}")
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
                scatter, whole = PETSc.Scatter.toAll(mu)
                try:
                    scatter.scatter(mu, whole, False, PETSc.Scatter.Mode.FORWARD)
                    grads = whole.getArray(readonly=True).copy()
                finally:
                    scatter.destroy()
                    whole.destroy()
            finally:
                mu.destroy()
        finally:
            tape.free()
        return {p: float(grads[PARAMETERS.index(p)]) for p in parameters}

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """TSAdjoint of the RK4 window from ``state0`` (the forward is recomputed; :meth:`record` avoids that)."""
        unknown = [p for p in parameters if p not in PARAMETERS]
        if unknown:
            raise ModelError(self.name, f"no adjoint for unknown parameters {unknown}; known: {list(PARAMETERS)}")
        return self.adjoint_by_recording(state0, t0, t1, lam, parameters)

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        """The three variables and the energy ``(x^2 + y^2 + z^2) / 2`` (collective)."""
        x, y, z = self.grid.allgather(state).ravel()
        return {"x": QoI(float(x), "1", "convection intensity x"),
                "y": QoI(float(y), "1", "horizontal temperature difference y"),
                "z": QoI(float(z), "1", "vertical temperature distortion z"),
                "energy": QoI(0.5 * float(x * x + y * y + z * z), "1", "energy (x^2 + y^2 + z^2) / 2")}

    def destroy(self) -> None:
        if self._ts is not None:
            self._ts.destroy()
            self._ts = None
        self._adjoint_ts.destroy()
        for obj in (self._local, self._J, self._Jp):
            obj.destroy()
        super().destroy()
