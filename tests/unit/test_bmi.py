"""The BMI kind (``type: bmi``, twin/kinds/bmi): a Basic Model Interface model as a twin model.

:class:`ToyBmi` is a small bmipy implementation written here (exponential decay of a field on a uniform rectilinear
grid, configured by a JSON file) that can also misbehave on request: values of the wrong size, NaN, a failing update.
The adapter is checked against calling it directly, and on landlab's LinearDiffuser through landlab's own BMI wrapper
(a published BMI implementation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bmipy import Bmi
from mpi4py import MPI

from twin.core.errors import ConfigError, ModelError, SolverError

ROOT = Path(__file__).resolve().parents[2]
LANDLAB = ROOT / "examples" / "bmi-landlab"


class ToyBmi(Bmi):
    """``dz/dt = -rate z`` on a ``shape`` (rows, columns) grid, exact exponential steps of ``dt``; ``z`` starts as a
    ramp. Config keys ``nan_after``, ``fail_after`` (times) and ``report_size`` (a wrong size) make it misbehave."""

    def initialize(self, config_file):
        with open(config_file) as f:
            self.cfg = json.load(f)
        self.shape = tuple(self.cfg.get("shape", (3, 4)))
        self.dt = float(self.cfg.get("dt", 1.0))
        self.t = 0.0
        self.z = np.arange(np.prod(self.shape), dtype=float) + 1.0

    def update(self):
        if self.t >= self.cfg.get("fail_after", np.inf):
            raise RuntimeError("the toy model's solver diverged")
        self.z *= np.exp(-self.cfg.get("rate", 0.1) * self.dt)
        self.t += self.dt
        if self.t > self.cfg.get("nan_after", np.inf):
            self.z[1] = np.nan

    def update_until(self, time):
        while self.t < time - 1e-12:
            self.update()

    def finalize(self):
        self.z = None

    def get_component_name(self):
        return "toy decay"

    def get_input_item_count(self):
        return 1

    def get_output_item_count(self):
        return 2

    def get_input_var_names(self):
        return ("z",)

    def get_output_var_names(self):
        return ("z", "flux")

    def get_var_grid(self, name):
        return 0

    def get_var_type(self, name):
        return "float64"

    def get_var_units(self, name):
        return "m"

    def get_var_itemsize(self, name):
        return 8

    def get_var_nbytes(self, name):
        return 8 * int(self.cfg.get("report_size", self.z.size))

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

    def get_value(self, name, dest):
        dest[:] = self.z
        return dest

    def get_value_ptr(self, name):
        return self.z

    def get_value_at_indices(self, name, dest, inds):
        dest[:] = self.z[inds]
        return dest

    def set_value(self, name, src):
        self.z[:] = src

    def set_value_at_indices(self, name, inds, src):
        self.z[inds] = src

    def get_grid_rank(self, grid):
        return 2

    def get_grid_size(self, grid):
        return int(np.prod(self.shape))

    def get_grid_type(self, grid):
        return "uniform_rectilinear"

    def get_grid_shape(self, grid, shape):
        shape[:] = self.shape
        return shape

    def get_grid_spacing(self, grid, spacing):
        spacing[:] = (2.0, 1.0)  # rows 2 m apart, columns 1 m
        return spacing

    def get_grid_origin(self, grid, origin):
        origin[:] = (10.0, 0.0)
        return origin

    def get_grid_x(self, grid, x):
        raise NotImplementedError

    def get_grid_y(self, grid, y):
        raise NotImplementedError

    def get_grid_z(self, grid, z):
        raise NotImplementedError

    def get_grid_node_count(self, grid):
        return self.get_grid_size(grid)

    def get_grid_edge_count(self, grid):
        raise NotImplementedError

    def get_grid_face_count(self, grid):
        raise NotImplementedError

    def get_grid_edge_nodes(self, grid, edge_nodes):
        raise NotImplementedError

    def get_grid_face_edges(self, grid, face_edges):
        raise NotImplementedError

    def get_grid_face_nodes(self, grid, face_nodes):
        raise NotImplementedError

    def get_grid_nodes_per_face(self, grid, nodes_per_face):
        raise NotImplementedError


TOY = f"{__name__}:ToyBmi"


class FaultyBmi(ToyBmi):
    """:class:`ToyBmi` with a scalar input ``rate`` (the decay rate, a parameter) and the faults of partial or careless
    BMI implementations, chosen by config keys: ``raise`` (a method name: it raises NotImplementedError), ``fault``
    (``value_none``: get_value returns None and fills nothing; ``value_int``: returns int32 values; ``value_str``;
    ``type_real``: get_var_type says 'real'; ``step_none``: get_time_step returns None; ``names_str``: the input names
    are one string; ``keep_src``: set_value keeps the array it is given, which update changes in place;
    ``exit_after``: update calls sys.exit(3) after that time; ``crash_after``: update reads address 0 through ctypes
    after that time, a segmentation fault as a compiled model's) and ``units`` (variable -> what get_var_units says)."""

    def __getattribute__(self, name):
        cfg = object.__getattribute__(self, "__dict__").get("cfg", {})
        if cfg.get("raise") == name:
            def missing(*args):
                raise NotImplementedError(f"no {name}")
            return missing
        return object.__getattribute__(self, name)

    def initialize(self, config_file):
        super().initialize(config_file)
        self.fault = self.cfg.get("fault", "")
        self.rate = np.array([float(self.cfg.get("rate", 0.1))])

    def update(self):
        if self.t >= self.cfg.get("exit_after", np.inf):
            import sys

            sys.exit(3)  # a wrapped legacy code that exits on an error
        if self.t >= self.cfg.get("crash_after", np.inf):
            import ctypes

            ctypes.string_at(0)  # a compiled model that reads memory it does not have: SIGSEGV
        self.cfg["rate"] = float(self.rate[0])
        super().update()

    def get_input_var_names(self):
        return "z" if self.fault == "names_str" else ("z", "rate")

    def get_var_type(self, name):
        return "real" if self.fault == "type_real" else "float64"

    def get_var_units(self, name):
        return self.cfg.get("units", {}).get(name, "m" if name == "z" else "1/s")

    def get_var_nbytes(self, name):
        return 8 if name == "rate" else super().get_var_nbytes(name)

    def get_time_step(self):
        return None if self.fault == "step_none" else self.dt

    def get_value(self, name, dest):
        if name == "rate":
            dest[:] = self.rate
            return dest
        if self.fault == "value_none":
            return None  # and dest is left as it was given
        if self.fault == "value_int":
            return (100 * self.z).astype(np.int32)  # centimetres as integers, while get_var_type says float64
        if self.fault == "value_str":
            return np.array(["a"] * self.z.size)
        return super().get_value(name, dest)

    def set_value(self, name, src):
        if name == "rate":
            self.rate[:] = src
        elif self.fault == "keep_src":
            self.z = src  # keeps the caller's array, as some Python BMIs do; update changes it in place
        else:
            super().set_value(name, src)


FAULTY = f"{__name__}:FaultyBmi"


def _config(tmp_path, **cfg) -> str:
    path = tmp_path / f"toy{len(list(tmp_path.glob('toy*.json')))}.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _model(tmp_path, state=("z",), time_step=1.0, bmi_class=TOY, parameters=None, **cfg):
    from twin.kinds.bmi.adapter import BmiModel

    return BmiModel("toy", MPI.COMM_SELF, bmi_class=bmi_class, config_file=_config(tmp_path, **cfg), state=state,
                    time_step=time_step, parameters=parameters)


def _whole(model, vec):
    return np.asarray(model.grid.allgather(vec)).ravel()


def test_the_bmi_grid_becomes_a_twin_grid_in_the_same_order(tmp_path):
    model = _model(tmp_path, shape=[3, 4])
    try:
        g = model.grid
        assert g.shape == (4, 3) and g.dof == 1 and g.centering == "node"  # BMI rows first, twin x first
        assert g.extent == ((0.0, 3.0), (10.0, 14.0))
        x = model.initial_state()
        # the BMI's row-major values are twin's natural order: entry [row, column] at (x=column, y=10 + 2 row)
        np.testing.assert_array_equal(g.allgather(x), (np.arange(12.0) + 1).reshape(3, 4))
        assert model.state_names == ("z",) and model.state_units == ("m",) and model.time_units == "s"
        x.destroy()
    finally:
        model.destroy()


def test_members_from_one_start_equal_direct_bmi_runs(tmp_path):
    """Three members advanced from the same t0, twice (two cycles): each equals its own BMI instance driven
    directly, and after the first cycle no instance is created any more (one per member)."""
    model = _model(tmp_path, rate=0.3)
    states = [np.full(12, float(m + 1)) for m in range(3)]
    direct = []
    for s in states:
        b = ToyBmi()
        b.initialize(model.config_file)
        b.set_value("z", s.copy())
        direct.append(b)
    try:
        vec = model.create_state()
        for t0, t1 in ((0.0, 2.0), (2.0, 4.0)):
            for m in range(3):
                model.grid.set_global(states[m], vec)
                model.advance(vec, t0, t1)
                states[m] = _whole(model, vec)
                direct[m].update_until(t1)
                np.testing.assert_array_equal(states[m], direct[m].z)
            assert len(model._pool) == 3 and all(t == t1 for t, _ in model._pool)
        vec.destroy()
    finally:
        model.destroy()


def test_the_section_shape_is_checked(tmp_path):
    from twin.kinds.bmi.adapter import BmiModel

    with pytest.raises(ModelError, match=r"model 'toy': BMI model 'toy decay' .*its grid has shape \[3, 4\] \(rows "
                                         r"first\), the section says shape: \[4, 3\]"):
        BmiModel("toy", MPI.COMM_SELF, bmi_class=TOY, config_file=_config(tmp_path), state=["z"], time_step=1.0,
                 shape=[4, 3])


def test_wrong_sizes_are_refused_naming_the_model(tmp_path):
    with pytest.raises(ModelError, match=r"model 'toy': BMI model 'toy decay' \(test_bmi:ToyBmi\): variable 'z' "
                                         r"has 11 values, its grid 0 has 12 points"):
        _model(tmp_path, report_size=11)


def test_nan_from_the_model_is_a_solver_error_naming_it(tmp_path):
    model = _model(tmp_path, nan_after=2.5)
    x = model.initial_state()
    try:
        model.advance(x, 0.0, 2.0)
        with pytest.raises(SolverError) as err:
            model.advance(x, 2.0, 4.0)
        text = str(err.value)
        assert "model 'toy': solver failed at t=4" in text
        assert "BMI model 'toy decay' (test_bmi:ToyBmi) returned 1 non-finite values of 'z' (of 12)" in text
        assert "\n" not in text
    finally:
        x.destroy()
        model.destroy()


def test_a_failing_update_is_a_solver_error_naming_the_model(tmp_path):
    model = _model(tmp_path, fail_after=1.0)
    x = model.initial_state()
    try:
        with pytest.raises(SolverError) as err:
            model.advance(x, 0.0, 3.0)
        text = str(err.value)
        assert "BMI model 'toy decay' (test_bmi:ToyBmi): update_until(3.0) raised RuntimeError: the toy model's " \
               "solver diverged" in text
        assert f"check the model's configuration file {model.config_file}" in text
        assert not model._pool  # the failed instance is finalized, never reused
    finally:
        x.destroy()
        model.destroy()


def test_bad_classes_and_variables_are_refused(tmp_path):
    from twin.kinds.bmi.adapter import BmiModel

    cfg = _config(tmp_path)
    with pytest.raises(ModelError, match="bmi_class 'no_such_package.models:Model' cannot be imported "
                                         r"\(ModuleNotFoundError"):
        BmiModel("toy", MPI.COMM_SELF, bmi_class="no_such_package.models:Model", config_file=cfg, state=["z"],
                 time_step=1.0)
    with pytest.raises(ModelError, match=r"bmi_class 'json:JSONDecoder' does not implement the Basic Model "
                                         r"Interface: it has no initialize, update_until"):
        BmiModel("toy", MPI.COMM_SELF, bmi_class="json:JSONDecoder", config_file=cfg, state=["z"], time_step=1.0)
    with pytest.raises(ModelError, match=r"state variable 'flux' is not an input variable \(the state is set and "
                                         r"read back; variables that are both: z\)"):
        _model(tmp_path, state=("flux",))
    with pytest.raises(ModelError, match=r"time_step 1.5 s is not a whole multiple of the step of BMI model "
                                         r"'toy decay'"):
        _model(tmp_path, time_step=1.5)


def test_no_adjoint_so_4dvar_refuses(tmp_path):
    model = _model(tmp_path)
    x = model.initial_state()
    lam = x.duplicate()
    try:
        with pytest.raises(ModelError, match="model 'toy': model type 'bmi' has no adjoint"):
            model.adjoint(x, 0.0, 1.0, lam)
        tape = model.record(x, 0.0, 1.0)  # what 4D-Var's forward pass does, then its gradient:
        with pytest.raises(ModelError, match="has no adjoint"):
            model.adjoint_recorded(tape, lam)
    finally:
        for v in (x, lam):
            v.destroy()
        model.destroy()


def test_the_section_is_validated_with_its_line(tmp_path, monkeypatch):
    from twin.config.loader import load_campaign

    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.json").write_text("{}")
    text = f"""\
schema_version: 1
campaign: {{name: toy}}
models:
  toy:
    type: bmi
    bmi_class: {TOY}
    config_file: toy.json
    state: [z]
    time_step: {{value: 1, units: s}}
timeline: {{start: 0, end: 10, units: s}}
"""
    (tmp_path / "ok.yaml").write_text(text)
    section = load_campaign(tmp_path / "ok.yaml").config.models["toy"]
    assert section.config_file == str(tmp_path / "toy.json")  # made absolute for experiments and workflow tasks
    (tmp_path / "bad.yaml").write_text(text.replace("toy.json", "missing.json").replace(TOY, "../evil.py"))
    with pytest.raises(ConfigError) as err:
        load_campaign(tmp_path / "bad.yaml")
    lines = err.value.lines()
    assert any(":6:" in ln and "models.toy.bmi_class" in ln for ln in lines), lines
    assert any(":7:" in ln and "models.toy.config_file" in ln and "no such file" in ln for ln in lines), lines


def test_the_conformance_kit_on_a_bmi_model(tmp_path, monkeypatch):
    from twin.conformance import SKIP, Subject, check_model
    from twin.config.loader import load_campaign

    monkeypatch.chdir(ROOT)
    section = load_campaign(LANDLAB / "campaign.yaml").config.models["hill"]
    report = check_model(Subject("hill", section), ranks=1)
    assert report.ok, report.text()
    skipped = {r.name for r in report.results if r.status == SKIP}
    assert skipped == {"parameter transforms invert", "options prefix honoured", "adjoint Taylor test",
                       "1 vs 2 ranks agree", "batched forecast is advance"}, report.text()


def test_landlab_through_its_own_bmi(monkeypatch):
    """A published BMI implementation: landlab's LinearDiffuser behind landlab.bmi; one member's forecast equals
    landlab driven directly."""
    from landlab.bmi.components import LinearDiffuserBMI

    from twin.config.loader import load_campaign
    from twin.models.registry import create_model

    monkeypatch.chdir(ROOT)
    section = load_campaign(LANDLAB / "campaign.yaml").config.models["hill"]
    model = create_model("hill", section, MPI.COMM_SELF)
    try:
        assert model.grid.shape == (10, 8) and model.grid.extent == ((0.0, 90.0), (0.0, 70.0))
        year = 365.25 * 86400
        assert model.dt == pytest.approx(10 * year)
        x = model.initial_state()
        model.advance(x, 0.0, 50 * year)
        ref = LinearDiffuserBMI()
        ref.initialize(section.config_file)
        ref.update_until(50.0)
        z = np.empty(80)
        ref.get_value("topographic__elevation", z)
        np.testing.assert_array_equal(_whole(model, x), z)
        assert np.ptp(z) > 1.0  # a hillslope, not a flat field
        x.destroy()
    finally:
        model.destroy()


def test_the_landlab_example_passes_csdms_bmi_tester(tmp_path):
    """PyPI bmi-tester (the CSDMS BMI conformance suite, stages 0-3: bootstrap, info and time, variables, grids and
    values) on the BMI model of examples/bmi-landlab, run as its command ``bmi-test`` runs it. Its unit tests are
    skipped (gimli.units, which needs the UDUNITS-2 C library, is not installed), and so are the calls landlab's
    wrapper does not implement (get_input_var_name_count, get_output_var_name_count) and the grid types it has not."""
    import re
    import subprocess
    import sys

    pytest.importorskip("bmi_tester", reason="bmi-tester is in twin's test extras: run make setup")
    (tmp_path / "hillslope.yaml").write_text((LANDLAB / "hillslope.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "bmi_tester", "landlab.bmi.components:LinearDiffuserBMI",
                          "--root-dir", str(tmp_path), "--config-file", "hillslope.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    summaries = re.findall(r"=+ (\d+) passed(?:, (\d+) skipped)?.* in [0-9.]+s =+", text)
    assert len(summaries) == 4, text[-3000:]                  # one pytest session per stage
    assert sum(int(p) for p, _ in summaries) == 44 and "failed" not in text and "error" not in text.lower()


# -- coupling and parameters (tests/bmi_relax.py: du/dt = -rate (u - target) + source) ------------------------------
RELAX = "bmi_relax:RelaxBmi"


def _relax(tmp_path, state=("u",), imports=(), parameters=None, comm=MPI.COMM_SELF, **cfg):
    from twin.kinds.bmi.adapter import BmiModel

    return BmiModel("relax", comm, bmi_class=RELAX, config_file=_config(tmp_path, **cfg), state=state,
                    time_step=0.5, imports=imports, parameters=parameters)


def _spec(**kw):
    from twin.config.common import ParameterSpec

    return ParameterSpec.model_validate(kw)


def _instance_at(model, t):
    """The pooled BMI instance whose clock is at ``t`` (the one that ran the last member to ``t``)."""
    return next(b for clock, b in reversed(model._pool) if clock == pytest.approx(t))


def test_an_import_reaches_the_bmi_model_and_is_held_over_the_window(tmp_path):
    """An imported target field is given to the model before its update (read back with get_value) and held
    constant: u(t) = g + (u0 - g) exp(-k t) exactly, with the section's rate, not the configuration file's."""
    model = _relax(tmp_path, imports=["target"], parameters={"rate": _spec(value=0.4, units="1/s")},
                   shape=[3, 4], rate=2.0, u0=5.0, target=0.0)
    try:
        grid = model.field_grid("target")
        assert grid.shape == (4, 3) and grid.dof == 1
        g = np.linspace(1.0, 2.0, 12)
        vec = grid.create_global()
        grid.set_global(g, vec)
        model.set_import("target", vec)
        grid.set_global(np.zeros(12), vec)  # the model keeps its own copy: changing the vector afterwards is harmless
        x = model.initial_state()
        model.advance(x, 0.0, 1.0)
        np.testing.assert_allclose(_whole(model, x), g + (5.0 - g) * np.exp(-0.4 * 1.0), rtol=1e-13)
        bmi = _instance_at(model, 1.0)
        seen = np.empty(12)
        bmi.get_value("target", seen)
        np.testing.assert_array_equal(seen, g)
        assert bmi.get_value("rate", np.empty(1))[0] == 0.4 and bmi.updates == 10
        x.destroy()
        vec.destroy()
    finally:
        model.destroy()


def test_until_the_coupler_sets_an_import_every_member_gets_its_initial_value(tmp_path):
    """A member continuing on an instance another member's import reached must not see that import."""
    model = _relax(tmp_path, imports=["target"], rate=1.0, u0=3.0, target=1.0)
    try:
        x = model.initial_state()
        model.advance(x, 0.0, 0.5)
        np.testing.assert_allclose(_whole(model, x), 1.0 + 2.0 * np.exp(-0.5), rtol=1e-13)
        bmi = _instance_at(model, 0.5)
        bmi.set_value("target", np.full(12, 100.0))  # as if another member's coupler had set it
        model.advance(x, 0.5, 1.0)
        np.testing.assert_allclose(_whole(model, x), 1.0 + 2.0 * np.exp(-1.0), rtol=1e-13)
        x.destroy()
    finally:
        model.destroy()


def test_each_member_runs_with_its_own_parameter_value(tmp_path):
    """Members share a pool of BMI instances; each member's rate is set before its update (equilibrium 1/rate)."""
    spec = _spec(value=0.5, units="1/s", prior={"dist": "lognormal", "median": 0.3, "sigma": 0.5}, estimable=True)
    model = _relax(tmp_path, parameters={"rate": spec}, rate=9.0, source=1.0, u0=0.0)
    try:
        p = model.parameters["rate"]
        assert (p.value, p.units, p.estimable, p.transform) == (0.5, "1/s", True, "log")
        x = model.create_state()
        for t0, t1 in ((0.0, 2.0), (2.0, 4.0)):
            for rate in (0.5, 2.0, 0.25):
                model.set_parameter("rate", rate)
                # the member's state at t0 of a run from u = 0 with its own rate
                model.grid.set_global(np.full(12, (1 - np.exp(-rate * t0)) / rate), x)
                model.advance(x, t0, t1)
                np.testing.assert_allclose(_whole(model, x), (1 - np.exp(-rate * t1)) / rate, rtol=1e-12)
        with pytest.raises(ModelError, match=r"model 'relax': parameter 'rate' must be finite, got nan"):
            model.set_parameter("rate", float("nan"))
        x.destroy()
    finally:
        model.destroy()


def test_exports_are_the_state_variables_of_the_member(tmp_path):
    """With two state variables each export is one component of the given state, on a one-component grid."""
    model = _relax(tmp_path, state=("u", "target"), shape=[3, 4])
    try:
        assert model.grid.dof == 2
        whole = np.stack([np.arange(12.0), 100 + np.arange(12.0)], axis=1)
        x = model.create_state()
        model.grid.set_global(whole, x)
        out = model.exports(x)
        assert sorted(out) == ["target", "u"]
        for j, name in enumerate(("u", "target")):
            grid = model.field_grid(name)
            assert grid.dof == 1 and grid.shape == model.grid.shape
            np.testing.assert_array_equal(grid.allgather(out[name]).ravel(), whole[:, j])
            out[name].destroy()
        with pytest.raises(ModelError, match=r"has no coupling field 'flux': it exports its state variables \['u', "
                                             r"'target'\] and imports \[\]"):
            model.field_grid("flux")
        x.destroy()
    finally:
        model.destroy()


def test_bad_imports_and_parameters_are_refused_in_one_line(tmp_path):
    cases = [
        ({"imports": ["flux"]}, (r"import 'flux' is not an input variable of the model \(its inputs besides the "
                                 r"state: target, rate, source\); correct the name in the section")),
        ({"parameters": {"rates": _spec(value=1.0)}}, r"parameter 'rates' is not an input variable of the model"),
        ({"parameters": {"rate": _spec(value=1.0, units="1/day")}},
         r"parameter 'rate' is given in '1/day', the model takes it in '1/s'; give its value and prior in '1/s'"),
    ]
    for kw, message in cases:
        with pytest.raises(ModelError, match=r"model 'relax': BMI model 'relaxation' \(bmi_relax:RelaxBmi\): "
                                             + message) as err:
            _relax(tmp_path, **kw)
        assert "\n" not in str(err.value)
    model = _relax(tmp_path, imports=["target"])
    try:
        vec = model.field_grid("target").create_global()
        with pytest.raises(ModelError, match=r"unknown import 'source'; the section imports \['target'\] \(add it to "
                                             r"imports:\)"):
            model.set_import("source", vec)
        vec.destroy()
    finally:
        model.destroy()


def test_imports_and_parameters_in_the_section_are_checked_with_their_lines(tmp_path, monkeypatch):
    from twin.config.loader import load_campaign

    monkeypatch.chdir(tmp_path)
    (tmp_path / "relax.json").write_text("{}")
    text = f"""\
schema_version: 1
campaign: {{name: relax}}
models:
  relax:
    type: bmi
    bmi_class: {RELAX}
    config_file: relax.json
    state: [u]
    time_step: {{value: 0.5, units: s}}
    imports: [target]
    parameters:
      rate: {{value: 0.5, units: 1/s, prior: {{dist: lognormal, median: 0.3, sigma: 0.5}}, estimable: true}}
timeline: {{start: 0, end: 10, units: s}}
"""
    (tmp_path / "ok.yaml").write_text(text)
    section = load_campaign(tmp_path / "ok.yaml").config.models["relax"]
    assert section.imports == ["target"] and section.parameters["rate"].estimable
    bad = {"imports: [target]": ("imports: [u]", ":10:", "models.relax.imports[0]", "'u' is a state variable"),
           "      rate: {": ("      target: {", ":12:", "models.relax.parameters.target",
                             "'target' is an import; a BMI variable is the state, an import or a parameter")}
    for old, (new, line, key, message) in bad.items():
        (tmp_path / "bad.yaml").write_text(text.replace(old, new))
        with pytest.raises(ConfigError) as err:
            load_campaign(tmp_path / "bad.yaml")
        lines = err.value.lines()
        assert any(line in ln and key in ln and message in ln for ln in lines), lines


def test_the_conformance_kit_on_a_bmi_model_with_a_parameter(tmp_path, monkeypatch):
    from twin.config.loader import load_campaign
    from twin.conformance import PASS, Subject, check_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "relax.json").write_text(json.dumps({"shape": [3, 4], "source": 1.0, "u0": 0.0}))
    (tmp_path / "c.yaml").write_text(f"""\
schema_version: 1
campaign: {{name: relax}}
models:
  relax:
    type: bmi
    bmi_class: {RELAX}
    config_file: relax.json
    state: [u]
    time_step: {{value: 0.5, units: s}}
    parameters:
      rate: {{value: 0.5, prior: {{dist: lognormal, median: 0.3, sigma: 0.5}}, estimable: true}}
timeline: {{start: 0, end: 10, units: s}}
""")
    section = load_campaign(tmp_path / "c.yaml").config.models["relax"]
    report = check_model(Subject("relax", section), ranks=1)
    assert report.ok, report.text()
    status = {r.name: r.status for r in report.results}
    assert status["parameter transforms invert"] == PASS and status["checkpoint round trip"] == PASS, report.text()


# -- partial or careless BMI implementations (FaultyBmi): one line naming the method and the class --------------------
WHO = "model 'toy': BMI model 'toy decay' (test_bmi:FaultyBmi): "


def _faulty(tmp_path, **kw):
    return _model(tmp_path, bmi_class=FAULTY, **kw)


def _spec_rate(units="1/s"):
    from twin.config.common import ParameterSpec

    return {"rate": ParameterSpec.model_validate({"value": 0.2, "units": units})}


@pytest.mark.parametrize("method, call", [
    ("get_var_units", "get_var_units('z')"), ("get_var_itemsize", "get_var_itemsize('z')"),
    ("get_var_nbytes", "get_var_nbytes('z')"), ("get_var_type", "get_var_type('z')"),
    ("get_var_grid", "get_var_grid('z')"), ("get_grid_type", "get_grid_type(0)"), ("get_grid_rank", "get_grid_rank(0)"),
    ("get_grid_shape", "get_grid_shape(0, <2 values>)"), ("get_grid_spacing", "get_grid_spacing(0, <2 values>)"),
    ("get_grid_origin", "get_grid_origin(0, <2 values>)"), ("get_grid_size", "get_grid_size(0)"),
    ("get_time_units", "get_time_units()"), ("get_time_step", "get_time_step()"),
    ("get_start_time", "get_start_time()"), ("get_end_time", "get_end_time()"),
    ("get_input_var_names", "get_input_var_names()"), ("get_output_var_names", "get_output_var_names()"),
])
def test_a_bmi_method_that_raises_is_named_with_the_class(tmp_path, method, call):
    """Every BMI call goes through the adapter's wrapper: no bare 'NotImplementedError' without the method."""
    with pytest.raises(ModelError) as err:
        _faulty(tmp_path, parameters=_spec_rate(), **{"raise": method})
    text = str(err.value)
    assert text.startswith(f"{WHO}{call} raised NotImplementedError: no {method}; twin calls {method}: implement it "
                           "in test_bmi:FaultyBmi"), text
    assert "\n" not in text


@pytest.mark.parametrize("fault, error, line", [
    ("type_real", ModelError, "get_var_type('z') returned 'real', not a NumPy type name such as 'float64'; make "
                              "get_var_type of test_bmi:FaultyBmi return"),
    ("step_none", ModelError, "get_time_step() returned None, not a number; make get_time_step of "
                              "test_bmi:FaultyBmi return a number"),
    ("names_str", ModelError, "get_input_var_names() returned 'z', not a tuple of variable names"),
    ("value_str", SolverError, "get_value('z') returned <U1 values; get_var_type('z') says float64"),
    ("value_int", SolverError, "get_value('z') returned int32 values; get_var_type('z') says float64 (return values "
                               "of the declared type"),
    ("value_none", SolverError, "get_value('z', dest) returned None and left dest as twin gave it (all 12 values "
                                "NaN) (fill dest in place (dest[:] = values) or return the values)"),
])
def test_what_a_bmi_method_returns_is_checked_in_one_line(tmp_path, fault, error, line):
    """A result BMI 2.0 does not allow (None for a time step, 'real' for a type, integers or strings where float64 is
    declared, a get_value that neither fills dest nor returns the values: twin used its uninitialised memory) is
    refused when the model is built, naming the method and the class."""
    with pytest.raises(error) as err:
        _faulty(tmp_path, fault=fault)
    text = str(err.value)
    assert WHO.split(": ", 1)[1] + line in text, text
    assert "\n" not in text


def test_a_get_value_that_fills_nothing_is_refused_after_a_forecast_too(tmp_path):
    """A model whose get_value stops filling dest later (here: from the second instance's reads on) is refused at the
    forecast, not given twin's previous or uninitialised values."""
    model = _faulty(tmp_path)
    x = model.initial_state()
    try:
        bmi = model._pool[0][1]
        bmi.fault = "value_none"
        with pytest.raises(SolverError, match=r"solver failed at t=2: .*get_value\('z', dest\) returned None and left "
                                              r"dest as twin gave it \(all 12 values NaN\)"):
            model.advance(x, 0.0, 2.0)
    finally:
        x.destroy()
        model.destroy()


def test_set_value_gets_a_private_copy_the_model_may_keep(tmp_path):
    """A BMI that keeps the array set_value gives it (and changes it in place in update) runs as one that copies:
    on one rank twin gave it a read-only view of its own state vector, and the update failed."""
    model = _faulty(tmp_path, fault="keep_src", rate=0.3)
    x = model.initial_state()
    try:
        model.advance(x, 0.0, 2.0)
        np.testing.assert_allclose(_whole(model, x), (np.arange(12.0) + 1) * np.exp(-0.3 * 2.0), rtol=1e-14)
        bmi = _instance_at(model, 2.0)
        assert bmi.z.flags.writeable and not np.shares_memory(bmi.z, model.grid.owned_array(x, readonly=True))
        model.advance(x, 2.0, 4.0)
        np.testing.assert_allclose(_whole(model, x), (np.arange(12.0) + 1) * np.exp(-0.3 * 4.0), rtol=1e-14)
    finally:
        x.destroy()
        model.destroy()


def test_sys_exit_in_a_bmi_call_names_the_method_and_the_class(tmp_path):
    model = _faulty(tmp_path, exit_after=1.0)
    x = model.initial_state()
    try:
        with pytest.raises(SolverError) as err:
            model.advance(x, 0.0, 3.0)
        text = str(err.value)
        assert f"{WHO.split(': ', 1)[1]}update_until(3.0) called sys.exit(3)" in text, text
        assert "a BMI model should raise an exception, not exit" in text and "\n" not in text
        assert not model._pool
    finally:
        x.destroy()
        model.destroy()


def test_units_twin_cannot_read_are_a_warning_and_unknown(tmp_path, monkeypatch, caplog):
    """Nonsense units of the state are not passed on as units (the outputs are CF files): '1', with a WARNING naming
    the variable and the model's text; a parameter with such units is taken without 'units', and one given in units
    is refused with advice the campaign schema accepts."""
    import logging

    import twin.kinds.bmi.adapter as adapter

    monkeypatch.setattr(adapter, "_WARNED", set())
    monkeypatch.setattr(logging.getLogger("twin"), "propagate", True)
    nonsense = "furlongs per fortnight^^2 ???"
    units = {"z": nonsense, "rate": nonsense}
    with caplog.at_level(logging.WARNING, logger="twin.kinds.bmi"):
        model = _faulty(tmp_path, units=units, parameters=_spec_rate("1"))
    try:
        assert model.state_units == ("1",) and model.parameters["rate"].units == "1"
        for name in ("z", "rate"):
            assert f"gives the units of variable {name!r} as {nonsense!r}, which twin cannot read" in caplog.text
    finally:
        model.destroy()
    with pytest.raises(ModelError) as err:
        _faulty(tmp_path, units=units, parameters=_spec_rate("1/s"))
    assert f"parameter 'rate' is given in '1/s', the model takes it in {nonsense!r}, which twin cannot read " \
           "(get_var_units); give its value and prior in the model's units, without 'units'" in str(err.value)


def test_bmi_units_in_udunits_spelling_are_read_and_advised_as_the_schema_accepts(tmp_path):
    """BMI 2.0 asks for UDUNITS units ('s-1'): '1/s' is the same units, and for '1/day' the advice is a spelling the
    campaign's units: accepts (the model's own 's-1' is refused by the schema)."""
    from twin.config.common import ParameterSpec

    model = _faulty(tmp_path, units={"z": "m", "rate": "s-1"}, parameters=_spec_rate("1/s"))
    try:
        assert model.parameters["rate"].units == "s-1" and model.parameters["rate"].value == 0.2
    finally:
        model.destroy()
    with pytest.raises(ModelError) as err:
        _faulty(tmp_path, units={"z": "m", "rate": "s-1"}, parameters=_spec_rate("1/day"))
    text = str(err.value)
    assert "parameter 'rate' is given in '1/day', the model takes it in 's-1'; give its value and prior in " in text
    advised = text.split("give its value and prior in ")[1].split("'")[1]
    assert ParameterSpec.model_validate({"value": 1.0, "units": advised}).to("1/s") == 1.0, advised
