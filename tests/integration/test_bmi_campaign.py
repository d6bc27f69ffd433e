"""Ensemble campaigns on models twin knows only through their Basic Model Interface (``type: bmi``): landlab's
LinearDiffuser behind landlab's own BMI wrapper (examples/bmi-landlab), and a BMI model that misbehaves (the toy model
of tests/unit/test_bmi.py), through the ``twin`` command as a user runs it.

The ETKF's analysis RMSE is compared with the value the example gave when the test was written (seeds fixed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "twin.cli"]
#: time-mean analysis RMSE (m) of examples/bmi-landlab/campaign.yaml, 10 cycles of 10 members
RMSE_LANDLAB = 0.0632


def _twin(*args, env=None):
    return subprocess.run(TWIN + list(args), capture_output=True, text=True, cwd=ROOT, timeout=280,
                          env=env or dict(os.environ))


def _read(path: Path, *names):
    import xarray as xr

    with xr.open_dataset(path, decode_times=False) as ds:
        return [ds[n].values for n in names]


def _toy_campaign(tmp_path: Path, shape, extra: str = "", **toy) -> str:
    """A 4-member ETKF campaign on the toy BMI model of tests/unit/test_bmi.py (its configuration file ``toy.json``:
    the grid's ``shape`` and the other ``toy`` settings), with ``extra`` YAML appended."""
    (tmp_path / "toy.json").write_text(json.dumps({"shape": shape, **toy}))
    return f"""\
schema_version: 1
campaign: {{name: toy, seed: 1}}
models:
  toy:
    type: bmi
    bmi_class: test_bmi:ToyBmi
    config_file: {tmp_path / 'toy.json'}
    state: [z]
    time_step: {{value: 1, units: s}}
timeline: {{start: 0, end: 10, units: s}}
assimilation:
  method: etkf
  N: 4
  seed: 2
  schedule: {{every: 2, cycles: 4}}
  observations: [{{type: all_points, component: 0, error_std: 0.1}}]
""" + extra


def _toy_env() -> dict:
    """The environment in which the toy BMI model's module (tests/unit/test_bmi.py) imports."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "unit"), os.environ.get("PYTHONPATH",
                                                                                                    "")]))


def test_etkf_on_landlab_through_its_bmi(tmp_path):
    out = _twin("run", "examples/bmi-landlab/campaign.yaml", "-o", str(tmp_path / "run"), "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    exp = tmp_path / "run" / "experiments" / "bmi_hillslope"
    rmse, rmse_a = _read(exp / "diagnostics.nc", "rmse", "rmse_a")
    (free,) = _read(exp / "free_run.nc", "rmse_free")
    assert float(rmse_a) == pytest.approx(RMSE_LANDLAB, rel=0.02)
    # the analysis is below the observation error (0.1 m) and below the run without data
    assert rmse[-1] < 0.1 and rmse[-1] < 0.9 * free[-1], (rmse, free)
    (z,) = _read(exp / "posterior.nc", "topographic__elevation")
    assert z.shape[-2:] == (8, 10) and np.all(np.isfinite(z))  # the BMI grid's rows and columns


def test_a_bmi_model_returning_nan_fails_its_experiment_naming_the_model(tmp_path):
    campaign = tmp_path / "toy.yaml"
    campaign.write_text(_toy_campaign(tmp_path, [3, 4], nan_after=3.5))
    out = _twin("run", str(campaign), "-o", str(tmp_path / "run"), "-q", env=_toy_env())
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("error: experiment toy"))
    assert "BMI model 'toy decay' (test_bmi:ToyBmi) returned 1 non-finite values of 'z'" in line, out.stderr


def test_a_bmi_grid_beyond_the_limits_is_refused_before_its_ensemble(tmp_path):
    """A BMI model without ``shape`` sets its grid in its own configuration file: the section cannot say its size when
    the campaign is validated, so the grid it built is held to ``limits.grid_cells`` before twin allocates an
    ensemble of its states (it was not bounded at all); within the limit the same campaign runs."""
    text = _toy_campaign(tmp_path, [30, 40], "limits: {grid_cells: LIMIT}\n").replace("cycles: 4", "cycles: 2")
    env = _toy_env()
    for limit, code in ((1000, 1), (1200, 0)):
        campaign = tmp_path / f"toy{limit}.yaml"
        campaign.write_text(text.replace("LIMIT", str(limit)))
        out = _twin("run", str(campaign), "-o", str(tmp_path / f"run{limit}"), "-q", env=env)
        assert out.returncode == code, out.stdout + out.stderr
        assert "Traceback" not in out.stderr
        if code:
            line = next(ln for ln in out.stderr.splitlines() if ln.startswith("error: experiment toy"))
            assert "model 'toy': its grid as built has 1200 cells, more than the limit of 1000 per model" in line
            assert "raise limits.grid_cells" in line, line


def test_4dvar_on_a_bmi_model_is_refused_by_validate(tmp_path):
    """Found by a probe: a BMI model has no adjoint, yet ``twin validate`` passed 4D-Var on one and the run failed
    inside TAO ('compute function generated Inf or NaN; the model diverged'). Refused at ``assimilation.method``."""
    text = (ROOT / "examples" / "bmi-landlab" / "campaign.yaml").read_text()
    old = "  method: etkf\n  N: 10\n  seed: 2\n  schedule: {every: 5, cycles: 10}\n"
    assert old in text
    campaign = tmp_path / "var.yaml"
    campaign.write_text(text.replace(old, "  method: 4dvar\n  model: hill\n  obs_interval: 50\n  window: 2\n"
                                          "  shift: 2\n  cycles: 2\n  background_covariance: {kind: diagonal, std: "
                                          "0.1}\n"))
    out = _twin("validate", str(campaign))
    assert out.returncode == 2, out.stdout + out.stderr
    line = next(n for n, s in enumerate(campaign.read_text().splitlines(), 1) if "method: 4dvar" in s)
    assert f"var.yaml:{line}:" in out.stderr and "4D-Var needs the adjoint of model 'hill', and model type 'bmi' " \
        "has none: use an ensemble method" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
