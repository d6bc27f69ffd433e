"""A user's own model as a plugin package: examples/lorenz63-plugin (installed by `make setup`) seen by every twin
command through the entry-point group ``twin.kinds``, without a line of twin changed.

The ETKF twin experiment is the package's own campaign.yaml, shortened; its analysis RMSE is compared with the value
this campaign gave when the test was written (seeds fixed: round-off from another BLAS moves it by far less than the
tolerance, a change of the model, the filter or the random streams by more).
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

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "lorenz63-plugin"
CAMPAIGN = PLUGIN / "campaign.yaml"
TWIN = [sys.executable, "-m", "twin.cli"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")

#: time-mean analysis RMSE (diagnostics.nc rmse_a) of campaign.yaml over 20 cycles, online
RMSE_20_CYCLES = 0.4214
#: the same for 3 cycles of 4 members, the workflow-mode campaign
RMSE_WORKFLOW = 0.8533


def _installed() -> bool:
    from importlib import metadata

    return any(ep.name == "lorenz63" for ep in metadata.entry_points(group="twin.kinds"))


if not _installed():
    pytest.fail("the example plugin package is not installed: run `make setup` (pip install --no-deps -e "
                "examples/lorenz63-plugin)", pytrace=False)


def _twin(*args, cwd=ROOT):
    return subprocess.run(TWIN + list(args), capture_output=True, text=True, env=ENV, cwd=cwd, timeout=280)


def _campaign(tmp_path, name: str, *, cycles: int, members: int = 10, workers: int = 1) -> Path:
    text = CAMPAIGN.read_text()
    for old, new in (("cycles: 40", f"cycles: {cycles}"), ("N: 10", f"N: {members}"),
                     ("workers: 1}", f"workers: {workers}}}")):
        assert old in text, old
        text = text.replace(old, new)
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    return f


def _diagnostics(run_dir: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    with xr.open_dataset(run_dir / "experiments" / "lorenz63_etkf" / "diagnostics.nc", decode_times=False) as ds:
        return {k: ds[k].values for k in ds.data_vars}


def test_validate_knows_the_plugin_type():
    out = _twin("validate", str(CAMPAIGN))
    assert out.returncode == 0, out.stderr
    assert "ok (campaign 'lorenz63_etkf', models: l63)" in out.stdout


def test_validate_refuses_a_bad_plugin_section_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMPAIGN.read_text().replace("dt: 0.01", "dt: -0.01"))
    out = _twin("validate", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}:17:" in out.stderr and "models.l63.dt" in out.stderr


def test_info_lists_the_kind_and_its_package():
    out = _twin("info", "--json")
    assert out.returncode == 0, out.stderr
    kinds = json.loads(out.stdout)["kinds"]
    assert "lorenz63 (lorenz63; twin-lorenz63 0.1.0)" in kinds
    assert "lorenz96 (lorenz96; twin 0.1.0)" in kinds


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    f = _campaign(tmp, "online", cycles=20)
    out = _twin("run", str(f), "-o", str(tmp / "run"), "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / "run"


def test_etkf_online_on_the_plugin_model(online):
    d = _diagnostics(online)
    assert d["rmse"].shape == (20,)
    # the filter works: the analysis is well inside the observation error (1.0) and learns rho (truth 28, prior
    # median 25)
    assert float(d["rmse_a"]) == pytest.approx(RMSE_20_CYCLES, rel=0.02)
    assert abs(d["parameter_rho"][-1] - 28.0) < 0.2
    assert np.all(np.isfinite(d["spread"]))


def test_report_of_the_plugin_run(online):
    out = _twin("report", str(online))
    assert out.returncode == 0, out.stderr
    html = (online / "report" / "index.html").read_text()
    assert "lorenz63_etkf" in html


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec on PATH (the workflow's tasks use it)")
def test_etkf_workflow_mode_gives_the_online_analysis(tmp_path):
    """resources.workers > 1: the Parsl workflow, whose tasks run in new processes (Parsl's warm workers, with the
    default launcher) that find the kind by entry point; the analysis equals the online one (same random streams) and
    the reference."""
    wf = _campaign(tmp_path, "workflow", cycles=3, members=4, workers=2)
    out = _twin("run", str(wf), "-o", str(tmp_path / "wf"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done:" in out.stdout and "task(s)" in out.stdout
    on = _campaign(tmp_path, "same_online", cycles=3, members=4)
    ref = _twin("run", str(on), "-o", str(tmp_path / "on"), "-q")
    assert ref.returncode == 0, ref.stdout + ref.stderr
    w, o = _diagnostics(tmp_path / "wf"), _diagnostics(tmp_path / "on")
    np.testing.assert_allclose(w["rmse"], o["rmse"], rtol=1e-12)
    np.testing.assert_allclose(w["parameter_rho"], o["parameter_rho"], rtol=1e-12)
    assert float(w["rmse_a"]) == pytest.approx(RMSE_WORKFLOW, rel=0.02)
