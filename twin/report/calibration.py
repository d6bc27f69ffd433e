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
* tumour calibrations (``decision.json`` ``calibration``): the mean coverage of the field ``k(x)`` and the fraction of
  truths of each scalar parameter inside its 90 % band;
* ensemble scores after the burn-in, averaged over the replicates: coverage of the state (``coverage_90_a``),
  spread/skill (``spread_a / rmse_a``) and CRPS (``crps_a``).

Nominal coverage is 90 %; with K replicates a coverage count is binomial, so its standard error
``sqrt(0.9 * 0.1 / K)`` is printed next to it (10 % at K = 9, 6.7 % at K = 20).

Exceedance probabilities (the decision's ``P(q > c)``, ``decision.exceedance_limits``) are verified as probability
forecasts of the binary event ``o = [q_true > c]`` (truth at the horizon from ``free_run.nc``), for every decision QoI
with a threshold, by

* the Brier score ``BS = mean_k (p_k - o_k)^2`` (Brier 1950; 0 perfect, 1/4 for always saying 1/2);
* the climatological Brier score ``BS_clim = obar (1 - obar)``, that of always forecasting the base rate ``obar`` of
  the events over the same replicates (the best constant forecast in hindsight, so a stiff reference);
* the Brier skill score ``BSS = 1 - BS / BS_clim`` (> 0: better than climatology; undefined when no replicate, or
  every one, has the event: ``BS_clim = 0``), with a 5-95 % interval from resampling the replicates (bootstrap,
  1000 resamples, fixed seed), and the standard error of ``BS`` over the replicates;
* a reliability diagram: the forecasts binned in probability (5 bins of width 0.2), per bin the number of forecasts,
  their mean ``pbar`` and the observed frequency of the event, which for a reliable forecast lies within the binomial
  error ``sqrt(pbar (1 - pbar) / n)`` of ``pbar`` (Murphy & Winkler 1977; Broecker & Smith 2007).

One threshold gives few events over K = 20 truths (a warning level is crossed in a few of them, or in nearly all),
too few to fill a diagram or to make ``BS_clim`` more than noise. So the scores are also computed at the quantiles 10,
25, 50, 75 and 90 % of the QoI's truths over the replicates: the truths are independent draws from the prior
(``experiments.replicates``), so these are quantiles of the QoI's prior predictive distribution (its climatology),
with base rates 0.9 ... 0.1 by construction. The forecast probability at those thresholds is the fraction of the
members' forecasts above (``prediction.nc``), as the decision computes it at its own threshold. The scores are given
per threshold, and pooled over the decision thresholds and the quantiles (``BS`` the mean over all pairs,
``BS_clim`` the mean of the per-threshold ``obar (1 - obar)``); the diagram pools every pair. Pairs of one
replicate at different thresholds are not independent (one truth, one ensemble), so the binomial error of a bin is a
guide, not a test, and the bootstrap resamples whole replicates. The thresholds being quantiles of the same truths
makes ``BS_clim`` in-sample as well: the reference is harder to beat, not easier.

Set-ups replicated over the same seeds (the methods of one campaign) are compared (``compared``): where their truths
are the same, at the same thresholds (the quantiles are then taken over the truths of all of them), paired, as the
mean over the shared replicates of the difference of their squared errors with its standard error; where the
set-ups draw their truths differently (same seeds, other truths), as the difference of their Brier scores with the
two standard errors combined, pooled over thresholds of the same kinds. A difference within two standard errors is
sampling error.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twin.report.data import RunData

NOMINAL = 0.9
#: quantile levels of the QoI's truths over the replicates used as extra thresholds (see the module docstring)
THRESHOLD_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
#: probability bins of the reliability diagram
RELIABILITY_BINS = 5


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
    counted: set[str] = set()
    for name, value in truth.items():
        t = np.asarray(value, dtype=float).ravel()
        if t.size > 1:
            frac = _field_coverage(run.directory, name, t)
            if frac is not None:
                cal.scores[f"{name}(x) coverage"] = cal.scores.get(f"{name}(x) coverage", 0.0) + frac
                counted.add(name)
    if run.parameters:
        last = run.parameters[max(run.parameters)]
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
    rec = run.decision or {}
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


# -- exceedance probabilities: Brier score and reliability ------------------------------------------------------------
def brier_scores(forecasts, outcomes, resamples: int = 1000) -> dict:
    """Brier score, climatology and skill of probability ``forecasts`` of binary ``outcomes``.

    Parameters
    ----------
    forecasts, outcomes : array_like, shape (K,) or (K, T)
        ``P(event)`` and ``1``/``0`` (event or not) for K replicates (rows, independent) at T thresholds (columns).

    Returns
    -------
    dict
        ``brier`` (mean of ``(p - o)^2`` over all pairs), ``brier_se`` (its standard error over the replicates),
        ``climatology`` (mean over the thresholds of ``obar (1 - obar)``, ``obar`` the base rate of each),
        ``base_rate`` (mean of ``o``), ``skill`` (``1 - brier / climatology``; ``None`` when the climatology is 0),
        ``skill_interval`` (5-95 % of the skill over replicates resampled with replacement, ``None`` when fewer than
        half of the resamples have a defined skill), ``events`` and ``pairs``.
    """
    p = np.asarray(forecasts, dtype=float)
    o = np.asarray(outcomes, dtype=float)
    if p.ndim == 1:
        p, o = p[:, None], o[:, None]
    if p.shape != o.shape or p.shape[0] == 0:
        raise ValueError(f"forecasts {p.shape} and outcomes {o.shape} must have the same non-empty shape")
    k = p.shape[0]
    err = (p - o) ** 2
    brier = float(err.mean())
    base = o.mean(axis=0)
    clim = float(np.mean(base * (1.0 - base)))
    skill = 1.0 - brier / clim if clim > 0 else None
    interval = None
    if k >= 2 and resamples:
        idx = np.random.default_rng(0).integers(0, k, size=(resamples, k))
        bs = err[idx].mean(axis=(1, 2))
        rb = o[idx].mean(axis=1)
        cb = np.mean(rb * (1.0 - rb), axis=1)
        ok = cb > 0
        if ok.sum() >= resamples / 2:
            lo, hi = np.quantile(1.0 - bs[ok] / cb[ok], [0.05, 0.95])
            interval = [float(lo), float(hi)]
    return {"brier": brier, "brier_se": float(err.mean(axis=1).std(ddof=1) / math.sqrt(k)) if k >= 2 else None,
            "climatology": clim, "base_rate": float(o.mean()), "skill": skill, "skill_interval": interval,
            "events": int(o.sum()), "pairs": int(o.size)}


def reliability(forecasts, outcomes, bins: int = RELIABILITY_BINS) -> list[dict]:
    """The reliability diagram of probability ``forecasts`` of binary ``outcomes`` (any shape, pooled).

    The forecasts are binned into ``bins`` equal intervals of [0, 1] (the last closed). Per bin: ``lower``, ``upper``,
    ``count``, ``forecast`` (the mean forecast ``pbar``), ``observed`` (the frequency of the event) and ``se``, the
    binomial standard error ``sqrt(pbar (1 - pbar) / count)`` of the observed frequency of a reliable forecast
    (``None`` entries for an empty bin).
    """
    p = np.asarray(forecasts, dtype=float).ravel()
    o = np.asarray(outcomes, dtype=float).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        pbar = float(p[sel].mean()) if n else None
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n, "forecast": pbar,
                    "observed": float(o[sel].mean()) if n else None,
                    "se": math.sqrt(pbar * (1.0 - pbar) / n) if n else None})
    return out


def exceedance_summary(truths, members, decided, levels=THRESHOLD_LEVELS, bins: int = RELIABILITY_BINS,
                       reference=None) -> dict:
    """Verification of one QoI's exceedance probabilities over K replicates (see the module docstring).

    Parameters
    ----------
    truths : array_like, shape (K,)
        The true QoI at the horizon in each replicate.
    members : list of ndarray or None
        Each replicate's members' forecasts of the QoI at the horizon (``None`` when unknown: then only the
        decision's own thresholds are scored).
    decided : list of dict
        Each replicate's ``{threshold: P(q > threshold)}`` of the decision record.
    levels : sequence of float
        Quantile levels of the truths used as further thresholds.
    reference : array_like, optional
        The truths those quantiles are taken of (default ``truths``; :func:`summarise` passes the truths of every
        set-up that shares them, so that the methods of a campaign are scored at the same thresholds).

    Returns
    -------
    dict
        ``truths``, ``limits`` (the decision thresholds), ``thresholds``: one entry per threshold (``threshold``,
        ``kind``: ``"decision"`` or ``"<level> quantile"``, the :func:`brier_scores`, its own ``reliability``
        diagram, and the ``forecasts`` and ``outcomes`` per replicate), and ``pooled``: the scores over every
        threshold with the ``reliability`` diagram of all pairs.
    """
    truths = np.asarray(truths, dtype=float)
    reference = truths if reference is None else np.asarray(reference, dtype=float)
    limits = sorted(set.intersection(*(set(d) for d in decided))) if decided else []
    columns = [(c, "decision", [d[c] for d in decided]) for c in limits]
    if reference.size >= 2 and all(m is not None and np.size(m) > 0 for m in members):
        for level, c in zip(levels, np.quantile(reference, levels)):
            columns.append((float(c), f"{level:.0%} quantile", [float(np.mean(m > c)) for m in members]))
    if not columns:
        return {"truths": truths.tolist(), "limits": [], "thresholds": [], "pooled": None}
    probs = np.column_stack([np.asarray(col[2], dtype=float) for col in columns])
    events = (truths[:, None] > np.array([col[0] for col in columns])[None, :]).astype(int)
    rows = [{"threshold": c, "kind": kind, **brier_scores(probs[:, j], events[:, j]),
             "reliability": reliability(probs[:, j], events[:, j], bins), "forecasts": probs[:, j].tolist(),
             "outcomes": events[:, j].tolist()} for j, (c, kind, _) in enumerate(columns)]
    return {"truths": truths.tolist(), "limits": limits, "thresholds": rows,
            "pooled": {**brier_scores(probs, events), "reliability": reliability(probs, events, bins)}}


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _shared_truths(cals: list[Calibration], name: str, seeds: dict[str, int]) -> dict[int, list[float]]:
    """For each set-up (by index) with forecasts of QoI ``name``: the truths its quantile thresholds are taken of,
    its own and those of every set-up whose truths are the same where their seeds meet (one value per seed)."""
    families: list[dict] = []
    out: dict[int, dict] = {}
    for i, cal in enumerate(cals):
        reps = cal._forecasts.get(name) or []
        if len(reps) < 2:
            continue
        mine = {seeds.get(r[0], r[0]): r[1] for r in reps}
        for family in families:
            shared = mine.keys() & family.keys()
            if shared and all(_same(mine[k], family[k]) for k in shared):
                family.update(mine)
                out[i] = family
                break
        else:
            families.append(dict(mine))
            out[i] = families[-1]
    return {i: list(family.values()) for i, family in out.items()}


def _compare(cals: list[Calibration], seeds: dict[str, int]) -> None:
    """For each pair of set-ups scoring the same QoI over the same seeds: the difference of their Brier scores at the
    decision thresholds and pooled, in each one's ``exceedance[qoi]["compared"]``, with its standard error. Paired
    (the mean over the shared replicates of the difference of the squared errors) when the truths are the same and
    so are the thresholds; otherwise (the set-ups draw their truths differently) the difference of the two means with
    ``sqrt(se_a^2 + se_b^2)``, pooled only over the same kinds of threshold. Within 2 standard errors: sampling
    error."""
    def per_replicate(e):
        err = np.array([(np.asarray(r["forecasts"]) - np.asarray(r["outcomes"])) ** 2 for r in e["thresholds"]]).T
        return {seeds.get(n): row for n, row in zip(e["replicates"], err)}

    for a in cals:
        for name, ea in a.exceedance.items():
            for b in cals:
                eb = b.exceedance.get(name) or {}
                if b is a or not ea["thresholds"] or not eb.get("thresholds"):
                    continue
                ra, rb = per_replicate(ea), per_replicate(eb)
                common = sorted(k for k in ra if k is not None and k in rb)
                if len(common) < 2:
                    continue
                ta = dict(zip(ea["replicates"], ea["truths"]))
                tb = dict(zip(eb["replicates"], eb["truths"]))
                by_seed = {seeds.get(n): t for n, t in tb.items()}
                paired = all(_same(t, by_seed[seeds.get(n)]) for n, t in ta.items() if seeds.get(n) in common)
                entry = {"truths": len(common), "paired": paired}
                kinds_a = [(r["kind"], r["threshold"]) for r in ea["thresholds"]]
                kinds_b = [(r["kind"], r["threshold"]) for r in eb["thresholds"]]
                decision = [j for j, (kind, _) in enumerate(kinds_a) if kind == "decision"]
                sets = {"decision": decision, "pooled": list(range(len(kinds_a)))}
                for what, cols in sets.items():
                    same_kind = len(kinds_a) == len(kinds_b) and all(kinds_a[j][0] == kinds_b[j][0] for j in cols)
                    same_value = same_kind and all(_same(kinds_a[j][1], kinds_b[j][1]) for j in cols)
                    if not cols or not same_kind or (what == "decision" and not same_value):
                        continue
                    if paired and same_value:
                        d = np.array([ra[k][cols].mean() - rb[k][cols].mean() for k in common])
                        entry[what] = {"difference": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(d.size))}
                    else:
                        ma = np.array([row[cols].mean() for row in ra.values()])
                        mb = np.array([row[cols].mean() for row in rb.values()])
                        entry[what] = {"difference": float(ma.mean() - mb.mean()),
                                       "se": float(math.hypot(ma.std(ddof=1) / math.sqrt(ma.size),
                                                              mb.std(ddof=1) / math.sqrt(mb.size)))}
                ea.setdefault("compared", {})[b.label] = entry


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
        for i, reference in _shared_truths(out, name, seeds).items():
            reps = out[i]._forecasts[name]
            out[i].exceedance[name] = {"units": out[i]._units.get(name, ""), "replicates": [r[0] for r in reps],
                                       **exceedance_summary([r[1] for r in reps], [r[2] for r in reps],
                                                            [r[3] for r in reps], reference=reference)}
    _compare(out, seeds)
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
                parts.append(_exceedance_html(name, e, explain=not explained))
                explained = True
        image = _reliability_diagrams(cal, images / f"reliability_{i}.png")
        if image is not None:
            parts.append(embed(image))
    return '<div class="calibration">' + "\n".join(parts) + "</div>"


def _fmt(value, digits: str = ".3f") -> str:
    return "–" if value is None else format(value, digits)


def _exceedance_html(name: str, e: dict, explain: bool = True) -> str:
    """The Brier scores of one QoI's exceedance probabilities per threshold and pooled, the comparison with the
    other set-ups, and the reliability diagram's numbers (``explain``: with the paragraph that says what they are,
    given once per report)."""
    unit = f" {e['units']}" if e.get("units") not in (None, "", "1") else ""
    k = len(e["replicates"])

    def row(label, r):
        skill = _fmt(r["skill"], "+.2f")
        if r["skill_interval"]:
            skill += f" ({r['skill_interval'][0]:+.2f} to {r['skill_interval'][1]:+.2f})"
        return (f"<tr><td>{label}</td><td>{r['events']}/{r['pairs']}</td><td>{_fmt(r['brier'])} ± "
                f"{_fmt(r['brier_se'])}</td><td>{_fmt(r['climatology'])}</td><td>{skill}</td></tr>")

    rows = "".join(row(f"{r['threshold']:.3g}{unit} ("
                       + ("the decision's" if r["kind"] == "decision" else f"{r['kind']} of the truths") + ")", r)
                   for r in e["thresholds"])
    rows += row(f"<b>{len(e['thresholds'])} thresholds pooled</b>", e["pooled"])
    text = [f"<h4>P({html.escape(name)} &gt; threshold): Brier score over {k} truths</h4>"]
    if explain:
        text.append("<p>Brier score of the forecast probability against the event (truth above the threshold) at the "
                    "horizon, that of climatology (always forecasting the base rate over these truths) and the skill "
                    "1 - Brier / climatology (&gt; 0: better than climatology; 5-95 % over resampled truths). The "
                    "quantile thresholds (of the truths, draws of the prior) give the reliability diagram more events "
                    "than the decision's threshold alone; a reliable forecast's observed frequency lies within the "
                    "binomial error of its mean forecast in each bin.</p>")
    text.append("<table><tr><th>threshold</th><th>events</th><th>Brier ± s.e.</th><th>climatology</th>"
                f"<th>skill (5-95 %)</th></tr>{rows}</table>")
    for other, c in sorted((e.get("compared") or {}).items()):
        said = []
        for what, d in (("the decision threshold", c.get("decision")), ("pooled", c.get("pooled"))):
            if d:
                verdict = "within" if abs(d["difference"]) <= 2 * d["se"] else "beyond"
                said.append(f"{what} {d['difference']:+.3f} ± {d['se']:.3f} ({verdict} 2 s.e.)")
        if said:
            how = (f"on the same {c['truths']} truths (paired)" if c.get("paired") else
                   f"over {c['truths']} shared seeds whose truths differ (the set-ups draw their truths differently: "
                   "not paired, standard errors combined)")
            text.append(f"<p>Brier score minus that of <i>{html.escape(other)}</i> {how}: {'; '.join(said)}.</p>")
    bins = "".join(f"<tr><td>{b['lower']:.1f}-{b['upper']:.1f}</td><td>{b['count']}</td>"
                   f"<td>{_fmt(b['forecast'], '.2f')}</td><td>{_fmt(b['observed'], '.2f')}</td>"
                   f"<td>{'–' if b['se'] is None else '± ' + format(2 * b['se'], '.2f')}</td></tr>"
                   for b in e["pooled"]["reliability"])
    text.append("<table><tr><th>forecast probability</th><th>forecasts</th><th>mean forecast</th>"
                f"<th>observed frequency</th><th>reliable within (2 s.e.)</th></tr>{bins}</table>")
    return "\n".join(text)


def _reliability_diagrams(cal: Calibration, path: Path) -> Path | None:
    """One reliability diagram per QoI with a threshold: observed frequency against forecast probability (pooled
    thresholds, with the 2-s.e. binomial band of a reliable forecast and the count of each bin), and the decision
    threshold's own (forecast, outcome) pairs."""
    names = sorted(n for n, e in cal.exceedance.items() if e.get("pooled"))
    if not names:
        return None
    from twin.report.panel import plt, save_figure

    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 5.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        e = cal.exceedance[name]
        bins = [b for b in e["pooled"]["reliability"] if b["count"]]
        f = np.array([b["forecast"] for b in bins])
        ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="reliable")
        ax.errorbar(f, f, yerr=2 * np.array([b["se"] for b in bins]), fmt="none", ecolor="0.6", elinewidth=5,
                    capsize=4, alpha=0.5, label="reliable ± 2 s.e. (binomial)")
        ax.plot(f, [b["observed"] for b in bins], "o-", color="C0", label=f"{len(e['thresholds'])} thresholds")
        for b in bins:
            ax.annotate(str(b["count"]), (b["forecast"], b["observed"]), textcoords="offset points", xytext=(6, -10),
                        fontsize=7, color="C0")
        unit = f" {e['units']}" if e.get("units") not in (None, "", "1") else ""
        for j, r in enumerate(t for t in e["thresholds"] if t["kind"] == "decision"):
            o = np.asarray(r["outcomes"], dtype=float)
            jitter = np.linspace(-0.025, 0.025, o.size) if o.size > 1 else np.zeros(1)
            ax.plot(r["forecasts"], o + np.where(o > 0, -1, 1) * (0.02 + np.abs(jitter)), "x", color=f"C{3 + j}",
                    ms=5, label=f"> {r['threshold']:g}{unit} (decision): forecast, outcome")
        skill = e["pooled"]["skill"]
        ax.set_title(f"{cal.label}: P({name} > threshold), {len(e['replicates'])} truths\n"
                     f"Brier {e['pooled']['brier']:.3f}, climatology {e['pooled']['climatology']:.3f}, "
                     f"skill {_fmt(skill, '+.2f')}", fontsize=9)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("forecast probability", fontsize=8)
        ax.set_ylabel("observed frequency", fontsize=8)
        # below the axes: inside, it would hide the decision's events (outcome 1) drawn along the top
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return save_figure(fig, path)


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
