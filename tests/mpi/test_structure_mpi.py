"""The structure model on 2 ranks agrees with 1 rank to solver tolerance (run under ``mpiexec -n 2``).

Every test builds the same model on the world communicator (distributed) and on ``COMM_SELF`` (each rank alone),
with the same collective calls in the same order on every rank, and compares gathered fields.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.structure import Material, StructureModel
from twin.kinds.structure.loads import LoadCase, TimeFunction
from twin.kinds.structure.gauges import StrainGauges

WORLD = MPI.COMM_WORLD
GAUGES = np.array([[0.4, 0.1], [1.3, 0.7], [2.6, 0.5]])


def _model(comm, mode="static"):
    kw = {"mode": "dynamic", "dt": 2e-3} if mode == "dynamic" else {}
    return StructureModel("s", comm, (24, 8), ((0, 3.0), (0, 1.0)),
                          Material(E0=1e4, nu=0.3, rho=1.0, alpha=0.1, beta=1e-3), {"left": "clamped"},
                          [LoadCase("tip", "traction", (0.0, -10.0), "right",
                                    TimeFunction("harmonic", frequency=5.0, phase=0.5)),
                           LoadCase("g", "body_force", (0.0, -1.0))],
                          damage=lambda X, Y: 0.5 * ((X - 1.5) ** 2 + (Y - 0.5) ** 2 < 0.3 ** 2), **kw)


def _run(comm, mode, t1):
    m = _model(comm, mode)
    x = m.initial_state()
    m.advance(x, 0.0, t1)
    gauges = StrainGauges(m.grid, GAUGES, [0.0, 0.5, 1.0], 1e-6)
    y = gauges.apply(x)
    lam = x.duplicate()
    lam.set(0.0)
    gauges.apply_adjoint(x, y, lam)
    x0 = m.initial_state()
    g = m.adjoint(x0, 0.0, t1, lam, ["damage", "E0", "load_tip"])
    out = {"state": m.grid.allgather(x), "gauges": y, "grad_damage": m.mesh.scalar.allgather(g["damage"]),
           "E0": g["E0"], "load_tip": g["load_tip"], "lam0": m.grid.allgather(lam),
           "max_vm": m.qoi(x, t1)["max_von_mises"].value, "f1": m.natural_frequencies(1)[0]}
    gauges.destroy()
    m.destroy()
    return out


@pytest.mark.parametrize("mode, t1", [("static", 1.0), ("dynamic", 0.02)])
def test_one_and_two_ranks_agree(mode, t1):
    assert WORLD.Get_size() == 2, "run under mpiexec -n 2"
    dist = _run(WORLD, mode, t1)
    alone = _run(MPI.COMM_SELF, mode, t1)
    for key in ("state", "gauges", "grad_damage", "lam0"):
        a, b = np.asarray(dist[key]), np.asarray(alone[key])
        scale = max(np.abs(b).max(), 1e-300)
        assert np.abs(a - b).max() <= 1e-7 * scale, f"{mode} {key}: {np.abs(a - b).max()} vs scale {scale}"
    for key in ("E0", "load_tip", "max_vm", "f1"):
        assert dist[key] == pytest.approx(alone[key], rel=1e-7), key
    # both ranks really share the work and agree among themselves
    assert WORLD.allreduce(float(dist["f1"]), op=MPI.MAX) == WORLD.allreduce(float(dist["f1"]), op=MPI.MIN)
