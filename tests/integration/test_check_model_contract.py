"""``twin check-model bmi`` on a user's BMI model that breaks the contract the way a probe found it passing
(scratch/probe9, findings 2 and 3): a ``set_value`` that does nothing (every analysis thrown away) and a model that
keeps prognostic state outside the variables twin holds (online and workflow runs differ). Each must FAIL the restart
line naming the BMI class and what is wrong; the same model implemented correctly PASSES every check.

The models are small bmipy models defined here: ``h`` (and ``w``) diffusing and decaying on 12 nodes, with a scalar
input ``decay`` as an estimable parameter. They are found by import path (this module), as a user's are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

bmipy = pytest.importorskip("bmipy")

from twin.conformance import FAIL, PASS, check_model, subject_from_file  # noqa: E402

pytestmark = pytest.mark.timeout(120)
N = 12


class Diffuse(bmipy.Bmi):
    """``dh/dt = k h_xx - decay h`` (and ``w`` likewise) on ``N`` nodes, explicit Euler steps of 0.1 s."""

    def initialize(self, config_file):
        with open(config_file) as f:
            self.cfg = json.load(f)
        x = np.arange(N, dtype=float)
        self.t, self.dt = 0.0, 0.1
        self.h = np.exp(-((x - x.mean()) / 3.0) ** 2)
        self.w = 0.5 * self.h[::-1].copy()
        self.decay = np.array([0.1])

    def _step(self, f):
        lap = np.zeros_like(f)
        lap[1:-1] = f[2:] - 2 * f[1:-1] + f[:-2]
        f += self.dt * (0.5 * lap - self.decay[0] * f)

    def update(self):
        self._step(self.h)
        self._step(self.w)
        self.t += self.dt

    def update_until(self, time):
        while self.t < time - 1e-9:
            self.update()

    def finalize(self):
        pass

    def get_component_name(self):
        return "test diffusion"

    def get_input_item_count(self):
        return 3

    def get_output_item_count(self):
        return 2

    def get_input_var_names(self):
        return ("h", "w", "decay")

    def get_output_var_names(self):
        return ("h", "w")

    def get_var_grid(self, name):
        return 1 if name == "decay" else 0

    def get_var_type(self, name):
        return "float64"

    def get_var_units(self, name):
        return "1/s" if name == "decay" else "m"

    def get_var_itemsize(self, name):
        return 8

    def get_var_nbytes(self, name):
        return 8 * (1 if name == "decay" else N)

    def get_var_location(self, name):
        return "node"

    def get_current_time(self):
        return self.t

    def get_start_time(self):
        return 0.0

    def get_end_time(self):
        return 1e6

    def get_time_units(self):
        return "s"

    def get_time_step(self):
        return self.dt

    def get_value_ptr(self, name):
        return {"h": self.h, "w": self.w, "decay": self.decay}[name]

    def get_value(self, name, dest):
        dest[:] = self.get_value_ptr(name)
        return dest

    def get_value_at_indices(self, name, dest, inds):
        dest[:] = self.get_value_ptr(name)[inds]
        return dest

    def set_value(self, name, src):
        self.get_value_ptr(name)[:] = np.asarray(src, dtype=float).ravel()

    def set_value_at_indices(self, name, inds, src):
        self.get_value_ptr(name)[inds] = src

    def get_grid_rank(self, grid):
        return 1 if grid == 0 else 0

    def get_grid_size(self, grid):
        return N if grid == 0 else 1

    def get_grid_type(self, grid):
        return "uniform_rectilinear" if grid == 0 else "scalar"

    def get_grid_shape(self, grid, shape):
        shape[:] = [N]
        return shape

    def get_grid_spacing(self, grid, spacing):
        spacing[:] = [1.0]
        return spacing

    def get_grid_origin(self, grid, origin):
        origin[:] = [0.0]
        return origin

    def get_grid_node_count(self, grid):
        return self.get_grid_size(grid)

    def _none(self, *args):
        raise NotImplementedError

    get_grid_x = get_grid_y = get_grid_z = get_grid_edge_count = get_grid_face_count = _none
    get_grid_edge_nodes = get_grid_face_edges = get_grid_face_nodes = get_grid_nodes_per_face = _none


class SetNoop(Diffuse):
    """``set_value('h')`` does nothing (e.g. it writes into a copy): every analysis is thrown away."""

    def set_value(self, name, src):
        if name != "h":
            super().set_value(name, src)


class SetNoopW(Diffuse):
    """Of two state variables, ``set_value('w')`` does nothing."""

    def set_value(self, name, src):
        if name != "w":
            super().set_value(name, src)


class DecayIgnored(Diffuse):
    """``set_value('decay')`` does nothing: the estimable parameter never reaches the model."""

    def set_value(self, name, src):
        if name != "decay":
            super().set_value(name, src)


class Hidden(Diffuse):
    """A second prognostic variable ``v`` (a velocity, a soil store) that twin's state does not hold."""

    def update(self):
        if not hasattr(self, "v"):
            self.v = np.zeros_like(self.h)
        self.v += self.dt * (self.h - self.h.mean())
        self.h -= 0.05 * self.dt * self.v
        super().update()


def _subject(tmp_path: Path, cls: type, state=("h",)):
    (tmp_path / "m.json").write_text("{}")
    campaign = tmp_path / "c.yaml"
    campaign.write_text(f"""\
schema_version: 1
campaign: {{name: contract}}
models:
  diff:
    type: bmi
    bmi_class: "{__name__}:{cls.__name__}"
    config_file: {tmp_path / 'm.json'}
    state: [{', '.join(state)}]
    time_step: {{value: 0.1, units: s}}
    shape: [{N}]
    parameters:
      decay: {{value: 0.1, units: 1/s, prior: {{dist: lognormal, median: 0.1, sigma: 0.5}}, estimable: true}}
timeline: {{start: 0.0, end: 10.0, units: s}}
""")
    return subject_from_file("bmi", campaign)


def _failed(report) -> list[str]:
    return [r.name for r in report.results if r.status == FAIL]


@pytest.mark.parametrize("state", [("h",), ("h", "w")])
def test_a_well_behaved_bmi_model_passes(tmp_path, state):
    report = check_model(_subject(tmp_path, Diffuse, state), ranks=1)
    assert report.ok, report.text()
    line = report.result("restart is bitwise")
    assert line.status == PASS and "no hidden state" in line.measured, report.text()
    assert "estimable parameter" in line.measured, line.measured


def test_a_set_value_that_does_nothing_fails_naming_it(tmp_path):
    report = check_model(_subject(tmp_path, SetNoop), ranks=1)
    assert _failed(report) == ["restart is bitwise"], report.text()
    line = report.result("restart is bitwise").measured
    assert line.startswith(f"model 'diff' (BMI {__name__}:SetNoop): restarted at t=0.2 from a state perturbed"), line
    assert "the state given to the model is not the state it forecasts from (its set_value ignored?)" in line


def test_one_state_variable_ignored_fails_naming_the_variable(tmp_path):
    report = check_model(_subject(tmp_path, SetNoopW, ("h", "w")), ranks=1)
    assert _failed(report) == ["restart is bitwise"], report.text()
    line = report.result("restart is bitwise").measured
    assert f"(BMI {__name__}:SetNoopW): state variable 'w' perturbed alone" in line, line
    assert "its set_value ignored?" in line


def test_a_parameter_that_never_reaches_the_model_fails_naming_it(tmp_path):
    report = check_model(_subject(tmp_path, DecayIgnored), ranks=1)
    assert _failed(report) == ["restart is bitwise"], report.text()
    line = report.result("restart is bitwise").measured
    assert f"(BMI {__name__}:DecayIgnored): estimable parameter 'decay' perturbed" in line, line
    assert "does not change the forecast" in line


def test_hidden_prognostic_state_fails_naming_it(tmp_path):
    report = check_model(_subject(tmp_path, Hidden), ranks=1)
    assert _failed(report) == ["restart is bitwise"], report.text()
    line = report.result("restart is bitwise").measured
    assert line.startswith(f"model 'diff' (BMI {__name__}:Hidden): restarted from one checkpoint at t=0.2, a model "
                           "that first ran another history"), line
    assert "hidden state" in line and "online and workflow runs differ" in line
    diff = float(line.split("max |difference| ")[1].split()[0])
    assert diff > 0, line
