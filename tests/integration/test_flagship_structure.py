"""The structure flagship campaign (configs/structure.yaml) in a reduced size: a coupled atmosphere -> mast ensemble
whose damage field is identified from strain gauges, a drifting gauge caught and excluded by the guardrails, the
maintenance decision and the sensor-placement study, NetCDF outputs and the report; and the cluster variant differs
only in resources and sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from campaign_case import structure_campaign
from twin.campaign import layout

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
CONFIG, CLUSTER = ROOT / "configs" / "structure.yaml", ROOT / "configs" / "structure_cluster.yaml"
#: the keys the cluster variant may change (besides resources)
SIZE_KEYS = [("models", "atmosphere", "grid", "shape"), ("models", "mast", "grid", "shape"), ("assimilation", "N"),
             ("assimilation", "schedule", "cycles"), ("timeline", "end")]
DRIFTING = 3


def _drop(d: dict, path: tuple) -> None:
    for key in path[:-1]:
        d = d[key]
    d.pop(path[-1])


def test_cluster_variant_changes_only_resources_and_sizes():
    from twin.config.loader import load_campaign

    local, cluster = (yaml.safe_load(p.read_text()) for p in (CONFIG, CLUSTER))
    for d in (local, cluster):
        d.pop("resources")
        for path in SIZE_KEYS:
            _drop(d, path)
    assert local == cluster
    assert load_campaign(CLUSTER).config.resources.type == "slurm"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The campaign with 12 members and 6 cycles, run through the CLI on one rank, then its report."""
    from twin.cli import main

    tmp = tmp_path_factory.mktemp("structure")
    path, cfg = structure_campaign(tmp, members=12, cycles=6, placements=50)
    assert main(["run", str(path)]) == 0
    assert main(["report", str(tmp / "run")]) == 0
    return tmp / "run", cfg


def _exp(run_dir: Path) -> Path:
    (exp,) = [p for p in (run_dir / "experiments").iterdir() if p.is_dir()]
    return exp


def test_outputs_and_report(run):
    import xarray as xr

    run_dir, cfg = run
    exp = _exp(run_dir)
    for name in layout.OUTPUTS:
        assert (exp / name).is_file(), name
    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as ds:
        # the coupled state: each component's fields on its own coordinates, atmosphere 16 x 16 cells of 4 km,
        # mast 5 x 33 nodes 0.0625 m and 0.25 m apart (issue #21: no index axis of the concatenated state)
        assert "state" not in ds
        assert ds["atmosphere_h"].shape == (12, 7, 16, 16) and ds["atmosphere_h"].attrs["units"] == "m"
        assert ds["mast_u_x"].shape == (12, 7, 33, 5) and ds["mast_u_x"].dims[2:] == ("mast_y", "mast_x")
        np.testing.assert_allclose(ds["mast_y"].values, np.linspace(0.0, 8.0, 33))
        np.testing.assert_allclose(ds["atmosphere_x"].values, 2000.0 + 4000.0 * np.arange(16))
    # the forecast fields over the decision's horizon, though the decision is the structure kind's own
    decision = cfg["decision"]
    with xr.open_dataset(exp / "horizon.nc", decode_times=False) as ds:
        assert ds["mast_u_x_mean"].dims[1:] == ("mast_y", "mast_x") and "atmosphere_h_spread" in ds
        np.testing.assert_allclose(float(ds["forecast_period"].values[-1]), decision["horizon"], rtol=1e-9)
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        for v in ("rmse", "spread", "cusum_max", "n_obs_active", "parameter_mast.damage"):
            assert v in ds and ds[v].size == 6, v
    index = run_dir / "report" / "index.html"
    assert index.is_file()
    text = index.read_text()
    for title in ("Damage field", "Guardrail flags of the gauges", "Maintenance decision", "Sensor placement"):
        assert title in text
    assert "could not be drawn" not in text
    # the verdict: inspect or not, with the exceedance probability and the stress in MPa
    d = json.loads((exp / "decision.json").read_text())["structure"]["maintenance"]
    block = text[text.index('<div class="verdict">'):]
    block = block[:block.index("</div>")]
    assert ("Inspect the mast" if d["recommend_inspection"] else "No inspection needed") in block
    assert f"{100 * d['exceedance_probability']:.0f}" in block and "MPa (90 % interval" in block
    # how sure: the damage's calibration and the state's, which the stress forecast is made from
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        ratio = float(ds["spread_a"]) / float(ds["rmse_a"])
        coverage = float(ds["coverage_90_a"])
    assert "true damage inside the posterior 90 % band" in block
    assert (f"the structure&#x27;s state: truth inside the 90 % ensemble interval at {100 * coverage:.0f} % of the "
            f"state entries after the burn-in; ensemble spread/skill {ratio:.2f}") in block, block
    from browser import check_report

    seen = check_report(index, "structure_report")
    assert seen["images"] >= 4 and seen["loaded"] == seen["images"] and seen["verdicts"] >= 1


def test_damage_patch_found_with_calibrated_spread(run):
    from twin.kinds.structure.report import damage_fields, damage_summary, gauge_nodes, node_shape

    exp = _exp(run[0])
    fields = damage_fields(exp, "mast")
    truth, mean, sd = fields["truth"], fields["posterior_mean"], fields["posterior_sd"]
    err = {k: float(np.sqrt(np.mean((fields[f"{k}_mean"] - truth) ** 2))) for k in ("prior", "posterior")}
    st = json.loads((exp / "decision.json").read_text())["structure"]
    assert st["nodes"] == [5, 33]
    gauges = [p for i, p in enumerate(st["gauges"]["points"]) if i != DRIFTING]   # the excluded gauge sees nothing
    s = damage_summary(fields, gauge_nodes(node_shape(mean.size, st["extent"], st["nodes"]), st["extent"], gauges))
    print("damage RMS error:", err, "summary:", s)
    assert err["posterior"] < err["prior"]
    # the damaged patch (15 nodes, truth 0.45, on the windward face at 1.5 m) at its strength: issue 22 asks for 25 %
    # at full size (16 members, 12 cycles: benchmarks/bench_structure.py flagship); this reduced run (12 members, 6
    # cycles) gets within 30 % (0.24 of 0.45, 47 %, with the ETKF, Crank-Nicolson and inflation 1.1 + RTPS 0.7)
    assert s["patch_nodes"] == 15 and s["patch_truth"] == pytest.approx(0.45)
    assert abs(s["patch_ratio"] - 1.0) <= 0.30
    # the most damaged node of the posterior mean lies within 0.5 m of the patch centre (0, 1.5) (nodes 5 x 33)
    j, i = divmod(int(np.argmax(mean)), 5)
    assert np.hypot(i * 0.0625, j * 0.25 - 1.5) <= 0.5
    # sharper than the prior where the gauges see the patch and overall (the prior inflation and RTPS 0.7 left it
    # 1.7 times the prior's there); covering the truth (mean +- 2 sd) at the patch nodes the gauges see. The sound
    # nodes (true d = 0, outside the support of a prior of logit d) are not a coverage test: calibration is measured
    # over truths drawn from the prior (benchmarks/bench_replicates.py)
    assert s["sd_ratio_patch_seen"] < 1.0 and sd.mean() < fields["prior_sd"].mean()
    seen_patch = gauge_nodes((33, 5), st["extent"], gauges) & (truth > 0.3)
    assert seen_patch.sum() == 4 and np.all(np.abs(mean - truth)[seen_patch] <= 2 * sd[seen_patch])


def test_drifting_gauge_flagged_and_excluded(run):
    import xarray as xr

    exp = _exp(run[0])
    flags = [json.loads(line) for line in (exp / "flags.jsonl").read_text().splitlines()]
    drift = {f["sensor"]: f for f in flags if f["kind"] == "sensor_drift"}
    assert DRIFTING in drift and drift[DRIFTING]["action"] == "excluded"
    # no healthy gauge dragged along: the drift is caught at its first reading (cycle 2), before the analysis
    # absorbs it into the patch and the healthy gauge beside it (2) alarms at the patch it then misses
    assert list(drift) == [DRIFTING]
    k = drift[DRIFTING]["cycle"]
    assert k == 2
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        active = ds["n_obs_active"].values
    # the gauge leaves the analysis of the cycle it alarms in (n_obs_active counts the gauges assimilated)
    assert active[0] == 8 and active[k] < active[k - 1] and active[-1] <= 7


def test_decision_record_consistent(run):
    run_dir, cfg = run
    d = json.loads((_exp(run_dir) / "decision.json").read_text())
    st = d["structure"]
    m = st["maintenance"]
    samples = np.asarray(m["peak_stress_samples"])
    assert samples.size == d["members"] == 12 and np.all(samples > 0)
    assert m["exceedance_probability"] == pytest.approx(np.mean(samples > m["limit_Pa"]))
    assert m["recommend_inspection"] == (m["exceedance_probability"] >= m["threshold"])
    assert m["limit_Pa"] == pytest.approx(cfg["decision"]["structure"]["limit"]["value"] * 1e6)
    p = st["sensor_placement"]
    greedy, median = np.asarray(p["greedy_sd"]), np.asarray(p["random_sd_median"])
    assert greedy[0] == pytest.approx(p["prior_sd"]) and np.all(np.diff(greedy) <= 1e-12 * greedy[0])
    # greedy is at least as good as the median random layout at every count, and strictly better somewhere
    assert np.all(greedy[1:] <= median[1:] * (1 + 1e-9)) and np.any(greedy[1:] < 0.95 * median[1:])
    assert len(st["gauges"]["points"]) == p["n_deployed"] == 8
