"""A model class named by import path in a campaign (``type: "package.module:Class"``): no packaging, no entry
point. The class brings its section (``config_class``), the section is validated strictly at its lines, the class
must be on the model contract, a bad path gets one line at the ``type:`` key, and the ETKF campaign runs through the
``twin`` command online and as a Parsl workflow whose workers import the class again (a module on PYTHONPATH).

The RMSE references are those of tests/integration/test_plugin.py: naming the plugin's class by path instead of by
its kind's type builds the same model, so the analysis is the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "examples" / "lorenz63-plugin" / "campaign.yaml"
TWIN = [sys.executable, "-m", "twin.cli"]
#: time-mean analysis RMSE of the plugin campaign over 20 cycles (online) and 3 cycles of 4 members (workflow)
RMSE_20_CYCLES = 0.4214
RMSE_WORKFLOW = 0.8533

QUICK = '''
"""A model class in a plain module on PYTHONPATH: a Lorenz-63 variant with a section of its own."""
from pydantic import Field
from twin_lorenz63.config import Lorenz63Config
from twin_lorenz63.model import Lorenz63


class QuickConfig(Lorenz63Config):
    type: str
    dt: float = Field(0.01, gt=0, le=0.05)


class QuickLorenz(Lorenz63):
    config_class = QuickConfig


class NoSection(Lorenz63):
    config_class = None      # the plugin's class has one; this subclass takes it away


class NotAModel:
    config_class = QuickConfig


class SizeFails(QuickConfig):
    def grid_size(self):
        raise RuntimeError("calibration table missing")


class BadSize(Lorenz63):
    config_class = SizeFails


def factory():
    return QuickLorenz
'''


@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> Path:
    """A directory with the package ``quickmodels`` (not installed: on PYTHONPATH only)."""
    base = tmp_path_factory.mktemp("mods")
    (base / "quickmodels").mkdir()
    (base / "quickmodels" / "__init__.py").write_text("")
    (base / "quickmodels" / "lorenz.py").write_text(textwrap.dedent(QUICK))
    (base / "quickmodels" / "broken.py").write_text("raise RuntimeError('missing calibration table')\n")
    return base


def _env(modules: Path | None) -> dict[str, str]:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    if modules is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(modules), env.get("PYTHONPATH", "")) if p)
    return env


def _twin(*args, modules: Path | None = None):
    return subprocess.run(TWIN + list(args), capture_output=True, text=True, env=_env(modules), cwd=ROOT,
                          timeout=280)


def _campaign(tmp_path: Path, type_name: str, *, cycles: int = 3, members: int = 10, workers: int = 1,
              extra: str = "") -> Path:
    text = CAMPAIGN.read_text()
    for old, new in (("type: lorenz63 ", f'type: "{type_name}" '), ("cycles: 40", f"cycles: {cycles}"),
                     ("N: 10", f"N: {members}"), ("workers: 1}", f"workers: {workers}}}"),
                     ("    dt: 0.01\n", f"    dt: 0.01\n{extra}")):
        assert old in text, old
        text = text.replace(old, new, 1)
    f = tmp_path / "campaign.yaml"
    f.write_text(text)
    return f


def _type_line(path: Path) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if "type: \"" in line)


def _rmse(run_dir: Path) -> tuple[float, np.ndarray]:
    import xarray as xr

    with xr.open_dataset(run_dir / "experiments" / "lorenz63_etkf" / "diagnostics.nc", decode_times=False) as ds:
        return float(ds["rmse_a"]), ds["parameter_rho"].values


def test_the_section_is_the_class_config_and_the_model_answers_to_the_path(tmp_path):
    """In process: the section validates with the class's config_class (type kept as the path), the registry builds
    a model whose type_name is the path, and the plugin's own type still answers to 'lorenz63'."""
    from mpi4py import MPI

    from twin.config.loader import load_campaign
    from twin.core.kinds import model_types
    from twin.models.registry import create_model

    path = "twin_lorenz63.model:Lorenz63"
    section = load_campaign(_campaign(tmp_path, path)).config.models["l63"]
    assert section.type == path and section.dt == 0.01 and section.rho.estimable
    assert type(section).__name__ == "Lorenz63Config"
    assert section.model_dump(mode="json")["type"] == path
    model = create_model("l63", section, MPI.COMM_SELF)
    try:
        assert model.type_name == path and type(model).__qualname__ == "Lorenz63"
        assert model.parameters["rho"].transform == "log"
        x = model.initial_state()
        model.advance(x, 0.0, 0.1)
        assert np.all(np.isfinite(model.grid.allgather(x)))
        x.destroy()
    finally:
        model.destroy()
    assert model_types()["lorenz63"].model().type_name == "lorenz63"


def test_validate_reports_section_problems_at_their_lines(tmp_path, modules):
    """The class's own section rules (here dt <= 0.05 and no unknown keys) hold, at the key's line."""
    f = _campaign(tmp_path, "quickmodels.lorenz:QuickLorenz", extra="    dtt: 1\n")
    text = f.read_text().replace("dt: 0.01", "dt: 0.08")
    f.write_text(text)
    out = _twin("validate", str(f), modules=modules)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = _type_line(f)
    assert f"{f}:{line + 1}:" in out.stderr and "models.l63.dt" in out.stderr and "0.05" in out.stderr
    assert f"{f}:{line + 2}:" in out.stderr and "models.l63.dtt: unknown key 'dtt'" in out.stderr


def test_a_section_class_that_raises_while_validated_is_named_not_twin(tmp_path, modules):
    """Found by a probe: a section class whose grid_size raised was 'internal error ...; please report it'."""
    f = _campaign(tmp_path, "quickmodels.lorenz:BadSize")
    out = _twin("validate", str(f), modules=modules)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    where = modules / "quickmodels" / "lorenz.py"
    line = next(i for i, t in enumerate(where.read_text().splitlines(), 1) if "calibration table missing" in t)
    assert out.stderr.splitlines() == [
        f"error: {f}: quickmodels.lorenz.SizeFails.grid_size ({where}:{line}) raised RuntimeError: 'calibration table "
        "missing' while the file was validated: the fault is in that code (a model's section class), not in twin"]


@pytest.mark.parametrize("type_name, expect", [
    ("quickmodels.nothere:QuickLorenz", ("no module named 'quickmodels.nothere'; it must be importable wherever "
                                         "twin reads the campaign (Parsl workers and Slurm jobs included)")),
    ("quickmodels.lorenz:Quick", "'quickmodels.lorenz' has no attribute 'Quick'"),
    ("quickmodels.lorenz:NotAModel", ("class NotAModel is not on the model contract: derive it from "
                                      "twin.models.base.Model")),
    ("quickmodels.lorenz:NoSection", "class NoSection declares no config_class"),
    ("quickmodels.lorenz:factory", "is a function, not a class"),
    ("quickmodels.broken:Model", ("importing module 'quickmodels.broken' failed (RuntimeError: missing "
                                  "calibration table); fix that module")),
    ("../quickmodels/lorenz.py:QuickLorenz", ("a class by import path is written 'package.module:Class' "
                                              "(dotted names only: no file paths, no code)")),
])
def test_a_bad_path_is_one_line_at_the_type_key(tmp_path, modules, type_name, expect):
    f = _campaign(tmp_path, type_name)
    out = _twin("validate", str(f), modules=modules)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {f}:{_type_line(f)}:11: models.l63.type: model type {type_name!r}: ")
    assert expect in lines[0]


def test_a_module_not_on_the_path_says_where_it_must_be_importable(tmp_path):
    """Without PYTHONPATH the module is not found: what a Parsl worker without it would say."""
    f = _campaign(tmp_path, "quickmodels.lorenz:QuickLorenz")
    out = _twin("validate", str(f))
    assert out.returncode == 2 and "no module named 'quickmodels'" in out.stderr
    assert "put its directory on PYTHONPATH" in out.stderr


def test_check_model_takes_a_class_by_path(tmp_path, modules):
    f = _campaign(tmp_path, "quickmodels.lorenz:QuickLorenz")
    out = _twin("check-model", "quickmodels.lorenz:QuickLorenz", "--config", str(f), "--ranks", "1",
                modules=modules)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS  restart is bitwise          max |difference| 0" in out.stdout
    assert "PASS  adjoint Taylor test         rates 2.0" in out.stdout


def test_etkf_online_on_the_plugin_class_named_by_path(tmp_path):
    f = _campaign(tmp_path, "twin_lorenz63.model:Lorenz63", cycles=20)
    out = _twin("run", str(f), "-o", str(tmp_path / "run"), "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    rmse, rho = _rmse(tmp_path / "run")
    # the same model as `type: lorenz63`: the plugin test's reference; rho learnt (truth 28, prior median 25)
    assert rmse == pytest.approx(RMSE_20_CYCLES, rel=0.02)
    assert abs(rho[-1] - 28.0) < 0.2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec on PATH (the workflow's tasks use it)")
def test_etkf_workflow_workers_import_the_class_again(tmp_path, modules):
    """resources.workers > 1: the tasks run in new processes (Parsl's warm workers, with the default launcher) that
    read the campaign and import the class from PYTHONPATH again; the analysis is the plugin workflow's."""
    f = _campaign(tmp_path, "quickmodels.lorenz:QuickLorenz", members=4, workers=2)
    out = _twin("run", str(f), "-o", str(tmp_path / "wf"), modules=modules)
    assert out.returncode == 0, out.stdout + out.stderr
    # init, the 4 members and the analysis of cycle 0, then (members of milliseconds: resources.task auto) the rest of
    # the experiment as one task in a worker
    assert "done: 7 task(s)" in out.stdout
    rmse, _ = _rmse(tmp_path / "wf")
    assert rmse == pytest.approx(RMSE_WORKFLOW, rel=0.02)
