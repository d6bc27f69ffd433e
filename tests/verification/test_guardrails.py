"""A drifting sensor in a Lorenz-96 twin experiment (ETKF, 40 sensors): the CUSUM guardrail flags it within a stated
number of cycles, and excluding it keeps the analysis error at the level of the experiment without the fault.

Set-up: n = 40, F = 8, RK4 with dt = 0.05, every variable observed every step with error std 1, ETKF with N = 20 and
multiplicative inflation 1.05 (the usual configuration, analysis RMSE ~0.22). From cycle 100 sensor 13 drifts:
its observations gain a bias of 0.1 (0.09 innovation standard deviations) per cycle. Measured: flagged at cycle 118
(18 cycles after onset; stated bound 25); analysis RMSE over cycles 150-299: 0.221 without the fault, 0.221 with the
fault and exclusion, 1.58 with the fault and flagging only (the filter is dragged away by the biased sensor).

The analysis is the campaign's: :class:`twin.assimilation.analysis.EnsembleAnalysis` with the guardrails as its screen
(:func:`twin.campaign.guarded.screen`), as :func:`twin.campaign.steps.analyse` runs it."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from twin.assimilation.analysis import EnsembleAnalysis
from twin.assimilation.ensemble import ETKF
from twin.assimilation.inflation import Inflation
from twin.assimilation.transforms import ControlVector
from twin.campaign.guarded import screen
from twin.decision.guardrails import Guardrails, GuardrailSettings
from twin.kinds.lorenz96.model import rk4_ensemble
from twin.observations.base import LinearObservations

ONSET, RATE, FAULTY, CYCLES = 100, 0.1, 13, 300
DETECT_WITHIN = 25


def _experiment(fault: bool, policy: str, seed: int = 0):
    n, N, dt = 40, 20, 0.05
    rng = np.random.default_rng(seed)
    x = rk4_ensemble(8.0 + rng.standard_normal(n), 8.0, dt, 0.0, 5.0)  # spin-up onto the attractor
    E = x[:, None] + rng.standard_normal((n, N))
    r = np.ones(n)
    obs_rng, ana_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    infl = Inflation(1.05)
    guard = Guardrails(n, GuardrailSettings(policy=policy), seed=seed)
    analysis = EnsembleAnalysis(ETKF(N, infl), LinearObservations(sp.identity(n), r), ControlVector(n))
    records, err = [], np.empty(CYCLES)
    for k in range(CYCLES):
        x = rk4_ensemble(x, 8.0, dt, k * dt, (k + 1) * dt)
        E = rk4_ensemble(E, 8.0, dt, k * dt, (k + 1) * dt)
        y = x + r * obs_rng.standard_normal(n)
        if fault and k >= ONSET:
            y[FAULTY] += RATE * (k - ONSET + 1)
        out = analysis.analyse(E, y, r, infl.multiplicative, ana_rng, cycle=k, time=(k + 1) * dt, truth=x,
                               screen=screen(guard))
        E = out.ensemble
        records.append(out.record)
        err[k] = np.sqrt(np.mean((E.mean(axis=1) - x) ** 2))
        assert abs(out.record["rmse"] - err[k]) <= 1e-12 * err[k]
    return err, guard, records


def test_drifting_sensor_is_flagged_and_excluding_it_keeps_the_analysis_error():
    clean, g_clean, _ = _experiment(False, "flag")
    guarded, g_ex, records = _experiment(True, "exclude")
    unguarded, g_flag, _ = _experiment(True, "flag")
    late = slice(150, CYCLES)

    # no false alarm of any kind in the consistent experiment
    assert g_clean.flags == []
    # the faulty sensor is flagged, within the stated number of cycles after the onset, and is the only one excluded
    f = g_ex.first_flag("sensor_drift")
    assert f is not None and f.sensor == FAULTY and f.action == "excluded"
    assert ONSET <= f.cycle <= ONSET + DETECT_WITHIN
    assert np.flatnonzero(~g_ex.active).tolist() == [FAULTY]
    assert [x.sensor for x in g_ex.flags if x.kind == "sensor_drift"] == [FAULTY]
    # excluding it keeps the analysis error at the level without the fault (measured 0.221 vs 0.221) ...
    assert guarded[late].mean() < 1.1 * clean[late].mean()
    assert clean[late].mean() < 0.3
    # ... while keeping it ruins the analysis (measured RMSE 1.58), and the other guardrails notice
    assert unguarded[late].mean() > 3.0 * clean[late].mean()
    kinds = {x.kind for x in g_flag.flags}
    assert {"sensor_drift", "innovation_chi2", "spread_skill", "rank_histogram"} <= kinds
    # every cycle's guardrail statistics are recorded as diagnostics
    assert len(records) == CYCLES and records[-1]["excluded_sensors"] == 1.0
    assert records[f.cycle - 1]["n_obs_active"] == 40.0 and records[f.cycle]["n_obs_active"] == 39.0
