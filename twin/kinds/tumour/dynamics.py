"""The time discretisation of the tumour model (mixed into :class:`~twin.kinds.tumour.model.TumourModel`): the
right-hand side ``F(t, N) = A N + r(t, N)``, its Jacobians, the PETSc TS that integrates a segment between treatment
times and what to say when a step fails.

Solvers: each Newton iteration solves with ``shift I - A - diag(dr/dN)`` (``shift = 2/dt`` for Crank-Nicolson,
``1/dt`` for backward Euler). ``-A`` is symmetric positive semi-definite and ``dr/dN <= k``, so the matrix is
symmetric positive definite while ``dt k < 2`` (Crank-Nicolson; ``< 1`` for backward Euler), which is also where the
step means anything: beyond it the amplification of the growth term, ``(1 + k dt/2) / (1 - k dt/2)``, is negative.
Hence the defaults: CG, preconditioned with ILU(0) on one rank and point Jacobi on more (below), the
preconditioner rebuilt once per step (``snes_lag_preconditioner 2``), the Jacobian assembled as ``shift I - dF/dN``
(:meth:`TumourDynamics._ijacobian`). Each is a PETSc option under ``-<name>_`` (YAML ``solver:``, command line). Where
the time went at 2-D 512^2 (``benchmarks/bench_tumour.py``: dt 1 day, snes_rtol 1e-8, ksp_rtol 1e-10, 2 Newton
iterations per step; ``-log_view`` and py-spy, quiet machine): with GMRES, the preconditioner rebuilt at every Newton
iteration and the RHS Jacobian, a step took 148 ms on 1 rank: Krylov iterations 59 % (ILU triangular solves 32 %,
MatMult 19 %, GMRES orthogonalisation 16 %), the Jacobian 12 % (9 ms per Newton iteration, 3.7 ms of it PETSc 3.18's
MatShift, which adds the TS's shift row by row), ILU factorisations 7 %, RHS evaluations with the line search 12 %
(the Python callbacks: 14 % by py-spy, nearly all of it in the NumPy and PETSc kernels they call; the treatment terms
are absent here, with chemotherapy they add one vector pass per evaluation). On 2 ranks (98 ms, speed-up 1.5)
block-Jacobi ILU needs 26 Krylov iterations per step instead of 20, and GMRES's orthogonalisation grows with them
(19 %); the ghost exchange took 1.4 %. CG has no orthogonalisation, the IJacobian costs 3.4 ms instead of 9, one
factorisation per step instead of two: 125 ms on 1 rank (ILU solves 40 %, MatMult 23 %, RHS 14 %, Jacobian 6 %,
factorisation 4.5 %) and 69 ms on 2. Side by side with the code before (best of 8 single steps, 3 alternating rounds,
load 1.0 with these runs): 1 rank 148 -> 122 ms, 2 ranks 97 -> 67 ms, speed-up 1.53 -> 1.82 (bench_tumour, RESULTS.md
2026-12-05 23:52: 1.83 at load 0.5-0.75), above the STREAM triad's 2-rank/1-rank ratio (14.8 -> 26.2 GB/s, 1.77) as a
512^2 step's vectors stay in cache (the triad on vectors of that size: 2.14) and the ILU solves scale with the cores.
What was left was the block-Jacobi iteration growth: Jacobi preconditioning needs the same 58 iterations per step on 1
and 2 ranks and scales by 1.9, but is slower on 1 rank (145-150 ms against 122-129).

The machine decides how much that growth costs. On an AMD EPYC VM (RESULTS.md 2026-12-06 15:49) the speed-up with
block-Jacobi was 1.55 (152 -> 98 ms, -log_view: MatMult and MatSolve per call 2.0x faster on 2 ranks): its cache,
larger than it reports, holds a 512^2 step's data on one rank already, so nothing pays back block-Jacobi's 30 % more
Krylov iterations (20 -> 26 per step) the way the Xeon's superlinear cache gain did; side by side there, Jacobi took
176 -> 81 ms (speed-up 2.17), Eisenstat-Walker tolerances (``snes_ksp_ew``: 4 Newton iterations per step, 8 and 14
Krylov) 110 -> 74 ms, both 120 -> 64 ms. At 3-D 128^3 Jacobi was the faster on both rank counts (836 against 914 ms
on 1 rank, 447 against 563 on 2; 22 Krylov iterations per step against 10 and 12). So on more than one rank the
default is Jacobi: its iterations do not grow with the number of ranks, as block-Jacobi's do with the number of
blocks (on a cluster's 16 or 64 ranks more than on 2), and it was the faster on 2 ranks on the EPYC (73-85 against
94-97 ms at 2-D 512^2) while 8 % slower on the Xeon (about 76 against 70 ms). One rank keeps ILU(0), the faster
there at 2-D on both machines; a user's ``pc_type`` or block-Jacobi ``sub_*`` options are kept as given
(:func:`_preconditioner_chosen`). The Eisenstat-Walker tolerances are not a default: they move the 4D-Var results by
1e-7 relative (the linear solves stop early; the Newton iterations end at the nonlinear tolerance).
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.errors import SolverError
from twin.core.petsc import reason_name, set_default_options, set_from_options, trajectory_in_memory
from twin.kinds.tumour.sensitivity import ParameterJacobian

#: default PETSc options under the component's prefix (YAML ``solver:`` and the command line override them): the
#: preconditioner of a step's first Newton iteration serves its second, whose Jacobian differs only in the Newton
#: update of the reaction diagonal (see "Solvers" above)
DEFAULT_SOLVER = {"snes_lag_preconditioner": 2}
#: the default preconditioner on more than one rank, where PETSc's own (block-Jacobi ILU(0)) needs more Krylov
#: iterations the more blocks there are; point Jacobi needs the same on any number of ranks (see "Solvers" above).
#: Not imposed where the user chose a preconditioner or configured block-Jacobi's blocks (``sub_*`` options).
PARALLEL_PC = "jacobi"
#: TS types that treat the whole right-hand side implicitly and take the Jacobian ``shift I - dF/dN`` from
#: :meth:`TumourDynamics._ijacobian`; the others (explicit and IMEX methods) get the RHS Jacobian ``dF/dN``
IJACOBIAN_TS_TYPES = frozenset({"theta", "cn", "beuler", "bdf"})


class TumourDynamics:
    """Right-hand side, Jacobians and TS of the tumour model (uses its operator, masks, plan and parameters)."""

    # -- right-hand side and Jacobians --------------------------------------------------------------------------------
    def concentration(self, t: float) -> float:
        """Drug concentration inside the current TS segment (left limit at its end)."""
        if not self.plan.has_chemo:
            return 0.0
        return self.plan.concentration(t, self.parameters["half_life"].value, given_by=self._segment_start)

    def _rhs(self, ts, t, u, f) -> None:
        self.op.A.mult(u, f)
        ua = u.getArray(readonly=True)
        fa = f.getArray()
        c = self.concentration(t)
        growth = self._kk - c * self._km if c else self._kk
        # F += u (k - k u / theta - kappa C), in place in a preallocated buffer: a few passes over memory, no new pages
        w = self._work
        np.multiply(self._kt, ua, out=w)
        np.subtract(growth, w, out=w)
        w *= ua
        fa += w
        if self.source is not None:
            fa += self.source(t)

    def _reaction_derivative(self, t: float, u: PETSc.Vec, shift: float, out: PETSc.Vec) -> None:
        """``out = shift - dr/dN = shift - m (k (1 - 2N/theta) - kappa C(t))`` (1/day), the diagonal that the Jacobians
        add to ``-A`` (``shift = 0``: the RHS Jacobian's ``dr/dN`` with the sign flipped)."""
        ua = u.getArray(readonly=True)
        d = out.getArray()
        np.multiply(self._kt, ua, out=d)
        d *= 2.0
        d -= self._kk
        c = self.concentration(t)
        if c:
            d += c * self._km
        if shift:
            d += shift

    def _jacobian(self, ts, t, u, J, P) -> None:
        """RHS Jacobian ``dF/dN = A + diag(dr/dN)`` (for TS types that are not :data:`IJACOBIAN_TS_TYPES`)."""
        self.op.A.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        self._reaction_derivative(t, u, 0.0, self._tmp)
        self._tmp.scale(-1.0)
        J.setDiagonal(self._tmp, addv=PETSc.InsertMode.ADD_VALUES)
        if P is not None and P.handle != J.handle:
            J.copy(P, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)

    def _ijacobian(self, ts, t, u, udot, shift, J, P) -> None:
        """Jacobian ``shift I - dF/dN = shift I - A - diag(dr/dN)`` of the implicit form ``dN/dt - F(t, N) = 0``.

        Built here, for the theta/BDF family, instead of letting the TS turn the RHS Jacobian into it: PETSc 3.18
        does that with ``MatShift``, which inserts the diagonal row by row (``MatSetValues`` per row, 3.7 ms of a
        9 ms Jacobian at 2-D 512^2 on 1 rank); here it is one copy, one scale and one vectorised diagonal update
        (3.4 ms per Jacobian in all).
        """
        self.op.A.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        J.scale(-1.0)
        self._reaction_derivative(t, u, shift, self._tmp)
        J.setDiagonal(self._tmp, addv=PETSc.InsertMode.ADD_VALUES)
        if P is not None and P.handle != J.handle:
            J.copy(P, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)

    # -- time stepping -------------------------------------------------------------------------------------------------
    def _create_ts(self, jacobian: PETSc.Mat, trajectory: bool, signature: tuple | None = None) -> PETSc.TS:
        ts = PETSc.TS().create(comm=self.grid.da.getComm())
        ts.setOptionsPrefix(self.options_prefix)
        ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        ts.setType(PETSc.TS.Type.CN)
        ts.setRHSFunction(self._rhs, self._f)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        ts.setErrorIfStepFails(False)
        snes = ts.getSNES()
        snes.setTolerances(rtol=1e-10, max_it=50)
        ksp = snes.getKSP()
        # shift I - dF/dN is symmetric positive definite: CG with PETSc's default preconditioner
        ksp.setType(PETSc.KSP.Type.CG)
        ksp.setTolerances(rtol=1e-12)
        if signature is not None and (signature[0] or signature[1]):
            # TSAdjoint sets up its parameter work space from this Jacobian with the TS: it must be given first
            jp = ParameterJacobian(self, signature[0], list(signature[1]))
            self._pool_jp[ts.handle] = jp
            ts.setRHSJacobianP(jp.evaluate, jp.matrix)
        # petsc4py 3.18 has no setter for the preconditioner lag: the model's defaults are options (DEFAULT_SOLVER)
        set_default_options(self.options_prefix, DEFAULT_SOLVER)
        if ts.getComm().getSize() > 1 and not _preconditioner_chosen(self.options_prefix):
            ksp.getPC().setType(PARALLEL_PC)
        if trajectory:
            # in memory: the default "basic" trajectory writes TS-data-* files into the working directory
            with trajectory_in_memory():
                ts.setSaveTrajectory()
                set_from_options(ts)
        else:
            set_from_options(ts)
        # the Jacobian for the TS type the options chose (the IJacobian form only where the whole RHS is implicit)
        if ts.getType() in IJACOBIAN_TS_TYPES:
            ts.setIJacobian(self._ijacobian, jacobian, jacobian)
        else:
            ts.setRHSJacobian(self._jacobian, jacobian, jacobian)
        return ts

    def _max_steps(self, ta: float, tb: float) -> int:
        """The TS's step limit over a segment: room for rejected and retried steps (a failed nonlinear solve is
        retried with a shorter step), beyond the :meth:`fixed_steps` it starts with."""
        return 100 * self.fixed_steps(ta, tb)[0] + 10

    def _integrate(self, ts: PETSc.TS, x: PETSc.Vec, ta: float, tb: float) -> None:
        self._segment_start = ta
        self.run_ts(ts, x, ta, tb, self._max_steps(ta, tb), self.fixed_steps(ta, tb)[1],
                    lambda: self._failure_hint(ts))
        norm = x.norm(PETSc.NormType.NORM_INFINITY)
        if not np.isfinite(norm):
            raise SolverError(self.name, ts.getTime(), "state is not finite", "reduce dt", units=self.time_units)

    def _failure_hint(self, ts: PETSc.TS) -> str:
        """What to change after a failed solve.

        CG breaks down on an indefinite Jacobian ``shift I - dF/dN``, which needs ``dt k > 2`` somewhere
        (Crank-Nicolson; ``dt k > 1`` for backward Euler): there the step itself is meaningless, as the
        amplification of the growth term, ``(1 + k dt/2) / (1 - k dt/2)`` for Crank-Nicolson, is negative.
        """
        ksp = ts.getSNES().getKSP()
        indefinite = (PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_MAT,
                      PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_PC)
        if ksp.getConvergedReason() in indefinite:
            low = ts.getSolution().min()[1]
            if low < 0:  # growth k (1 - 2N/theta) exceeds 2/dt where the density is negative: no tumour state
                return (f"the density it was given is negative somewhere (down to {low:.3g} {self.state_units[0]}): "
                        "no tumour's state; a campaign's initial states are the configured one plus "
                        "assimilation.background_std (by variable) of noise: make it smaller than the densities")
            return (f"the linear solver ({ksp.getType()}) found the Jacobian indefinite: the step dt = {self.dt:g} "
                    "day is too long for the proliferation rate k (dt k must stay below 2 for Crank-Nicolson, 1 for "
                    "backward Euler); reduce dt")
        return "reduce dt or loosen the nonlinear solver tolerances"

    def ts_reason(self, ts: PETSc.TS) -> str:
        """The TS's and the nonlinear solver's converged reasons."""
        ts_reason = reason_name(PETSc.TS.ConvergedReason, ts.getConvergedReason())
        snes_reason = reason_name(PETSc.SNES.ConvergedReason, ts.getSNES().getConvergedReason())
        return f"TS {ts_reason}, SNES {snes_reason}"


def _preconditioner_chosen(prefix: str) -> bool:
    """Whether the options database (YAML ``solver:``, command line, PETSC_OPTIONS, options files) names a
    preconditioner under ``prefix``, or options of block-Jacobi's blocks (``sub_pc_type``, ``sub_ksp_type``...)."""
    return any(name == "pc_type" or name.startswith("sub_")
               for name in (key[len(prefix):] for key in PETSc.Options().getAll() if key.startswith(prefix)))
