"""The conformance kit (``twin check-model``): every built-in model type passes it with its example section, and
deliberately broken models fail it on exactly the line of what is broken (a wrong adjoint, a restart that is not
bitwise, a result that depends on the number of ranks, solvers that ignore the options prefix).

The broken models are small variants of one correct model defined here, :class:`Decay` (``dx/dt = -a x`` by explicit
Euler with its exact discrete adjoint); the kit builds them through factories named by import path, which is also how
its child process under ``mpiexec`` rebuilds them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from petsc4py import PETSc

from twin.conformance import PASS, SKIP, Subject, check_model, example_subject, example_types
from twin.config.common import LogNormalPrior
from twin.core.grid import Grid
from twin.models.base import Model, Parameter, QoI

pytestmark = pytest.mark.timeout(300)
MPIEXEC = shutil.which("mpiexec")
BUILTIN = ("heat", "linear_advection_diffusion", "lorenz96", "shallow_water", "structure", "tumour")


def test_every_builtin_model_type_has_an_example():
    assert set(BUILTIN) == set(example_types())


@pytest.mark.parametrize("type_name", BUILTIN)
def test_builtin_model_types_pass(type_name):
    report = check_model(example_subject(type_name), ranks=2)
    assert report.ok, report.text()
    statuses = {r.name: r.status for r in report.results}
    # every built-in model has estimable parameters, PETSc solvers and an adjoint: nothing is skipped but the batched
    # forecast of the models that offer none
    expected_skips = set() if MPIEXEC else {"1 vs 2 ranks agree"}
    if type_name != "lorenz96":
        expected_skips.add("batched forecast is advance")
    assert {n for n, s in statuses.items() if s == SKIP} == expected_skips, report.text()
    assert "rates 2.0" in report.result("adjoint Taylor test").measured


# -- a correct model and its broken variants -----------------------------------------------------------------------
class Decay(Model):
    """``dx/dt = -a x`` on 8 cells, explicit Euler with step ``dt``: ``x(t1) = (1 - a dt)^n x(t0)``; the decay rate
    ``a`` is estimable in log space. Its adjoint is exact: ``lam(t0) = (1 - a dt)^n lam(t1)`` and
    ``dJ/da = -n dt (1 - a dt)^(n-1) <lam(t1), x(t0)>``."""

    type_name = "decay"
    time_units = "1"

    def __init__(self, name: str, comm):
        super().__init__(name, comm)
        self.dt = 0.1
        self.grid = Grid(comm, (8,), [(0.0, 1.0)], name=name)
        self.parameters = {"a": Parameter("a", 0.5, "1", True, "log", LogNormalPrior(dist="lognormal", median=0.5,
                                                                                   sigma=0.2))}

    def initial_state(self) -> PETSc.Vec:
        return self.grid.set_global(1.0 + np.arange(8.0), self.create_state())

    def steps(self, t0: float, t1: float) -> int:
        return int(round((t1 - t0) / self.dt))

    def factor(self) -> float:
        return 1.0 - float(self.parameters["a"].value) * self.dt

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        for _ in range(self.steps(t0, t1)):
            state.scale(self.factor())

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        n, f = self.steps(t0, t1), self.factor()
        da = -n * self.dt * f ** (n - 1) * lam.dot(state0)
        lam.scale(f ** n)
        return {"a": da} if "a" in parameters else {}

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        return {"mean": QoI(float(state.sum()) / 8.0)}


class WrongAdjoint(Decay):
    """The state adjoint is 10 % too large."""

    def adjoint(self, state0, t0, t1, lam, parameters=()):
        out = super().adjoint(state0, t0, t1, lam, parameters)
        lam.scale(1.1)
        return out


class SplitsItsWindow(Decay):
    """Takes three steps whatever the window: two half windows are six steps of another size than one window's
    three, so a resumed run differs from an uninterrupted one."""

    def advance(self, state, t0, t1):
        h = (t1 - t0) / 3
        for _ in range(3):
            state.scale(1.0 - float(self.parameters["a"].value) * h)

    adjoint = Model.adjoint  # none: only the restart is wrong


class RankDependent(Decay):
    """Decays faster the more ranks it runs on."""

    def factor(self) -> float:
        return super().factor() - 1e-3 * (self.comm.Get_size() - 1)


class IgnoresPrefix(Decay):
    """Advances with a PETSc TS that takes its options without the component's prefix."""

    def __init__(self, name, comm):
        super().__init__(name, comm)
        self.ts = PETSc.TS().create(comm=self.grid.da.getComm())
        self.ts.setType(PETSc.TS.Type.EULER)
        self.ts.setRHSFunction(lambda ts, t, x, f: (x.copy(f), f.scale(-float(self.parameters["a"].value))))
        self.ts.setFromOptions()  # no setOptionsPrefix: reads -ts_type, never -<name>_ts_type

    def advance(self, state, t0, t1):
        self.ts.setTime(t0)
        self.ts.setTimeStep(self.dt)
        self.ts.setStepNumber(0)
        self.ts.setMaxSteps(self.steps(t0, t1))
        self.ts.setMaxTime(t1)
        self.ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        self.ts.solve(state)

    adjoint = Model.adjoint

    def destroy(self):
        self.ts.destroy()
        super().destroy()


class BatchedDecay(Decay):
    """Offers the batched forecast with ``advance``'s arithmetic: one multiplication per step, in the same order."""

    def advance_ensemble(self, states, parameters, t0, t1):
        out = np.array(states, dtype=float)
        for j, p in enumerate(parameters):
            f = 1.0 - float(p.get("a", self.parameters["a"].value)) * self.dt
            for _ in range(self.steps(t0, t1)):
                out[j] *= f
        return out


class BatchedShortcut(BatchedDecay):
    """The batched forecast as one power of the factor: the same in exact arithmetic, not bitwise."""

    def advance_ensemble(self, states, parameters, t0, t1):
        out = np.array(states, dtype=float)
        for j, p in enumerate(parameters):
            out[j] *= (1.0 - float(p.get("a", self.parameters["a"].value)) * self.dt) ** self.steps(t0, t1)
        return out


class CachesItsRate(Decay):
    """Takes its rate once, when built: a rate set later (a member's, an analysis's) never reaches the forecast."""

    def __init__(self, name, comm):
        super().__init__(name, comm)
        self.rate = float(self.parameters["a"].value)

    def factor(self) -> float:
        return 1.0 - self.rate * self.dt

    adjoint = Model.adjoint  # none: only the parameter is ignored


def _subject(cls) -> Subject:
    return Subject("decay", factory=f"{__name__}:{cls.__name__}")


def _statuses(report) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


def test_a_correct_model_passes():
    report = check_model(_subject(Decay), ranks=2 if MPIEXEC else 1)
    assert report.ok, report.text()
    s = _statuses(report)
    assert s["adjoint Taylor test"] == PASS and s["restart is bitwise"] == PASS
    assert s["options prefix honoured"] == SKIP  # no PETSc solver to read options
    assert "no PETSc solver" in report.result("options prefix honoured").measured


def test_a_batched_forecast_must_be_advance_bitwise():
    good = check_model(_subject(BatchedDecay), ranks=1)
    assert _statuses(good)["batched forecast is advance"] == PASS, good.text()
    assert "a drawn from the priors" in good.result("batched forecast is advance").measured
    bad = check_model(_subject(BatchedShortcut), ranks=1)
    assert [r.name for r in bad.failed()] == ["batched forecast is advance"], bad.text()
    measured = bad.result("batched forecast is advance").measured
    assert "bitwise" in measured and float(measured.split("max |difference| ")[1].split()[0]) > 0
    assert _statuses(check_model(_subject(Decay), ranks=1))["batched forecast is advance"] == SKIP


def test_a_wrong_adjoint_fails_the_taylor_test_line():
    report = check_model(_subject(WrongAdjoint), ranks=1)
    assert [r.name for r in report.failed()] == ["adjoint Taylor test"], report.text()
    line = report.result("adjoint Taylor test").measured
    rates = [float(w) for w in line.split("rates ")[1].split(" (")[0].split()]
    assert max(rates) < 1.5, line  # first order: the gradient is not the derivative
    assert "rate 2 expected" in line


def test_a_restart_that_is_not_bitwise_fails_its_line():
    report = check_model(_subject(SplitsItsWindow), ranks=1)
    assert [r.name for r in report.failed()] == ["restart is bitwise"], report.text()
    measured = report.result("restart is bitwise").measured
    assert "max |difference|" in measured and "a resumed campaign would differ" in measured
    assert float(measured.split("max |difference| ")[1].split()[0]) > 1e-6
    assert _statuses(report)["adjoint Taylor test"] == SKIP


def test_a_parameter_the_forecast_ignores_fails_the_restart_line():
    """Found by a probe (a BMI ignoring what it is given passed every check): the restart check also requires each
    estimable parameter, perturbed, to change the forecast."""
    report = check_model(_subject(CachesItsRate), ranks=1)
    assert [r.name for r in report.failed()] == ["restart is bitwise"], report.text()
    measured = report.result("restart is bitwise").measured
    assert measured.startswith("model 'decay': estimable parameter 'a' perturbed by up to 0.01 (relative) does not "
                               "change the forecast 0.2 -> 0.4"), measured


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
def test_a_rank_dependent_model_fails_the_ranks_line():
    report = check_model(_subject(RankDependent), ranks=2)
    assert [r.name for r in report.failed()] == ["1 vs 2 ranks agree"], report.text()
    measured = report.result("1 vs 2 ranks agree").measured
    assert "depends on the decomposition" in measured
    assert 1e-4 < float(measured.split("max relative difference ")[1].split()[0]) < 1e-1


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
def test_the_ranks_check_runs_from_a_process_that_inherited_an_mpi_environment(tmp_path):
    """``twin check-model`` started by a Python that had initialised MPI (whose Open MPI singleton exported
    OMPI_MCA_ess=singleton and PMIX_* to its children: a notebook, a script, a pytest-xdist worker) or under
    ``mpiexec -n 1``: the kit's own ``mpiexec -n 2`` starts a job of its own (it exited 1 with no output)."""
    import os
    import subprocess
    import sys

    check = [sys.executable, "-m", "twin.cli", "check-model", "lorenz96"]
    parent = ("import subprocess, sys; from mpi4py import MPI; MPI.COMM_WORLD; "
              f"sys.exit(subprocess.run({check!r}, stdin=subprocess.DEVNULL).returncode)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    for cmd in ([sys.executable, "-c", parent], [MPIEXEC, "-n", "1", *check]):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "PASS  1 vs 2 ranks agree          max relative difference 0 " in out.stdout, out.stdout


def test_solvers_without_the_prefix_fail_the_options_line():
    report = check_model(_subject(IgnoresPrefix), ranks=1)
    assert [r.name for r in report.failed()] == ["options prefix honoured"], report.text()
    assert "do not read the options under its prefix 'decay_'" in report.result("options prefix honoured").measured
    assert not PETSc.Options().hasName("ts_type")  # the check's unprefixed options are gone again


def test_check_model_command(capsys):
    from twin.cli import main

    assert main(["check-model", "linear_advection_diffusion", "--ranks", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("twin check-model: model type 'linear_advection_diffusion'")
    # found by a probe: the header said "1 rank (and 1 in a child process)", and no child process ran
    assert out[0].endswith("; 4 steps, 1 rank only"), out[0]
    assert len(out) == 1 + 9 and all(line[:4] in (PASS, SKIP) for line in out[1:])
    assert out[-1].startswith("SKIP  1 vs 2 ranks agree") and "not asked for" in out[-1]
    assert "no hidden state" in next(line for line in out if "restart is bitwise" in line)
    if MPIEXEC is not None:
        report = check_model(example_subject("linear_advection_diffusion"), ranks=2, only=("builds",))
        assert report.subject.endswith("1 rank only"), report.subject  # the ranks check not asked for


def test_check_model_command_refuses_bad_input(capsys, tmp_path):
    from twin.cli import main

    assert main(["check-model", "glacier"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model type 'glacier'; installed:" in err[0]
    assert main(["check-model", "heat", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml" in err[0] and "Traceback" not in err[0]
    # found by a probe: --step inf was "no time step" and --step 1e300 an OverflowError, both exit 1 (a check failed)
    for step in ("inf", "1e300"):
        assert main(["check-model", "lorenz96", "--step", step]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: check-model: --step {float(step):g}: 4 steps of it reach beyond t = 1e+15 (model time "
                       "units); give the model's step, a finite number"], err


def test_the_pytest_fixture_for_model_authors(tmp_path):
    """``pytest_plugins = ["twin.conformance.pytest_plugin"]`` gives a model author's tests ``twin_check_model``."""
    import subprocess
    import sys

    from twin.conformance import example_file

    (tmp_path / "conftest.py").write_text('pytest_plugins = ["twin.conformance.pytest_plugin"]\n')
    (tmp_path / "test_mine.py").write_text(
        "def test_contract(twin_check_model):\n"
        f"    report = twin_check_model('lorenz96', {str(example_file('lorenz96'))!r}, ranks=1)\n"
        "    assert report.result('adjoint Taylor test').status == 'PASS'\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout


def _check_model_command(*words: str, **kw):
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    return subprocess.Popen([sys.executable, "-m", "twin.cli", "check-model", *words], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)


def test_check_model_bounds_its_ranks_and_leaves_nothing_running_when_killed(tmp_path):
    """Found by trying: ``--ranks 100000`` started that many ranks, and a killed check left its mpiexec and ranks
    running and its temporary directory behind."""
    import os
    import signal
    import time

    from twin.cli_model import max_check_ranks

    proc = _check_model_command("heat", "--ranks", "100000")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.startswith(f"error: check-model: --ranks 100000 / --steps 4: at most {max_check_ranks()} ranks"), err
    if MPIEXEC is None:
        return
    import tempfile

    before = set(os.listdir(tempfile.gettempdir()))
    proc = _check_model_command("heat", "--ranks", "4")
    launcher = None
    deadline = time.time() + 120
    while launcher is None and time.time() < deadline and proc.poll() is None:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        launcher = next((int(p) for p in pids if Path(f"/proc/{p}/comm").read_text().strip() == "mpiexec"), None)
        time.sleep(0.05)
    assert launcher is not None, "the ranks check never started mpiexec"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    for _ in range(100):
        if not Path(f"/proc/{launcher}").exists() or "Z" in Path(f"/proc/{launcher}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"mpiexec {launcher} still runs 5 s after its check-model was killed")
    left = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("twin-check")}
    assert not left, left
