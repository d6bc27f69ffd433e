"""PETSc options reach the solvers the user meant, in every mode, and the ones that reach none are said.

* ``twin run FILE --workflow -l96_ts_rk_type 3``: every task gets the command line's PETSc options (warm workers and
  tasks under ``mpiexec``), so the workflow's analysis is online mode's with the same options, bit for bit, and not
  the one without them (before, the workflow dropped them silently).
* A one-rank Lorenz-96 campaign whose options change its integrator runs that integrator, not the batched RK4.
* An option no solver read (misspelt, for a solver the component does not use, or with no component's prefix),
  given on the command line, in a solver section, in PETSC_OPTIONS or in an options file, is
  one WARNING line naming it, its origin and the likely intended option, online at the end of the run and once per
  workflow run; options that were read give none.
* Numbers that are none are refused before the workflow starts Parsl (exit 2, one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from campaign_case import arrays, assert_same, l96_campaign

from twin.campaign import layout

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=str(ROOT))
TWIN = [sys.executable, "-m", "twin.cli"]

pytestmark = pytest.mark.timeout(400)


def _twin(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*TWIN, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
                          stdin=subprocess.DEVNULL)


def _campaign(tmp_path: Path, launcher: str) -> Path:
    path = tmp_path / f"{launcher}.yaml"
    # online runs checkpoint every cycle as the workflow does, so that every checkpoint is compared
    path.write_text(l96_campaign("l96opts", N=3, cycles=2, extra=f"resources: {{type: local, ranks: 1, workers: 2, "
                                                                f"launcher: {launcher}}}\n"
                                                                "outputs: {checkpoint_every: 1}\n"))
    return path


def _warnings(run_dir: Path) -> list[str]:
    return [ln for ln in (run_dir / "twin.log").read_text().splitlines() if " WARNING " in ln]


@pytest.mark.parametrize("launcher", ["worker", "mpiexec"])
def test_the_workflow_gives_every_task_the_command_lines_petsc_options(tmp_path, launcher):
    path = _campaign(tmp_path, launcher)
    rk3 = ["-l96_ts_rk_type", "3", "-l96_ts_rk_typ", "3"]  # the second misspelt
    out = _twin(["run", path.name, "--workflow", "-o", "wf", *rk3], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    # the misspelt option, read by no solver, said once for the run; the RK type, read, not at all
    unread = [ln for ln in _warnings(tmp_path / "wf") if "PETSc option" in ln]
    assert len(unread) == 1, unread
    assert "PETSc option -l96_ts_rk_typ on the command line changed nothing: the solvers of component 'l96' did " \
           "not read it; did you mean -l96_ts_rk_type?" in unread[0], unread[0]

    # online mode (one worker) through the same command, with and without the options
    online = tmp_path / "online.yaml"
    online.write_text(path.read_text().replace("workers: 2", "workers: 1"))
    for run_dir, opts in (("online-rk3", rk3), ("online-rk4", [])):
        out = _twin(["run", online.name, "-o", run_dir, "-q", *opts], cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    wf = arrays(layout.experiment_dir(tmp_path / "wf", "l96opts"))
    assert_same(wf, arrays(layout.experiment_dir(tmp_path / "online-rk3", "l96opts")))
    rk4 = arrays(layout.experiment_dir(tmp_path / "online-rk4", "l96opts"))
    # the outputs say which options made them (provenance), and twin inspect shows it
    import xarray as xr

    for run_dir, said in (("wf", " ".join(rk3)), ("online-rk3", " ".join(rk3)), ("online-rk4", "")):
        with xr.open_dataset(layout.experiment_dir(tmp_path / run_dir, "l96opts") / "posterior.nc") as ds:
            assert ds.attrs["twin_petsc_options"] == said, (run_dir, ds.attrs["twin_petsc_options"])
    shown = _twin(["inspect", str(layout.experiment_dir(tmp_path / "wf", "l96opts") / "posterior.nc")], cwd=tmp_path)
    assert f"petsc_options: {' '.join(rk3)}" in shown.stdout, shown.stdout
    # RK3 instead of RK4 over 2 steps of 0.05 per cycle: the analysis moves by far more than round-off
    assert np.abs(wf["cycle2:state"] - rk4["cycle2:state"]).max() > 1e-6


def test_online_options_no_solver_read_are_one_warning_each(tmp_path):
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    for old, new in (("shape: [64, 64]", "shape: [8, 8]"), ("end: 50.0", "end: 2.0"),
                     ("output_every: 10.0", "output_every: 1.0"), ("ranks: 2", "ranks: 1")):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "small.yaml").write_text(text)
    solver = "solver: {ts_type: beuler, ksp_type: cg, pc_type: jacobi, ksp_rtol: 1.0e-10}"
    (tmp_path / "typo.yaml").write_text(text.replace(solver, solver[:-1] + ", ksp_max_itt: 30}"))
    out = _twin(["run", "typo.yaml", "-o", "out", "-heat_ksp_rtoll", "1e-3", "-heta_ksp_rtol", "1e-4",
                 "-heat_ksp_atol", "1e-12"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if "PETSc option" in ln]
    assert len(lines) == 3, out.stderr
    assert "-heat_ksp_max_itt in models.heat.solver changed nothing: the solvers of component 'heat' did not read " \
           "it" in lines[0]
    assert "-heat_ksp_rtoll on the command line changed nothing" in lines[1] and "did you mean -heat_ksp_rtol?" \
        in lines[1]
    assert "-heta_ksp_rtol on the command line changed nothing: no solver has its prefix (twin's read " \
           "-<component>_ options: heat_)" in lines[2] and "did you mean -heat_ksp_rtol?" in lines[2]
    assert _warnings(tmp_path / "out") == [ln for ln in out.stderr.splitlines() if " WARNING " in ln]

    # many: ten lines, then their count
    words = [w for i in range(12) for w in (f"-heat_x{i:02d}", "1")]
    out = _twin(["run", "small.yaml", "-o", "many", *words], cwd=tmp_path)
    lines = [ln.split("WARNING twin.driver: ", 1)[1] for ln in out.stderr.splitlines() if "PETSc option" in ln]
    assert out.returncode == 0 and len(lines) == 11 and lines[9].startswith("PETSc option -heat_x09 "), lines
    assert lines[10] == "... and 2 more PETSc options that no solver read (-options_left lists every one at the end)"

    # options the solvers read, in the file and on the command line: no word about them
    out = _twin(["run", "small.yaml", "-o", "good", "-heat_ksp_atol", "1e-12", "-heat_ksp_monitor"], cwd=tmp_path)
    assert out.returncode == 0 and "PETSc option" not in out.stderr, out.stderr[-3000:]
    assert "KSP Residual norm" in out.stdout

    # from PETSC_OPTIONS and an options file (found in review: only the command line's were judged); those read,
    # here -heat_ksp_atol in PETSC_OPTIONS, give no word
    (tmp_path / "opts.txt").write_text("-heat_ksp_rtoll 1e-3\n")
    env = dict(ENV, PETSC_OPTIONS="-heat_ksp_atoll 1e-12 -heat_ksp_atol 1e-12")
    out = subprocess.run([*TWIN, "run", "small.yaml", "-o", "outside", "-options_file", "opts.txt"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    lines = [ln.split("WARNING twin.driver: ", 1)[1] for ln in out.stderr.splitlines() if "PETSc option" in ln]
    assert out.returncode == 0 and len(lines) == 2, out.stderr[-3000:]
    assert lines[0].startswith("PETSc option -heat_ksp_atoll in PETSC_OPTIONS changed nothing: the solvers of "
                               "component 'heat' did not read it; did you mean -heat_ksp_atol?")
    assert lines[1].startswith("PETSc option -heat_ksp_rtoll in an options file (-options_file, .petscrc or "
                               "~/.petscrc) changed nothing")


def test_a_workflow_run_with_log_view_gives_every_tasks_petsc_log(tmp_path):
    """-log_view prints when PETSc ends; warm workers never end it, so the workflow printed no log at all. The default
    launcher now runs every task as a process of its own and each task's log is in its .out file."""
    path = tmp_path / "lv.yaml"
    path.write_text(l96_campaign("l96lv", N=2, cycles=1, extra="resources: {type: local, ranks: 1, workers: 2}\n"))
    out = _twin(["run", path.name, "--workflow", "-o", "wf", "-log_view"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "launcher: auto with -log_view, which PETSc answers when it ends" in out.stderr
    logs = sorted((tmp_path / "wf" / "runinfo" / "tasks" / "l96lv").glob("*.out"))
    assert [p.name for p in logs] == ["analyse_c0000.out", "finalize.out", "forecast_c0000_m0000.out",
                                      "forecast_c0000_m0001.out", "init.out"]
    assert all("PETSc Performance Summary" in p.read_text() for p in logs)


def test_a_number_that_is_none_stops_the_workflow_before_it_starts(tmp_path):
    path = _campaign(tmp_path, "worker")
    out = _twin(["run", path.name, "--workflow", "-o", "wf", "-l96_ts_max_steps", "1.5"], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip() == "error: PETSc option -l96_ts_max_steps 1.5 on the command line needs a whole number " \
                                 "(e.g. 100; PETSc reads no decimal point or exponent here), got '1.5'; change or drop it"
    assert not (tmp_path / "wf").exists()


SLURM = l96_campaign("l96slurm", N=3, cycles=2, extra="resources: {type: slurm, partition: debug, walltime: '00:10:00', "
                                                      "nodes: 1, ranks_per_node: 2, ranks: 1, workers: 1}\n")


@pytest.mark.parametrize("mode, command", [("driver", "-m workflows run"), ("single", "-m twin.campaign.task online"),
                                           ("array", "-m twin.campaign.task online")])
def test_submit_puts_the_petsc_options_into_the_batch_scripts_command(tmp_path, mode, command):
    (tmp_path / "slurm.yaml").write_text(SLURM)
    out = _twin(["submit", "slurm.yaml", "--mode", mode, "--dry-run", "-l96_ts_rk_type", "3", "-l96_ts_monitor",
                 "ascii:a b.txt"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    job = out.stdout.split("\nexec ", 1)[1].split("\n\n", 1)[0]  # the job's command, to the blank line after it
    assert command in job
    assert job.rstrip().endswith(" -- -l96_ts_rk_type 3 -l96_ts_monitor 'ascii:a b.txt'"), job

    bad = _twin(["submit", "slurm.yaml", "--mode", mode, "--dry-run", "-l96_ts_max_steps", "ten"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: PETSc option -l96_ts_max_steps ten on the command "
                                                         "line needs a whole number"), bad.stderr


@pytest.mark.parametrize("command", ["run", "submit"])
def test_more_options_than_petsc_holds_are_one_line_not_its_traceback(tmp_path, command):
    """PETSc 3.18 cannot start with more than 512 options (its error 55 and a Python traceback, before): more than
    twin leaves room for beside the campaign's own are refused before PETSc starts."""
    (tmp_path / "c.yaml").write_text(SLURM if command == "submit" else l96_campaign("l96many"))
    words = [w for i in range(600) for w in (f"-l96_x{i}", "1")]
    out = _twin([command, "c.yaml", *words], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip() == ("error: 600 PETSc options on the command line, more than the 200 this PETSc can hold "
                                  "beside the campaign's own: put them in the solver: sections of the campaign file")
    assert not (tmp_path / "runs").exists()
