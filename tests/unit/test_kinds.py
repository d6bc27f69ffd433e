"""Twin kinds: the built-in kinds are found through the ``twin.kinds`` entry points like any installed package, each
declares matching configuration sections and classes, a package of one's own is found the same way, broken or
conflicting packages get a one-line error, and the general layers never name a kind."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from twin.core import kinds as registry
from twin.models.registry import model_types

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = {"heat", "linear", "lorenz96", "shallow_water", "structure", "tumour"}
#: the general layers: everything in twin/ except the kinds themselves
GENERAL = [p for p in (ROOT / "twin").rglob("*.py") if "kinds" not in p.relative_to(ROOT / "twin").parts[:1]]


def test_builtin_kinds_come_from_entry_points():
    from importlib import metadata

    eps = {ep.name: ep.value for ep in metadata.entry_points(group=registry.GROUP)}
    assert BUILTIN <= set(eps)
    assert all(eps[k] == f"twin.kinds.{k}:KIND" for k in BUILTIN)
    assert BUILTIN <= set(registry.kinds())


def test_every_model_type_has_a_section_and_a_class_that_answers_to_it():
    declared = registry.model_types()
    assert {"heat", "linear_advection_diffusion", "lorenz96", "shallow_water", "structure", "tumour"} <= set(declared)
    for name, cls in model_types().items():
        assert cls.type_name == name
        assert declared[name].config.model_fields["type"].annotation.__args__[0] == name
        assert callable(getattr(cls, "from_config", None)), name


def test_network_and_decision_sections_are_the_kinds():
    from twin.config.decision import decision_section_type
    from twin.config.observation_networks import network_type_names

    assert {"points", "all_points", "stations", "swath", "gridded", "imaging", "strain_gauges"} == \
        set(network_type_names()) & {"points", "all_points", "stations", "swath", "gridded", "imaging",
                                     "strain_gauges"}
    fields = decision_section_type().model_fields
    assert {"oncology", "structure", "sensors", "qois", "horizon"} <= set(fields)
    assert registry.kind_of("tumour").name == "tumour"
    assert registry.kind_of("coupled") is None


def _names_of_kinds() -> set[str]:
    names = set(BUILTIN)
    for kind in registry.kinds().values():
        names |= {m.name for m in kind.model_types()} | {n.name for n in kind.network_types()}
        names |= {d.key for d in kind.decision_types()}
    names |= {"oncology", "atmosphere"}  # the flagships' words for the tumour and shallow-water kinds
    # ordinary words the general layers use in their own sense: linear interpolation of the coupling maps, and the
    # general ``gridded`` observation set of the top-level ``observations:`` list
    return names - {"linear", "gridded"}


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (docstrings may explain with examples)."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_general_layers_never_name_a_kind():
    """No general module compares with, dispatches on or imports a kind's name: kind names, their model and
    network types and decision keys never appear as string literals or identifiers outside twin/kinds/."""
    names = _names_of_kinds()
    found = []
    for path in GENERAL:
        tree = ast.parse(path.read_text(), str(path))
        for line, text in _code_strings(tree):
            if text in names:
                found.append(f"{path.relative_to(ROOT)}:{line}: string {text!r}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(m.startswith("twin.kinds") for m in mods):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {mods}")
            if isinstance(node, ast.Attribute) and node.attr in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: attribute .{node.attr}")
    assert not found, "\n".join(found)


def _plugin(tmp_path: Path, body: str, name: str = "glacier") -> dict[str, str]:
    """A package installed the way pip installs one (a .dist-info with entry_points.txt on the path)."""
    pkg = tmp_path / f"{name}_kind"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    info = tmp_path / f"{name}_kind-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[twin.kinds]\n{name} = {name}_kind:KIND\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def _run(env, code: str):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_a_users_package_is_found_like_the_builtin_ones(tmp_path):
    env = _plugin(tmp_path, """
        from typing import Literal
        from twin.config.observation_networks import NetworkBase
        from twin.core.kinds import NetworkType, TwinKind

        class CrevasseNetwork(NetworkBase):
            type: Literal["crevasse_radar"]
            depth: float

        class Glacier(TwinKind):
            name = "glacier"
            def network_types(self):
                return (NetworkType("crevasse_radar", CrevasseNetwork, lambda *a: None),)

        KIND = Glacier()
        """)
    out = _run(env, "from twin.core.kinds import kinds; from twin.config.observation_networks import "
                    "network_type_names; print(sorted(kinds())); print(network_type_names())")
    assert out.returncode == 0, out.stderr
    assert "'glacier'" in out.stdout and "crevasse_radar" in out.stdout


@pytest.mark.parametrize("body, expect", [
    ("raise ImportError('no module named glacier_core')",
     "entry point 'glacier = glacier_kind:KIND' (group twin.kinds): cannot be imported (ImportError: no module"),
    ("KIND = 42", "is a int, not a twin.core.kinds.TwinKind"),
    ("from twin.core.kinds import TwinKind\nclass K(TwinKind):\n    name = 'ice'\nKIND = K()",
     "the kind calls itself 'ice'"),
    ("from twin.core.kinds import ModelType, TwinKind\nclass K(TwinKind):\n    name = 'glacier'\n"
     "    def model_types(self):\n        return (ModelType('tumour', object, lambda: object),)\nKIND = K()",
     "model type 'tumour' is declared by the kinds 'glacier' (entry point 'glacier = glacier_kind:KIND' of package "
     "glacier-kind 0.1) and 'tumour' (entry point 'tumour = twin.kinds.tumour:KIND' of package twin "),
    # a package that ends the process while imported: before, every twin command exited 0 having done nothing
    ("import sys\nsys.exit(0)", "glacier_kind:KIND' (group twin.kinds): cannot be imported (SystemExit: 0)"),
    # declarations that raise or are not sequences of their class: before, a traceback from whichever command asked
    ("from twin.core.kinds import TwinKind\nclass K(TwinKind):\n    name = 'glacier'\n"
     "    def model_types(self):\n        raise ValueError('boom')\nKIND = K()",
     "(group twin.kinds): K.model_types() raised ValueError: boom; fix or uninstall that package"),
    ("from twin.core.kinds import TwinKind\nclass K(TwinKind):\n    name = 'glacier'\n"
     "    def network_types(self):\n        return 5\nKIND = K()",
     "K.network_types() returned int '5', not a sequence of twin.core.kinds.NetworkType"),
    ("from twin.core.kinds import TwinKind\nclass K(TwinKind):\n    name = 'glacier'\n"
     "    def decision_types(self):\n        return ['radar']\nKIND = K()",
     "K.decision_types() returned list \"['radar']\", not a sequence of twin.core.kinds.DecisionType"),
])
def test_a_broken_or_conflicting_package_gets_one_clear_line(tmp_path, body, expect):
    env = _plugin(tmp_path, body)
    out = _run(env, "import sys\nfrom twin.core.errors import ConfigError\nfrom twin.core.kinds import kinds\n"
                    "try:\n    kinds()\nexcept ConfigError as e:\n    print(e); sys.exit(3)")
    assert out.returncode == 3, out.stdout + out.stderr
    assert expect in out.stdout
    assert "\n" not in out.stdout.strip()


def test_a_kind_registered_twice_names_both_packages(tmp_path):
    """Found by a probe: the line named neither entry point nor package ('twin kind 'heat' is registered twice')."""
    env = _plugin(tmp_path, "from twin.kinds.heat import KIND\n", name="heat2")
    info = tmp_path / "heat2_kind-0.1.dist-info"
    (info / "entry_points.txt").write_text("[twin.kinds]\nheat = heat2_kind:KIND\n")
    out = _run(env, "import sys\nfrom twin.core.errors import ConfigError\nfrom twin.core.kinds import kinds\n"
                    "try:\n    kinds()\nexcept ConfigError as e:\n    print(e); sys.exit(3)")
    assert out.returncode == 3, out.stdout + out.stderr
    line = out.stdout.strip()
    assert line.startswith("twin kind 'heat' is registered twice (group twin.kinds): by the entry point "), line
    assert "of package heat2-kind 0.1" in line and "of package twin " in line and "uninstall one of the packages" in line


LAZY = """
    from importlib import import_module
    from twin.core.kinds import ModelType, TwinKind
    from twin.kinds.lorenz96.config import Lorenz96Config


    class Config(Lorenz96Config):
        type: str = "lazyk"


    class Lazy(TwinKind):
        name = "lazyk"

        def model_types(self):
            return (ModelType("lazyk", Config, lambda: import_module("lazyk_kind.model").Model),)


    KIND = Lazy()
    """


def test_a_model_module_that_cannot_be_imported_names_its_type_kind_and_package(tmp_path):
    """Found by a probe: a kind whose model module (imported only when a model is built, as docs/kinds.md advises)
    needs a missing module passed validate, then failed every experiment with a bare 'ModuleNotFoundError: No
    module named ...'."""
    env = _plugin(tmp_path, LAZY, name="lazyk")
    (tmp_path / "lazyk_kind" / "model.py").write_text("import numba_extension_that_is_missing\n")
    out = _run(env, "import sys\nfrom mpi4py import MPI\nfrom twin.core.errors import ConfigError\n"
                    "from twin.models.registry import create_model\nfrom twin.core.kinds import model_types\n"
                    "section = model_types()['lazyk'].config(type='lazyk', n=40, dt=0.05)\n"
                    "try:\n    create_model('l96', section, MPI.COMM_SELF)\n"
                    "except ConfigError as e:\n    print(e); sys.exit(3)")
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout.strip() == (
        "model 'l96': model type 'lazyk' (kind 'lazyk', entry point 'lazyk = lazyk_kind:KIND' of package lazyk-kind "
        "0.1): its model class cannot be imported (ModuleNotFoundError: No module named "
        "'numba_extension_that_is_missing'); install what it needs, or fix or uninstall that package")
