"""Decision layer: an in-silico trial over a small synthetic cohort (optimised plan vs the standard regimen),
guardrail detection delays and false alarms over repeated Lorenz-96 twin experiments, greedy sensor placement cost,
and the time of ``twin report``."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import emit


def _cohort() -> None:
    from mpi4py import MPI

    from twin.kinds.tumour.config import TumourConfig
    from twin.kinds.tumour.decision import TreatmentConstraints, TreatmentObjective, cohort_comparison, optimise_treatment
    from twin.decision.prediction import PosteriorEnsemble
    from twin.kinds.tumour import TumourModel

    rng = np.random.default_rng(2024)
    decisions, t0 = [], time.perf_counter()
    members, n_patients = 16, 4
    for p in range(n_patients):
        k, alpha = float(rng.uniform(0.02, 0.06)), float(rng.uniform(0.03, 0.07))
        cfg = TumourConfig.model_validate({
            "type": "tumour", "grid": {"shape": [24, 24], "extent": [[0, 120], [0, 120]], "units": "mm"},
            "seed": {"center": [60, 60], "radius": 10, "amplitude": 0.3}, "dt": 1.0, "phantom": {"kind": "box"},
            "parameters": {"theta": {"value": 1.0, "units": "1/mm^3"}, "k": {"value": k, "units": "1/day"},
                           "alpha": {"value": alpha, "units": "1/Gy"}, "kappa": {"value": 0.02, "units": "1/day"}}})
        model = TumourModel.from_config(f"patient{p}", cfg, MPI.COMM_SELF)
        x0 = model.initial_state()
        state = model.grid.allgather(x0).ravel()
        x0.destroy()
        post = PosteriorEnsemble(np.tile(state, (members, 1)),
                                 {"k": k * np.exp(0.2 * rng.standard_normal(members)),
                                  "alpha": alpha * np.exp(0.2 * rng.standard_normal(members))})
        cons = TreatmentConstraints(max_bed_normal=100.0, min_dose=1.5, max_dose=5.0,
                                    fraction_options=(15, 20, 25, 30, 35, 40), start_options=(7.0,),
                                    chemo_start_options=(None, 0.0, 14.0), chemo_doses=2)
        dec = optimise_treatment(model, post, cons, 70.0, TreatmentObjective("burden", "cvar", 0.9))
        c = dec.comparison()
        emit("decision", f"patient {p}: CVaR90 burden ratio chosen/standard", c["cvar_burden_ratio"], "1",
             k=round(k, 4), alpha=round(alpha, 4), chosen=dec.best.regimen.label(), members=members)
        decisions.append(dec)
        model.destroy()
    cohort = cohort_comparison(decisions)
    emit("decision", "cohort: mean burden ratio chosen/standard", cohort["mean_burden_ratio"], "1",
         patients=n_patients, better=cohort["patients_better"])
    emit("decision", "cohort optimisation time per patient", (time.perf_counter() - t0) / n_patients, "s",
         grid="24x24", members=members, plans=len(decisions[0].candidates) + 1)


def _drift_run(fault: bool, rate: float, seed: int, onset: int = 100, cycles: int = 300, faulty: int = 13):
    """The Lorenz-96 ETKF twin of tests/verification/test_guardrails.py (40 sensors, N = 20, inflation 1.05)."""
    import scipy.sparse as sp

    from twin.assimilation.analysis import EnsembleAnalysis
    from twin.assimilation.ensemble import ETKF
    from twin.assimilation.inflation import Inflation
    from twin.assimilation.transforms import ControlVector
    from twin.campaign.guarded import screen
    from twin.decision.guardrails import Guardrails, GuardrailSettings
    from twin.kinds.lorenz96.model import rk4_ensemble
    from twin.observations.base import LinearObservations

    n, N, dt = 40, 20, 0.05
    rng = np.random.default_rng(seed)
    x = rk4_ensemble(8.0 + rng.standard_normal(n), 8.0, dt, 0.0, 5.0)
    E = x[:, None] + rng.standard_normal((n, N))
    r = np.ones(n)
    obs_rng, ana_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    guard = Guardrails(n, GuardrailSettings(policy="exclude"), seed=seed)
    # the campaign's analysis with the campaign's guardrail screen (twin.campaign.guarded)
    analysis = EnsembleAnalysis(ETKF(N, Inflation(1.05)), LinearObservations(sp.identity(n), r), ControlVector(n))
    err = np.empty(cycles)
    for k in range(cycles):
        x = rk4_ensemble(x, 8.0, dt, k * dt, (k + 1) * dt)
        E = rk4_ensemble(E, 8.0, dt, k * dt, (k + 1) * dt)
        y = x + r * obs_rng.standard_normal(n)
        if fault and k >= onset:
            y[faulty] += rate * (k - onset + 1)
        E = analysis.analyse(E, y, r, 1.05, ana_rng, cycle=k, time=(k + 1) * dt, truth=x,
                             screen=screen(guard)).ensemble
        err[k] = np.sqrt(np.mean((E.mean(axis=1) - x) ** 2))
    first = guard.first_flag("sensor_drift", faulty)
    return err, guard, (first.cycle - onset if first is not None else np.inf)


def _guardrails() -> None:
    import logging

    logging.getLogger("twin").setLevel(logging.ERROR)  # one warning per flag would flood the benchmark output
    for rate in (0.05, 0.1, 0.2):
        delays, ratios = [], []
        for seed in range(5):
            err, _, delay = _drift_run(True, rate, seed)
            clean, _, _ = _drift_run(False, rate, seed)
            delays.append(delay)
            ratios.append(err[150:].mean() / clean[150:].mean())
        emit("decision", f"drift {rate}/cycle: cycles to flag (mean of 5 seeds)", float(np.mean(delays)), "cycles",
             worst=float(np.max(delays)))
        emit("decision", f"drift {rate}/cycle: analysis RMSE with exclusion / without fault", float(np.mean(ratios)),
             "1")
    false = sum(len(_drift_run(False, 0.0, seed)[1].flags) for seed in range(10, 20))
    emit("decision", "false guardrail flags in 10 fault-free 300-cycle runs", false, "flags", sensors=40)


def _sensors() -> None:
    from twin.decision.sensors import PlacementProblem, greedy_placement

    rng = np.random.default_rng(0)
    for m in (200, 1000):
        A = rng.standard_normal((m, 60))
        prob = PlacementProblem(A @ A.T, A @ rng.standard_normal(60), 100.0, np.ones(m))
        t0 = time.perf_counter()
        greedy_placement(prob, 20)
        emit("decision", f"greedy placement of 20 of {m} candidates", time.perf_counter() - t0, "s", candidates=m)


def main(parts=("cohort", "guardrails", "sensors")) -> None:
    for part in parts:
        {"cohort": _cohort, "guardrails": _guardrails, "sensors": _sensors}[part]()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:] or ("cohort", "guardrails", "sensors"))
