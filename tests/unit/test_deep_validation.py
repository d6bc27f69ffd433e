"""``twin validate`` checks a campaign against what its model sections say about their models (twin.config.deep):
networks that do not fit the model, variables and components it lacks, positions outside its domain, unknown QoIs
and controls are refused with the file's line, before anything is built; and what the sections say is what the
built models report, for every shipped campaign."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mpi4py import MPI

from twin.config.loader import load_campaign
from twin.core.errors import ConfigError
from twin.models.registry import create_model

ROOT = Path(__file__).resolve().parents[2]
L96 = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
ATMOSPHERE = (ROOT / "configs" / "atmosphere.yaml").read_text()
L96_OBS = "observations: [{type: all_points, component: 0, error_std: 1.0}]"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_what_the_sections_say_is_what_the_models_report(path):
    cfg = load_campaign(path).config
    for name, section in cfg.models.items():
        meta = section.metadata()
        model = create_model(name, section, MPI.COMM_SELF)
        x = model.initial_state()
        try:
            assert meta.type == model.type_name
            assert meta.state_names == tuple(model.state_names)
            assert len(meta.extent) == len(model.grid.extent)
            for mine, built in zip(meta.extent, model.grid.extent):
                assert mine == pytest.approx(tuple(built), rel=1e-12)
            assert meta.length_units == model.length_units
            assert set(meta.parameters) == set(model.parameters)
            assert set(meta.qois) == set(model.qoi(x, 0.0))
            if meta.exports is not None:  # the coupling fields (the kinds that couple)
                fields = model.exports(x)
                assert set(meta.exports) == set(fields)
                for v in fields.values():
                    if v is not x:
                        v.destroy()
                for field in meta.imports:
                    assert model.field_grid(field) is not None
        finally:
            x.destroy()
            model.destroy()


def _refused(tmp_path, text: str, *expect: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_campaign(path)
    message = str(err.value)
    for e in expect:
        assert e in message, message
    return message


@pytest.mark.parametrize("network, expect", [
    ("[{type: gridded, variables: [x], error_std: 1.0}]",
     ["assimilation.observations[0].type", "a 'gridded' network observes models of type shallow_water; model 'l96' "
      "is of type 'lorenz96'"]),
    ("[{type: imaging, error_std: 0.1}]", ["'imaging' network observes models of type tumour"]),
    ("[{type: all_points, variable: h, error_std: 1.0}]",
     ["assimilation.observations[0].variable", "'h' is not a state variable of model 'l96'; it has ['x']"]),
    ("[{type: all_points, component: 1, error_std: 1.0}]", ["has 1 state component(s) ['x'], no component 1"]),
    ("[{type: points, points: [[3.0], [45.0]], error_std: 1.0}]",
     ["assimilation.observations[0].points[1]", "point [45.0] lies outside the domain of model 'l96', [[0.0, 40.0]] m"]),
    ("[{type: points, points: [[3.0, 1.0]], error_std: 1.0}]", ["points need 1 coordinate(s) each"]),
])
def test_networks_that_do_not_fit_the_model_are_refused(tmp_path, network, expect):
    _refused(tmp_path, L96.replace(L96_OBS, f"observations: {network}"), *expect)


def test_positions_are_checked_in_their_own_units(tmp_path):
    # the synop stations are given in km on a 2000 km domain: 1950 km is inside, 2050 km outside
    inside = ATMOSPHERE.replace("[150, 200], [600, 350]", "[150, 200], [1950, 350]")
    load_campaign(_write(tmp_path / "in.yaml", inside))
    _refused(tmp_path, ATMOSPHERE.replace("[150, 200], [600, 350]", "[150, 200], [2050, 350]"),
             "assimilation.observations[0].points[1]", "point [2050.0, 350.0] km lies outside the domain of model "
             "'atmosphere', [[0.0, 2000000.0], [0.0, 2000000.0]] m")
    _refused(tmp_path, ATMOSPHERE.replace("variables: [h, u, v]\n      error_std: {h: 0.3",
                                          "variables: [h, w]\n      error_std: {h: 0.3"),
             "'w' is not a state variable of model 'atmosphere'; it has ['h', 'u', 'v']")
    _refused(tmp_path, ATMOSPHERE.replace("[150, 200], [600, 350]", "[150, 200], [600]"),
             "assimilation.observations[0].points[1]", "points need 2 coordinate(s) each", "this one has 1")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_qois_and_controls_are_refused(tmp_path):
    _refused(tmp_path, L96.replace("qois: [mean, energy]", "qois: [mean, energy, enstrophy]"),
             "decision.qois[2]", "'enstrophy' is not a quantity of interest of the model; it has ['energy', 'mean']")
    var = (ROOT / "configs" / "lorenz96_4dvar.yaml").read_text()
    control = "    - {name: F, std: 1.0,"
    assert control in var
    text = var.replace(control, "    - {name: G, std: 1.0,")
    _refused(tmp_path, text, "assimilation.parameters[0].name", "'G' is not a parameter of model 'l96'; it has ['F']")


def test_a_coupled_campaign_names_the_component_a_network_observes(tmp_path):
    text = (ROOT / "configs" / "structure.yaml").read_text()
    observed = "      model: mast                         # the component observed"
    assert observed in text
    _refused(tmp_path, text.replace(observed, observed.replace("mast", "tower")),
             "'tower' is not a model of the campaign")
    _refused(tmp_path, text.replace(observed + "; positions in its metres\n", ""),
             "the campaign has 2 models (atmosphere, mast): name the one this network observes with 'model:'")


def test_coupling_routes_are_checked_against_their_components(tmp_path):
    """Found by a probe: a misspelt route field and a site off the domain passed validate and failed when the coupled
    model was built (after a Slurm job's wait), without file and line."""
    mech = (ROOT / "configs" / "tumour_mechanics.yaml").read_text()
    route = "- {from: tumour.cellularity, to: tissue.eigenstrain,"
    assert route in mech
    _refused(tmp_path, mech.replace(route, "- {from: tumour.cellularity, to: tissue.eigenstrian,"),
             "coupling.routes[0].to: component 'tissue' (structure) imports the fields ['body_force', 'eigenstrain', "
             "'wind', 'traction_left', 'traction_right', 'traction_bottom', 'traction_top'], not 'eigenstrian'; did "
             "you mean 'tissue.eigenstrain'?")
    _refused(tmp_path, mech.replace(route, "- {from: tumour.stress, to: tissue.eigenstrain,"),
             "coupling.routes[0].from: component 'tumour' (tumour) exports the fields ['density', 'cellularity'], not "
             "'stress'")
    wind = (ROOT / "configs" / "structure.yaml").read_text()
    site = "site: {point: [16, 32], units: km}"
    assert site in wind
    _refused(tmp_path, wind.replace(site, "site: {point: [16, 32, 5], units: km}"),
             "coupling.routes[0].site.point: the site has 3 coordinate(s); the domain of 'atmosphere' is 2-D")
    _refused(tmp_path, wind.replace(site, "site: {point: [16, 320], units: km}"),
             "coupling.routes[0].site.point: the site [16.0, 320.0] km lies outside the domain of 'atmosphere' "
             "([0, 64000] x [0, 64000] m)")


def test_twin_validate_refuses_with_the_line_and_exit_code_2(tmp_path):
    path = _write(tmp_path / "c.yaml", L96.replace(L96_OBS, "observations: [{type: gridded, error_std: 1.0}]"))
    out = subprocess.run([sys.executable, "-m", "twin.cli", "validate", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    line = next(n for n, s in enumerate(path.read_text().splitlines(), 1) if "type: gridded" in s)
    assert f"c.yaml:{line}:" in out.stderr and "observes models of type shallow_water" in out.stderr
    assert "Traceback" not in out.stderr


def test_twin_validate_checks_every_experiment_of_the_matrix(tmp_path):
    """A misspelled matrix key or a matrix value that another check refutes fails at validate, naming the
    experiment, not when that experiment starts."""
    cases = [("matrix: {assimilation.inflaton.multiplicative: [1.0, 1.1]}",
              "(experiment multiplicative-1.1): assimilation.inflaton: unknown key 'inflaton'; did you mean "
              "'inflation'?"),
             ("matrix: {decision.qois: [[mean, energy], [energy, enstrophy]]}",
              "(experiment qois-energy-enstrophy): decision.qois[1]: 'enstrophy' is not a quantity of interest")]
    for i, (matrix, expect) in enumerate(cases):
        path = _write(tmp_path / f"m{i}.yaml", L96.replace("experiments:\n", f"experiments:\n  {matrix}\n", 1))
        out = subprocess.run([sys.executable, "-m", "twin.cli", "validate", str(path)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        assert expect in out.stderr, out.stderr


def test_observation_files_are_checked_at_validate(tmp_path):
    """A file network's file must exist (relative to the campaign file), its variables must be state variables,
    it is not mixed with synthetic networks; every method reads files (ES-MDA and 4D-Var too), and coupled campaigns,
    where the network names the component it observes and that component's state variables."""
    net = "observations: [{type: file, file: data/obs.nc, variables: {x: {name: x_obs, units: '1'}}}]"
    msg = _refused(tmp_path, L96.replace(L96_OBS, net), "assimilation.observations[0].file")
    assert "data/obs.nc does not exist" in msg and "relative to the campaign file" in msg
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "obs.nc").write_bytes(b"CDF\x01")
    path = _write(tmp_path / "c.yaml", L96.replace(L96_OBS, net))
    cfg = load_campaign(path).config
    assert cfg.assimilation.observations[0].file == str((tmp_path / "data" / "obs.nc").resolve())
    _refused(tmp_path, L96.replace(L96_OBS, net.replace("{x: {", "{h: {")), "'h' is not a state variable of model 'l96'")
    mixed = L96.replace(L96_OBS, net.replace("}}}]", "}}}, {type: all_points, error_std: 1.0}]"))
    _refused(tmp_path, mixed, "through files or a twin experiment through synthetic networks, not both")
    esmda = _write(tmp_path / "esmda.yaml", L96.replace(L96_OBS, net).replace("method: etkf", "method: esmda"))
    assert load_campaign(esmda).config.assimilation.method == "esmda"
    superobs = net.replace("}}}]", "}}, superobs: {spacing: 2}}]")
    _refused(tmp_path, L96.replace(L96_OBS, superobs).replace("method: etkf", "method: esmda"),
             "assimilation.observations[0].superobs", "super-observations are made per cycle", "use thinning")
    var = (ROOT / "configs" / "lorenz96_4dvar.yaml").read_text()
    assert L96_OBS in var
    fourdvar = _write(tmp_path / "4dvar.yaml", var.replace(L96_OBS, net))
    assert load_campaign(fourdvar).config.assimilation.observations[0].type == "file"
    coupled = (ROOT / "configs" / "structure.yaml").read_text()
    gauges = coupled[coupled.index("    - type: strain_gauges"):coupled.index("\n\ndecision:")]
    text = coupled.replace(gauges, "    - {type: file, model: mast, file: data/obs.nc, variables: {u_x: {name: u, "
                                   "units: m}}}")
    assert load_campaign(_write(tmp_path / "coupled.yaml", text)).config.assimilation.observations[0].model == "mast"
    _refused(tmp_path, text.replace("model: mast, ", ""), "assimilation.observations[0].model",
             "the campaign has 2 models (atmosphere, mast): name the one this network observes")
    _refused(tmp_path, text.replace("model: mast", "model: tower"), "assimilation.observations[0].model",
             "'tower' is not a model of the campaign")
    _refused(tmp_path, text.replace("{u_x:", "{h:"), "assimilation.observations[0].variables",
             "'h' is not a state variable of model 'mast'")


@pytest.mark.parametrize("window, advice", [
    ("1000", "give a window of at most 10 day"),
    ("7", "give a window that divides it (5 day or 10 day)"),
    ("3", "give a window that divides it (2.5 day or 3.33333 day)"),
])
def test_a_coupling_window_that_does_not_divide_the_output_interval_is_refused(tmp_path, window, advice):
    """Found by a probe: a forecast stops at every output time and cuts its coupling windows there, so ``window: 1000
    day`` with outputs every 10 days coupled every 10 days, and ``window: 7`` ran windows of 7, 3, 4, 6 ... days,
    silently. Refused at the window's line; a divisor (2.5, 5, 10) is accepted."""
    mech = (ROOT / "configs" / "tumour_mechanics.yaml").read_text()
    before = "window: {value: 5, units: day}"
    assert before in mech and "output_every: 10.0" in mech
    _refused(tmp_path, mech.replace(before, f"window: {{value: {window}, units: day}}"),
             f"coupling.window: the window ({window} day) does not divide timeline.output_every (10 day): a forecast "
             f"stops at every output time, which would cut windows short there; {advice}")
    for fits in ("2.5", "10", "240"):
        load_campaign(_write(tmp_path / "ok.yaml", mech.replace(before, f"window: {{value: {fits}, units: hour}}")))


def test_every_kind_declares_whether_its_models_have_an_adjoint_truly():
    """What a kind declares (:attr:`twin.core.kinds.ModelType.adjoint`, read by ``twin validate`` without building
    the model) is what its class does."""
    from twin.core.kinds import kinds

    declared = {m.name: m for k in kinds().values() for m in k.model_types() if m.adjoint is not None}
    assert {"heat", "lorenz96", "tumour", "shallow_water", "structure", "linear_advection_diffusion"} <= set(declared)
    for name, m in declared.items():
        assert m.model().has_adjoint() is m.adjoint, name


NO_ADJOINT = '''\
from twin.kinds.lorenz96.config import Lorenz96Config
from twin.kinds.lorenz96.model import Lorenz96
from twin.models.base import Model


class Plain(Lorenz96):
    """Lorenz-96 without its adjoint: a user's model that has none."""

    config_class = Lorenz96Config
    adjoint = Model.adjoint
'''


def test_4dvar_on_a_model_without_an_adjoint_is_refused_at_validate(tmp_path, monkeypatch):
    """Found by a probe: ``twin validate`` passed 4D-Var on a model type without an adjoint (a BMI model, a new-model
    scaffold), and the run failed inside TAO with 'compute function generated Inf or NaN; the model diverged'. Now
    ``twin validate`` refuses it at ``assimilation.method``; a type that declares nothing is refused in one line when
    its 4D-Var starts."""
    (tmp_path / "plainmod.py").write_text(NO_ADJOINT)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = (ROOT / "configs" / "lorenz96_4dvar.yaml").read_text().replace("type: lorenz96", 'type: "plainmod:Plain"')
    message = _refused(tmp_path, text, "assimilation.method", "4D-Var needs the adjoint of model 'l96', and model "
                       "type 'plainmod:Plain' has none: use an ensemble method (etkf, enkf, letkf, esmda) or give "
                       "the model an adjoint")
    line = next(n for n, s in enumerate(text.splitlines(), 1) if "method: 4dvar" in s)
    assert f"c.yaml:{line}:" in message, message
    # the same class by a path that declares nothing: refused when 4D-Var starts, not by the minimiser
    from twin.campaign.windows import WindowPlan
    from twin.core.kinds import model_types

    loaded = load_campaign(ROOT / "configs" / "lorenz96_4dvar.yaml")
    import plainmod

    model = plainmod.Plain.from_config("l96", loaded.config.models["l96"], MPI.COMM_SELF)
    try:
        with pytest.raises(ConfigError, match=r"4D-Var needs the adjoint of model 'l96', and model type 'lorenz96' "
                                              r"has none"):
            WindowPlan(loaded.config, model)
    finally:
        model.destroy()
    assert model_types()["lorenz96"].adjoint is True
