"""The tangent-linear model of the shallow-water time stepping: ``dx(t1) = M dx(t0)`` along a trajectory.

Runge-Kutta methods commute with linearisation: one RK step of the augmented system ``x' = F(x)``,
``dx' = (dF/dx)(x) dx`` is exactly the derivative of one RK step of ``x' = F(x)``. The tangent-linear model is
therefore the same PETSc TS, with the same method and fixed steps, on a grid carrying ``(x, dx)`` (twice the dof),
with ``(dF/dx) dx`` from the forward-mode :class:`~twin.kinds.shallow_water.kernel.Dual` kernel. It is independent
of the assembled Jacobian that TSAdjoint uses, so ``<M dx, y> = <dx, M^T y>`` is a real test of both.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np
from petsc4py import PETSc

from twin.core.grid import Grid
from twin.core.petsc import set_from_options
from twin.kinds.shallow_water.kernel import Dual, tangent, tendency

if TYPE_CHECKING:
    from twin.kinds.shallow_water.model import ShallowWater


@contextmanager
def fixed_step_options(prefix: str) -> Iterator[None]:
    """Within the block, ``-<prefix>ts_adapt_type none`` (derivatives of adaptive stepping are not exact); the
    user's value is restored afterwards. petsc4py 3.18 has no TSAdapt object, hence the options database."""
    opts = PETSc.Options()
    key = f"{prefix}ts_adapt_type"
    old = opts.getString(key, None) if opts.hasName(key) else None
    opts.setValue(key, "none")
    try:
        yield
    finally:
        if old is None:
            opts.delValue(key)
        else:
            opts.setValue(key, old)


class TangentLinear:
    """``M dx`` over ``[t0, t1]`` for a :class:`ShallowWater` model (fixed steps of the model's TS method)."""

    def __init__(self, model: "ShallowWater"):
        self.model = model
        g = model.grid
        self.dof = g.dof
        self.grid = Grid(g.comm, g.shape, g.extent, dof=2 * g.dof, stencil_width=1, periodic=True, stencil="box",
                         proc_sizes=g.da.getProcSizes(), name=f"{model.name}-tlm")
        if self.grid.owned != g.owned:
            raise RuntimeError("tangent-linear grid does not match the model's decomposition")
        self._loc = self.grid.create_local()
        self._x = self.grid.create_global()
        self.ts = PETSc.TS().create(comm=g.da.getComm())
        self.ts.setOptionsPrefix(model.options_prefix)
        self.ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        self.ts.setType(PETSc.TS.Type.RK)
        self.ts.setRKType("4")
        self.ts.setRHSFunction(self._rhs, self.grid.create_global())
        self.ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        with fixed_step_options(model.options_prefix):
            set_from_options(self.ts)

    def _rhs(self, ts, t, X, F) -> None:
        self.grid.global_to_local(X, self._loc)
        a = self.grid.ghosted_array(self._loc)
        d = self.dof
        fields = [Dual(np.ascontiguousarray(a[..., c]), np.ascontiguousarray(a[..., d + c])[None]) for c in range(d)]
        m = self.model
        out = tendency(fields, m.geometry, m.parameter_values(), None if m._sources is None else m._sources(t))
        f = self.grid.owned_array(F)
        shape = f.shape[:2]
        for c, o in enumerate(out):
            f[..., c] = o.v if isinstance(o, Dual) else o
            f[..., d + c] = tangent(o, 1, shape)[0]

    def apply(self, state0: PETSc.Vec, dx: PETSc.Vec, t0: float, t1: float) -> None:
        """Replace ``dx`` by ``M dx``; ``state0`` (the state at ``t0``) is not modified (collective)."""
        m, d = self.model, self.dof
        a = self.grid.owned_array(self._x)
        a[..., :d] = m.grid.owned_array(state0, readonly=True)
        a[..., d:] = m.grid.owned_array(dx, readonly=True)
        n, dt = m.fixed_steps(t0, t1)
        self.ts.setTime(t0)
        self.ts.setStepNumber(0)
        self.ts.setTimeStep(dt)
        self.ts.setMaxTime(t1)
        self.ts.setMaxSteps(n)
        self.ts.solve(self._x)
        m.grid.owned_array(dx)[...] = self.grid.owned_array(self._x, readonly=True)[..., d:]

    def destroy(self) -> None:
        for obj in (self.ts, self._loc, self._x):
            obj.destroy()
        self.grid.destroy()
