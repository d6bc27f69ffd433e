"""Kill/resume stress: a campaign SIGKILLed at random moments and resumed until it finishes equals an uninterrupted
run bit for bit (issue 24's acceptance: at least 10 random kills, online and workflow).

For each mode (online: ``twin run``, one process; workflow: ``twin run --workflow``, Parsl with 2 local workers and
every member a task of its own):

1. an uninterrupted run of the campaign gives the reference and its wall time ``T``;
2. ``kills`` moments are drawn at random over the campaign (after a random number of the reference's task records
   in ``tasks.jsonl``, sorted, plus 0-0.3 s); the campaign is started in a fresh run directory and, at the first
   moment, every process of its session (driver, Parsl interchange and workers, MPI tasks) is SIGKILLed; then it is
   started again (a resume) and killed at the next moment, and so on; finally it runs to its end;
3. every number it left (posterior, forecast, diagnostics and free-run NetCDF variables, every checkpoint's ensemble
   and parameters) must equal the reference's bytes; the temporary files the kills left must be gone.

Records: kills made, kills that hit a run in progress, resumes, the wall time of the uninterrupted and of the
killed-and-resumed campaign, and ``bitwise_equal`` (1 or the benchmark fails). Run: ``python -m benchmarks.bench_kill_resume
[--kills N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from campaign_case import arrays, l96_campaign  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONDONTWRITEBYTECODE="1")


def campaign_text(cycles: int, workers: int) -> str:
    text = l96_campaign("stress", every=2, cycles=cycles,
                        extra=f"resources: {{type: local, ranks: 1, workers: {workers}}}\n")
    return text.replace("timeline: {start: 0.0, end: 1.0, units: s}",
                        f"timeline: {{start: 0.0, end: {cycles * 0.1:g}, units: s}}")


def command(campaign: Path, run: Path, workflow: bool) -> list[str]:
    return [sys.executable, "-m", "twin.cli", "run", str(campaign), "-o", str(run)] + (["--workflow"] if workflow
                                                                                        else [])


def session(sid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    out.append(int(entry))
            except OSError:
                continue
    return out


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session until none is left (what a batch system does at a time limit)."""
    for _ in range(100):
        pids = session(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def run_to_end(campaign: Path, run: Path, workflow: bool) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(command(campaign, run, workflow), capture_output=True, text=True, env=ENV, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"run in {run} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def every_number(exp: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    out = arrays(exp)
    with xr.open_dataset(exp / "free_run.nc", decode_times=False) as ds:
        out.update({f"free_run.nc:{v}": ds[v].values for v in list(ds.data_vars) + list(ds.coords)})
    return out


def differences(a: dict, b: dict) -> list[str]:
    if sorted(a) != sorted(b):
        return [f"different variables: {sorted(set(a) ^ set(b))}"]
    return [k for k in a if np.asarray(a[k]).tobytes() != np.asarray(b[k]).tobytes()
            or np.asarray(a[k]).shape != np.asarray(b[k]).shape]


def stress(mode: str, kills: int, rng: random.Random, base: Path, cycles: int, workers: int) -> None:
    from twin.campaign import layout

    workflow = mode == "workflow"
    campaign = base / f"{mode}.yaml"
    campaign.write_text(campaign_text(cycles, workers))
    ref, run = base / f"{mode}-ref", base / f"{mode}-killed"
    t_ref = run_to_end(campaign, ref, workflow)
    exp, exp_ref = layout.experiment_dir(run, "stress"), layout.experiment_dir(ref, "stress")
    # kill moments spread over the whole campaign: after a random number of the reference's task records
    # (tasks.jsonl: init, forecasts, analyses, finalize), plus a random fraction of a second
    total = len(layout.read_task_log(exp_ref))
    targets = sorted(rng.sample(range(1, total - 1), kills))
    hits, temporaries_seen, t0 = 0, 0, time.perf_counter()
    for target in targets:
        proc = subprocess.Popen(command(campaign, run, workflow), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        while proc.poll() is None and len(layout.read_task_log(exp)) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        hits += proc.poll() is None
        kill_session(proc.pid)
        proc.wait()
        temporaries_seen += sum(1 for p in run.rglob(".*.tmp-*") if p.is_file())
    t_last = run_to_end(campaign, run, workflow)
    t_total = time.perf_counter() - t0
    diff = differences(every_number(exp), every_number(exp_ref))
    stray = [str(p) for p in run.rglob(".*.tmp-*") if p.is_file()]
    context = {"mode": mode, "cycles": cycles, "members": 4}
    emit("kill_resume", f"{mode}_kills", kills, "kills", **context)
    emit("kill_resume", f"{mode}_kills_mid_run", hits, "kills", **context)
    emit("kill_resume", f"{mode}_temporary_files_left_by_kills", temporaries_seen, "files", **context)
    emit("kill_resume", f"{mode}_uninterrupted_wall", t_ref, "s", **context)
    emit("kill_resume", f"{mode}_killed_and_resumed_wall", t_total, "s", final_run_s=round(t_last, 2), **context)
    emit("kill_resume", f"{mode}_bitwise_equal", float(not diff and not stray), "bool", **context)
    if diff or stray:
        raise SystemExit(f"{mode}: the killed-and-resumed campaign differs from the uninterrupted one in {diff[:5]}; "
                         f"temporary files left: {stray[:5]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_kill_resume", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=6, help="random kills per mode (default 6: 12 in all)")
    p.add_argument("--seed", type=int, default=24)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    os.environ.setdefault("TWIN_OUTPUT_ROOT", tempfile.gettempdir())
    ENV.setdefault("TWIN_OUTPUT_ROOT", os.environ["TWIN_OUTPUT_ROOT"])
    with tempfile.TemporaryDirectory(prefix="twin-kill-resume-") as tmp:
        stress("online", args.kills, rng, Path(tmp), cycles=40, workers=1)
        stress("workflow", args.kills, rng, Path(tmp), cycles=4, workers=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
