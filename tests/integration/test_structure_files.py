"""The structure flagship fed from observation files (configs/structure_files.yaml), at reduced size through ``twin
run`` on one rank: the coupled campaign (atmosphere -> mast) observed through files, the drifting gauge included.

* Round trip: the flagship's twin experiment (12 members, 6 coupling windows), observed by its 8 strain gauges (gauge
  3 drifting from cycle 2) and, for a ``type: file`` network of a component's state variable, by sea level at two
  sites of the atmosphere, writes its observations.nc; the same campaign fed only with that file (a
  ``strain_gauge_readings`` network on the mast and a ``type: file`` network on the atmosphere) gives its ETKF
  analyses, damage ensembles, guardrail flags (gauge 3 excluded in the same cycle) and maintenance decision
  bitwise. Bitwise, not to round-off: the file holds the float64 readings and errors the twin experiment assimilated,
  at the float64 positions and directions it used, so each network's operator rows are the synthetic ones bit for
  bit (tests/unit/test_strain_readings.py) and the analyses see the same numbers in the same order.
* The shipped variant: configs/structure_files.yaml validates, reads examples/observations/structure_observations.nc
  (the flagship's export, 12 cycles) and runs without truth at reduced size: diagnostics in observation space, gauge
  3 excluded, the decision from the posterior, the report drawn (damage posterior against its prior, no truth).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
FLAGSHIP, VARIANT = ROOT / "configs" / "structure.yaml", ROOT / "configs" / "structure_files.yaml"
MEMBERS, CYCLES, DRIFTING = 12, 6, 3  # 12 members: with 8 the LETKF drags a healthy gauge along with the drift
SEA_LEVEL = {"type": "points", "name": "synop", "model": "atmosphere", "variable": "h",
             "points": [[16, 32], [40, 20.5]], "units": "km", "error_std": 0.05}


def _reduced(source: Path, directory: Path, name: str, observations: list | None = None) -> Path:
    cfg = yaml.safe_load(source.read_text())
    cfg["assimilation"]["N"] = MEMBERS
    cfg["assimilation"]["schedule"]["cycles"] = CYCLES
    cfg["timeline"]["end"] = 2.0 * CYCLES
    cfg["decision"]["structure"]["random_placements"] = 20
    cfg["resources"] = {"type": "local", "ranks": 1}
    cfg["outputs"]["checkpoint_every"] = 1  # every cycle's checkpoint, compared between the runs
    if observations is not None:
        cfg["assimilation"]["observations"] = observations
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(path: Path, out: Path) -> Path:
    from twin.cli import main

    assert main(["run", str(path), "-o", str(out), "--quiet"]) == 0
    (exp,) = [p for p in (out / "experiments").iterdir() if p.is_dir()]
    return exp


def _flags(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "flags.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("structure_files")
    flagship = yaml.safe_load(FLAGSHIP.read_text())
    gauges = flagship["assimilation"]["observations"]
    twin = _run(_reduced(FLAGSHIP, tmp, "twin", gauges + [SEA_LEVEL]), tmp / "twin")
    shutil.copy(twin / "observations.nc", tmp / "measured.nc")
    files = [{"type": "strain_gauge_readings", "name": "gauges", "model": "mast", "file": "measured.nc",
              "strain": "obs_mast_strain", "error": "obs_mast_strain_error", "angle": "obs_mast_strain_angle"},
             {"type": "file", "name": "synop", "model": "atmosphere", "file": "measured.nc",
              "variables": {"h": {"name": "obs_atmosphere_h", "error": "obs_atmosphere_h_error", "units": "m"}}}]
    measured = _run(_reduced(FLAGSHIP, tmp, "measured", files), tmp / "measured")
    return twin, measured, tmp / "measured.nc"


def test_the_exported_file_holds_the_drifting_gauge_as_observed(round_trip):
    from twin.io.checkpoint import CheckpointReader

    twin, _, exported = round_trip
    with CheckpointReader(twin / "observations.h5") as r:
        ys = r.read_array("observations")
    with netCDF4.Dataset(exported) as nc:
        assert nc.featureType == "timeSeries" and nc.twin_networks_not_written == "none"
        strain = np.asarray(nc["obs_mast_strain"][:])
        assert strain.shape == (8, CYCLES) and nc["obs_mast_strain"].units == "1"
        assert np.array_equal(strain, ys[:, :8].T) and np.array_equal(nc["obs_atmosphere_h"][:], ys[:, 8:].T)
        assert np.array_equal(nc["obs_mast_strain_angle"][:], np.full(8, 90.0))
        assert np.array_equal(nc["time"][:], 2.0 * np.arange(1, CYCLES + 1))
    # gauge 3 reads 5 microstrain more every cycle from cycle 2 on: its reading climbs ~5e-6 per cycle
    assert np.all(np.diff(strain[DRIFTING, 2:]) > 3e-6)


def test_the_files_give_the_twin_experiments_analyses_bitwise(round_trip):
    import xarray as xr

    from twin.campaign import layout
    from twin.io.checkpoint import CheckpointReader

    twin, measured, exported = round_trip
    with xr.open_dataset(twin / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(measured / "posterior.nc", decode_times=False) as b:
        assert set(a.data_vars) == set(b.data_vars) and "mast_u_x" in a
        for v in a.data_vars:
            assert np.array_equal(a[v].values, b[v].values), v
    cycles = layout.checkpoint_cycles(twin)
    assert cycles == layout.checkpoint_cycles(measured) and len(cycles) == CYCLES + 1
    for k in cycles:
        with CheckpointReader(layout.checkpoint_file(twin, k)) as r, \
                CheckpointReader(layout.checkpoint_file(measured, k)) as s:
            assert np.array_equal(r.read_field("mast.damage", "parameters"),
                                  s.read_field("mast.damage", "parameters")), k
    with xr.open_dataset(twin / "diagnostics.nc", decode_times=False) as a, \
            xr.open_dataset(measured / "diagnostics.nc", decode_times=False) as b:
        for v in ("spread", "spread_a", "n_obs_active", "cusum_max", "innovation_chi2"):
            assert np.array_equal(a[v].values, b[v].values), v
        assert "rmse" in a and "rmse" not in b  # the file campaign has no truth
    # the same flags, the same gauge excluded in the same cycle (spread/skill too: a twin experiment measures it
    # against its truth in state space, a campaign without truth in observation space in units of each sensor's
    # error, so that the sea level's 0.05 m does not swamp the strains' 5e-7; twin/decision/guardrails.py)
    assert _flags(twin) == _flags(measured) and len(_flags(twin)) >= 1
    # the drifting gauge excluded; healthy gauges may be too: the sea-level network added here sits at the mast's
    # site, and the LETKF's local update of the atmosphere there (1 km in its km) disturbs the wind loading the mast
    # (the flagship without it excludes gauge 3 alone: test_flagship_structure.py and the shipped variant below)
    drift = {f["sensor"]: f for f in _flags(measured) if f["kind"] == "sensor_drift"}
    assert drift[DRIFTING]["action"] == "excluded" and 2 <= drift[DRIFTING]["cycle"] <= 5
    a, b = (json.loads((e / "decision.json").read_text())["structure"] for e in (twin, measured))
    assert a["maintenance"] == b["maintenance"] and a["gauges"] == b["gauges"]
    assert a["sensor_placement"] == b["sensor_placement"]
    with CheckpointReader(measured / "observations.h5") as r:
        assert "truth" not in r.array_names
        records = r.meta["files"]
    assert [(f["network"], Path(f["file"]).name) for f in records] == [("gauges", "measured.nc"),
                                                                       ("synop", "measured.nc")]
    assert [f["qc"]["accepted"] for f in records] == [8 * CYCLES, 2 * CYCLES]
    assert records[0]["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()


def test_the_shipped_variant_runs_without_truth(tmp_path):
    import xarray as xr

    from twin.cli import main
    from twin.io.checkpoint import CheckpointReader

    data = yaml.safe_load(VARIANT.read_text())
    (net,) = data["assimilation"]["observations"]
    shipped = (VARIANT.parent / net["file"]).resolve()
    assert shipped == ROOT / "examples" / "observations" / "structure_observations.nc"
    assert shipped.stat().st_size < 100_000
    with netCDF4.Dataset(shipped) as nc:
        assert nc.featureType == "timeSeries" and nc.twin_networks_not_written == "none"
        assert nc["obs_mast_strain"].shape == (8, 12)
        strain = np.asarray(nc["obs_mast_strain"][:])
    assert np.all(np.diff(strain[DRIFTING, 2:]) > 3e-6)  # the drifting gauge, as the flagship observed it
    # the variant is the flagship with its gauges replaced by the file: nothing else changes
    flagship = yaml.safe_load(FLAGSHIP.read_text())
    for d in (data, flagship):
        d.pop("campaign")
        d["assimilation"].pop("observations")
    assert data == flagship
    assert main(["validate", str(VARIANT)]) == 0

    net = dict(net, file=str(shipped))  # the copy lives elsewhere: the shipped file by its absolute path
    exp = _run(_reduced(VARIANT, tmp_path, "variant", [net]), tmp_path / "run")
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        assert "rmse" not in ds and ds.sizes["time"] == CYCLES
        chi2 = ds["chi2_per_dof"].values
        assert np.all(np.isfinite(chi2)) and np.all(chi2 > 0)
        active = ds["n_obs_active"].values
    drift = [f for f in _flags(exp) if f["kind"] == "sensor_drift"]
    assert [(f["sensor"], f["action"]) for f in drift] == [(DRIFTING, "excluded")]
    assert active[0] == 8 and active[-1] == 7
    d = json.loads((exp / "decision.json").read_text())
    assert d["members"] == MEMBERS and d["time"] == pytest.approx(2.0 * CYCLES)
    m = d["structure"]["maintenance"]
    assert 0.0 <= m["exceedance_probability"] <= 1.0 and len(m["peak_stress_samples"]) == MEMBERS
    assert d["structure"]["gauges"]["points"] == yaml.safe_load(FLAGSHIP.read_text())["assimilation"][
        "observations"][0]["points"]
    with CheckpointReader(exp / "observations.h5") as r:
        assert "truth" not in r.array_names and "truth_parameters" not in r.meta
        (record,) = r.meta["files"]
    assert Path(record["file"]) == shipped
    assert record["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert record["qc"]["accepted"] == 8 * CYCLES and record["qc"]["outside_time"] == 8 * (12 - CYCLES)
    assert main(["report", str(tmp_path / "run")]) == 0
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "Damage field: posterior mean and standard deviation, gauges (measured data: no truth)" in html
    assert "Guardrail flags of the gauges" in html and "Fit to the observations" in html
    assert "could not be drawn" not in html and "no truth to compare the damage field with" in html


@pytest.mark.parametrize("variable, index, value, expect", [
    ("obs_mast_strain_y", 0, 8.0000001, "lies outside the structure"),
    ("obs_mast_strain_angle", 1, 1e300, "its gauge direction 1e+300 degree is more than a turn"),
])
def test_a_broken_gauge_is_refused_before_anything_runs(tmp_path, capsys, variable, index, value, expect):
    """A gauge off the mast, or a direction of 1e300 degrees, in the readings file: ``twin validate`` and ``twin run``
    read the file before anything runs (the network's ``check``) and refuse it in one line at the network's key, exit
    status 2, no experiment made. Found by probes: the file was read only when the experiment started, which then
    failed (exit 1) and also warned that the campaign's own, right solver options changed nothing; a direction of
    1e300 degrees ran with an overflow warning."""
    from twin.cli import main

    data = yaml.safe_load(VARIANT.read_text())
    (net,) = data["assimilation"]["observations"]
    broken = tmp_path / "broken.nc"
    shutil.copy((VARIANT.parent / net["file"]).resolve(), broken)
    with netCDF4.Dataset(broken, "a") as nc:
        nc.set_auto_mask(False)
        values = nc[variable][:]
        values[index] = value
        nc[variable][:] = values
    path = _reduced(VARIANT, tmp_path, "broken", [dict(net, file=str(broken))])
    for command in (["validate", str(path)], ["run", str(path), "-o", str(tmp_path / "run")]):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]  # one line, after run's log line
        assert "assimilation.observations[0].file: " in line and expect in line and "broken.nc" in line, err
        assert "Traceback" not in err, err
    assert not (tmp_path / "run" / "experiments").exists()
