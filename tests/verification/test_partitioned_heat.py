"""Partitioned heat conduction (Dirichlet-Neumann, implicit coupling) against the monolithic solution and the
manufactured analytic solution; coupling iterations per window of constant relaxation, Aitken and IQN-ILS."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.heat.examples import gather_partitioned, heat_model, partitioned_heat

COMM = MPI.COMM_SELF
GAUSSIAN = {"kind": "gaussian", "center": [0.4, 0.3], "width": 0.08}


def _monolithic(name, nx, ny, kappa, dt, t1, initial=None):
    m = heat_model(name, COMM, (nx, ny), ((0, 1), (0, 1)), kappa=kappa, dt=dt, initial=initial)
    x = m.initial_state()
    m.advance(x, 0.0, t1)
    out = m.grid.allgather(x), m
    x.destroy()
    return out


def test_partitioned_equals_monolithic_and_manufactured_solution():
    nx, ny, kappa, dt, t1 = 16, 8, 0.1, 0.01, 0.1
    mono, m = _monolithic("mono_mms", nx, ny, kappa, dt, t1)
    exact_vec = m.exact_solution(t1)
    exact = m.grid.allgather(exact_vec)
    err_mono = np.abs(mono - exact).max()

    pair = partitioned_heat(COMM, tag="_mms", nx=nx, ny=ny, split=6, kappa=kappa, dt=dt)
    x = pair.initial_state()
    pair.advance(x, 0.0, t1)
    part = gather_partitioned(pair, x)
    assert len(pair.diagnostics) == 10 and all(d.converged for d in pair.diagnostics)
    # the interface converged to 1e-10 relative: the partitioned scheme is the monolithic one
    assert np.abs(part - mono).max() < 1e-9
    # ... hence the same discretisation error with respect to the analytic solution
    err_part = np.abs(part - exact).max()
    assert err_part == pytest.approx(err_mono, rel=1e-6)
    assert err_part < 0.01 * np.abs(exact).max()
    for obj in (pair, m, exact_vec, x):
        obj.destroy()


def test_iterations_per_window_constant_aitken_iqn():
    # kappa dt = 0.1 against sub-domains of widths 0.25 and 0.75: the Dirichlet-Neumann iteration factors spread over
    # [-1.5, -1], so relaxation matters; a Gaussian excites many interface modes
    nx, ny, kappa, dt, t1 = 16, 8, 1.0, 0.1, 1.0
    mono, m = _monolithic("mono_its", nx, ny, kappa, dt, t1, GAUSSIAN)
    mean_its = {}
    for tag, acc in [("const", {"kind": "constant", "relaxation": 0.5}),
                     ("aitken", {"kind": "aitken", "relaxation": 0.5}),
                     ("iqn", {"kind": "iqn_ils", "relaxation": 0.5}),
                     ("iqn_reuse", {"kind": "iqn_ils", "relaxation": 0.5, "reuse": 3})]:
        pair = partitioned_heat(COMM, tag=f"_{tag}", nx=nx, ny=ny, split=4, kappa=kappa, dt=dt, initial=GAUSSIAN,
                                scheme={"acceleration": acc})
        x = pair.initial_state()
        pair.advance(x, 0.0, t1)
        assert np.abs(gather_partitioned(pair, x) - mono).max() < 1e-9
        mean_its[tag] = pair.mean_iterations()
        assert sum(pair.diagnostics[0].seconds.values()) > 0
        pair.destroy()
        x.destroy()
    print("mean coupling iterations per window:", mean_its)
    assert mean_its["iqn_reuse"] < mean_its["aitken"] < mean_its["const"]
    assert mean_its["iqn"] <= mean_its["aitken"]
    m.destroy()
