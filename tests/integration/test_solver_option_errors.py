"""A PETSc option PETSc would refuse is the user's mistake, said in one line with exit status 2 and no traceback:
``twin validate`` and ``twin run`` refuse one in the file's ``solver:`` section at its line, and ``twin run`` one on
the command line (``-heat_ksp_type nonsense``) naming the component, before any solver reads it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
TWIN = [sys.executable, "-m", "twin.cli"]
SOLVER = "solver: {ts_type: beuler, ksp_type: cg, pc_type: jacobi, ksp_rtol: 1.0e-10}"


def _campaign(tmp_path: Path, solver: str = SOLVER) -> tuple[Path, int]:
    """The quickstart shrunk to seconds (8 x 8 cells, 2 steps, one rank); returns the file and its solver line."""
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    for old, new in (("shape: [64, 64]", "shape: [8, 8]"), ("end: 50.0", "end: 2.0"),
                     ("output_every: 10.0", "output_every: 1.0"), ("ranks: 2", "ranks: 1"), (SOLVER, solver)):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "small.yaml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith("solver:"))
    return path, line


def _twin(args, cwd: Path, prefix=()):
    return subprocess.run([*prefix, *TWIN, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
                          stdin=subprocess.DEVNULL)


def _one_error(out) -> str:
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("option, value, words", [
    ("-heat_ksp_type", "nonsense", ["Unable to find requested KSP type nonsense"]),
    ("-heat_ts_type", "nonsense", ["TS type"]),
    ("-heat_ksp_rtol", "abc", ["needs a number"]),
])
def test_run_refuses_a_bad_option_on_the_command_line(tmp_path, option, value, words):
    path, _ = _campaign(tmp_path)
    out = _twin(["run", path.name, option, value], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr[-3000:]
    line = _one_error(out)
    assert line.startswith("error: component 'heat' (options prefix heat_): PETSc rejects "), line
    assert f"{option} {value} on the command line" in line and f"change or drop {option}" in line, line
    for w in words:
        assert w in line, line
    assert not list(tmp_path.rglob("forecast.nc"))


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
def test_run_refuses_it_once_under_mpiexec(tmp_path):
    path, _ = _campaign(tmp_path)
    out = _twin(["run", path.name, "-heat_ksp_type", "nonsense"], cwd=tmp_path, prefix=(MPIEXEC, "-n", "2"))
    assert out.returncode == 2, out.stdout + out.stderr[-3000:]
    assert "Unable to find requested KSP type nonsense" in _one_error(out)


def test_run_with_good_options_still_runs(tmp_path):
    path, _ = _campaign(tmp_path)
    out = _twin(["run", path.name, "-heat_ksp_type", "gmres", "-heat_ksp_rtol", "1e-9", "-q"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.rglob("forecast.nc"))


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("solver, key, words", [
    ("solver: {ts_type: beuler, ksp_type: nonsense, pc_type: jacobi}", "ksp_type", ["unknown KSP type 'nonsense'"]),
    ("solver: {ts_type: nonsense, ksp_type: cg, pc_type: jacobi}", "ts_type", ["unknown TS type 'nonsense'"]),
    ("solver: {ts_type: beuler, ksp_type: cg, ksp_rtol: abc}", "ksp_rtol", ["needs a number", "'abc'"]),
])
def test_a_bad_value_in_the_file_is_refused_at_its_line(tmp_path, command, solver, key, words):
    path, line_no = _campaign(tmp_path, solver)
    out = _twin([command, path.name], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr[-3000:]
    line = _one_error(out)
    assert line.startswith(f"error: {path.name}:{line_no}:") and f": models.heat.solver.{key}: " in line, line
    for w in words:
        assert w in line, line
    assert not (tmp_path / "runs").exists()


def test_a_type_this_petsc_was_built_without_is_one_line_when_the_solver_is_set_up(tmp_path):
    """``sundials`` is a TS type petsc4py names, so the file validates; this PETSc has no SUNDIALS, which PETSc says
    when the model's TS reads its options (``twin.core.petsc.set_from_options``): one line, not a PETSc traceback."""
    path, _ = _campaign(tmp_path, SOLVER.replace("ts_type: beuler", "ts_type: sundials"))
    assert _twin(["validate", path.name], cwd=tmp_path).returncode == 0
    out = _twin(["run", path.name], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr[-3000:]
    line = _one_error(out)
    assert line == ("error: component 'heat' (options prefix heat_): PETSc rejected its solver options: Unknown TS "
                    "type: sundials; check models.heat.solver or the -heat_ options on the command line"), line


def test_a_petsc_error_while_solving_says_petscs_reason(tmp_path):
    """A solver package PETSc does not have is only found when the first linear solve sets the factorisation up,
    inside the model's step: the one line said "PETSc error 92" and not what PETSc said. Found while the forecast
    runs, it ends the command as a run that started and failed does (exit 1, the reason in twin.log too), not as
    input refused before anything ran (2)."""
    path, _ = _campaign(tmp_path)
    out = _twin(["run", path.name, "-heat_ksp_type", "preonly", "-heat_pc_type", "lu",
                 "-heat_pc_factor_mat_solver_type", "nosuchsolver"], cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    line = _one_error(out)
    assert line.startswith("error: model 'heat': solver failed at t=0 s: "), line
    assert "(PETSc error 92: Could not locate solver type nosuchsolver for factorization type LU" in line, line
