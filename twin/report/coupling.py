"""The report's panels of a coupled model's run: ``coupling.nc``, the iterations and the interface residuals of every
coupling window (:func:`twin.coupling.build.write_coupling_diagnostics`), and whether each window converged; and the
fields of a coupled forecast run, one file per component on its own grid (``forecast_<component>.nc``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from twin.report.data import RunData  # noqa: E402
from twin.report.panel import Panel, html_table, save_figure  # noqa: E402

#: the file a coupled model's run writes beside its outputs
COUPLING_FILE = "coupling.nc"


def coupling_panel(data: RunData, out: Path) -> Panel:
    """Iterations per coupling window, and the relative interface residual each window ended with; the windows
    that did not converge (``allow_nonconvergence``) named in the table."""
    import xarray as xr

    title = "Coupling windows: iterations and interface residuals"
    path = data.directory / COUPLING_FILE
    if not path.is_file():
        return Panel(title, optional=True)
    with xr.open_dataset(path, decode_times=False) as ds:
        ds = ds.load()
    if "iterations" not in ds or ds.sizes.get("time", 0) == 0:
        return Panel(title, note=f"{COUPLING_FILE} holds no windows")
    its = np.asarray(ds["iterations"].values, dtype=float)
    converged = np.asarray(ds["converged"].values, dtype=float) if "converged" in ds else np.ones_like(its)
    residuals = sorted(v for v in ds.data_vars if v.startswith("relative_residual_"))
    t = np.asarray(ds["time"].values, dtype=float)
    units = str(ds["time"].attrs.get("units", ""))
    fig, axes = plt.subplots(1, 2 if residuals else 1, figsize=(9 if residuals else 5, 3), squeeze=False)
    axes[0, 0].plot(t, its, marker="o", ms=3)
    axes[0, 0].set_ylabel("iterations")
    axes[0, 0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_title("iterations per window (at its end)", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel(f"time [{units.split(' since ')[0]}]" if units else "time")
    for v in residuals:
        axes[0, 1].semilogy(t, np.maximum(np.asarray(ds[v].values, dtype=float), 1e-300),
                            label=v[len("relative_residual_"):], marker="o", ms=2)
    if residuals:
        axes[0, 1].set_ylabel("relative residual")
        axes[0, 1].set_title("the last iteration's residual", fontsize=9)
        axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    bad = int(np.sum(converged < 0.5))
    rows = [["windows", its.size], ["iterations per window (min / mean / max)",
                                    f"{its.min():.0f} / {its.mean():.1f} / {its.max():.0f}"],
            ["windows that did not converge", bad]]
    return Panel(title, save_figure(fig, out / "coupling.png"), table=html_table(["", "value"], rows))


def component_fields_panel(data: RunData, out: Path, title: str) -> Panel:
    """A coupled forecast run's fields: one row per component (its first state variable on the component's own
    coordinates, as the fields panel draws one model's), at the first and the last output time."""
    from twin.report.figures import _aspect, _box
    from twin.report.verdict import duration

    rows = []
    for component, ds in data.component_forecasts.items():
        fields = [v for v in ds.data_vars if ds[v].dims[:2] == ("member", "time") and ds[v].ndim >= 3]
        if fields and ds.sizes.get("time", 0) > 0:
            rows.append((component, ds, fields[0]))
    if not rows:
        return Panel(title, note="the component forecast files hold no fields")
    fig, axes = plt.subplots(len(rows), 2, squeeze=False, figsize=(8.0, 3.3 * len(rows)))  # as fields_panel
    fig.subplots_adjust(wspace=0.3, hspace=0.55)
    for row, (component, ds, var) in enumerate(rows):
        values = np.asarray(ds[var].values, dtype=float).mean(axis=0)  # over members (a forecast run has one)
        t = np.asarray(ds["time"].values, dtype=float)
        unit = str(ds["time"].attrs.get("units", "")).split(" since ")[0].strip()
        units = str(ds[var].attrs.get("units", ""))
        label = f"{component}.{var}" + (f" [{units}]" if units else "")
        dims = [d for d in ds[var].dims if d not in ("member", "time")]
        picks = [(0, "first output"), (values.shape[0] - 1, "last output")]
        if len(dims) == 1:
            ax = axes[row, 0]
            x = np.asarray(ds[dims[0]].values, dtype=float) if dims[0] in ds.coords else np.arange(values.shape[1])
            for k, what in picks:
                ax.plot(x, values[k], label=f"{what}, {duration(t[k] - t[0], unit)}")
            ax.set_title(label, fontsize=9)
            ax.legend(fontsize=8)
            axes[row, 1].set_visible(False)
            continue
        lo, hi = float(np.nanmin(values[[0, -1]])), float(np.nanmax(values[[0, -1]]))
        extent, xlabel, ylabel = _box(ds, dims[-2:])
        for ax, (k, what) in zip(axes[row], picks):
            img = values[k] if values[k].ndim == 2 else values[k][values[k].shape[0] // 2]
            im = ax.imshow(img, origin="lower", vmin=lo, vmax=hi, cmap="viridis", extent=extent,
                           aspect=_aspect(extent))
            ax.set_title(f"{component}.{var}: {what} (+{duration(t[k] - t[0], unit)})", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
        fig.colorbar(im, ax=list(axes[row]), shrink=0.8, label=label)
    table = html_table(["component", "file", "variables", "output times"],
                       [[c, f"forecast_{c}.nc", ", ".join(str(v) for v in ds.data_vars), ds.sizes.get("time", 0)]
                        for c, ds in data.component_forecasts.items()])
    return Panel(title, save_figure(fig, out / "fields.png", layout=False), table=table)
