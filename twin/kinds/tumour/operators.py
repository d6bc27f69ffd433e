"""The finite-volume diffusion operator of the tumour model, assembled as a PETSc AIJ matrix.

Cell-centred finite volumes on the DMDA (cells of width ``h_a`` along axis ``a``). The flux through the face between
cells ``L`` and ``R`` (neighbours along axis ``a``) is ``T_LR (N_R - N_L)`` with the conductance

    T_LR = 2 D_L D_R / (D_L + D_R) / h_a^2         (harmonic mean of the cell diffusivities, 1/day)

when both cells are tissue, and ``T_LR = 0`` when either is not (no flux through the tissue boundary, nor through the
grid boundary). Then ``(A N)_i = sum over faces f of i of T_f (N_neighbour - N_i)``: ``A`` is symmetric with zero row
and column sums, so total mass ``sum_i N_i h^d`` is conserved exactly by the discrete diffusion. The harmonic mean is
the conductance of two half-cells in series (second order for smooth D, flux-continuous across jumps of D).

With ``D = f (D_white w + D_grey (1 - w))`` in tissue cells (``f`` a positive factor field, 1 unless a coupled
model lowers the diffusivity, e.g. ``f = exp(-gamma sigma_vm)`` under mechanical stress), the conductances are
homogeneous of degree one in ``(D_white, D_grey)``; the derivative matrices ``dA/dD_white`` and ``dA/dD_grey``
(same sparsity) give the parameter Jacobian columns ``(dA/dD) N`` that TSAdjoint needs.

Assembly is vectorised: the sparsity (diagonal plus the 2*dim face neighbours inside the box) is computed once as a
CSR block of this rank's rows with PETSc global column numbers (natural indices mapped through the DMDA's AO); values
are recomputed as whole arrays when the diffusivities change.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.grid import Grid
from twin.kinds.tumour.phantom import Tissue


class DiffusionOperator:
    """``A(D_white, D_grey)`` and its derivatives for the owned rows of a grid.

    Parameters
    ----------
    grid : Grid
        Cell-centred, non-periodic, ``dof=1``; lengths in mm.
    tissue : Tissue
        Mask and white-matter fraction (whole-grid arrays, natural C order).
    """

    def __init__(self, grid: Grid, tissue: Tissue):
        self.grid = grid
        self.tissue = tissue
        comm = grid.da.getComm()
        shape_c = tuple(grid.shape[::-1])
        dim = grid.dim
        owned = grid.owned_slices
        local_shape = grid.local_shape
        nloc = int(np.prod(local_shape))
        natural = np.arange(grid.size, dtype=np.int64).reshape(shape_c)[owned]
        strides = [int(np.prod(shape_c[ca + 1:])) for ca in range(dim)]
        # slots: 0 = the cell itself, then (minus, plus) neighbour along each C-order axis
        cols = [natural.ravel()]
        valid = [np.ones(nloc, dtype=bool)]
        for ca in range(dim):
            start = owned[ca].start
            g = (start + np.arange(local_shape[ca])).reshape([-1 if a == ca else 1 for a in range(dim)])
            g = np.broadcast_to(g, local_shape).ravel()
            for step, ok in ((-1, g > 0), (1, g < shape_c[ca] - 1)):
                cols.append(np.where(ok, natural.ravel() + step * strides[ca], 0))
                valid.append(ok)
        cols = np.stack(cols, axis=1)
        valid = np.stack(valid, axis=1)
        ao = grid.da.getAO()
        petsc_cols = ao.app2petsc(cols.ravel().astype(PETSc.IntType)).reshape(cols.shape).astype(np.int64)
        petsc_cols = np.where(valid, petsc_cols, np.iinfo(np.int64).max)
        order = np.argsort(petsc_cols, axis=1, kind="stable")
        self._order = order
        self._valid_sorted = np.take_along_axis(valid, order, axis=1)
        sorted_cols = np.take_along_axis(petsc_cols, order, axis=1)
        self.indptr = np.concatenate([[0], np.cumsum(self._valid_sorted.sum(axis=1))]).astype(PETSc.IntType)
        self.indices = sorted_cols[self._valid_sorted].astype(PETSc.IntType)
        self.nloc = nloc
        self._slots = 1 + 2 * dim
        sizes = ((nloc, grid.size), (nloc, grid.size))
        zeros = np.zeros(len(self.indices))
        self.A = PETSc.Mat().createAIJ(size=sizes, csr=(self.indptr, self.indices, zeros), comm=comm)
        self.dA_white = PETSc.Mat().createAIJ(size=sizes, csr=(self.indptr, self.indices, zeros), comm=comm)
        self.dA_grey = PETSc.Mat().createAIJ(size=sizes, csr=(self.indptr, self.indices, zeros), comm=comm)
        self.diffusivity = np.zeros(nloc)

    def _csr_values(self, slot_values: np.ndarray) -> np.ndarray:
        """Slot-ordered values ``(nloc, slots)`` to the CSR data order."""
        return np.take_along_axis(slot_values, self._order, axis=1)[self._valid_sorted]

    def update(self, D_white: float, D_grey: float, factor: np.ndarray | None = None) -> None:
        """Recompute the values of ``A`` and of its derivatives for new diffusivities (mm^2/day).

        ``factor`` (whole grid, natural C order, positive) multiplies the diffusivity cell by cell; ``None`` is 1.
        """
        grid, tissue = self.grid, self.tissue
        dim = grid.dim
        mask = tissue.mask
        f = np.ones(mask.shape) if factor is None else np.asarray(factor, dtype=float).reshape(mask.shape)
        # the white/grey weights of D, scaled by the factor: D = D_white w + D_grey g
        w = f * tissue.white
        g = f * (1.0 - tissue.white)
        D = np.where(mask, D_white * w + D_grey * g, 0.0)
        owned = grid.owned_slices
        self.diffusivity = D[owned].ravel().copy()
        slots = [np.zeros((self.nloc, self._slots)) for _ in range(3)]
        h_c = grid.spacing[::-1]
        for ca in range(dim):
            left = tuple(slice(None, -1) if a == ca else slice(None) for a in range(dim))
            right = tuple(slice(1, None) if a == ca else slice(None) for a in range(dim))
            DL, DR = D[left], D[right]
            wL, wR = w[left], w[right]
            gL, gR = g[left], g[right]
            both = mask[left] & mask[right]
            s = DL + DR
            ok = both & (s > 0)
            inv = np.where(ok, 1.0 / np.where(ok, s, 1.0), 0.0)
            scale = 1.0 / (h_c[ca] * h_c[ca])
            T = 2.0 * DL * DR * inv * scale
            dT_white = 2.0 * (DR * DR * wL + DL * DL * wR) * inv * inv * scale
            dT_grey = 2.0 * (DR * DR * gL + DL * DL * gR) * inv * inv * scale
            for out, face in zip(slots, (T, dT_white, dT_grey)):
                # padded[g] is the face on the minus side of cell g (zero beyond the box)
                pad = [(1, 1) if a == ca else (0, 0) for a in range(dim)]
                padded = np.pad(np.where(ok, face, 0.0), pad)
                lo = tuple(slice(owned[a].start, owned[a].stop) if a == ca else owned[a] for a in range(dim))
                hi = tuple(slice(owned[a].start + 1, owned[a].stop + 1) if a == ca else owned[a]
                           for a in range(dim))
                minus, plus = padded[lo].ravel(), padded[hi].ravel()
                out[:, 1 + 2 * ca] = minus
                out[:, 2 + 2 * ca] = plus
                out[:, 0] -= minus + plus
        for mat, vals in zip((self.A, self.dA_white, self.dA_grey), slots):
            mat.zeroEntries()
            mat.setValuesCSR(self.indptr, self.indices, self._csr_values(vals),
                             addv=PETSc.InsertMode.INSERT_VALUES)
            mat.assemble()

    def bytes_per_apply(self) -> int:
        """Memory traffic of one ``A x`` (AIJ values and column indices, row pointers, x and y), in bytes."""
        nnz = len(self.indices)
        return int(nnz * (8 + PETSc.IntType(0).itemsize) + (self.nloc + 1) * PETSc.IntType(0).itemsize
                   + 2 * 8 * self.nloc)

    def destroy(self) -> None:
        for m in (self.A, self.dA_white, self.dA_grey):
            m.destroy()
