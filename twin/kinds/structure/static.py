"""Static equilibrium ``K(d) u = f`` with a PETSc KSP, and its adjoint ``K(d)^T lambda = dJ/du``.

Default solver: conjugate gradients with smoothed-aggregation algebraic multigrid (GAMG) given the rigid-body modes
of 2-D elasticity (two translations and the in-plane rotation, from the DMDA node coordinates) as near-null space, so
the iteration count stays nearly flat under mesh refinement. Everything is overridable with PETSc options under the
component prefix, e.g. ``-structure_ksp_type minres -structure_pc_type hypre``.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.errors import SolverError
from twin.core.log import get_logger
from twin.core.petsc import reason_name, set_from_options
from twin.kinds.structure.mesh import ElementMesh

log = get_logger(__name__)


class StaticSolver:
    """A KSP on the stiffness matrix, with the rigid-body near-null space attached.

    Parameters
    ----------
    mesh : ElementMesh
    K : PETSc.Mat
        The (assembled) stiffness matrix; re-assembling it in place is picked up by the next solve.
    prefix : str
        Options prefix (``<component>_``).
    rtol : float
        Default relative tolerance (adjoint-based gradients need tight solves).
    """

    def __init__(self, mesh: ElementMesh, K: PETSc.Mat, prefix: str, rtol: float = 1e-10):
        self.mesh = mesh
        self.K = K
        comm = mesh.disp.da.getComm()
        coords = mesh.disp.from_function(lambda X, Y: np.stack([X, Y], axis=-1))
        self.nullspace = PETSc.NullSpace().createRigidBody(coords)
        coords.destroy()
        K.setNearNullSpace(self.nullspace)
        K.setOption(PETSc.Mat.Option.SPD, True)
        ksp = PETSc.KSP().create(comm=comm)
        ksp.setOptionsPrefix(prefix)
        ksp.setOperators(K)
        ksp.setType(PETSc.KSP.Type.CG)
        ksp.getPC().setType(PETSc.PC.Type.GAMG)
        ksp.setTolerances(rtol=rtol, atol=1e-50, max_it=2000)
        set_from_options(ksp)
        self.ksp = ksp
        self.name = mesh.name

    def solve(self, f: PETSc.Vec, u: PETSc.Vec, t: float = 0.0, transpose: bool = False) -> int:
        """Solve ``K u = f`` (or the transpose), using ``u`` as initial guess when nonzero. Returns iterations.

        Raises
        ------
        SolverError
            Names the component, time and KSP converged reason when the solve fails.
        """
        guess = u.norm()
        self.ksp.setInitialGuessNonzero(guess > 0)
        (self.ksp.solveTranspose if transpose else self.ksp.solve)(f, u)
        reason = self.ksp.getConvergedReason()
        its = self.ksp.getIterationNumber()
        if reason < 0:
            if its == 0 and guess > 0 and reason == PETSc.KSP.ConvergedReason.DIVERGED_DTOL:
                advice = (f"the displacement it started from (norm {guess:.3g} m) is far from any solution: it was "
                          "given a state it does not carry forward")
            else:
                advice = f"tune with -{self.ksp.getOptionsPrefix()}ksp_* / pc_* options"
            raise SolverError(self.name, t, reason_name(PETSc.KSP.ConvergedReason, reason),
                              f"{'adjoint ' if transpose else ''}static KSP after {its} iterations; {advice}",
                              units="s")
        log.debug("%s: static %s solve, %d iterations", self.name, "adjoint" if transpose else "forward", its)
        return its

    def destroy(self) -> None:
        self.ksp.destroy()
        self.nullspace.destroy()
