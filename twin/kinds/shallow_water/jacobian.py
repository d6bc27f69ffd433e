"""Exact Jacobians of the shallow-water tendencies: ``dF/dx`` assembled into a DMDA AIJ matrix, ``dF/dp`` dense.

Each output point of :func:`~twin.kinds.shallow_water.kernel.tendency` depends only on the 3 x 3 box of ghosted
points around it. Seeding, for one input component at a time, the 9 "colours" ``(J mod 3, I mod 3)`` of the ghosted
block as 9 forward-mode directions (:class:`~twin.kinds.shallow_water.kernel.Dual`) gives every Jacobian entry
exactly in one vectorised pass per component: the output at ``(J, I)`` sees exactly one seeded point of each colour,
at the offset ``((c - J + 1) mod 3) - 1``. Columns are ghosted local indices, so periodic images that alias the same
global unknown (small grids) are summed by ``ADD_VALUES``, as the chain rule requires.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.grid import Grid
from twin.kinds.shallow_water.kernel import Dual, Geometry, tangent, tendency

#: the scalar parameters of the dynamics, in the column order of dF/dp
PARAMETER_NAMES = ("gravity", "f0", "beta", "drag", "forcing_amplitude")


class JacobianAssembler:
    """Builds ``dF/dx`` on a grid's DMDA (box stencil of width 1) and ``dF/dp`` for :data:`PARAMETER_NAMES`."""

    def __init__(self, grid: Grid):
        self.grid = grid
        dof = grid.dof
        NY, NX = grid.ghosted_shape()
        ny, nx = grid.local_shape
        self.dof = dof
        J, I = np.meshgrid(np.arange(NY), np.arange(NX), indexing="ij")
        self.masks = np.stack([((J % 3 == a) & (I % 3 == b)).astype(float) for a in range(3) for b in range(3)])
        Jo, Io = J[1:-1, 1:-1], I[1:-1, 1:-1]
        cols = np.empty((ny, nx, dof, 9), dtype=PETSc.IntType)
        for k in range(9):
            a, b = divmod(k, 3)
            Jc = Jo + (a - Jo + 1) % 3 - 1
            Ic = Io + (b - Io + 1) % 3 - 1
            for c in range(dof):
                cols[:, :, c, k] = (Jc * NX + Ic) * dof + c
        # rows (j, i, c_out) share the columns of (j, i): repeat over c_out
        self.cols = np.repeat(cols.reshape(ny * nx, dof * 9), dof, axis=0)
        self.rows = (((Jo * NX + Io) * dof)[..., None] + np.arange(dof)).reshape(-1, 1).astype(PETSc.IntType)

    def create_matrix(self) -> PETSc.Mat:
        """An AIJ matrix with the DMDA's box-stencil preallocation and local-to-global map."""
        return self.grid.da.createMat()

    def assemble(self, mat: PETSc.Mat, fields: list[np.ndarray], geo: Geometry, params: dict) -> None:
        """``mat = dF/dx`` at the ghosted ``fields`` (collective)."""
        ny, nx = self.grid.local_shape
        dof = self.dof
        values = np.empty((ny, nx, dof, dof, 9))
        for cin in range(dof):
            seeded = list(fields)
            seeded[cin] = Dual(fields[cin], self.masks)
            out = tendency(seeded, geo, params)
            for cout in range(dof):
                values[:, :, cout, cin, :] = np.moveaxis(tangent(out[cout], 9, (ny, nx)), 0, -1)
        mat.zeroEntries()
        mat.setValuesLocalRCV(self.rows, self.cols, values.reshape(ny * nx * dof, dof * 9),
                              addv=PETSc.InsertMode.ADD_VALUES)
        mat.assemble()

    def create_parameter_matrix(self) -> PETSc.Mat:
        """A dense matrix with the state's row layout and one column per entry of :data:`PARAMETER_NAMES`."""
        n_local = self.grid.local_shape[0] * self.grid.local_shape[1] * self.dof
        n_global = self.grid.size * self.dof
        mat = PETSc.Mat().createDense(((n_local, n_global), (PETSc.DECIDE, len(PARAMETER_NAMES))),
                                      comm=self.grid.da.getComm())
        mat.setUp()
        return mat

    def assemble_parameters(self, mat: PETSc.Mat, fields: list[np.ndarray], geo: Geometry, params: dict) -> None:
        """``mat = dF/dp`` at the ghosted ``fields`` (collective)."""
        m = len(PARAMETER_NAMES)
        ny, nx = self.grid.local_shape
        seeded = {}
        for k, name in enumerate(PARAMETER_NAMES):
            d = np.zeros((m, 1, 1))
            d[k] = 1.0
            seeded[name] = Dual(params[name], d)
        out = tendency(list(fields), geo, seeded)
        cols = np.stack([tangent(o, m, (ny, nx)) for o in out], axis=-1)  # (m, ny, nx, dof)
        dense = mat.getDenseArray()
        dense[...] = cols.reshape(m, -1).T
        mat.assemble()
