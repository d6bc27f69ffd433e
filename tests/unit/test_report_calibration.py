"""The reliability of exceedance probabilities over replicates (twin.report.calibration): Brier score, climatology,
skill and the reliability diagram, on tiny arrays and on synthetic replicates whose forecast probability is
calibrated by construction or not."""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pytest

from twin.report.calibration import calibration_html, summarise
from twin.report.data import RunData
from twin.report.exceedance import THRESHOLD_LEVELS, brier_scores, exceedance_summary, reliability


def test_brier_score_climatology_and_skill_on_tiny_arrays():
    o = [1, 0, 1, 0]
    perfect = brier_scores([1.0, 0.0, 1.0, 0.0], o)
    assert perfect["brier"] == 0.0 and perfect["climatology"] == 0.25 and perfect["skill"] == 1.0
    assert perfect["events"] == 2 and perfect["pairs"] == 4
    # the base rate every time is climatology itself: skill 0
    base = brier_scores([0.5] * 4, o)
    assert base["brier"] == pytest.approx(0.25) and base["skill"] == pytest.approx(0.0)
    wrong = brier_scores([0.0, 1.0, 0.0, 1.0], o)
    assert wrong["brier"] == 1.0 and wrong["skill"] == pytest.approx(-3.0)
    # no event in any replicate: climatology is perfect, the skill undefined
    none = brier_scores([0.1, 0.0, 0.2], [0, 0, 0])
    assert none["climatology"] == 0.0 and none["skill"] is None and none["skill_interval"] is None
    assert none["brier"] == pytest.approx((0.01 + 0.04) / 3)
    # several thresholds (columns): the climatology is the mean of each one's obar (1 - obar)
    two = brier_scores([[1.0, 0.5], [0.0, 0.5]], [[1, 1], [0, 0]])
    assert two["climatology"] == pytest.approx(0.25) and two["brier"] == pytest.approx(0.125)
    assert two["brier_se"] == pytest.approx(0.0)  # each replicate's mean squared error is 0.125
    with pytest.raises(ValueError):
        brier_scores([0.5, 0.5], [1])


def test_reliability_bins_count_average_and_close_the_last_bin():
    bins = reliability([0.0, 0.1, 0.2, 0.5, 1.0, 1.0], [0, 1, 0, 1, 1, 0])
    assert [b["count"] for b in bins] == [2, 1, 1, 0, 2]
    assert bins[0]["forecast"] == pytest.approx(0.05) and bins[0]["observed"] == pytest.approx(0.5)
    assert bins[0]["se"] == pytest.approx(math.sqrt(0.05 * 0.95 / 2))
    assert bins[3]["forecast"] is None and bins[3]["observed"] is None and bins[3]["se"] is None
    assert bins[4]["forecast"] == 1.0 and bins[4]["observed"] == 0.5 and bins[4]["se"] == 0.0
    assert bins[4]["lower"] == pytest.approx(0.8) and bins[4]["upper"] == 1.0


def _replicates(k: int, spread: float, bias: float, seed: int, members: int = 40):
    """K twin experiments of a scalar QoI: the signal ``mu ~ N(0, 1)`` is known to the forecast, the truth is
    ``mu + N(0, 0.7^2)``; the members are ``mu + bias + N(0, spread^2)`` (calibrated: spread 0.7, bias 0)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=k)
    truths = mu + rng.normal(scale=0.7, size=k)
    ens = [m + bias + rng.normal(scale=spread, size=members) for m in mu]
    return truths, ens, [{0.5: float(np.mean(e > 0.5))} for e in ens]


def _off_diagonal(bins, sigmas: float, least: int = 30) -> list[dict]:
    """The well-filled bins whose observed frequency is further than ``sigmas`` binomial errors from the forecast
    (the binomial error from the forecast's mean, plus the 1/sqrt(n) floor of a bin whose forecasts are all 0 or 1)."""
    return [b for b in bins if b["count"] >= least
            and abs(b["observed"] - b["forecast"]) > sigmas * max(b["se"], 0.5 / b["count"])]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_calibrated_probabilities_have_skill_and_a_diagonal_reliability_curve(seed):
    """At the decision threshold alone (one independent pair per replicate) every well-filled bin lies within 3
    binomial errors of the diagonal (1 of 100 seeds fails, as expected of 5 bins at 3 sigma). The pooled diagram
    holds 6 pairs of one truth per replicate, correlated, which widens its scatter beyond the binomial error of
    independent pairs (3 sigma failed for 1 of 40 seeds, 3.5 for 4 of 100): 4 errors there (1 of 100 seeds fails,
    while the miscalibrated forecasts below leave it in 2 bins or more for each of 40 seeds)."""
    truths, ens, decided = _replicates(400, 0.7, 0.0, seed)
    e = exceedance_summary(truths, ens, decided)
    assert e["limits"] == [0.5] and len(e["thresholds"]) == 1 + len(THRESHOLD_LEVELS)
    assert [r["kind"] for r in e["thresholds"]] == ["decision", "10% quantile", "25% quantile", "50% quantile",
                                                   "75% quantile", "90% quantile"]
    pooled = e["pooled"]
    assert pooled["skill"] > 0.2 and pooled["skill_interval"][0] > 0
    for r in e["thresholds"]:
        assert r["skill"] > 0 and len(r["forecasts"]) == len(r["outcomes"]) == 400
    # at the quantile thresholds the base rates are 0.9 ... 0.1 by construction
    rates = [r["base_rate"] for r in e["thresholds"][1:]]
    assert rates == pytest.approx([0.9, 0.75, 0.5, 0.25, 0.1], abs=0.01)
    assert sum(b["count"] for b in pooled["reliability"]) == 400 * 6
    assert _off_diagonal(pooled["reliability"], 4.0) == []
    decision = e["thresholds"][0]
    assert _off_diagonal(reliability(decision["forecasts"], decision["outcomes"]), 3.0) == []


@pytest.mark.parametrize("spread, bias", [(0.15, 0.0), (0.7, 1.0)])
def test_overconfident_or_biased_probabilities_leave_the_diagonal(spread, bias):
    truths, ens, decided = _replicates(400, 0.7, 0.0, 1)
    calibrated = exceedance_summary(truths, ens, decided)["pooled"]
    truths, ens, decided = _replicates(400, spread, bias, 1)
    e = exceedance_summary(truths, ens, decided)["pooled"]
    assert e["brier"] > calibrated["brier"] + 2 * e["brier_se"]
    assert e["skill"] < calibrated["skill"]
    assert len(_off_diagonal(e["reliability"], 4.0)) >= 2


def test_without_members_only_the_decision_threshold_is_scored():
    e = exceedance_summary([1.0, 0.0, 2.0], [None, None, None], [{0.5: 0.9}, {0.5: 0.2}, {0.5: 0.7}])
    assert [r["kind"] for r in e["thresholds"]] == ["decision"]
    assert e["thresholds"][0]["outcomes"] == [1, 0, 1]
    assert e["pooled"]["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)


def _experiments(tmp_path, k: int, spreads: dict[str, float], shift: dict[str, float] | None = None):
    """Experiment directories as a replicated campaign writes them (matrix.json, free_run.nc, prediction.nc,
    decision.json), for the set-ups ``method -> members' spread`` over the same K truths (``shift``: a method's
    truths moved by that much, as when set-ups draw their truths differently)."""
    import xarray as xr

    base, _, _ = _replicates(k, 0.7, 0.0, 7)
    rng = np.random.default_rng(8)
    mu = base - rng.normal(scale=0.7, size=k)  # not the truths' own signal: only the shapes matter here
    matrix, runs = {}, []
    for method, spread in spreads.items():
        truths = base + (shift or {}).get(method, 0.0)
        for i in range(k):
            name = f"seed-{i + 1}_assimilation-{method}"
            d = tmp_path / "experiments" / name
            d.mkdir(parents=True)
            matrix[name] = {"campaign.seed": i + 1, "assimilation": method}
            xr.Dataset({"truth_eta": ("time", [0.0, truths[i]])}, coords={"time": [0.0, 1.0]}).to_netcdf(
                d / "free_run.nc")
            members = mu[i] + rng.normal(scale=spread, size=20)
            xr.Dataset({"eta": (("member", "time"), np.c_[members * 0, members])},
                       coords={"time": [0.5, 1.0]}).to_netcdf(d / "prediction.nc")
            decision = {"qois": {"eta": {"units": "m", "quantiles": {"0.05": float(np.quantile(members, 0.05)),
                                                                     "0.95": float(np.quantile(members, 0.95))},
                                         "exceedance": {"0.5": float(np.mean(members > 0.5))}}}}
            runs.append(RunData(name, d, decision=decision))
    (tmp_path / "matrix.json").write_text(json.dumps(matrix))
    return runs, base


def test_summarise_scores_each_setup_compares_them_paired_and_draws_the_diagram(tmp_path):
    k = 24
    runs, truths = _experiments(tmp_path, k, {"wide": 0.7, "narrow": 0.1})
    cals = summarise(tmp_path, runs, set())
    assert len(cals) == 2
    by = {c.label: c for c in cals}
    wide, narrow = by["assimilation = wide"], by["assimilation = narrow"]
    e = wide.as_dict()["exceedance"]["eta"]
    json.dumps(wide.as_dict())  # calibration.json holds it
    assert e["units"] == "m" and e["limits"] == [0.5] and len(e["replicates"]) == k
    decision = e["thresholds"][0]
    assert decision["kind"] == "decision" and decision["outcomes"] == [int(t > 0.5) for t in truths]
    assert decision["forecasts"] == [r.decision["qois"]["eta"]["exceedance"]["0.5"] for r in runs[:k]]
    assert e["thresholds"][3]["threshold"] == pytest.approx(float(np.median(truths)))
    # the paired comparison over the same seeds: the difference of the mean squared errors, both ways round
    ea, eb = e["compared"]["assimilation = narrow"], narrow.exceedance["eta"]["compared"]["assimilation = wide"]
    sq = {c.label: np.mean([(np.asarray(r["forecasts"]) - r["outcomes"]) ** 2
                            for r in c.exceedance["eta"]["thresholds"]], axis=0) for c in cals}
    d = sq["assimilation = wide"] - sq["assimilation = narrow"]
    assert ea["truths"] == k and ea["paired"] and ea["pooled"]["difference"] == pytest.approx(d.mean())
    assert ea["pooled"]["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(k))
    assert eb["pooled"]["difference"] == pytest.approx(-d.mean())
    images = tmp_path / "report"
    images.mkdir()
    text = calibration_html(cals, images, lambda p: f"<img src='{p.name}'>")
    assert "P(eta &gt; threshold): Brier score over 24 truths" in text and "thresholds pooled" in text
    assert "0.5 m (the decision's)" in text and "(paired)" in text and "reliability_0.png" in text
    assert (images / "reliability_0.png").stat().st_size > 1000 and (images / "reliability_1.png").is_file()


def test_setups_with_different_truths_get_their_own_thresholds_and_an_unpaired_comparison(tmp_path):
    """Two set-ups over the same seeds whose truths differ (a method that draws its nature run otherwise): the
    quantile thresholds are each one's own, and their Brier scores are compared as independent samples."""
    k = 16
    runs, truths = _experiments(tmp_path, k, {"a": 0.7, "b": 0.7}, shift={"b": 0.3})
    by = {c.label: c for c in summarise(tmp_path, runs, set())}
    ea, eb = by["assimilation = a"].exceedance["eta"], by["assimilation = b"].exceedance["eta"]
    assert eb["truths"] == pytest.approx(list(truths + 0.3))
    assert eb["thresholds"][3]["threshold"] == pytest.approx(ea["thresholds"][3]["threshold"] + 0.3)
    c = ea["compared"]["assimilation = b"]
    assert not c["paired"] and c["truths"] == k
    sa, sb = ea["thresholds"][0], eb["thresholds"][0]
    assert c["decision"]["difference"] == pytest.approx(sa["brier"] - sb["brier"])
    assert c["decision"]["se"] == pytest.approx(math.hypot(sa["brier_se"], sb["brier_se"]))
    assert c["pooled"]["difference"] == pytest.approx(ea["pooled"]["brier"] - eb["pooled"]["brier"])
    html = calibration_html(list(by.values()), tmp_path, lambda p: "")
    assert "whose truths differ" in html


def test_a_field_is_scored_by_the_decisions_own_record_for_every_method(tmp_path, monkeypatch):
    """The tumour's k(x) is scored over the tumour's cells (decision.json's calibration record) for ES-MDA as for
    4D-Var, not over the whole field from ES-MDA's members (1.0 here); without a record the whole field counts."""
    from twin.report import calibration

    monkeypatch.setattr(calibration, "_truth_parameters", lambda d: {"k": np.ones(4)})
    monkeypatch.setattr(calibration, "_field_coverage", lambda d, name, t: 1.0)
    own = calibration.Calibration("esmda", ["a"])
    calibration._add(own, RunData("a", tmp_path, decision={"calibration": {"k": {"coverage_90": 0.5}}}))
    assert own.scores["k(x) coverage"] == 0.5
    field = calibration.Calibration("esmda", ["b"])
    calibration._add(field, RunData("b", tmp_path, decision={}))
    assert field.scores["k(x) coverage"] == 1.0


def test_the_campaign_verdict_names_the_method_whose_probabilities_verified_best(tmp_path):
    from twin.report.exceedance import which_to_trust
    from twin.report.verdict import Verdict, campaign_html

    runs, _ = _experiments(tmp_path, 24, {"wide": 0.7, "narrow": 0.1})
    cals = summarise(tmp_path, runs, set())
    (line,) = which_to_trust(cals)
    by = {c.label: c.exceedance["eta"] for c in cals}
    best = min(by, key=lambda k: by[k]["pooled"]["brier"])
    other = next(k for k in by if k != best)
    d = by[other]["compared"][best]["pooled"]
    assert line.startswith(f"Over 24 truths, P(eta > 0.5 m) from [{best}] verifies best: pooled Brier skill ")
    cov = {c.label: c.coverage["QoI eta at the horizon"] for c in cals}
    assert f"its 90 % interval holding the truth in {cov[best][0]} of 24; " in line
    assert (f"[{other}]: skill {by[other]['pooled']['skill']:+.2f}, its 90 % interval holding the truth in "
            f"{cov[other][0]} of 24, Brier {d['difference']:+.3f}") in line
    assert ("beyond 2 s.e." in line) == (abs(d["difference"]) > 2 * d["se"])
    page = campaign_html(tmp_path, runs[:2], {r.name: Verdict("q", "a") for r in runs[:2]}, [line])
    assert html.escape(line) in page
    assert which_to_trust(cals[:1]) == []


def test_a_parameter_is_scored_by_its_laplace_samples_where_the_checkpoint_has_them(tmp_path, monkeypatch):
    """4D-Var's checkpoints hold one MAP value per parameter and its Laplace samples: the samples are the posterior
    whose 90 % interval is checked (a single MAP value cannot be)."""
    from twin.report import calibration

    monkeypatch.setattr(calibration, "_truth_parameters", lambda d: {"F": 8.1})
    samples = 8.0 + 0.2 * np.random.default_rng(3).standard_normal(40)
    run = RunData("a", tmp_path, parameters={0: {"F": np.array([7.0])}, 1: {"F": np.array([8.0])}},
                  posterior_parameters={"F": samples})
    cal = calibration.Calibration("4dvar", ["a"])
    calibration._add(cal, run)
    assert cal.coverage["parameter F"] == (1, 1)
    assert cal.ranks["F"] == [pytest.approx(np.mean(samples < 8.1))]
