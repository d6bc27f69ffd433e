"""A filter's checkpoints carry the record of their own cycle only: their size does not grow with the cycle count, and
``diagnostics.nc`` lost or behind is rebuilt from the checkpoints, equal to the uninterrupted run's bitwise."""

from __future__ import annotations

import subprocess
import sys

from campaign_case import arrays, assert_same, l96_campaign
from twin.campaign import layout
from twin.io.checkpoint import CheckpointReader

TWIN = [sys.executable, "-m", "twin.cli"]
CYCLES = 16


def _run(campaign, run):
    out = subprocess.run(TWIN + ["run", str(campaign), "-o", str(run), "--quiet"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_checkpoints_do_not_grow_and_diagnostics_are_rebuilt_from_them(tmp_path):
    text = l96_campaign("size", cycles=str(CYCLES), extra="resources: {type: local, ranks: 1, workers: 1}\n"
                        "outputs: {checkpoint_every: 1}\n")  # every cycle's checkpoint, to compare their sizes
    campaign = tmp_path / "c.yaml"
    campaign.write_text(text.replace("end: 1.0", f"end: {CYCLES * 0.1:g}"))
    run = tmp_path / "run"
    _run(campaign, run)
    exp = layout.experiment_dir(run, "size")
    sizes = [layout.checkpoint_file(exp, k).stat().st_size for k in range(1, CYCLES + 1)]
    # the record's numbers print to JSON with varying lengths; the whole history grew by ~250 bytes a cycle here
    assert max(sizes) - min(sizes) < 200, sizes
    for k in (1, CYCLES):
        with CheckpointReader(layout.checkpoint_file(exp, k)) as r:
            meta = r.meta
        assert "history" not in meta and meta["record"]["cycle"] == k - 1
    before = arrays(exp)

    # diagnostics.nc lost and the last cycle to compute again: the file is rebuilt from checkpoints 1 .. 15
    (exp / "diagnostics.nc").unlink()
    layout.checkpoint_file(exp, CYCLES).unlink()
    for name in layout.OUTPUTS + ("decision.json", "free_run.nc", "horizon.nc"):
        (exp / name).unlink(missing_ok=True)
    layout.done_marker(exp).unlink(missing_ok=True)
    _run(campaign, run)
    assert_same(arrays(exp), before)
