"""The coupling face of one side of the heat model: the face grid (dimension ``dim - 1``) on which a neighbour's
boundary data arrive and leave, and the scatter between it and the owned boundary cells."""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid


def side_axis(side: str) -> tuple[int, bool]:
    return "xyz".index(side[0]), side.endswith("_hi")


class Face:
    """Coupling data on one side: a face grid (dimension ``dim - 1``) and the scatter to the owned boundary cells."""

    def __init__(self, model, side: str):
        g = model.grid
        axis, _ = side_axis(side)
        other = [a for a in range(g.dim) if a != axis]
        if g.dim == 1:
            if g.comm_mpi().Get_size() > 1:
                raise ModelError(model.name, f"boundary {side}: a coupled side of a 1-D grid needs a single rank "
                                             f"(its face is one point); use a 2-D grid with one row of cells")
            shape, extent = (1,), ((0.0, 1.0),)
        else:
            shape, extent = tuple(g.shape[a] for a in other), tuple(g.extent[a] for a in other)
        self.grid = Grid(model.comm, shape, extent, name=f"{model.name}.{side}")
        self.vec = self.grid.create_global()
        self.vec.set(model.boundary[side].value)
        slab = model._boundary_slab(side)
        if slab is None or g.dim == 1:
            nat = np.zeros(0 if slab is None else 1, dtype=np.int64)
        else:
            ranges = [np.arange(*g.owned[a]) for a in other]
            mesh = list(reversed(np.meshgrid(*reversed(ranges), indexing="ij")))
            nat = np.zeros(mesh[0].shape, dtype=np.int64)
            for k in reversed(range(len(other))):
                nat = nat * shape[k] + mesh[k]
            nat = nat.ravel()
        petsc_idx = self.grid.da.getAO().app2petsc(nat.astype(PETSc.IntType))
        #: face-vector (PETSc) index of each boundary cell this rank owns, in the order of ``owned_values``
        self.petsc_idx = np.asarray(petsc_idx, dtype=np.int64)
        self.local = PETSc.Vec().createMPI((len(nat), PETSc.DECIDE), comm=model.comm)
        start = self.local.getOwnershipRange()[0]
        is_face = PETSc.IS().createGeneral(petsc_idx, comm=model.comm)
        is_local = PETSc.IS().createStride(len(nat), start, 1, comm=model.comm)
        self.scatter = PETSc.Scatter().create(self.vec, is_face, self.local, is_local)
        is_face.destroy()
        is_local.destroy()
        self.out_local = self.local.duplicate()
        self.refresh()

    def refresh(self) -> None:
        """Scatter the face data to the boundary cells (collective: call on every rank after changing ``vec``)."""
        self.scatter.scatter(self.vec, self.local, addv=PETSc.InsertMode.INSERT_VALUES,
                             mode=PETSc.ScatterMode.FORWARD)

    def owned_values(self) -> np.ndarray:
        """The face data at this rank's boundary cells (flat, face C order); not collective."""
        return self.local.getArray(readonly=True)

    def cells(self, vec: PETSc.Vec) -> np.ndarray:
        """The values of a face vector at this rank's boundary cells (a copy; the transpose of :meth:`to_face`, as
        each face point belongs to exactly one boundary cell). Collective."""
        self.scatter.scatter(vec, self.out_local, addv=PETSc.InsertMode.INSERT_VALUES,
                             mode=PETSc.ScatterMode.FORWARD)
        return self.out_local.getArray(readonly=True).copy()

    def to_face(self, values: np.ndarray) -> PETSc.Vec:
        """A new face vector from values at this rank's boundary cells. Collective."""
        out = self.grid.create_global()
        self.out_local.getArray()[...] = values
        self.scatter.scatter(self.out_local, out, addv=PETSc.InsertMode.INSERT_VALUES,
                             mode=PETSc.ScatterMode.REVERSE)
        return out

    def destroy(self) -> None:
        for obj in (self.scatter, self.local, self.out_local, self.vec):
            obj.destroy()
        self.grid.destroy()
