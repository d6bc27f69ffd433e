"""Explicit coupling: a stable Dirichlet-Neumann split runs; an unstable one is detected and reported."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.core.errors import CouplingError
from twin.kinds.heat.examples import gather_partitioned, heat_model, partitioned_heat

COMM = MPI.COMM_SELF
GAUSSIAN = {"kind": "gaussian", "center": [0.4, 0.3], "width": 0.08}


def test_unstable_explicit_coupling_is_detected():
    # Dirichlet side 0.25 wide, Neumann side 0.75, kappa dt = 0.5: the staggered interface update amplifies the
    # first interface mode by about 1.3 per window
    pair = partitioned_heat(COMM, tag="_unstable", nx=16, ny=8, split=4, kappa=1.0, dt=0.5, initial=GAUSSIAN,
                            scheme={"kind": "explicit_serial", "convergence": []})
    x = pair.initial_state()
    with pytest.raises(CouplingError, match=r"unstable.*grew by at least 1.05x.*residual history \[") as info:
        pair.advance(x, 0.0, 20 * 0.5)
    assert "left_unstable.T_in" in str(info.value)
    res = [d.residuals["left_unstable.T_in"][0] for d in pair.diagnostics]
    assert len(res) < 20 and res[-1] > 1.5 * res[0]
    pair.destroy()


@pytest.mark.parametrize("kind", ["explicit_serial", "explicit_parallel"])
def test_stable_explicit_coupling_runs_and_converges_at_first_order_in_the_window(kind):
    # the wide Dirichlet side (0.75) makes the staggered update contract
    nx, ny, kappa, t1 = 16, 8, 0.1, 0.1
    diffs = []
    for dt in (0.005, 0.0025):
        tag = f"_{kind}_{int(dt * 1e4)}"
        pair = partitioned_heat(COMM, tag=tag, nx=nx, ny=ny, split=12, kappa=kappa, dt=dt,
                                scheme={"kind": kind, "convergence": []})
        x = pair.initial_state()
        pair.advance(x, 0.0, t1)
        mono = heat_model(f"mono{tag}", COMM, (nx, ny), ((0, 1), (0, 1)), kappa=kappa, dt=dt)
        xm = mono.initial_state()
        mono.advance(xm, 0.0, t1)
        diffs.append(np.abs(gather_partitioned(pair, x) - mono.grid.allgather(xm)).max())
        assert all(d.iterations == 1 for d in pair.diagnostics)
        for obj in (pair, mono, x, xm):
            obj.destroy()
    # explicit coupling lags the interface data by one window: a splitting error of order dt, not round-off
    rate = np.log2(diffs[0] / diffs[1])
    assert diffs[1] > 1e-6 and 0.8 < rate < 1.3, (diffs, rate)
