"""Lorenz-96's batched forecast (every rank, whole states) gives the numbers of its PETSc TS distributed over two
ranks bit for bit: what lets a campaign batch members that are whole on one rank and run distributed members on their
TS, with the same analysis whatever the layout (tests/mpi/test_campaign_mpi.py)."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from twin.kinds.lorenz96.model import Lorenz96, rk4_ensemble

DT = 0.05


def test_batched_forecast_is_the_distributed_ts_bitwise():
    comm = MPI.COMM_WORLD
    model = Lorenz96("l96batch2", comm, n=40, dt=DT)
    try:
        assert model.grid.local_shape[0] < 40  # the TS below is really distributed
        rng = np.random.default_rng(3)
        E = rk4_ensemble(8.0 + rng.standard_normal((40, 4)), 8.0, DT, 0.0, 20.0).T.copy()
        params = [{"F": 8.0 + 0.2 * j} for j in range(4)]
        mismatches = []
        for k, every in ((0, 2), (7, 2), (13, 1), (250, 5)):
            t0, t1 = k * every * DT, (k + 1) * every * DT
            batch = model.advance_ensemble(E, params, t0, t1)
            for j in range(4):
                model.set_parameter("F", params[j]["F"])
                v = model.grid.set_global(E[j], model.create_state())
                model.advance(v, t0, t1)
                ts = model.grid.allgather(v).ravel()
                v.destroy()
                if ts.tobytes() != batch[j].tobytes():
                    mismatches.append((k, j, float(np.max(np.abs(ts - batch[j])))))
            E = batch
        assert not mismatches, mismatches
    finally:
        model.destroy()
