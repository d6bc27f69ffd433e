"""Maintenance decisions on the structure model: exceedance probability under a load scenario against the exact
linear-elastic scaling, the inspection rule, and strain-gauge placement beating random gauges."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import ModelError
from twin.decision.prediction import PosteriorEnsemble
from twin.decision.sensors import random_placement_variances
from twin.kinds.structure.decision import gauge_placement, stress_exceedance
from twin.kinds.structure import Material, StructureModel
from twin.kinds.structure.loads import LoadCase

COMM = MPI.COMM_SELF


def _beam(name):
    return StructureModel(name, COMM, (12, 3), ((0, 4.0), (0, 1.0)), Material(E0=30e9, nu=0.2, rho=2400.0),
                          {"left": "clamped"}, [LoadCase("p", "traction", (0.0, -1.0e5), "top")], thickness=0.2)


def test_exceedance_probability_follows_linear_scaling():
    model = _beam("beam")
    zero = np.zeros(model.grid.size * model.grid.dof)
    ref = stress_exceedance(model, PosteriorEnsemble(zero[None, :], {"load_p": np.array([1.0])}), [1.0], 1.0)
    sigma1 = float(ref.peak_stress[0])  # peak von Mises stress under the nominal load, Pa
    assert sigma1 > 0
    rng = np.random.default_rng(0)
    s = np.exp(0.3 * rng.standard_normal(40))
    post = PosteriorEnsemble(np.tile(zero, (40, 1)), {"load_p": s})
    limit = 1.6 * sigma1
    dec = stress_exceedance(model, post, [0.5, 1.0], limit, threshold=0.2, scenario={"p": 1.5})
    # linear elasticity: the peak stress is proportional to the load scale (member by member)
    assert np.allclose(dec.peak_stress, 1.5 * s * sigma1, rtol=1e-6)
    assert dec.probability == pytest.approx(np.mean(1.5 * s > 1.6))
    assert dec.inspect == (dec.probability >= 0.2)
    assert 0 < dec.standard_error < 0.1
    rec = dec.as_dict()
    assert rec["recommend_inspection"] == dec.inspect and "P(max von Mises" in rec["summary"]
    low = stress_exceedance(model, post, [1.0], 10 * sigma1, threshold=0.2)
    assert low.probability == 0.0 and not low.inspect
    with pytest.raises(ModelError, match="load case 'wind'"):
        stress_exceedance(model, post, [1.0], limit, scenario={"wind": 2.0})
    with pytest.raises(ModelError, match="threshold"):
        stress_exceedance(model, post, [1.0], limit, threshold=0.0)
    model.destroy()


def test_gauge_placement_beats_random_gauges():
    model = _beam("beam2")
    X, Y = (c.ravel() for c in model.mesh.scalar.mesh())
    rng = np.random.default_rng(1)
    N = 16
    damage = []
    for _ in range(N):
        # a damaged zone of random severity and position near the clamp, where the peak stress is
        xc, level = rng.uniform(0.2, 1.5), rng.uniform(0.0, 0.6)
        damage.append(np.where(np.abs(X - xc) < 0.4, level, 0.0) * (Y < 0.5))
    zero = np.zeros(model.grid.size * model.grid.dof)
    post = PosteriorEnsemble(np.tile(zero, (N, 1)), {"damage": np.array(damage)})
    xs = np.linspace(0.2, 3.8, 10)
    points = np.array([[x, y] for x in xs for y in (0.05, 0.95)])
    angles = np.zeros(len(points))
    placement, problem = gauge_placement(model, post, points, angles, 2e-6, K=2, t=1.0)
    random = random_placement_variances(problem, 2, 200, np.random.default_rng(2))
    # measured: greedy 3.2e8 Pa^2 vs 7.7e9 Pa^2 on average for random pairs (prior 1.2e10 Pa^2)
    assert placement.variance[-1] < 0.2 * random.mean()
    assert placement.variance[-1] < placement.variance[0]
    model.destroy()
