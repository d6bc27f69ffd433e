"""A real patient's imaging visits from files (``type: imaging_visits``, :mod:`twin.kinds.tumour.visits`).

A small tumour twin experiment (12 x 12 cells of 2 mm, ETKF with 8 members, visits on days 2, 4 and 6 of a campaign
that starts on 2026-03-01) images a synthetic patient; its synthetic cellularity visits are written as NIfTI files
(nibabel, 2 mm voxels centred on the model's cells, the region the twin images as the mask) with a visit table, and the
same campaign is run again through ``twin run`` from those files:

* the observations it reads equal the twin experiment's synthetic visits **bitwise**, and so do the ETKF's analyses
  (posterior cell densities, parameter estimates): the voxels sit on the cell centres, so the affine maps every cell
  centre to an integer voxel index exactly (powers of two and halves) and the trilinear sampling returns the voxel's
  float64 value with weight 1 (its neighbours get weight 0); the operator of the visits is the synthetic imaging
  network's rows on those cells (``1/theta`` on the cell), and the analysis times are the visit days;
* ES-MDA (with the oncology decision and ``twin report``) and 4D-Var run from the same visits without a truth: each
  visit at its own model step, ``patient.nc`` without true fields, no truth in the decision;
* bad inputs each stop the run with one line naming the visit table, the visit and the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from tumour_case import tumour_campaign

nib = pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

DATES = ["2026-03-03", "2026-03-05", "2026-03-07"]             # days 2, 4, 6
#: 2 mm voxels whose centres are the model's cell centres (1, 3, .., 23 mm); z = 0 is the 2-D model's plane
AFFINE = np.array([[2.0, 0, 0, 1.0], [0, 2.0, 0, 1.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
ROI = [[8.0, 16.0], [8.0, 16.0]]                                  # what the twin images: 4 x 4 cells near the lesion




def _run(cwd: Path, *args: str, ok: bool = True):
    out = subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    if ok:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _read(path: Path, *names):
    from mpi4py import MPI

    from twin.io.checkpoint import CheckpointReader

    with CheckpointReader(path, MPI.COMM_SELF) as r:
        return [r.read_array(n) for n in names] if names else r.array_names


def _image(values_yx: np.ndarray) -> np.ndarray:
    """A (y, x) array of the model grid -> the NIfTI voxel array (i along x, j along y, one slice)."""
    return np.ascontiguousarray(np.asarray(values_yx, dtype=np.float64).T[..., None])


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """The twin experiment and its visits as NIfTI files: ``(directory, twin experiment directory)``."""
    d = tmp_path_factory.mktemp("visits")
    twin_obs = [{"type": "imaging", "error_std": 0.02, "roi": ROI}]
    (d / "synthetic.yaml").write_text(yaml.safe_dump(tumour_campaign(twin_obs), sort_keys=False))
    _run(d, "run", "synthetic.yaml", "-o", "synthetic", "--quiet")
    exp = d / "synthetic" / "experiments" / "oncology"
    y, truth, loc = _read(exp / "observations.h5", "observations", "truth", "locations")
    ix, iy = ((loc[:, 0] - 1) / 2).astype(int), ((loc[:, 1] - 1) / 2).astype(int)
    assert y.shape == (3, 16) and 0 < y.min() and y.max() < 1   # noisy cellularity, inside [0, 1] here
    mask = np.zeros((12, 12, 1), np.uint8)
    mask[ix, iy, 0] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), d / "lesion.nii.gz")
    rows = ["date,image,mask"]
    for k, date in enumerate(DATES):
        # outside the mask: the true cellularity (not observed); inside: the twin's noisy visit
        img = _image(np.clip(truth[k + 1] / 1.0e5, 0.0, 1.0).reshape(12, 12))
        img[ix, iy, 0] = y[k]
        nib.save(nib.Nifti1Image(img, AFFINE), d / f"visit{k + 1}.nii.gz")
        rows.append(f"{date},visit{k + 1}.nii.gz,lesion.nii.gz")
    (d / "visits.csv").write_text("\n".join(rows) + "\n")
    return d, exp


VISITS = [{"type": "imaging_visits", "file": "visits.csv", "error_std": 0.02}]


def test_visits_from_nifti_give_the_twin_experiments_observations_and_analyses_bitwise(patient):
    d, twin = patient
    (d / "measured.yaml").write_text(yaml.safe_dump(tumour_campaign(VISITS), sort_keys=False))
    _run(d, "run", "measured.yaml", "-o", "measured", "--quiet")
    exp = d / "measured" / "experiments" / "oncology"
    assert "truth" not in _read(exp / "observations.h5")
    y_twin, loc_twin = _read(twin / "observations.h5", "observations", "locations")
    y, err, loc = _read(exp / "observations.h5", "observations", "errors", "locations")
    assert np.array_equal(y, y_twin) and np.array_equal(loc, loc_twin) and np.all(err == 0.02)
    with xr.open_dataset(twin / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(exp / "posterior.nc", decode_times=False) as b:
        assert a["N"].shape == (8, 4, 12, 12) and np.array_equal(a["N"].values, b["N"].values)
    with xr.open_dataset(twin / "diagnostics.nc", decode_times=False) as a, \
            xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as b:
        for v in ("parameter_k", "parameter_D_white", "spread_a"):
            assert np.array_equal(a[v].values, b[v].values, equal_nan=True), v
        assert "chi2_per_dof" in b and np.all(b["n_obs"].values == 16)   # observation-space diagnostics
    status = _run(d, "status", "measured").stdout
    assert "48 used" in status


def test_esmda_and_4dvar_from_visits_have_no_truth_and_decide_on_the_posterior(patient):
    d, _ = patient
    cfg = tumour_campaign(VISITS, "esmda")
    cfg["decision"] = {"qois": ["burden"], "horizon": 60, "risk": {"measure": "cvar", "level": 0.9},
                       "oncology": {"dose": {"min": 1.8, "max": 4.0}, "fraction_options": [15, 30],
                                    "max_bed_normal": 100.0, "standard": {"fractions": 30, "dose": 2.0}}}
    (d / "esmda.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _run(d, "run", "esmda.yaml", "-o", "esmda", "--quiet")
    exp = d / "esmda" / "experiments" / "oncology"
    steps, times = _read(exp / "observations.h5", "steps", "obs_times")
    assert np.array_equal(np.unique(steps), [2, 4, 6]) and np.array_equal(np.unique(times), [2.0, 4.0, 6.0])
    with xr.open_dataset(exp / "patient.nc") as p:
        assert "true_cellularity" not in p and "k_true" not in p and "k_mean" in p
        # the observed cellularity of the visits, on the cells of the mask
        assert np.isfinite(p["observed_cellularity"].values).sum() == 3 * 16
    decision = json.loads((exp / "decision.json").read_text())
    assert "truth" not in decision and decision["calibration"]["D_white"]["truth"] is None
    assert "chosen" in decision
    _run(d, "report", "esmda")
    html = (d / "esmda" / "report" / "index.html").read_text()
    assert "no true patient to compare with" in html

    (d / "fourdvar.yaml").write_text(yaml.safe_dump(tumour_campaign(VISITS, "4dvar"), sort_keys=False))
    _run(d, "run", "fourdvar.yaml", "-o", "fourdvar", "--quiet")
    exp = d / "fourdvar" / "experiments" / "oncology"
    steps, windows = _read(exp / "observations.h5", "steps", "windows")
    assert np.array_equal(np.unique(steps), [2, 4, 6]) and np.all(windows == 0)
    assert (exp / "done.json").is_file()


def _refusal(d: Path, rows: list[str], **files) -> str:
    """The one-line error of building the network of a visit table (in process: the message ``twin run`` prints)."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config import load_campaign
    from twin.core.errors import ObservationError

    for name, data in files.items():
        nib.save(nib.Nifti1Image(data, AFFINE), d / name)
    (d / "bad.csv").write_text("\n".join(["date,image,mask", *rows]) + "\n")
    (d / "bad.yaml").write_text(yaml.safe_dump(tumour_campaign([{**VISITS[0], "file": "bad.csv"}]), sort_keys=False))
    cfg = load_campaign(d / "bad.yaml").config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        with pytest.raises(ObservationError) as err:
            ctx.observations(cfg, model)
    finally:
        model.destroy()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("assimilation.observations[0] (imaging_visits): ")
    assert "bad.csv line " in msg
    return msg


def test_bad_visits_are_refused_in_one_line(patient):
    d, _ = patient
    ok = _image(np.full((12, 12), 0.3))
    msg = _refusal(d, ["2026-03-03,gone.nii.gz,lesion.nii.gz"])
    assert "line 2 (visit 2026-03-03)" in msg and "gone.nii.gz does not exist" in msg
    msg = _refusal(d, ["2026-03-03,ok.nii.gz,", "2026-02-27,ok.nii.gz,"], **{"ok.nii.gz": ok})
    assert "line 3" in msg and "visit 2026-02-27 is not after timeline.start 2026-03-01" in msg
    nan = ok.copy()
    nan[3, 5, 0] = np.nan
    msg = _refusal(d, ["2026-03-03,nan.nii.gz,lesion.nii.gz"], **{"nan.nii.gz": nan})
    assert "nan.nii.gz: 1 voxel(s) are not finite (the first at voxel (3, 5, 0))" in msg
    msg = _refusal(d, ["2026-03-03,ok.nii.gz,small.nii.gz"], **{"ok.nii.gz": ok,
                                                                  "small.nii.gz": np.ones((6, 6, 1), np.uint8)})
    assert "mask" in msg and "small.nii.gz has shape (6, 6, 1), image" in msg and "(12, 12, 1)" in msg
    high = ok.copy()
    high[5, 5, 0] = 1.5
    msg = _refusal(d, ["2026-03-03,high.nii.gz,lesion.nii.gz"], **{"high.nii.gz": high})
    assert "1 value(s) outside [0, 1]" in msg and "the first 1.5 at [11.0, 11.0] mm" in msg


def test_a_broken_visit_is_refused_before_anything_runs(patient):
    """``twin validate`` and ``twin run`` read the visit table and every image's and mask's header before anything
    runs (the network's ``check``): a missing image, a 4-D image of several volumes and a mask on other voxels are
    each refused in one line at the network's key of the campaign file, with exit status 2, and ``twin run`` makes
    no experiment (they stopped the experiment once it started: after a Slurm job's wait in the queue)."""
    from twin.cli import main

    d, _ = patient
    ok = _image(np.full((12, 12), 0.3))
    nib.save(nib.Nifti1Image(ok, AFFINE), d / "ok.nii.gz")
    nib.save(nib.Nifti1Image(np.repeat(ok[..., None], 3, axis=3), AFFINE), d / "series.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 6, 1), np.uint8), AFFINE), d / "small.nii.gz")
    cases = {"gone": ("2026-03-03,nowhere.nii,", "gone.csv line 3 (visit 2026-03-03): image"),
             "series": ("2026-03-05,series.nii.gz,", "a 4-D image of 3 volumes"),
             "small": ("2026-03-07,ok.nii.gz,small.nii.gz", "small.nii.gz has shape (6, 6, 1), image")}
    for name, (row, expect) in cases.items():
        (d / f"{name}.csv").write_text(f"date,image,mask\n2026-03-02,ok.nii.gz,\n{row}\n")
        (d / f"{name}.yaml").write_text(yaml.safe_dump(tumour_campaign([{**VISITS[0], "file": f"{name}.csv"}]),
                                                       sort_keys=False))
        out = _run(d, "validate", f"{name}.yaml", ok=False)
        assert out.returncode == 2, out.stdout + out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith(f"error: {name}.yaml:") and "assimilation.observations[0].file: " in line, line
        assert expect in line and f"{name}.csv line 3" in line, line
    out = _run(d, "run", "gone.yaml", "-o", "gone", "--quiet", ok=False)
    assert out.returncode == 2 and "gone.csv line 3 (visit 2026-03-03): image" in out.stderr, out.stderr[-2000:]
    assert not (d / "gone" / "experiments").exists()
    # the good table of the fixture passes the same check, in process
    (d / "good.yaml").write_text(yaml.safe_dump(tumour_campaign(VISITS), sort_keys=False))
    assert main(["validate", str(d / "good.yaml")]) == 0
