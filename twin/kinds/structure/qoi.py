"""Quantities of interest of the structure model: stresses, von Mises, natural frequencies, exceedance probability.

Equations
---------
Element-centre stress ``sigma_e = E_e D (B_c u_e - eps*_e (1, 1, 0))`` [Pa]; von Mises stress
``sigma_vm = sqrt(3 J2)`` (plane strain includes ``sigma_zz = nu (sigma_xx + sigma_yy)``).

Natural frequencies solve the generalized eigenproblem ``K phi = omega^2 M phi`` on the free dofs;
``f = omega / (2 pi)`` [Hz]. Method and why: SLEPc is not a dependency of twin (it is not installed with the Debian
stack used here), and only the lowest few modes are wanted, so the eigenproblem is solved by subspace iteration with
Rayleigh-Ritz (Bathe's method): ``Y = K^{-1} M X`` with the static KSP (CG + GAMG, so it scales and runs in parallel
like the static solve), then the small projected problem ``(Y^T K Y) z = lambda (Y^T M Y) z`` with SciPy. Convergence
of mode ``i`` goes as ``(lambda_i / lambda_{p+1})^k`` with ``p`` vectors, so a few guard vectors are carried.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from petsc4py import PETSc

from twin.core.errors import SolverError
from twin.kinds.structure.mesh import ElementMesh
from twin.kinds.structure.operators import Operators
from twin.kinds.structure.static import StaticSolver


def element_stress(ops: Operators, u_e: np.ndarray, moduli: np.ndarray, eps_e: np.ndarray | None) -> np.ndarray:
    """Element-centre stresses ``(nej, nei, 3)`` [Pa] from element displacements ``(nej, nei, 4, 2)``."""
    strain = np.einsum("kb,jib->jik", ops.ref.B_centre, u_e.reshape(u_e.shape[:2] + (8,)))
    if eps_e is not None:
        strain = strain - eps_e[:, :, None] * np.array([1.0, 1.0, 0.0])
    return moduli[:, :, None] * np.einsum("kl,jil->jik", ops.ref.D, strain)


def nodal_average(mesh: ElementMesh, element_values: np.ndarray, out: PETSc.Vec) -> PETSc.Vec:
    """Nodal field (scalar DMDA) as the mean of the adjacent element values. Collective."""
    total, count = mesh.zeros(1), mesh.zeros(1)
    mesh.add_corners(total, np.repeat(element_values[:, :, None], 4, axis=2))
    mesh.add_corners(count, np.ones(element_values.shape[:2] + (4,)))
    c = mesh.scalar.create_global()
    out.set(0.0)
    c.set(0.0)
    mesh.add_to_global(mesh.scalar, total, out)
    mesh.add_to_global(mesh.scalar, count, c)
    out.pointwiseDivide(out, c)
    c.destroy()
    return out


def exceedance_probability(samples, limit: float) -> float:
    """Probability that a QoI exceeds ``limit``, estimated from an ensemble of its values (fraction above).

    Parameters
    ----------
    samples : array_like
        One value per ensemble member (e.g. the maximum von Mises stress of each member) [Pa].
    limit : float
        The limit (e.g. the yield or fatigue stress) [Pa].
    """
    s = np.asarray(samples, dtype=float).ravel()
    if s.size == 0:
        raise ValueError("exceedance_probability needs at least one sample")
    return float(np.mean(s > limit))


def _start_vectors(mesh: ElementMesh, p: int) -> list[PETSc.Vec]:
    """Deterministic, rank-count independent smooth start vectors (polynomials and waves of the coordinates)."""
    X, Y = mesh.disp.owned_mesh()
    (x0, x1), (y0, y1) = mesh.disp.extent
    xs, ys = (X - x0) / (x1 - x0), (Y - y0) / (y1 - y0)
    out = []
    for k in range(p):
        v = mesh.disp.create_global()
        a = mesh.disp.owned_array(v)
        a[..., 0] = np.cos((k + 1) * np.pi * xs + 0.7 * k) * (ys - 0.5 + 0.1 * k)
        a[..., 1] = xs ** (k % 4 + 1) + 0.3 * np.sin((k + 1) * np.pi * ys + 0.3 * k) * xs
        out.append(v)
    return out


def natural_frequencies(solver: StaticSolver, K: PETSc.Mat, M: PETSc.Mat, n_modes: int = 1, guard: int = 4,
                        rtol: float = 1e-9, max_it: int = 200) -> np.ndarray:
    """Lowest ``n_modes`` natural frequencies [Hz] of ``K phi = omega^2 M phi`` (constrained dofs excluded).

    ``M`` must have zero rows and columns at the constrained dofs and ``K`` identity rows there (as assembled by
    :class:`~twin.kinds.structure.operators.Operators`), so the iterates stay zero on them. Collective.

    Raises
    ------
    SolverError
        If subspace iteration does not converge within ``max_it`` iterations.
    """
    mesh = solver.mesh
    comm = mesh.disp.comm_mpi()
    p = n_modes + guard
    X = _start_vectors(mesh, p)
    Y = [x.duplicate() for x in X]
    KY = [x.duplicate() for x in X]
    MX = X[0].duplicate()
    lam_old = None
    try:
        for it in range(max_it):
            for x, y in zip(X, Y):
                M.mult(x, MX)
                y.set(0.0)
                solver.solve(MX, y)
            for y, ky in zip(Y, KY):
                K.mult(y, ky)
            Ya = np.column_stack([y.getArray(readonly=True) for y in Y])
            KYa = np.column_stack([k.getArray(readonly=True) for k in KY])
            MYa = np.empty_like(Ya)
            for k, y in enumerate(Y):
                M.mult(y, MX)
                MYa[:, k] = MX.getArray(readonly=True)
            Kr = comm.allreduce(Ya.T @ KYa)
            Mr = comm.allreduce(Ya.T @ MYa)
            Kr, Mr = 0.5 * (Kr + Kr.T), 0.5 * (Mr + Mr.T)
            lam, Z = sla.eigh(Kr, Mr)
            Xa = Ya @ Z
            for k, x in enumerate(X):
                x.getArray()[...] = Xa[:, k]
            if lam_old is not None and np.all(np.abs(lam[:n_modes] - lam_old) <= rtol * np.abs(lam[:n_modes])):
                return np.sqrt(np.maximum(lam[:n_modes], 0.0)) / (2.0 * np.pi)
            lam_old = lam[:n_modes].copy()
        raise SolverError(mesh.name, 0.0, "EIGEN_NOT_CONVERGED",
                          f"subspace iteration for {n_modes} natural frequencies did not converge in {max_it} "
                          f"iterations")
    finally:
        for v in X + Y + KY + [MX]:
            v.destroy()
