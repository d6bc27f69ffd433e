"""PETSc reads options files while it starts (``-options_file F``, ``PETSC_OPTIONS``, a ``.petscrc`` in the working
directory); one it cannot open or parse stopped every command that starts PETSc with PETSc's error block and a Python
traceback (``twin status`` even called a healthy run damaged). Now each says it in one line, exit status 2: ``twin
run`` online (also under ``mpiexec -n 2``: one line), ``twin info``, and a workflow (a missing file before Parsl
starts; a malformed one in the init task's reason)."""

from __future__ import annotations

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
GARBAGE = ("error: PETSc could not start: Unknown first token in options file {f} line 1: garbage; fix or remove that "
           "options file (given by -options_file, named in PETSC_OPTIONS, or .petscrc / petscrc in the working "
           "directory or ~/.petscrc)")


def _twin(cwd: Path, *words: str, mpi: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "twin.cli", *words]
    if mpi:
        cmd = [MPIEXEC, "-n", "2", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
                          stdin=subprocess.DEVNULL)


def _errors(out: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in out.stderr and "PETSC ERROR" not in out.stderr, out.stderr[-3000:]
    return [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]


@pytest.fixture
def here(tmp_path):
    shutil.copy(ROOT / "configs" / "quickstart.yaml", tmp_path / "q.yaml")
    shutil.copy(ROOT / "configs" / "lorenz96_etkf.yaml", tmp_path / "l96.yaml")
    return tmp_path


def test_a_malformed_petscrc_in_the_working_directory(here):
    (here / ".petscrc").write_text("garbage line here\n")
    for words in (("run", "q.yaml", "-o", "out"), ("info",)):
        out = _twin(here, *words)
        assert out.returncode == 2, out.stderr[-3000:]
        assert _errors(out) == [GARBAGE.format(f=".petscrc")], words
    assert not (here / "out").exists() or not list((here / "out").rglob("*.nc"))


def test_an_options_file_on_the_command_line(here):
    out = _twin(here, "run", "q.yaml", "-o", "out", "-options_file", "nonexist")
    assert out.returncode == 2
    assert _errors(out) == ["error: PETSc could not start: Unable to open options file nonexist; fix or remove that "
                            "options file (given by -options_file, named in PETSC_OPTIONS, or .petscrc / petscrc in "
                            "the working directory or ~/.petscrc)"]
    (here / "bad.rc").write_text("garbage\n")
    if MPIEXEC is not None:  # every rank fails the same way; rank 0 says it
        out = _twin(here, "run", "q.yaml", "-o", "out2", "-options_file", "bad.rc", mpi=True)
        assert out.returncode == 2
        assert _errors(out) == [GARBAGE.format(f="bad.rc")]
    # a good options file still works
    (here / "good.rc").write_text("-heat_ksp_rtol 1e-9\n")
    out = _twin(here, "run", "q.yaml", "-o", "out3", "-options_file", "good.rc")
    assert out.returncode == 0, out.stderr[-3000:]


def test_a_workflow_refuses_a_missing_options_file_before_parsl_and_names_a_malformed_one(here):
    out = _twin(here, "run", "l96.yaml", "--workflow", "-o", "out", "--", "-options_file", "nonexist")
    assert out.returncode == 2
    assert _errors(out) == ["error: PETSc option -options_file nonexist on the command line names nonexist, which is "
                            "not a file; change or drop it"]
    (here / "bad.rc").write_text("garbage\n")
    out = _twin(here, "run", "l96.yaml", "--workflow", "-o", "out", "--", "-options_file", "bad.rc")
    assert out.returncode == 1, out.stderr[-3000:]
    assert ("FAILED in cycle 0: init failed: " + GARBAGE.format(f="bad.rc")) in (here / "out" / "twin.log").read_text()
