"""The heat model's faces to a coupler: the sides that import boundary data, and what crosses them.

Each side with an ``import`` has a face grid of dimension ``dim - 1`` (:class:`Face`) on which a neighbour's data
arrive and the side's exports leave, with the scatter between it and the owned boundary cells. Such a side exports
``temperature_<side>`` (the face temperature) and ``heat_flux_<side>`` (the inward flux ``q``, K m/s), besides the
whole ``temperature`` field. With ``T_b`` the boundary cell's temperature, ``g`` the imported data, ``h`` the cell
width and ``kappa`` the diffusivity, a Dirichlet side exports ``(g, 2 kappa (g - T_b) / h)`` and a Neumann side
``(T_b + g h / (2 kappa), g)``. Feeding one side's flux (sign-reversed) into the other's Neumann data and the face
temperature back as Dirichlet data reproduces, at convergence, the monolithic scheme on the union grid exactly (the
face temperature is the mean of the two cell values).

:meth:`Faces.export_adjoint` is the transpose of the derivative of these exports with respect to the state, the
imported data and ``kappa``, written by hand because they are closed-form pointwise expressions of the boundary cells.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.models.base import IMPORT_PREFIX


def side_axis(side: str) -> tuple[int, bool]:
    return "xyz".index(side[0]), side.endswith("_hi")


def boundary_slab(grid: Grid, side: str) -> tuple[tuple, float] | None:
    """Index into the owned C-order block selecting the cells next to ``side`` and their width across it (None if
    this rank has none)."""
    axis, hi = side_axis(side)
    s, e = grid.owned[axis]
    if (hi and e != grid.shape[axis]) or (not hi and s != 0):
        return None
    index = [slice(None)] * grid.dim
    index[grid.dim - 1 - axis] = -1 if hi else 0
    return tuple(index), grid.spacing[axis]


class Face:
    """Coupling data on one side: a face grid (dimension ``dim - 1``) and the scatter to the owned boundary cells.

    Parameters
    ----------
    comm : mpi4py communicator
        The model's.
    grid : Grid
        The model's grid.
    name : str
        The model's name (face grid names and errors).
    side : str
        ``x_lo``, ``x_hi``, ...
    value : float
        The initial data on the face.
    """

    def __init__(self, comm, grid: Grid, name: str, side: str, value: float):
        g = grid
        axis, _ = side_axis(side)
        other = [a for a in range(g.dim) if a != axis]
        if g.dim == 1:
            if g.comm_mpi().Get_size() > 1:
                raise ModelError(name, f"boundary {side}: a coupled side of a 1-D grid needs a single rank "
                                       f"(its face is one point); use a 2-D grid with one row of cells")
            shape, extent = (1,), ((0.0, 1.0),)
        else:
            shape, extent = tuple(g.shape[a] for a in other), tuple(g.extent[a] for a in other)
        self.grid = Grid(comm, shape, extent, name=f"{name}.{side}")
        self.vec = self.grid.create_global()
        self.vec.set(value)
        slab = boundary_slab(g, side)
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
        self.local = PETSc.Vec().createMPI((len(nat), PETSc.DECIDE), comm=comm)
        start = self.local.getOwnershipRange()[0]
        is_face = PETSc.IS().createGeneral(petsc_idx, comm=comm)
        is_local = PETSc.IS().createStride(len(nat), start, 1, comm=comm)
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


class Faces:
    """The coupled sides of a heat model (module docstring): a :class:`Face` for each side with an import.

    Parameters
    ----------
    name : str
        The model's name (errors).
    comm : mpi4py communicator
    grid : Grid
        The model's (cell-centred) grid; not owned.
    boundary : mapping side -> boundary condition
        With ``kind`` (``dirichlet`` or ``neumann``), ``value`` and ``import_name`` (``None``: not coupled).
    """

    def __init__(self, name: str, comm, grid: Grid, boundary: Mapping[str, Any]):
        self.name, self.grid, self.boundary = name, grid, boundary
        #: the faces of the coupled sides, in the order of ``boundary``
        self.faces: dict[str, Face] = {side: Face(comm, grid, name, side, bc.value)
                                       for side, bc in boundary.items() if bc.import_name is not None}

    def side_of(self, name: str) -> str:
        """The side importing field ``name``."""
        for side in self.faces:
            if self.boundary[side].import_name == name:
                return side
        known = [bc.import_name for bc in self.boundary.values() if bc.import_name]
        raise ModelError(self.name, f"unknown import '{name}'; this model imports {known}")

    def export_names(self) -> list[str]:
        """Names of the fields :meth:`exports` returns."""
        return ["temperature"] + [f"{k}_{side}" for side in self.faces for k in ("temperature", "heat_flux")]

    def field_names(self) -> list[str]:
        names = ["temperature"]
        for side in self.faces:
            names += [f"temperature_{side}", f"heat_flux_{side}", self.boundary[side].import_name]
        return names

    def field_grid(self, name: str) -> Grid:
        """The grid a coupling field (export or import) lives on: the model grid or a face grid."""
        if name == "temperature":
            return self.grid
        for side, face in self.faces.items():
            if name in (f"temperature_{side}", f"heat_flux_{side}", self.boundary[side].import_name):
                return face.grid
        raise ModelError(self.name, f"no coupling field '{name}'; known: {sorted(self.field_names())}")

    def exports(self, state: PETSc.Vec, kappa: float) -> dict[str, PETSc.Vec]:
        """``temperature`` (a copy of the state) and, for each coupled side, the face temperature and inward flux."""
        out = {"temperature": state.copy()}
        T = self.grid.owned_array(state, readonly=True)
        for side, face in self.faces.items():
            slab = boundary_slab(self.grid, side)
            if slab is None:
                tf, q = np.zeros(0), np.zeros(0)
            else:
                index, h = slab
                tb, data = T[index], face.owned_values()
                if self.boundary[side].kind == "dirichlet":
                    tf, q = data, 2.0 * kappa * (data - tb) / h
                else:
                    tf, q = tb + data * h / (2.0 * kappa), data
            out[f"temperature_{side}"] = face.to_face(np.ravel(tf))
            out[f"heat_flux_{side}"] = face.to_face(np.ravel(q))
        return out

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        side = self.side_of(name)
        face = self.faces[side]
        if value.getSize() != face.vec.getSize() or value.getLocalSize() != face.vec.getLocalSize():
            raise ModelError(self.name, f"import '{name}' has {value.getSize()} values laid out as "
                                        f"{value.getLocalSize()} on this rank; the face grid of {side} "
                                        f"needs {face.vec.getSize()} ({face.vec.getLocalSize()})")
        value.copy(face.vec)
        face.refresh()

    def export_adjoint(self, state: PETSc.Vec, cotangents: dict[str, PETSc.Vec], lam: PETSc.Vec, kappa: float,
                       parameters: Sequence[str]) -> dict[str, Any]:
        """Adds ``sum_e (d e / d x)^T cotangents[e]`` to ``lam`` and returns ``sum_e (d e / d p)^T cotangents[e]``
        for each name in ``parameters`` (checked by the model): ``kappa``, ``"import:<field>"`` (a face vector), and
        0 for other parameters (the exports do not depend on them)."""
        dkappa = 0.0
        dg: dict[str, np.ndarray] = {}
        for name, cot in cotangents.items():
            if name == "temperature":
                lam.axpy(1.0, cot)
                continue
            side = next((s for s in self.faces if name in (f"temperature_{s}", f"heat_flux_{s}")), None)
            if side is None:
                raise ModelError(self.name, f"no export '{name}' to differentiate; exports are "
                                            f"{sorted(self.export_names())}")
            face, slab = self.faces[side], boundary_slab(self.grid, side)
            c = face.cells(cot)
            if slab is None:
                continue
            index, h = slab
            g = face.owned_values()
            L = self.grid.owned_array(lam)
            tb = self.grid.owned_array(state, readonly=True)[index].ravel()
            acc = dg.setdefault(side, np.zeros(c.size))
            dirichlet = self.boundary[side].kind == "dirichlet"
            if name.startswith("temperature_"):
                if dirichlet:
                    acc += c
                else:
                    L[index] += c.reshape(L[index].shape)
                    acc += c * h / (2.0 * kappa)
                    dkappa -= float(np.sum(c * g)) * h / (2.0 * kappa ** 2)
            else:
                if dirichlet:
                    acc += 2.0 * kappa / h * c
                    L[index] -= (2.0 * kappa / h * c).reshape(L[index].shape)
                    dkappa += float(np.sum(2.0 * (g - tb) / h * c))
                else:
                    acc += c
        out: dict[str, Any] = {}
        for p in parameters:
            if p == "kappa":
                out[p] = float(self.grid.comm_mpi().allreduce(dkappa))
            elif p.startswith(IMPORT_PREFIX):
                side = self.side_of(p[len(IMPORT_PREFIX):])
                out[p] = self.faces[side].to_face(dg.get(side, np.zeros(len(self.faces[side].petsc_idx))))
            else:
                out[p] = 0.0
        return out

    def destroy(self) -> None:
        for face in self.faces.values():
            face.destroy()
        self.faces = {}
