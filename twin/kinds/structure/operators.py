"""Assembled operators of the structure model: stiffness ``K(d)``, mass ``M``, the first-order dynamic pair, loads.

Equations
---------
With element moduli ``E_e = E0 (1 - d_e)`` [Pa], where ``d_e`` is the mean of the damage ``d`` [1] at the element's
four nodes (damage is a *nodal* field, so it lives on the same DMDA layout as the displacement, and is averaged to
elements)::

    K(d) = sum_e E_e K_ref,   M = rho sum_e M_ref,   C = alpha M + beta K(d)       (Rayleigh damping)
    f(t, d) = sum_k s_k phi_k(t) f_k + f_import + sum_e E_e eps*_e F_eig

Dynamic mode integrates the first-order form in ``x = (u, v)``::

    F(t, x, xdot) = B xdot + A x - g(t) = 0,   B = [[I, 0], [0, M]],   A = [[0, -I], [K, C]],   g = (0, f)

so that PETSc's implicit theta methods (Crank-Nicolson, backward Euler) and their TSAdjoint apply. Constrained dofs
are eliminated (see :mod:`twin.kinds.structure.mesh`); their ``u`` rows keep ``udot = v`` and their ``v`` rows are
``m_d vdot = 0``, so a body at rest on its supports stays there.

Element-level residual derivative: ``dR/dE_e = K_ref w_e - eps*_e F_eig`` with ``w = u`` (static) or ``w = u + beta v``
(dynamic, the ``v`` rows); chained with ``dE_e/dd_n = -E0 / 4`` for the element's corners ``n`` it gives the damage
sensitivities, and with ``dE_e/dE0 = 1 - d_e`` the modulus sensitivity.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.kinds.structure.elements import ReferenceElement
from twin.kinds.structure.loads import (
    LoadCase,
    eigenstrain_element_forces,
    load_case_array,
    traction_array,
    zero_constrained,
)
from twin.kinds.structure.mesh import ADD, ElementMesh

#: elements per batch when inserting element matrices (bounds the temporary (batch, 8, 8) arrays)
BATCH = 32768


def insert_element_matrices(mat: PETSc.Mat, rows: np.ndarray, cols: np.ndarray, coeff: np.ndarray,
                            ref: np.ndarray) -> None:
    """``mat += sum_e coeff_e * ref`` at local indices ``rows, cols`` (n_el, 8) (ADD_VALUES, -1 ignored)."""
    coeff = np.asarray(coeff, dtype=float).ravel()
    for s in range(0, rows.shape[0], BATCH):
        e = min(s + BATCH, rows.shape[0])
        V = coeff[s:e, None, None] * ref[None]
        mat.setValuesLocalRCV(rows[s:e], cols[s:e], V, addv=ADD)


def insert_diagonal(mat: PETSc.Mat, rows: np.ndarray, cols: np.ndarray, value: float) -> None:
    """``mat[r, c] += value`` for local index pairs (vectorised through the RCV interface)."""
    if rows.size:
        r = np.asarray(rows, dtype=PETSc.IntType).reshape(-1, 1)
        c = np.asarray(cols, dtype=PETSc.IntType).reshape(-1, 1)
        mat.setValuesLocalRCV(r, c, np.full((r.shape[0], 1, 1), float(value)), addv=ADD)


class Operators:
    """Assembles the operators for a mesh, a reference element and material constants.

    Parameters
    ----------
    mesh : ElementMesh
    ref : ReferenceElement
    E0 : float
        Undamaged Young's modulus [Pa].
    rho : float
        Density [kg/m^3].
    alpha, beta : float
        Rayleigh damping coefficients [1/s], [s].
    """

    def __init__(self, mesh: ElementMesh, ref: ReferenceElement, E0: float, rho: float, alpha: float = 0.0,
                 beta: float = 0.0):
        self.mesh, self.ref = mesh, ref
        self.E0, self.rho, self.alpha, self.beta = float(E0), float(rho), float(alpha), float(beta)

    # scale of identity rows at constrained dofs: keeps the spectrum of K (and M) together for CG/GAMG
    @property
    def k_diag(self) -> float:
        return self.E0 * float(np.mean(np.diag(self.ref.K)))

    @property
    def m_diag(self) -> float:
        return self.rho * float(np.mean(np.diag(self.ref.M)))

    def moduli(self, damage: PETSc.Vec) -> np.ndarray:
        """Element moduli ``E_e = E0 (1 - d_e)`` of the owned elements, shape ``(nej, nei)`` [Pa]."""
        return self.E0 * (1.0 - self.mesh.element_mean(damage))

    # -- matrices -------------------------------------------------------------------------------------------------
    def stiffness(self, mat: PETSc.Mat, damage: PETSc.Vec) -> PETSc.Mat:
        """Assemble ``K(d)`` on the displacement DMDA into ``mat`` (zeroed first)."""
        mesh = self.mesh
        mat.zeroEntries()
        idx = mesh.element_dofs(2)
        insert_element_matrices(mat, idx, idx, self.moduli(damage), self.ref.K)
        fixed = mesh.owned_constrained_dofs(2)
        insert_diagonal(mat, fixed, fixed, self.k_diag)
        mat.assemble()
        return mat

    def mass(self, mat: PETSc.Mat, constrained_diagonal: float = 0.0) -> PETSc.Mat:
        """Assemble ``M`` on the displacement DMDA; constrained rows get ``constrained_diagonal`` on the diagonal."""
        mesh = self.mesh
        mat.zeroEntries()
        idx = mesh.element_dofs(2)
        insert_element_matrices(mat, idx, idx, np.full(mesh.n_local_elements, self.rho), self.ref.M)
        fixed = mesh.owned_constrained_dofs(2)
        insert_diagonal(mat, fixed, fixed, constrained_diagonal)
        mat.assemble()
        return mat

    def dynamic_pair(self, A: PETSc.Mat, B: PETSc.Mat, damage: PETSc.Vec) -> None:
        """Assemble ``A`` and ``B`` of the first-order form on the dof-4 state DMDA (both zeroed first)."""
        mesh, ref = self.mesh, self.ref
        A.zeroEntries()
        B.zeroEntries()
        Ee = self.moduli(damage).ravel()
        rv = mesh.element_dofs(4, (2, 3))
        cu = mesh.element_dofs(4, (0, 1))
        insert_element_matrices(A, rv, cu, Ee, ref.K)
        insert_element_matrices(A, rv, rv, self.beta * Ee, ref.K)
        insert_element_matrices(A, rv, rv, np.full(Ee.size, self.alpha * self.rho), ref.M)
        insert_element_matrices(B, rv, rv, np.full(Ee.size, self.rho), ref.M)
        for comp in (0, 1):
            u_rows = mesh.owned_node_dofs(4, comp)
            insert_diagonal(A, u_rows, u_rows + 2, -1.0)
            insert_diagonal(B, u_rows, u_rows, 1.0)
        fixed_v = mesh.owned_constrained_dofs(4, offset=2)
        insert_diagonal(B, fixed_v, fixed_v, self.m_diag)
        A.assemble()
        B.assemble()

    # -- loads ----------------------------------------------------------------------------------------------------
    def load_case_vector(self, case: LoadCase, vec: PETSc.Vec) -> PETSc.Vec:
        """Global nodal forces of one load case (unit history and scale), constrained dofs zero."""
        vec.set(0.0)
        forces = zero_constrained(self.mesh, load_case_array(self.mesh, self.ref, case))
        return self.mesh.add_to_global(self.mesh.disp, forces, vec)

    def import_forces(self, imports: dict, damage: PETSc.Vec, vec: PETSc.Vec) -> PETSc.Vec:
        """Global nodal forces of the coupled fields (body force, edge tractions, eigenstrain) into ``vec``."""
        mesh = self.mesh
        vec.set(0.0)
        forces = mesh.zeros(2)
        if "body_force" in imports:
            b = mesh.element_values(mesh.disp, imports["body_force"])
            mesh.add_corners(forces, np.einsum("ab,jibc->jiac", self.ref.M_scalar, b))
        for edge in ("left", "right", "bottom", "top"):
            key = f"traction_{edge}"
            if key in imports:
                local = mesh.disp.da.getLocalVec()
                mesh.disp.global_to_local(imports[key], local)
                tau = mesh.disp.ghosted_array(local).copy()
                mesh.disp.da.restoreLocalVec(local)
                forces += traction_array(mesh, self.ref, edge, tau)
        eps = self.eigenstrain_elements(imports)
        if eps is not None:
            mesh.add_corners(forces, eigenstrain_element_forces(self.ref, self.moduli(damage), eps))
        return mesh.add_to_global(mesh.disp, zero_constrained(mesh, forces), vec)

    def eigenstrain_elements(self, imports: dict) -> np.ndarray | None:
        """Element-mean eigenstrain ``(nej, nei)`` of the imported nodal field, or ``None``."""
        if "eigenstrain" not in imports:
            return None
        return self.mesh.element_mean(imports["eigenstrain"])

    # -- sensitivities --------------------------------------------------------------------------------------------
    def modulus_residual(self, w_e: np.ndarray, eps_e: np.ndarray | None) -> np.ndarray:
        """``dR/dE_e`` per owned element: ``K_ref w_e - eps*_e F_eig``, shape ``(nej, nei, 8)``.

        ``w_e`` are element displacements ``(nej, nei, 4, 2)``.
        """
        q = np.einsum("ab,jib->jia", self.ref.K, w_e.reshape(w_e.shape[:2] + (8,)))
        if eps_e is not None:
            q -= eps_e[:, :, None] * self.ref.F_eig[None, None]
        return q

    def damage_gradient(self, dJ_dE: np.ndarray, out: PETSc.Vec) -> PETSc.Vec:
        """Chain element-modulus sensitivities ``(nej, nei)`` to the nodal damage: ``out = sum_e -E0/4 dJ/dE_e``."""
        mesh = self.mesh
        out.set(0.0)
        g = mesh.zeros(1)
        mesh.add_corners(g, np.repeat((-0.25 * self.E0 * dJ_dE)[:, :, None], 4, axis=2))
        return mesh.add_to_global(mesh.scalar, g, out)
