"""The failure policy of a campaign, exercised by a real divergence (no faked failure).

Lorenz-96 with its forcing ``F`` estimable under a wide prior (lognormal, median 8, sigma 1.2): with
``campaign.seed: 8675`` the prior draws F = 8.9, 6.2, 244.1, 9.8, 4.5 for members 0..4, and RK4 at ``dt = 0.05``
blows up within the first cycle (8 steps) for F = 244 (from states near 8, F >= 150 diverged in 20 of 20 trials and
F <= 80 in none), so member 2's forecast raises SolverError (non-finite state). The matrix adds an experiment with a
narrow prior (sigma 0.05: the same draws, F within 7.5..8.6) that never fails.

* ``on_member_failure: drop``: member 2 is dropped by name (``twin status`` shows it), the campaign completes with
  four members; the dropped member is NaN in ``posterior.nc`` from cycle 1 on.
* ``on_member_failure: stop``: the wide-prior experiment stops at cycle 0 (``stopped.json``, state ``failed``) and the
  narrow-prior experiment completes.
* ``min_members`` larger than the survivors: the experiment stops with a message naming the dropped member (2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from campaign_case import l96_campaign
from twin.campaign import layout
from twin.io.checkpoint import CheckpointReader
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(300)

CAMPAIGN = l96_campaign("l96fail", seed=8675, forcing="{value: 8.0, prior: {dist: lognormal, median: 8.0, sigma: 1.2}, "
                        "estimable: true}", N=5, inflation=None, every=8, cycles=2,
                        extra="outputs: {checkpoint_every: 1}\n")  # the tests read checkpoint 1

WIDE, NARROW = "sigma-1.2", "sigma-0.05"
MATRIX = {"models.l96.forcing.prior.sigma": [1.2, 0.05]}


@pytest.fixture
def loaded(tmp_path):
    path = tmp_path / "fail.yaml"
    path.write_text(CAMPAIGN)
    return load_campaign(path)


def _prior_forcing(exp_dir) -> np.ndarray:
    from twin.io.checkpoint import CheckpointReader

    with CheckpointReader(layout.checkpoint_file(exp_dir, 0)) as r:
        return np.asarray(r.scalar_parameters["F"])


def test_drop_diverging_member_online(loaded, tmp_path):
    from mpi4py import MPI
    import xarray as xr

    from twin.campaign.online import run_online
    from twin.campaign.status import status

    run = tmp_path / "drop"
    run_online(loaded, MPI.COMM_SELF, run, experiments=ExperimentsConfig(matrix=MATRIX, retries=1,
                                                                         on_member_failure="drop"))
    wide = layout.experiment_dir(run, WIDE)
    F0 = _prior_forcing(wide)
    assert np.argmax(F0) == 2 and F0[2] > 200 and np.all(np.delete(F0, 2) < 12)  # the seed does what we claim
    done, failed = layout.member_files(wide, 0)
    assert done == [] and list(failed) == [2]  # online: the forecasts are in checkpoint 1, the drop has its marker
    with CheckpointReader(layout.checkpoint_file(wide, 1)) as r:
        kept = r.read_array("forecast")
    assert [m for m in range(5) if np.isfinite(kept[m]).all()] == [0, 1, 3, 4] and np.isnan(kept[2]).all()
    assert "non-finite" in failed[2] and "l96" in failed[2]
    st = {e.name: e for e in status(run).experiments}
    assert st[WIDE].state == "done" and st[WIDE].cycles_done == 2
    assert list(st[WIDE].dropped) == [2] and "member" not in st[NARROW].line() and "2 (" in st[WIDE].line()
    assert st[NARROW].state == "done" and not st[NARROW].dropped
    with xr.open_dataset(wide / "posterior.nc", decode_times=False) as ds:
        x = ds["l96_x"].values
    assert np.all(np.isnan(x[2, 1:])) and np.all(np.isfinite(x[2, 0]))
    assert np.all(np.isfinite(np.delete(x, 2, axis=0)))


def test_stop_policy_stops_only_that_experiment(loaded, tmp_path):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.campaign.status import status

    run = tmp_path / "stop"
    run_online(loaded, MPI.COMM_SELF, run, experiments=ExperimentsConfig(matrix=MATRIX, retries=0,
                                                                         on_member_failure="stop"))
    st = {e.name: e for e in status(run).experiments}
    assert st[WIDE].state == "stopped" and st[WIDE].cycles_done == 0
    stopped = layout.read_json(layout.stopped_marker(layout.experiment_dir(run, WIDE)))
    assert stopped["cycle"] == 0
    # the member and its own failure are named (found by a probe: 'a member forecast failed in cycle 0' alone), and
    # what to do to run it again
    assert stopped["reason"].startswith("member(s) ") and stopped["reason"].endswith(
        " failed in cycle 0 (policy: stop)") and "model 'l96'" in stopped["reason"], stopped
    assert st[WIDE].line().endswith(f"; remove {layout.stopped_marker(layout.experiment_dir(run, WIDE))} to run "
                                    "it again (after changing what stopped it)"), st[WIDE].line()
    assert st[NARROW].state == "done" and st[NARROW].cycles_done == 2
    # resuming a stopped experiment does not run it again (and does not hang)
    run_online(loaded, MPI.COMM_SELF, run, experiments=ExperimentsConfig(matrix=MATRIX, on_member_failure="stop"))
    assert layout.checkpoint_cycles(layout.experiment_dir(run, WIDE)) == [0]


def test_min_members_stops_with_the_dropped_member_named(loaded, tmp_path):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.campaign.status import status

    run = tmp_path / "min"
    run_online(loaded, MPI.COMM_SELF, run, experiments=ExperimentsConfig(matrix={"models.l96.forcing.prior.sigma": [1.2]},
                                                                         min_members=5))
    (e,) = status(run).experiments
    assert e.state == "stopped"
    exp = layout.experiment_dir(run, WIDE)
    stopped = layout.read_json(layout.stopped_marker(exp))
    # the dropped member with its cycle and cause; the experiment's name once, in the lines that stop it
    assert stopped["reason"].startswith("only 4 live member(s) left in cycle 0 (at least 5 needed); dropped: 2 in "
                                        "cycle 0 (") and WIDE not in stopped["reason"], stopped
    # what to do names the dropped member's marker too (found by a probe: removing stopped.json alone stopped the
    # rerun again at once); doing it, with the cause changed (min_members 4), the rerun resumes and finishes
    hint = layout.to_run_again(exp)
    marker = layout.failed_marker(exp, stopped["cycle"], 2)
    assert hint == (f"remove {layout.stopped_marker(exp)} and the markers of the members dropped in cycle "
                    f"{stopped['cycle']} ({marker.parent}/member_*.failed, to forecast them again) to run it again "
                    "(after changing what stopped it)"), hint
    assert e.line().endswith(f"; {hint}"), e.line()  # twin status says it too
    layout.stopped_marker(exp).unlink()
    marker.unlink()
    run_online(loaded, MPI.COMM_SELF, run, experiments=ExperimentsConfig(matrix={"models.l96.forcing.prior.sigma": [1.2]},
                                                                         min_members=4))
    (e,) = status(run).experiments
    assert e.state == "done", e.line()


def test_workflow_run_with_a_stopped_experiment_exits_non_zero(tmp_path):
    """``twin run --workflow`` (Parsl, local): the wide-prior experiment stops at its diverging member (policy stop),
    the narrow one completes; the command says which did not finish and exits 1 (it printed a WorkflowResult repr
    and exited 0)."""
    import subprocess
    import sys

    path = tmp_path / "fail.yaml"
    path.write_text(CAMPAIGN + "experiments:\n  matrix: {models.l96.forcing.prior.sigma: [1.2, 0.05]}\n"
                    "  on_member_failure: stop\n  retries: 0\n")
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", str(path), "--workflow", "-o",
                          str(tmp_path / "wf")], capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "WorkflowResult" not in out.stdout and out.stdout.startswith("finished with failures:")
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: experiment {WIDE} stopped: member(s) "), errors
    assert errors[0].endswith(f"; remove {layout.stopped_marker(layout.experiment_dir(tmp_path / 'wf', WIDE))} to run it "
                              "again (after changing what stopped it)"), errors
    assert (layout.experiment_dir(tmp_path / "wf", NARROW) / "posterior.nc").is_file()


# -- a stop after some cycles keeps them ------------------------------------------------------------------------------
STOPFAULT = '''\
import os

from twin.core.errors import SolverError
from twin_lorenz63.model import Lorenz63


class Failing(Lorenz63):
    """Lorenz-63 whose members (a drawn rho, not the true 28 of the nature run) fail from t = FAIL_AT on."""

    def advance(self, state, t0, t1):
        at = os.environ.get("FAIL_AT")
        if at and t0 >= float(at) - 1e-9 and self._param("rho") != 28.0:
            raise SolverError(self.name, t0, "DIVERGED_TEST")
        super().advance(state, t0, t1)


Failing.config_class = Lorenz63.config_class
'''


def test_an_online_experiment_stopped_by_the_policy_keeps_its_cycles_and_resumes_bitwise(tmp_path, monkeypatch):
    """Found in review: online mode holds its checkpoints back (``outputs.checkpoint_every``, or 10 s by default), and
    an experiment that the member policy stopped lost every cycle since the last one written: no checkpoint, no
    diagnostics, ``twin status`` said 0 cycles after 3 (workflow mode, which writes every cycle, kept them). Now the
    held analyses are written first: with a user's model (by import path) whose members fail from cycle 3 on,
    checkpoint 3 and three diagnostics records are there, and once the operator removes stopped.json the run
    resumes from cycle 3 to the outputs of a run that never stopped, bit for bit."""
    from importlib import metadata

    from mpi4py import MPI
    import xarray as xr

    from twin.campaign.online import run_online
    from twin.campaign.status import status

    if not any(ep.name == "lorenz63" for ep in metadata.entry_points(group="twin.kinds")):
        pytest.skip("needs the example plugin examples/lorenz63-plugin (make setup installs it)")
    root = Path(__file__).resolve().parents[2]
    text = (root / "examples" / "lorenz63-plugin" / "campaign.yaml").read_text()
    for old, new in (("type: lorenz63 ", 'type: "stopfault:Failing" '), ("end: 5.0", "end: 1.0"),
                     ("cycles: 40}", "cycles: 6}"), ("directory: runs/{name}", "checkpoint_every: 100")):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "c.yaml"
    path.write_text(text + "experiments: {on_member_failure: stop, retries: 0}\n")
    (tmp_path / "stopfault.py").write_text(STOPFAULT)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_campaign(path)

    run = tmp_path / "run"
    monkeypatch.setenv("FAIL_AT", "0.3")  # cycle 3 starts at t = 0.3
    run_online(loaded, MPI.COMM_SELF, run)
    (e,) = status(run).experiments
    assert e.state == "stopped" and e.cycles_done == 3, e.line()
    exp = layout.experiment_dir(run, "lorenz63_etkf")
    assert layout.checkpoint_cycles(exp) == [0, 3]
    assert layout.read_json(layout.stopped_marker(exp))["cycle"] == 3
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        assert ds.sizes["time"] == 3 and np.all(np.isfinite(ds["rmse"].values))

    layout.stopped_marker(exp).unlink()
    monkeypatch.delenv("FAIL_AT")
    run_online(loaded, MPI.COMM_SELF, run)
    run_online(loaded, MPI.COMM_SELF, tmp_path / "clean")
    for name in ("diagnostics.nc", "posterior.nc", "forecast.nc"):
        with xr.open_dataset(exp / name, decode_times=False) as a, \
                xr.open_dataset(layout.experiment_dir(tmp_path / "clean", "lorenz63_etkf") / name,
                                decode_times=False) as b:
            assert set(a.data_vars) == set(b.data_vars)
            for v in b.data_vars:
                assert np.array_equal(a[v].values, b[v].values, equal_nan=True), (name, v)


def test_online_mode_says_it_does_not_apply_a_task_timeout(loaded, tmp_path):
    """Found by a probe: ``experiments.task_timeout`` was accepted for an online run and silently not applied (a 20 s
    member under a 5 s limit finished 'done')."""
    from mpi4py import MPI

    from twin.campaign.online import run_online

    run_online(loaded, MPI.COMM_SELF, tmp_path / "run", experiments=ExperimentsConfig(
        matrix={"models.l96.forcing.prior.sigma": [0.1]}, task_timeout=5))
    said = [ln.split(": ", 1)[1] for ln in (tmp_path / "run" / "twin.log").read_text().splitlines()
            if "task_timeout" in ln]
    assert said == ["experiments.task_timeout (5 s) limits the tasks of a workflow (resources.workers > 1 or "
                    "--workflow); online mode runs the campaign in this process and does not apply it"], said
