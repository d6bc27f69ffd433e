"""A careless BMI model (``FaultyBmi`` of tests/unit/test_bmi.py) in an ETKF campaign, through the ``twin`` command as
a user runs it: what a probe found the adapter let through or blamed on something else.

* a ``get_value`` that returns None without filling ``dest`` (twin used uninitialised memory, and the run finished);
* ``sys.exit`` inside ``update_until`` (the line named neither the component, the class nor the method);
* units twin cannot read (written into the CF outputs as if they were units);
* a ``set_value`` that keeps the array it is given (on one rank twin gave it a read-only view of its own state, and
  the run failed, while on two ranks it ran).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "twin.cli"]
MPIEXEC = shutil.which("mpiexec")
#: the environment in which the BMI model's module (tests/unit/test_bmi.py) imports
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "unit"), os.environ.get("PYTHONPATH", "")]),
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
           OMPI_MCA_mpi_yield_when_idle="1")
WHO = "BMI model 'toy decay' (test_bmi:FaultyBmi)"


def _campaign(tmp_path: Path, name: str, **toy) -> Path:
    """A 4-member ETKF campaign on FaultyBmi configured by ``toy`` (its JSON configuration file)."""
    (tmp_path / f"{name}.json").write_text(json.dumps({"shape": [3, 4], "rate": 0.2, **toy}))
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""\
schema_version: 1
campaign: {{name: {name}, seed: 1}}
models:
  toy:
    type: bmi
    bmi_class: test_bmi:FaultyBmi
    config_file: {tmp_path / f'{name}.json'}
    state: [z]
    time_step: {{value: 1, units: s}}
timeline: {{start: 0, end: 10, units: s}}
assimilation:
  method: etkf
  N: 4
  seed: 2
  schedule: {{every: 2, cycles: 3}}
  observations: [{{type: all_points, component: 0, error_std: 0.1}}]
""")
    return path


def _run(campaign: Path, out: Path, ranks: int = 1):
    cmd = TWIN + ["run", str(campaign), "-o", str(out), "-q"]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=280, env=ENV)


def _error_line(out) -> str:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return next(ln for ln in out.stderr.splitlines() if ln.startswith("error: experiment "))


def _posterior(run: Path, name: str):
    import xarray as xr

    with xr.open_dataset(run / "experiments" / name / "posterior.nc", decode_times=False) as ds:
        return ds["toy_z"].values, dict(ds["toy_z"].attrs)  # a state named like a coordinate: prefixed


def test_a_get_value_that_fills_nothing_fails_the_experiment_naming_it(tmp_path):
    line = _error_line(_run(_campaign(tmp_path, "nofill", fault="value_none"), tmp_path / "run"))
    assert f"{WHO}: get_value('z', dest) returned None and left dest as twin gave it (all 12 values NaN)" in line
    assert "fill dest in place" in line


def test_sys_exit_in_update_until_names_the_component_the_class_and_the_method(tmp_path):
    line = _error_line(_run(_campaign(tmp_path, "exits", exit_after=1.0), tmp_path / "run"))
    assert "model 'toy'" in line and f"{WHO}: update_until(2.0) called sys.exit(3)" in line, line


def test_units_twin_cannot_read_are_a_warning_and_not_written_as_units(tmp_path):
    nonsense = "furlongs per fortnight^^2 ???"
    out = _run(_campaign(tmp_path, "units", units={"z": nonsense}), tmp_path / "run")
    assert out.returncode == 0, out.stdout + out.stderr
    warnings = [ln for ln in out.stderr.splitlines() if " WARNING " in ln and nonsense in ln]
    assert len(warnings) == 1 and f"gives the units of variable 'z' as {nonsense!r}" in warnings[0], out.stderr
    z, attrs = _posterior(tmp_path / "run", "units")
    assert attrs["units"] == "1" and np.all(np.isfinite(z)), attrs


@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec")
def test_a_bmi_that_keeps_the_array_set_value_gives_it_runs_alike_on_1_and_2_ranks(tmp_path):
    """The same campaign with a model that copies what set_value gives it: all three posteriors equal."""
    reference = _run(_campaign(tmp_path, "copies"), tmp_path / "ref")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    expected, _ = _posterior(tmp_path / "ref", "copies")
    campaign = _campaign(tmp_path, "keeps", fault="keep_src")
    for ranks in (1, 2):
        out = _run(campaign, tmp_path / f"run{ranks}", ranks)
        assert out.returncode == 0, out.stdout + out.stderr
        np.testing.assert_array_equal(_posterior(tmp_path / f"run{ranks}", "keeps")[0], expected)


#: where FaultyBmi's crash is: its update method in tests/unit/test_bmi.py
CRASH = f"Segmentation fault in update ({ROOT / 'tests' / 'unit' / 'test_bmi.py'}, line "


def _crashing(tmp_path: Path, resources: str = "") -> Path:
    """The campaign with a model whose update crashes in native code (SIGSEGV) from its second update on."""
    path = _campaign(tmp_path, "crash", crash_after=1.0)
    path.write_text(path.read_text() + resources)
    return path


def test_a_crash_in_the_models_native_code_says_where_online(tmp_path):
    """The online driver dies of the crash (nothing can run after it), but says where first: Python's fault report
    with the model's method, before PETSc's banner (which alone named neither the model nor the line)."""
    from twin.core.crash import crash_line

    out = _run(_crashing(tmp_path), tmp_path / "run")
    assert out.returncode != 0
    assert "Fatal Python error: Segmentation fault" in out.stderr, out.stderr[-3000:]
    assert crash_line(out.stderr).startswith(CRASH), crash_line(out.stderr)


@pytest.mark.parametrize("launcher", ["worker", "mpiexec"])
def test_a_crash_in_the_models_native_code_fails_the_experiment_saying_where(tmp_path, launcher):
    """In a workflow the crash kills the warm worker (Parsl's WorkerLost) or the task's process (PETSc's abort after
    the report): the experiment fails with the line that says where, not with 'worker lost' or PETSc's banner."""
    resources = (f"resources: {{type: local, ranks: 1, workers: 2, launcher: {launcher}}}\n"
                 "experiments: {retries: 0}\n")
    line = _error_line(_run(_crashing(tmp_path, resources), tmp_path / "run"))
    assert "FAILED" in line and CRASH in line, line
