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
    """The workflow driver runs the check and must not initialise MPI: the readers import no PETSc, and neither do
    the kinds' checks of their own files, run here on the shipped examples (a visit table of NIfTI images, a
    strain-gauge readings file), which they pass."""
    code = ("import sys, twin.observations.preflight, twin.observations.files, twin.campaign.experiments\n"
            "from twin.config.loader import load_campaign\n"
            "for f in sys.argv[1:]:\n"
            "    twin.campaign.experiments.check_observation_files(load_campaign(f))\n"
            "print(any(m.startswith(('petsc4py.PETSc', 'mpi4py.MPI')) for m in sys.modules), "
            "'nibabel' in sys.modules, 'twin.kinds.structure.readings' in sys.modules)")
    files = [str(ROOT / "configs" / f) for f in ("oncology_files.yaml", "structure_files.yaml")]
    out = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr


def _heat_campaign(d: Path, file: str) -> Path:
    """A heat campaign on the unit square (m), 5 cycles of 1 s over the timeline (0, 5] s, observed through the CSV
    ``file`` (times in s)."""
    data = {"schema_version": 1, "campaign": {"name": "heatfile", "seed": 1},
            "models": {"heat": {"type": "heat",
                                "grid": {"shape": [8, 8], "extent": [[0.0, 1.0], [0.0, 1.0]], "units": "m"},
                                "parameters": {"kappa": {"value": 1.0e-3, "units": "m^2/s",
                                                         "prior": {"dist": "lognormal", "median": 1.0e-3,
                                                                   "sigma": 0.3}}},
                                "initial_condition": {"kind": "gaussian", "amplitude": 1.0, "center": [0.3, 0.6],
                                                      "width": 0.08, "background": 0.0},
                                "time": {"dt": 1.0, "units": "s"},
                                "solver": {"ts_type": "beuler", "ksp_type": "cg", "pc_type": "jacobi",
                                           "ksp_rtol": 1.0e-10}}},
            "timeline": {"start": 0.0, "end": 5.0, "units": "s"},
            "assimilation": {"method": "etkf", "N": 6, "seed": 2, "background_std": 0.05,
                             "schedule": {"every": 1, "cycles": 5},
                             "observations": [{"type": "file", "file": file, "time_units": "s",
                                               "variables": {"T": {"name": "temp", "units": "K"}}}]},
            "resources": {"type": "local", "ranks": 1, "workers": 1},
            "outputs": {"directory": "runs/{name}"}}
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _at_file_key(path: Path) -> str:
    """``c.yaml:line:column: assimilation.observations[0].file: `` of the file key's value."""
    line = _line_of_file_key(path)
    text = path.read_text().splitlines()[line - 1]
    return f"c.yaml:{line}:{text.index('file:') + len('file: ') + 1}: assimilation.observations[0].file: "


def _refused_by_validate_and_run(d: Path, path: Path, expected: str) -> None:
    """``twin validate`` and ``twin run`` both exit 2 with the one line ``expected``, and the run makes no
    experiment."""
    out = _twin(d, "validate", "c.yaml")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.splitlines() == [expected], out.stderr
    run = _twin(d, "run", "c.yaml")
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.splitlines()[-1] == expected, run.stderr
    assert "Traceback" not in run.stderr
    assert not (d / "runs" / "heatfile" / "experiments").exists()


def test_a_csv_without_the_y_column_of_a_2d_grid_is_refused_naming_the_column(tmp_path):
    """The CSV reader takes as many of x, y, z as the header has: without y the file read well, validate said ok and
    the experiment stopped at its start with "points have 1 coordinates, grid is 2-D"."""
    (tmp_path / "obs.csv").write_text("time,x,variable,value,error\n1,0.3,temp,0.5,0.1\n")
    path = _heat_campaign(tmp_path, "obs.csv")
    _refused_by_validate_and_run(tmp_path, path, "error: " + _at_file_key(path) + f"observation file "
                                 f"{tmp_path / 'obs.csv'}: has no column y: the model's grid is 2-D, so every "
                                 "position needs x, y")
    (tmp_path / "obs.csv").write_text("time,x,y,z,variable,value,error\n1,0.3,0.6,0.1,temp,0.5,0.1\n")
    _refused_by_validate_and_run(tmp_path, path, "error: " + _at_file_key(path) + f"observation file "
                                 f"{tmp_path / 'obs.csv'}: has column(s) z, but the model's grid is 2-D: give "
                                 "positions as x, y only")


NOTHING_USABLE = {
    "positions in km on a grid in m": (
        "time,x,y,variable,value,error\n1,300,600,temp,0.5,0.1\n2,700,600,temp,0.4,0.1\n",
        "none of its 2 observations lies inside both the campaign's timeline and the model's domain (positions x 300 "
        "to 700, y 600 m, the domain x [0, 1], y [0, 1] m): check the positions and their units"),
    "times after the timeline": (
        "time,x,y,variable,value,error\n99,0.3,0.6,temp,0.5,0.1\n",
        "its one observation does not lie inside both the campaign's timeline and the model's domain (model times "
        "99 s, the timeline (0, 5] s): check the times and time_units"),
    "each outside one or the other": (
        "time,x,y,variable,value,error\n0,0.3,0.6,temp,0.5,0.1\n2,3,0.6,temp,0.4,0.1\n",
        "none of its 2 observations lies inside both the campaign's timeline and the model's domain (model times 0 "
        "to 2 s, the timeline (0, 5] s; positions x 0.3 to 3, y 0.6 m, the domain x [0, 1], y [0, 1] m): check the "
        "times, positions and their units"),
}


@pytest.mark.parametrize("case", list(NOTHING_USABLE))
def test_a_file_with_no_observation_inside_the_timeline_and_the_domain_is_refused(tmp_path, case):
    """Nothing to assimilate at all: validate said ok and the experiment stopped at its start (exit 1)."""
    content, says = NOTHING_USABLE[case]
    (tmp_path / "obs.csv").write_text(content)
    path = _heat_campaign(tmp_path, "obs.csv")
    _refused_by_validate_and_run(tmp_path, path, "error: " + _at_file_key(path) + f"observation file "
                                 f"{tmp_path / 'obs.csv'}: {says}")


def test_some_observations_outside_are_left_to_the_quality_control(tmp_path):
    (tmp_path / "obs.csv").write_text("time,x,y,variable,value,error\n99,0.3,0.6,temp,0.5,0.1\n"
                                      "1,300,600,temp,0.5,0.1\n5,0.3,0.6,temp,0.4,0.1\n")
    _heat_campaign(tmp_path, "obs.csv")
    out = _twin(tmp_path, "validate", "c.yaml")
    assert out.returncode == 0 and "ok (campaign 'heatfile'" in out.stdout, out.stdout + out.stderr
