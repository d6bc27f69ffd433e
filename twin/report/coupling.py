"""The report's panel of a coupled model's run: ``coupling.nc``, the iterations and the interface residuals of every
coupling window (:func:`twin.coupling.build.write_coupling_diagnostics`), and whether each window converged."""

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
