"""Time to solution of a tumour calibration (k(x) and D from three imaging visits) by ES-MDA and by 4D-Var with a
Laplace posterior, on 1 and 2 MPI ranks (domain decomposition of every model run).

The problem is that of ``tests/verification/test_tumour_calibration.py`` on a finer grid (48 x 48 cells of 1 mm):
``log k`` a Gaussian random field (prior mean log 0.1, std 0.4, length 12 mm), ``D`` log-normal (median 0.2, sigma
0.5; truth 0.3 mm^2/day), cellularity images with noise 0.05 on days 10, 20 and 30. ES-MDA: 64 members, four
iterations of ``alpha = 4``. 4D-Var: TAO L-BFGS (Armijo) to ``|g| < 2``, then a rank-30 Laplace posterior. Besides the
times, the posterior ``D`` of both methods is recorded, so the 1- and 2-rank runs can be compared.
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.harness import emit, mpirun

SHAPE = (48, 48)
MEMBERS = 64


def _config():
    from twin.kinds.tumour.config import TumourConfig

    return TumourConfig.model_validate({
        "type": "tumour",
        "grid": {"shape": list(SHAPE), "extent": [[0, 48], [0, 48]], "units": "mm"},
        "dt": 1.0,
        "parameters": {
            "D_white": {"value": 0.3, "units": "mm^2/day", "estimable": True,
                        "prior": {"dist": "lognormal", "median": 0.2, "sigma": 0.5}},
            "k": {"units": "1/day", "estimable": True,
                  "prior": {"dist": "gaussian_field", "mean": -2.302585, "std": 0.4, "length_scale": 12.0,
                            "log": True}},
            "theta": {"value": 1.0, "units": "1/mm^3"},
        },
        "seed": {"center": [24, 24], "radius": 4, "amplitude": 0.2},
        "phantom": {"kind": "box", "white": 1.0},
        "imaging": {"noise_std": 0.05, "resolution": [2.0, 2.0]},
        "run": {"start": 0, "end": 30},
        "solver": {"ts_type": "cn", "snes_rtol": 1e-10, "snes_atol": 1e-12},
    })


def _child() -> None:
    import numpy as np
    from mpi4py import MPI

    from twin.assimilation.calibration import draw_prior, esmda_calibrate
    from twin.assimilation.fourdvar import FourDVar, Observation
    from twin.assimilation.laplace import LaplacePosterior, low_rank_hessian
    from twin.assimilation.tao import TaoSettings, minimise
    from twin.assimilation.var_control import ParameterControl
    from twin.kinds.tumour.model import TumourModel
    from twin.kinds.tumour.imaging import CellularityOperator
    from twin.kinds.tumour.synthetic_patient import generate_patient

    comm = MPI.COMM_WORLD
    ranks = comm.Get_size()
    cfg = _config()
    patient = generate_patient(cfg, comm, (10.0, 20.0, 30.0), seed=3, name="benchtruth")
    model = TumourModel.from_config("benchcal", cfg, comm)
    op = CellularityOperator(model.grid, 1.0, cfg.imaging.noise_std, cfg.imaging.resolution,
                             mask=model.tissue.mask)
    obs = [Observation(t, op, op.voxels.from_image(img)) for t, img in zip(patient.times, patient.cellularity)]
    # tumour region on the model grid: cells of the 2 mm imaging voxels with cellularity > 0.1 at the last visit
    region = np.kron(patient.cellularity[-1] > 0.1, np.ones((2, 2), dtype=bool))
    context = dict(ranks=ranks, grid=list(SHAPE), n_obs=3 * op.n_obs)

    comm.Barrier()
    t = time.perf_counter()
    rng = np.random.default_rng(11)
    es = esmda_calibrate(model, 0.0, obs, draw_prior(model, ["k", "D_white"], MEMBERS, rng), (4.0,) * 4, rng)
    t_es = time.perf_counter() - t
    lo, hi = es.quantiles("k", (0.05, 0.95))
    truth = patient.k
    cov_es = float(np.mean(((truth >= lo) & (truth <= hi))[region]))

    xb = model.initial_state()
    fn = FourDVar(model, (0.0, 30.0), obs, xb, None, [ParameterControl("k"), ParameterControl("D_white")],
                  name="benchvar")
    comm.Barrier()
    t = time.perf_counter()
    tao = minimise(fn, settings=TaoSettings(gatol=2.0, grtol=0.0, max_iterations=400, prefix="benchvar_",
                                            on_failure="warn", options={"tao_ls_type": "armijo"}))
    t_map = time.perf_counter() - t
    t = time.perf_counter()
    hessian = low_rank_hessian(fn, tao.control, rank=30, oversampling=10, seed=1)
    post = LaplacePosterior(fn, tao.control, hessian)
    k_lo, _, k_hi = (a.reshape(truth.shape) for a in post.field_intervals(0.9, n_samples=200, seed=2)["k"])
    d_lo, d_map, d_hi = post.scalar_intervals(0.9)["D_white"]
    t_lap = time.perf_counter() - t
    cov_var = float(np.mean(((truth >= k_lo) & (truth <= k_hi))[region]))

    if comm.Get_rank() == 0:
        label = f"{ranks} rank(s)"
        emit("calibration", f"ES-MDA time to solution, {label}", t_es, "s", members=MEMBERS, iterations=4,
             forward_runs=es.forward_runs, coverage90=round(cov_es, 3),
             D_median=round(float(np.median(es.parameters["D_white"])), 4), **context)
        emit("calibration", f"4D-Var MAP time, {label}", t_map, "s", iterations=tao.iterations,
             function_evaluations=tao.function_evaluations, reason=tao.reason, J=round(tao.value, 3),
             D_map=round(d_map, 4), **context)
        emit("calibration", f"4D-Var Laplace posterior time (rank 30, 200 samples), {label}", t_lap, "s",
             hessian_products=hessian.hessian_products, coverage90=round(cov_var, 3),
             D_interval=[round(d_lo, 4), round(d_hi, 4)], **context)
        emit("calibration", f"4D-Var + Laplace time to solution, {label}", t_map + t_lap, "s", **context)
    post.destroy()
    tao.control.destroy()
    xb.destroy()
    fn.destroy()
    op.destroy()
    model.destroy()


def main() -> None:
    from benchmarks.harness import PREFIX

    for ranks in (1, 2):
        for rec in mpirun("benchmarks.bench_calibration", ranks, "--child"):
            print(PREFIX + json.dumps(rec), flush=True)


if __name__ == "__main__":
    _child() if "--child" in sys.argv else main()
