"""A twin experiment's observation file on a heat model (cell-centred grids of 1 to 3 dimensions, seconds, calendar
time): the shared set-up of tests/unit/test_observation_export.py and tests/integration/test_cf_compliance.py."""

from __future__ import annotations

import numpy as np

from twin.core.calendar import cf_time_units, parse_start
from twin.core.grid import Grid
from twin.kinds.heat.model import HeatModel
from twin.observations.base import LinearObservations
from twin.observations.export import write_observation_file

START = parse_start("2026-03-01T00:00Z")
EXTENTS = {1: ((0, 4e3),), 2: ((0, 4e3), (0, 3e3)), 3: ((0, 10.0), (0, 6.0), (0, 2.0))}
SHAPES = {1: (8,), 2: (8, 6), 3: (4, 3, 2)}


def heat_model(comm, dim: int) -> HeatModel:
    grid = Grid(comm, SHAPES[dim], EXTENTS[dim], centering="cell", name="heat")
    return HeatModel("heat", comm, grid, kappa=1.0, dt=1.0)


def gauges(model, n: int = 5, seed: int = 0) -> LinearObservations:
    rng = np.random.default_rng(seed)
    lo = np.array([a for a, _ in model.grid.extent])
    hi = np.array([b for _, b in model.grid.extent])
    obs = LinearObservations.at_points(model.grid, rng.uniform(lo, hi, (n, model.grid.dim)),
                                       rng.uniform(0.1, 0.3, n), name="gauges")
    return obs


def export(path, comm, model, obs, values, sensitive=False):
    times = np.array([0.0, 600.0, 1200.0, 1800.0])
    return write_observation_file(path, comm, obs, model, times, values, time_units=cf_time_units(START, "s"),
                                  time_scale=1.0, sensitive=sensitive)
