"""The panels of the report, drawn with matplotlib (Agg backend, no display needed).

Each panel function takes a :class:`~twin.report.data.RunData` and the image directory and returns a :class:`Panel`:
a PNG file, or ``None`` with the reason the panel was skipped (its data are absent), plus an optional HTML table.

* fields: truth, analysis mean (with spread for 1-D states) and forecast mean at the last time, one row per grid
  (the first variable of the model's grid, or of each component of a coupled model);
* RMSE and spread over cycles (``diagnostics.nc``);
* rank histogram of the truth among the posterior members (every analysis, all entries; a filter's prior left out)
  of the first variable of each grid (a coupled model's components each on their own coordinates);
* QoI fan charts: 5/50/95 % of the domain mean of each state variable and of each parameter across members, over
  time (with the truth); the QoI series of a forecast run (``qoi.nc``); the decision's forecast fans;
* the decision and its comparison (``decision.json``);
* the forecast fields over the decision's horizon (``horizon.nc``): ensemble mean at each lead time and spread at the
  horizon, one row per grid (a coupled model's components each on their own coordinates), one colour scale per row;
  a spread (or a fan) that is rounding alone (:data:`ROUND_OFF`) is said to be none rather than drawn;
* guardrail flags (``flags.jsonl`` and the ``flag_*`` diagnostics);
* what changed since the last update: parameters and QoIs, mean and spread, between the last two cycles;
* after the decision, the panels of the installed kinds (:meth:`twin.core.kinds.TwinKind.report_panels`), each
  left out when its data are absent.
"""

from __future__ import annotations

import html
import textwrap
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from twin.report.data import RunData  # noqa: E402
from twin.report.panel import Panel, html_table, save_figure  # noqa: E402

LEVELS = (0.05, 0.5, 0.95)
#: members whose values differ by at most this fraction of a field's largest magnitude agree to the rounding of the
#: model's arithmetic (double precision through many steps: 1e-12 to 1e-9): a part of a coupled state that the
#: analysis does not perturb, say. Their "spread" is drawn as "no spread", not as an image of rounding noise on an
#: axis scaled to 1e-10.
ROUND_OFF = 1e-8


def round_off(spread, scale: float | None) -> bool:
    """Whether ``spread`` (an ensemble's standard deviation or quantile band, any shape) is rounding alone next to
    values of magnitude ``scale`` (:data:`ROUND_OFF`); ``False`` without a positive scale."""
    if scale is None or not np.isfinite(scale) or scale <= 0:
        return False
    width = np.asarray(spread, dtype=float)
    return bool(np.all(~np.isfinite(width) | (np.abs(width) <= ROUND_OFF * scale)))


def grid_scales(ds, variables: list[str]) -> dict[str, float]:
    """The :func:`round_off` scale of each of ``variables`` of ``ds``: the largest magnitude of any variable on its
    grid (the same dimensions), as the rounding of a component's arithmetic is that of its largest values (a
    shallow-water north wind of 1e-3 m/s next to an east wind of 19 m/s and a depth of 100 m rounds at 1e-9)."""
    grid = {v: tuple(d for d in ds[v].dims if d not in ("member", "time")) for v in variables}
    largest: dict[tuple, float] = {}
    for v in variables:
        values = np.abs(np.asarray(ds[v].values, dtype=float))
        top = float(np.nanmax(values)) if values.size and np.isfinite(values).any() else 0.0
        largest[grid[v]] = max(largest.get(grid[v], 0.0), top)
    return {v: largest[grid[v]] for v in variables}


def _no_spread(ax, spread, units: str) -> None:
    """Say in ``ax`` that the members agree to rounding, with the largest difference."""
    largest = float(np.nanmax(np.abs(np.asarray(spread, dtype=float)))) if np.size(spread) else 0.0
    ax.text(0.5, 0.5, f"no spread:\nthe members agree\nto rounding\n(largest {largest:.1e}"
            + (f" {units}" if units and units != "1" else "") + ")", ha="center", va="center", fontsize=8,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _units(ds, var: str) -> str:
    return str(ds[var].attrs.get("units", "")) if ds is not None and var in ds else ""


def _axis_units(ds, var: str) -> str:
    """The axis label's units of diagnostic ``var``: ``[m]``, or for a statistic over state variables of different
    units (no ``units``, :func:`twin.io.netcdf.of_state`) what it mixes (``h [m], u [m/s]: mixed units``)."""
    from twin.io.netcdf import MIXED_UNITS

    units = _units(ds, var)
    if units:
        return f"[{units}]"
    long_name = str(ds[var].attrs.get("long_name", "")) if ds is not None and var in ds else ""
    head, _, tail = MIXED_UNITS.partition("{mix}")
    _, found, mix = long_name.partition(head)  # "h [m], u [m/s]: mixed units)"
    return mix.removesuffix(")") if found and long_name.endswith(tail) else ""


def _set_ylabel(ax, text: str) -> None:
    """A y label that fits its axes: a long one (a coupled state's seven variables and their units) wrapped onto
    lines of at most 36 characters in a smaller font, which ran off the figure in one line."""
    if len(text) <= 36:
        ax.set_ylabel(text)
    else:
        ax.set_ylabel(textwrap.fill(text, 36), fontsize=7)


def _spatial_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the spatial axes (everything after member and time), ignoring missing members."""
    return np.nanmean(values.reshape(values.shape[0], values.shape[1], -1), axis=2)


def _box(ds, dims: list[str]) -> tuple[list[float] | None, str, str]:
    """``imshow`` extent and axis labels of a 2-D field on coordinates ``dims`` (``[y, x]``), in km for metres
    beyond 20 km; the grid index when the coordinates are absent."""
    if len(dims) != 2 or not all(d in ds.coords for d in dims):
        return None, "grid index", "grid index"
    edges, labels = [], []
    for d in reversed(dims):  # x first
        c = np.asarray(ds[d].values, dtype=float)
        h = c[1] - c[0] if c.size > 1 else 1.0
        units = str(ds[d].attrs.get("units", ""))
        scale = 1.0
        if units == "m" and c[-1] - c[0] > 20e3:
            scale, units = 1e-3, "km"
        edges += [(c[0] - h / 2) * scale, (c[-1] + h / 2) * scale]
        labels.append(f"{d} [{units}]" if units else d)
    return edges, labels[0], labels[1]


def _frames(data: RunData, var: str) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """What the fields panel draws of ``var`` at the last time: ``(label, field, spread or None)`` for the truth, the
    analysis mean (with its spread) and the forecast mean (and its first time in a forecast run)."""
    from twin.report.verdict import duration, time_unit

    unit = time_unit(data)
    frames: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    if data.truth_of(var) is not None:
        frames.append(("truth", np.asarray(data.truth_of(var)[-1]), None))
    if data.posterior is not None:
        a = data.posterior[var].values[:, -1]
        frames.append(("analysis mean", np.nanmean(a, axis=0), np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1
                       else None))
    if data.forecast is not None and var in data.forecast:
        f = data.forecast[var].values
        times = data.forecast["time"].values
        if data.posterior is None and f.shape[1] > 1:
            frames.append((f"forecast at {duration(float(times[0]), unit)}", np.nanmean(f[:, 0], axis=0), None))
        frames.append((f"forecast mean at {duration(float(times[-1]), unit)}", np.nanmean(f[:, -1], axis=0), None))
    return frames


def field_rows(data: RunData) -> list[tuple[str, list[str], list]]:
    """The rows of the fields panel: ``(variable, spatial dimensions, frames)`` (:func:`_frames`) for the first
    variable of each grid that has coordinates (a coupled model's components each on their own), in the state's
    order."""
    source = data.posterior if data.posterior is not None else data.forecast
    if source is None:
        return []
    rows = []
    for v in (g[0] for g in _groups(source, data.state_variables())):
        dims = [d for d in source[v].dims if d not in ("member", "time")]
        if not data.concatenated(v) and all(d in source.coords for d in dims):
            rows.append((v, dims, _frames(data, v)))
    return rows


def _aspect(extent: list[float] | None) -> str:
    """``imshow``'s aspect for a field of ``extent``: true proportions, unless the domain is more than 4 times as
    long as it is wide (a mast, a channel), which would be drawn as a sliver: then the axes' own shape."""
    if extent is None:
        return "equal"
    w, h = abs(extent[1] - extent[0]), abs(extent[3] - extent[2])
    return "auto" if w > 4 * h or h > 4 * w else "equal"


def fields_panel(data: RunData, out: Path) -> Panel:
    """The fields at the last time, one row per grid: the first variable of the model's grid, or of each component
    of a coupled model on its own coordinates (as the rank histogram and the horizon panel)."""
    title = "Fields at the last time"
    variables = data.state_variables()
    if not variables and data.component_forecasts:  # a coupled forecast run: a file per component
        from twin.report.coupling import component_fields_panel

        return component_fields_panel(data, out, title)
    if not variables:
        return Panel(title, note="no posterior.nc or forecast.nc with fields in this run")
    source = data.posterior if data.posterior is not None else data.forecast
    rows = field_rows(data)
    if not rows:
        # a coupled model's state of older runs: components on different grids, concatenated in one variable
        return Panel(title, note=f"'{variables[0]}' concatenates the components of a coupled model on different "
                                 "grids: it is not drawn as one field (see the component panels)")
    lines = all(len(dims) == 1 for _, dims, _ in rows)
    ncols = 1 if lines else max(len(frames) for _, dims, frames in rows if len(dims) > 1)
    fig, axes = plt.subplots(len(rows), ncols, squeeze=False,
                             figsize=(8, 3.2 * len(rows)) if lines else (3.6 * ncols + 0.8, 3.3 * len(rows)))
    if not lines:
        fig.subplots_adjust(wspace=0.25, hspace=0.5)
    for row, (var, dims, frames) in enumerate(rows):
        units = _units(source, var)
        if len(dims) == 1:
            ax = axes[row, 0]
            coord = source[dims[0]]
            x = np.asarray(coord.values, dtype=float)
            for label, v, sd in frames:
                ax.plot(x, v, label=label, lw=1.5 if label == "truth" else 1.2)
                if sd is not None:
                    ax.fill_between(x, v - sd, v + sd, alpha=0.25, label="analysis +- spread")
            cu = str(coord.attrs.get("units", ""))
            ax.set_xlabel(f"{dims[0]} [{cu}]" if cu else dims[0])
            ax.set_ylabel(f"{var} [{units}]")
            ax.set_title(f"{var}: " + ", ".join(label for label, _, _ in frames), fontsize=9)
            ax.legend(fontsize=8)
            for extra in axes[row, 1:]:
                extra.set_visible(False)
            continue
        lo = min(float(np.nanmin(v)) for _, v, _ in frames)
        hi = max(float(np.nanmax(v)) for _, v, _ in frames)
        extent, xlabel, ylabel = _box(source, dims[-2:])
        for k, (ax, (label, v, _)) in enumerate(zip(axes[row], frames)):
            img = v if v.ndim == 2 else v[v.shape[0] // 2]  # 3-D: the middle z slice
            im = ax.imshow(img, origin="lower", vmin=lo, vmax=hi, cmap="viridis", extent=extent,
                           aspect=_aspect(extent))
            ax.set_title(f"{var}: {label}" if len(rows) > 1 else label, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            if k == 0:  # the panels share their axes: one y label, none running into the panel on its left
                ax.set_ylabel(ylabel, fontsize=8)
            else:
                ax.tick_params(labelleft=False)
        for extra in axes[row, len(frames):]:
            extra.set_visible(False)
        fig.colorbar(im, ax=list(axes[row, :len(frames)]), shrink=0.8, label=f"{var} [{units}]")
    path = out / "fields.png"
    return Panel(title, save_figure(fig, path, layout=bool(lines)))


def rmse_panel(data: RunData, out: Path) -> Panel:
    title = "RMSE and spread over cycles"
    ds = data.diagnostics
    if ds is None:
        return Panel(title, note="no diagnostics.nc (a forecast run has no assimilation cycles)")
    keys = [k for k in ("rmse_forecast", "rmse", "spread_forecast", "spread") if k in ds]
    if not keys:
        return Panel(title, note="diagnostics.nc has no RMSE or spread")
    cycle = ds["cycle"].values if "cycle" in ds else np.arange(ds.sizes["time"])
    rows = [[int(c)] + [float(ds[k].values[i]) for k in keys] for i, c in enumerate(cycle)]
    if cycle.size < 2:
        # one window (a calibration): a plot of one point says nothing a table does not
        return Panel(title, note="one cycle only: the numbers are in the table",
                     table=html_table(["cycle"] + keys, rows))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    styles = {"rmse_forecast": ("C0", "--"), "rmse": ("C0", "-"), "spread_forecast": ("C1", "--"),
              "spread": ("C1", "-")}
    for k in keys:
        c, ls = styles[k]
        ax.plot(cycle, ds[k].values, color=c, ls=ls, marker="o", ms=3, label=k.replace("_", " "))
    ax.set_xlabel("cycle")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # cycles are whole (3 windows ticked at 0.25, 0.5 ...)
    _set_ylabel(ax, _axis_units(ds, keys[0]))
    ax.legend(fontsize=8)
    return Panel(title, save_figure(fig, out / "rmse_spread.png"), table=html_table(["cycle"] + keys, rows))


def observation_fit_panel(data: RunData, out: Path) -> Panel:
    """Observation-space diagnostics of a campaign without a truth (measured observations): O-B and O-A spread
    against the assumed observation error, the innovation chi-square per observation (1 when B and R are right),
    the observations left out by the background check, and each file's quality-control counts."""
    title = "Fit to the observations (no truth: observation space)"
    ds = data.diagnostics
    if ds is None or "chi2_per_dof" not in ds:
        return Panel(title, optional=True)
    cycle = ds["cycle"].values if "cycle" in ds else np.arange(ds.sizes["time"])
    checks = ("accepted", "missing", "outside_time", "outside_domain", "range", "duplicate", "thinned", "superobs")
    rows = [[f["network"], Path(str(f["file"])).name, str(f["sha256"])[:12]]
            + [int(f.get("qc", {}).get(k, 0)) for k in checks]
            + [f.get("superobservations") if f.get("superobservations") is not None else ""]
            for f in data.observation_files]
    table = html_table(["network", "file", "sha256", "assimilated", "missing", "outside the time span",
                        "outside the domain", "out of range", "duplicate", "thinned or superseded",
                        "averaged into super-observations", "super-observations made"], rows) if rows else ""
    chi2 = np.asarray(ds["chi2_per_dof"].values, float)
    late = chi2[cycle.size // 5:] if cycle.size > 2 else chi2
    word = ("as large as B and R say" if 0.5 <= np.nanmean(late) <= 2.0 else
            "larger than B and R say: the errors or the spread are too small" if np.nanmean(late) > 2.0 else
            "smaller than B and R say: the errors or the spread are too large")
    note = (f"innovation chi-square per observation {np.nanmean(late):.2f} on average after the first fifth of the "
            f"cycles: innovations {word}")
    if "n_rejected_background" in ds:
        note += f"; {int(np.nansum(ds['n_rejected_background'].values))} observation(s) left out by the background " \
                "check (qc.jsonl lists them)"
    if cycle.size < 2:
        return Panel(title, note=note, table=table)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.2))
    units = _axis_units(ds, "omb_std")
    for k, style, label in (("omb_std", ("C0", "--"), "O-B std"), ("oma_std", ("C0", "-"), "O-A std")):
        if k in ds:
            ax.plot(cycle, ds[k].values, color=style[0], ls=style[1], marker="o", ms=3, label=label)
    if "assumed_r" in ds:
        ax.plot(cycle, np.sqrt(ds["assumed_r"].values), color="k", lw=1, ls=":", label="assumed error std")
    ax.set_xlabel("cycle")
    _set_ylabel(ax, units)
    ax.legend(fontsize=8)
    bx.plot(cycle, chi2, color="C3", marker="o", ms=3, label="chi-square / m")
    bx.axhline(1.0, color="k", lw=1, ls="--", label="expected")
    bx.set_xlabel("cycle")
    bx.legend(fontsize=8)
    return Panel(title, save_figure(fig, out / "observation_fit.png"), note=note, table=table)


def rank_counts(data: RunData, var: str) -> np.ndarray | None:
    """How often the truth of state variable ``var`` has each rank ``0 .. N`` among the ``N`` analysis members
    (every entry of every analysis, :meth:`RunData.first_analysis`; members dropped by the failure policy left
    out), or ``None`` without a truth of it. A truth equal to ``k`` members (a clamped node, where every member and the truth are 0)
    takes a rank drawn uniformly among the ``k + 1`` it ties with (Hamill 2001), not the lowest, which would pile
    such entries into rank 0; the draw is seeded, so a report is reproducible."""
    truth = data.truth_of(var)
    if data.posterior is None or truth is None or var not in data.posterior:
        return None
    first = data.first_analysis()  # a filter's prior at t_0 is not an analysis
    E = data.posterior[var].values[:, first:]
    alive = ~np.any(np.isnan(E.reshape(E.shape[0], -1)), axis=1)
    E = E[alive]
    below = np.sum(E < truth[first:][None], axis=0).ravel()
    ties = np.sum(E == truth[first:][None], axis=0).ravel()
    ranks = below + np.floor(np.random.default_rng(0).random(below.size) * (ties + 1)).astype(int)
    return np.bincount(ranks, minlength=E.shape[0] + 1)


def rank_histogram_panel(data: RunData, out: Path) -> Panel:
    title = "Rank histogram (truth among the analysis members)"
    if data.posterior is None or data.truth is None:
        return Panel(title, note="needs posterior.nc and the truth of a twin experiment: "
                                 + data.missing.get("truth", data.missing.get("posterior", "absent")))
    # the first variable of each grid: the model's, or each component's of a coupled model (its own coordinates)
    variables = [g[0] for g in _groups(data.posterior, data.state_variables())]
    ranked = {v: c for v in variables if (c := rank_counts(data, v)) is not None and c.sum() > 0}
    if not ranked:
        return Panel(title, note="no analysis with a truth to rank (posterior.nc holds the prior only, or the truth "
                                 "is not on the posterior's times)")
    fig, axes = plt.subplots(1, len(ranked), figsize=(6 if len(ranked) == 1 else 4.5 * len(ranked), 3),
                             squeeze=False)
    for ax, (var, counts) in zip(axes[0], ranked.items()):
        ax.bar(np.arange(counts.size), counts, color="C2")
        ax.axhline(counts.sum() / counts.size, color="k", lw=1, ls="--", label="flat")
        ax.set_xlabel("rank of the truth")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("count")
        if len(ranked) > 1:
            ax.set_title(var, fontsize=9)
        ax.legend(fontsize=8)
    return Panel(title, save_figure(fig, out / "rank_histogram.png"))


def _fan(ax, t, samples, label, color):
    q = np.nanquantile(samples, LEVELS, axis=0)
    ax.fill_between(t, q[0], q[2], color=color, alpha=0.25, label=f"{label} 5-95 %")
    ax.plot(t, q[1], color=color, label=f"{label} median")


def _spans(t) -> bool:
    """Whether times ``t`` cover an interval (two or more distinct times), so a series over them is a curve."""
    t = np.asarray(t)
    return t.size >= 2 and t.min() != t.max()


def _value_label(units: str, long_name: str = "") -> str:
    """A y-axis label: the quantity's name where it has one (on lines of at most 32 characters, to fit beside a
    chart), with its units unless they are the CF "1"."""
    if long_name:
        return textwrap.fill(long_name if units in ("", "1") else f"{long_name} [{units}]", 32)
    return f"[{units}]" if units else ""


class FanSeries(NamedTuple):
    """One chart of the fan panel: samples (members x times, or the 5/50/95 % rows of a decision's fan) over ``t``."""

    title: str
    t: object
    samples: np.ndarray
    truth: np.ndarray | None
    ylabel: str
    #: the x axis's label where it is not the run's time axis (an ensemble smoother's steps)
    xlabel: str | None = None
    #: a decision's forecast fan (its quantiles, not members)
    decision: bool = False
    #: the largest magnitude on the grid of the field the series summarises (:func:`grid_scales`), for
    #: :func:`round_off`
    scale: float | None = None


def fan_series(data: RunData, axis) -> list[FanSeries]:
    """The charts of the fan panel over ``axis`` (:func:`twin.report.timeaxis.time_axis`): the domain mean of each
    state variable, each parameter across members, the QoI series of a forecast run and the decision's fans; a series
    over one time (the one window of a calibration) would be a vertical line and is left out."""
    series = []
    if data.posterior is not None:
        t = axis.from_netcdf(data.posterior)
        scales = grid_scales(data.posterior, data.state_variables())
        for var in data.state_variables():
            if data.concatenated(var):
                continue
            m = _spatial_mean(data.posterior[var].values)
            truth = None
            tr = data.truth_of(var)
            if tr is not None:
                truth = tr.reshape(tr.shape[0], -1).mean(axis=1)
            series.append(FanSeries(f"domain mean of {var}", t, m, truth, _value_label(_units(data.posterior, var)),
                                    scale=scales[var]))
    if data.parameters:
        cycles = sorted(data.parameters)
        times = [data.parameter_times[c] for c in cycles]
        # an ensemble smoother's steps all analyse the same window: its parameters are drawn over the steps
        steps = not _spans(times)
        for name in sorted({n for c in cycles for n in data.parameters[c]}):
            vals = [data.parameters[c].get(name) for c in cycles]
            if all(v is not None and v.size == vals[0].size for v in vals) and vals[0].size > 1:
                series.append(FanSeries(f"parameter {name}", np.asarray(cycles) if steps else axis.from_model(times),
                                        np.array(vals).T, None, "",
                                        "assimilation step (0: prior)" if steps else None))
    if data.qoi is not None:
        t = axis.from_netcdf(data.qoi)
        for var in data.qoi.data_vars:
            if var != "cycle" and data.qoi[var].dims == ("time",):
                long_name = str(data.qoi[var].attrs.get("long_name", ""))
                series.append(FanSeries(var, t, data.qoi[var].values[None, :], None,
                                        _value_label(_units(data.qoi, var), long_name)))
    for key, f in (data.decision or {}).get("fans", {}).items():
        qoi = f.get("qoi", "qoi")
        series.append(FanSeries(f"decision: {qoi}" if key == qoi else f"decision: {qoi} ({key})",
                                axis.from_model(f["times"]), np.asarray(f["quantiles"], dtype=float), None,
                                _value_label(f.get("units", ""), f.get("long_name", "")), decision=True))
    return [sr for sr in series if _spans(sr.t)]


def _agree(sr: FanSeries) -> bool:
    """Whether the members of ``sr`` agree to rounding over all its times (:func:`round_off`)."""
    q = np.nanquantile(sr.samples, (LEVELS[0], LEVELS[2]), axis=0)
    return round_off(q[1] - q[0], sr.scale)


def fan_panel(data: RunData, out: Path) -> Panel:
    title = "QoI fan charts (5 / 50 / 95 %)"
    from twin.report.timeaxis import time_axis

    axis = time_axis(data)
    series = fan_series(data, axis)
    if not series:
        return Panel(title, note="no ensemble, parameter, QoI or decision forecast data over more than one time")
    n = len(series)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, sr in zip(axes.ravel(), series):
        if sr.decision:
            ax.fill_between(sr.t, sr.samples[0], sr.samples[2], color="C3", alpha=0.25, label="5-95 %")
            ax.plot(sr.t, sr.samples[1], color="C3", label="median")
        elif sr.samples.shape[0] > 1 and _agree(sr):
            # the members agree to rounding: their median, on an axis that does not magnify the rounding
            ax.plot(sr.t, np.nanmedian(sr.samples, axis=0), color="C0", label="posterior (no spread)")
            ax.ticklabel_format(axis="y", useOffset=False)
            mid = float(np.nanmedian(sr.samples))
            half = max(1e-3 * abs(mid), 1e-3 * sr.scale)
            ax.set_ylim(mid - half, mid + half)
        elif sr.samples.shape[0] > 1:
            _fan(ax, sr.t, sr.samples, "posterior", "C0")
        else:
            ax.plot(sr.t, sr.samples[0], color="C0", marker="o", ms=3, label="forecast")
        if sr.truth is not None:
            ax.plot(sr.t, sr.truth, "k--", lw=1, label="truth")
        ax.set_title(sr.title, fontsize=9)
        ax.set_xlabel(sr.xlabel or axis.label)
        if sr.xlabel:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if sr.ylabel:
            ax.set_ylabel(sr.ylabel)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return Panel(title, save_figure(fig, out / "qoi_fans.png"))


def decision_panel(data: RunData, out: Path) -> Panel:
    title = "Decision and its comparison"
    d = data.decision
    if d is None:
        return Panel(title, note="no decision recorded in this run (decision.json absent)")
    summary = html.escape(str(d.get("summary", "")))
    from twin.core.kinds import kinds

    for kind in kinds().values():
        panel = kind.decision_panel(data, out)
        if panel is not None:
            return panel
    from twin.report.timeaxis import time_axis

    axis = time_axis(data)
    words = {"horizon": "forecast horizon", "time": "time of the last analysis", "members": "posterior members",
             "kind": "record"}
    rows = [[words.get(k, k), axis.duration(float(v)) if k in ("horizon", "time") else v] for k, v in d.items()
            if not isinstance(v, (dict, list)) and k not in ("summary", "time_units")]
    return Panel(title, note=summary or "decision recorded without plot data",
                 table=html_table(["quantity", "value"], rows))


def _groups(ds, variables: list[str]) -> list[list[str]]:
    """Variables of ``ds`` grouped by their dimensions (one group per grid), in order of appearance."""
    groups: dict[tuple, list[str]] = {}
    for v in variables:
        groups.setdefault(ds[v].dims, []).append(v)
    return list(groups.values())


def _lead(value: float, unit: str) -> str:
    """A lead time in the unit its readers use, three significant digits (``4.83 h``, ``70 min``, ``60 day``)."""
    seconds = {"seconds": 1.0, "second": 1.0, "s": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0,
               "day": 86400.0}.get(unit)
    if seconds is None:
        return f"{value:.3g}" + (f" {unit}" if unit not in ("", "1") else "")
    s = value * seconds
    for name, size in (("day", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(s) >= 2 * size:
            return f"{s / size:.3g} {name}"
    return f"{s:.3g} s"


def horizon_panel(data: RunData, out: Path) -> Panel:
    title = "Forecast fields over the horizon (ensemble mean and spread)"
    ds = data.horizon
    if ds is None:
        if not (data.decision or {}).get("qois"):
            return Panel(title, optional=True)  # no QoI forecast, hence no horizon fields (e.g. a forecast run)
        return Panel(title, note="no horizon.nc: " + data.missing.get("horizon", "absent") +
                     " (the decision step writes it with its QoI forecast)")
    means = [v for v in ds.data_vars if v.endswith("_mean") and f"{v[:-5]}_spread" in ds]
    if not means or "time" not in ds.dims:
        return Panel(title, note="horizon.nc holds no ensemble mean and spread fields")
    lead = ds["forecast_period"] if "forecast_period" in ds.coords else None
    unit = str(lead.attrs.get("units", "")) if lead is not None else ""
    leads = [f"+{_lead(float(v), unit)}" if lead is not None else f"snapshot {i}"
             for i, v in enumerate(lead.values if lead is not None else range(ds.sizes["time"]))]
    rows = []
    for v in means:
        name = v[:-5]
        m, sd = ds[v].values[-1], ds[f"{name}_spread"].values[-1]
        units = _units(ds, v)
        rows.append([name, units, float(np.nanmean(m)), float(np.nanmin(m)), float(np.nanmax(m)),
                     float(np.nanmean(sd)), float(np.nanmax(sd))])
    table = html_table(["field", "units", f"mean at {leads[-1]}", "min", "max", "mean spread", "max spread"], rows)
    # one row per grid, the first field of each: its mean at every lead time and its spread at the horizon
    shown = [g[0] for g in _groups(ds, means)]
    scales = grid_scales(ds, means)
    spatial = [[d for d in ds[v].dims if d != "time"] for v in shown]
    if any(len(d) not in (1, 2) for d in spatial):
        return Panel(title, note="fields of more than two dimensions: the numbers are in the table", table=table)
    nt = ds.sizes["time"]
    lines = all(len(d) == 1 for d in spatial)
    fig, axes = plt.subplots(len(shown), 1 if lines else nt + 1,
                             figsize=(8, 3.2 * len(shown)) if lines else (3.3 * (nt + 1), 3.0 * len(shown)),
                             squeeze=False)
    if not lines:
        fig.subplots_adjust(wspace=0.3, hspace=0.45)
    for row, (v, dims) in enumerate(zip(shown, spatial)):
        name, units = v[:-5], _units(ds, v)
        mean, spread = ds[v].values, ds[f"{name}_spread"].values
        if len(dims) == 1:
            ax = axes[row, 0]
            x = np.asarray(ds[dims[0]].values, dtype=float)
            for i in range(nt):
                ax.plot(x, mean[i], color=f"C{i}", lw=1.2, label=f"mean {leads[i]}")
            ax.fill_between(x, mean[-1] - spread[-1], mean[-1] + spread[-1], color=f"C{nt - 1}", alpha=0.25,
                            label=f"mean +- spread {leads[-1]}")
            cu = str(ds[dims[0]].attrs.get("units", ""))
            ax.set_xlabel(f"{dims[0]} [{cu}]" if cu else dims[0])
            ax.set_ylabel(f"{name} [{units}]")
            ax.legend(fontsize=7)
            for extra in axes[row, 1:]:
                extra.set_visible(False)
            continue
        extent, xlabel, ylabel = _box(ds, dims)
        lo, hi = float(np.nanmin(mean)), float(np.nanmax(mean))
        for i in range(nt):
            ax = axes[row, i]
            im = ax.imshow(mean[i], origin="lower", vmin=lo, vmax=hi, cmap="viridis", extent=extent,
                           aspect=_aspect(extent))
            ax.set_title(f"{name} mean {leads[i]}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            if i == 0:  # the rows share their axes: one label, no overlap with the neighbours' ticks
                ax.set_ylabel(ylabel, fontsize=8)
            else:
                ax.tick_params(labelleft=False)
        fig.colorbar(im, ax=list(axes[row, :nt]), shrink=0.8, label=f"{name} [{units}]")
        ax = axes[row, nt]
        ax.set_title(f"{name} spread {leads[-1]}", fontsize=9)
        if round_off(spread[-1], scales[v]):
            _no_spread(ax, spread[-1], units)
            continue
        im = ax.imshow(spread[-1], origin="lower", cmap="magma", extent=extent, vmin=0, aspect=_aspect(extent))
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelleft=False)
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"[{units}]")
    members = ds.attrs.get("twin_ensemble_members")
    note = (f"Ensemble mean and standard deviation of {members} posterior members' forecasts "
            f"(lead times after the last analysis; the last is the decision's horizon)." if members else "")
    path = out / "horizon_fields.png"
    save_figure(fig, path, layout=bool(lines))
    return Panel(title, path, note=html.escape(note), table=table)


def flags_panel(data: RunData, out: Path) -> Panel:
    title = "Guardrail flags"
    ds = data.diagnostics
    chart = [k for k in ("innovation_chi2", "spread_skill_ratio", "cusum_max") if ds is not None and k in ds]
    table = ""
    if data.flags:
        rows = [[f.get("cycle"), f.get("kind"), f.get("sensor") if f.get("sensor", -1) >= 0 else "",
                 f.get("action"), f.get("message")] for f in data.flags[:200]]
        table = html_table(["cycle", "check", "sensor", "action", "message"], rows)
    if not chart:
        note = ("no guardrail statistics in diagnostics.nc" if data.flags else
                "no guardrails ran in this run (no flags.jsonl and no guardrail diagnostics)")
        if data.flags:
            note += f"; {len(data.flags)} flag(s) recorded"
        return Panel(title, note=note, table=table)
    cycle = ds["cycle"].values if "cycle" in ds else np.arange(ds.sizes["time"])
    fig, axes = plt.subplots(1, len(chart), figsize=(4 * len(chart), 3), squeeze=False)
    for ax, k in zip(axes[0], chart):
        ax.plot(cycle, ds[k].values, marker="o", ms=2)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("cycle")
    return Panel(title, save_figure(fig, out / "guardrails.png"), note=f"{len(data.flags)} flag(s) recorded",
                 table=table)


def changes_panel(data: RunData, out: Path) -> Panel:
    title = "What changed since the last update"
    rows = []
    cycles = sorted(data.parameters)
    if len(cycles) >= 2:
        a, b = cycles[-2], cycles[-1]
        for name in sorted(set(data.parameters[a]) & set(data.parameters[b])):
            va, vb = data.parameters[a][name], data.parameters[b][name]
            # NaN marks dropped members (see RunData.parameters)
            va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
            if not va.size or not vb.size:
                continue
            # an ensemble's spread, or a single analysis's from its Laplace samples (4D-Var); else none (n/a, not 0)
            spread = [float(np.std(v, ddof=1)) if v.size > 1 else
                      data.parameter_spreads.get(k, {}).get(name, float("nan")) for k, v in ((a, va), (b, vb))]
            rows.append([f"parameter {name}", float(np.mean(va)), float(np.mean(vb)), *spread])
    if data.posterior is not None and data.posterior.sizes["time"] >= 2:
        for var in data.state_variables():
            if data.concatenated(var):
                continue
            m = _spatial_mean(data.posterior[var].values)
            rows.append([f"domain mean of {var}", float(np.nanmean(m[:, -2])), float(np.nanmean(m[:, -1])),
                         float(np.nanstd(m[:, -2], ddof=1)), float(np.nanstd(m[:, -1], ddof=1))])
    if data.diagnostics is not None and data.diagnostics.sizes.get("time", 0) >= 2:
        for k in ("rmse", "spread"):
            if k in data.diagnostics:
                v = data.diagnostics[k].values
                rows.append([k, float(v[-2]), float(v[-1]), "", ""])
    if data.qoi is not None and data.qoi.sizes.get("time", 0) >= 2:
        for var in data.qoi.data_vars:
            if var != "cycle":
                v = data.qoi[var].values
                rows.append([var, float(v[-2]), float(v[-1]), "", ""])
    if not rows:
        return Panel(title, note="fewer than two cycles or output times: nothing to compare")
    header = ["quantity", "mean before", "mean now", "spread before", "spread now"]
    labels = [r[0] for r in rows if r[3] != "" and r[4] != ""]
    if labels:
        before = np.array([r[3] for r in rows if r[3] != "" and r[4] != ""], float)
        now = np.array([r[4] for r in rows if r[3] != "" and r[4] != ""], float)
        fig, ax = plt.subplots(figsize=(6, 1.4 + 0.45 * len(labels)))
        y = np.arange(len(labels))
        ax.barh(y - 0.2, before, 0.4, label="previous cycle")
        ax.barh(y + 0.2, now, 0.4, label="latest cycle")
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel("posterior spread (std)")
        ax.legend(fontsize=8)
        return Panel(title, save_figure(fig, out / "changes.png"), table=html_table(header, rows))
    return Panel(title, note="no ensemble: only the values are compared", table=html_table(header, rows))


def panels() -> tuple:
    """Every panel function of the report, in order: the general ones, then the installed kinds'."""
    from twin.core.kinds import kinds

    from twin.report.coupling import coupling_panel

    extra = [p for kind in kinds().values() for p in kind.report_panels()]
    return (fields_panel, coupling_panel, rmse_panel, observation_fit_panel, rank_histogram_panel, fan_panel,
            decision_panel, horizon_panel, *extra, flags_panel, changes_panel)
