"""The flagship variants fed only from shipped observation files (configs/*_files.yaml), at reduced size through
``twin run``: no truth, so the diagnostics are in observation space (chi^2 per degree of freedom, no RMSE), the
decision comes from the posterior alone, and observations.h5 records the shipped file with its SHA-256 and QC counts.

The atmosphere variant (configs/atmosphere_files.yaml) reads examples/observations/atmosphere_observations.nc, the
sea level and winds its flagship's LETKF twin experiment exported (h at 12 stations and 165 altimeter footprints, u
and v at the 12 stations and 72 scatterometer footprints, every 30 min for 12 h). Reduced here to 16 members, 4 cycles (2 h) and a 1 h forecast, on the flagship's 32 x 32 grid (on a coarser
grid, the observed flow being the 32 x 32 one, every member failed after the first analysis): the file's observations after the reduced campaign's end are counted ``outside_time``, not used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
ATMOSPHERE = ROOT / "configs" / "atmosphere_files.yaml"
N_MEMBERS, N_CYCLES, EVERY, DT = 16, 4, 6, 300.0


def _shipped(campaign: Path, data: dict) -> Path:
    return (campaign.parent / data["assimilation"]["observations"][0]["file"]).resolve()


def _reduced_atmosphere(tmp_path: Path) -> tuple[Path, Path]:
    data = yaml.safe_load(ATMOSPHERE.read_text())
    shipped = _shipped(ATMOSPHERE, data)
    a = data["assimilation"]
    a["N"] = N_MEMBERS
    a["schedule"]["cycles"] = N_CYCLES
    a["observations"][0]["file"] = str(shipped)  # the copy lives elsewhere: the shipped file by its absolute path
    data["experiments"]["min_members"] = 4
    data["decision"]["horizon"] = 3600
    data["decision"]["guardrails"]["window"] = 2
    data["decision"]["guardrails"]["warmup"] = 1
    data["resources"] = {"type": "local", "ranks": 1, "workers": 1}
    path = tmp_path / "atmosphere_files.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, shipped


def test_atmosphere_files_variant_runs_from_the_shipped_file(tmp_path):
    import xarray as xr

    from twin.cli import main
    from twin.io.checkpoint import CheckpointReader

    path, shipped = _reduced_atmosphere(tmp_path)
    assert shipped.stat().st_size < 200_000
    with netCDF4.Dataset(shipped) as nc:
        assert nc.featureType == "timeSeries"
        # every network written: the winds too (the file network observes them on the C-grid's faces)
        assert nc.twin_networks_not_written == "none"
        times = np.asarray(nc["time"][:], dtype=float)
        values = np.concatenate([np.ma.filled(nc[f"obs_{v}"][:].astype(float), np.nan) for v in ("h", "u", "v")])
    end = N_CYCLES * EVERY * DT
    inside = np.isfinite(values[:, times <= end]).sum()
    outside = np.isfinite(values[:, times > end]).sum()
    assert inside == (177 + 2 * 84) * N_CYCLES

    assert main(["validate", str(ATMOSPHERE)]) == 0
    run = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run), "--quiet"]) == 0
    exp = run / "experiments" / "atmosphere_files"
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        assert ds.sizes["time"] == N_CYCLES
        assert "rmse" not in ds.data_vars  # no truth
        chi2 = ds["chi2_per_dof"].values
        assert chi2.shape == (N_CYCLES,) and np.all(np.isfinite(chi2)) and np.all(chi2 > 0)
        assert np.all(ds["n_obs"].values == 177 + 2 * 84)
    dec = json.loads((exp / "decision.json").read_text())
    assert dec["members"] == N_MEMBERS
    assert dec["time"] == pytest.approx(end)
    harbour = dec["qois"]["eta_at_harbour"]
    assert 0.0 <= harbour["exceedance"]["4"] <= 1.0
    with CheckpointReader(exp / "observations.h5") as r:
        assert "truth" not in r.array_names
        (record,) = r.meta["files"]
    assert Path(record["file"]) == shipped
    assert record["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    qc = record["qc"]
    assert qc["accepted"] == inside and qc["outside_time"] == outside
    # the outputs it fed name it too, with its SHA-256 and QC counts (their provenance)
    for output in ("posterior.nc", "diagnostics.nc", "forecast.nc"):
        with netCDF4.Dataset(exp / output) as nc:
            (named,) = json.loads(nc.twin_observation_files)
        assert named == record, output
    assert sum(qc.values()) == inside + outside
    # the report draws the network over the posterior mean (there is no truth) and judges the fit
    assert main(["report", str(run)]) == 0
    html = (run / "report" / "index.html").read_text()
    assert "Observing network over the posterior mean" in html and "Fit to the observations" in html
    # h in m and u, v in m/s with errors per observation in the file: no average across units
    assert "<td>per observation, from the file</td>" in html
