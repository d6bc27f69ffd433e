"""A forecast run that starts at a calendar instant writes CF time with that reference date: xarray decodes its
times to the dates of the run, not to 1970."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[2]


def test_forecast_files_carry_the_calendar_start(tmp_path):
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    assert "  start: 0.0\n" in text
    (tmp_path / "q.yaml").write_text(text.replace("  start: 0.0\n", "  start: 2026-03-01T06:00+02:00\n"))
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "q.yaml", "-o", "run", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("forecast.nc", "qoi.nc"):
        with xr.open_dataset(tmp_path / "run" / name) as ds:
            assert ds["time"].encoding["units"] == "seconds since 2026-03-01T04:00:00Z"
            expected = np.datetime64("2026-03-01T04:00:00") + np.arange(6) * np.timedelta64(10, "s")
            assert (ds["time"].values == expected).all(), ds["time"].values
