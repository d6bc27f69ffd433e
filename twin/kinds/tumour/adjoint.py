"""The recorded discrete adjoint of the tumour model (mixed into :class:`~twin.kinds.tumour.model.TumourModel`).

:meth:`TumourAdjoint.record` runs the forward segments between treatment times on pooled PETSc TS objects that keep
their trajectories (in memory; for long windows on big grids bound it with PETSc's checkpointing options, e.g.
``-ts_trajectory_max_cps_ram``); :meth:`TumourAdjoint.adjoint_recorded` runs TSAdjoint backwards segment by
segment with the parameter Jacobian ``dF/dp`` (RHSJacobianP, see ``sensitivity``), and at each radiotherapy fraction
multiplies lambda by the survival fraction and accumulates ``dJ/dalpha``. TSAdjoint sets up its parameter work space
from the parameter Jacobian together with the TS, so there is one TS pool per set of requested gradients, each TS
with its own parameter Jacobian and its own copy of the state Jacobian (an implicit TS turns it into
``shift I - J`` in place). :meth:`TumourAdjoint.adjoint` records from a given start state and runs the same adjoint.

Each segment is solved on its own vector, which the tape keeps: PETSc's memory trajectory does not restore the last
step's state before the adjoint, it takes the TS's current solution. Solved one after another on the caller's state
vector, every segment but the last found a later segment's end state there; the implicit (Crank-Nicolson) adjoint
evaluates its Jacobian at that state, and the gradients were wrong (relative error 3e-2 over a window with two
fractions; explicit RK adjoints do not use the end state, and the file trajectory reads it back). The caller's state
is also left alone by the adjoint, which restores the trajectory into each segment's vector.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.kinds.tumour.sensitivity import ParameterJacobian
from twin.kinds.tumour.treatment import lq_exponent
from twin.models.base import Tape, TSPool, solve_adjoint

#: parameters whose gradient the adjoint provides
GRADIENT_PARAMETERS = ("k", "D_white", "D_grey", "theta", "kappa", "alpha")
#: scalar parameters entering F (columns of RHSJacobianP)
RHS_SCALARS = ("k", "D_white", "D_grey", "theta", "kappa")


class TumourAdjoint:
    """Recording and adjoint methods of the tumour model (uses its TS factory, Jacobian, plan and parameters)."""

    def _init_adjoint(self) -> None:
        self._pool_mats: dict[int, PETSc.Mat] = {}
        self._pools: dict[tuple, TSPool] = {}
        self._pool_jp: dict[int, ParameterJacobian] = {}
        self._last_signature: tuple = (False, ())

    def _destroy_adjoint(self) -> None:
        for pool in self._pools.values():
            pool.destroy()
        self._pools = {}

    # -- adjoint -------------------------------------------------------------------------------------------------------
    def _signature(self, names: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
        """``(k as a field, scalar columns)`` of the parameter Jacobian for the requested gradients."""
        k_is_field = self.parameters["k"].is_field and "k" in names
        return k_is_field, tuple(p for p in RHS_SCALARS if p in names and not (p == "k" and k_is_field))

    def _pool(self, signature: tuple[bool, tuple[str, ...]]) -> TSPool:
        if signature not in self._pools:
            def factory() -> PETSc.TS:
                J = self._J.duplicate(copy=True)
                ts = self._create_ts(J, trajectory=True, signature=signature)
                self._pool_mats[ts.handle] = J
                return ts

            def discard(ts: PETSc.TS) -> None:
                for obj in (self._pool_mats.pop(ts.handle, None), self._pool_jp.pop(ts.handle, None)):
                    if obj is not None:
                        obj.destroy()

            self._pools[signature] = TSPool(factory, discard)
        return self._pools[signature]

    @property
    def _adjoint_ts(self) -> TSPool | None:
        """The pool of the most recently used gradient set (for tests that count TS creations)."""
        return self._pools.get(self._last_signature) if self._pools else None

    def _gradient_names(self, parameters: Sequence[str]) -> list[str]:
        unknown = [p for p in parameters if p not in GRADIENT_PARAMETERS]
        if unknown:
            self._fail(f"no gradient for parameter(s) {unknown}; available: {list(GRADIENT_PARAMETERS)}")
        return list(dict.fromkeys(parameters))

    def record(self, state: PETSc.Vec, t0: float, t1: float, parameters: Sequence[str] = ()) -> Tape:
        """:meth:`advance`, each treatment segment on a pooled TS that saves its trajectory; the tape keeps the TS
        objects, their step counts and the state after the jumps at the start of each segment.

        ``parameters`` names the gradients the adjoint will be asked for (the TS objects are set up with that
        parameter Jacobian); asked for others, :meth:`adjoint_recorded` records the window again.
        """
        self._check_window(t0, t1)
        signature = self._signature(self._gradient_names(parameters))
        self._last_signature = signature
        pool = self._pool(signature)
        # (ta, tb, state after the fractions at ta, TS, steps, the segment's solution vector: its state at tb)
        segments: list[tuple[float, float, PETSc.Vec, PETSc.TS, int, PETSc.Vec]] = []

        def release(tape: Tape) -> None:
            for _ta, _tb, start, ts, _steps, x in tape.data["segments"]:
                start.destroy()
                x.destroy()
                pool.release(ts)

        tape = Tape(float(t0), float(t1), state0=state.copy(), data={"segments": segments, "signature": signature},
                    release=release)
        if t1 == t0:
            return tape
        points = self.plan.breakpoints(t0, t1)
        try:
            for ta, tb in zip(points[:-1], points[1:]):
                self._apply_fractions(state, ta)
                ts = pool.acquire(self._max_steps(ta, tb))
                x = state.copy()
                segments.append((ta, tb, state.copy(), ts, 0, x))
                self._integrate(ts, x, ta, tb)
                x.copy(state)
                segments[-1] = segments[-1][:4] + (ts.getStepNumber(), x)
        except BaseException:
            tape.free()
            raise
        return tape

    def adjoint_recorded(self, tape: Tape, lam: PETSc.Vec, parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint of the recorded window (see :meth:`adjoint`), segment by segment backwards."""
        try:
            names = self._gradient_names(parameters)
            if not tape.alive:
                self._fail(f"the tape of [{tape.t0:g}, {tape.t1:g}] was already used or freed")
            signature = self._signature(names)
            if signature != tape.data["signature"]:
                # recorded for other gradients: the TS objects' parameter Jacobian does not fit; record again
                x = tape.state0.copy()
                try:
                    again = self._record(x, tape.t0, tape.t1, names)
                finally:
                    x.destroy()
                return self._adjoint_tape(again, lam, names)
            k_is_field, scalars = signature
            grads: dict[str, Any] = {p: 0.0 for p in names}
            segments = tape.data["segments"]
            if not segments:
                if k_is_field:
                    grads["k"] = self.grid.create_global()
                    grads["k"].set(0.0)
                return grads
            pool = self._pool(signature)
            acc = self._pool_jp.get(segments[0][3].handle)
            if acc is not None:
                acc.total.set(0.0)
            alpha_grad = 0.0
            p = self.parameters
            for ta, tb, start, ts, steps, _x in reversed(segments):
                jp = self._pool_jp.get(ts.handle)
                self._adjoint_segment(ts, steps, jp, lam, ta)
                pool.mark_traversed(ts)
                if jp is not None:
                    acc.total.axpy(1.0, jp.mu)
                fracs = self.plan.fractions_in(ta, np.nextafter(ta, np.inf))
                if fracs:
                    # N+ = S N-:  lam- = S lam+,  dJ/dalpha += lam+ . (dS/dalpha) N- = -lam+ . lq N+
                    lq = sum(lq_exponent(f.dose, p["alpha_beta"].value) for f in fracs)
                    la = lam.getArray()
                    alpha_grad -= float(np.sum(la * lq * start.getArray(readonly=True)))
                    la *= np.exp(-p["alpha"].value * lq)
            if "alpha" in names:
                grads["alpha"] = float(self._mpi.allreduce(alpha_grad))
            if acc is not None:
                grads.update(acc.result())
        finally:
            tape.free()
        return grads

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint of :meth:`advance` (see :meth:`twin.models.base.Model.adjoint`), recomputing the forward
        from ``state0`` (:meth:`record` keeps it instead).

        ``parameters`` may name ``k`` (a field gradient when k is a field), ``D_white``, ``D_grey``, ``theta``,
        ``kappa`` and ``alpha``; the gradient with respect to ``alpha`` holds ``alpha/beta`` fixed.
        """
        self._check_window(t0, t1)
        self._gradient_names(parameters)
        return self.adjoint_by_recording(state0, t0, t1, lam, parameters)

    def _adjoint_segment(self, ts: PETSc.TS, steps: int, jp: ParameterJacobian | None, lam: PETSc.Vec,
                         ta: float) -> None:
        """TSAdjoint back over one recorded segment starting at ``ta`` (``lam`` in place; ``jp.mu`` gets dJ/dp)."""
        if jp is not None:
            jp.mu.set(0.0)
            ts.setCostGradients(lam, jp.mu)
        else:
            ts.setCostGradients(lam)
        ts.adjointSetSteps(steps)
        self._segment_start = ta
        solve_adjoint(ts, self.name)

