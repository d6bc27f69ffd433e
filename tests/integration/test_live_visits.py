"""A live tumour twin: a patient's imaging visits arrive one at a time (``twin assimilate RUN_DIR visits.csv``), each a
visit table naming its NIfTI images (:mod:`twin.kinds.tumour.visits`). A small tumour ETKF twin experiment (12 x 12
cells, visits on days 2, 4 and 6 of a campaign starting on 2026-03-01) has its visits exported as NIfTI
(:func:`twin.kinds.tumour.export.export_visits`); a campaign run on the first visit and given the second and third as
they arrive ends bitwise where one campaign over the three visits ends. Each delivered table is kept with the images
it names (``deliveries/<sha256[:16]>-<stem>/``), and its checksum covers them: the same table again changes nothing,
while an image changed under the same table is a new delivery (here refused: its visit was analysed already).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from live_case import ok as _ok
from live_case import twin as _twin
from tumour_case import START, tumour_campaign

pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[2]
ROI = [[8.0, 16.0], [8.0, 16.0]]




def _visits(table: str) -> list:
    return [{"type": "imaging_visits", "file": table, "error_std": 0.02, "value_range": [-0.5, 1.5]}]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from twin.kinds.tumour.export import export_visits

    d = tmp_path_factory.mktemp("livevisits")
    twin_campaign = tumour_campaign([{"type": "imaging", "error_std": 0.02, "roi": ROI}], cycles=3)
    (d / "twin.yaml").write_text(yaml.safe_dump(twin_campaign, sort_keys=False))
    _ok(d, "run", "twin.yaml", "-o", "synthetic", "--quiet")
    table = export_visits(d / "synthetic" / "experiments" / "oncology", d / "visits", START)
    header, *rows = table.read_text().splitlines()
    assert len(rows) == 3 and header == "date,image,mask"   # the twin images a region: its mask comes along
    for k, row in enumerate(rows, start=1):
        (d / "visits" / f"visit{k}.csv").write_text(f"{header}\n{row}\n")
    (d / "all.yaml").write_text(yaml.safe_dump(tumour_campaign(_visits("visits/visits.csv"), cycles=3), sort_keys=False))
    (d / "live.yaml").write_text(yaml.safe_dump(tumour_campaign(_visits("visits/visit1.csv"), cycles=1), sort_keys=False))
    _ok(d, "run", "all.yaml", "-o", "all", "--quiet")
    _ok(d, "run", "live.yaml", "-o", "live", "--quiet")
    runs = [_ok(d, "assimilate", "live", str(d / "visits" / f"visit{k}.csv"), "--quiet") for k in (2, 3)]
    return {"dir": d, "runs": runs}


def test_visits_delivered_one_at_a_time_give_the_campaign_over_all_of_them(live):
    d = live["dir"]
    exp, ref = d / "live" / "experiments" / "oncology", d / "all" / "experiments" / "oncology"
    assert "oncology 2 cycles" in live["runs"][0].stdout and "oncology 3 cycles" in live["runs"][1].stdout
    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(ref / "posterior.nc", decode_times=False) as b:
        assert a["N"].shape == (8, 4, 12, 12) and np.array_equal(a["N"].values, b["N"].values)   # bitwise
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as a, \
            xr.open_dataset(ref / "diagnostics.nc", decode_times=False) as b:
        for v in ("parameter_k", "parameter_D_white", "chi2_per_dof", "n_obs"):
            assert np.array_equal(a[v].values, b[v].values), v
    # each table kept with the images it names, at the same places relative to it
    record = json.loads((d / "live" / "deliveries.json").read_text())["deliveries"]
    assert [r["name"] for r in record] == ["visit2.csv", "visit3.csv"]
    for k, r in zip((2, 3), record):
        kept = (d / "live" / r["stored"]).parent
        assert sorted(p.name for p in kept.iterdir()) == sorted([f"visit{k}.csv", f"visit{k}.nii.gz",
                                                                 "observed.nii.gz"])
        assert (kept / f"visit{k}.nii.gz").read_bytes() == (d / "visits" / f"visit{k}.nii.gz").read_bytes()


def test_the_same_table_twice_changes_nothing_and_a_changed_image_is_a_new_delivery(live):
    import shutil

    from twin.campaign.deliveries import delivery_sha256
    from twin.kinds.tumour.visits import companions

    d = live["dir"]
    out = _twin(d, "assimilate", "live", str(d / "visits" / "visit3.csv"))
    assert out.returncode == 0 and "already assimilated" in out.stdout, out.stdout + out.stderr
    # the same table naming a changed image: another delivery (its checksum covers the image), refused because its
    # visit, day 6, has been analysed
    other = d / "other"
    shutil.copytree(d / "visits", other)
    image = other / "visit3.nii.gz"
    before = delivery_sha256(other / "visit3.csv", companions(other / "visit3.csv"))
    import nibabel as nib

    img = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 0.5, img.affine), image)
    assert delivery_sha256(other / "visit3.csv", companions(other / "visit3.csv")) != before
    out = _twin(d, "assimilate", "live", str(other / "visit3.csv"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "at or before the last analysis time" in lines[0], out.stderr


def test_a_table_naming_an_image_outside_its_directory_is_refused(live, tmp_path):
    from twin.core.errors import ObservationError
    from twin.kinds.tumour.visits import companions

    d = live["dir"]
    (tmp_path / "t.csv").write_text(f"date,image\n2026-03-09,{d / 'visits' / 'visit1.nii.gz'}\n")
    with pytest.raises(ObservationError, match="outside the visit table's directory"):
        companions(tmp_path / "t.csv")


def test_two_tables_of_one_visit_date_delivered_together_are_refused(live):
    """Found by a probe: both were said assimilated (exit 0) and one scan was dropped as duplicate observations,
    where the same two delivered one after the other are refused."""
    import shutil

    import nibabel as nib

    d = live["dir"]
    _ok(d, "run", "live.yaml", "-o", "together", "--quiet")
    other = d / "reread"
    shutil.copytree(d / "visits", other)
    img = nib.load(other / "visit2.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 0.9, img.affine), other / "visit2.nii.gz")
    before = sorted(p.relative_to(d / "together") for p in (d / "together").rglob("*"))
    out = _twin(d, "assimilate", "together", str(d / "visits" / "visit2.csv"), str(other / "visit2.csv"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith(f"error: observation files {d / 'visits' / 'visit2.csv'} and {other / 'visit2.csv'} "
                               "both observe 'cellularity' at time "), lines
    assert "twin would keep one and drop the other" in lines[0]
    assert sorted(p.relative_to(d / "together") for p in (d / "together").rglob("*")) == before
    # --network after RUN_DIR is read as an option (argparse called the file an unrecognised argument)
    out = _twin(d, "assimilate", "together", "--network", "nope", str(d / "visits" / "visit2.csv"))
    assert out.returncode == 2 and "has no file network named 'nope'; it has imaging_visits" in out.stderr, out.stderr
