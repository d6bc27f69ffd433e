"""An error inside one experiment fails that experiment alone: the others finish, ``twin status`` and twin.log say
FAILED with the reason, ``twin run`` exits non-zero, and a rerun skips what finished and tries the failed one again.

Through the ``twin`` command, as a user runs it. The injected failure is a real one: a 4D-Var experiment whose TAO
minimisation is cut at two iterations with ``on_failure: raise`` (an AssimilationError from the minimiser), next to
the same experiment with ``on_failure: warn``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

CAMPAIGN = """\
schema_version: 1
campaign: {name: contained, seed: 1}
models:
  l96:
    type: lorenz96
    n: 20
    dt: 0.05
    forcing: {value: 8.0, prior: {dist: normal, mean: 7.0, std: 1.0}, estimable: true}
    initial_condition: random
    perturbation: 1.0
timeline: {start: 0.0, end: 0.4, units: s}
resources: {type: local, ranks: 1, workers: 1}
assimilation:
  method: 4dvar
  model: l96
  obs_interval: 0.1
  window: 2
  cycles: 2
  seed: 3
  background_covariance: {kind: diagonal, std: 1.0}
  parameters: [{name: F, std: 1.0}]
  observations: [{type: all_points, component: 0, error_std: 1.0}]
  tao: {gatol: 1.0e-4, max_iterations: 2, on_failure: warn}
experiments:
  matrix:
    assimilation.tao.on_failure: [raise, warn]
"""

TWIN = [sys.executable, "-m", "twin.cli"]


def _twin(*args, cwd):
    return subprocess.run(TWIN + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=240)


def test_a_failing_experiment_is_contained_reported_and_retried(tmp_path):
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    run = _twin("run", "c.yaml", "-o", "run", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    failed = tmp_path / "run" / "experiments" / "on-failure-raise"
    good = tmp_path / "run" / "experiments" / "on-failure-warn"
    # the experiment after the failed one ran to the end
    assert (good / "done.json").is_file() and (good / "posterior.nc").is_file()
    assert not (failed / "done.json").exists()
    reason = json.loads((failed / "failed.json").read_text())["reason"]
    assert "TAO lmvm did not converge: DIVERGED_MAXITS after 2 iterations" in reason
    # one line per unfinished experiment, then the count
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == (f"error: experiment on-failure-raise FAILED: {reason}; run the same command again to try it "
                         "again from its files (after fixing the cause)")
    assert errors[-1].startswith("error: 1 experiment(s) did not finish")
    log = (tmp_path / "run" / "twin.log").read_text()
    assert f"experiment on-failure-raise FAILED: {reason}" in log

    st = _twin("status", "run", cwd=tmp_path)
    lines = st.stdout.splitlines()
    assert "driver finished" in lines[0] and "1 done" in lines[0]
    assert any(line.strip().startswith("on-failure-raise: failed") and "DIVERGED_MAXITS" in line for line in lines)
    assert any(line.strip() == "on-failure-warn: done, 2/2 cycles" for line in lines)

    # a rerun does not redo finished work, and tries the failed experiment again (it fails the same way)
    stamp = (good / "posterior.nc").stat().st_mtime_ns
    again = _twin("run", "c.yaml", "-o", "run", cwd=tmp_path)
    assert again.returncode == 1
    assert (good / "posterior.nc").stat().st_mtime_ns == stamp
    log = (tmp_path / "run" / "twin.log").read_text()
    assert "experiment on-failure-warn finished earlier; skipping it" in log
    assert "experiment on-failure-raise failed earlier" in log and "trying it again" in log
    assert Path(failed / "failed.json").is_file()


def test_an_overflowing_inflation_fails_its_experiment_with_what_to_change(tmp_path):
    """Multiplicative inflation 1e200 (accepted by the schema: it is >= 1) makes the ETKF's eigendecomposition fail;
    the experiment fails with the cycle, the factor and what to change, not a bare LinAlgError."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from campaign_case import l96_campaign

    (tmp_path / "c.yaml").write_text(l96_campaign("infl", inflation=1e200, cycles="2"))
    run = _twin("run", "c.yaml", "-o", "run", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    reason = json.loads((tmp_path / "run" / "experiments" / "infl" / "failed.json").read_text())["reason"]
    assert reason.startswith("cycle 0: the analysis' linear algebra failed") and "lower the inflation" in reason
