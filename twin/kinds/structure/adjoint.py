"""The discrete adjoint of the structure model (mixed into :class:`~twin.kinds.structure.model.StructureModel`).

Static mode: one transposed solve ``K(d)^T mu = lambda`` (constrained dofs zeroed), then the gradients from the
element residuals: ``dJ/dE_e = -mu_e . dR_e/dE_e`` spread to the nodal damage and summed for ``E0``, and
``dJ/dload_c = h_c(t) mu . f_c`` for each load case (``h_c`` its time history). Dynamic mode: TSAdjoint through
:class:`~twin.kinds.structure.dynamic.DynamicSolver`. Both are gradients of the discrete model, checked by Taylor
tests (``tests/verification/test_structure_adjoint.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError


class StructureAdjoint:
    """Adjoint methods of the structure model (uses its mesh, operators, solvers, forcing and parameter layout)."""

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint (transpose solve in static mode, TSAdjoint in dynamic mode); see :class:`Model`.

        Gradients: ``damage`` (a vector on ``mesh.scalar``), ``E0`` and ``load_<name>`` (floats).
        """
        unknown = [p for p in parameters if p not in self.parameters]
        if unknown:
            raise ModelError(self.name, f"no gradient for unknown parameters {unknown}; known: "
                                        f"{sorted(self.parameters)}")
        mu = self.layout.create()
        try:
            if self.mode == "static":
                self._static_adjoint(state0, t1, lam, mu)
            else:
                self.dynamic._g_cache = None
                self.dynamic.adjoint(state0, t0, t1, lam, mu, self._version)
            g_damage = self.mesh.scalar.create_global()
            scalars = self.layout.split(mu, g_damage)
        finally:
            mu.destroy()
        out: dict[str, Any] = {}
        for p in parameters:
            out[p] = g_damage if p == "damage" else scalars[p]
        if "damage" not in parameters:
            g_damage.destroy()
        return out

    def _static_adjoint(self, state0: PETSc.Vec, t1: float, lam: PETSc.Vec, mu: PETSc.Vec) -> None:
        mesh, ops = self.mesh, self.ops
        u = state0.copy()
        self.solve_static(t1, u)
        rhs = lam.copy()
        self.mesh.disp.owned_array(rhs)[self.mesh.owned_view(self.mesh.constrained)] = 0.0
        adj = rhs.duplicate()
        adj.set(0.0)
        self.static.solve(rhs, adj, t1, transpose=True)
        u_e = mesh.element_values(mesh.disp, u)
        l_e = mesh.element_values(mesh.disp, adj).reshape(mesh.nej, mesh.nei, 8)
        q = ops.modulus_residual(u_e, ops.eigenstrain_elements(self.imports))
        dJ_dE = -np.einsum("jia,jia->ji", l_e, q)
        g = self.mesh.scalar.create_global()
        ops.damage_gradient(dJ_dE, g)
        mu.getArray()[:self.layout.field_local] = g.getArray(readonly=True)
        comm = mesh.disp.comm_mpi()
        scal = {"E0": comm.allreduce(float(np.sum((1.0 - mesh.element_mean(self.damage)) * dJ_dE)))}
        for case in self.forcing.cases:
            scal[f"load_{case.name}"] = case.history(t1) * adj.dot(self.forcing.vectors[case.name])
        if self.layout.last:
            mu.getArray()[self.layout.field_local:] = [scal[n] for n in self.layout.scalar_names]
        lam.set(0.0)
        for v in (u, rhs, adj, g):
            v.destroy()
