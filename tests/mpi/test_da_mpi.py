"""Ensemble DA on 2 ranks: members over two single-rank sub-communicators, analysis over blocks of the state, gives
the same analysis as the same seed on 1 rank; the Lorenz-96 TS model and its adjoint agree on 1 and 2 ranks.

Every test runs the same collective calls in the same order on both ranks (the 1-rank reference runs on COMM_SELF
on each rank).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

from twin.assimilation.cycle import EnsembleCycle, ModelForecast, ObservationSchedule, twin_truth
from twin.observations.base import LinearObservations
from twin.assimilation.ensemble import ETKF, EnKF
from twin.assimilation.inflation import Inflation
from twin.assimilation.letkf import LETKF, Geometry
from twin.assimilation.transforms import ControlParameter, ControlVector
from twin.kinds.lorenz96.model import BatchedForecast, Lorenz96

NX, DT = 40, 0.05


def _setup(cycles=8):
    fc = BatchedForecast(DT, 8.0)
    sch = ObservationSchedule(DT, 1, cycles)
    pts = np.arange(0, NX, 2, dtype=float)
    H = sp.csr_matrix((np.ones(pts.size), (np.arange(pts.size), pts.astype(int))), shape=(pts.size, NX))
    obs = LinearObservations(H, 1.0, pts[:, None])
    x0 = np.full(NX, 8.0)
    x0[0] += 0.01
    truth, y = twin_truth(fc, x0, {}, sch, obs, seed=7, spinup_cycles=50)
    geo = Geometry(np.arange(NX, dtype=float)[:, None], 1, np.array([float(NX)]))
    return fc, sch, obs, truth, y, geo


def _initial(truth):
    def initial(member, rng):
        return truth[0] + rng.standard_normal(NX), {"F": 7.0 * np.exp(0.1 * rng.standard_normal())}
    return initial


@pytest.mark.parametrize("make", [
    lambda: ETKF(6, Inflation(1.02), rotate=True),
    lambda: EnKF(6, Inflation(1.05, rtps=0.5)),
    lambda: LETKF(5, 4.0, Inflation(1.03, rtpp=0.3), rotate=True),
], ids=["etkf", "enkf", "letkf"])
def test_same_seed_same_analysis_on_one_and_two_ranks(make):
    fc, sch, obs, truth, y, geo = _setup()
    control = ControlVector(NX, [ControlParameter("F", 1, "log")])
    results = []
    for comm in (MPI.COMM_WORLD, MPI.COMM_SELF):
        cyc = EnsembleCycle(make(), fc, obs, sch, comm, NX, geometry=geo, control=control, seed=11)
        if comm is MPI.COMM_WORLD:
            assert cyc.layout.n_groups == 2 and cyc.dist.block_size < NX + 1
        results.append(cyc.run(_initial(truth), y, truth, gather_final=True))
        cyc.free()
    two, one = results
    assert one.final_ensemble.shape == (NX + 1, two.final_ensemble.shape[1])
    assert np.allclose(two.final_ensemble, one.final_ensemble, rtol=0, atol=1e-9)
    for key in ("rmse_a", "spread_a", "crps_a", "innovation_var"):
        assert np.allclose(two.diagnostics[key], one.diagnostics[key], rtol=1e-9)
    assert np.array_equal(two.rank_histogram, one.rank_histogram)
    assert np.allclose(two.parameter_mean["F"], one.parameter_mean["F"], rtol=1e-10)


def test_lorenz96_ts_one_vs_two_ranks_and_model_forecast():
    m2 = Lorenz96("l96mpi", MPI.COMM_WORLD, n=NX, dt=DT, initial_condition="random", perturbation=1.0, seed=1)
    m1 = Lorenz96("l96mpi1", MPI.COMM_SELF, n=NX, dt=DT, initial_condition="random", perturbation=1.0, seed=1)
    out = []
    for m in (m2, m1):
        x = m.initial_state()
        lam = m.grid.set_global(np.linspace(-1, 1, NX), m.create_state())
        g = m.adjoint(x, 0.0, 0.5, lam, ["F"])
        m.advance(x, 0.0, 0.5)
        out.append((m.grid.allgather(x), m.grid.allgather(lam), g["F"]))
        x.destroy()
        lam.destroy()
    assert np.allclose(out[0][0], out[1][0], rtol=0, atol=1e-13)
    assert np.allclose(out[0][1], out[1][1], rtol=0, atol=1e-12)
    assert out[0][2] == pytest.approx(out[1][2], rel=1e-13)
    # the PETSc-TS ensemble forecast (member by member, each on a 2-rank model) equals the batched NumPy RK4
    states = np.random.default_rng(0).standard_normal((NX, 3)) + 8.0
    params = {"F": np.array([8.0, 7.5, 8.5])}
    ts = ModelForecast(m2)(states, params, 0.0, 0.25)
    assert np.allclose(ts, BatchedForecast(DT, 8.0)(states, params, 0.0, 0.25), rtol=0, atol=1e-12)
    m1.destroy()
    m2.destroy()


def test_a_non_finite_member_on_one_rank_fails_the_analysis_on_every_rank():
    """The analysis' checks are collective: a NaN in the block of one rank only raises the same error on both (no
    rank is left waiting in a reduction), naming the member."""
    from twin.assimilation.analysis import EnsembleAnalysis
    from twin.core.errors import AssimilationError

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = rank * NX // size, (rank + 1) * NX // size
    obs = LinearObservations(sp.identity(NX), 1.0)
    analysis = EnsembleAnalysis(ETKF(5), obs, ControlVector(NX), comm=comm, rows=(lo, hi))
    E = np.random.default_rng(1).standard_normal((NX, 5))[lo:hi]
    if rank == size - 1:
        E[0, 3] = np.nan
    with pytest.raises(AssimilationError, match=r"cycle 2: the inflated forecast of member\(s\) \[3\]"):
        analysis.analyse(E, np.zeros(NX), 1.0, 1.0, np.random.default_rng(2), cycle=2)
    comm.Barrier()
