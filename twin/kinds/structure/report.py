"""Report panels of a structural twin (a ``decision.structure`` record in ``decision.json``): the damage field's
posterior mean and standard deviation against the truth (a twin of measured data has none: the posterior and the
prior spread alone) with the gauge layout, the guardrail flags of each gauge over
the cycles, the maintenance decision and the sensor-placement curve.

Inputs (all optional; the panels are left out of reports of other twins, and says what is missing in
a structure report): ``decision.json`` (``structure``: component, gauges, extent, ``maintenance``,
``sensor_placement``), ``observations.h5`` (true parameter values of the twin experiment) and the last
``checkpoint/cycle_NNNN.h5`` (posterior damage ensemble), ``flags.jsonl``. Symbols: ``d`` damage [1] on the
structure's nodes, ``sigma_vm`` von Mises stress [Pa].
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from twin.report.data import RunData  # noqa: E402
from twin.report.panel import Panel, html_table, save_figure  # noqa: E402
from twin.report.verdict import Verdict, ensemble_confidence, format_interval, format_probability  # noqa: E402


def _structure(data: RunData) -> dict | None:
    d = data.decision
    return d.get("structure") if isinstance(d, dict) and isinstance(d.get("structure"), dict) else None


def damage_fields(directory: Path, component: str) -> dict[str, np.ndarray | None] | None:
    """Truth (``None`` in a campaign on measured data: no truth), prior and posterior mean and sd of the damage field
    (natural order, flat) from an experiment directory, or ``None`` when the files are missing."""
    from twin.campaign import layout
    from twin.io.checkpoint import CheckpointReader

    cycles = layout.checkpoint_cycles(directory)
    obs = directory / "observations.h5"
    if not cycles or not obs.is_file():
        return None
    names = [f"{component}.damage", "damage"]
    with CheckpointReader(obs) as r:
        truth_params = r.meta.get("truth_parameters", {})
    with CheckpointReader(layout.checkpoint_file(directory, cycles[0])) as r:
        stored = r.parameter_fields
    name = next((n for n in names if n in truth_params or n in stored), None)
    if name is None:
        return None
    out: dict[str, np.ndarray | None] = {"truth": np.asarray(truth_params[name], dtype=float).ravel()
                                         if name in truth_params else None}
    for label, k in (("prior", cycles[0]), ("posterior", cycles[-1])):
        with CheckpointReader(layout.checkpoint_file(directory, k)) as r:
            alive = r.read_array("alive").astype(bool)
            D = r.read_field(name, "parameters")[alive].reshape(int(alive.sum()), -1)
        out[f"{label}_mean"], out[f"{label}_sd"] = D.mean(axis=0), D.std(axis=0, ddof=1)
    return out


def node_shape(n: int, extent, nodes=None) -> tuple[int, int]:
    """``(ny, nx)`` of a structure's node grid of ``n`` nodes: from ``nodes`` (``(nx, ny)``, the decision record's
    ``nodes``) when given, else guessed from the aspect of ``extent`` ((x0, x1), (y0, y1)) [m], which is right only
    for square elements (records written before ``nodes`` was)."""
    if nodes is not None:
        nx, ny = (int(v) for v in nodes)
        if nx * ny == n:
            return ny, nx
    (x0, x1), (y0, y1) = extent
    nx = int(round(np.sqrt(n * (x1 - x0) / (y1 - y0)))) or 1
    while n % nx:
        nx += 1
    return n // nx, nx


def gauge_nodes(shape: tuple[int, int], extent, gauges: np.ndarray) -> np.ndarray:
    """Mask (flat, natural order) of the nodes a gauge sees: the four corners of the element whose strain it reads
    (chosen as :func:`twin.kinds.structure.gauges.strain_gauge_matrix` does: a point on an element edge belongs to
    the element above and to the right of it); the element's modulus is set by their mean damage."""
    (x0, x1), (y0, y1) = extent
    ny, nx = shape
    hx, hy = (x1 - x0) / max(nx - 1, 1), (y1 - y0) / max(ny - 1, 1)
    seen = np.zeros(shape, dtype=bool)
    for gx, gy in np.asarray(gauges, dtype=float).reshape(-1, 2):
        i = int(np.clip(np.floor((gx - x0) / hx), 0, nx - 2))
        j = int(np.clip(np.floor((gy - y0) / hy), 0, ny - 2))
        seen[j:j + 2, i:i + 2] = True
    return seen.ravel()


def damage_summary(fields: dict, seen: np.ndarray) -> dict[str, float]:
    """What the damage posterior says where the gauges look (symbols: module docstring), from :func:`damage_fields` and
    the mask ``seen`` of the nodes the assimilated gauges see (:func:`gauge_nodes`).

    Always: ``sd_ratio_seen``, the mean posterior sd over the mean prior sd of ``d`` at the seen nodes (below 1: the
    gauges sharpened the damage there). With a truth (a twin experiment): the damaged patch, the nodes where the
    true ``d`` reaches half its largest value, its mean true, posterior and prior ``d`` (``patch_truth``,
    ``patch_posterior``, ``patch_prior``), their ratio ``patch_ratio`` (posterior / truth), and
    ``sd_ratio_patch_seen``, the sd ratio at the patch nodes the gauges see (NaN where they see none of it)."""
    out = {"sd_ratio_seen": float(fields["posterior_sd"][seen].mean() / max(fields["prior_sd"][seen].mean(), 1e-300))
           if seen.any() else float("nan")}
    truth = fields.get("truth")
    if truth is None or not np.max(truth) > 0:
        return out
    patch = truth >= 0.5 * np.max(truth)
    out.update(patch_nodes=int(patch.sum()), patch_truth=float(truth[patch].mean()),
               patch_posterior=float(fields["posterior_mean"][patch].mean()),
               patch_prior=float(fields["prior_mean"][patch].mean()))
    out["patch_ratio"] = out["patch_posterior"] / out["patch_truth"]
    both = patch & seen
    out["sd_ratio_patch_seen"] = (float(fields["posterior_sd"][both].mean() / max(fields["prior_sd"][both].mean(),
                                                                                   1e-300))
                                  if both.any() else float("nan"))
    return out


def _assimilated_gauges(data: RunData, st: dict) -> np.ndarray:
    """The gauge points of the decision record less those the guardrails excluded."""
    gauges = np.asarray(st["gauges"]["points"], dtype=float).reshape(-1, 2)
    keep = np.ones(len(gauges), dtype=bool)
    for i in _excluded(data):
        if 0 <= i < len(gauges):
            keep[i] = False
    return gauges[keep]


def _excluded(data: RunData) -> set[int]:
    return {int(f["sensor"]) for f in data.flags if f.get("kind") == "sensor_drift" and f.get("action") == "excluded"}


def damage_panel(data: RunData, out: Path) -> Panel:
    st = _structure(data)
    if st is None:
        return Panel("structure", optional=True)
    fields = damage_fields(data.directory, st.get("component", ""))
    truth = None if fields is None else fields["truth"]
    title = ("Damage field: truth, posterior mean and standard deviation, gauges" if truth is not None else
             "Damage field: posterior mean and standard deviation, gauges (measured data: no truth)")
    if fields is None:
        return Panel(title, note="needs observations.h5 and the checkpoints with the damage ensemble")
    (x0, x1), (y0, y1) = st["extent"]
    shape = node_shape(fields["posterior_mean"].size, st["extent"], st.get("nodes"))
    gauges = np.asarray(st["gauges"]["points"], dtype=float).reshape(-1, 2)
    excluded = _excluded(data)
    summary = damage_summary(fields, gauge_nodes(shape, st["extent"], _assimilated_gauges(data, st)))
    panels = [("truth", truth, "viridis", (0, 1))] if truth is not None else []
    panels += [("posterior mean", fields["posterior_mean"], "viridis", (0, 1)),
               ("posterior sd", fields["posterior_sd"], "magma", None), ("prior sd", fields["prior_sd"], "magma", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.25 * len(panels), 5.2), sharey=True)
    for ax, (label, values, cmap, lim) in zip(axes, panels):
        kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        im = ax.imshow(values.reshape(shape), origin="lower", extent=(x0, x1, y0, y1), cmap=cmap, aspect="auto", **kw)
        for i, (gx, gy) in enumerate(gauges):
            ax.plot(gx, gy, "x" if i in excluded else "o", color="r" if i in excluded else "w", ms=6,
                    mec="r" if i in excluded else "k", mew=2 if i in excluded else 1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("x [m]")
        fig.colorbar(im, ax=ax, fraction=0.08)
    axes[0].set_ylabel("y [m]")
    if truth is not None:
        err = {k: float(np.sqrt(np.mean((fields[f"{k}_mean"] - truth) ** 2))) for k in ("prior", "posterior")}
        cover = float(np.mean(np.abs(fields["posterior_mean"] - truth) <= 2 * fields["posterior_sd"]))
        rows = [["RMS error of d, prior mean", err["prior"]], ["RMS error of d, posterior mean", err["posterior"]],
                ["truth within posterior mean +- 2 sd", cover]]
        if "patch_truth" in summary:
            rows += [[f"damaged patch ({summary['patch_nodes']} nodes, true d >= half its peak): mean d, truth",
                      summary["patch_truth"]],
                     ["damaged patch: posterior mean d (prior mean)",
                      f"{summary['patch_posterior']:.3g} ({summary['patch_prior']:.3g})"],
                     ["damaged patch: posterior / true mean d", summary["patch_ratio"]],
                     ["posterior sd / prior sd of d, patch nodes the assimilated gauges see",
                      summary["sd_ratio_patch_seen"]]]
        rows.append(["posterior sd / prior sd of d, nodes the assimilated gauges see", summary["sd_ratio_seen"]])
    else:
        rows = [["largest posterior mean of d", float(fields["posterior_mean"].max())],
                ["nodes whose posterior sd is below the prior's",
                 float(np.mean(fields["posterior_sd"] < fields["prior_sd"]))],
                ["mean posterior sd / mean prior sd",
                 float(fields["posterior_sd"].mean() / max(fields["prior_sd"].mean(), 1e-300))],
                ["posterior sd / prior sd of d, nodes the assimilated gauges see", summary["sd_ratio_seen"]]]
    return Panel(title, save_figure(fig, out / "structure_damage.png"),
                 note="gauges: white dots; excluded by the guardrails: red crosses", table=html_table(["", ""], rows))


def gauge_flags_panel(data: RunData, out: Path) -> Panel:
    st = _structure(data)
    if st is None:
        return Panel("structure", optional=True)
    title = "Guardrail flags of the gauges over the cycles"
    ds = data.diagnostics
    if ds is None or "cusum_max" not in ds:
        return Panel(title, note="needs diagnostics.nc with guardrail statistics (decision.guardrails)")
    cycles = np.asarray(ds["cycle"].values if "cycle" in ds else np.arange(ds.sizes["time"]), dtype=float)
    n_gauges = len(st["gauges"]["points"])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 4.6), sharex=True)
    a1.plot(cycles, ds["cusum_max"].values, "o-", label="largest per-gauge CUSUM")
    for f in data.flags:
        if f.get("kind") == "sensor_drift":
            a1.axvline(f["cycle"], color="r", ls=":")
            a1.annotate(f"gauge {f['sensor']} {f['action']}", (f["cycle"], a1.get_ylim()[1] * 0.9), fontsize=7,
                        color="r", rotation=90, va="top")
    a1.set_ylabel("CUSUM [sd]")
    a1.legend(fontsize=8)
    if "n_obs_active" in ds:
        a2.step(cycles, ds["n_obs_active"].values, where="post", label="gauges assimilated")
    a2.set_ylim(0, n_gauges + 1)
    a2.set_xlabel("cycle")
    a2.set_ylabel("gauges")
    a2.legend(fontsize=8)
    rows = [[int(f["cycle"]), f.get("kind", ""), int(f.get("sensor", -1)), f.get("action", ""), float(f["value"])]
            for f in data.flags]
    return Panel(title, save_figure(fig, out / "structure_flags.png"),
                 table=html_table(["cycle", "check", "gauge", "action", "statistic"], rows) if rows else "")


def maintenance_panel(data: RunData, out: Path) -> Panel:
    st = _structure(data)
    if st is None:
        return Panel("structure", optional=True)
    title = "Maintenance decision: peak stress within the horizon"
    m = st.get("maintenance")
    if not m:
        return Panel(title, note="no maintenance record")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(np.asarray(m["peak_stress_samples"], float) / 1e6, bins=15, color="C4")
    ax.axvline(float(m["limit_Pa"]) / 1e6, color="r", label="limit")
    ax.set_xlabel("peak von Mises stress within the horizon [MPa]")
    ax.set_ylabel("posterior members")
    ax.legend(fontsize=8)
    return Panel(title, save_figure(fig, out / "structure_decision.png"), note=html.escape(m["summary"]))


def placement_panel(data: RunData, out: Path) -> Panel:
    st = _structure(data)
    if st is None:
        return Panel("structure", optional=True)
    title = "Sensor placement: greedy vs random gauges"
    p = st.get("sensor_placement")
    if not p:
        return Panel(title, note="no placement study (decision.sensors absent)")
    k = np.asarray(p["counts"])
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.fill_between(k, np.asarray(p["random_sd_q10"]) / 1e6, np.asarray(p["random_sd_q90"]) / 1e6, color="C0",
                    alpha=0.25, label=f"random layouts 10-90 % ({p['n_random']} per count)")
    ax.plot(k, np.asarray(p["random_sd_median"]) / 1e6, "C0--", label="random median")
    ax.plot(k, np.asarray(p["greedy_sd"]) / 1e6, "C3o-", label="greedy")
    if "deployed_sd" in p:
        ax.plot([p["n_deployed"]], [p["deployed_sd"] / 1e6], "ks", label="deployed layout")
    ax.set_xlabel("number of gauges")
    ax.set_ylabel("posterior sd of peak stress [MPa]")
    ax.legend(fontsize=7)
    cand = np.asarray(p["candidates"])
    rows = [[i + 1, int(j), f"({cand[j][0]:.3g}, {cand[j][1]:.3g})", float(p["greedy_sd"][i + 1])]
            for i, j in enumerate(p["greedy_indices"])]
    return Panel(title, save_figure(fig, out / "structure_placement.png"),
                 note=f"prior sd {p['prior_sd'] / 1e6:.3g} MPa; from {p['members']} prior members",
                 table=html_table(["order", "candidate", "position [m]", "sd after [Pa]"], rows))


#: the structure panels, in report order (optional panels: left out of reports of other twins)
PANELS = (damage_panel, gauge_flags_panel, maintenance_panel, placement_panel)


def patch_sentence(summary: dict) -> str:
    """The verdict's words on the damaged patch of a twin experiment (:func:`damage_summary`): its posterior mean
    against the truth and, where assimilated gauges see it, its sd against the prior's (a run whose guardrails
    excluded every gauge that sees the patch printed "its sd nan x the prior's": found by a probe)."""
    seen_sd = summary["sd_ratio_patch_seen"]
    return (f"damaged patch: posterior mean d {summary['patch_posterior']:.2f} against a true "
            f"{summary['patch_truth']:.2f}, "
            + (f"its sd {seen_sd:.2f} x the prior's where the gauges see it" if np.isfinite(seen_sd) else
               "seen by none of the assimilated gauges (the guardrails excluded those near it, or none is), so its "
               "sd owes nothing to them"))


def inspection_verdict(data: RunData) -> Verdict | None:
    """The inspection decision of a structural twin: the exceedance probability of the stress limit against the
    threshold, the peak stress in MPa with its 90 % interval, and the damage field's coverage of the truth."""
    st = _structure(data)
    if st is None or "maintenance" not in st:
        return None
    m = st["maintenance"]
    mpa = 1e-6
    limit = m["limit_Pa"] * mpa
    horizon = float(data.decision.get("horizon", m.get("horizon", 0.0)))
    p, se = float(m["exceedance_probability"]), float(m.get("standard_error") or 0.0)
    inspect = bool(m["recommend_inspection"])
    answer = (f"{'Inspect the mast' if inspect else 'No inspection needed'}: the probability that its peak von Mises "
              f"stress exceeds the {limit:g} MPa limit within the next {horizon:g} s is {format_probability(p, se)}, "
              f"{'at or above' if inspect else 'below'} the {100 * m['threshold']:g} % threshold.")
    q = {float(k): v * mpa for k, v in m["peak_stress"]["quantiles"].items()}
    centre = q.get(0.5, m["peak_stress"]["mean"] * mpa)
    number = f"peak von Mises stress: {format_interval(centre, q[min(q)], q[max(q)], 'MPa', max(q) - min(q))}"
    confidence, err = "no truth to compare the damage field with", None
    fields = damage_fields(data.directory, st.get("component", ""))
    if fields is not None and fields["truth"] is not None:
        truth = fields["truth"]
        # a true d of exactly 0 (sound) or 1 lies outside the support of a posterior of logit d: not a coverage test
        inside = (truth > 0) & (truth < 1)
        z = np.abs(truth - fields["posterior_mean"]) / np.maximum(fields["posterior_sd"], 1e-300)
        coverage = float(np.mean(z[inside] <= 1.645)) if inside.any() else float("nan")
        sharper = float(np.mean(fields["posterior_sd"] < fields["prior_sd"]))
        shape = node_shape(fields["posterior_mean"].size, st["extent"], st.get("nodes"))
        summary = damage_summary(fields, gauge_nodes(shape, st["extent"], _assimilated_gauges(data, st)))
        confidence = "twin experiment: "
        if "patch_truth" in summary:
            confidence += patch_sentence(summary) + "; "
        confidence += (f"true damage inside the posterior 90 % band (Gaussian) at {100 * coverage:.0f} % of the "
                       f"{int(inside.sum())} nodes where it lies inside (0, 1)"
                       f"{'' if inside.all() else ' (a true d of 0 is outside the support of a logit-d posterior)'}; "
                       f"posterior sd below prior sd at {100 * sharper:.0f} % of the nodes")
        err = abs(coverage - 0.9) if inside.any() else None
    # the state's calibration too: the stress forecast is made from the members' states, not from the damage alone
    state, state_err = ensemble_confidence(data)
    if state_err is not None:
        confidence += f"; the structure's state: {state}"
        err = state_err if err is None else max(err, state_err)
    changes = (f"a threshold above {format_probability(p, se)}, or more gauges: the placement study below shows how "
               "much each would narrow the stress forecast")
    return Verdict(question=f"Should the mast be inspected before the next {horizon:g} s of loading?", answer=answer,
                   number=number, confidence=confidence, changes=changes,
                   decision="inspect" if inspect else "no inspection", calibration_error=err)


def decision_panel(data: RunData, out: Path) -> Panel | None:
    """The report's decision panel for a maintenance decision record (``None`` for any other record)."""
    import html

    d = data.decision
    if not d or d.get("kind") != "structure" or "peak_stress_samples" not in d:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(np.asarray(d["peak_stress_samples"], float), bins=15, color="C4")
    ax.axvline(float(d["limit_Pa"]), color="r", label="limit")
    ax.set_xlabel("peak von Mises stress within the horizon [Pa]")
    ax.legend(fontsize=8)
    return Panel("Decision and its comparison", save_figure(fig, out / "decision.png"),
                 note=html.escape(str(d.get("summary", ""))))
