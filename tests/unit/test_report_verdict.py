"""Numbers in the verdict carry the digits their spread supports, and the verdict of an experiment is its failure
when it failed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twin.report.data import RunData
from twin.report.verdict import format_interval, format_number, format_probability, spread_skill, verdict_for


@pytest.mark.parametrize("value, width, units, expected", [
    (1004.0123, 0.37, "m", "1004.01 m"),        # two significant digits of the width: 0.01
    (1004.0123, 37.0, "m", "1004 m"),
    (0.15234, 0.1, "", "0.15"),
    (134297625.4, 4.0e7, "cells", "1.34×10^8 cells"),
    (2.1679, 2.3, "MPa", "2.2 MPa"),
    (81.25, 19.5, "", "81"),
])
def test_digits_follow_the_spread(value, width, units, expected):
    assert format_number(value, width, units) == expected


def test_interval_and_probability():
    assert format_interval(2.1679, 1.5245, 3.8367, "MPa") == "2.2 MPa (90 % interval 1.5 to 3.8 MPa)"
    assert format_probability(0.8125, 0.0976) == "81 % (± 9.8 %)"
    assert format_number(float("nan")) == "n/a"
    # decision.json keeps non-finite numbers as strings ("nan", "inf"): a report of such a run said a traceback
    assert format_interval("nan", "nan", "nan", "m") == "n/a (90 % interval n/a to n/a)"
    assert format_interval(2.1679, 1.5245, "inf", "MPa") == "2.168 MPa (90 % interval 1.524 to n/a)"


def test_spread_skill_after_the_burn_in():
    import xarray as xr

    rmse = np.r_[5.0, 5.0, np.full(8, 1.0)]  # a burn-in of 2 of 10 cycles is left out
    ds = xr.Dataset({"rmse": ("time", rmse), "spread": ("time", np.full(10, 0.5))})
    ratio, n = spread_skill(RunData("x", ".", diagnostics=ds))
    assert ratio == pytest.approx(0.5) and n == 8


def test_a_failed_experiment_says_so_first(tmp_path):
    (tmp_path / "failed.json").write_text(json.dumps({"reason": "model 'l96': solver failed at t=0.3"}))
    v = verdict_for(RunData("x", tmp_path))
    assert v.failed and v.answer == "FAILED: model 'l96': solver failed at t=0.3"


@pytest.mark.parametrize("value, unit, expected", [(21600.0, "seconds", "6 h"), (3600.0, "seconds", "1 h"),
                                                   (600.0, "seconds", "10 min"), (60.0, "days", "60 days"),
                                                   (4.0, "seconds", "4 s"), (3.0, "years", "3 years")])
def test_durations_in_the_units_readers_use(value, unit, expected):
    from twin.report.verdict import duration

    assert duration(value, unit) == expected


def test_the_campaign_verdict_says_when_two_methods_posteriors_do_not_overlap(tmp_path):
    """Two experiments of one set-up whose 90 % intervals of D do not overlap (and of k, which do): the campaign
    verdict names D with both intervals, whatever the decisions say; one sample is too few to judge."""
    from twin.report.verdict import Verdict, campaign_html, disjoint_parameters

    rng = np.random.default_rng(1)
    a = RunData("esmda", tmp_path, posterior_parameters={"D": 0.125 + 0.012 * rng.standard_normal(32),
                                                          "k": 0.1 + 0.01 * rng.standard_normal(32)})
    b = RunData("4dvar", tmp_path, posterior_parameters={"D": 0.051 + 0.014 * rng.standard_normal(32),
                                                          "k": 0.1 + 0.01 * rng.standard_normal(32)})
    apart = disjoint_parameters([a, b])
    assert len(apart) == 1 and apart[0].startswith("D: esmda [0.1") and ", 4dvar [0.0" in apart[0]
    assert disjoint_parameters([a, RunData("map", tmp_path, posterior_parameters={"D": np.array([0.05])})]) == []
    same = Verdict("q", "keep 30 x 2 Gy", decision="keep")
    (tmp_path / "matrix.json").write_text(json.dumps({"esmda": {"assimilation.method": "esmda"},
                                                      "4dvar": {"assimilation.method": "4dvar"}}))
    page = campaign_html(tmp_path, [a, b], {"esmda": same, "4dvar": same})
    assert "The methods agree on the decision." in page and "Their posteriors do not overlap: D: esmda" in page


def test_the_campaign_verdict_weighs_two_probabilities_by_their_sampling_error(tmp_path):
    """P(eta > 4 m) of 60 % from 40 members and 88 % from 8 differ by 1.8 standard errors: within sampling error.
    10 % and 90 % from 40 members each do not: the verdict says so and whom to trust, by calibration evidence."""
    from twin.report.verdict import Verdict, campaign_html, differing_probabilities

    def v(p, n, err):
        return Verdict("q", "a", decision="eta>4:likely", calibration_error=err, confidence=f"evidence {err}",
                       probabilities={"P(eta > 4 m)": (p, n)})

    assert differing_probabilities([("letkf", v(0.60, 40, 0.05)), ("4dvar", v(0.875, 8, 0.3))]) == []
    far = differing_probabilities([("letkf", v(0.9, 40, 0.05)), ("4dvar", v(0.1, 40, 0.3))])
    assert far == ["P(eta > 4 m): letkf 90 ± 5 %, 4dvar 10 ± 5 %"]
    # a probability of 0 or 1 keeps an error: 0 of 8 against 1 of 8 is no difference
    assert differing_probabilities([("a", v(0.0, 8, None)), ("b", v(0.125, 8, None))]) == []
    runs = [RunData("letkf", tmp_path), RunData("4dvar", tmp_path)]
    (tmp_path / "matrix.json").write_text(json.dumps({"letkf": {"assimilation.method": "letkf"},
                                                      "4dvar": {"assimilation.method": "4dvar"}}))
    page = campaign_html(tmp_path, runs, {"letkf": v(0.9, 40, 0.05), "4dvar": v(0.6, 40, 0.3)})
    assert "agree on the decision" in page and "differ by more than twice the sampling error" in page
    assert "trust <b>letkf</b>" in page and "(evidence 0.05)" in page
    page = campaign_html(tmp_path, runs, {"letkf": v(0.9, 40, None), "4dvar": v(0.6, 40, None)})
    assert "No calibration evidence is available to choose between them." in page
    page = campaign_html(tmp_path, runs, {"letkf": v(0.6, 40, 0.05), "4dvar": v(0.875, 8, 0.3)})
    assert "sampling error" not in page


def test_calibration_evidence_weighs_coverage_and_spread_skill_together():
    """A posterior covering 90 % with a spread 1.3 times its error is further from calibrated than one covering 85 %
    with spread/skill 0.92: the larger of |coverage - 0.9| and |log spread/skill| is its distance from ideal."""
    import xarray as xr

    from twin.report.verdict import ensemble_confidence

    def run(cov, ss):
        ds = xr.Dataset({"rmse": ("time", np.ones(5)), "spread": ("time", np.full(5, ss)),
                         "rmse_a": 1.0, "spread_a": ss, "coverage_90_a": cov})
        return ensemble_confidence(RunData("x", ".", diagnostics=ds))

    (text, wide), (_, tight) = run(0.90, 1.30), run(0.85, 0.92)
    assert "at 90 % of the state entries" in text and "spread/skill 1.30" in text
    assert wide == pytest.approx(np.log(1.3)) and tight == pytest.approx(-np.log(0.92)) and tight < wide


def test_methods_are_compared_on_their_decisions_only_when_finished(tmp_path):
    """Experiments without a decision have nothing to agree on (the report said "The methods agree on the decision"
    of two analysis-only experiments), and one that has not finished is listed apart and not compared."""
    from twin.report.verdict import Verdict, campaign_html

    runs = [RunData("a", tmp_path), RunData("b", tmp_path), RunData("c", tmp_path)]
    (tmp_path / "matrix.json").write_text(json.dumps({n: {"assimilation.method": n} for n in "abc"}))
    plain = Verdict("q", "analysis RMSE 0.3")
    page = campaign_html(tmp_path, runs[:2], {"a": plain, "b": plain})
    assert "agree" not in page and "disagree" not in page
    keep, other = Verdict("q", "keep", decision="keep"), Verdict("q", "change", decision="change")
    late = Verdict("q", "change", decision="change", unfinished="interrupted at 3/24 cycles")
    page = campaign_html(tmp_path, runs, {"a": keep, "b": keep, "c": late})
    assert "The methods agree on the decision." in page
    assert "<b>1 of 3 experiment(s) NOT FINISHED</b>: c (interrupted at 3/24 cycles); they are not compared" in page
    page = campaign_html(tmp_path, runs, {"a": keep, "b": other, "c": late})
    assert "The methods disagree" in page


def test_calibrated_only_when_coverage_and_spread_skill_both_are():
    """Found by a probe: spread/skill 0.97 with the 90 % interval holding the truth at 71 % was called "well
    calibrated" (the word came from spread/skill alone), and the campaign verdict trusted that method for it."""
    import xarray as xr

    from twin.report.verdict import ensemble_confidence

    def said(coverage, spread):
        ds = xr.Dataset({"rmse_a": ((), 1.0), "spread_a": ((), spread), "coverage_90_a": ((), coverage),
                         "rmse": ("time", np.ones(10)), "spread": ("time", np.full(10, spread))})
        return ensemble_confidence(RunData("x", ".", diagnostics=ds))

    text, err = said(0.71, 0.97)
    assert "at 71 %" in text and text.endswith("over-confident (the intervals hold the truth less often than they "
                                               "say)") and err == pytest.approx(0.19)
    assert said(0.90, 0.97)[0].endswith(": well calibrated")
    assert said(0.99, 1.6)[0].endswith("under-confident (the intervals are wider than the error)")
    assert said(0.70, 1.6)[0].endswith("miscalibrated (coverage and spread/skill disagree)")


def test_the_prediction_verdict_names_its_centre_and_the_members_it_counts(tmp_path):
    """Found by a probe: the verdict's number was the median without saying so (the decision panel says "mean"),
    and with 2 members it stated a 90 % interval and P = 0 % without an error or the member count."""
    rec = {"qois": {"energy": {"quantiles": {"0.05": 6.09, "0.5": 6.47, "0.95": 6.85}, "mean": 6.47, "units": "1",
                               "exceedance": {"20": 0.0}}}, "horizon": 1.0, "members": 2}
    v = verdict_for(RunData("x", tmp_path, decision=rec))
    assert v.number.startswith("energy: median 6.47 (90 % interval 6.09 to 6.85)")
    assert v.number.endswith("(from 2 posterior members; too few for a 90 % interval)")
    assert "P(energy > 20) = 0 % (± 26 %)" in v.answer
    rec["members"] = 40
    v = verdict_for(RunData("x", tmp_path, decision=rec))
    assert v.number.endswith("(from 40 posterior members)") and "P(energy > 20) = 0.0 % (± 1.7 %)" in v.answer


def test_a_stopped_experiment_says_stopped_and_how_to_run_it_again(tmp_path):
    """Found by a probe: a stopped experiment read 'FAILED: FAILED: stopped by the failure policy ...' in the report's
    lines, without the advice to remove stopped.json that a rerun needs."""
    (tmp_path / "stopped.json").write_text(json.dumps({"cycle": 2, "reason": "member(s) 6 (diverged) failed in "
                                                                          "cycle 2 (policy: stop)"}))
    v = verdict_for(RunData("x", tmp_path))
    assert v.failed and v.answer == "STOPPED by its failure policy: member(s) 6 (diverged) failed in cycle 2 (policy: stop)"
    assert v.changes == f"see twin.log; remove {tmp_path / 'stopped.json'} to run it again (after changing what " \
        "stopped it)"
