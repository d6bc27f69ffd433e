"""The three flagship campaigns at their full local size, timed end to end as a user runs them (issue 12).

``mpiexec -n 2 twin run configs/<name>.yaml`` then ``twin report`` for ``oncology``, ``atmosphere`` and
``structure``, each in a fresh run directory. Recorded: the wall time of the run and of the report, and per
experiment the numbers a user reads first: the analysis RMSE over the second half of the cycles (with the free run's
and the spread/skill ratio where the campaign writes them), and for the oncology twin how well k(x) and D were
recovered (coverage of the truth by the 90 % band, RMSE of log k before and after, D's band).

Usage: ``python -m benchmarks flagship`` (all three, about 12 minutes on 2 cores) or ``python -m
benchmarks.bench_flagship oncology`` (one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import ROOT, emit

CAMPAIGNS = ("oncology", "atmosphere", "structure")
#: wall time of twin run on 2 cores, quiet machine, before the speed work (RESULTS.md 2026-11-22; #23 goal 4: half)
BASELINE_S = {"oncology": 158.9, "atmosphere": 226.3, "structure": 32.41}
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def _twin() -> str:
    return str(Path(sys.executable).with_name("twin"))


def _second_half(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return float(np.mean(v[v.size // 2:])) if v.size else float("nan")


def _experiment_numbers(name: str, exp: Path) -> None:
    import xarray as xr

    tag = f"{name} {exp.name}"
    diag = exp / "diagnostics.nc"
    if diag.exists():
        with xr.open_dataset(diag, decode_times=False) as ds:
            if "rmse" in ds:
                emit("flagship", f"{tag}: analysis RMSE, second half", _second_half(ds["rmse"].values), "state units")
            if "rmse" in ds and "spread" in ds:
                r, s = ds["rmse"].values, ds["spread"].values
                emit("flagship", f"{tag}: spread/skill, second half", _second_half(s) / _second_half(r), "1")
    free = exp / "free_run.nc"
    if free.exists():
        with xr.open_dataset(free, decode_times=False) as ds:
            emit("flagship", f"{tag}: free-run RMSE, second half", _second_half(ds["rmse_free"].values),
                 "state units")
    dec = exp / "decision.json"
    if dec.exists():
        record = json.loads(dec.read_text())
        cal = record.get("calibration", {})
        if "k" in cal:
            emit("flagship", f"{tag}: truth k inside the 90 % band", cal["k"]["coverage_90"], "fraction of tumour cells")
            emit("flagship", f"{tag}: RMSE of log k, posterior / prior",
                 cal["k"]["rmse_log_posterior"] / cal["k"]["rmse_log_prior"], "1")
        d = cal.get("D_white")
        if d:
            emit("flagship", f"{tag}: truth D inside the 5-95 % band", float(d["q05"] <= d["truth"] <= d["q95"]), "1",
                 truth=round(d["truth"], 4), q05=round(d["q05"], 4), q95=round(d["q95"], 4))


def run(name: str, ranks: int = 2) -> None:
    config = ROOT.parent / "configs" / f"{name}.yaml"
    scratch = ROOT.parent / "runs"  # below the working directory (run directories are confined there), ignored by git
    scratch.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"twin-flagship-{name}-", dir=scratch))
    try:
        t0 = time.perf_counter()
        cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), _twin(), "run", str(config), "-o", str(work)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT.parent, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        t_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = subprocess.run([_twin(), "report", str(work)], capture_output=True, text=True, env=ENV,
                             cwd=ROOT.parent, timeout=1800)
        if rep.returncode:
            raise RuntimeError(f"twin report failed:\n{rep.stderr[-3000:]}")
        t_report = time.perf_counter() - t0
        experiments = sorted(p for p in (work / "experiments").iterdir() if p.is_dir())
        goal = BASELINE_S[name] / 2
        load = os.getloadavg()[0]
        emit("flagship", f"{name}: wall time of twin run", t_run, "s", ranks=ranks, experiments=len(experiments),
             load1=round(load, 2), goal=f"<= {goal:g} s (half of {BASELINE_S[name]:g} s)", met=t_run <= goal)
        emit("flagship", f"{name}: wall time of twin report", t_report, "s")
        for exp in experiments:
            _experiment_numbers(name, exp)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    for name in argv or CAMPAIGNS:
        run(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
