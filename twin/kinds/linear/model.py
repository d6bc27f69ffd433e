"""A small linear model: 1-D periodic advection-diffusion, with its discrete adjoint by PETSc TSAdjoint.

Equation, on ``x in [0, L)`` with periodic boundaries::

    u_t + c u_x = nu u_xx

``u`` is a dimensionless tracer concentration, ``x`` in metres, ``t`` in seconds, ``c`` the advection velocity (m/s)
and ``nu > 0`` the diffusivity (m^2/s). Space: ``n`` cells of width ``h = L / n``, second-order centred differences,
so the semi-discrete system is linear, ``du/dt = A(c, nu) u`` with ``A = nu D2 - c D1``. Time: a PETSc TS (Crank-
Nicolson by default, ``-<name>_ts_type`` changes it) with a fixed step, so that the map ``u(t0) -> u(t1)`` is one
fixed matrix and "4D-Var equals the Kalman smoother" can be checked to optimisation tolerance.

The model exists for verification and fast tests of the assimilation machinery: it is linear in the state (Gaussian
problems stay Gaussian), cheap, and has two scalar parameters (``velocity``, ``diffusivity``) with the parameter
Jacobian ``df/dc = -D1 u``, ``df/dnu = D2 u`` given to TSAdjoint (``setRHSJacobianP``), so parameter gradients come
from PETSc's adjoint like the state gradient does. :meth:`LinearAdvectionDiffusion.record` runs a window on a pooled
TS that keeps its trajectory in memory and :meth:`LinearAdvectionDiffusion.adjoint_recorded` integrates back over it,
so 4D-Var does not repeat the forward run.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.core.petsc import (
    set_default_options,
    set_from_options,
    set_options,
    trajectory_in_memory,
)
from twin.models.base import Model, Parameter, QoI, Tape, TSPool, solve_adjoint
from twin.models.registry import register_model

#: parameter names in the order of the columns of the parameter Jacobian
PARAMETERS = ("velocity", "diffusivity")


@register_model("linear_advection_diffusion")
class LinearAdvectionDiffusion(Model):
    """1-D periodic linear advection-diffusion on a PETSc DMDA, integrated by a fixed-step PETSc TS.

    Parameters
    ----------
    name : str
        Component name and PETSc options prefix (``-<name>_ts_type``).
    comm : mpi4py communicator
    n : int
        Number of cells (>= 3).
    length : float
        Domain length ``L`` (m).
    dt : float
        Time step (s). A stretch ``t1 - t0`` that is not a multiple of ``dt`` is cut into ``ceil((t1 - t0) / dt)``
        equal steps.
    velocity : float
        ``c`` (m/s).
    diffusivity : float
        ``nu`` (m^2/s), positive.
    initial_shape : {"gaussian", "sine"}
        ``A exp(-(x - L/2)^2 / (2 w^2))`` or ``A sin(2 pi x / L)``.
    amplitude, width : float
        ``A`` (1) and ``w`` (m).
    estimable : sequence of str
        Names of parameters that assimilation may update.
    priors : dict, optional
        Prior (typed config object) per parameter name.
    solver : dict, optional
        PETSc options (without prefix) put under ``<name>_`` unless given on the command line.
    """

    state_names = ("u",)
    state_units = ("1",)
    time_units = "s"

    def __init__(self, name: str, comm, *, n: int = 64, length: float = 1.0, dt: float = 0.01,
                 velocity: float = 0.5, diffusivity: float = 0.01, initial_shape: str = "gaussian",
                 amplitude: float = 1.0, width: float = 0.1, estimable: Sequence[str] = (),
                 priors: dict[str, Any] | None = None, solver: dict[str, Any] | None = None):
        super().__init__(name, comm)
        if int(n) < 3:
            raise ModelError(name, f"needs at least 3 cells, got n={n}")
        for label, value in (("length", length), ("dt", dt), ("diffusivity", diffusivity), ("width", width)):
            if not (np.isfinite(value) and value > 0):
                raise ModelError(name, f"{label} must be positive and finite, got {value}")
        if not np.isfinite(velocity):
            raise ModelError(name, f"velocity must be finite, got {velocity}")
        if initial_shape not in ("gaussian", "sine"):
            raise ModelError(name, f"initial_shape must be 'gaussian' or 'sine', got {initial_shape!r}")
        unknown = set(estimable) - set(PARAMETERS)
        if unknown:
            raise ModelError(name, f"unknown estimable parameter(s) {sorted(unknown)}; known: {list(PARAMETERS)}")
        priors = dict(priors or {})
        self.grid = Grid(comm, (int(n),), [(0.0, float(length))], periodic=True, name=name)
        self.dt = float(dt)
        self.initial_shape, self.amplitude, self.width = initial_shape, float(amplitude), float(width)
        self.parameters = {
            "velocity": Parameter("velocity", float(velocity), "m/s", "velocity" in estimable, "none",
                                  priors.get("velocity")),
            "diffusivity": Parameter("diffusivity", float(diffusivity), "m^2/s", "diffusivity" in estimable, "log",
                                     priors.get("diffusivity")),
        }
        self._D1, self._D2 = self._difference_matrices()
        self._A = self._D2.duplicate(copy=True)
        self._J = self._D2.duplicate(copy=True)
        self._assemble_operator()
        (xs, xe), = self.grid.owned
        # Parameter Jacobian df/dp, one column per parameter; rank 0 owns both columns so mu is complete there.
        ncol_local = len(PARAMETERS) if self.grid.da.getComm().getRank() == 0 else 0
        self._Jp = PETSc.Mat().createDense(((xe - xs, self.grid.size), (ncol_local, len(PARAMETERS))),
                                           comm=self.grid.da.getComm())
        self._Jp.setUp()
        self._rows = np.arange(xs, xe, dtype=PETSc.IntType)
        self._tmp = self.grid.create_global()
        self._f = self.grid.create_global()
        set_options(self.options_prefix, solver or {})
        set_default_options(self.options_prefix, {"ts_type": "cn", "ksp_rtol": 1e-12, "ksp_atol": 1e-14,
                                                  "ts_trajectory_type": "memory"})
        self._ts = self._make_ts(trajectory=False)
        # TS objects that save their trajectory, for record/adjoint_recorded; reused across windows and gradients.
        self._pool_mats: dict[int, PETSc.Mat] = {}
        self._adjoint_ts = TSPool(lambda: self._make_ts(trajectory=True),
                                  lambda ts: self._pool_mats.pop(ts.handle).destroy())

    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "LinearAdvectionDiffusion":
        """Build from a :class:`~twin.kinds.linear.config.LinearAdvectionDiffusionConfig`."""
        ic = cfg.initial_condition
        return cls(name, comm, n=cfg.n, length=cfg.length.to("m"), dt=cfg.dt.to("s"),
                   velocity=cfg.velocity.to("m/s"), diffusivity=cfg.diffusivity.to("m^2/s"),
                   initial_shape=ic.shape, amplitude=ic.amplitude, width=ic.width.to("m"),
                   estimable=[p for p in PARAMETERS if getattr(cfg, p).estimable],
                   priors={p: getattr(cfg, p).prior for p in PARAMETERS}, solver=dict(cfg.solver))

    # -- operators --------------------------------------------------------------------------------------------------
    def _difference_matrices(self) -> tuple[PETSc.Mat, PETSc.Mat]:
        """Periodic centred first- and second-difference matrices, assembled row-block-wise from CSR arrays."""
        n, h = self.grid.shape[0], self.grid.spacing[0]
        (xs, xe), = self.grid.owned
        i = np.arange(xs, xe)
        cols = np.stack([(i - 1) % n, i, (i + 1) % n], axis=1)
        d1 = np.broadcast_to(np.array([-0.5 / h, 0.0, 0.5 / h]), cols.shape)
        d2 = np.broadcast_to(np.array([1.0, -2.0, 1.0]) / h**2, cols.shape)
        order = np.argsort(cols, axis=1)
        cols = np.take_along_axis(cols, order, axis=1)
        indptr = np.arange(0, 3 * (xe - xs) + 1, 3, dtype=PETSc.IntType)
        mats = []
        for vals in (d1, d2):
            vals = np.take_along_axis(vals, order, axis=1)
            M = PETSc.Mat().createAIJ(size=((xe - xs, n), (xe - xs, n)),
                                      csr=(indptr, cols.ravel().astype(PETSc.IntType), vals.ravel().copy()),
                                      comm=self.grid.da.getComm())
            M.assemble()
            mats.append(M)
        return mats[0], mats[1]

    def _assemble_operator(self) -> None:
        c, nu = self.parameters["velocity"].value, self.parameters["diffusivity"].value
        same = PETSc.Mat.Structure.SAME_NONZERO_PATTERN
        self._D2.copy(self._A, structure=same)
        self._A.scale(nu)
        self._A.axpy(-c, self._D1, structure=same)

    def parameters_changed(self, names: Sequence[str]) -> None:
        nu = self.parameters["diffusivity"].value
        if not (np.isfinite(nu) and nu > 0):
            raise ModelError(self.name, f"diffusivity must be positive and finite, got {nu}")
        if not np.isfinite(self.parameters["velocity"].value):
            raise ModelError(self.name, "velocity must be finite")
        self._assemble_operator()

    # -- PETSc callbacks ----------------------------------------------------------------------------------------------
    def _rhs(self, ts, t, u, f) -> None:
        self._A.mult(u, f)

    def _rhs_jacobian(self, ts, t, u, J, P) -> None:
        # Implicit TS types overwrite the matrix with shift*I - A, so the pristine operator is copied in each time.
        self._A.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)

    def _rhs_jacobian_p(self, ts, t, u, Jp) -> None:
        # Called twice per step by the Crank-Nicolson adjoint: the columns are written into the dense storage of
        # the owned rows directly (no per-call index arrays or temporaries).
        dense = Jp.getDenseArray()
        self._D1.mult(u, self._tmp)
        np.negative(self._tmp.getArray(readonly=True), out=dense[:, 0])
        self._D2.mult(u, self._tmp)
        dense[:, 1] = self._tmp.getArray(readonly=True)
        Jp.assemble()

    def _make_ts(self, trajectory: bool) -> PETSc.TS:
        ts = PETSc.TS().create(comm=self.grid.da.getComm())
        ts.setOptionsPrefix(self.options_prefix)
        ts.setProblemType(PETSc.TS.ProblemType.LINEAR)
        ts.setType(PETSc.TS.Type.CN)
        ts.setRHSFunction(self._rhs, self._f)
        J = self._J
        if trajectory:
            # Its own matrix: an implicit TS turns it into shift*I - A in place and remembers having done so, which
            # is wrong for a second TS (several pooled TS hold trajectories at the same time).
            J = self._D2.duplicate(copy=True)
            self._pool_mats[ts.handle] = J
        ts.setRHSJacobian(self._rhs_jacobian, J, J)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        ts.setTimeStep(self.dt)
        if trajectory:
            ts.setRHSJacobianP(self._rhs_jacobian_p, self._Jp)
            ts.setSaveTrajectory()
        with trajectory_in_memory():
            set_from_options(ts)
        return ts

    # -- contract ---------------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        L = self.grid.extent[0][1]
        if self.initial_shape == "gaussian":
            return self.grid.from_function(
                lambda x: self.amplitude * np.exp(-0.5 * ((x - 0.5 * L) / self.width) ** 2))
        return self.grid.from_function(lambda x: self.amplitude * np.sin(2 * np.pi * x / L))

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        if t1 == t0:
            return
        self.run_fixed(self._ts, state, t0, t1)

    def _check_gradient_names(self, parameters: Sequence[str]) -> None:
        unknown = [p for p in parameters if p not in PARAMETERS]
        if unknown:
            raise ModelError(self.name, f"no adjoint for parameter(s) {unknown}; known: {list(PARAMETERS)}")

    def record(self, state: PETSc.Vec, t0: float, t1: float, parameters: Sequence[str] = ()) -> Tape:
        """:meth:`advance` on a pooled TS that saves its trajectory (in memory); the tape holds that TS."""
        if t1 == t0:
            return Tape(float(t0), float(t1), data=(None, 0))
        ts = self._adjoint_ts.acquire(self.fixed_steps(t0, t1)[0])
        try:
            self.run_fixed(ts, state, t0, t1)
        except BaseException:
            self._adjoint_ts.release(ts)
            raise
        return Tape(float(t0), float(t1), data=(ts, ts.getStepNumber()),
                    release=lambda tape: self._adjoint_ts.release(ts))

    def adjoint_recorded(self, tape: Tape, lam: PETSc.Vec, parameters: Sequence[str] = ()) -> dict[str, Any]:
        """TSAdjoint over the recorded window: ``lam`` goes from dJ/du(t1) to dJ/du(t0) and
        dJ/dp = sum over steps of lam^T df/dp is accumulated (see :meth:`Model.adjoint`)."""
        try:
            self._check_gradient_names(parameters)
            if not tape.alive:
                raise ModelError(self.name, f"the tape of [{tape.t0:g}, {tape.t1:g}] was already used or freed")
            ts, steps = tape.data
            if ts is None:
                return {p: 0.0 for p in parameters}
            mu = self._Jp.createVecRight() if parameters else None
            try:
                if mu is not None:
                    mu.set(0.0)
                # The adjoint work vectors depend on whether parameter gradients are asked for: set them up again.
                ts.adjointReset()
                ts.setCostGradients([lam], [mu] if mu is not None else None)
                ts.adjointSetSteps(steps)
                solve_adjoint(ts, self.name)
                self._adjoint_ts.mark_traversed(ts)
                grads: dict[str, Any] = {}
                if mu is not None:
                    comm = self.grid.comm_mpi()
                    values = comm.bcast(mu.getArray(readonly=True).copy() if comm.Get_rank() == 0 else None, root=0)
                    grads = {p: float(values[PARAMETERS.index(p)]) for p in parameters}
            finally:
                if mu is not None:
                    mu.destroy()
        finally:
            tape.free()
        return grads

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint of :meth:`advance` by PETSc TSAdjoint (see :meth:`Model.adjoint`).

        The forward run over ``[t0, t1]`` is repeated from ``state0`` with the trajectory saved in memory
        (:meth:`record`), then :meth:`adjoint_recorded` integrates back; 4D-Var records its own forward instead.
        """
        self._check_gradient_names(parameters)
        return self.adjoint_by_recording(state0, t0, t1, lam, parameters)

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        return {"mass": QoI(self.grid.integrate(state), "m", "integral of u over the domain"),
                "max": QoI(float(state.max()[1]), "1", "maximum of u")}

    def operator(self) -> PETSc.Mat:
        """The semi-discrete operator ``A`` (owned by the model; do not destroy)."""
        return self._A

    def destroy(self) -> None:
        self._adjoint_ts.destroy()
        for obj in (self._ts, self._A, self._J, self._D1, self._D2, self._Jp, self._tmp, self._f):
            obj.destroy()
        super().destroy()
