"""The Q1 element mesh on PETSc DMDAs: who assembles which element, boundary conditions, scatter-add of element data.

Layout
------
Nodes live on a DMDA (``centering="node"``, ``stencil="box"``, width 1). ``n_elements = (nex, ney)`` elements give
``(nex + 1, ney + 1)`` nodes. Each rank assembles the elements whose lower-left node it owns; their other corners are
at most one node away, i.e. inside the ghost layer, so element data are gathered from and added into *ghosted* local
arrays by slicing (four corner slices, no per-element loop), and added to the global vector or matrix with the
DMDA's local-to-global map (``ADD_VALUES``).

Three DMDAs share one parallel layout (same sizes and process grid, hence the same ownership):
``disp`` (dof 2: ``u_x, u_y`` [m]), ``scalar`` (dof 1: damage ``d`` [1], eigenstrain ``eps*`` [1]) and, in dynamic
mode, ``state`` (dof 4: ``u_x, u_y, v_x, v_y``).

Boundary conditions (homogeneous Dirichlet), by edge name ``left``, ``right``, ``bottom``, ``top``:

* ``clamped``: ``u_x = u_y = 0`` on the whole edge;
* ``pinned``: ``u_x = u_y = 0`` at the node at the middle of the edge only (the section may rotate about it);
* ``roller``: the normal displacement is zero along the edge (``u_x`` on left/right, ``u_y`` on bottom/top);
* ``free``: no constraint (traction-free unless loaded).

Constrained dofs are *eliminated symmetrically during assembly*: their local indices are set to -1, which PETSc's
``MatSetValuesLocal`` ignores, and a scaled identity is placed on their diagonal. This is MatZeroRowsColumns in one
pass, and keeps the operators symmetric for CG and for the transpose (adjoint) solves.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.kinds.structure.elements import CORNERS

EDGES = ("left", "right", "bottom", "top")
BC_KINDS = ("clamped", "pinned", "roller", "free")
ADD = PETSc.InsertMode.ADD_VALUES


class ElementMesh:
    """Uniform Q1 mesh of a rectangle, distributed over ``comm``.

    Parameters
    ----------
    comm : mpi4py communicator
    n_elements : (int, int)
        Elements along x and y.
    extent : ((float, float), (float, float))
        ``(x0, x1), (y0, y1)`` in metres.
    boundary : mapping edge -> kind
        Boundary conditions; missing edges are free.
    dynamic : bool
        Also create the dof-4 state DMDA (displacement and velocity).
    name : str
        Component name for errors.
    """

    def __init__(self, comm, n_elements: Sequence[int], extent, boundary: Mapping[str, str], *, dynamic: bool = False,
                 name: str = "structure", proc_sizes: Sequence[int] | None = None):
        nex, ney = (int(n) for n in n_elements)
        if nex < 1 or ney < 1:
            raise ModelError(name, f"need at least one element per axis, got {nex} x {ney}")
        self.name = name
        self.n_elements = (nex, ney)
        shape = (nex + 1, ney + 1)
        self.disp = Grid(comm, shape, extent, dof=2, stencil="box", centering="node", proc_sizes=proc_sizes,
                         name=name)
        procs = self.disp.da.getProcSizes()
        self.scalar = Grid(comm, shape, extent, dof=1, stencil="box", centering="node", proc_sizes=procs, name=name)
        self.state = (Grid(comm, shape, extent, dof=4, stencil="box", centering="node", proc_sizes=procs, name=name)
                      if dynamic else None)
        self.hx, self.hy = self.disp.spacing
        (xs, xe), (ys, ye) = self.disp.owned
        (gxs, gxe), (gys, gye) = self.disp.da.getGhostRanges()
        self.ghost_shape = (gye - gys, gxe - gxs)
        # owned elements: lower-left node owned and not on the last node line
        self.elem_x = (xs, min(xe, shape[0] - 1))
        self.elem_y = (ys, min(ye, shape[1] - 1))
        self.nei = self.elem_x[1] - self.elem_x[0]
        self.nej = self.elem_y[1] - self.elem_y[0]
        self.n_local_elements = self.nei * self.nej
        self.offset = (ys - gys, xs - gxs)  # of the first owned element's lower-left node in the ghosted block (j, i)
        self.boundary = self._check_boundary(boundary)
        self.constrained = self._constrained_mask((gxs, gxe), (gys, gye))
        self._check_rigid_body(comm)

    # -- boundary conditions ---------------------------------------------------------------------------------------
    def _check_boundary(self, boundary: Mapping[str, str]) -> dict[str, str]:
        out = {e: "free" for e in EDGES}
        for edge, kind in dict(boundary).items():
            if edge not in EDGES:
                raise ModelError(self.name, f"unknown boundary '{edge}'; the boundaries are {list(EDGES)}")
            if kind not in BC_KINDS:
                raise ModelError(self.name, f"boundary '{edge}': unknown condition '{kind}'; use one of "
                                            f"{list(BC_KINDS)}")
            out[edge] = kind
        return out

    def _constrained_mask(self, gx, gy) -> np.ndarray:
        """Boolean ghosted array ``(gny, gnx, 2)``: which displacement components are fixed."""
        nx, ny = self.disp.shape
        I = np.arange(*gx)[None, :]
        J = np.arange(*gy)[:, None]
        mask = np.zeros(self.ghost_shape + (2,), dtype=bool)
        on = {"left": I == 0, "right": I == nx - 1, "bottom": J == 0, "top": J == ny - 1}
        mid = {"left": (I == 0) & (J == (ny - 1) // 2), "right": (I == nx - 1) & (J == (ny - 1) // 2),
               "bottom": (J == 0) & (I == (nx - 1) // 2), "top": (J == ny - 1) & (I == (nx - 1) // 2)}
        normal = {"left": 0, "right": 0, "bottom": 1, "top": 1}
        for edge, kind in self.boundary.items():
            sel = np.broadcast_to(on[edge], self.ghost_shape)
            if kind == "clamped":
                mask[sel] = True
            elif kind == "pinned":
                mask[np.broadcast_to(mid[edge], self.ghost_shape)] = True
            elif kind == "roller":
                mask[..., normal[edge]] |= sel
        return mask

    def _check_rigid_body(self, comm) -> None:
        """Refuse constraints that leave a rigid-body motion free (a singular stiffness), before any solve.

        The 2-D rigid motions are two translations and the rotation ``(-y, x)``; they are all suppressed exactly when
        the 3x3 Gram matrix of their values at the constrained dofs is non-singular.
        """
        if all(kind == "free" for kind in self.boundary.values()):
            raise ModelError(self.name, "the body is unconstrained (every boundary is 'free'): the static problem is "
                                        "singular. Clamp, pin or put rollers on at least one boundary, e.g. "
                                        "boundary: {left: clamped}")
        X, Y = self.disp.owned_mesh()
        (x0, x1), (y0, y1) = self.disp.extent
        X, Y = X - 0.5 * (x0 + x1), Y - 0.5 * (y0 + y1)
        fixed = self.owned_view(self.constrained)
        rows = []
        for comp in (0, 1):
            sel = fixed[..., comp]
            modes = np.zeros((int(sel.sum()), 3))
            modes[:, comp] = 1.0
            modes[:, 2] = (-Y if comp == 0 else X)[sel]
            rows.append(modes)
        modes = np.vstack(rows)
        gram = self.disp.comm_mpi().allreduce(modes.T @ modes)
        eig = np.linalg.eigvalsh(gram)
        if eig[0] <= 1e-10 * max(eig[-1], 1e-300):
            free = {0: "translation in x", 1: "translation in y", 2: "rotation"}[int(np.argmax(
                np.abs(np.linalg.eigh(gram)[1][:, 0])))]
            raise ModelError(self.name, f"the boundary conditions {self.boundary} leave a rigid-body motion free "
                                        f"(mostly {free}): the stiffness would be singular. Add constraints, e.g. "
                                        f"clamp an edge or pin two edges")

    # -- local arrays ----------------------------------------------------------------------------------------------
    def owned_view(self, ghosted: np.ndarray) -> np.ndarray:
        """The owned block of a ghosted array (C order, leading axes (j, i))."""
        (xs, xe), (ys, ye) = self.disp.owned
        oj, oi = self.offset
        return ghosted[oj:oj + ye - ys, oi:oi + xe - xs]

    def corners(self, ghosted: np.ndarray) -> np.ndarray:
        """Element-corner values of a ghosted nodal array: shape ``(nej, nei, 4) + trailing``."""
        oj, oi = self.offset
        return np.stack([ghosted[oj + dj:oj + dj + self.nej, oi + di:oi + di + self.nei] for di, dj in CORNERS],
                        axis=2)

    def add_corners(self, ghosted: np.ndarray, values: np.ndarray) -> None:
        """Add element-corner values ``(nej, nei, 4) + trailing`` into a ghosted nodal array (in place)."""
        oj, oi = self.offset
        for c, (di, dj) in enumerate(CORNERS):
            ghosted[oj + dj:oj + dj + self.nej, oi + di:oi + di + self.nei] += values[:, :, c]

    def element_values(self, grid: Grid, vec: PETSc.Vec) -> np.ndarray:
        """Corner values of a global vector on ``grid`` for the owned elements: ``(nej, nei, 4[, dof])``."""
        local = grid.da.getLocalVec()
        try:
            grid.global_to_local(vec, local)
            return self.corners(grid.ghosted_array(local).copy())
        finally:
            grid.da.restoreLocalVec(local)

    def element_mean(self, vec: PETSc.Vec) -> np.ndarray:
        """Element averages ``(nej, nei)`` of a nodal scalar field (the four corners, equal weights)."""
        return self.element_values(self.scalar, vec).mean(axis=2)

    def add_to_global(self, grid: Grid, ghosted: np.ndarray, vec: PETSc.Vec) -> PETSc.Vec:
        """``vec += `` the ghosted nodal array (contributions to ghost nodes go to their owners). Collective."""
        local = grid.da.getLocalVec()
        try:
            local.getArray()[...] = ghosted.ravel()
            grid.da.localToGlobal(local, vec, addv=ADD)
        finally:
            grid.da.restoreLocalVec(local)
        return vec

    def zeros(self, dof: int) -> np.ndarray:
        """A zero ghosted nodal array with ``dof`` trailing components (no axis when 1)."""
        return np.zeros(self.ghost_shape + ((dof,) if dof > 1 else ()))

    # -- indices ---------------------------------------------------------------------------------------------------
    def element_dofs(self, dof: int, components: Sequence[int] = (0, 1), eliminate: bool = True) -> np.ndarray:
        """Local (ghosted) indices ``(n_local_elements, 8)`` of two components per element node, in element dof
        order; constrained displacement dofs are -1 when ``eliminate`` (ignored by MatSetValuesLocal)."""
        gny, gnx = self.ghost_shape
        node = np.arange(gny * gnx, dtype=PETSc.IntType).reshape(gny, gnx)
        nodes = self.corners(node).reshape(-1, 4)
        idx = np.empty((nodes.shape[0], 4, 2), dtype=PETSc.IntType)
        for k, comp in enumerate(components):
            idx[:, :, k] = nodes * dof + comp
        if eliminate:
            fixed = self.corners(self.constrained).reshape(-1, 4, 2)
            idx[fixed] = -1
        return idx.reshape(-1, 8)

    def owned_node_dofs(self, dof: int, component: int) -> np.ndarray:
        """Local (ghosted) indices of ``component`` at every owned node, C order flattened."""
        gny, gnx = self.ghost_shape
        node = np.arange(gny * gnx, dtype=PETSc.IntType).reshape(gny, gnx)
        return (self.owned_view(node).ravel() * dof + component).astype(PETSc.IntType)

    def owned_constrained_dofs(self, dof: int, offset: int = 0) -> np.ndarray:
        """Local (ghosted) indices of the owned constrained displacement dofs (component + ``offset``)."""
        gny, gnx = self.ghost_shape
        node = np.arange(gny * gnx, dtype=PETSc.IntType).reshape(gny, gnx)
        fixed = self.owned_view(self.constrained)
        out = [self.owned_view(node)[fixed[..., c]] * dof + c + offset for c in (0, 1)]
        return np.concatenate(out).astype(PETSc.IntType)

    def destroy(self) -> None:
        for g in (self.disp, self.scalar, self.state):
            if g is not None:
                g.destroy()
