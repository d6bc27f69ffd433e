"""An error on one rank of an online run under ``mpiexec -n 2`` ends the run instead of hanging it (the other rank
waited for ever in its next collective call, and nothing was said; found by trying a plugin model that fails on one
rank). Two ways out, both through the ``twin`` command with a user's model named by import path (a subclass of the
example Lorenz-63 plugin):

- a member forecast that raises something other than a model's failure (a plugin's ``ValueError``) on the rank that
  holds the member: the ranks agree on it after the forecasts, the experiment FAILED on every rank, exit status 1 in
  seconds, the reason names the member and the cycle;
- any other error on one rank (here a solver failure in the nature run on rank 1 only): that rank waits
  ``TWIN_ALONE_TIMEOUT`` seconds for the other at the experiment's end, then prints the reason and aborts the job
  (exit status 1); the same command without the fault then resumes and finishes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from twin.campaign import layout

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None or not any(ep.name == "lorenz63" for ep in metadata.entry_points(group="twin.kinds")),
    reason="needs mpiexec and the example plugin examples/lorenz63-plugin (make setup installs it)")

PLUGIN = '''\
import os

from mpi4py import MPI
from twin.core.errors import SolverError
from twin_lorenz63.model import Lorenz63

_CALLS = []


class Faulty(Lorenz63):
    """Lorenz-63 that fails on rank 1 once past t = 0.15: FAULT=value raises ValueError at the 8th such advance
    (a member's forecast in cycle 2), FAULT=solver a SolverError at the first (the nature run)."""

    def advance(self, state, t0, t1):
        fault = os.environ.get("FAULT", "")
        if fault and MPI.COMM_WORLD.rank == 1 and t0 > 0.15:
            _CALLS.append(t0)
            if fault == "solver":
                raise SolverError(self.name, t0, "DIVERGED_TEST")
            if len(_CALLS) == 8:
                raise ValueError("math domain error")
        super().advance(state, t0, t1)


Faulty.config_class = Lorenz63.config_class
'''


def _campaign(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "lorenz63-plugin" / "campaign.yaml").read_text()
    for old, new in (("type: lorenz63 ", 'type: "rankfault:Faulty" '), ("end: 5.0", "end: 0.5"),
                     ("cycles: 40}", "cycles: 5}")):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "c.yaml").write_text(text)
    (tmp_path / "rankfault.py").write_text(PLUGIN)


def _run(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    environ = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=str(tmp_path), **env)
    t0 = time.monotonic()
    out = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "twin.cli", "run", "c.yaml", "-o", "out"],
                         capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=180,
                         stdin=subprocess.DEVNULL)
    return out, time.monotonic() - t0


def test_a_plugin_error_in_one_ranks_member_fails_the_experiment_on_both(tmp_path):
    _campaign(tmp_path)
    out, seconds = _run(tmp_path, FAULT="value")
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors[0].startswith("error: experiment lorenz63_etkf FAILED: member "), errors
    assert errors[0].endswith("'s forecast in cycle 2 raised ValueError: math domain error; run the same command "
                              "again to try it again from its files (after fixing the cause)"), errors
    assert seconds < 60, seconds  # agreed after the forecasts, not by the timeout
    failed = [ln for ln in out.stderr.splitlines() if "ERROR twin.campaign.online: experiment lorenz63_etkf FAILED" in ln]
    assert len(failed) == 1 and failed[0].split()[1] == "[0/2]", failed  # said once, by rank 0 (was once per rank)
    exp = layout.experiment_dir(tmp_path / "out", "lorenz63_etkf")
    assert "raised ValueError: math domain error" in layout.read_json(layout.error_marker(exp))["reason"]


def test_an_error_on_one_rank_alone_ends_the_job_and_the_rerun_resumes(tmp_path):
    _campaign(tmp_path)
    out, seconds = _run(tmp_path, FAULT="solver", TWIN_ALONE_TIMEOUT="3")
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: experiment lorenz63_etkf FAILED on rank 1 of 2: model 'l63': solver failed at t=0.2 in the nature run: "
                      "DIVERGED_TEST; the other ranks did not reach the experiment's end within 3 s (they wait for "
                      "this rank in a collective call), so the job ends here; run the same command again to resume"], \
        out.stderr[-3000:]
    assert seconds < 60, seconds
    again, _ = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert layout.done_marker(layout.experiment_dir(tmp_path / "out", "lorenz63_etkf")).is_file()
