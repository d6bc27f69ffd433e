"""A finished experiment whose output was truncated or changed afterwards (``truncate -s 50% posterior.nc``) is not
``done``: ``done.json`` records every output's size (:func:`twin.campaign.status.mark_done`), ``twin status`` reports
the file as ``damaged`` (exit status 1) and ``twin run`` again sets it aside (``<name>.damaged-<time>``) and writes it
again, equal to the original. A ``done.json`` of an older version (no sizes) keeps the missing-or-empty checks.

A real campaign (Lorenz-96, one experiment, online, one rank) is run once through ``twin run`` and copied for each
case."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from twin.campaign import layout
from twin.campaign.status import EXIT_ATTENTION, EXIT_COMPLETE
from twin.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaign_case import l96_campaign  # noqa: E402

pytestmark = pytest.mark.timeout(300)
NAME = "damaged"
CAMPAIGN = l96_campaign(NAME, cycles=4, every=2, extra="""\
    decision: {qois: [energy], horizon: 0.4}
    """)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("damaged")
    (base / "c.yaml").write_text(CAMPAIGN)
    assert main(["run", str(base / "c.yaml"), "-o", str(base / "run"), "--quiet"]) == 0
    return base / "run"


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    return run, layout.experiment_dir(run, NAME)


def _status(run: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["status", str(run)])
    out = capsys.readouterr()
    (line,) = [ln.strip() for ln in out.out.splitlines() if ln.strip().startswith(f"{NAME}:")]
    return code, line, out.err


def _rerun(run: Path, capsys) -> None:
    assert main(["run", str(run / "campaign.yaml"), "-o", str(run), "--quiet"]) == 0
    capsys.readouterr()


def _data(path: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    with xr.open_dataset(path, decode_times=False) as ds:
        return {v: ds[v].values for v in list(ds.data_vars) + list(ds.coords)}


def _same_data(a: Path, b: Path) -> None:
    da, db = _data(a), _data(b)
    assert da.keys() == db.keys()
    for k in da:
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def test_done_json_records_every_output_size(finished):
    exp = layout.experiment_dir(finished, NAME)
    done = json.loads(layout.done_marker(exp).read_text())
    assert {"posterior.nc", "forecast.nc", "diagnostics.nc", "decision.json", "free_run.nc"} <= set(done["outputs"])
    # the task log is listed but not sized: a step run again on a finished experiment appends to it
    assert set(done["sizes"]) == set(done["outputs"]) - {"tasks.jsonl"}
    assert all(done["sizes"][n] == (exp / n).stat().st_size for n in done["sizes"])


def test_truncated_posterior_is_damaged_and_the_resume_writes_it_again(finished, tmp_path, capsys):
    run, exp = _copy(finished, tmp_path)
    post = exp / "posterior.nc"
    size = post.stat().st_size
    os.truncate(post, size // 2)

    code, line, err = _status(run, capsys)
    assert code == EXIT_ATTENTION
    assert line.startswith(f"{NAME}: damaged,"), line
    assert (f"posterior.nc is {size // 2} bytes, {size} when the run finished: truncated or changed (run the "
            "campaign again: the resume keeps it as posterior.nc.damaged-<time> and writes it again)") in line
    assert f"error: experiment {NAME} damaged: " in err and "posterior.nc" in err and "Traceback" not in err

    _rerun(run, capsys)
    _same_data(post, layout.experiment_dir(finished, NAME) / "posterior.nc")
    (aside,) = exp.glob("posterior.nc.damaged-*")
    assert aside.stat().st_size == size // 2  # kept for inspection, and not listed as an output
    assert aside.name not in json.loads(layout.done_marker(exp).read_text())["outputs"]
    code, line, _ = _status(run, capsys)
    assert code == EXIT_COMPLETE and line == f"{NAME}: done, 4/4 cycles"


@pytest.mark.parametrize("name, damage, expected", [
    ("decision.json", "grow", "decision.json is {now} bytes, {then} when the run finished: truncated or changed"),
    ("forecast.nc", "empty", "forecast.nc is empty, {then} bytes when the run finished"),
    ("diagnostics.nc", "missing", "finished earlier, but diagnostics.nc is missing: run the campaign again"),
    # written by the first step (the export of observations.h5) and the last (the free run), not by the cycles
    ("observations.nc", "half", "observations.nc is {now} bytes, {then} when the run finished: truncated or changed"),
    ("free_run.nc", "empty", "free_run.nc is empty, {then} bytes when the run finished"),
])
def test_changed_empty_or_missing_output_is_damaged_and_written_again(finished, tmp_path, capsys, name, damage,
                                                                       expected):
    run, exp = _copy(finished, tmp_path)
    path = exp / name
    then = path.stat().st_size
    if damage == "grow":
        with open(path, "a") as f:
            f.write(" ")
    elif damage == "empty":
        os.truncate(path, 0)
    elif damage == "half":
        os.truncate(path, then // 2)
    else:
        path.unlink()
    now = path.stat().st_size if path.exists() else 0
    code, line, _ = _status(run, capsys)
    assert code == EXIT_ATTENTION and line.startswith(f"{NAME}: damaged,"), line
    assert expected.format(now=now, then=then) in line, line

    _rerun(run, capsys)
    if name.endswith(".nc"):  # the same data; the size may differ (the provenance names the run's own paths)
        _same_data(path, layout.experiment_dir(finished, NAME) / name)
    else:  # the same decision; its provenance is the rerun's (times)
        again, first = (json.loads(p.read_text()) for p in (path, layout.experiment_dir(finished, NAME) / name))
        assert again.pop("provenance")["config_sha256"] == first.pop("provenance")["config_sha256"]
        assert again == first
    assert len(list(exp.glob(f"{name}.damaged-*"))) == (damage != "missing")
    assert _status(run, capsys)[0] == EXIT_COMPLETE


def test_done_json_of_an_older_version_without_sizes(finished, tmp_path, capsys):
    run, exp = _copy(finished, tmp_path)
    marker = layout.done_marker(exp)
    done = json.loads(marker.read_text())
    marker.write_text(json.dumps({"time": done["time"], "outputs": done["outputs"]}))
    code, line, _ = _status(run, capsys)
    assert code == EXIT_COMPLETE and line == f"{NAME}: done, 4/4 cycles"
    _rerun(run, capsys)  # finished: skipped, nothing set aside
    assert not list(exp.glob("*.damaged-*"))
    assert json.loads(marker.read_text()) == {"time": done["time"], "outputs": done["outputs"]}
    # without sizes a changed size goes unseen (as before), an empty output does not
    os.truncate(exp / "posterior.nc", 0)
    code, line, _ = _status(run, capsys)
    assert code == EXIT_ATTENTION and "posterior.nc is empty (run the campaign again" in line, line


def test_removed_free_run_is_written_again(finished, tmp_path, capsys):
    run, exp = _copy(finished, tmp_path)
    (exp / "free_run.nc").unlink()
    assert _status(run, capsys)[0] == EXIT_ATTENTION
    _rerun(run, capsys)
    assert (exp / "free_run.nc").is_file()


def test_the_workflow_driver_writes_damaged_outputs_again(finished, tmp_path, capsys):
    """The Parsl workflow's resume makes the same check: its finalize task writes the outputs again (``--rewrite``)."""
    run, exp = _copy(finished, tmp_path)
    os.truncate(exp / "free_run.nc", 100)
    (exp / "observations.nc").unlink()
    assert _status(run, capsys)[0] == EXIT_ATTENTION
    assert main(["run", str(run / "campaign.yaml"), "-o", str(run), "--workflow"]) == 0
    capsys.readouterr()
    for name in ("free_run.nc", "observations.nc"):
        _same_data(exp / name, layout.experiment_dir(finished, NAME) / name)
    assert [p.name for p in exp.glob("*.damaged-*")] == [next(exp.glob("free_run.nc.damaged-*")).name]
    assert _status(run, capsys)[0] == EXIT_COMPLETE
