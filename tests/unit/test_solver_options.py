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
