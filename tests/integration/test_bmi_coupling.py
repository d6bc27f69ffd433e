"""A BMI model as a coupling participant and BMI parameters estimated by an ensemble, through the ``twin`` command.

The BMI model is tests/bmi_relax.py (a bmipy.Bmi subclass: ``du/dt = -rate (u - target) + source`` on a uniform
rectilinear grid, exact steps), run as ``type: bmi``:

* coupled two ways with the built-in heat model (explicit serial coupling, 0.5 s windows): the heat model's
  temperature is the BMI model's imported ``target`` (its nodes are the heat cells' centres, so the consistent map is
  the identity), and the BMI model's ``u`` sampled at one node is the heat model's Dirichlet data on its left side.
  ``twin run`` on 1 and 2 ranks equals the same exchange written out by hand here with the heat model and the BMI
  class driven directly (set_value / update_until);
* an ETKF estimating the BMI input ``rate`` with the state (equilibrium ``source / rate``): the members start from a
  prior centred at a rate half the truth and end within 3 % of it;
* names that are not inputs of the BMI model are refused with one line, no traceback.
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
import xarray as xr
from mpi4py import MPI

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec")
#: the BMI model's module on the path of every twin process (as a user's own model would be)
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
           OMPI_MCA_mpi_yield_when_idle="1")
#: the BMI grid: 4 rows, 6 columns, 1 m apart from (0.5, 0.5): the centres of the heat model's 6 x 4 cells
RELAX = {"shape": [4, 6], "spacing": [1.0, 1.0], "origin": [0.5, 0.5], "dt": 0.1, "rate": 2.0, "u0": 300.0}
#: the rate the campaign sets (the configuration file's 2.0 must not be what runs)
RATE = 0.5
#: the site of u that the heat model's left side gets: node (row 1, column 0)
SITE, SITE_INDEX = (0.5, 1.5), 1 * 6 + 0
WINDOW, END = 0.5, 2.0
#: time-mean analysis RMSE (K) of the ETKF campaign of test_etkf_estimates_a_bmi_parameter (seeds fixed)
RMSE_RATE = 0.01042

COUPLED = """\
schema_version: 1
campaign: {{name: bmi_heat, seed: 1}}
models:
  slab:
    type: heat
    grid: {{shape: [6, 4], extent: [[0, 6], [0, 4]], units: m}}
    parameters:
      kappa: {{value: 0.5, units: m^2/s}}
    initial_condition: {{kind: gaussian, amplitude: 10.0, center: [3.0, 2.0], width: 1.0, background: 280.0}}
    boundary:
      x_lo: {{type: dirichlet, import: T_left}}
      x_hi: {{type: neumann, value: 0.0}}
      y_lo: {{type: neumann, value: 0.0}}
      y_hi: {{type: neumann, value: 0.0}}
    time: {{dt: 0.1, units: s}}
    solver: {{ts_type: beuler, ksp_type: cg, pc_type: jacobi, ksp_rtol: 1.0e-13}}
  relax:
    type: bmi
    bmi_class: bmi_relax:RelaxBmi
    config_file: {config}
    state: [u]
    time_step: {{value: 0.5, units: s}}
    shape: [4, 6]
    imports: [{imports}]
    parameters:
      {parameter}: {{value: {rate}, units: 1/s}}
coupling:
  components: [slab, relax]
  window: {{value: {window}, units: s}}
  routes:
    - {{from: slab.temperature, to: relax.target, mapping: consistent}}
    - {{from: relax.u, to: slab.T_left, mapping: consistent, site: {{point: [{x}, {y}], units: m}}}}
  scheme: {{kind: explicit_serial, order: [slab, relax]}}
timeline: {{start: 0.0, end: {end}, units: s, output_every: {window}}}
resources: {{type: local, ranks: 1}}
"""


def _twin(*args, ranks: int = 1, cwd: Path = ROOT):
    launcher = [MPIEXEC, "-n", str(ranks)] if ranks > 1 else []
    return subprocess.run(launcher + [sys.executable, "-m", "twin.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=280, env=ENV, stdin=subprocess.DEVNULL)


def _coupled(tmp: Path, imports: str = "target", parameter: str = "rate") -> Path:
    (tmp / "relax.json").write_text(json.dumps(RELAX))
    path = tmp / f"coupled_{imports}_{parameter}.yaml"
    path.write_text(COUPLED.format(config=tmp / "relax.json", imports=imports, parameter=parameter, rate=RATE,
                                   window=WINDOW, end=END, x=SITE[0], y=SITE[1]))
    return path


def _fields(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Heat temperature and BMI u at the output times, (time, rows, columns)."""
    with xr.open_dataset(run / "forecast_slab.nc", decode_times=False) as f:
        T = f["T"].values[0]
    with xr.open_dataset(run / "forecast_relax.nc", decode_times=False) as f:
        u = f["u"].values[0]
        assert f["time"].values.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    return T, u


def _by_hand(config: Path) -> tuple[np.ndarray, np.ndarray]:
    """The coupled run written out: each window the heat model advances with the last u at the site as its left
    Dirichlet data, then the BMI model (driven directly) relaxes toward the new temperature with the campaign's rate.
    """
    from bmi_relax import RelaxBmi

    from twin.config.loader import load_campaign
    from twin.models.registry import create_model

    heat = create_model("slab", load_campaign(config).config.models["slab"], MPI.COMM_SELF)
    bmi = RelaxBmi()
    bmi.initialize(str(config.parent / "relax.json"))
    bmi.set_value("rate", np.array([RATE]))
    face = heat.field_grid("T_left").create_global()
    T = heat.initial_state()
    try:
        Ts, us = [heat.grid.allgather(T).copy()], [bmi.values["u"].reshape(4, 6).copy()]
        u_site = bmi.values["u"][SITE_INDEX]
        for k in range(round(END / WINDOW)):
            face.set(u_site)
            heat.set_import("T_left", face)
            heat.advance(T, k * WINDOW, (k + 1) * WINDOW)
            bmi.set_value("target", heat.grid.allgather(T).ravel())
            bmi.update_until((k + 1) * WINDOW)
            u_site = bmi.values["u"][SITE_INDEX]
            Ts.append(heat.grid.allgather(T).copy())
            us.append(bmi.values["u"].reshape(4, 6).copy())
        return np.asarray(Ts), np.asarray(us)
    finally:
        for obj in (face, T, heat):
            obj.destroy()


def test_a_bmi_model_coupled_two_ways_with_the_heat_model(tmp_path):
    config = _coupled(tmp_path)
    out = _twin("run", str(config), "-o", str(tmp_path / "run1"), "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    T, u = _fields(tmp_path / "run1")
    T_ref, u_ref = _by_hand(config)
    # what twin ran is the exchange written out by hand: the imported temperature reached the BMI model, the
    # section's rate (not the configuration file's) ran, and the BMI model's u reached the heat model's boundary
    np.testing.assert_allclose(u, u_ref, rtol=1e-10, atol=0)
    np.testing.assert_allclose(T, T_ref, rtol=1e-10, atol=0)
    # and the exchange did something: u (300 K) fell toward the slab's temperature, which rose from its left side
    assert u[0].min() == 300.0 and 285.0 < u[-1].max() < 296.0
    gap = [float(np.mean(np.abs(u[k] - T[k]))) for k in (0, -1)]
    assert gap[1] < 0.4 * gap[0], gap                 # pure relaxation toward a fixed target: exp(-0.5 * 2) = 0.37
    assert T[-1, :, 0].min() > T[0, :, 0].max() + 5.0
    with xr.open_dataset(tmp_path / "run1" / "coupling.nc", decode_times=False) as c:
        assert c["iterations"].values.tolist() == [1, 1, 1, 1]

    if MPIEXEC is not None:
        out = _twin("run", str(config), "-o", str(tmp_path / "run2"), "-q", ranks=2)
        assert out.returncode == 0, out.stdout + out.stderr
        T2, u2 = _fields(tmp_path / "run2")
        np.testing.assert_allclose(u2, u, rtol=1e-10, atol=0)
        np.testing.assert_allclose(T2, T, rtol=1e-10, atol=0)


ETKF = """\
schema_version: 1
campaign: {{name: bmi_rate, seed: 1}}
models:
  relax:
    type: bmi
    bmi_class: bmi_relax:RelaxBmi
    config_file: {config}
    state: [u]
    time_step: {{value: 0.5, units: s}}
    parameters:
      rate: {{value: 0.5, units: 1/s, prior: {{dist: lognormal, median: 0.25, sigma: 0.5}}, estimable: true}}
timeline: {{start: 0, end: 10, units: s}}
assimilation:
  method: etkf
  N: 10
  seed: 2
  schedule: {{every: 2, cycles: 10}}
  observations: [{{type: all_points, component: 0, error_std: 0.05}}]
resources: {{type: local, ranks: 1, workers: 1}}
"""


def test_etkf_estimates_a_bmi_parameter(tmp_path):
    """u relaxes toward source / rate = 2 K (truth rate 0.5 1/s); the members' rates come from a prior with median
    0.25 (equilibrium 4 K). The configuration file says rate 2.0: were the parameter not reaching the model, every
    member would run at 2.0 and the estimate could not move."""
    (tmp_path / "rate.json").write_text(json.dumps({"shape": [3, 4], "dt": 0.1, "rate": 2.0, "source": 1.0,
                                                    "u0": 1.0}))
    config = tmp_path / "etkf.yaml"
    config.write_text(ETKF.format(config=tmp_path / "rate.json"))
    out = _twin("run", str(config), "-o", str(tmp_path / "run"), "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    with xr.open_dataset(tmp_path / "run" / "experiments" / "bmi_rate" / "diagnostics.nc", decode_times=False) as d:
        rate, rmse_a = d["parameter_rate"].values, float(d["rmse_a"])
    print(f"rate per cycle {np.round(rate, 4).tolist()}, rmse_a {rmse_a:.4g}")
    assert np.all(np.isfinite(rate))
    assert abs(rate[-1] - 0.5) < 0.015 and np.all(np.abs(rate[-5:] - 0.5) < 0.015)   # prior median 0.25
    assert rmse_a < 0.05 and rmse_a == pytest.approx(RMSE_RATE, rel=0.02)           # below the observation error


@pytest.mark.parametrize("edit, message", [
    ({"imports": "flux"}, ("model 'relax': BMI model 'relaxation' (bmi_relax:RelaxBmi): import 'flux' is not an "
                           "input variable of the model (its inputs besides the state: target, rate, source); "
                           "correct the name in the section")),
    ({"parameter": "rates"}, ("model 'relax': BMI model 'relaxation' (bmi_relax:RelaxBmi): parameter 'rates' is not "
                              "an input variable of the model")),
])
def test_names_that_are_not_bmi_inputs_are_refused_in_one_line(tmp_path, edit, message):
    out = _twin("run", str(_coupled(tmp_path, **edit)), "-o", str(tmp_path / "run"), "-q")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr
