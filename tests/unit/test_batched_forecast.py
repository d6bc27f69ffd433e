"""The batched ensemble forecast of the model contract (:meth:`twin.models.base.Model.advance_ensemble`): Lorenz-96's
gives its PETSc TS's numbers bit for bit (per-member forcing, windows anywhere on the time axis, a member that blows
up), and a model without one says so (``None``). Two ranks: tests/mpi/test_batched_forecast_mpi.py; campaigns:
tests/integration/test_batched_forecast.py."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import ModelError, SolverError
from twin.kinds.lorenz96.model import Lorenz96, rk4_ensemble

DT = 0.05


@pytest.fixture
def model():
    m = Lorenz96("l96batch", MPI.COMM_SELF, n=40, dt=DT)
    yield m
    m.destroy()


def _attractor(members: int, seed: int = 0) -> np.ndarray:
    """``members`` states on the attractor, one per row."""
    rng = np.random.default_rng(seed)
    return rk4_ensemble(8.0 + rng.standard_normal((40, members)), 8.0, DT, 0.0, 20.0).T.copy()


def _ts(model: Lorenz96, x: np.ndarray, F: float, t0: float, t1: float) -> np.ndarray:
    """One member through the model's PETSc TS (:meth:`Lorenz96.advance`)."""
    model.set_parameter("F", F)
    v = model.grid.set_global(x, model.create_state())
    try:
        model.advance(v, t0, t1)
        return model.grid.allgather(v).ravel()
    finally:
        v.destroy()


@pytest.mark.parametrize("every", [1, 2, 8])
def test_batched_forecast_is_the_ts_bitwise(model, every):
    """Windows where a campaign's schedule puts them (``t0 = k * every * dt``, whose round-off made the TS cut its
    last step to ``t1`` before it took exactly ``dt``), one forcing per member (an estimated ``F``)."""
    E = _attractor(6)
    params = [{"F": 8.0 + 0.25 * j} for j in range(6)]
    for k in (0, 1, 3, 7, 13, 101, 997):
        t0, t1 = k * every * DT, (k + 1) * every * DT
        batch = model.advance_ensemble(E, params, t0, t1)
        assert batch.shape == E.shape
        for j in range(6):
            ts = _ts(model, E[j], params[j]["F"], t0, t1)
            assert ts.tobytes() == batch[j].tobytes(), (k, j, np.max(np.abs(ts - batch[j])))
        E = batch
    assert np.all(E != _attractor(6))  # the states moved (the comparison was not of inputs)


def test_members_without_their_own_forcing_take_the_models(model):
    E = _attractor(3, seed=1)
    model.set_parameter("F", 7.5)
    batch = model.advance_ensemble(E, [{}, {}, {}], 0.1, 0.3)
    for j in range(3):
        assert _ts(model, E[j], 7.5, 0.1, 0.3).tobytes() == batch[j].tobytes()
    assert model.forcing == 7.5


def test_a_member_that_blows_up_is_non_finite_alone(model):
    """F = 244 (the divergence of tests/integration/test_campaign_failures.py) over 8 steps: that row is not finite,
    the others are the TS's bitwise, and the TS reports the member's failure (what a campaign then runs)."""
    E = np.full((3, 40), 8.0) + 0.01 * np.arange(40)
    params = [{"F": 8.9}, {"F": 244.1}, {"F": 6.2}]
    batch = model.advance_ensemble(E, params, 0.0, 8 * DT)
    assert not np.all(np.isfinite(batch[1]))
    for j in (0, 2):
        assert _ts(model, E[j], params[j]["F"], 0.0, 8 * DT).tobytes() == batch[j].tobytes()
    with pytest.raises(SolverError, match="non-finite"):
        _ts(model, E[1], 244.1, 0.0, 8 * DT)


def test_invalid_windows_and_shapes_raise_model_error(model):
    E = _attractor(2)
    with pytest.raises(ModelError, match="whole number of"):
        model.advance_ensemble(E, [{}, {}], 0.0, 0.07)
    with pytest.raises(ModelError, match="t1 > t0"):
        model.advance_ensemble(E, [{}, {}], 0.1, 0.1)
    with pytest.raises(ModelError, match="shape"):
        model.advance_ensemble(E[:, :20], [{}, {}], 0.0, 0.1)


def test_a_model_without_a_batched_forecast_returns_none():
    from twin.kinds.linear.model import LinearAdvectionDiffusion

    m = LinearAdvectionDiffusion("tracer", MPI.COMM_SELF, n=8)
    try:
        assert m.advance_ensemble(np.zeros((2, 8)), [{}, {}], 0.0, 0.1) is None
    finally:
        m.destroy()


@pytest.mark.parametrize("solver", [{"ts_rk_type": "3"}, {"ts_type": "euler"}])
def test_a_user_integrator_turns_the_batched_forecast_off(solver):
    """PETSc options that make the TS other than the fixed-step RK4 the batched forecast repeats (as YAML
    ``solver:`` or the command line gives them): no batched forecast, so a one-rank campaign runs the user's
    integrator as a two-rank one does, and its numbers are not RK4's."""
    from twin.core.petsc import clear_options, set_options

    x = _attractor(1)[0]
    ref = Lorenz96("l96rk4", MPI.COMM_SELF, n=40, dt=DT)
    set_options("l96user_", solver)
    m = Lorenz96("l96user", MPI.COMM_SELF, n=40, dt=DT)
    try:
        assert ref.advance_ensemble(x[None, :], [{}], 0.0, 1.0) is not None
        assert m.advance_ensemble(x[None, :], [{}], 0.0, 1.0) is None
        # the TS the campaign then runs is the user's: not RK4's numbers (third order: 1e-7 apart over 20 steps)
        assert np.abs(_ts(m, x, 8.0, 0.0, 1.0) - _ts(ref, x, 8.0, 0.0, 1.0)).max() > 1e-8
    finally:
        m.destroy()
        ref.destroy()
        clear_options("l96user_")
