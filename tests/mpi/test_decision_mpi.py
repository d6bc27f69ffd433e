"""Posterior prediction is collective: the same treatment outcome on 1 and 2 ranks (run under mpiexec -n 2)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.tumour.config import TumourConfig
from twin.kinds.tumour.decision import Regimen, evaluate_regimen
from twin.decision.prediction import PosteriorEnsemble
from twin.kinds.tumour import TumourModel


def _outcome(comm, name):
    cfg = TumourConfig.model_validate({
        "type": "tumour", "grid": {"shape": [12, 10], "extent": [[0, 60], [0, 50]], "units": "mm"},
        "seed": {"center": [30, 25], "radius": 8, "amplitude": 0.3}, "dt": 1.0, "phantom": {"kind": "box"},
        "parameters": {"theta": {"value": 1.0, "units": "1/mm^3"}, "k": {"value": 0.04, "units": "1/day"},
                       "alpha": {"value": 0.05, "units": "1/Gy"}}})
    model = TumourModel.from_config(name, cfg, comm)
    x0 = model.initial_state()
    state = model.grid.allgather(x0).ravel()
    x0.destroy()
    post = PosteriorEnsemble(np.tile(state, (3, 1)), {"k": np.array([0.03, 0.04, 0.05]),
                                                      "alpha": np.array([0.06, 0.05, 0.04])})
    out = evaluate_regimen(model, post, Regimen(2.5, 10, start=3.0), 30.0)
    model.destroy()
    return out


def test_outcome_is_the_same_on_one_and_two_ranks():
    world = MPI.COMM_WORLD
    many = _outcome(world, "pw")
    one = _outcome(MPI.COMM_SELF, "ps")
    assert world.Get_size() in (1, 2)
    assert np.allclose(many.burden, one.burden, rtol=1e-8)
    assert np.allclose(many.forecast.values["burden"], one.forecast.values["burden"], rtol=1e-8)
    assert many.objective == pytest.approx(one.objective, rel=1e-8)
    # every rank holds the same numbers
    assert np.array_equal(world.bcast(many.burden, root=0), many.burden)
