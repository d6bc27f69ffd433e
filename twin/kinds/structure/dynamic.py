"""Elastodynamics ``M a + C v + K(d) u = f(t)`` with a PETSc TS, and its discrete adjoint with TSAdjoint.

Method and why
--------------
The second-order system is integrated in first-order form ``x = (u, v)`` (see :mod:`.operators`)::

    F(t, x, xdot) = B xdot + A x - g(t) = 0,     dF/dxdot = B,  dF/dx = A,  IJacobian = shift B + A

with the implicit theta family, Crank-Nicolson by default (``-<prefix>ts_type cn``; second order, no numerical
damping, energy-conserving for the undamped system; ``beuler`` is the dissipative alternative). PETSc's generalized-
alpha for second-order systems (TSALPHA2, available in petsc4py 3.18 through ``setI2Function``) was not chosen because
PETSc implements no TSAdjoint for it, and the damage gradients for 4D-Var must come from TSAdjoint; the theta methods
have a discrete adjoint, with parameter sensitivities from ``TSSetIJacobianP``.

Parameter sensitivities ``dF/dp`` (``p`` = nodal damage, ``E0``, load scales; see :mod:`.forcing`) act on the
``v`` rows only: ``dF_v/dE_e = K_ref (u_e + beta v_e) - eps*_e F_eig``, ``dF_v/ds_k = -phi_k(t) f_k``.

Linear solver: the problem is linear (SNES ``ksponly``). Default KSP: flexible GMRES with a Schur-complement
field split on ``(u, v)``. The ``u`` block is ``shift I``, so the ``selfp`` Schur preconditioning matrix
``shift M + C + K / shift`` is the exact Schur complement; it is SPD and solved by CG + GAMG.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.errors import SolverError
from twin.core.log import get_logger
from twin.core.petsc import reason_name, set_default_options, set_from_options
from twin.kinds.structure.forcing import Forcing, ParameterLayout
from twin.kinds.structure.mesh import ElementMesh
from twin.kinds.structure.operators import Operators

log = get_logger(__name__)

#: option defaults without a petsc4py 3.18 setter (fixed steps, field-split sub-solvers), under the component
#: prefix (user options win)
SPLIT_DEFAULTS = {
    "ts_adapt_type": "none",  # fixed steps: observation times and the adjoint trajectory stay on the step grid
    # the Schur enums are named differently in petsc4py 3.18 and 3.2x: set them by option
    "pc_fieldsplit_schur_fact_type": "full",
    "pc_fieldsplit_schur_precondition": "selfp",
    "fieldsplit_u_ksp_type": "preonly",
    "fieldsplit_u_pc_type": "jacobi",
    "fieldsplit_v_ksp_type": "cg",
    "fieldsplit_v_pc_type": "gamg",
    "fieldsplit_v_ksp_rtol": 1e-12,
}


class DynamicSolver:
    """Time integration of the first-order elastodynamic system on the dof-4 state DMDA.

    Parameters
    ----------
    ops : Operators
    forcing : Forcing
    layout : ParameterLayout
    damage : PETSc.Vec
        The damage parameter vector (read at each re-assembly).
    imports : dict
        The model's coupled fields (read when the load is evaluated).
    prefix : str
        Options prefix.
    dt : float
        Time step [s] (fixed; the window is divided into whole steps).
    """

    def __init__(self, ops: Operators, forcing: Forcing, layout: ParameterLayout, damage: PETSc.Vec, imports: dict,
                 prefix: str, dt: float):
        self.ops, self.forcing, self.layout = ops, forcing, layout
        self.mesh: ElementMesh = ops.mesh
        self.damage, self.imports, self.prefix, self.dt = damage, imports, prefix, float(dt)
        self.name = self.mesh.name
        da = self.mesh.state.da
        self.A, self.B, self.J = da.createMatrix(), da.createMatrix(), da.createMatrix()
        self.fvec = self.mesh.state.create_global()
        self._f2 = self.mesh.disp.create_global()
        self._version = None
        self._jkey = None
        self._g_cache: tuple[float, object] | None = None
        self.Jp = self._create_jp()
        set_default_options(prefix, SPLIT_DEFAULTS)

    # -- operators ------------------------------------------------------------------------------------------------
    def update(self, version: int) -> None:
        """Re-assemble ``A, B`` if the parameters changed since the last assembly (``version`` differs)."""
        if version != self._version:
            self.ops.dynamic_pair(self.A, self.B, self.damage)
            self._version = version
            self._jkey = None
            self._g_cache = None

    def _load(self, t: float) -> np.ndarray:
        """Owned ``f(t)`` as an array ``(ny, nx, 2)`` (cached for the last time asked)."""
        if self._g_cache is None or self._g_cache[0] != t:
            self.forcing.total(t, self.damage, self.imports, self._f2)
            self._g_cache = (t, self.mesh.disp.owned_array(self._f2, readonly=True).copy())
        return self._g_cache[1]

    def _ifunction(self, ts, t, x, xdot, f):
        self.B.mult(xdot, f)
        self.A.multAdd(x, f, f)
        g = self.mesh.state.owned_array(f)
        g[..., 2:] -= self._load(t)

    def _ijacobian(self, ts, t, x, xdot, shift, J, P):
        key = (float(shift), self._version)
        if key != self._jkey:
            self.A.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
            J.axpy(shift, self.B, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
            self._jkey = key
        return True

    # -- sensitivities --------------------------------------------------------------------------------------------
    def _create_jp(self) -> PETSc.Mat:
        probe = self.mesh.state.create_global()
        rows = (probe.getLocalSize(), probe.getSize())
        probe.destroy()
        n_cols = 9 + len(self.layout.scalar_names)
        Jp = PETSc.Mat().createAIJ(size=(rows, (self.layout.local, self.layout.size)),
                                   nnz=(n_cols, n_cols), comm=self.mesh.state.da.getComm())
        Jp.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, False)
        Jp.setUp()
        return Jp

    def _ijacobianp(self, ts, t, x, xdot, shift, Jp):
        """``dF/dp`` at ``(t, x)``: damage columns, the ``E0`` column and the load-scale columns (v rows)."""
        mesh, ops = self.mesh, self.ops
        Jp.zeroEntries()
        xe = mesh.element_values(mesh.state, x)  # (nej, nei, 4, 4)
        w = xe[..., :2] + ops.beta * xe[..., 2:]
        eps = ops.eigenstrain_elements(self.imports)
        q = ops.modulus_residual(w, eps).reshape(-1, 8)  # dF_v/dE_e
        lg_state = mesh.state.da.getLGMap()
        rows_local = mesh.element_dofs(4, (2, 3))
        mapped = np.asarray(lg_state.apply(np.maximum(rows_local, 0).ravel())).reshape(rows_local.shape)
        rows = np.where(rows_local >= 0, mapped, -1).astype(PETSc.IntType)
        lg_scalar = mesh.scalar.da.getLGMap()
        gny, gnx = mesh.ghost_shape
        nodes = mesh.corners(np.arange(gny * gnx, dtype=PETSc.IntType).reshape(gny, gnx)).reshape(-1, 4)
        cols = lg_scalar.apply(nodes.ravel()).reshape(-1, 4).astype(PETSc.IntType)
        V = np.repeat((-0.25 * ops.E0) * q[:, :, None], 4, axis=2)
        Jp.setValuesRCV(rows, cols, V, addv=PETSc.InsertMode.ADD_VALUES)
        one_minus_d = (1.0 - mesh.element_mean(self.damage)).reshape(-1, 1)
        e0_col = np.full((rows.shape[0], 1), self.layout.scalar_index("E0"), dtype=PETSc.IntType)
        Jp.setValuesRCV(rows, e0_col, (one_minus_d * q)[:, :, None], addv=PETSc.InsertMode.ADD_VALUES)
        v_rows = np.concatenate([lg_state.apply(mesh.owned_node_dofs(4, c)) for c in (2, 3)]).astype(PETSc.IntType)
        for case in self.forcing.cases:
            f_owned = mesh.disp.owned_array(self.forcing.vectors[case.name], readonly=True)
            vals = -case.history(t) * np.concatenate([f_owned[..., 0].ravel(), f_owned[..., 1].ravel()])
            col = np.full((v_rows.size, 1), self.layout.scalar_index(f"load_{case.name}"), dtype=PETSc.IntType)
            Jp.setValuesRCV(v_rows.reshape(-1, 1), col, vals.reshape(-1, 1, 1), addv=PETSc.InsertMode.ADD_VALUES)
        Jp.assemble()
        return True

    # -- time stepping --------------------------------------------------------------------------------------------
    def _make_ts(self, t0: float, t1: float, adjoint: bool) -> PETSc.TS:
        comm = self.mesh.state.da.getComm()
        n_steps = max(1, int(round((t1 - t0) / self.dt)))
        ts = PETSc.TS().create(comm=comm)
        ts.setOptionsPrefix(self.prefix)
        ts.setProblemType(PETSc.TS.ProblemType.LINEAR)
        ts.setType(PETSc.TS.Type.CN)
        ts.setIFunction(self._ifunction, self.fvec)
        ts.setIJacobian(self._ijacobian, self.J, self.J)
        ts.setTime(t0)
        ts.setTimeStep((t1 - t0) / n_steps)
        ts.setMaxTime(t1)
        ts.setMaxSteps(n_steps)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        ts.setErrorIfStepFails(False)  # report a failed step as SolverError with the reason, not a PETSc.Error
        snes = ts.getSNES()
        snes.setType(PETSc.SNES.Type.KSPONLY)
        ksp = snes.getKSP()
        ksp.setType(PETSc.KSP.Type.FGMRES)
        ksp.setTolerances(rtol=1e-10, atol=1e-50, max_it=500)
        pc = ksp.getPC()
        pc.setType(PETSc.PC.Type.FIELDSPLIT)
        pc.setFieldSplitType(PETSc.PC.CompositeType.SCHUR)
        pc.setFieldSplitFields(4, ("u", [0, 1]), ("v", [2, 3]))
        if adjoint:
            ts.setSaveTrajectory()
            ts.setIJacobianP(self._ijacobianp, self.Jp)
        set_from_options(ts)
        return ts

    def _check(self, ts: PETSc.TS, what: str) -> None:
        reason = ts.getConvergedReason()
        if reason < 0:
            ksp = ts.getSNES().getKSP()
            linear = reason_name(PETSc.KSP.ConvergedReason, ksp.getConvergedReason())
            raise SolverError(self.name, ts.getTime(), reason_name(PETSc.TS.ConvergedReason, reason),
                              f"{what}, linear solver {linear} after {ksp.getIterationNumber()} iterations; tune "
                              f"with -{self.prefix}ts_* / ksp_* / pc_* options", units="s")

    def advance(self, x: PETSc.Vec, t0: float, t1: float, version: int) -> None:
        """Advance ``x = (u, v)`` in place from ``t0`` to ``t1``."""
        self.update(version)
        ts = self._make_ts(t0, t1, adjoint=False)
        try:
            ts.solve(x)
            self._check(ts, "dynamic forward solve")
            log.debug("%s: %d steps to t=%g", self.name, ts.getStepNumber(), ts.getTime())
        finally:
            ts.destroy()

    def adjoint(self, x0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec, mu: PETSc.Vec, version: int) -> None:
        """Recompute the forward run from ``x0`` with a trajectory, then run TSAdjoint.

        ``lam`` holds dJ/dx(t1) on entry and dJ/dx(t0) on exit; ``mu`` (layout :class:`ParameterLayout`) receives
        dJ/dp added to its entry value.
        """
        self.update(version)
        ts = self._make_ts(t0, t1, adjoint=True)
        x = x0.copy()
        try:
            ts.solve(x)
            self._check(ts, "dynamic forward solve (for the adjoint)")
            ts.setCostGradients([lam], [mu])
            ts.adjointSolve()
            self._check(ts, "dynamic adjoint solve")
        finally:
            ts.destroy()
            x.destroy()

    def destroy(self) -> None:
        for obj in (self.A, self.B, self.J, self.Jp, self.fvec, self._f2):
            obj.destroy()
