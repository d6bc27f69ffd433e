"""The verdict block at the top of every experiment and of the campaign: the answer before the panels.

A :class:`Verdict` states the twin's question, the answer in one sentence, the headline number with its credible
interval and units, how sure the answer is (calibration evidence: coverage of the truth in twin experiments,
spread/skill of the ensemble) and what would change it. Each decision record (``decision.json``) brings its own
verdict through :func:`verdict_for`: the report modules of particular decisions register a function that recognises
their record; the generic posterior-prediction verdict (QoIs with exceedance probabilities) and the
analysis-quality verdict (no decision: RMSE and spread against the free run) come last.

The campaign verdict groups experiments that differ only in their ``assimilation`` section (``matrix.json`` of the
run directory, written when the experiments are expanded): they answer one question with different methods. Where
their answers differ, it says so, shows both, and names the one whose calibration evidence is better (coverage
closest to its nominal level, else spread/skill closest to 1), saying why.

Numbers are printed with as many digits as their spread supports (two significant digits of the interval width),
never with a fixed format.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from twin.report.data import RunData


@dataclass
class Verdict:
    """The answer of one experiment.

    Attributes
    ----------
    question, answer : str
        The question the twin answers, and the answer in one sentence.
    number : str
        The headline number with its credible interval and units.
    confidence : str
        How sure: calibration evidence (coverage, spread/skill), or why none is available.
    changes : str
        What would change the answer.
    decision : str
        A short label of the decision itself (compared across methods: equal labels agree).
    calibration_error : float or None
        Distance of the calibration evidence from ideal (the larger of ``|coverage - nominal|`` and
        ``|log spread/skill|`` where both are known), to choose between methods; ``None`` when unknown.
    probabilities : dict of str to (float, int)
        The exceedance probabilities of the answer (``"P(eta > 4 m)"``) with the number of posterior members each
        was counted from, to tell a difference between methods from sampling error.
    failed : bool
    damaged : str
        The files of the experiment that are there but cannot be read, with why and what the verdict leaves out
        (``""`` when none): shown first in the verdict block.
    unfinished : str
        How far an experiment that has not finished got (``"interrupted at 3/24 cycles"``; ``""`` when it finished):
        shown first, the verdict being one of what it wrote so far; such an experiment is left out of the
        comparison of methods.
    """

    question: str
    answer: str
    number: str = ""
    confidence: str = ""
    changes: str = ""
    decision: str = ""
    calibration_error: float | None = None
    probabilities: dict[str, tuple[float, int]] = field(default_factory=dict)
    failed: bool = False
    damaged: str = ""
    unfinished: str = ""


def kind_verdicts() -> list[Callable[[RunData], "Verdict | None"]]:
    """The verdict functions of the installed kinds (:meth:`twin.core.kinds.TwinKind.verdicts`): each returns a
    :class:`Verdict` for the decision records it recognises, else ``None``."""
    from twin.core.kinds import kinds

    return [fn for kind in kinds().values() for fn in kind.verdicts()]


# -- numbers ------------------------------------------------------------------------------------------------------


def _decimals(step: float) -> int:
    return max(0, -int(math.floor(math.log10(step)))) if step > 0 and math.isfinite(step) else 0


def _real(x) -> float | None:
    """``x`` as a float; ``None`` when it is none (decision.json keeps non-finite numbers as "nan", "inf")."""
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def format_number(value: float, width: float | None = None, units: str = "") -> str:
    """``value`` with the digits its uncertainty ``width`` supports (two significant digits of the width; three
    significant digits of the value when no width is known), in scientific notation beyond 1e5 or below 1e-3."""
    value, width = _real(value), _real(width)
    if value is None or not math.isfinite(value):
        return "n/a"
    scale = abs(width) if width and math.isfinite(width) and width > 0 else abs(value) * 0.01 or 1.0
    step = 10.0 ** (math.floor(math.log10(scale)) - 1)
    unit = f" {units}" if units and units != "1" else ""
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        exp = int(math.floor(math.log10(abs(value))))
        mant = value / 10.0 ** exp
        return f"{mant:.{_decimals(step / 10.0 ** exp)}f}×10^{exp}{unit}"
    return f"{round(value / step) * step:.{_decimals(step)}f}{unit}"


def format_interval(centre: float, lo: float, hi: float, units: str = "", level: float = 0.9) -> str:
    """``"centre units (90 %: lo to hi)"`` with digits from the interval width."""
    centre, lo, hi = _real(centre), _real(lo), _real(hi)
    width = abs(hi - lo) if all(x is not None and math.isfinite(x) for x in (lo, hi)) else None
    return (f"{format_number(centre, width, units)} ({level * 100:.0f} % interval "
            f"{format_number(lo, width)} to {format_number(hi, width, units)})")


def format_probability(p: float, standard_error: float | None = None) -> str:
    """A probability as a percentage with digits from its standard error (Monte Carlo) when given."""
    if standard_error is not None and standard_error > 0:
        pct, se = 100 * p, 100 * standard_error
        return f"{format_number(pct, 2 * se)} % (± {format_number(se, se)} %)"
    return f"{100 * p:.0f} %"


# -- generic verdicts ------------------------------------------------------------------------------------------------


def spread_skill(data: RunData) -> tuple[float, int | None] | None:
    """Mean ensemble spread over mean analysis RMSE against the truth after the burn-in (the campaign's
    ``spread_a`` / ``rmse_a``, or, for files without them, after the first fifth of the cycles) and the number of
    cycles used when known; ``None`` without a twin experiment's diagnostics."""
    d = data.diagnostics
    if d is None or "rmse" not in d or "spread" not in d:
        return None
    if "rmse_a" in d and "spread_a" in d and float(d["rmse_a"].values) > 0:
        # the campaign's own averages after schedule.burn_in (diagnostics.nc)
        return float(d["spread_a"].values) / float(d["rmse_a"].values), None
    rmse, spread = np.asarray(d["rmse"].values, float), np.asarray(d["spread"].values, float)
    start = max(1, rmse.size // 5) if rmse.size > 2 else 0
    r, s = rmse[start:], spread[start:]
    ok = np.isfinite(r) & np.isfinite(s)
    if not ok.any() or np.mean(r[ok]) <= 0:
        return None
    return float(np.mean(s[ok]) / np.mean(r[ok])), int(ok.sum())


def time_unit(data: RunData) -> str:
    """The model's time unit (``seconds``, ``days`` ...) from the CF ``time`` units of the experiment's NetCDF."""
    for ds in (data.posterior, data.forecast, data.diagnostics, data.qoi):
        if ds is not None and "time" in ds.variables:
            units = str(ds["time"].attrs.get("units", ""))
            if " since " in units:
                return units.split(" since ")[0].strip()
    return ""


def duration(value: float, unit: str) -> str:
    """A time span in the unit its readers use (:func:`twin.core.units.duration_text`)."""
    from twin.core.units import duration_text

    known = {"seconds": "s", "second": "s", "s": "s", "minutes": "min", "hours": "h", "days": "day"}
    if unit not in known:  # CF time units twin does not write (months, years: not fixed lengths) stay as they are
        return f"{value:g} {unit or 'model time units'}"
    return duration_text(value, known[unit])


#: coverage of the truth by the 90 % ensemble interval that counts as calibrated (sampling of the entries and cycles
#: moves it by a few percent around 90 %)
COVERAGE_OK = (0.80, 0.97)


def ensemble_confidence(data: RunData) -> tuple[str, float | None]:
    """How well the ensemble's spread matches its error, in words (coverage of the truth and spread/skill after the
    burn-in; innovation statistics without a truth), and its distance from ideal (``None`` when not measured): the
    "How sure" of a verdict, which a kind's own verdict adds to its evidence."""
    ss = spread_skill(data)
    d = data.diagnostics
    if ss is None and d is not None and "rmse" in d:
        rmse = np.asarray(d["rmse"].values, float)
        mean = float(np.nanmean(rmse))
        return (f"analysis RMSE against the truth {format_number(mean, 0.1 * mean)} on average; no ensemble "
                "spread per cycle, so how well the probabilities are calibrated is not measured here"), None
    if ss is None and d is not None and "chi2_per_dof" in d:
        chi2 = np.asarray(d["chi2_per_dof"].values, float)
        late = chi2[chi2.size // 5:] if chi2.size > 2 else chi2
        mean = float(np.nanmean(late)) if np.isfinite(late).any() else float("nan")
        if np.isfinite(mean) and mean > 0:
            word = ("consistent with the stated errors and the ensemble spread" if 0.5 <= mean <= 2.0 else
                    "larger than the stated errors and spread allow: the probabilities are over-confident"
                    if mean > 2.0 else "smaller than the stated errors and spread: the probabilities are too wide")
            return (f"no truth (measured observations): innovation chi-square per observation {mean:.2f} over "
                    f"{late.size} cycles, {word}"), abs(math.log(mean))
    if ss is None:
        return ("no truth to measure calibration against (a campaign of real observations): judge the fit by the "
                "innovation statistics"), None
    ratio, n = ss
    cycles = f" over {n} cycles" if n is not None else ""
    cov = float(d["coverage_90_a"].values) if d is not None and "coverage_90_a" in d else None
    if cov is None:
        word = ("well calibrated" if 0.8 <= ratio <= 1.25 else
                "over-confident (the spread is smaller than the error)" if ratio < 0.8 else
                "under-confident (the spread is larger than the error)")
        return f"ensemble spread/skill {ratio:.2f}{cycles} after the burn-in: {word}", abs(math.log(ratio))
    # both must be near ideal: a posterior can hold the truth 90 % of the time with too wide a spread, and have the
    # right spread on average with intervals that miss the truth too often
    narrow, wide = cov < COVERAGE_OK[0] or ratio < 0.8, cov > COVERAGE_OK[1] or ratio > 1.25
    word = ("well calibrated" if not narrow and not wide else
            "over-confident (the intervals hold the truth less often than they say)" if narrow and not wide else
            "under-confident (the intervals are wider than the error)" if wide and not narrow else
            "miscalibrated (coverage and spread/skill disagree)")
    return (f"truth inside the 90 % ensemble interval at {100 * cov:.0f} % of the state entries after the burn-in; "
            f"ensemble spread/skill {ratio:.2f}{cycles}: {word}"), max(abs(cov - 0.9), abs(math.log(ratio)))


def _prediction_verdict(data: RunData) -> Verdict | None:
    rec = data.decision
    if not rec or not rec.get("qois"):
        return None
    horizon = rec.get("horizon")
    members = int(rec["members"]) if isinstance(rec.get("members"), int) and rec["members"] > 0 else 0
    parts, numbers, decision, probabilities = [], [], [], {}
    for name, q in rec["qois"].items():
        qs = {float(k): v for k, v in q.get("quantiles", {}).items()}
        if not qs:
            continue
        lo, hi = qs[min(qs)], qs[max(qs)]
        level = max(qs) - min(qs)
        centre, which = (qs[0.5], "median") if 0.5 in qs else (q.get("mean"), "mean")
        numbers.append(f"{name}: {which} {format_interval(centre, lo, hi, q.get('units', ''), level)}")
        for limit, p in (q.get("exceedance") or {}).items():
            unit = f" {q['units']}" if q.get("units") not in (None, "", "1") else ""
            label = f"P({name} > {float(limit):g}{unit})"
            parts.append(f"{label} = {format_probability(float(p), _sampling_error(float(p), members))}")
            if members:
                probabilities[label] = (float(p), members)
            decision.append(f"{name}>{limit}:{'likely' if p >= 0.5 else 'unlikely'}")
    if not numbers:
        return None
    if members:  # what the intervals and probabilities are counted from: a handful of members gives rough ones
        numbers[-1] += f" (from {members} posterior members{'; too few for a 90 % interval' if members < 10 else ''})"
    when = (f"{duration(horizon, time_unit(data))} after the last analysis" if horizon is not None
            else "at the horizon")
    answer = (f"{'; '.join(parts)} {when}." if parts else f"The posterior prediction {when} is given below.")
    confidence, err = ensemble_confidence(data)
    return Verdict(question="What will the quantities of interest be, with what probability of exceeding their "
                            "limits?", answer=answer, number="; ".join(numbers), confidence=confidence,
                   changes="new observations before the horizon; a different limit", decision=";".join(decision),
                   calibration_error=err, probabilities=probabilities)


def _analysis_verdict(data: RunData) -> Verdict | None:
    d = data.diagnostics
    if d is None or "rmse" not in d:
        return None
    rmse = np.asarray(d["rmse"].values, float)
    if not np.isfinite(rmse).any():
        return None
    confidence, err = ensemble_confidence(data)
    return Verdict(question="How close is the twin's analysis to the true state?",
                   answer=f"Analysis RMSE {format_number(float(np.nanmean(rmse)), 0.1 * float(np.nanmean(rmse)))} "
                          f"averaged over {rmse.size} cycle(s), "
                          f"{format_number(float(rmse[-1]), 0.1 * float(rmse[-1]))} at the last.",
                   number=f"last-cycle RMSE {format_number(float(rmse[-1]), 0.1 * float(rmse[-1]))}",
                   confidence=confidence,
                   changes="more or better observations, a larger ensemble", calibration_error=err)


def verdict_for(data: RunData, unfinished: str = "") -> Verdict:
    """The verdict of one experiment: FAILED with its reason, the verdict of its decision record, or the analysis
    quality; a note when there is nothing to judge. ``unfinished``: how far an experiment of a campaign that has not
    finished got (``"interrupted at 3/24 cycles"``, :func:`twin.report.html.unfinished_experiments`): the verdict is
    then one of what it wrote so far, said first, or, with nothing written, that it has not finished."""
    from twin.campaign.layout import failure, to_run_again

    found = failure(data.directory)
    if found is not None and found[0] == "stopped":  # its policy: a rerun skips it until stopped.json is removed
        return Verdict(question="Did this experiment finish?", answer=f"STOPPED by its failure policy: {found[1]}",
                       failed=True, changes=f"see twin.log; {to_run_again(data.directory)}")
    if found is not None:
        return Verdict(question="Did this experiment finish?", answer=f"FAILED: {found[1]}", failed=True,
                       changes="see twin.log; rerun with `twin run` after fixing the cause (a failed experiment is "
                               "tried again, finished ones are kept)")
    damaged = damage_text(data)
    for fn in (*kind_verdicts(), _prediction_verdict, _analysis_verdict):
        v = fn(data)
        if v is not None:
            v.damaged, v.unfinished = damaged, unfinished
            return v
    if unfinished:
        return Verdict(question="Did this experiment finish?", answer=f"NOT FINISHED ({unfinished}): nothing to "
                       "judge yet", changes="run the campaign again: it resumes from the last checkpoint",
                       damaged=damaged, unfinished=unfinished)
    shown = ("the fields" if data.state_variables() else "each component's fields" if data.component_forecasts
             else "what it wrote (no field file this report draws)")
    return Verdict(question="What did this run produce?", answer="No decision and no diagnostics against a truth: "
                   f"the panels below show {shown}.", damaged=damaged)


def damage_text(data: RunData) -> str:
    """The damaged files of an experiment in one sentence (``""`` without any): what cannot be read and why, and
    that this verdict and the panels leave them out."""
    if not data.damaged:
        return ""
    names = []
    for path, why in sorted(data.damaged.items()):
        try:
            name = str(path.relative_to(data.directory))
        except ValueError:
            name = str(path)
        names.append(f"{name} ({why})")
    them = "it" if len(names) == 1 else "them"
    return (f"{'; '.join(names)} cannot be read: this verdict and the panels leave {them} out (a decision in it is "
            "not shown). Run the campaign again to write the damaged files again.")


# -- HTML --------------------------------------------------------------------------------------------------------


def verdict_html(v: Verdict, title: str = "Verdict") -> str:
    """The verdict block (a ``div.verdict``)."""
    rows = [("DAMAGED", v.damaged)] if v.damaged else []
    if v.unfinished and not v.answer.startswith("NOT FINISHED"):
        rows.append(("NOT FINISHED", f"{v.unfinished}: what follows is what it wrote so far; run the campaign again "
                                     "to finish it"))
    rows += [("Question", v.question), ("Answer", v.answer)]
    rows += [(k, t) for k, t in (("Number", v.number), ("How sure", v.confidence), ("What would change it",
                                                                                        v.changes)) if t]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(t)}</td></tr>" for k, t in rows)
    cls = "verdict failed" if v.failed or v.damaged or v.unfinished else "verdict"
    return f'<div class="{cls}"><h3>{html.escape(title)}</h3><table>{body}</table></div>'


def _groups(run_dir: Path, runs: list[RunData]) -> list[list[RunData]]:
    """Experiments that differ only in their ``assimilation`` matrix values, in order of appearance."""
    try:
        matrix = json.loads((run_dir / "matrix.json").read_text())
    except (OSError, ValueError):
        matrix = {}
    keyed: dict[str, list[RunData]] = {}
    for r in runs:
        values = matrix.get(r.name, {})
        key = json.dumps({k: v for k, v in values.items() if k.split(".")[0] != "assimilation"}, sort_keys=True)
        keyed.setdefault(key if values else r.name, []).append(r)
    return list(keyed.values())


def _group_label(run_dir: Path, group: list[RunData]) -> str:
    """What the experiments of a group share (their matrix values other than ``assimilation``)."""
    try:
        values = json.loads((run_dir / "matrix.json").read_text()).get(group[0].name, {})
    except (OSError, ValueError):
        return ""
    return ", ".join(f"{k} = {v}" for k, v in sorted(values.items()) if k.split(".")[0] != "assimilation")


def disjoint_parameters(runs: list[RunData], level: float = 0.9) -> list[str]:
    """For the scalar parameters that two experiments of a group both estimate: those whose central ``level``
    intervals (of their posterior samples, :attr:`RunData.posterior_parameters`, 5 or more each) do not overlap, as
    readable lines (``"D_white: A [0.106, 0.146], B [0.027, 0.073]"``). Methods that disagree that much cannot both be
    right, whatever their decisions."""
    lo_q, hi_q = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    out = []
    names = sorted(set.intersection(*(set(r.posterior_parameters) for r in runs))) if len(runs) >= 2 else []
    for name in names:
        bands = []
        for r in runs:
            v = np.asarray(r.posterior_parameters[name], dtype=float)
            if v.size >= 5:
                bands.append((r.name, float(np.quantile(v, lo_q)), float(np.quantile(v, hi_q))))
        for i, (a, alo, ahi) in enumerate(bands):
            for b, blo, bhi in bands[i + 1:]:
                if ahi < blo or bhi < alo:
                    out.append(f"{name}: {a} [{alo:.3g}, {ahi:.3g}], {b} [{blo:.3g}, {bhi:.3g}]")
    return out


def _sampling_error(p: float, n: int) -> float | None:
    """The standard error of a probability counted from ``n`` members, ``sqrt(q (1 - q) / n)`` with ``p`` shrunk to
    ``q = (n p + 1/2) / (n + 1)`` so that 0 and 1 keep an error; ``None`` without a member count."""
    if n <= 0:
        return None
    q = (n * p + 0.5) / (n + 1)
    return math.sqrt(q * (1 - q) / n)


def differing_probabilities(named: list[tuple[str, Verdict]], z: float = 2.0) -> list[str]:
    """The exceedance probabilities that two methods state further apart than ``z`` standard errors of their
    difference, as readable lines (``"P(eta > 4 m): A 60 ± 8 %, B 88 ± 11 %"``). A probability counted from ``n``
    members has the binomial standard error ``sqrt(p (1 - p) / n)``, with ``p`` shrunk to ``(n p + 1/2) / (n + 1)``
    so that 0 and 1 keep an error."""
    out = []
    labels = sorted(set.intersection(*(set(v.probabilities) for _, v in named))) if len(named) >= 2 else []
    for label in labels:
        rows = []
        for name, v in named:
            p, n = v.probabilities[label]
            rows.append((name, p, _sampling_error(p, n)))
        far = any(abs(a[1] - b[1]) > z * math.hypot(a[2], b[2]) for i, a in enumerate(rows) for b in rows[i + 1:])
        if far:
            out.append(f"{label}: " + ", ".join(f"{n} {100 * p:.0f} ± {100 * se:.0f} %" for n, p, se in rows))
    return out


def campaign_html(run_dir: Path, runs: list[RunData], verdicts: dict[str, Verdict], evidence: list[str] = ()) -> str:
    """The campaign verdict: one line per experiment, and where methods disagree, which to trust and why;
    ``evidence``: sentences from the calibration over replicates (which method's probabilities verified best)."""
    if len(runs) < 2:
        return ""
    items = []
    for group in _groups(run_dir, runs):
        vs = [(r.name, verdicts[r.name]) for r in group]
        lines = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(v.answer)}"
                        + (f" <i>({html.escape(v.confidence)})</i>" if v.confidence else "") + "</li>" for n, v in vs)
        # the methods compared: finished, with a decision each (experiments without one have nothing to agree on)
        ok = [(n, v) for n, v in vs if not v.failed and not v.unfinished and v.decision]
        note = ""
        if len(ok) >= 2:
            labels = {v.decision for _, v in ok}
            if len(labels) > 1:
                rated = [(v.calibration_error, n) for n, v in ok if v.calibration_error is not None]
                if rated:
                    best = min(rated)[1]
                    unrated = [n for n, v in ok if v.calibration_error is None]
                    note = (f"The methods disagree. Trust <b>{html.escape(best)}</b>: its calibration evidence is "
                            f"the closest to ideal ({html.escape(verdicts[best].confidence)})"
                            + (f"; {html.escape(', '.join(unrated))} has none" if unrated else "") + ".")
                else:
                    note = "The methods disagree and no calibration evidence is available to choose between them."
            else:
                rated = [(v.calibration_error, n) for n, v in ok if v.calibration_error is not None]
                note = "The methods agree on the decision."
                apart_p = differing_probabilities(ok)
                if apart_p:
                    note += (" Their probabilities differ by more than twice the sampling error of their members: "
                             + html.escape("; ".join(apart_p)) + ".")
                if len(rated) >= 2 or (apart_p and rated):
                    best = min(rated)[1]
                    unrated = [n for n, v in ok if v.calibration_error is None]
                    note += (f" For its numbers trust <b>{html.escape(best)}</b>: its calibration evidence is the "
                             f"closest to ideal ({html.escape(verdicts[best].confidence)})"
                             + (f"; {html.escape(', '.join(unrated))} has none" if unrated else "") + ".")
                elif apart_p:
                    note += " No calibration evidence is available to choose between them."
        apart = disjoint_parameters([r for r in group if not verdicts[r.name].failed
                                     and not verdicts[r.name].unfinished])
        if apart:
            note += (" " if note else "") + "Their posteriors do not overlap: " + html.escape("; ".join(apart)) + \
                    " (at most one of them holds the truth)."
        label = _group_label(run_dir, group)
        items.append((f"<h4>{html.escape(label)}</h4>" if label else "") + f"<ul>{lines}</ul>"
                     + (f"<p>{note}</p>" if note else ""))
    failed = [r.name for r in runs if verdicts[r.name].failed]
    head = (f"<p><b>{len(failed)} of {len(runs)} experiment(s) FAILED</b>: {html.escape(', '.join(failed))}</p>"
            if failed else "")
    unfinished = [f"{r.name} ({verdicts[r.name].unfinished})" for r in runs if verdicts[r.name].unfinished]
    head += (f"<p><b>{len(unfinished)} of {len(runs)} experiment(s) NOT FINISHED</b>: "
             f"{html.escape(', '.join(unfinished))}; they are not compared</p>" if unfinished else "")
    said = "".join(f"<p><b>{html.escape(line)}</b></p>" for line in evidence)
    return f'<div class="verdict campaign"><h2>Campaign verdict</h2>{head}{said}{"".join(items)}</div>'
