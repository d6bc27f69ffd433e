"""Calibration of the flagship twins over independent truths (issue 22, points 4 and 5), as a user measures it.

Each flagship campaign is run at its full local size with ``experiments: {replicates: K}`` (the matrix keeps its
method axis and loses ``campaign.seed``, which the replicates take over: one truth per seed, every estimable
parameter drawn from its prior unless the campaign's ``truth.draw`` says which), then ``twin report`` measures the
calibration (``report/calibration.json``, :mod:`twin.report.calibration`). Recorded per flagship and method: the
coverage of the truth by the 90 % intervals for each parameter, QoI and field (goal 80-97 %), the state coverage,
spread/skill and CRPS after the burn-in, and the wall time; for each decision QoI with a threshold (the atmosphere's
P(sea level at the harbour > 4 m)), the Brier score of its exceedance probability, that of climatology and the skill
(goal > 0), at the decision's threshold and pooled with the quantiles of the truths as further thresholds, the
reliability diagram's bins, and the Brier difference between the methods (paired where their truths are the same).

Usage: ``python -m benchmarks replicates`` (the three flagships, K = 20: about an hour on 2 cores) or ``python -m
benchmarks.bench_replicates atmosphere 10`` (one flagship, K = 10); ``--keep`` keeps the run directory and its report
(``runs/replicates-<flagship>-*``) instead of deleting it.
"""

from __future__ import annotations

import contextlib
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


def run(name: str, k: int, keep: bool = False) -> None:
    twin = str(Path(sys.executable).with_name("twin"))
    scratch = ROOT.parent / "runs"  # below the working directory (run directories are confined there), ignored by git
    scratch.mkdir(exist_ok=True)
    prefix = f"replicates-{name}-"
    with (contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix, dir=scratch)) if keep
          else tempfile.TemporaryDirectory(prefix=prefix, dir=scratch)) as tmp:
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
            for qoi, e in (cal.get("exceedance") or {}).items():
                _exceedance(f"{name} [{cal['label']}]", qoi, e)
        if keep:
            emit("replicates", f"{name} run directory kept", k, "truths", path=str(tmp / "run"))


def _exceedance(prefix: str, qoi: str, e: dict) -> None:
    """The Brier scores of one QoI's exceedance probabilities, its reliability bins and the paired comparisons."""
    unit = f" {e['units']}" if e.get("units") not in (None, "", "1") else ""
    pooled = e.get("pooled")
    if not pooled:
        return
    rows = [(f"P({qoi} > {r['threshold']:g}{unit})", r) for r in e["thresholds"] if r["kind"] == "decision"]
    rows.append((f"P({qoi} > threshold), {len(e['thresholds'])} thresholds pooled", pooled))
    for label, r in rows:
        truths = f"{r['events']}/{r['pairs']}"
        emit("replicates", f"{prefix} {label}: Brier score", r["brier"], "1", se=r["brier_se"], events=truths)
        emit("replicates", f"{prefix} {label}: climatological Brier score", r["climatology"], "1",
             base_rate=r["base_rate"])
        if r["skill"] is None:  # every truth on one side of the threshold: climatology is perfect, no skill to say
            emit("replicates", f"{prefix} {label}: Brier skill score", float("nan"), "1", goal="> 0", met=None,
                 note=f"undefined: {r['events']} of {r['pairs']} truths above")
        else:
            emit("replicates", f"{prefix} {label}: Brier skill score", r["skill"], "1",
                 interval_5_95=r["skill_interval"], goal="> 0", met=bool(r["skill"] > 0))
    for b in pooled["reliability"]:
        if b["count"]:
            emit("replicates", f"{prefix} P({qoi} > threshold) reliability, forecast {b['lower']:.1f}-{b['upper']:.1f}:"
                 " observed frequency", b["observed"], "1", forecasts=b["count"], mean_forecast=round(b["forecast"], 3),
                 binomial_se=round(b["se"], 3))
    for other, c in (e.get("compared") or {}).items():
        for what in ("decision", "pooled"):
            if c.get(what):
                d = c[what]
                how = "paired, same truths" if c.get("paired") else "same seeds, different truths: unpaired"
                emit("replicates", f"{prefix} P({qoi} > threshold) Brier minus [{other}]'s, {what} ({how})",
                     d["difference"], "1", se=d["se"], truths=c["truths"],
                     within_2se=bool(abs(d["difference"]) <= 2 * d["se"]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = [a for a in argv if a in CAMPAIGNS] or list(CAMPAIGNS)
    k = next((int(a) for a in argv if a.isdigit()), 20)
    for name in names:
        run(name, k, keep="--keep" in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
