"""``twin new-model NAME``: a new installable package with a model on the contract, from the template shipped as
package data (twin/templates/new_model).

The generated package is built into a wheel by pip (with this environment's setuptools, no download) and unpacked
into a directory on PYTHONPATH: its dist-info and ``twin.kinds`` entry point are the ones setuptools writes from the
generated pyproject.toml, as ``pip install`` would, without changing the test environment. Then ``twin info``,
``twin check-model``, ``twin validate``, the package's own tests (the conformance kit through twin's pytest fixture)
and its ETKF campaign run on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from twin.cli_model import template_files, write_new_model
from twin.core.errors import ConfigError

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "twin" / "templates" / "new_model"
NAME = "glacier_flow"
#: time-mean analysis RMSE (diagnostics.nc rmse_a) of the generated campaign.yaml (15 cycles, 12 members)
RMSE_TEMPLATE = 0.01594


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in paths] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _twin(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "twin.cli", *args], capture_output=True, text=True,
                          env=env or _env(), cwd=cwd, timeout=280)


def test_the_template_is_package_data():
    """Every template file is matched by pyproject's package-data (a wheel of twin carries them)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["twin"]
    pattern = next(p for p in data if p.startswith("templates/new_model/"))
    templates = {p for p in TEMPLATE.rglob("*") if p.is_file()}
    assert len(templates) == 8
    assert set((ROOT / "twin").glob(pattern)) == templates       # setuptools expands ** as Path.glob does


def test_files_are_named_and_filled_in():
    files = template_files(NAME)
    assert sorted(files) == ["README.md", "campaign.yaml", "pyproject.toml", f"src/{NAME}/__init__.py",
                             f"src/{NAME}/config.py", f"src/{NAME}/model.py", "tests/conftest.py",
                             f"tests/test_{NAME}.py"]
    assert not any("${" in text for text in files.values())
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["name"] == "glacier-flow"
    assert project["entry-points"]["twin.kinds"] == {NAME: f"{NAME}:KIND"}
    assert '@register_model("glacier_flow")\nclass GlacierFlow(Model):' in files[f"src/{NAME}/model.py"]
    for rel, text in files.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")


@pytest.mark.parametrize("name, expect", [
    ("GlacierFlow", "write lower case letters, digits and single underscores"),
    ("glacier-flow", "write lower case letters"),
    ("glacier__flow", "single underscores"),
    ("9lives", "starting with a letter"),
    ("a" * 41, "at most 40 characters"),
    ("lambda", "is reserved"),
    ("tests", "is reserved"),
    ("heat", "model type or kind 'heat' is already installed"),
    ("json", "a module named 'json' is already importable"),
])
def test_a_bad_name_is_refused(tmp_path, name, expect):
    with pytest.raises(ConfigError, match=expect):
        write_new_model(name, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists() and list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_never_overwritten(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    out = _twin("new-model", NAME, "-o", str(target))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"error: new-model: {target} exists; twin new-model writes a new directory and "
                                  "never overwrites (choose another with -o DIR, or remove it)")
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]          # no staging directory left behind
    missing = _twin("new-model", NAME, "-o", str(tmp_path / "no" / "such"))
    assert missing.returncode == 2 and "parent directory" in missing.stderr and "does not exist" in missing.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``twin new-model glacier_flow`` (default directory, in a scratch cwd), built and unpacked as pip would install
    it: ``(package directory, site directory)``."""
    tmp = tmp_path_factory.mktemp("newmodel")
    out = _twin("new-model", NAME, cwd=tmp)
    assert out.returncode == 0, out.stderr
    pkg = tmp / "glacier-flow"
    assert out.stdout.startswith("wrote glacier-flow: README.md, campaign.yaml, pyproject.toml")
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(tmp / "wheel"), str(pkg)], capture_output=True, text=True,
                           timeout=240)
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    (whl,) = (tmp / "wheel").glob("*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(whl) as z:
        z.extractall(site)
    return pkg, site


def test_info_and_validate_see_the_new_kind(installed):
    pkg, site = installed
    info = _twin("info", env=_env(site))
    assert info.returncode == 0, info.stderr
    assert f"{NAME} ({NAME}; glacier-flow 0.1.0)" in info.stdout
    out = _twin("validate", str(pkg / "campaign.yaml"), env=_env(site))
    assert out.returncode == 0, out.stderr
    assert f"ok (campaign '{NAME}_etkf', models: {NAME})" in out.stdout
    # its section's rules hold at their line: a step beyond what the schema allows is refused there
    bad = pkg.parent / "bad.yaml"
    bad.write_text((pkg / "campaign.yaml").read_text().replace("cells: 32", "cells: 2"))
    out = _twin("validate", str(bad), env=_env(site))
    assert out.returncode == 2 and f"models.{NAME}.cells" in out.stderr and "Traceback" not in out.stderr
    # the class by import path, the quick route (found by a probe: the scaffold's class declared no config_class)
    by_path = pkg.parent / "by_path.yaml"
    text = (pkg / "campaign.yaml").read_text()
    assert f"type: {NAME}" in text
    by_path.write_text(text.replace(f"type: {NAME}", f'type: "{NAME}.model:GlacierFlow"'))
    out = _twin("validate", str(by_path), env=_env(site))
    assert out.returncode == 0, out.stderr


def test_check_model_passes_on_the_new_model(installed):
    pkg, site = installed
    out = _twin("check-model", NAME, "--config", str(pkg / "campaign.yaml"), env=_env(site))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {line[6:33].strip(): line[:4] for line in out.stdout.splitlines()[1:]}
    assert lines == {"builds": "PASS", "checkpoint round trip": "PASS", "restart is bitwise": "PASS",
                     "QoIs finite": "PASS", "parameter transforms invert": "PASS", "options prefix honoured": "PASS",
                     "adjoint Taylor test": "SKIP", "1 vs 2 ranks agree": "PASS",
                     "batched forecast is advance": "SKIP"}
    assert "max relative difference 0 at t=0.2 between 1 and 2 ranks" in out.stdout


def test_the_new_package_tests_pass_with_twins_fixture(installed):
    """Its tests (equations, section, and the conformance kit through the fixture twin_check_model) pass."""
    pkg, site = installed
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=pkg,
                         env=_env(site), capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "5 passed" in out.stdout


def test_etkf_on_the_new_model(installed):
    pkg, site = installed
    run = pkg.parent / "run"
    out = _twin("run", str(pkg / "campaign.yaml"), "-o", str(run), "-q", env=_env(site))
    assert out.returncode == 0, out.stdout + out.stderr
    import xarray as xr

    with xr.open_dataset(run / "experiments" / f"{NAME}_etkf" / "diagnostics.nc", decode_times=False) as ds:
        rmse, kappa = float(ds["rmse_a"]), ds["parameter_diffusivity"].values
    # well inside the observation error (0.05); the diffusivity learnt (truth 1e-3, prior median 2e-3)
    assert rmse == pytest.approx(RMSE_TEMPLATE, rel=0.02)
    assert abs(kappa[-1] - 1.0e-3) < 1.0e-4 and abs(kappa[0] - 1.0e-3) > 5.0e-4
    assert np.all(np.isfinite(kappa))
