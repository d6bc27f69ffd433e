"""The NetCDF files twin writes pass the IOOS compliance-checker's CF-1.10 suite with no errors and no warnings.

compliance-checker (PyPI) runs offline here: it ships the CF standard-name table. Its ``check_domain_variables``
raises IndexError on any ``featureType = "point"`` file without a ``cf_role`` variable (CF defines no cf_role for
point data), a bug of the checker (cf/util.py, is_dataset_valid_ragged_array_repr_featureType); that one check is
tolerated for observation files only, every other check must run and pass. A file with known CF errors is checked
too, to show that the checker really finds errors.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from export_case import export, gauges, heat_model

from twin.core.grid import Grid
from twin.io.netcdf import DiagnosticsFile, VariableMeta, gather_members, write_ensemble
from twin.io.provenance import collect

ROOT = Path(__file__).resolve().parents[2]
# compliance-checker needs a newer netCDF4 than Debian's (which twin's MPI stack uses), so `make test` installs it in
# a separate tools environment and the check runs there, in a subprocess.
CHECKER_PYTHON = Path(os.environ.get("TWIN_CF_CHECKER_PYTHON", ROOT / ".venv" / "cf-tools" / "bin" / "python"))

KNOWN_CHECKER_BUGS = {"observations": {"check_domain_variables"}}

_CHECK = """
import json, sys, warnings
warnings.simplefilter("ignore")
from compliance_checker import runner
runner.CheckSuite.load_all_available_checkers()
suite = runner.CheckSuite()
ds = suite.load_dataset(sys.argv[1])
groups, crashed = suite.run_all(ds, ["cf:1.10"], skip_checks=[])["cf:1.10"]
results = suite.build_structure("cf:1.10", groups, sys.argv[1], 2)
msgs = [f"{r.name}: {m}" for key in ("high_priorities", "medium_priorities") for r in results[key]
        if r.value[0] < r.value[1] for m in r.msgs]
print(json.dumps([results["high_count"], results["medium_count"], msgs,
                  sorted({name.rsplit(".", 1)[-1] for name in crashed})]))
"""


def cf_check(path):
    """(number of errors, number of warnings, messages, names of checks that crashed) for CF-1.10."""
    if not CHECKER_PYTHON.exists():
        pytest.fail(f"compliance-checker environment {CHECKER_PYTHON} missing: run 'make setup'")
    out = subprocess.run([str(CHECKER_PYTHON), "-c", _CHECK, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    errors, warnings, msgs, crashed = json.loads(out.stdout.strip().splitlines()[-1])
    return errors, warnings, msgs, set(crashed)


@pytest.fixture(scope="module")
def files(tmp_path_factory, comm_self_module):
    out = tmp_path_factory.mktemp("cf")
    comm = comm_self_module
    prov = collect(comm, config_text="campaign: cf\n")
    g2 = Grid(comm, (8, 6), ((0, 4e3), (0, 3e3)))
    g3 = Grid(comm, (4, 3, 2), ((0, 10.0), (0, 6.0), (0, 2.0)))
    written = {}
    for kind, g, meta in (("posterior", g2, VariableMeta("sea surface height", "m", "sea_surface_height_above_geoid")),
                          ("forecast", g3, VariableMeta("tumour cell density", "1"))):
        snaps = []
        for t in range(3):
            vecs = [g.from_function(lambda *X, m=m, t=t: X[0] + m + t) for m in range(4)]
            snaps.append(gather_members(g, vecs))
        name = "eta" if kind == "posterior" else "cells"
        written[kind] = write_ensemble(out / f"{kind}.nc", g, {name: np.stack(snaps, axis=1)}, [0.0, 60.0, 120.0],
                                       comm=comm, variables={name: meta}, kind=kind, provenance=prov,
                                       space_units="m" if kind == "posterior" else "mm")
    d = DiagnosticsFile(out / "diagnostics.nc", comm, provenance=prov, state_units="m")
    for c in range(3):
        d.append(60.0 * c, {"rmse": 0.1, "spread": 0.2, "innovation_mean": 0.0, "innovation_std": 0.3,
                            "coupling_iterations": 4, "cost": 12.0, "gradient_norm": 1e-6}, cycle=c)
    written["diagnostics"] = d.path
    # a state of variables in different units (h in m, u in m/s): its RMSE has no one unit, and says so
    mixed = DiagnosticsFile(out / "diagnostics_mixed.nc", comm, provenance=prov, state_units=None,
                            state_mix="h [m], u [m/s]")
    for c in range(3):
        mixed.append(60.0 * c, {"rmse": 0.1, "spread": 0.2}, cycle=c)
    written["diagnostics_mixed"] = mixed.path
    # a twin experiment's observation file (twin.observations.export), on 2-D and 3-D grids with calendar time
    for dim in (2, 3):
        model = heat_model(comm, dim)
        obs = gauges(model, seed=dim)
        written[f"observations_{dim}d"] = export(out / f"obs{dim}.nc", comm, model, obs,
                                                 np.random.default_rng(dim).normal(size=(3, obs.n_obs)))
        model.grid.destroy()
        model.destroy()
    g2.destroy()
    g3.destroy()
    return written


@pytest.fixture(scope="module")
def comm_self_module():
    from mpi4py import MPI

    return MPI.COMM_SELF


@pytest.mark.parametrize("kind", ["posterior", "forecast", "diagnostics", "diagnostics_mixed", "observations_2d",
                                  "observations_3d"])
def test_twin_files_pass_cf_1_10(files, kind):
    errors, warnings, msgs, crashed = cf_check(files[kind])
    assert (errors, warnings) == (0, 0), "\n".join(msgs)
    assert crashed <= KNOWN_CHECKER_BUGS.get(kind.split("_")[0], set()), crashed
    with xr.open_dataset(files[kind]) as ds:  # and xarray reads it back (times decoded as CF datetimes)
        assert ds.attrs["Conventions"] == "CF-1.10" and np.issubdtype(ds["time"].dtype, np.datetime64)


@pytest.mark.parametrize("kind", ["posterior", "diagnostics_mixed", "observations_2d"])
def test_ncdump_reads_twin_files(files, kind):
    """Users read outputs with ``ncdump`` (netCDF-C's own reader; ``make setup`` installs Debian's netcdf-bin): its
    header shows the CF conventions and the variables' units, and its data dump ends cleanly."""
    import shutil

    ncdump = shutil.which("ncdump")
    assert ncdump, "ncdump not found: make setup installs it (Debian's netcdf-bin)"
    head = subprocess.run([ncdump, "-h", str(files[kind])], capture_output=True, text=True, timeout=60)
    assert head.returncode == 0 and ':Conventions = "CF-1.10"' in head.stdout, head.stderr
    assert "units = " in head.stdout and ":twin_data_sha256 = \"sha256:" in head.stdout
    whole = subprocess.run([ncdump, str(files[kind])], capture_output=True, text=True, timeout=60)
    assert whole.returncode == 0 and whole.stdout.rstrip().endswith("}"), whole.stderr


def test_checker_finds_errors_in_a_bad_file(tmp_path):
    bad = xr.Dataset({"h": (("time", "x"), np.zeros((2, 3)))},
                     coords={"x": ("x", np.arange(3.0)), "time": ("time", [0.0, 1.0])},
                     attrs={"Conventions": "CF-1.10"})
    bad.to_netcdf(tmp_path / "bad.nc")  # coordinate _FillValues, no long_name/units, no title/history
    errors, warnings, msgs, _ = cf_check(tmp_path / "bad.nc")
    assert errors >= 2 and warnings >= 1
    assert any("'x' must not have the _FillValue" in m for m in msgs)
    assert any("long_name or/and standard_name is highly recommended for variable h" in m for m in msgs)
