"""TAO through twin.assimilation.tao.minimise: trial points where J or its gradient is not finite, or whose state the
model refuses, are rejected like trial points where the model diverges, and the minimisation still reaches the
minimiser of a real 4D-Var cost."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

from twin.assimilation.covariance import DiagonalCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.tao import TaoSettings, minimise
from twin.core.errors import AssimilationError, ModelError
from twin.observations.base import LinearObservationOperator


def _functional():
    from twin.kinds.linear.model import LinearAdvectionDiffusion

    m = LinearAdvectionDiffusion("tao_nf", MPI.COMM_SELF, n=24, dt=0.01, velocity=0.5, diffusivity=0.01)
    H = LinearObservationOperator(m.grid, sp.identity(24, format="csr"), 0.05)
    x = m.initial_state()
    y = x.copy()
    obs = []
    for ta, tb in ((0.0, 0.05), (0.05, 0.1)):
        m.advance(y, ta, tb)
        obs.append(Observation(tb, H, H.apply(y) + 0.3))
    sd = x.duplicate()
    sd.set(0.5)
    fn = FourDVar(m, (0.0, 0.1), obs, x, DiagonalCovariance(sd), [], name="tao_nf")
    y.destroy()
    return m, fn


class NonFiniteFarOut:
    """The real functional, except that J (or its gradient) is NaN/inf beyond a radius in control space: what a model
    whose solve "succeeds" with non-finite numbers gives at an overshooting trial point."""

    def __init__(self, fn, radius, where):
        self.fn, self.radius, self.where, self.rejected = fn, radius, where, 0

    def __getattr__(self, name):
        return getattr(self.fn, name)

    def gradient(self, c, g):
        f = self.fn.gradient(c, g)
        if c.norm() > self.radius:
            self.rejected += 1
            if self.where == "refused":  # what the shallow-water model raises before a forecast from such a state
                raise ModelError("tao_nf", "time step dt = 300 s exceeds the stable limit 62.9 s of TS rk 4")
            if self.where == "value":
                return np.nan
            g.set(np.inf)
        return f


@pytest.mark.parametrize("where", ["value", "gradient", "refused"])
def test_non_finite_trial_points_are_rejected_and_the_minimum_is_reached(where):
    model, fn = _functional()
    exact = minimise(fn, settings=TaoSettings(gatol=1e-8))
    # non-finite just beyond the minimiser: the first full quasi-Newton steps overshoot into it
    wrapped = NonFiniteFarOut(fn, 1.05 * exact.control.norm(), where)
    fn._drop_cache()
    res = minimise(wrapped, settings=TaoSettings(gatol=1e-8, max_iterations=500))
    assert wrapped.rejected > 0
    assert res.converged and np.isfinite(res.value)
    np.testing.assert_allclose(res.value, exact.value, rtol=1e-8)
    assert np.abs(res.control.getArray() - exact.control.getArray()).max() < 1e-5 * exact.control.norm()
    for v in (exact.control, res.control):
        v.destroy()
    fn.destroy()
    model.destroy()


def test_a_start_point_where_the_model_fails_is_a_clear_error():
    model, fn = _functional()
    wrapped = NonFiniteFarOut(fn, -1.0, "value")  # every point is "non-finite"
    with pytest.raises(AssimilationError, match="tao_nf: .*(starting point|Inf or NaN)"):
        minimise(wrapped, settings=TaoSettings())
    fn.destroy()
    model.destroy()


def test_a_trial_point_whose_parameter_transform_overflows_is_rejected():
    """A log-transformed parameter control far out (exp overflows to inf) is a failed trial point (SolverError,
    which the minimiser rejects), not an error that ends the experiment (it ended 5 of 20 oncology 4D-Var
    replicates with "parameter k must be finite")."""
    from twin.assimilation.var_control import ParameterControl
    from twin.core.errors import SolverError
    from twin.kinds.linear.model import LinearAdvectionDiffusion

    m = LinearAdvectionDiffusion("tao_ovf", MPI.COMM_SELF, n=16, dt=0.01, velocity=0.5, diffusivity=0.01)
    H = LinearObservationOperator(m.grid, sp.identity(16, format="csr"), 0.05)
    x = m.initial_state()
    sd = x.duplicate()
    sd.set(0.5)
    fn = FourDVar(m, (0.0, 0.02), [Observation(0.02, H, H.apply(x))], x, DiagonalCovariance(sd),
                  [ParameterControl("diffusivity", std=0.5)], name="tao_ovf")
    c = fn.create_control()
    c.getArray()[-1] = 1e4  # log(diffusivity) = background + 0.5 * 1e4: exp overflows
    g = fn.create_control()
    with pytest.raises(SolverError, match="non-finite parameter value"):
        fn.gradient(c, g)
    for v in (x, sd, c, g):
        v.destroy()
    fn.destroy()
    m.destroy()
