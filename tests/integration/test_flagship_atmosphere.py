"""The atmosphere flagship campaign (configs/atmosphere.yaml) in a reduced size, end to end through the CLI.

The campaign file is loaded as data, its sizes are reduced (grid 12 x 12, 16 members, 12 LETKF cycles, 2 4D-Var
windows, 1 h forecast) and it is run with ``twin run`` and reported with ``twin report`` in a temporary directory.
The assertions are numbers that could fail: the analyses beat their backgrounds and stay well below the free run,
the LETKF's spread/skill after the 8-cycle (4 h) burn-in is near 1, the drag estimate moves from the prior median
towards the nature run's value, the free run and the exceedance probability agree with the samples that produced
them. The cluster variant differs from the local file only in resources and sizes, and validates.

Why 16 members and 12 cycles (the campaign's own calibration is in the header of configs/atmosphere.yaml): with the
campaign's LETKF settings on 12 x 12 cells, scratch runs of the same analysis in memory gave a spread/skill over
cycles 8-11 of 0.82, 0.83, 0.91 (assimilation / campaign seeds 5/12, 6/13, 7/14; per cycle 0.70-0.97) and an
analysis RMSE 0.20-0.22 times the free run's, while 8 members gave 0.36 (the ensemble is then smaller than the
effective dimension of the prior error, ~20 at full size), so the band asserted below separates a calibrated
ensemble from a rank-deficient one; 4 cycles would only show the over-dispersed start (first-analysis spread/skill
1.3-1.7 here, ~3 at full size: the truth starts at the centre of the white initial noise).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "configs" / "atmosphere.yaml"
CLUSTER = ROOT / "configs" / "atmosphere_cluster.yaml"

TRUE_DRAG, PRIOR_DRAG = 5.0e-6, 1.0e-5
N_MEMBERS, N_CYCLES, BURN_IN = 16, 12, 8

#: dotted paths of the sizes a cluster variant may change (besides the resources section)
SIZE_KEYS = ("models.atmosphere.grid.shape", "assimilation.N", "assimilation.schedule.cycles",
             "experiments.matrix.assimilation.0.N", "experiments.matrix.assimilation.0.schedule.cycles",
             "experiments.matrix.assimilation.1.cycles")


def _pop(data: dict, path: str) -> None:
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node.pop(keys[-1], None)  # YAML aliases share nodes: a key may be gone already


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _reduced(tmp_path: Path) -> Path:
    data = _load(LOCAL)
    data["models"]["atmosphere"]["grid"]["shape"] = [12, 12]
    letkf, var = data["experiments"]["matrix"]["assimilation"]
    for a in (data["assimilation"], letkf):
        a["N"] = N_MEMBERS
        a["schedule"]["cycles"] = N_CYCLES
    var["cycles"] = 2
    var["tao"]["max_iterations"] = 8
    var["laplace"] = {"rank": 2, "oversampling": 1, "samples": 4, "level": 0.9}
    data["experiments"]["min_members"] = 4
    data["decision"]["horizon"] = 3600
    data["decision"]["guardrails"]["window"] = 2
    data["decision"]["guardrails"]["warmup"] = 1
    data["resources"] = {"type": "local", "ranks": 1, "workers": 1}
    path = tmp_path / "atmosphere.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _open(path: Path):
    import xarray as xr

    with xr.open_dataset(path, decode_times=False) as ds:
        return ds.load()


def test_cluster_variant_differs_only_in_resources_and_sizes():
    from twin.cli import main

    local, cluster = _load(LOCAL), _load(CLUSTER)
    assert cluster["resources"]["type"] == "slurm"
    for d in (local, cluster):
        d.pop("resources")
        for key in SIZE_KEYS:
            _pop(d, key)
    assert local == cluster
    assert main(["validate", str(CLUSTER)]) == 0
    assert main(["validate", str(LOCAL)]) == 0


def test_atmosphere_campaign_runs_and_reports(tmp_path):
    from twin.campaign import layout
    from twin.cli import main

    path = _reduced(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run)]) == 0
    exps = sorted((run / "experiments").iterdir())
    assert len(exps) == 2
    letkf = next(d for d in exps if "letkf" in d.name)
    var = next(d for d in exps if "4dvar" in d.name)

    # outputs of both experiments: CF NetCDF with the shallow-water state
    for d in (letkf, var):
        for name in layout.OUTPUTS:
            ds = _open(d / name)
            if name != "diagnostics.nc":
                assert {"h", "u", "v"} <= set(ds.data_vars), (d.name, name)
                assert ds["h"].attrs["units"] == "m"
    post = _open(letkf / "posterior.nc")
    assert post.sizes["member"] == N_MEMBERS and post.sizes["time"] == N_CYCLES + 1
    assert post.sizes["x"] == 12 and post.sizes["y"] == 12

    # LETKF: the analyses beat their backgrounds on average, over all cycles and after the burn-in (single analyses
    # need not: from the first cycles on the background error is already several times below the observation
    # errors); after the burn-in the spread matches the error (measured 0.82 with these seeds, see the docstring)
    diag = _open(letkf / "diagnostics.nc")
    assert diag.sizes["time"] == N_CYCLES
    ra, rb, spread = diag["rmse"].values, diag["rmse_forecast"].values, diag["spread"].values
    assert ra.mean() < 0.95 * rb.mean() and ra[BURN_IN:].mean() < rb[BURN_IN:].mean(), (ra, rb)
    assert np.all(spread > 0)
    spread_skill = spread[BURN_IN:].mean() / ra[BURN_IN:].mean()
    assert 0.6 < spread_skill < 1.4, (spread_skill, spread, ra)
    drag = diag["parameter_drag"].values
    assert abs(np.log(drag[-1] / TRUE_DRAG)) < 0.8 * abs(np.log(PRIOR_DRAG / TRUE_DRAG)), drag
    # 4D-Var: every window lowers its cost and beats its background; drag towards the truth as well
    vd = _open(var / "diagnostics.nc")
    assert vd.sizes["time"] == 2
    assert np.all(vd["cost"].values < vd["cost_initial"].values)
    assert np.all(vd["rmse"].values < vd["rmse_forecast"].values), (vd["rmse"].values, vd["rmse_forecast"].values)
    assert abs(np.log(vd["parameter_drag"].values[-1] / TRUE_DRAG)) < abs(np.log(PRIOR_DRAG / TRUE_DRAG))
    assert _open(var / "posterior.nc").sizes["member"] == 4  # the Laplace samples

    # decision (LETKF experiment): site QoIs forecast 1 h past the last analysis, exceedance consistent with the fan
    dec = json.loads((letkf / "decision.json").read_text())
    assert dec["members"] == N_MEMBERS
    assert dec["time"] == pytest.approx(N_CYCLES * 1800.0)
    assert set(dec["qois"]) == {"eta_at_harbour", "u_at_airport"}
    harbour = dec["qois"]["eta_at_harbour"]
    q = harbour["quantiles"]
    assert float(q["0.05"]) <= float(q["0.5"]) <= float(q["0.95"])
    limit = float(_load(LOCAL)["decision"]["exceedance_limits"]["eta_at_harbour"])
    p = harbour["exceedance"][f"{limit:g}"]
    assert 0.0 <= p <= 1.0
    if limit > float(q["0.95"]):
        assert p <= 0.05 + 1e-12
    if limit < float(q["0.05"]):
        assert p >= 0.95 - 1e-12
    fan = dec["fans"]["eta_at_harbour"]
    assert fan["times"][-1] == pytest.approx(dec["time"] + 3600.0)
    # the forecast itself, member by member over the horizon, in prediction.nc: the decision's numbers come from it
    pred = _open(letkf / "prediction.nc")
    assert pred["eta_at_harbour"].dims == ("member", "time") and pred.sizes["member"] == N_MEMBERS
    assert pred["eta_at_harbour"].attrs["units"] == "m" and pred.attrs["twin_kind"] == "prediction"
    assert pred["time"].values[-1] == pytest.approx(dec["time"] + 3600.0)
    at_horizon = pred["eta_at_harbour"].values[:, -1]
    assert np.quantile(at_horizon, 0.95) == pytest.approx(float(q["0.95"]), rel=1e-12)
    assert np.mean(at_horizon > limit) == pytest.approx(p)
    vdec = json.loads((var / "decision.json").read_text())  # from the Laplace samples of the last window
    assert vdec["members"] == 4 and set(vdec["qois"]) == {"eta_at_harbour", "u_at_airport"}

    # the report: generic panels plus the atmosphere panels (network, RMSE vs free run, site fan)
    assert main(["report", str(run)]) == 0
    index = run / "report" / "index.html"
    text = index.read_text()
    for title in ("Observing network over the truth", "Analysis vs free-run RMSE per cycle, with spread",
                  "Site forecast: fan, threshold and exceedance probability"):
        assert title in text
    for png in ("atmosphere_network.png", "atmosphere_rmse.png", "atmosphere_site_fan.png"):
        assert (run / "report" / letkf.name / png).is_file()
    # each network's observation errors in the units of what it observes (the table averaged h in m with u in m/s)
    assert "<td>synop</td><td>12</td><td>36</td><td>h 0.3 m, u 0.5 m/s, v 0.5 m/s</td>" in text
    assert re.search(r"<td>altimeter</td><td>\d+</td><td>\d+</td><td>h 0.3 to 0.6 m \(nadir to edge\)</td>", text)
    # the verdicts: each experiment's exceedance probability at the harbour, 1 h ahead; the campaign verdict
    # compares the two methods and, where they disagree, trusts the one with calibration evidence (the LETKF's
    # spread/skill; the 4D-Var analysis has no ensemble spread per cycle)
    p_letkf = dec["qois"]["eta_at_harbour"]["exceedance"]
    campaign = text[text.index("Campaign verdict"):text.index("</div>", text.index("Campaign verdict"))]
    # the probability with its sampling error from the members (100 % +- 15 % from 4 members)
    assert re.search(rf"P\(eta_at_harbour &gt; {float(next(iter(p_letkf))):g} m\) = "
                     rf"{100 * next(iter(p_letkf.values())):.0f} % \(± [0-9.]+ %\) 1 h after the last analysis",
                     campaign), campaign
    assert ("The methods agree" in campaign) or (f"Trust <b>{letkf.name}</b>" in campaign)
    from browser import check_report

    seen = check_report(index, "atmosphere_report")
    # two experiments' verdicts and the campaign's; every figure decodes
    assert seen["images"] >= 6 and seen["loaded"] == seen["images"] and seen["verdicts"] == 3
    assert (run / "report" / var.name / "atmosphere_rmse.png").is_file()

    # the free run the report computed: starts at the background mean, drifts with the prior drag; after the burn-in
    # the LETKF's analysis error is well below it (measured 0.22 of it)
    free = _open(letkf / "free_run.nc")
    rf = free["rmse_free"].values
    assert np.isfinite(rf[:N_CYCLES + 1]).all() and np.isnan(rf[N_CYCLES + 1:]).all()
    assert rf[N_CYCLES] > rf[0]
    assert ra[BURN_IN:].mean() < 0.4 * rf[BURN_IN + 1:N_CYCLES + 1].mean(), (ra, rf)
    truth_h = free["truth_eta_at_harbour"].values
    assert truth_h.size == N_CYCLES + 1 + len(fan["times"])
    # the nature run's harbour level at the horizon is a plausible member of the forecast (inside a wide band)
    lo, hi = float(q["0.05"]), float(q["0.95"])
    assert lo - 3 * (hi - lo) - 1.0 < truth_h[-1] < hi + 3 * (hi - lo) + 1.0
