"""Report panels of a shallow-water atmosphere twin (an experiment whose ``experiment.yaml`` has one
``shallow_water`` component and an assimilation section), e.g. ``configs/atmosphere.yaml``:

* the observing network over the truth: the nature run's free-surface height ``h`` [m] and wind ``(u, v)`` [m/s] at
  the first analysis time, with the footprints of every network of ``assimilation.observations`` (stations,
  swaths, ...) and the named sites, in km;
* analysis vs free-run RMSE per cycle with the ensemble spread: ``rmse`` (analysis), ``rmse_forecast``
  (background) and ``spread`` of ``diagnostics.nc`` (4D-Var: the spread of the Laplace samples in
  ``posterior.nc``), and ``rmse_free`` of the free run (``free_run.nc``, written by the campaign:
  :mod:`twin.campaign.free_run`), in the state's units (m and m/s together);
* the site forecast fan: the decision's 5/50/95 % fan of each site QoI (``decision.json``) after the last analysis,
  with the nature run and the free run continued over the horizon, the exceedance limit and the probability of
  exceeding it; the sea level as the anomaly a forecaster reads (``eta_at_<site>``: metres above the rest level).

Other experiments get none of these panels (they are optional).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from twin.core.log import get_logger  # noqa: E402
from twin.core.units import convert  # noqa: E402
from twin.report.data import RunData  # noqa: E402
from twin.report.panel import Panel, html_table, save_figure  # noqa: E402

log = get_logger("twin.report")

#: seconds per hour: the shallow-water model's time is in seconds, the panels show hours
HOUR = 3600.0


def _campaign(data: RunData):
    """The typed experiment configuration when this is a shallow-water twin experiment, else ``None``."""
    from twin.campaign import layout
    from twin.config.loader import load_campaign
    from twin.core.errors import ConfigError

    path = layout.config_file(data.directory)
    if not path.is_file() or not (data.directory / "observations.h5").is_file():
        return None
    try:
        cfg = load_campaign(path).config
    except (ConfigError, OSError):
        return None
    models = list(cfg.models.values())
    if cfg.assimilation is None or len(models) != 1 or getattr(models[0], "type", "") != "shallow_water":
        return None
    return cfg


def _network_list(cfg) -> list:
    """The campaign's observation network sections (one or a list)."""
    networks = cfg.assimilation.observations
    return list(networks) if isinstance(networks, (list, tuple)) else [networks]


def _free_run(data: RunData):
    """``free_run.nc`` of the experiment (written by the campaign's last step), or ``None`` with a reason."""
    import xarray as xr

    from twin.campaign.free_run import FREE_RUN_FILE

    path = data.directory / FREE_RUN_FILE
    if not path.is_file():
        data.missing["free run"] = f"{FREE_RUN_FILE} not found (the campaign writes it when it finishes)"
        return None
    with xr.open_dataset(path, decode_times=False) as ds:
        return ds.load()


def _truth(directory: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The twin experiment's truth and times from ``observations.h5``; ``None`` for a campaign observed through
    files (a real system has no truth)."""
    from twin.io.checkpoint import CheckpointReader

    with CheckpointReader(directory / "observations.h5") as r:
        if "truth" not in r.array_names:
            return None
        return r.read_array("truth"), np.asarray(r.read_array("times"), dtype=float)


def _background(data: RunData, shape: tuple[int, int, int]) -> tuple[np.ndarray, float, str] | None:
    """What the network is drawn over: the truth at the first analysis, or without one (observations from files)
    the posterior ensemble mean there; ``(state (ny, nx, dof), time, name)`` or ``None``."""
    found = _truth(data.directory)
    if found is not None:
        truth, times = found
        i = min(1, len(truth) - 1)
        return truth[i].reshape(shape), float(times[i]), "truth"
    ds, variables = data.posterior, data.state_variables()
    if ds is None or len(variables) != shape[2]:
        return None
    i = min(1, ds.sizes["time"] - 1)
    state = np.stack([ds[v].isel(time=i).mean("member").values for v in variables], axis=-1)
    return state.reshape(shape), float(ds["time"].values[i]), "posterior mean"


def _networks(directory: Path):
    """Observation positions, ``{network: (first row, end row)}`` and error standard deviations from
    ``observations.h5`` (:func:`twin.campaign.steps.network_geometry`), or ``None`` when it has none."""
    from twin.io.checkpoint import CheckpointReader

    with CheckpointReader(directory / "observations.h5") as r:
        networks = r.meta.get("networks")
        if not networks:
            return None
        locations = np.atleast_2d(r.read_array("locations")) if "locations" in r.array_names else None
        return locations, networks, np.asarray(r.read_array("error_std"), dtype=float)


def _error_text(spec, rows: np.ndarray) -> str:
    """A network's observation errors in the units of what it observes, one entry per variable (``h 0.3 m, u 0.5
    m/s``): the stations' and gridded products' per-variable values, a swath's nadir-to-edge range; for a network read
    from files (whose errors are per observation) the range of its rows when its variables share units. An average
    over ``h`` in m and ``u`` in m/s (what the table showed) is no number at all."""
    from twin.kinds.shallow_water.staggering import COMPONENTS, UNITS

    units = dict(zip(COMPONENTS, UNITS))
    variables = getattr(spec, "variables", None) or []
    if isinstance(variables, dict):  # a file network: model variable -> the file's columns
        used = {units.get(v, "") for v in variables}
        if len(used) == 1 and rows.size:
            lo, hi = float(np.min(rows)), float(np.max(rows))
            return f"{lo:.3g} {used.pop()}" if lo == hi else f"{lo:.3g} to {hi:.3g} {used.pop()} (per observation)"
        return "per observation, from the file"
    error = getattr(spec, "error_std", None)
    factor = float(getattr(spec, "edge_error_factor", 1.0) or 1.0)
    parts = []
    for v in variables:
        value = error.get(v) if isinstance(error, dict) else error
        if not isinstance(value, (int, float)):
            return "per observation"
        text = f"{float(value):.3g}" + (f" to {float(value) * factor:.3g}" if factor > 1.0 else "")
        parts.append(f"{v} {text} {units.get(v, '')}".rstrip())
    return ", ".join(parts) + (" (nadir to edge)" if factor > 1.0 and parts else "")


def network_panel(data: RunData, out: Path) -> Panel:
    title = "Observing network over the truth"
    cfg = _campaign(data)
    if cfg is None:
        return Panel(title, optional=True)
    geometry = _networks(data.directory)
    if geometry is None:
        return Panel(title, note="observations.h5 holds no network positions (a run of an older twin)")
    locations, networks, error_std = geometry
    section = next(iter(cfg.models.values()))
    (x0, x1), (y0, y1) = section.metadata().extent
    nx, ny = section.grid.shape
    dof = len(section.metadata().state_names)
    scale = float(convert(1.0, section.grid.units, "m"))
    sites = {name: (p[0] * scale, p[1] * scale) for name, p in section.sites.items()}
    background = _background(data, (ny, nx, dof))
    if background is None:
        return Panel(title, note="neither a truth nor a posterior to draw the network over")
    state, when, what = background
    title = f"Observing network over the {what}"
    km = 1e-3
    fig, ax = plt.subplots(figsize=(6.6, 5.6))
    im = ax.imshow(state[..., 0], origin="lower", extent=(x0 * km, x1 * km, y0 * km, y1 * km), cmap="Blues_r")
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"{what} h [m]")
    # the wind at cell centres (C-grid faces averaged), every other cell
    uc = 0.5 * (state[..., 1] + np.roll(state[..., 1], -1, axis=1))
    vc = 0.5 * (state[..., 2] + np.roll(state[..., 2], -1, axis=0))
    xc = (x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx) * km
    yc = (y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny) * km
    step = max(1, nx // 16)
    ax.quiver(xc[::step], yc[::step], uc[::step, ::step], vc[::step, ::step], color="0.3", width=0.003)
    rows = []
    markers = ["^", "s", "o", "D", "v", "P"]
    specs = {getattr(n, "name", None): n for n in _network_list(cfg)}
    for i, (name, (a, b)) in enumerate(networks.items()):
        rows_of = slice(int(a), int(b))
        count = rows_of.stop - rows_of.start
        errors = _error_text(specs.get(name), error_std[rows_of])
        if locations is not None:
            pts = np.unique(np.round(locations[rows_of], 3), axis=0) * km
            ax.scatter(pts[:, 0], pts[:, 1], s=22, marker=markers[i % len(markers)], color=f"C{i + 1}",
                       edgecolor="k", linewidth=0.4, label=f"{name} ({len(pts)} sites)")
            rows.append([name, len(pts), count, errors])
        else:
            rows.append([name, "", count, errors])
    for name, (sx, sy) in sites.items():
        ax.plot(sx * km, sy * km, marker="*", ms=14, color="gold", mec="k")
        ax.annotate(name, (sx * km, sy * km), xytext=(5, 5), textcoords="offset points", fontsize=9,
                    weight="bold")
    ax.set_xlim(x0 * km, x1 * km)
    ax.set_ylim(y0 * km, y1 * km)
    ax.set_xlabel("x [km]")
    ax.set_ylabel("y [km]")
    ax.set_title(f"{what} at t = {when / HOUR:g} h; stars: sites", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    table = html_table(["network", "positions", "observations per time", "error std"], rows)
    return Panel(title, save_figure(fig, out / "atmosphere_network.png"), table=table)


def _posterior_spread(data: RunData) -> tuple[np.ndarray, np.ndarray] | None:
    """Times and spread (root mean ensemble variance over all entries) of ``posterior.nc``."""
    ds = data.posterior
    variables = data.state_variables()
    if ds is None or not variables or ds.sizes.get("member", 1) < 2:
        return None
    var = sum(np.nanvar(ds[v].values.reshape(ds.sizes["member"], ds.sizes["time"], -1), axis=0, ddof=1).sum(axis=1)
              for v in variables)
    count = sum(int(np.prod(ds[v].shape[2:])) for v in variables)
    return ds["time"].values, np.sqrt(var / count)


def rmse_free_panel(data: RunData, out: Path) -> Panel:
    title = "Analysis vs free-run RMSE per cycle, with spread"
    cfg = _campaign(data)
    if cfg is None:
        return Panel(title, optional=True)
    ds = data.diagnostics
    if ds is None or "rmse" not in ds:
        return Panel(title, note="no diagnostics.nc with an analysis rmse: " + data.missing.get("diagnostics", ""))
    free = _free_run(data)
    t = ds["time"].values
    rmse = ds["rmse"].values
    spread = ds["spread"].values if "spread" in ds else None
    if spread is None:
        post = _posterior_spread(data)
        if post is not None and post[0].size == t.size:
            spread = post[1]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(t / HOUR, rmse, "C0-o", ms=3, label="analysis RMSE")
    if "rmse_forecast" in ds:
        ax.plot(t / HOUR, ds["rmse_forecast"].values, "C0--", lw=1, label="background RMSE")
    if spread is not None:
        ax.plot(t / HOUR, spread, "C1-", label="analysis spread")
    free_at = np.full(t.size, np.nan)
    if free is not None:
        ft, fr = free["time"].values, free["rmse_free"].values
        ok = np.isfinite(fr)
        ax.plot(ft[ok] / HOUR, fr[ok], "k-", lw=1.5, label="free run RMSE")
        for i, ti in enumerate(t):
            match = np.flatnonzero(np.isclose(ft, ti, rtol=0, atol=1e-6 * max(1.0, abs(ti))))
            if match.size:
                free_at[i] = fr[match[0]]
    ax.set_xlabel("time [h]")
    ax.set_ylabel("RMSE over h, u, v [m, m/s]")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    header = ["cycle", "time [h]", "analysis rmse", "spread", "spread/rmse", "free-run rmse"]
    rows = []
    for i in range(t.size):
        s = float(spread[i]) if spread is not None else float("nan")
        rows.append([i, float(t[i] / HOUR), float(rmse[i]), s, s / float(rmse[i]), float(free_at[i])])
    half = slice(t.size // 2, None)
    free_half = free_at[half][np.isfinite(free_at[half])]
    note = (f"Second half of the cycles: mean analysis RMSE {np.nanmean(rmse[half]):.3g}, "
            + (f"free-run RMSE {np.mean(free_half):.3g}" if free_half.size else "no free run to compare with"))
    if spread is not None:
        note += f", spread/skill {np.nanmean(spread[half]) / np.nanmean(rmse[half]):.2f}"
    return Panel(title, save_figure(fig, out / "atmosphere_rmse.png"), note=html.escape(note + "."),
                 table=html_table(header, rows))


def _label(qoi: str) -> str:
    """What a site QoI is, in a forecaster's words (``eta_at_<site>`` is the sea-level anomaly, :mod:`.qoi`)."""
    for prefix, words in (("eta_at_", "sea-level anomaly at"), ("u_at_", "eastward wind at"),
                          ("v_at_", "northward wind at"), ("tracer_at_", "tracer at")):
        if qoi.startswith(prefix):
            return f"{words} {qoi[len(prefix):]}"
    return qoi


def site_fan_panel(data: RunData, out: Path) -> Panel:
    title = "Site forecast: fan, threshold and exceedance probability"
    cfg = _campaign(data)
    if cfg is None:
        return Panel(title, optional=True)
    d = data.decision or {}
    fans: dict[str, Any] = d.get("fans", {})
    if not fans:
        why = ("this experiment has no decision record (the decision step runs after filter campaigns; a 4D-Var "
               "campaign writes none)" if cfg.decision is not None else "the campaign has no decision section")
        return Panel(title, note=why)
    free = _free_run(data)
    limits = dict(cfg.decision.exceedance_limits)
    names = list(fans)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.6), squeeze=False)
    rows = []
    for ax, key in zip(axes[0], names):
        f = fans[key]
        q = np.asarray(f["quantiles"], dtype=float)
        ft = np.asarray(f["times"], dtype=float) / HOUR
        name, units = f.get("qoi", key), f.get("units", "")
        ax.fill_between(ft, q[0], q[2], color="C3", alpha=0.25, label="forecast 5-95 %")
        ax.plot(ft, q[1], color="C3", label="forecast median")
        if free is not None and f"truth_{name}" in free:
            tt = free["time"].values / HOUR
            ax.plot(tt, free[f"truth_{name}"].values, "k-", lw=1.2, label="truth")
            ax.plot(tt, free[f"free_{name}"].values, color="0.5", ls="--", lw=1, label="free run")
        summary = (d.get("qois") or {}).get(name, {})
        if name in limits:
            lim = limits[name]
            p = summary.get("exceedance", {}).get(f"{lim:g}")
            ax.axhline(lim, color="r", ls=":", lw=1.5, label=f"threshold {lim:g} {units}")
            lead = (f["times"][-1] - float(d.get("time", f["times"][0]))) / HOUR
            ax.set_title(f"{name}: P(> {lim:g} {units}) = {p:.2f} at t = {ft[-1]:g} h (+{lead:g} h)"
                         if p is not None else name, fontsize=9)
            rows.append([name, units, lim, p, summary.get("mean"), summary.get("cvar")])
        else:
            ax.set_title(name, fontsize=9)
            rows.append([name, units, "", "", summary.get("mean"), summary.get("cvar")])
        if "time" in d:  # the last analysis: the forecast starts here
            ax.axvline(float(d["time"]) / HOUR, color="0.7", lw=0.8)
        ax.set_xlabel("time [h]")
        ax.set_ylabel(f"{_label(name)} [{units}]")
        ax.legend(fontsize=7)
    header = ["QoI", "units", "threshold", "P(exceed) at horizon", "mean at horizon", "CVaR"]
    return Panel(title, save_figure(fig, out / "atmosphere_site_fan.png"), note=html.escape(str(d.get("summary", ""))),
                 table=html_table(header, rows))


PANELS = (network_panel, rmse_free_panel, site_fan_panel)
