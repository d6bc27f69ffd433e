"""Parameter Jacobian ``dF/dp`` of the tumour model for TSAdjoint (``TS.setRHSJacobianP``).

Columns: when the field k is requested, a diagonal block ``dF_i/dk_j = delta_ij m_i N_i (1 - N_i/theta)`` whose columns
use the state's global numbering (so the gradient comes out as a vector laid out like the state); then one dense column
per scalar parameter, owned by the last rank:

    k (scalar)   m N (1 - N/theta)          theta    m k N^2 / theta^2
    D_white      (dA/dD_white) N            kappa    -m C(t) N
    D_grey       (dA/dD_grey) N

TSAdjoint accumulates ``mu += int lambda^T dF/dp dt`` (discretely, consistent with the time stepper) into a vector laid
out like the matrix's columns; :meth:`ParameterJacobian.result` splits it into named gradients, the scalars broadcast
from the last rank so every rank returns the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from petsc4py import PETSc


class ParameterJacobian:
    """``dF/dp`` for TSAdjoint: a diagonal block for the field k (columns = the state's global numbering) followed by
    one dense column per scalar parameter (owned by the last rank)."""

    def __init__(self, model, k_field: bool, scalars: list[str]):
        self.model = model
        self.k_field = k_field
        self.scalars = scalars
        comm = model.grid.da.getComm()
        self.comm = comm
        nloc, n = model._mask.size, model.grid.size
        rstart = model._initial.getOwnershipRange()[0]
        ns = len(scalars)
        last = comm.getRank() == comm.getSize() - 1
        n_field = n if k_field else 0
        ncols_local = (nloc if k_field else 0) + (ns if last else 0)
        per_row = (1 if k_field else 0) + ns
        cols = np.empty((nloc, per_row), dtype=PETSc.IntType)
        if k_field:
            cols[:, 0] = rstart + np.arange(nloc)
        cols[:, (1 if k_field else 0):] = n_field + np.arange(ns)
        self.indptr = (np.arange(nloc + 1) * per_row).astype(PETSc.IntType)
        self.indices = cols.ravel()
        self.matrix = PETSc.Mat().createAIJ(size=((nloc, n), (ncols_local, n_field + ns)),
                                            csr=(self.indptr, self.indices, np.zeros(self.indices.size)), comm=comm)
        self.mu = self.matrix.createVecRight()
        self.total = self.mu.duplicate()
        self.total.set(0.0)
        self._work = model.grid.create_global()

    def evaluate(self, ts, t, u, Jp) -> None:
        m = self.model
        ua = u.getArray(readonly=True)
        theta = m.parameters["theta"].value
        cols = []
        logistic = m._mask * ua * (1.0 - ua / theta)
        if self.k_field:
            cols.append(logistic)
        for name in self.scalars:
            if name == "k":
                cols.append(logistic)
            elif name in ("D_white", "D_grey"):
                mat = m.op.dA_white if name == "D_white" else m.op.dA_grey
                mat.mult(u, self._work)
                cols.append(self._work.getArray(readonly=True).copy())
            elif name == "theta":
                cols.append(m._kk * ua * ua / (theta * theta))
            elif name == "kappa":
                cols.append(-m.concentration(t) * m._mask * ua)
        Jp.setValuesCSR(self.indptr, self.indices, np.stack(cols, axis=1).ravel(),
                        addv=PETSc.InsertMode.INSERT_VALUES)
        Jp.assemble()

    def accumulate(self) -> None:
        self.total.axpy(1.0, self.mu)

    def result(self) -> dict[str, Any]:
        m = self.model
        arr = self.total.getArray(readonly=True)
        out: dict[str, Any] = {}
        offset = 0
        if self.k_field:
            g = m.grid.create_global()
            nloc = m._mask.size
            g.getArray()[...] = arr[:nloc]
            out["k"] = g
            offset = nloc
        size = self.comm.getSize()
        mine = arr[offset:].copy() if self.comm.getRank() == size - 1 else None
        values = m._mpi.bcast(mine, root=size - 1)
        for name, v in zip(self.scalars, values):
            out[name] = float(v)
        return out

    def destroy(self) -> None:
        for obj in (self.matrix, self.mu, self.total, self._work):
            obj.destroy()
