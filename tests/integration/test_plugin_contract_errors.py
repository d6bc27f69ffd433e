"""A user's model class that breaks the model contract (twin.models.base) is one error line naming the component,
the method and what the contract expects (twin.models.contract), in `twin run` and in `twin check-model` alike.

Each class subclasses the example plugin's Lorenz63 and breaks one thing; the campaign names it by import path from
a module written into tmp_path (PYTHONPATH), as a user's quick model is named. A member forecast that raises an
error of its own keeps the online driver's line (member N's forecast in cycle K raised ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "examples" / "lorenz63-plugin" / "campaign.yaml"
TWIN = [sys.executable, "-m", "twin.cli"]
#: what a failed experiment's final line adds (twin.campaign.layout.to_try_again)
AGAIN = "run the same command again to try it again from its files (after fixing the cause)"

BADMODS = '''
import numpy as np
from twin_lorenz63.model import Lorenz63


class KeyErr(Lorenz63):
    def advance(self, state, t0, t1):
        {}["missing"]


class FromCfgBad(Lorenz63):
    @classmethod
    def from_config(cls, name, cfg, comm):
        return 42


class BadInit(Lorenz63):
    def initial_state(self):
        return np.zeros(3)


class BadQoI(Lorenz63):
    def qoi(self, state, t):
        return "not a dict"


class FloatQoI(Lorenz63):
    def qoi(self, state, t):
        return {"z": 3.0, "energy": 1.0}


class NaNState(Lorenz63):
    def advance(self, state, t0, t1):
        super().advance(state, t0, t1)
        state.getArray()[...] = np.nan


class Recur(Lorenz63):
    def advance(self, state, t0, t1):
        return self.advance(state, t0, t1)


class MemberOnly(Lorenz63):
    """Fails only away from the true rho of the nature run: in the members' forecasts."""
    def advance(self, state, t0, t1):
        if self.parameters["rho"].value != 28.0:
            {}["missing"]
        super().advance(state, t0, t1)


class MemberNaN(Lorenz63):
    """Turns non-finite without raising for a member with rho in (24, 24.9) (one of the 4 members' draws), never in
    the nature run (rho 28) or the free run (the prior's median, 25)."""
    def advance(self, state, t0, t1):
        super().advance(state, t0, t1)
        if 24.0 < self.parameters["rho"].value < 24.9:
            state.getArray()[...] = np.nan


class FreeNaN(Lorenz63):
    """Turns non-finite without raising at the prior's median rho (25): in the free run only."""
    def advance(self, state, t0, t1):
        super().advance(state, t0, t1)
        if abs(self.parameters["rho"].value - 25.0) < 1e-9:
            state.getArray()[...] = np.nan


class NaNQoI(Lorenz63):
    def qoi(self, state, t):
        from twin.models.base import QoI

        return {**super().qoi(state, t), "energy": QoI(float("nan"), "1")}


class GenExit(Lorenz63):
    def advance(self, state, t0, t1):
        raise GeneratorExit


class NoNames(Lorenz63):
    state_names = ()


for c in (KeyErr, FromCfgBad, BadInit, BadQoI, FloatQoI, NaNState, Recur, MemberOnly, MemberNaN, FreeNaN, NaNQoI,
          GenExit, NoNames):
    c.config_class = Lorenz63.config_class
'''


@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("badmods")
    (d / "badmods.py").write_text(BADMODS)
    return d


def _env(modules: Path) -> dict[str, str]:
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="1",
                PYTHONPATH=os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]))


def _twin(modules: Path, *args, cwd: Path):
    return subprocess.run(TWIN + list(args), capture_output=True, text=True, env=_env(modules), cwd=cwd,
                          timeout=280)


def _campaign(tmp_path: Path, cls: str) -> Path:
    text = CAMPAIGN.read_text()
    for old, new in (("type: lorenz63 ", f'type: "badmods:{cls}" '), ("cycles: 40", "cycles: 2"), ("N: 10", "N: 4"),
                     ("end: 5.0", "end: 0.5")):
        assert old in text, old
        text = text.replace(old, new)
    f = tmp_path / f"{cls}.yaml"
    f.write_text(text)
    return f


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


QOI_HOW = "return e.g. {'energy': QoI(value, '1')}, or {} for none"

RUN_CASES = {
    "KeyErr": "model 'l63': advance(t=0 -> 0.1) raised KeyError: 'missing' (in the nature run)",
    "FromCfgBad": "model 'l63' (badmods:FromCfgBad): from_config returned int, not a twin model (a "
                  "twin.models.base.Model): return the built model",
    "BadInit": "model 'l63': initial_state() returned numpy.ndarray, not a PETSc Vec of the model's grid: return a "
               "new vector (self.create_state() or self.grid.create_global()) holding the initial condition",
    "BadQoI": "model 'l63': qoi(t=0.25) returned str, not a mapping of QoI name to twin.models.base.QoI (value: "
              f"float, units, long_name): {QOI_HOW}",
    "FloatQoI": "model 'l63': qoi(t=0.25) returned float for 'z', not a twin.models.base.QoI (value: float, units, "
                f"long_name): {QOI_HOW}",
    "NaNState": "model 'l63': advance(t=0 -> 0.1) left 3 non-finite value(s) of 3 in the state without raising (in "
                "the nature run): when its solve fails, advance must raise twin.core.errors.SolverError naming the "
                "time and the reason",
    "FreeNaN": "model 'l63': advance(t=0 -> 0.1) left 3 non-finite value(s) of 3 in the state without raising (in "
               "the free run): when its solve fails, advance must raise twin.core.errors.SolverError naming the "
               "time and the reason",
    # found by a probe (2026-12-07): the NaN went into decision.json and the report broke on it; GeneratorExit
    # (not an Exception) gave a traceback
    "NaNQoI": "model 'l63': qoi(t=0.25) returned QoI 'energy' with the value nan, not a finite number: when it "
              "cannot compute one, qoi must raise twin.core.errors.ModelError saying why",
    "GenExit": "model 'l63': advance(t=0 -> 0.1) raised GeneratorExit (in the nature run)",
    "NoNames": "model 'l63' (badmods:NoNames): state_names is (), not a tuple of the state variables' names (one or "
               "more, e.g. ('x', 'y', 'z')): the outputs and observations name them",
    "Recur": "model 'l63': advance(t=0 -> 0.1) raised RecursionError: maximum recursion depth exceeded (the method "
             "calls itself without end: call super()'s method, or the solver, instead) (in the nature run)",
}


@pytest.mark.parametrize("cls", sorted(RUN_CASES))
def test_twin_run_names_component_method_and_contract(tmp_path, modules, cls):
    run = _twin(modules, "run", str(_campaign(tmp_path, cls)), "-o", "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert _errors(run.stderr)[0] == (f"error: experiment lorenz63_etkf FAILED: {RUN_CASES[cls]}; {AGAIN}"), \
        run.stderr[-3000:]


def test_a_member_forecast_keeps_the_drivers_line(tmp_path, modules):
    run = _twin(modules, "run", str(_campaign(tmp_path, "MemberOnly")), "-o", "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-3000:]
    assert _errors(run.stderr)[0] == ("error: experiment lorenz63_etkf FAILED: member 0's forecast in cycle 0 raised "
                                      f"KeyError: 'missing'; {AGAIN}"), run.stderr[-3000:]


def test_a_member_forecast_that_turns_non_finite_fails_that_member(tmp_path, modules):
    """A plugin's advance that leaves NaN in a member's forecast without raising: that member is dropped with the
    contract's reason (the campaign's on_member_failure: drop), and no NaN reaches the analysis."""
    import numpy as np
    import xarray as xr

    from twin.campaign import layout

    run = _twin(modules, "run", str(_campaign(tmp_path, "MemberNaN")), "-o", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    exp = layout.experiment_dir(tmp_path / "out", "lorenz63_etkf")
    dropped = layout.member_files(exp, 0)[1]
    assert 0 < len(dropped) < 4, dropped
    for reason in dropped.values():
        assert reason == ("model 'l63': advance(t=0 -> 0.1) left 3 non-finite value(s) of 3 in the state without "
                          "raising (in a member's forecast of cycle 0): when its solve fails, advance must raise "
                          "twin.core.errors.SolverError naming the time and the reason"), reason
    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as ds:
        kept = ds["l63_x"].sel(member=[m for m in range(4) if m not in dropped]).values
    assert kept.size and np.all(np.isfinite(kept))


CHECK_CASES = {
    "FromCfgBad": ("builds", RUN_CASES["FromCfgBad"]),
    "BadInit": ("builds", RUN_CASES["BadInit"]),
    "BadQoI": ("QoIs finite", RUN_CASES["BadQoI"].replace("t=0.25", "t=0")),
    "KeyErr": ("checkpoint round trip", "model 'l63': advance(t=0 -> 0.02) raised KeyError: 'missing'"),
    "NaNState": ("restart is bitwise", "model 'l63': advance(t=0 -> 0.04) left 3 non-finite value(s) of 3 in the "
                                       "state without raising: when its solve fails, advance must raise "
                                       "twin.core.errors.SolverError naming the time and the reason"),
}


@pytest.mark.parametrize("cls", sorted(CHECK_CASES))
def test_check_model_reports_the_same_line(tmp_path, modules, cls):
    check, line = CHECK_CASES[cls]
    run = _twin(modules, "check-model", f"badmods:{cls}", "--config", str(_campaign(tmp_path, cls)), "--ranks", "1",
                cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    fails = [ln for ln in run.stdout.splitlines() if ln.startswith("FAIL")]
    assert any(ln.split(None, 1)[1].startswith(check) and ln.endswith(line) for ln in fails), run.stdout
    assert f"error: {check}: {line}" in _errors(run.stderr), run.stderr
    if check == "builds":  # nothing else can run
        assert len(fails) == 1, run.stdout
