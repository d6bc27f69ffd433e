"""The heat equation's operator on a DMDA: the cell-centred finite-volume Laplacian times ``kappa`` with Dirichlet
(ghost cell mirrored: ``-2 kappa / h^2`` on the boundary cell) or Neumann rows, assembled as a parallel AIJ matrix from
vectorised COO triplets (PETSc's ``MatSetValuesStencil`` row by row is far slower in Python)."""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.grid import Grid

SIDES = ("x_lo", "x_hi", "y_lo", "y_hi", "z_lo", "z_hi")


def laplacian(grid: Grid, kappa: float, r0: int, boundary_types: dict[str, str]) -> PETSc.Mat:
    """``A`` (``kappa`` times the 5/7-point Laplacian with the boundary rows of ``boundary_types``: side -> ``dirichlet`` or
    ``neumann``) as a parallel AIJ matrix, built from vectorised COO arrays of the owned rows; ``r0``: first owned row."""
    g = grid
    owned, shape = g.owned, g.shape
    local_idx = [np.arange(s, e) for s, e in owned]
    # PETSc-order index arrays of the owned points, each of C-order local_shape
    idx = list(reversed(np.meshgrid(*reversed(local_idx), indexing="ij")))
    n_local = int(np.prod(g.local_shape))
    rows_local = np.arange(n_local).reshape(g.local_shape)
    ao = g.da.getAO()
    rows, cols, vals = [r0 + rows_local.ravel()], [r0 + rows_local.ravel()], [np.zeros(n_local)]
    diag = np.zeros(g.local_shape)
    for a in range(g.dim):
        c = kappa / g.spacing[a] ** 2
        for step in (-1, 1):
            nb = idx[a] + step
            inside = (nb >= 0) & (nb < shape[a])
            if g.periodic[a]:
                nb = np.mod(nb, shape[a])
                inside = np.ones_like(inside)
            nat = np.zeros(g.local_shape, dtype=np.int64)
            for b in reversed(range(g.dim)):
                nat = nat * shape[b] + (np.where(inside, nb, 0) if b == a else idx[b])
            sel = inside.ravel()
            rows.append(r0 + rows_local.ravel()[sel])
            cols.append(ao.app2petsc(nat.ravel()[sel].astype(PETSc.IntType)))
            vals.append(np.full(int(sel.sum()), c))
            diag -= c * inside
            side = SIDES[2 * a + (step > 0)]
            if not g.periodic[a] and boundary_types[side] == "dirichlet":
                diag -= 2.0 * c * ~inside
    vals[0] = diag.ravel()
    return aij_matrix(g, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))


def aij_matrix(grid: Grid, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> PETSc.Mat:
    """Square AIJ matrix on ``grid``'s vector layout from COO triplets of owned rows (global PETSc indices)."""
    v = grid.create_global()
    n_local, n = v.getLocalSize(), v.getSize()
    r0 = v.getOwnershipRange()[0]
    v.destroy()
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    indptr = np.searchsorted(rows, np.arange(r0, r0 + n_local + 1)).astype(PETSc.IntType)
    return PETSc.Mat().createAIJ(size=((n_local, n), (n_local, n)),
                                 csr=(indptr, cols.astype(PETSc.IntType), vals), comm=grid.comm)
