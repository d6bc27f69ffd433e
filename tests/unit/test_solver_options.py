"""One path of solver options, for every built-in model type: a YAML ``solver:`` option reaches the model's
solver (the model's own default does not overwrite it, as the shallow-water model's did), and a PETSc option on the
command line beats the YAML.

Models are built as campaigns build them (:func:`twin.models.registry.create_model` from the shipped configs'
sections), then advanced one step so that every solver exists; the TS and KSP objects found on the model are asked
for their type.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mpi4py import MPI
from petsc4py import PETSc

from twin.config.loader import load_campaign
from twin.core.petsc import clear_options
from twin.models.registry import create_model, model_types

ROOT = Path(__file__).resolve().parents[2]

#: (config file, component, a YAML option that differs from the model's default, an advance in model time)
CASES = {
    "heat": ("quickstart.yaml", "heat", {"ts_type": "cn"}, 0.01),
    "lorenz96": ("lorenz96_etkf.yaml", "l96", {"ts_type": "ssp"}, 0.05),
    "shallow_water": ("atmosphere.yaml", "atmosphere", {"ts_type": "ssp"}, 300.0),
    "tumour": ("oncology.yaml", "tumour", {"ts_type": "beuler"}, 1.0),
    "structure": ("structure.yaml", "mast", {"ksp_type": "gmres"}, 0.04),
    "linear_advection_diffusion": (None, "lin", {"ts_type": "beuler"}, 0.01),
}


def _section(kind: str, solver: dict):
    path, name, _, _ = CASES[kind]
    if path is None:
        from twin.kinds.linear.config import LinearAdvectionDiffusionConfig

        return name, LinearAdvectionDiffusionConfig(type="linear_advection_diffusion", n=16, solver=solver)
    cfg = load_campaign(ROOT / "configs" / path).config.models[name]
    return name, cfg.model_copy(update={"solver": solver})


def _solvers(model) -> list:
    """The PETSc solvers a model holds (directly or one level down), by their object type."""
    found, seen = [], set()
    todo = [model]
    for _ in range(3):
        nxt = []
        for obj in todo:
            for v in list(vars(obj).values()) if hasattr(obj, "__dict__") else []:
                if isinstance(v, (PETSc.TS, PETSc.KSP, PETSc.SNES)) and v.handle not in seen:
                    seen.add(v.handle)
                    found.append(v)
                elif hasattr(v, "__dict__") and not isinstance(v, (PETSc.Object, type)) and id(v) not in seen:
                    seen.add(id(v))
                    nxt.append(v)
        todo = nxt
    return found


def _types(model, key: str) -> set[str]:
    out = set()
    for s in _solvers(model):
        if key == "ts_type" and isinstance(s, PETSc.TS):
            out.add(s.getType())
        if key == "ksp_type":
            ksp = s.getKSP() if isinstance(s, PETSc.SNES) else s.getSNES().getKSP() if isinstance(s, PETSc.TS) \
                else s if isinstance(s, PETSc.KSP) else None
            if ksp is not None:
                out.add(ksp.getType())
    return out


def test_every_model_type_is_covered():
    """Every model type of twin's own kinds (an installed plugin package, such as examples/lorenz63-plugin, is tested
    by its own tests and by the conformance kit)."""
    from importlib import metadata

    from twin.core.kinds import GROUP, kinds

    own = {ep.name for ep in metadata.entry_points(group=GROUP) if getattr(ep.dist, "name", None) == "twin"}
    # a BMI model (twin/kinds/bmi) runs someone else's code and has no PETSc solver to take options
    assert set(CASES) == {m.name for name in own for m in kinds()[name].model_types()} - {"bmi"}
    assert set(CASES) <= set(model_types())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_yaml_solver_option_reaches_the_solver(kind):
    name, cfg = _section(kind, CASES[kind][2])
    key, value = next(iter(CASES[kind][2].items()))
    model = create_model(name, cfg, MPI.COMM_SELF)
    try:
        x = model.initial_state()
        model.advance(x, 0.0, CASES[kind][3])
        x.destroy()
        assert PETSc.Options().getString(f"{name}_{key}") == value
        assert _types(model, key) == {value}, (kind, _types(model, key))
    finally:
        model.destroy()
        clear_options(f"{name}_")


def test_command_line_beats_yaml():
    """In a process started with ``-heat_ts_type bdf`` (the command line), the YAML's ``ts_type: cn`` loses."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from twin.core.petsc import init_petsc
init_petsc(["-heat_ts_type", "bdf"])
from mpi4py import MPI
from tests.unit.test_solver_options import _section, _types
from twin.models.registry import create_model
name, cfg = _section("heat", {{"ts_type": "cn", "ksp_type": "gmres"}})
model = create_model(name, cfg, MPI.COMM_SELF)
x = model.initial_state()
model.advance(x, 0.0, 0.01)
print(sorted(_types(model, "ts_type")), sorted(_types(model, "ksp_type")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['bdf'] ['gmres']"


PRECEDENCE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from twin.core.errors import ConfigError
from twin.core.petsc import init_petsc, set_default_options, set_options
PETSc = init_petsc(["-pt_ksp_max_it", "77"])
try:
    set_default_options("pt_", {{"ksp_rtol": 1e-12, "ksp_type": "cg", "ksp_atol": 1e-14, "ksp_max_it": 5}})
    set_options("pt_", {{"ksp_type": "gmres", "ksp_max_it": 9}})
except ConfigError as exc:
    print("error:", exc)
    raise SystemExit(2)
ksp = PETSc.KSP().create(PETSc.COMM_SELF)
ksp.setOptionsPrefix("pt_")
ksp.setFromOptions()
rtol, atol, _, max_it = ksp.getTolerances()
print(rtol, atol, max_it, ksp.getType())
"""


@pytest.mark.parametrize("where", ["PETSC_OPTIONS", ".petscrc", "-options_file"])
def test_options_from_petsc_options_and_files_beat_yaml_and_defaults(tmp_path, where):
    """Options PETSc read while it started from PETSC_OPTIONS or an options file win over the YAML's (``ksp_type``)
    and the model's defaults (``ksp_rtol``), as the command line's do (``ksp_max_it``); a model default nobody gave
    stays (``ksp_atol``). (A model default used to overwrite them: ``PETSC_OPTIONS=-heat_ksp_rtol 1e-6`` was lost.)"""
    import os

    given = "-pt_ksp_rtol 0.001 -pt_ksp_type bcgs"
    env, code = dict(os.environ), PRECEDENCE
    if where == "PETSC_OPTIONS":
        env["PETSC_OPTIONS"] = given
    elif where == ".petscrc":
        (tmp_path / ".petscrc").write_text(given.replace(" -", "\n-") + "\n")
    else:
        (tmp_path / "opts").write_text(given.replace(" -", "\n-") + "\n")
        code = code.replace('["-pt_ksp_max_it", "77"]', '["-pt_ksp_max_it", "77", "-options_file", "opts"]')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert out.stdout.split() == ["0.001", "1e-14", "77", "bcgs"]


def test_an_option_without_its_value_in_petsc_options_is_one_line(tmp_path):
    """``PETSC_OPTIONS=-pt_ksp_rtol`` (the number forgotten): PETSc would silently keep its default; one line."""
    import os

    env = dict(os.environ, PETSC_OPTIONS="-pt_ksp_rtol")
    out = subprocess.run([sys.executable, "-c", PRECEDENCE], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    assert out.stdout.strip() == ("error: component 'pt' (options prefix pt_): PETSc rejects -pt_ksp_rtol in PETSc's "
                                  "options: needs a number (e.g. 1e-8), got no value; change or drop -pt_ksp_rtol "
                                  "where it is set (PETSC_OPTIONS, an options file)")


# -- values PETSc would refuse: refused when the file is validated, and at run time before any solver reads them ----
QUICKSTART_SOLVER = "solver: {ts_type: beuler, ksp_type: cg, pc_type: jacobi, ksp_rtol: 1.0e-10}"


def _campaign(tmp_path, solver: str) -> Path:
    """configs/quickstart.yaml with its ``solver:`` line replaced; returns the file and the line the option is on."""
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    assert QUICKSTART_SOLVER in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(QUICKSTART_SOLVER, solver))
    return path


def _solver_line() -> int:
    lines = (ROOT / "configs" / "quickstart.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if QUICKSTART_SOLVER in line)


def test_type_names_are_petsc4pys():
    """The static list validation uses (it must not import PETSc) is what the installed petsc4py reports."""
    import petsc4py

    from twin.config.petsc_types import PETSC4PY_VERSION, TYPES
    from twin.config.solver_options import petsc4py_types

    assert petsc4py_types() == TYPES, "regenerate: python -m twin.config.solver_options"
    assert PETSC4PY_VERSION == petsc4py.__version__, "regenerate: python -m twin.config.solver_options"


@pytest.mark.parametrize("key, kind", [
    ("ksp_type", "KSP.Type"), ("sub_ksp_type", "KSP.Type"), ("mg_levels_ksp_type", "KSP.Type"),
    ("pc_type", "PC.Type"), ("sub_pc_type", "PC.Type"), ("ts_type", "TS.Type"), ("snes_type", "SNES.Type"),
    ("npc_snes_type", "SNES.Type"), ("tao_type", "TAO.Type"), ("ts_rk_type", "TS.RKType"),
    ("ts_arkimex_type", "TS.ARKIMEXType"), ("pc_factor_mat_solver_type", "Mat.SolverType"),
    ("-ksp_type", "KSP.Type"), ("ksp_rtol", "real"), ("snes_atol", "real"), ("ts_dt", "real"),
    ("ts_adapt_dt_min", "real"), ("ts_max_time", "real"), ("ksp_max_it", "int"), ("ts_max_steps", "int"),
    ("ksp_gmres_restart", "int"), ("pc_factor_levels", "int"),
    # values petsc4py does not list, flags, lists: left to PETSc
    ("snes_linesearch_type", None), ("ts_adapt_type", None), ("ts_trajectory_type", None), ("pc_asm_type", None),
    ("ksp_monitor", None), ("pc_gamg_threshold", None), ("tao_gatol", None), ("pc_hypre_type", None),
])
def test_which_options_are_checked(key, kind):
    from twin.core.petsc import option_kind

    assert option_kind(key) == kind


@pytest.mark.parametrize("key, value", [
    ("ksp_type", "cg"), ("ksp_type", "gmres"), ("pc_type", "jacobi"), ("sub_pc_type", "lu"), ("ts_type", "beuler"),
    ("ts_type", "rk"), ("ts_rk_type", "4"), ("ts_rk_type", 4), ("ts_rk_type", "5dp"), ("snes_type", "ksponly"),
    ("pc_factor_mat_solver_type", "mumps"), ("tao_type", "lmvm"), ("ksp_rtol", 1e-10), ("ksp_rtol", 0),
    ("ksp_rtol", "1e-8"), ("ksp_rtol", "1.0e-8"), ("ksp_rtol", ".5"), ("ksp_rtol", "DEFAULT"),
    ("ksp_divtol", "INFINITY"), ("ksp_max_it", 100), ("ksp_max_it", "100"), ("ksp_max_it", "PETSC_DEFAULT"),
    ("ts_max_steps", -1), ("ksp_monitor", None), ("ksp_monitor", True), ("snes_linesearch_type", "bt"),
    ("ts_adapt_type", "whatever"),
])
def test_good_values_pass(key, value):
    from twin.config.solver_options import option_problem

    assert option_problem(key, value) is None


@pytest.mark.parametrize("key, value, words", [
    ("ksp_type", "nonsense", ["unknown KSP type 'nonsense'", "PETSc knows: bcgs", "cg", "plugin library"]),
    ("ksp_type", "cgg", ["unknown KSP type 'cgg'", "did you mean 'cg'?"]),
    ("ksp_type", "CG", ["unknown KSP type 'CG'"]),
    ("sub_pc_type", "lux", ["unknown PC type 'lux'", "did you mean 'lu'?"]),
    ("ts_type", "nonsense", ["unknown TS type 'nonsense'", "beuler"]),
    ("snes_type", "newton", ["unknown SNES type 'newton'"]),
    ("ts_rk_type", "9", ["unknown TS RK type '9'", "5dp"]),
    ("pc_factor_mat_solver_type", "mumpz", ["unknown Mat Solver type 'mumpz'", "did you mean 'mumps'?"]),
    ("ksp_type", None, ["needs the name of a KSP type"]),
    ("ksp_type", True, ["needs the name of a KSP type"]),
    ("ksp_rtol", "abc", ["needs a number", "'abc'"]),
    ("ksp_rtol", "1,2", ["needs a number"]),
    ("ksp_rtol", None, ["needs a number", "no value"]),
    ("ksp_rtol", True, ["needs a number"]),
    ("ksp_max_it", 10.5, ["needs a whole number", "10.5"]),
    ("ksp_max_it", 100.0, ["needs a whole number"]),
    ("ksp_max_it", "1e3", ["needs a whole number", "'1e3'"]),
    ("ts_dt", "fast", ["needs a number"]),
])
def test_bad_values_say_what_is_wrong(key, value, words):
    from twin.config.solver_options import option_problem

    message = option_problem(key, value)
    assert message is not None
    for w in words:
        assert w in message, message
    assert len(message) < 450


@pytest.mark.parametrize("text", ["abc", "1e-3", "DEFAULT", "PETSC_DEFAULT", "DECIDE", "INFINITY", "-INFINITY",
                                  "PETSC_INFINITY", "1,2", "1.0e+2", ".5", "1.", "+3", "true", "1e3", "10.5", "10",
                                  "-5", "1d3", "1_000", "mpi"])
def test_number_rule_agrees_with_petsc(text):
    """twin's rule for numbers (used without PETSc when a file is validated) says what PETSc's own parser says."""
    from twin.core.petsc import number_problem

    opts = PETSc.Options()
    opts.setValue("twin_probe_number", text)
    try:
        for kind, get in (("real", opts.getReal), ("int", opts.getInt)):
            try:
                get("twin_probe_number")
                petsc_ok = True
            except PETSc.Error:
                petsc_ok = False
            assert (number_problem(kind, text) is None) == petsc_ok, (kind, text)
    finally:
        opts.delValue("twin_probe_number")


@pytest.mark.parametrize("solver, path, words", [
    ("solver: {ts_type: beuler, ksp_type: nonsense, pc_type: jacobi}", "models.heat.solver.ksp_type",
     ["unknown KSP type 'nonsense'"]),
    ("solver: {ts_type: nonsense, ksp_type: cg}", "models.heat.solver.ts_type", ["unknown TS type 'nonsense'"]),
    ("solver: {ts_type: beuler, ksp_rtol: abc}", "models.heat.solver.ksp_rtol", ["needs a number", "'abc'"]),
    ("solver: {ts_type: beuler, ksp_rtol: null}", "models.heat.solver.ksp_rtol", ["needs a number"]),
    ("solver: {ts_type: beuler, pc_type: bjacobi, sub_pc_type: ilux}", "models.heat.solver.sub_pc_type",
     ["unknown PC type 'ilux'", "did you mean 'ilu'?"]),
    ("solver: {ts_type: beuler, ksp_max_it: 2.5}", "models.heat.solver.ksp_max_it", ["needs a whole number"]),
])
def test_a_bad_value_in_a_file_is_refused_at_its_line(tmp_path, solver, path, words):
    from twin.core.errors import ConfigError

    bad = _campaign(tmp_path, solver)
    with pytest.raises(ConfigError) as info:
        load_campaign(bad)
    lines = info.value.lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{bad}:{_solver_line()}:"), lines
    assert f": {path}: " in lines[0], lines
    for w in words:
        assert w in lines[0], lines


def test_good_values_in_a_file_pass(tmp_path):
    good = _campaign(tmp_path, "solver: {ts_type: rk, ts_rk_type: 4, ksp_type: gmres, pc_type: bjacobi, "
                               "sub_pc_type: ilu, ksp_rtol: '1e-8', ksp_max_it: 200, snes_linesearch_type: bt}")
    assert load_campaign(good).config.models["heat"].solver["ts_rk_type"] == 4


def test_validation_does_not_import_petsc(tmp_path):
    """Loading a campaign must not initialise PETSc (twin run passes the command line's options to it later) nor
    MPI (a workflow's driver process)."""
    bad = _campaign(tmp_path, "solver: {ts_type: beuler, ksp_type: nonsense}")
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from twin.config import load_campaign
from twin.core.errors import ConfigError
load_campaign({str(ROOT / "configs" / "quickstart.yaml")!r})
try:
    load_campaign({str(bad)!r})
except ConfigError:
    pass
print("petsc4py.PETSc" in sys.modules, "mpi4py.MPI" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("options, words", [
    ({"ksp_type": "nonsense"}, ["-zz_ksp_type nonsense", "Unable to find requested KSP type nonsense"]),
    ({"ts_type": "nonsense"}, ["-zz_ts_type nonsense", "TS type"]),
    ({"ts_rk_type": "9"}, ["-zz_ts_rk_type 9"]),
    ({"ksp_rtol": "abc"}, ["-zz_ksp_rtol abc", "needs a number"]),
    ({"ksp_max_it": None}, ["-zz_ksp_max_it ", "needs a whole number", "no value"]),
    ({"sub_pc_type": "lux"}, ["Unable to find requested PC type lux", "did you mean 'lu'?"]),
])
def test_options_from_outside_are_checked_by_petsc(options, words):
    """Options under a model's prefix that twin did not put there (PETSC_OPTIONS, an options file; the command
    line in tests/integration/test_solver_option_errors.py) are asked of PETSc when the model sets its options,
    before any solver reads them: one line naming the component, the option and PETSc's reason."""
    from twin.core.errors import ConfigError
    from twin.core.petsc import set_default_options, set_options

    opts = PETSc.Options()
    for k, v in options.items():
        opts.setValue(f"zz_{k}", "" if v is None else v)
    try:
        for call in (set_options, set_default_options):
            with pytest.raises(ConfigError) as info:
                call("zz_", {"snes_type": "ksponly"})
            (line,) = info.value.lines()
            assert line.startswith("component 'zz' (options prefix zz_): PETSc rejects "), line
            assert "in PETSc's options" in line and "where it is set (PETSC_OPTIONS, an options file)" in line, line
            for w in words:
                assert w in line, line
    finally:
        for k in options:
            opts.delValue(f"zz_{k}")
        clear_options("zz_")


def test_options_from_outside_that_petsc_has_pass():
    """A type of this PETSc build passes, also a second time (remembered)."""
    from twin.core.petsc import check_options, set_default_options

    opts = PETSc.Options()
    given = {"zz_ts_type": "rk", "zz_ts_rk_type": "4", "zz_ksp_type": "cg", "zz_pc_type": "bjacobi",
             "zz_sub_pc_type": "ilu", "zz_ksp_rtol": "1e-9", "zz_ksp_max_it": "50", "zz_ksp_monitor": ""}
    for k, v in given.items():
        opts.setValue(k, v)
    try:
        set_default_options("zz_", {"snes_type": "ksponly"})
        check_options("zz_")
        assert opts.getString("zz_ts_type") == "rk"
    finally:
        for k in given:
            opts.delValue(k)
        clear_options("zz_")


def test_options_twin_puts_there_reach_the_solver():
    """What set_options puts under a prefix (a file's solver: section, checked when it was validated, or a
    constructor's solver=) is left for the solvers to read: twin check-model gives a model unknown types this way
    to see whether its solvers read the options under its prefix."""
    from twin.core.errors import ConfigError
    from twin.core.petsc import set_from_options, set_options

    ksp = PETSc.KSP().create(PETSc.COMM_SELF)
    ksp.setOptionsPrefix("zz_")
    try:
        set_options("zz_", {"ksp_type": "twin_check_unknown_type"})
        with pytest.raises(ConfigError, match="Unable to find requested KSP type twin_check_unknown_type"):
            set_from_options(ksp)
    finally:
        ksp.destroy()
        clear_options("zz_")


def test_set_from_options_names_the_component():
    """A PETSc error while a solver applies its options is one line with PETSc's reason."""
    from twin.core.errors import ConfigError
    from twin.core.petsc import set_from_options

    opts = PETSc.Options()
    opts.setValue("yy_ksp_type", "nonsense")  # past set_options' check, as an option set some other way would be
    ksp = PETSc.KSP().create(PETSc.COMM_SELF)
    ksp.setOptionsPrefix("yy_")
    try:
        with pytest.raises(ConfigError) as info:
            set_from_options(ksp)
        (line,) = info.value.lines()
        assert line == ("component 'yy' (options prefix yy_): PETSc rejected its solver options: Unable to find "
                        "requested KSP type nonsense; check models.yy.solver or the -yy_ options on the command line")
        opts.setValue("yy_ksp_type", "cg")
        set_from_options(ksp)
        assert ksp.getType() == "cg"
    finally:
        opts.delValue("yy_ksp_type")
        ksp.destroy()
