"""``experiments.replicates``: one set-up repeated over independent truths (campaign.seed, seed+1, ...; the estimable
forcing drawn from its prior in each), and the report's calibration over them, checked against the files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from campaign_case import l96_campaign
from twin.campaign import layout
from twin.core.errors import ConfigError

pytestmark = pytest.mark.timeout(300)

K = 6
LIMIT = 18.0  # the decision's threshold of the mean energy <x^2>/2, near its median over these truths (18.3)
CAMPAIGN = l96_campaign("reps", n=12, N=14, every=1, inflation=1.05, cycles="10, burn_in: 3",
                        extra=f"experiments: {{replicates: {K}}}\ndecision: {{qois: [energy], horizon: 0.2, "
                              f"exceedance_limits: {{energy: {LIMIT}}}}}\n")


def _twin(*args, cwd):
    out = subprocess.run([sys.executable, "-m", "twin.cli", *map(str, args)], capture_output=True, text=True,
                         timeout=280, cwd=cwd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def test_replicates_draw_independent_truths_and_the_report_measures_calibration(tmp_path):
    import xarray as xr

    from twin.io.checkpoint import CheckpointReader

    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    _twin("run", "c.yaml", "-o", "run", cwd=tmp_path)
    _twin("report", "run", cwd=tmp_path)
    run = tmp_path / "run"
    dirs = layout.experiment_dirs(run)
    assert [d.name for d in dirs] == [f"seed-{s}" for s in range(1, K + 1)]
    inside, inside50, truths, coverage = 0, 0, [], []
    for d in dirs:
        with CheckpointReader(d / "observations.h5") as r:
            truth = float(r.meta["truth_parameters"]["F"])
        with CheckpointReader(layout.checkpoint_file(d, max(layout.checkpoint_cycles(d)))) as r:
            samples = np.asarray(r.scalar_parameters["F"], dtype=float)
        lo, hi = np.quantile(samples, [0.05, 0.95])
        inside += int(lo <= truth <= hi)
        q25, q75 = np.quantile(samples, [0.25, 0.75])
        inside50 += int(q25 <= truth <= q75)
        truths.append(truth)
        with xr.open_dataset(d / "diagnostics.nc", decode_times=False) as ds:
            coverage.append(float(ds["coverage_90_a"].values))
    # the truths are drawn from the prior N(8, 0.5), one per replicate, none the configured value
    assert len(set(truths)) == K and 8.0 not in truths and np.std(truths) > 0.1
    (cal,) = json.loads((run / "report" / "calibration.json").read_text())
    assert cal["replicates"] == [d.name for d in dirs]
    assert cal["coverage"]["parameter F"]["inside"] == inside and cal["coverage"]["parameter F"]["total"] == K
    assert cal["scores"]["coverage_90_a"] == pytest.approx(np.mean(coverage))
    assert len(cal["ranks"]["F"]) == K
    html = (run / "report" / "index.html").read_text()
    assert "Calibration over the replicates" in html and f"{K} truths" in html
    assert cal["coverage"]["QoI energy at the horizon"]["total"] == K
    # the 50 % intervals and the ranks of the QoI truths among the members' forecasts (prediction.nc)
    assert cal["coverage50"]["parameter F"]["inside"] == inside50 and cal["coverage50"]["parameter F"]["total"] == K
    assert cal["coverage50"]["QoI energy at the horizon"]["total"] == K and len(cal["ranks"]["QoI energy"]) == K
    assert all(0.0 <= r <= 1.0 for r in cal["ranks"]["QoI energy"]) and "50 % interval" in html
    # the exceedance probability of the decision's threshold over the truths: the forecast is the decision's own
    # P(energy > 18), the outcome the truth at the horizon above 18; 5 quantiles of the truths as further thresholds
    ex = cal["exceedance"]["energy"]
    forecasts = [json.loads((d / "decision.json").read_text())["qois"]["energy"]["exceedance"]["18"] for d in dirs]
    horizon = []
    for d in dirs:
        with xr.open_dataset(d / "free_run.nc", decode_times=False) as ds:
            horizon.append(float(ds["truth_energy"].values[-1]))
    outcomes = [int(t > LIMIT) for t in horizon]
    assert 0 < sum(outcomes) < K  # the threshold splits these truths: the climatology is not trivially perfect
    (decided, *quantiles) = ex["thresholds"]
    assert ex["limits"] == [LIMIT] and decided["kind"] == "decision" and ex["replicates"] == cal["replicates"]
    assert decided["forecasts"] == forecasts and decided["outcomes"] == outcomes
    base = np.mean(outcomes)
    assert decided["brier"] == pytest.approx(np.mean((np.array(forecasts) - outcomes) ** 2))
    assert decided["climatology"] == pytest.approx(base * (1 - base))
    assert [q["threshold"] for q in quantiles] == pytest.approx(np.quantile(horizon, [0.1, 0.25, 0.5, 0.75, 0.9]))
    assert sum(b["count"] for b in ex["pooled"]["reliability"]) == 6 * K
    assert f"Brier score over {K} truths" in html and (run / "report" / "reliability_0.png").is_file()
    # the truth at the horizon is the nature run continued with ITS drawn forcing, not the configured one
    from mpi4py import MPI

    from twin.config.loader import load_campaign
    from twin.models.registry import create_model

    d = dirs[0]
    with CheckpointReader(d / "observations.h5") as r:
        last = r.read_array("truth")[-1]
        t_end = float(r.read_array("times")[-1])
    with xr.open_dataset(d / "free_run.nc", decode_times=False) as ds:
        recorded = float(ds["truth_energy"].values[-1])
    cfg = load_campaign(d / "experiment.yaml").config
    model = create_model("l96", cfg.models["l96"], MPI.COMM_SELF)
    try:
        model.set_parameter("F", truths[0])
        x = model.create_state()
        model.grid.set_global(last, x)
        model.advance(x, t_end, t_end + 0.2)
        assert recorded == pytest.approx(model.qoi(x, t_end + 0.2)["energy"].value, rel=1e-10)
        x.destroy()
    finally:
        model.destroy()


def test_replicates_and_a_seed_matrix_are_refused_together(tmp_path):
    from twin.config.loader import load_campaign

    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.replace(f"replicates: {K}", f"replicates: {K}, matrix: {{campaign.seed: [1, 2]}}"))
    with pytest.raises(ConfigError, match="the matrix varies campaign.seed already"):
        load_campaign(path)


def test_replicates_of_a_coupled_twin_draw_field_truths_on_the_field_grid(tmp_path):
    """The structure twin's damage field (logit-transformed, on the mast's node grid, not the coupled state's):
    each replicate's true damage is a draw of its prior inside (0, 1), different per replicate."""
    import yaml

    from campaign_case import structure_campaign
    from twin.io.checkpoint import CheckpointReader

    path, data = structure_campaign(tmp_path, members=6, cycles=2, placements=4)
    data["experiments"] = {"replicates": 2}
    data.pop("decision", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _twin("run", path, cwd=tmp_path)
    fields = []
    for d in layout.experiment_dirs(tmp_path / "run"):
        with CheckpointReader(d / "observations.h5") as r:
            fields.append(np.asarray(r.meta["truth_parameters"]["mast.damage"], dtype=float))
    assert len(fields) == 2 and fields[0].size == 33 * 5
    assert all(np.all((f > 0) & (f < 1)) for f in fields) and np.abs(fields[0] - fields[1]).max() > 0.05
    # the report's calibration covers the field: the mean fraction of nodes inside the members' 90 % band
    _twin("report", tmp_path / "run", cwd=tmp_path)
    (cal,) = json.loads((tmp_path / "run" / "report" / "calibration.json").read_text())
    expected = []
    for d, truth in zip(layout.experiment_dirs(tmp_path / "run"), fields):
        with CheckpointReader(layout.checkpoint_file(d, max(layout.checkpoint_cycles(d)))) as r:
            alive = r.read_array("alive").astype(bool)
            samples = np.asarray(r.read_field("mast.damage", "parameters"))[alive].reshape(int(alive.sum()), -1)
        lo, hi = np.quantile(samples, [0.05, 0.95], axis=0)
        expected.append(np.mean((truth >= lo) & (truth <= hi)))
    assert cal["scores"]["mast.damage(x) coverage"] == pytest.approx(np.mean(expected))
