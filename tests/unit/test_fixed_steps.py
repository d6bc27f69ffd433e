"""The fixed-step runner of the model contract (``Model.fixed_steps``, ``run_fixed``, ``run_ts``) that the TS-based
models share: how a window is cut into steps, and how a failed solve is reported."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.models.base import Model


class Decay(Model):
    """``du/dt = -u`` on one unknown, forward Euler: just enough model to run a TS."""

    def __init__(self, dt: float):
        super().__init__("decay", MPI.COMM_SELF)
        self.dt = dt

    def initial_state(self):
        return PETSc.Vec().createSeq(1, comm=PETSc.COMM_SELF)

    def advance(self, state, t0, t1):
        raise NotImplementedError

    def make_ts(self) -> PETSc.TS:
        ts = PETSc.TS().create(comm=PETSc.COMM_SELF)
        ts.setType(PETSc.TS.Type.EULER)
        ts.setRHSFunction(lambda ts, t, u, f: (u.copy(f), f.scale(-1.0)))
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        return ts


@pytest.mark.parametrize("t0, t1, n", [(0.0, 1.0, 10), (0.0, 0.1 + 0.2, 3), (0.1, 0.35, 3), (2.0, 2.0, 1),
                                       (0.0, 1e-3, 1), (0.0, 1.0 + 1e-14, 10), (0.0, 1.0 + 1e-9, 11)])
def test_a_window_takes_the_fewest_equal_steps_not_longer_than_dt(t0, t1, n):
    steps, h = Decay(0.1).fixed_steps(t0, t1)
    assert steps == n and h == (t1 - t0) / n


@pytest.mark.parametrize("t0, t1", [(1.0, 0.5), (0.0, np.nan), (np.inf, 1.0)])
def test_backward_or_non_finite_windows_are_refused(t0, t1):
    with pytest.raises(ModelError, match="cannot advance from .*need finite t1 >= t0"):
        Decay(0.1).fixed_steps(t0, t1)


def test_run_fixed_takes_the_steps_and_reports_a_failed_solve_with_its_hint():
    model = Decay(0.1)
    ts = model.make_ts()
    u = model.initial_state()
    try:
        u.set(1.0)
        model.run_fixed(ts, u, 0.0, 0.5)
        assert ts.getStepNumber() == 5 and ts.getTime() == pytest.approx(0.5)
        assert u.getArray()[0] == pytest.approx(0.9 ** 5, rel=1e-14)
        # a post-step check that rejects the step, as the shallow-water model's does; its cause becomes the hint
        cause = []
        ts.setPostStep(lambda ts: (cause.append("negative depth"),
                                   ts.setConvergedReason(PETSc.TS.ConvergedReason.DIVERGED_STEP_REJECTED)))
        with pytest.raises(SolverError, match=r"model 'decay': solver failed at t=0\.6 s: DIVERGED_STEP_REJECTED "
                                              r"\(negative depth\)"):
            model.run_fixed(ts, u, 0.5, 1.0, hint=lambda: cause[-1])
    finally:
        ts.destroy()
        u.destroy()
