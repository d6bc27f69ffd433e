"""In-silico trial on synthetic patients: the plan chosen under the posterior beats the standard regimen (30 x 2 Gy,
5 fractions per week) in the model's own posterior expectation, and respects every constraint.

Patient: the tumour model on a tiny box of tissue (10 x 10 cells of 5 mm), posterior samples of the proliferation
rate k and the radiosensitivity alpha (lognormal, 20 % spread, as a Laplace/ensemble posterior would give),
decision at day 0, horizon 70 days, treatment starting on day 7, normal-tissue BED cap 100 Gy_3 (that of the
standard regimen)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.tumour.config import TumourConfig
from twin.core.errors import ModelError
from twin.kinds.tumour.decision import (Regimen, TreatmentConstraints, TreatmentObjective, bed, cohort_comparison,
                                    max_dose_for_bed, optimise_treatment)
from twin.decision.prediction import PosteriorEnsemble
from twin.decision.records import read_decision, write_decision
from twin.kinds.tumour import TumourModel

COMM = MPI.COMM_SELF
HORIZON = 70.0


def _patient(name, k=0.04, alpha=0.05, kappa=0.0, members=8, seed=1):
    cfg = TumourConfig.model_validate({
        "type": "tumour", "grid": {"shape": [10, 10], "extent": [[0, 50], [0, 50]], "units": "mm"},
        "seed": {"center": [25, 25], "radius": 8, "amplitude": 0.3}, "dt": 1.0, "phantom": {"kind": "box"},
        "parameters": {"theta": {"value": 1.0, "units": "1/mm^3"}, "k": {"value": k, "units": "1/day"},
                       "D_white": {"value": 0.2, "units": "mm^2/day"}, "D_grey": {"value": 0.2, "units": "mm^2/day"},
                       "alpha": {"value": alpha, "units": "1/Gy"}, "kappa": {"value": kappa, "units": "1/day"}}})
    model = TumourModel.from_config(name, cfg, COMM)
    x0 = model.initial_state()
    state = model.grid.allgather(x0).ravel()
    x0.destroy()
    rng = np.random.default_rng(seed)
    post = PosteriorEnsemble(np.tile(state, (members, 1)),
                             {"k": k * np.exp(0.2 * rng.standard_normal(members)),
                              "alpha": alpha * np.exp(0.2 * rng.standard_normal(members))}, 0.0)
    return model, post


def _constraints(**over):
    base = dict(alpha_beta_normal=3.0, max_bed_normal=100.0, max_fractions=40, min_dose=1.5, max_dose=5.0,
                fraction_options=(15, 20, 25, 30, 35, 40), start_options=(7.0,))
    base.update(over)
    return TreatmentConstraints(**base)


def test_bed_algebra_and_schedule():
    assert bed(30, 2.0, 3.0) == pytest.approx(100.0)
    d = max_dose_for_bed(40, 100.0, 3.0)
    assert bed(40, d, 3.0) == pytest.approx(100.0) and d == pytest.approx(1.6225, abs=1e-4)
    r = Regimen(2.0, 7, start=7.0, per_week=5)
    assert r.fraction_days().tolist() == [7, 8, 9, 10, 11, 14, 15]  # no fractions at the weekend
    assert r.end == 15.0
    assert _constraints().violations(Regimen(2.5, 30, 7.0), HORIZON)  # BED 130 Gy_3 > 100
    assert _constraints().violations(Regimen(1.62, 40, 40.0), HORIZON)  # ends after the horizon


def test_optimised_plan_beats_standard_and_respects_constraints(tmp_path):
    model, post = _patient("pt1", kappa=0.02)
    cons = _constraints(chemo_start_options=(None, 14.0), chemo_doses=2, chemo_interval=7.0)
    dec = optimise_treatment(model, post, cons, HORIZON, TreatmentObjective("burden", "mean"))
    best, std = dec.best.regimen, dec.standard.regimen
    # every candidate and the chosen plan satisfy every constraint
    for c in dec.candidates:
        assert cons.violations(c.regimen, HORIZON) == []
    assert cons.violations(best, HORIZON) == []
    assert best.bed(3.0) <= 100.0 + 1e-9 and 1.5 <= best.dose <= 5.0 and best.fractions <= 40
    assert np.all(best.fraction_days() < HORIZON) and np.all(best.chemo_days() < HORIZON)
    assert std.fractions == 30 and std.dose == 2.0 and std.bed(3.0) == pytest.approx(100.0)
    # better in the model's own posterior expectation, member by member (paired): measured ratio 0.82
    comp = dec.comparison()
    assert dec.best.objective < dec.standard.objective
    assert comp["mean_burden_ratio"] < 0.9
    assert comp["probability_better"] == 1.0
    assert dec.best.objective == min(c.objective for c in dec.candidates)
    # the record the report reads
    write_decision(tmp_path, dec.as_dict())
    rec = read_decision(tmp_path)
    assert rec["kind"] == "oncology" and len(rec["burden_samples"]["chosen"]) == post.size
    assert len(rec["fans"]["chosen"]["quantiles"]) == 3
    model.destroy()


def test_cvar_objective_cohort_and_infeasible_constraints():
    decisions = []
    for i, (k, alpha) in enumerate([(0.03, 0.06), (0.05, 0.04)]):
        model, post = _patient(f"pc{i}", k=k, alpha=alpha, members=6, seed=10 + i)
        cons = _constraints(fraction_options=(20, 30, 40))
        dec = optimise_treatment(model, post, cons, HORIZON, TreatmentObjective("burden", "cvar", 0.8))
        assert cons.violations(dec.best.regimen, HORIZON) == []
        assert dec.best.objective < dec.standard.objective
        decisions.append(dec)
        if i == 0:
            with pytest.raises(ModelError, match="no admissible treatment plan"):
                optimise_treatment(model, post, _constraints(fraction_options=(40,), min_dose=2.0), HORIZON)
            ttp = optimise_treatment(model, post, cons, HORIZON, TreatmentObjective("time_to_progression"))
            assert ttp.best.objective <= ttp.standard.objective
        model.destroy()
    cohort = cohort_comparison(decisions)
    assert cohort["patients_better"] == 2 and cohort["mean_burden_ratio"] < 0.95
