"""Calibration over replicates: how often the posterior's credible intervals contain the truth, over independent
truths (``experiments.replicates``, or any matrix over ``campaign.seed`` with the truths drawn from the priors).

Experiments that differ only in ``campaign.seed`` (``matrix.json``) are replicates of one set-up; for each set-up with
at least two finished replicates :func:`summarise` measures, from the files alone:

* for every scalar estimable parameter: the fraction of replicates whose true value (``observations.h5``) lies inside
  the 5-95 % interval of the final posterior samples (the last checkpoint), and the normalised rank of the truth among
  the samples (its histogram is flat for a calibrated posterior);
* for every decision QoI with a known truth (``free_run.nc``: the nature run continued to the horizon): the fraction
  inside the decision's outermost credible interval, and, from the members' forecasts (``prediction.nc``), the
  fraction inside their 25-75 % interval and the rank of the truth among them;
* for scalar parameters and QoIs the 50 % interval too (25-75 %: half the truths inside for a calibrated posterior;
  a posterior can cover 90 % with intervals too wide and miss the 50 % mark, which shows it);
* for field parameters the mean fraction of entries inside the 90 % band: from the decision's own calibration record
  where it has one (``decision.json`` ``calibration``: the tumour's ``k(x)`` over the tumour's cells, for every
  method alike), else over the whole field from the final members; and the fraction of truths of each scalar
  parameter inside its 90 % band;
* ensemble scores after the burn-in, averaged over the replicates: coverage of the state (``coverage_90_a``),
  spread/skill (``spread_a / rmse_a``) and CRPS (``crps_a``).

Nominal coverage is 90 %; with K replicates a coverage count is binomial, so its standard error
``sqrt(0.9 * 0.1 / K)`` is printed next to it (10 % at K = 9, 6.7 % at K = 20).

Exceedance probabilities (Brier score, reliability) are verified by :mod:`twin.report.exceedance`.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.report.data import RunData
from twin.report.exceedance import (
    compare,
    exceedance_html,
    exceedance_summary,
    reliability_diagrams,
    shared_truths,
)

NOMINAL = 0.9


@dataclass
class Calibration:
    """The calibration of one set-up over its replicates.

    Attributes
    ----------
    label : str
        What the replicates share (their matrix values other than ``campaign.seed``).
    replicates : list of str
        The experiments measured (finished ones).
    coverage : dict
        ``quantity -> (inside, total)``: how many truths lay inside the nominal 90 % interval.
    coverage50 : dict
        The same for the 50 % (25-75 %) interval, where the samples are known (parameters, member QoIs).
    ranks : dict
        ``parameter -> normalised ranks`` of the truth among the posterior samples (0 .. 1), one per replicate
        (``QoI <name>`` for a QoI at the horizon).
    scores : dict
        ``name -> mean`` of the ensemble scores after the burn-in.
    exceedance : dict
        ``QoI -> {"units", "limits", "thresholds", "pooled"}``: the verification of the exceedance probabilities of
        each decision QoI with a threshold (:func:`exceedance_summary`).
    """

    label: str
    replicates: list[str]
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)
    coverage50: dict[str, tuple[int, int]] = field(default_factory=dict)
    ranks: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    exceedance: dict[str, dict] = field(default_factory=dict)
    # per QoI with a threshold, one (replicate, truth, members' values, {limit: decision's P(q > limit)}) per replicate
    _forecasts: dict[str, list[tuple[str, float, np.ndarray | None, dict[float, float]]]] = \
        field(default_factory=dict, repr=False)
    _units: dict[str, str] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {"label": self.label, "replicates": self.replicates,
                "coverage": {k: {"inside": a, "total": b, "fraction": a / b} for k, (a, b) in self.coverage.items()},
                "coverage50": {k: {"inside": a, "total": b, "fraction": a / b}
                               for k, (a, b) in self.coverage50.items()},
                "ranks": self.ranks, "scores": self.scores, "nominal": NOMINAL, "exceedance": self.exceedance}


def _matrix(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "matrix.json").read_text())
    except (OSError, ValueError):
        return {}


def _count(cal: Calibration, name: str, inside: bool, level: float = NOMINAL) -> None:
    table = cal.coverage if level == NOMINAL else cal.coverage50
    a, b = table.get(name, (0, 0))
    table[name] = (a + int(bool(inside)), b + 1)


def _samples(cal: Calibration, name: str, rank_name: str, samples: np.ndarray, truth: float) -> None:
    """The 50 % interval and the rank of ``truth`` among ``samples`` (the 90 % interval is counted by the caller)."""
    q25, q75 = np.quantile(samples, [0.25, 0.75])
    _count(cal, name, q25 <= truth <= q75, 0.5)
    cal.ranks.setdefault(rank_name, []).append(float(np.mean(samples < truth)))


def _member_qois(directory: Path) -> dict[str, np.ndarray]:
    """Each QoI's member values at the horizon (``prediction.nc``; members dropped by the policy left out)."""
    import xarray as xr

    path = directory / "prediction.nc"
    if not path.is_file():
        return {}
    with xr.open_dataset(path, decode_times=False) as ds:
        out = {}
        for v in ds.data_vars:
            if ds[v].dims == ("member", "time"):
                values = np.asarray(ds[v].values[:, -1], dtype=float)
                out[str(v)] = values[np.isfinite(values)]
        return out


def _truth_parameters(directory: Path) -> dict:
    from twin.core.errors import OutputError
    from twin.io.checkpoint import CheckpointReader

    try:
        with CheckpointReader(directory / "observations.h5", verify=False) as r:
            return r.meta.get("truth_parameters", {})
    except (OutputError, OSError, KeyError):
        return {}


def _free_run_truth(directory: Path) -> dict[str, float]:
    import xarray as xr

    path = directory / "free_run.nc"
    if not path.is_file():
        return {}
    with xr.open_dataset(path, decode_times=False) as ds:
        return {v[len("truth_"):]: float(ds[v].values[-1]) for v in ds.data_vars if v.startswith("truth_")}


def _field_coverage(directory: Path, name: str, truth: np.ndarray) -> float | None:
    """Fraction of the entries of field parameter ``name`` whose truth lies inside the 90 % band of the final
    posterior members (the last checkpoint); ``None`` when the checkpoint holds no such ensemble."""
    from twin.campaign import layout
    from twin.core.errors import OutputError
    from twin.io.checkpoint import CheckpointReader

    cycles = layout.checkpoint_cycles(directory)
    if not cycles:
        return None
    try:
        with CheckpointReader(layout.checkpoint_file(directory, cycles[-1]), verify=False) as r:
            alive = r.read_array("alive").astype(bool)
            samples = np.asarray(r.read_field(name, "parameters"), dtype=float)[alive].reshape(int(alive.sum()), -1)
    except (OutputError, OSError, KeyError, ValueError):
        return None
    if samples.shape[0] < 2 or samples.shape[1] != truth.size:
        return None
    lo, hi = np.quantile(samples, [(1 - NOMINAL) / 2, (1 + NOMINAL) / 2], axis=0)
    return float(np.mean((truth >= lo) & (truth <= hi)))


def _add(cal: Calibration, run: RunData) -> None:
    truth = _truth_parameters(run.directory)
    rec = run.decision or {}
    # a decision's own calibration record scores a field where it matters (the tumour's k(x) over the tumour's
    # cells) and the same way for every method; the whole field's members are the fallback
    own = {n for n, c in (rec.get("calibration") or {}).items() if isinstance(c, dict) and "coverage_90" in c}
    counted: set[str] = set()
    for name, value in truth.items():
        t = np.asarray(value, dtype=float).ravel()
        if t.size > 1 and name not in own:
            frac = _field_coverage(run.directory, name, t)
            if frac is not None:
                cal.scores[f"{name}(x) coverage"] = cal.scores.get(f"{name}(x) coverage", 0.0) + frac
                counted.add(name)
    if run.parameters:
        # the final posterior's samples: Laplace samples where the last checkpoint has them, else its members
        last = {**run.parameters[max(run.parameters)], **run.posterior_parameters}
        for name, samples in last.items():
            t = np.asarray(truth.get(name, np.nan), dtype=float)
            s = np.asarray(samples, dtype=float)
            s = s[np.isfinite(s)]
            if t.size != 1 or not np.isfinite(t) or s.size < 2:
                continue
            lo, hi = np.quantile(s, [(1 - NOMINAL) / 2, (1 + NOMINAL) / 2])
            _count(cal, f"parameter {name}", lo <= float(t) <= hi)
            _samples(cal, f"parameter {name}", name, s, float(t))
            counted.add(name)
    qtruth = _free_run_truth(run.directory)
    members = _member_qois(run.directory)
    for name, q in (rec.get("qois") or {}).items():
        qs = {float(k): v for k, v in (q.get("quantiles") or {}).items()}
        if name in qtruth and len(qs) >= 2 and math.isfinite(qtruth[name]):
            _count(cal, f"QoI {name} at the horizon", qs[min(qs)] <= qtruth[name] <= qs[max(qs)])
            if members.get(name) is not None and members[name].size >= 2:
                _samples(cal, f"QoI {name} at the horizon", f"QoI {name}", members[name], qtruth[name])
        limits = {float(c): float(p) for c, p in (q.get("exceedance") or {}).items()}
        if limits and name in qtruth and math.isfinite(qtruth[name]):
            cal._forecasts.setdefault(name, []).append((run.name, qtruth[name], members.get(name), limits))
            cal._units.setdefault(name, str(q.get("units", "")))
    for name, c in (rec.get("calibration") or {}).items():
        if isinstance(c, dict) and "coverage_90" in c and name not in counted:
            cal.scores.setdefault(f"{name}(x) coverage", 0.0)
            cal.scores[f"{name}(x) coverage"] += float(c["coverage_90"])
        elif isinstance(c, dict) and c.get("truth") is not None and name not in counted:
            # a calibration record's own band (4D-Var + Laplace samples are not in the checkpoints' parameters)
            _count(cal, f"parameter {name}", c["q05"] <= c["truth"] <= c["q95"])
    d = run.diagnostics
    if d is not None:
        for key in ("coverage_90_a", "spread_a", "rmse_a", "crps_a"):
            if key in d and np.ndim(d[key].values) == 0 and np.isfinite(float(d[key].values)):
                cal.scores[key] = cal.scores.get(key, 0.0) + float(d[key].values)


def summarise(run_dir, runs: list[RunData], failed: set[str]) -> list[Calibration]:
    """One :class:`Calibration` per set-up with at least two finished replicates (see the module docstring)."""
    matrix = _matrix(Path(run_dir))
    groups: dict[str, list[RunData]] = {}
    labels: dict[str, str] = {}
    for r in runs:
        values = matrix.get(r.name)
        if not values or "campaign.seed" not in values or r.name in failed:
            continue
        rest = {k: v for k, v in values.items() if k != "campaign.seed"}
        key = json.dumps(rest, sort_keys=True)
        groups.setdefault(key, []).append(r)
        labels[key] = ", ".join(f"{k} = {v}" for k, v in sorted(rest.items())) or "all experiments"
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        cal = Calibration(labels[key], [r.name for r in members])
        for r in members:
            _add(cal, r)
        n = len(members)
        cal.scores = {k: v / n for k, v in cal.scores.items()}
        if "spread_a" in cal.scores and cal.scores.get("rmse_a", 0) > 0:
            cal.scores["spread/skill"] = cal.scores["spread_a"] / cal.scores["rmse_a"]
        out.append(cal)
    seeds = {r.name: matrix[r.name]["campaign.seed"] for r in runs if "campaign.seed" in matrix.get(r.name, {})}
    for name in sorted({n for cal in out for n in cal._forecasts}):
        for i, reference in shared_truths(out, name, seeds).items():
            reps = out[i]._forecasts[name]
            out[i].exceedance[name] = {"units": out[i]._units.get(name, ""), "replicates": [r[0] for r in reps],
                                       **exceedance_summary([r[1] for r in reps], [r[2] for r in reps],
                                                            [r[3] for r in reps], reference=reference)}
    compare(out, seeds)
    return out


def calibration_html(cals: list[Calibration], images: Path, embed) -> str:
    """The campaign's calibration section: a table per set-up and the rank histograms of its parameters
    (``embed(path)`` gives the HTML of an image)."""
    if not cals:
        return ""
    parts = ["<h2>Calibration over the replicates</h2>",
             f"<p>How often the {NOMINAL:.0%} (and 50 %) credible intervals contain the truth, over independent "
             "truths; a calibrated posterior gives 90 % (50 %) within the binomial standard error shown, and flat "
             "rank histograms.</p>"]
    explained = False  # what the Brier scores are: said at the first table of them
    for i, cal in enumerate(cals):
        k = len(cal.replicates)
        se = math.sqrt(NOMINAL * (1 - NOMINAL) / k)
        rows = "".join(f"<tr><td>{html.escape(q)}{' (50 % interval)' if level == 0.5 else ''}</td><td>{a}/{b}</td>"
                       f"<td>{100 * a / b:.0f} %</td><td>{100 * level:.0f} % ± "
                       f"{100 * math.sqrt(level * (1 - level) / b):.0f} %</td></tr>"
                       for q, level, (a, b) in sorted([(q, NOMINAL, c) for q, c in cal.coverage.items()]
                                                      + [(q, 0.5, c) for q, c in cal.coverage50.items()]))
        rows += "".join(f"<tr><td>{html.escape(name)} (mean over the replicates)</td><td></td>"
                        f"<td>{value:.3g}</td><td>{_ideal(name)}</td></tr>"
                        for name, value in sorted(cal.scores.items()) if name not in ("spread_a", "rmse_a"))
        parts.append(f"<h3>{html.escape(cal.label)}: {k} truths</h3><table><tr><th>quantity</th><th>inside</th>"
                     f"<th>coverage</th><th>nominal (± {100 * se:.0f} % at K = {k})</th></tr>{rows}</table>")
        image = _rank_histograms(cal, images / f"calibration_{i}.png")
        if image is not None:
            parts.append(embed(image))
        for name, e in sorted(cal.exceedance.items()):
            if e.get("pooled"):
                parts.append(exceedance_html(name, e, explain=not explained))
                explained = True
        image = reliability_diagrams(cal, images / f"reliability_{i}.png")
        if image is not None:
            parts.append(embed(image))
    return '<div class="calibration">' + "\n".join(parts) + "</div>"


def _ideal(name: str) -> str:
    return {"coverage_90_a": "0.9", "spread/skill": "1", "crps_a": "small"}.get(name, "0.9" if "coverage" in name
                                                                                   else "")


def _rank_histograms(cal: Calibration, path: Path) -> Path | None:
    if not cal.ranks:
        return None
    from twin.report.panel import plt, save_figure

    names = sorted(cal.ranks)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = np.asarray(cal.ranks[name])
        bins = max(2, min(10, int(round(math.sqrt(r.size)))))
        ax.hist(r, bins=bins, range=(0, 1), color="C0", alpha=0.8)
        ax.axhline(r.size / bins, color="k", ls="--", lw=1, label="flat")
        ax.set_title(f"rank of the true {name}" + (" at the horizon" if name.startswith("QoI ") else ""),
                     fontsize=9)
        ax.set_xlabel("fraction of posterior samples below the truth", fontsize=8)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
