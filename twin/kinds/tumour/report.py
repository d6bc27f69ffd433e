"""Report panels of tumour calibration experiments (``patient.nc``, written by :func:`twin.campaign.decide.write_patient`).

* cellularity: per imaging visit, the observed cellularity (noisy image), the posterior mean and the truth (twin
  experiments), on the model grid (mm);
* proliferation: the true ``k(x)``, the posterior mean and standard deviation, and where the truth lies outside the
  90 % band; the posterior samples of each scalar parameter (e.g. ``D``) against its truth;

A real patient's visits (``imaging_visits``, :mod:`twin.kinds.tumour.visits`) have no truth: the panels then show the
observed and posterior cellularity, the posterior of ``k(x)`` (mean, sd) and of the scalars (no truth column), and
the verdict says there is no true patient to compare with and gives the evidence there is: how closely the posterior
fits the imaged voxels against their stated error, and the 90 % interval of each scalar parameter (two methods whose
intervals do not overlap cannot both be right). With a calendar start (``timeline.start`` a date) the visits and the
decision's day carry their dates;
* the verdict (:func:`treatment_verdict`): which plan, the burden it leaves at the horizon with its 90 % interval,
  and how well the calibration covered the true patient;
* burden: the posterior burden through the visit window (5-95 % band and median), the true burden at the visits, and
  the decision's forecast fans beyond the last visit (no treatment, chosen plan, standard regimen), with the true
  patient's outcome under both plans when known.

Experiments without ``patient.nc`` get none of these panels (they are optional).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from twin.report.data import RunData  # noqa: E402
from twin.report.panel import Panel, html_table, save_figure  # noqa: E402
from twin.report.timeaxis import time_axis  # noqa: E402
from twin.report.verdict import Verdict, format_interval, format_number  # noqa: E402

PATIENT_FILE = "patient.nc"


def _start(data: RunData):
    """The calendar instant of day 0 when the campaign has one (its files count time from it), else ``None``."""
    from twin.core.calendar import parse_start

    for ds in (data.diagnostics, data.posterior):
        if ds is not None and "time" in ds.variables:
            units = str(ds["time"].attrs.get("units", ""))
            if " since " in units and not units.split(" since ", 1)[1].strip().startswith("1970-01-01"):
                try:
                    return parse_start(units.split(" since ", 1)[1])
                except ValueError:
                    return None
    return None


def _day(data: RunData, day: float) -> str:
    """``day 10``, or ``day 10, 2026-03-11`` with a calendar start."""
    from datetime import timedelta

    start = _start(data)
    return f"day {day:g}" + ("" if start is None else f", {(start + timedelta(days=float(day))).date().isoformat()}")


def _patient(data: RunData):
    import xarray as xr

    path = Path(data.directory) / PATIENT_FILE
    if not path.is_file():
        return None
    with xr.open_dataset(path, decode_times=False) as ds:
        return ds.load()


def _extent(ds) -> list[float]:
    x, y = ds["x"].values, ds["y"].values
    hx = x[1] - x[0] if x.size > 1 else 1.0
    hy = y[1] - y[0] if y.size > 1 else 1.0
    return [x[0] - hx / 2, x[-1] + hx / 2, y[0] - hy / 2, y[-1] + hy / 2]


def cellularity_panel(data: RunData, out: Path) -> Panel:
    title = "Patient: observed vs posterior cellularity at the imaging visits"
    ds = _patient(data)
    if ds is None:
        return Panel(title, note="no patient.nc", optional=True)
    cols = [("observed_cellularity", "observed"), ("posterior_cellularity_mean", "posterior mean"),
            ("posterior_cellularity_sd", "posterior sd"), ("true_cellularity", "truth")]
    cols = [c for c in cols if c[0] in ds]
    visits = ds["visit"].values
    fig, axes = plt.subplots(visits.size, len(cols), figsize=(2.6 * len(cols), 2.4 * visits.size), squeeze=False)
    ext = _extent(ds)
    for i, day in enumerate(visits):
        for j, (var, label) in enumerate(cols):
            ax = axes[i, j]
            vmax = 0.5 if var.endswith("_sd") else 1.0
            im = ax.imshow(ds[var].values[i], origin="lower", extent=ext, vmin=0.0, vmax=vmax, cmap="viridis")
            ax.set_title(f"{_day(data, day)}: {label}", fontsize=8)
            ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=axes[i, -1], fraction=0.046)
    rmse = [float(np.sqrt(np.nanmean((ds["posterior_cellularity_mean"].values[i] - ds["true_cellularity"].values[i])
                                     ** 2))) for i in range(visits.size)] if "true_cellularity" in ds else []
    rows = [[f"{d:g}", r] for d, r in zip(visits, rmse)]
    return Panel(title, save_figure(fig, out / "oncology_cellularity.png"),
                 note="cellularity N/theta (1); lengths in mm",
                 table=html_table(["visit day", "RMSE posterior mean vs truth"], rows) if rows else "")


def proliferation_panel(data: RunData, out: Path) -> Panel:
    title = "Patient: proliferation rate k(x) and scalar parameters, posterior vs truth"
    ds = _patient(data)
    if ds is None or "k_mean" not in ds:
        return Panel(title, note="no k(x) posterior in patient.nc", optional=True)
    scalars = [v[:-len("_samples")] for v in ds.data_vars if v.endswith("_samples")]
    known = "k_true" in ds  # a twin experiment; a real patient's visits have no truth: posterior only
    if not known:
        title = "Patient: proliferation rate k(x) and scalar parameters, posterior (no truth)"
    fields = 4 if known else 2
    n = fields + len(scalars)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 2.9), squeeze=False)
    ext = _extent(ds)
    mean, sd = ds["k_mean"].values, ds["k_sd"].values
    truth = ds["k_true"].values if known else None
    lo, hi = (np.nanmin([truth.min(), mean.min()]), np.nanmax([truth.max(), mean.max()])) if known else \
        (np.nanmin(mean), np.nanmax(mean))
    maps = [(truth, "k truth [1/day]", (lo, hi))] if known else []
    maps += [(mean, "k posterior mean [1/day]", (lo, hi)), (sd, "k posterior sd [1/day]", (0, None))]
    for ax, (arr, label, lim) in zip(axes[0], maps):
        im = ax.imshow(arr, origin="lower", extent=ext, vmin=lim[0], vmax=lim[1], cmap="magma")
        ax.set_title(label, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if known:
        outside = ((truth < ds["k_q05"].values) | (truth > ds["k_q95"].values)).astype(float)
        ax = axes[0, 3]
        ax.imshow(outside, origin="lower", extent=ext, vmin=0, vmax=1, cmap="Reds")
        if "tumour_region" in ds:
            ax.contour(ds["x"].values, ds["y"].values, ds["tumour_region"].values, levels=[0.5], colors="b",
                       linewidths=0.8)
        ax.set_title("truth outside 90 % band (red);\ntumour region (blue)", fontsize=8)
    rows = []
    for ax, name in zip(axes[0, fields:], scalars):
        s = ds[f"{name}_samples"].values
        t = float(ds[f"{name}_samples"].attrs.get("truth", np.nan))
        ax.hist(s, bins=12, color="C0", alpha=0.7)
        if np.isfinite(t):
            ax.axvline(t, color="k", ls="--", label="truth")
            ax.legend(fontsize=7)
        ax.set_title(f"posterior of {name}", fontsize=8)
        rows.append([name, float(np.mean(s)), float(np.quantile(s, 0.05)), float(np.quantile(s, 0.95))]
                    + ([t] if known else []))
    cal = ((data.decision or {}).get("calibration") or {}).get("k", {})
    note = ""
    if cal and "coverage_90" in cal:
        note = (f"k: truth inside the 90 % band at {100 * cal['coverage_90']:.0f} % of the tumour region; RMS error "
                f"of log k there {cal['rmse_log_posterior']:.3f} (prior centre {cal['rmse_log_prior']:.3f})")
    return Panel(title, save_figure(fig, out / "oncology_k.png"), note=note,
                 table=html_table(["parameter", "posterior mean", "5 %", "95 %"] + (["truth"] if known else []),
                                  rows))


def burden_panel(data: RunData, out: Path) -> Panel:
    title = "Patient: tumour burden through the visits and forecast (5 / 50 / 95 %)"
    ds = _patient(data)
    if ds is None or "burden" not in ds:
        return Panel(title, note="no burden trajectories in patient.nc", optional=True)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    axis = time_axis(data)      # patient.nc and decision.json count model days; the axis says since when
    t = axis.from_model(ds["time"].values)
    b = ds["burden"].values
    q = np.nanquantile(b, (0.05, 0.5, 0.95), axis=0)
    ax.fill_between(t, q[0], q[2], color="C0", alpha=0.25, label="posterior 5-95 % (visit window)")
    ax.plot(t, q[1], color="C0")
    visits = axis.from_model(ds["visit"].values)
    for day in visits:
        ax.axvline(day, color="grey", lw=0.6, ls=":")
    if "burden_true" in ds:
        ax.plot(visits, ds["burden_true"].values, "ks", ms=5, label="truth at the visits")
    d = data.decision or {}
    colours = {"burden": "C2", "chosen": "C3", "standard": "C1"}
    names = {"burden": "no treatment", "chosen": "chosen plan", "standard": "standard regimen"}
    for key, f in (d.get("fans") or {}).items():
        if f.get("qoi") != "burden" or key not in colours:
            continue
        qq = np.asarray(f["quantiles"], dtype=float)
        tt = axis.from_model(np.asarray(f["times"], dtype=float))
        ax.fill_between(tt, qq[0], qq[2], color=colours[key], alpha=0.2)
        ax.plot(tt, qq[1], color=colours[key], label=f"forecast: {names[key]}")
    ax.set_xlabel(axis.label)
    ax.set_ylabel("tumour cells")
    ax.legend(fontsize=7, loc="upper left")
    rows = []
    truth = d.get("truth") or {}
    if truth:
        rows = [["true burden at the horizon, chosen plan", truth["burden_chosen"]],
                ["true burden at the horizon, standard regimen", truth["burden_standard"]],
                ["true ratio chosen / standard", truth["burden_ratio"]]]
    return Panel(title, save_figure(fig, out / "oncology_burden.png"), note="dotted lines: imaging visits",
                 table=html_table(["quantity", "value"], rows) if rows else "")


PANELS = (cellularity_panel, proliferation_panel, burden_panel)


def _plan(label: str) -> str:
    return label.removeprefix("standard: ")


def treatment_verdict(data: RunData) -> Verdict | None:
    """The radiotherapy decision of a tumour calibration experiment (``decision.json`` of kind ``oncology``)."""
    rec = data.decision
    if not rec or rec.get("kind") != "oncology":
        return None
    chosen, standard = _plan(rec["chosen"]["label"]), _plan(rec["standard"]["label"])
    comp = rec["comparison"]
    day = float(rec.get("time", 0.0)) + float(rec.get("horizon_days", rec.get("horizon", 0.0)))
    objective = rec.get("objective", {})
    risk = f"CVaR{100 * objective.get('level', 0.9):.0f}" if objective.get("measure") == "cvar" else "mean"
    if chosen == standard:
        others = sorted((c["objective"], _plan(c["label"])) for c in rec.get("candidates", [])
                        if _plan(c["label"]) != standard)
        closest = ""
        if others:
            rel = 100.0 * (others[0][0] / comp["standard"]["objective"] - 1.0)
            closest = f" (the closest alternative, {others[0][1]}, leaves {format_number(rel, 1.0)} % more)"
        answer = (f"Keep the standard {standard}: no admissible plan lowers the {risk} tumour burden at "
                  f"{_day(data, day)}{closest}.")
    else:
        gain = 100.0 * (1.0 - comp["cvar_burden_ratio"])
        answer = (f"Switch to {chosen}: its {risk} tumour burden at {_day(data, day)} is {format_number(gain, 1.0)} % "
                  f"lower than with the standard {standard} (probability that it does better for this patient: "
                  f"{100 * comp['probability_better']:.0f} %).")
    q = {float(k): v for k, v in comp["chosen"]["burden"]["quantiles"].items()}
    level = max(q) - min(q)
    number = (f"tumour burden at {_day(data, day)} with {chosen}: "
              f"{format_interval(q.get(0.5, comp['chosen']['burden']['mean']), q[min(q)], q[max(q)], 'cells', level)}")
    cal = rec.get("calibration") or {}
    confidence, err = _without_truth(data, cal), None
    if cal.get("k"):
        cov = cal["k"]["coverage_90"]
        parts = [f"true k(x) inside the 90 % band at {100 * cov:.0f} % of the {cal.get('tumour_cells', '')} "
                 "tumour cells"]
        err = abs(cov - 0.9)
        for name, c in cal.items():
            if isinstance(c, dict) and c.get("truth") is not None:
                inside = c["q05"] <= c["truth"] <= c["q95"]
                parts.append(f"true {name} {format_number(c['truth'], c['q95'] - c['q05'])} "
                             f"{'inside' if inside else 'OUTSIDE'} its 90 % band "
                             f"({format_number(c['q05'], c['q95'] - c['q05'])} to "
                             f"{format_number(c['q95'], c['q95'] - c['q05'])})")
                err += 0.0 if inside else 0.5
        confidence = "twin experiment: " + "; ".join(parts)
    return Verdict(question=f"Which radiotherapy plan leaves this patient the least tumour at {_day(data, day)}?",
                   answer=answer, number=number, confidence=confidence,
                   changes=("faster repopulation (a higher proliferation rate k) or a lower tumour alpha/beta would "
                            "favour shorter schedules; another imaging visit narrows k and D"),
                   decision=chosen, calibration_error=err)


def _without_truth(data: RunData, cal: dict) -> str:
    """How sure a calibration without a true patient is: the posterior's fit to the imaged voxels (O-A standard
    deviation against the stated error, ``diagnostics.nc``) and the 90 % interval of each scalar parameter."""
    from twin.kinds.tumour.config import PARAMETER_UNITS

    parts = []
    ds = data.diagnostics
    if ds is not None and {"oma_std", "assumed_r", "n_obs"} <= set(ds.data_vars):
        oma, r, n = (float(ds[v].values[-1]) for v in ("oma_std", "assumed_r", "n_obs"))
        parts.append(f"the posterior fits the {n:.0f} imaged voxels to an O-A sd of {oma:.3f} (their stated error "
                     f"{np.sqrt(r):.3g})")
    for name, c in cal.items():
        if isinstance(c, dict) and {"mean", "q05", "q95"} <= set(c):
            width = c["q95"] - c["q05"]
            parts.append(f"{name} {format_number(c['mean'], width)} {PARAMETER_UNITS.get(name, '')} (90 % interval "
                         f"{format_number(c['q05'], width)} to {format_number(c['q95'], width)})")
    return "; ".join(["no true patient to compare with"] + parts) + ("; judge the fit by observed vs posterior "
                                                                     "cellularity below")


def decision_panel(data: RunData, out: Path) -> Panel | None:
    """The report's decision panel for a treatment decision (``None`` for any other decision record)."""
    import html

    d = data.decision
    if not d or d.get("kind") != "oncology" or "burden_samples" not in d:
        return None
    s = d["burden_samples"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.boxplot([s["chosen"], s["standard"]])
    ax.set_xticks([1, 2], ["chosen plan", "standard regimen"])
    ax.set_ylabel("tumour burden at the horizon [cells]")
    comp = d.get("comparison", {})
    rows = [[k, v] for k, v in comp.items() if not isinstance(v, dict)]
    rows += [["chosen", d["chosen"]["label"]], ["standard", d["standard"]["label"]],
             ["chosen normal-tissue BED [Gy]", float(d["chosen"]["bed_normal"])],
             ["standard normal-tissue BED [Gy]", float(d["standard"]["bed_normal"])]]
    return Panel("Decision and its comparison", save_figure(fig, out / "decision.png"),
                 note=html.escape(str(d.get("summary", ""))), table=html_table(["quantity", "value"], rows))
