"""The total load ``f(t, d)`` of the structure model and the layout of its parameter-sensitivity vector.

Equations
---------
::

    f(t, d) = sum_k s_k phi_k(t) f_k  +  f_import(d)          [N]

``f_k`` are the configured load cases (unit scale and history), ``s_k`` their scale parameters ``load_<name>``,
``phi_k`` their time functions, and ``f_import`` the coupled fields (body force, edge tractions, eigenstrain, whose
forces scale with the local modulus ``E_e``).

The parameter vector used for sensitivities is ``p = (d_0 .. d_{N-1}, E0, s_0 .. s_{m-1})``: the nodal damage in the
DMDA's global ordering followed by the scalars, which the last rank owns, so ``p`` and the damage vector share their
parallel layout on every other rank.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from petsc4py import PETSc

from twin.kinds.structure.loads import LoadCase
from twin.kinds.structure.operators import Operators


class Forcing:
    """Load cases with their assembled unit vectors, scales and histories.

    Parameters
    ----------
    ops : Operators
    cases : sequence of LoadCase
    """

    def __init__(self, ops: Operators, cases: Sequence[LoadCase]):
        self.ops = ops
        self.cases = list(cases)
        self.scales = {c.name: 1.0 for c in self.cases}
        self.vectors = {c.name: ops.load_case_vector(c, ops.mesh.disp.create_global()) for c in self.cases}

    def total(self, t: float, damage: PETSc.Vec, imports: dict, out: PETSc.Vec) -> PETSc.Vec:
        """``out = f(t, d)`` on the displacement DMDA. Collective."""
        self.ops.import_forces(imports, damage, out)
        for case in self.cases:
            out.axpy(self.scales[case.name] * case.history(t), self.vectors[case.name])
        return out

    def case_factor(self, name: str, t: float) -> float:
        """``phi_k(t)`` of the load ``name``."""
        return next(c for c in self.cases if c.name == name).history(t)

    def destroy(self) -> None:
        for v in self.vectors.values():
            v.destroy()


class ParameterLayout:
    """Global layout of ``p = (damage field, E0, load scales)`` for TSAdjoint's parameter gradient.

    Parameters
    ----------
    ops : Operators
    scalar_names : sequence of str
        Names of the scalar parameters, in order (``E0``, ``load_<name>`` ...).
    """

    def __init__(self, ops: Operators, scalar_names: Sequence[str]):
        grid = ops.mesh.scalar
        comm = grid.comm_mpi()
        self.scalar_names = list(scalar_names)
        self.n_field = grid.size
        probe = grid.create_global()
        self.field_local = probe.getLocalSize()
        self.field_start = probe.getOwnershipRange()[0]
        probe.destroy()
        self.last = comm.Get_rank() == comm.Get_size() - 1
        self.local = self.field_local + (len(self.scalar_names) if self.last else 0)
        self.size = self.n_field + len(self.scalar_names)
        self.comm = grid.da.getComm()

    def create(self) -> PETSc.Vec:
        v = PETSc.Vec().createMPI((self.local, self.size), comm=self.comm)
        v.set(0.0)
        return v

    def scalar_index(self, name: str) -> int:
        return self.n_field + self.scalar_names.index(name)

    def split(self, p: PETSc.Vec, field_out: PETSc.Vec) -> dict[str, float]:
        """Copy the field part of ``p`` into ``field_out``; return the scalar parts on every rank. Collective."""
        arr = p.getArray(readonly=True)
        field_out.getArray()[...] = arr[:self.field_local]
        tail = np.asarray(arr[self.field_local:]) if self.last else np.zeros(0)
        comm = self.comm.tompi4py()
        tail = comm.bcast(tail, root=comm.Get_size() - 1)
        return {n: float(tail[k]) for k, n in enumerate(self.scalar_names)}
