"""An observation file that cannot be read is refused before anything runs (twin.observations.preflight): by ``twin
validate``, by ``twin run`` before any experiment directory is made, and by ``twin submit --dry-run``; one line per
file at its key of the campaign file, naming the observation file and what is wrong with it. A good file passes, and
the workflow driver (which must not start MPI) can run the check: reading imports no PETSc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _twin(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _good_csv(path: Path) -> None:
    """Observations of x at 5 points of the ring at the first 10 analysis times (every 0.1 from 0.1)."""
    rng = np.random.default_rng(3)
    rows = ["time,x,variable,value,error"]
    for k in range(1, 11):
        rows += [f"{0.1 * k:.1f},{p},x,{rng.normal():.6f},1.0" for p in (0, 8, 16, 24, 32)]
    path.write_text("\n".join(rows) + "\n")


def _campaign(d: Path, files: list[str]) -> Path:
    """The shipped Lorenz-96 ETKF campaign observed through ``files[0]``; with more files, two experiments (seeds 1
    and 2) each."""
    data = yaml.safe_load((ROOT / "configs" / "lorenz96_etkf.yaml").read_text())
    data["decision"].pop("guardrails", None)
    data["outputs"] = {"directory": "runs/{name}"}
    net = {"type": "file", "file": files[0], "time_units": "1", "variables": {"x": {"units": "1"}}}
    data["assimilation"]["observations"] = [net]
    data["assimilation"]["background_std"] = 1.0
    if len(files) > 1:
        data["experiments"]["matrix"] = {"assimilation.observations": [[dict(net, file=f)] for f in files],
                                         "campaign.seed": [1, 2]}
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _line_of_file_key(path: Path) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith("file:"))


BROKEN = {
    "an empty file": ("obs.nc", b"", "is empty or truncated (0 bytes), not NetCDF"),
    "a truncated NetCDF file": ("obs.nc", None, "truncated or corrupted"),
    "a CSV cut in a line": ("obs.csv", b"time,x,variable,value,error\n0.1,0,x,1.0,1.0\n0.2,8", "line 3: 2 fields"),
    "a CSV of another variable": ("obs.csv", b"time,x,variable,value,error\n0.1,0,y,1.0,1.0\n",
                                  "has no rows of variable 'x'"),
    "a CSV whose every value is missing": ("obs.csv", b"time,x,variable,value,error\n0.1,0,x,nan,1.0\n",
                                           "all 1 values of 'x' are missing"),
    "a CSV in units that do not convert": ("obs.csv", b"time,x,variable,value,error,units\n0.1,0,x,1.0,1.0,m/s\n",
                                           "not convertible"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_validate_refuses_an_unreadable_observation_file_at_its_key(tmp_path, case):
    name, content, says = BROKEN[case]
    if content is None:  # the first 5000 bytes of a real CF-DSG file
        content = (ROOT / "examples" / "observations" / "atmosphere_observations.nc").read_bytes()[:5000]
    (tmp_path / name).write_bytes(content)
    path = _campaign(tmp_path, [name])
    out = _twin(tmp_path, "validate", "c.yaml")
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"error: c.yaml:{_line_of_file_key(path)}:"), line
    assert "assimilation.observations[0].file: observation file " + str(tmp_path / name) in line, line
    assert says in line, line
    assert "Traceback" not in out.stderr


def test_a_good_file_passes_and_a_bad_one_of_a_matrix_is_named_with_its_experiment(tmp_path):
    _good_csv(tmp_path / "good.csv")
    _campaign(tmp_path, ["good.csv"])
    ok = _twin(tmp_path, "validate", "c.yaml")
    assert ok.returncode == 0 and "ok (campaign 'lorenz96_etkf'" in ok.stdout, ok.stdout + ok.stderr
    (tmp_path / "bad.csv").write_text("time,x,variable,value,error\n0.1,0,x,abc,1.0\n")
    _campaign(tmp_path, ["good.csv", "bad.csv"])
    out = _twin(tmp_path, "validate", "c.yaml")
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()  # the file two experiments share: read and reported once
    matrix = next(i for i, text in enumerate((tmp_path / "c.yaml").read_text().splitlines(), 1)
                  if text.strip().startswith("matrix:"))
    assert int(line.split(":")[2]) in (matrix, matrix + 1), line  # where the bad file was named: the matrix
    assert ": experiment " in line and ": observation file " + str(tmp_path / "bad.csv") + ": line 2" in line, line
    assert "good.csv" not in out.stderr


def test_run_and_submit_refuse_before_any_experiment_is_made(tmp_path):
    (tmp_path / "obs.csv").write_text("time,x,variable,value,error\n0.1,0,x,1.0,1.0\n0.2,8")
    _campaign(tmp_path, ["obs.csv"])
    out = _twin(tmp_path, "run", "c.yaml")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "line 3: 2 fields" in out.stderr.splitlines()[-1]
    assert not (tmp_path / "runs" / "lorenz96_etkf" / "experiments").exists()
    data = yaml.safe_load((tmp_path / "c.yaml").read_text())
    data["resources"] = {"type": "slurm", "partition": "debug", "ranks": 1}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    dry = _twin(tmp_path, "submit", "c.yaml", "--dry-run")
    assert dry.returncode == 2 and "line 3: 2 fields" in dry.stderr, dry.stdout + dry.stderr


def test_reading_observation_files_starts_no_petsc():
    """The workflow driver runs the check and must not initialise MPI: the readers import no PETSc."""
    code = ("import sys, twin.observations.preflight, twin.observations.files, twin.campaign.experiments; "
            "print(any(m.startswith(('petsc4py.PETSc', 'mpi4py.MPI')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
