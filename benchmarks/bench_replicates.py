"""Calibration of the flagship twins over independent truths (issue 22, points 4 and 5), as a user measures it.

Each flagship campaign is run at its full local size with ``experiments: {replicates: K}`` (the matrix keeps its
method axis and loses ``campaign.seed``, which the replicates take over: one truth per seed, every estimable
parameter drawn from its prior unless the campaign's ``truth.draw`` says which), then ``twin report`` measures the
calibration (``report/calibration.json``, :mod:`twin.report.calibration`). Recorded per flagship and method: the
coverage of the truth by the 90 % intervals for each parameter, QoI and field (goal 80-97 %), the state coverage,
spread/skill and CRPS after the burn-in, and the wall time.

Usage: ``python -m benchmarks replicates`` (the three flagships, K = 20: about an hour on 2 cores) or ``python -m
benchmarks.bench_replicates atmosphere 10`` (one flagship, K = 10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, emit

CAMPAIGNS = ("oncology", "atmosphere", "structure")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def replicated(name: str, k: int, directory: Path) -> Path:
    """The flagship campaign file with ``replicates: k`` (written into ``directory``)."""
    from twin.config.reader import read_yaml
    from twin.config.writer import dump_yaml

    data = read_yaml((ROOT.parent / "configs" / f"{name}.yaml").read_text(), f"{name}.yaml")[0]
    section = data.setdefault("experiments", {})
    section.get("matrix", {}).pop("campaign.seed", None)
    if not section.get("matrix"):
        section.pop("matrix", None)
    section["replicates"] = int(k)
    data["campaign"]["name"] = f"{name}_replicates"
    path = directory / f"{name}_replicates.yaml"
    path.write_text(dump_yaml(data))
    return path


def run(name: str, k: int) -> None:
    twin = str(Path(sys.executable).with_name("twin"))
    scratch = ROOT.parent / "runs"  # below the working directory (run directories are confined there), ignored by git
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"replicates-{name}-", dir=scratch) as tmp:
        tmp = Path(tmp)
        campaign = replicated(name, k, tmp)
        t0 = time.perf_counter()
        out = subprocess.run(["mpiexec", "-n", "2", twin, "run", str(campaign), "-o", str(tmp / "run"), "-q"],
                             capture_output=True, text=True, env=ENV, cwd=ROOT.parent)
        seconds = time.perf_counter() - t0
        if out.returncode not in (0, 1):
            raise RuntimeError(f"{name}: twin run failed:\n{out.stderr[-3000:]}")
        subprocess.run([twin, "report", str(tmp / "run")], check=True, capture_output=True, cwd=ROOT.parent)
        emit("replicates", f"{name} run time, {k} truths", seconds, "s")
        from twin.campaign import layout

        for d in layout.experiment_dirs(tmp / "run"):
            reason = layout.read_json(layout.error_marker(d)).get("reason") or \
                layout.read_json(layout.stopped_marker(d)).get("reason")
            if reason:  # a replicate that did not finish is not in the coverage counts: say which and why
                emit("replicates", f"{name} experiment {d.name} did not finish", 1, "1", reason=reason[:300])
        path = tmp / "run" / "report" / "calibration.json"
        for cal in json.loads(path.read_text()) if path.is_file() else []:
            for quantity, c in cal["coverage"].items():
                emit("replicates", f"{name} [{cal['label']}] {quantity}: 90 % coverage", 100 * c["fraction"], "%",
                     inside=c["inside"], truths=c["total"], goal="80-97 %",
                     met=bool(0.80 <= c["fraction"] <= 0.97))
            for quantity, c in cal.get("coverage50", {}).items():
                emit("replicates", f"{name} [{cal['label']}] {quantity}: 50 % coverage", 100 * c["fraction"], "%",
                     inside=c["inside"], truths=c["total"])
            for score, value in cal["scores"].items():
                if score not in ("spread_a", "rmse_a"):
                    emit("replicates", f"{name} [{cal['label']}] {score} (mean)", value, "1",
                         truths=len(cal["replicates"]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = [a for a in argv if a in CAMPAIGNS] or list(CAMPAIGNS)
    k = next((int(a) for a in argv if a.isdigit()), 20)
    for name in names:
        run(name, k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
