"""Exceedance probabilities verified over replicates (:mod:`twin.report.calibration` gathers them).

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
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from twin.report.calibration import Calibration

#: quantile levels of the QoI's truths over the replicates used as extra thresholds (see the module docstring)
THRESHOLD_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
#: probability bins of the reliability diagram
RELIABILITY_BINS = 5


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


def shared_truths(cals: list[Calibration], name: str, seeds: dict[str, int]) -> dict[int, list[float]]:
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


def compare(cals: list[Calibration], seeds: dict[str, int]) -> None:
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



def which_to_trust(cals: list[Calibration]) -> list[str]:
    """For each QoI whose exceedance probabilities two or more set-ups forecast over replicates: which verified best
    and by how much, as plain sentences for the campaign verdict. The pooled Brier score decides (its thresholds give
    more events than the decision's alone); the difference to each other set-up is said with its standard error
    (:func:`compare`), within 2 of which the set-ups cannot be told apart; each set-up's coverage of the QoI's truth
    by its 90 % interval is said beside its skill (a sharp forecast can verify well and still be over-confident)."""
    out = []
    for name in sorted({n for c in cals for n in c.exceedance}):
        rated = [(c.exceedance[name], c) for c in cals
                 if c.exceedance.get(name, {}).get("pooled", {}).get("brier") is not None]
        if len(rated) < 2:
            continue
        best_e, best = min(rated, key=lambda r: r[0]["pooled"]["brier"])
        decision = next((r for r in best_e["thresholds"] if r["kind"] == "decision"), None)
        unit = f" {best_e['units']}" if best_e.get("units") not in (None, "", "1") else ""
        limit = f" > {decision['threshold']:g}{unit}" if decision else ""

        def covered(c: Calibration) -> str:
            inside, total = c.coverage.get(f"QoI {name} at the horizon", (None, None))
            return f", its 90 % interval holding the truth in {inside} of {total}" if total else ""

        parts = []
        for e, c in rated:
            if c is best:
                continue
            d = (e.get("compared") or {}).get(best.label, {}).get("pooled")
            gap = (f", Brier {d['difference']:+.3f} ± {d['se']:.3f} ("
                   + ("within 2 s.e.: not told apart" if abs(d["difference"]) <= 2 * d["se"] else "beyond 2 s.e.")
                   + ")") if d else ""
            parts.append(f"[{c.label}]: skill {_fmt(e['pooled']['skill'], '+.2f')}{covered(c)}{gap}")
        at = (f", {_fmt(decision['skill'], '+.2f')} at the decision's threshold" if decision else "")
        out.append(f"Over {len(best_e['replicates'])} truths, P({name}{limit}) from [{best.label}] verifies best: "
                   f"pooled Brier skill {_fmt(best_e['pooled']['skill'], '+.2f')}{at} (against climatology)"
                   f"{covered(best)}; " + "; ".join(parts) + ".")
    return out


def _fmt(value, digits: str = ".3f") -> str:
    return "–" if value is None else format(value, digits)


def exceedance_html(name: str, e: dict, explain: bool = True) -> str:
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


def reliability_diagrams(cal: Calibration, path: Path) -> Path | None:
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
