"""A live coupled twin: the structure flagship fed from its gauge file (configs/structure_files.yaml: a coupled wind ->
mast ETKF, strain gauges read from a CF file on the mast component) run on the first three cycles' readings, then given
the next three as they arrive (``twin assimilate``), ends bitwise where one campaign over all six cycles ends: the
same damage posterior, the same guardrail flags (gauge 3's drift excluded at cycle 3, after the delivery's first
cycle) and the same decision.
"""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
from live_case import ok as _ok

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
VARIANT = ROOT / "configs" / "structure_files.yaml"
SHIPPED = ROOT / "examples" / "observations" / "structure_observations.nc"
MEMBERS = 8


def _config(directory: Path, name: str, file: str, cycles: int) -> None:
    cfg = yaml.safe_load(VARIANT.read_text())
    cfg["assimilation"]["N"] = MEMBERS
    cfg["assimilation"]["schedule"]["cycles"] = cycles
    cfg["assimilation"]["observations"][0]["file"] = file
    cfg["timeline"]["end"] = 2.0 * cycles
    cfg["decision"]["structure"]["random_placements"] = 20
    cfg["resources"] = {"type": "local", "ranks": 1}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _cut(path: Path, columns: slice) -> Path:
    """The shipped file's readings of ``columns`` (cycles), written with netCDF4 in the same layout."""
    with netCDF4.Dataset(SHIPPED) as src, netCDF4.Dataset(path, "w") as dst:
        dst.setncatts({a: src.getncattr(a) for a in ("Conventions", "featureType")})
        dst.createDimension("time", len(range(12)[columns]))
        dst.createDimension("station_mast_strain", src.dimensions["station_mast_strain"].size)
        for name, var in src.variables.items():
            out = dst.createVariable(name, var.dtype, var.dimensions)
            out.setncatts({a: var.getncattr(a) for a in var.ncattrs() if a != "_FillValue"})
            data = var[:]
            out[:] = data[columns] if var.dimensions == ("time",) else (
                data[:, columns] if "time" in var.dimensions else data)
    return path


def test_gauge_readings_delivered_later_continue_the_coupled_twin_bitwise(tmp_path):
    _cut(tmp_path / "all.nc", slice(0, 6))
    _cut(tmp_path / "first.nc", slice(0, 3))
    _cut(tmp_path / "later.nc", slice(3, 6))
    _config(tmp_path, "all", "all.nc", 6)
    _config(tmp_path, "live", "first.nc", 3)
    _ok(tmp_path, "run", "all.yaml", "-o", "all", "--quiet")
    _ok(tmp_path, "run", "live.yaml", "-o", "live", "--quiet")
    out = _ok(tmp_path, "assimilate", "live", str(tmp_path / "later.nc"), "--quiet")
    assert "structure_files 6 cycles" in out.stdout, out.stdout
    exp, ref = (tmp_path / d / "experiments" / "structure_files" for d in ("live", "all"))
    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(ref / "posterior.nc", decode_times=False) as b:
        assert a["mast_u_x"].shape[:2] == (MEMBERS, 7)
        for name in a.data_vars:
            assert np.array_equal(a[name].values, b[name].values, equal_nan=True), name
    flags = [json.loads(line) for line in (exp / "flags.jsonl").read_text().splitlines()]
    assert flags == [json.loads(line) for line in (ref / "flags.jsonl").read_text().splitlines()]
    assert any(f.get("sensor") == 3 for f in flags)                 # the drifting gauge, caught after the delivery
    ours, theirs = (json.loads((e / "decision.json").read_text()) for e in (exp, ref))
    assert ours["structure"] == theirs["structure"]
