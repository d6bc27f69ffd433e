"""Guardrail checks on synthetic innovations with known statistics: no false alarms when the system is consistent,
alarms when it is not; the exclusion policy; flags written and read back; the decision schema."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from twin.config.decision import decision_section_type
from twin.core.errors import AssimilationError
from twin.decision.guardrails import (Guardrails, GuardrailSettings, innovation_chi2, rank_flatness, read_flags)


def _cycle(rng, m=30, N=20, obs_std=1.0, stated_std=1.0, spread=0.5, bias=None):
    """A forecast ensemble whose spread matches the truth's error, and observations with error ``obs_std``."""
    truth = rng.standard_normal(m)
    centre = truth + spread * rng.standard_normal(m)
    Y = centre[:, None] + spread * rng.standard_normal((m, N))
    y = truth + obs_std * rng.standard_normal(m)
    if bias is not None:
        y = y + bias
    return Y, y, np.full(m, stated_std)


def test_consistent_system_raises_no_flags():
    rng = np.random.default_rng(1)
    g = Guardrails(30, GuardrailSettings(policy="exclude"))
    for k in range(300):
        g.check(k, float(k), *_cycle(rng))
    kinds = [f.kind for f in g.flags]
    assert "sensor_drift" not in kinds and g.active.all()
    # the chi-square test has a 0.1 % false-alarm rate per cycle by construction
    assert kinds.count("innovation_chi2") <= 2
    assert kinds.count("spread_skill") == 0 and kinds.count("rank_histogram") <= 2
    chi = np.array([h["innovation_chi2"] for h in g.history])
    assert chi.mean() == pytest.approx(1.0, abs=0.05)
    ratio = np.array([h["spread_skill_ratio"] for h in g.history[20:]])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.15)


def test_spread_skill_without_truth_weighs_sensors_of_other_quantities_alike():
    """Without a truth, spread/skill is measured in units of each sensor's error: half the sensors read a quantity
    in large units (errors 1) that the ensemble does not spread (as a coupled atmosphere's sea level next to a
    mast's gauges), the other half one in small units (errors 1e-6) that it spreads as much as it errs. Their
    innovations are consistent throughout, and no spread/skill flag is raised; in the observations' own units the
    first half's noise alone (mean d^2 - mean r^2 of about 0 +- 0.1 against spreads of 1e-12) made the ratio
    0 or infinite."""
    rng = np.random.default_rng(4)
    m, N = 30, 20
    g = Guardrails(m, GuardrailSettings(spread_skill=(0.5, 2.0), window=10))
    for k in range(200):
        Y, y, r = _cycle(rng, m=m, N=N, spread=0.5)
        big = np.arange(m) < m // 2
        Y[big] = y[big, None] + 1e-6 * rng.standard_normal((big.sum(), N))   # no spread, error = obs error
        y[big] = Y[big].mean(axis=1) + rng.standard_normal(big.sum())
        Y[~big], y[~big], r[~big] = 1e-6 * Y[~big], 1e-6 * y[~big], 1e-6 * r[~big]
        g.check(k, float(k), Y, y, r)
    ratio = np.array([h["spread_skill_ratio"] for h in g.history[10:]])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.2)
    assert [f.kind for f in g.flags].count("spread_skill") <= 5


def test_step_bias_on_one_sensor_is_flagged_and_excluded():
    rng = np.random.default_rng(2)
    g = Guardrails(30, GuardrailSettings(policy="exclude"))
    bias = np.zeros(30)
    for k in range(100):
        bias[7] = 2.4 if k >= 50 else 0.0  # 2 innovation standard deviations (sqrt(1 + 0.5^2) = 1.12)
        g.check(k, float(k), *_cycle(rng, bias=bias))
    f = g.first_flag("sensor_drift")
    assert f is not None and f.sensor == 7 and f.action == "excluded"
    assert 50 <= f.cycle <= 60  # CUSUM with k=1, h=6 on a 2-sigma shift: about 6 cycles
    assert not g.active[7] and g.active.sum() == 29
    assert g.diagnostics()["excluded_sensors"] == 1.0 and g.diagnostics()["n_obs_active"] == 29.0


def test_misstated_observation_errors_are_flagged():
    rng = np.random.default_rng(3)
    g = Guardrails(30)
    for k in range(40):
        g.check(k, float(k), *_cycle(rng, obs_std=2.0, stated_std=1.0))
    kinds = [f.kind for f in g.flags]
    assert kinds.count("innovation_chi2") >= 30  # chi2/m ~ (4 + 0.5) / 1.25 = 3.6
    assert kinds.count("spread_skill") >= 20 and kinds.count("rank_histogram") >= 20
    assert g.first_flag("sensor_drift") is not None and g.first_flag("sensor_drift").action == "flagged"
    assert g.active.all()  # policy "flag" records only


def test_guardrail_diagnostics_go_into_diagnostics_nc(tmp_path):
    from twin.decision.guardrails import diagnostics_variables
    from twin.io.netcdf import DiagnosticsFile

    g = Guardrails(5)
    f = DiagnosticsFile(tmp_path / "diagnostics.nc", variables=diagnostics_variables())
    rng = np.random.default_rng(0)
    for k in range(3):
        g.check(k, float(k), *_cycle(rng, m=5))
        f.append(float(k), g.diagnostics(), cycle=k)
    ds = f.read()
    assert ds["flag_innovation_chi2"].attrs["units"] == "1" and ds["cusum_max"].shape == (3,)
    assert np.allclose(ds["innovation_chi2"].values, [h["innovation_chi2"] for h in g.history])


def test_statistics_and_round_trip(tmp_path):
    chi, p = innovation_chi2(np.zeros(10), np.ones(10))
    assert chi == 0.0 and p < 1e-6
    assert rank_flatness(np.full(21, 50), 10) == pytest.approx(1.0)
    assert rank_flatness(np.r_[np.full(10, 5), np.full(11, 200)], 10) < 1e-10
    g = Guardrails(3, GuardrailSettings(policy="exclude"))
    rng = np.random.default_rng(0)
    for k in range(20):
        g.check(k, 0.5 * k, rng.standard_normal((3, 5)), np.array([0.0, 0.0, 30.0]), np.ones(3))
    path = g.write_flags(tmp_path / "flags.jsonl")
    back = read_flags(path)
    assert [f.kind for f in back] == [f.kind for f in g.flags] and back[0].time == g.flags[0].time
    assert read_flags(tmp_path / "none.jsonl") == []
    with pytest.raises(AssimilationError, match="wrong sensor count|expected 3"):
        g.check(0, 0.0, np.zeros((2, 5)), np.zeros(2), np.ones(2))
    with pytest.raises(AssimilationError, match="policy"):
        GuardrailSettings(policy="ignore")
    with pytest.raises(AssimilationError, match="spread_skill"):
        GuardrailSettings(spread_skill=(1.2, 2.0))


def test_decision_schema():
    cfg = decision_section_type().model_validate({
        "qois": ["burden"], "horizon": 70, "risk": {"measure": "cvar", "level": 0.9},
        "oncology": {"max_bed_normal": 100, "fraction_options": [20, 30, 40], "dose": {"min": 1.5, "max": 5},
                     "chemotherapy": {"start_options": [0, 14], "doses": 2}},
        "structure": {"limit": {"value": 250, "units": "MPa"}, "threshold": 0.05},
        "guardrails": {"policy": "exclude", "cusum": {"k": 0.5, "h": 8}}})
    assert cfg.oncology.max_dose == 5 and cfg.structure.limit.to("Pa") == pytest.approx(2.5e8)
    s = GuardrailSettings.from_config(cfg.guardrails)
    assert s.policy == "exclude" and s.cusum_h == 8
    from twin.kinds.tumour.decision import TreatmentConstraints

    tc = TreatmentConstraints.from_config(cfg.oncology)
    assert tc.chemo_start_options == (0.0, 14.0) and tc.chemo_doses == 2
    bad = [{"horizon": -1},
           {"horizon": 1, "oncology": {"max_fractions": 30, "fraction_options": [35]}},
           {"horizon": 1, "structure": {"limit": {"value": 1, "units": "m"}}},
           {"horizon": 1, "guardrails": {"spread_skill": [2, 3]}},
           {"horizon": 1, "risk": {"measure": "worst"}},
           {"horizon": 1, "credible_levels": [0.9, 0.1]},
           {"horizon": 1, "unknown": 1}]
    for b in bad:
        with pytest.raises(ValidationError):
            decision_section_type().model_validate(b)
