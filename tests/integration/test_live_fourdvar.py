"""A live 4D-Var twin (``twin assimilate`` on a cycled 4D-Var campaign fed by files): the Lorenz-96 4D-Var twin
experiment's observations (``observations.nc``, every 0.1 for 6 windows of 0.2) cut into three files of two windows
each; a campaign run on the first and given the second and third as they arrive ends bitwise where one campaign over
all of them ends (each window reads only its checkpoint and its observations, so the windows already analysed are
kept and the new ones run from the last checkpoint). An observation whose nearest model step is at or before the end
of the last window is refused in one line (4D-Var would use it in a window already analysed), and ES-MDA runs are
refused with the reason (a new calibration, not more cycles).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from live_case import NETWORK, deliver_in_three
from live_case import station_file as _write
from live_case import twin as _twin
from live_case import values as _values

ROOT = Path(__file__).resolve().parents[2]
EXP = "lorenz96_4dvar"
WINDOWS = 6


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    text = (ROOT / "configs" / "lorenz96_4dvar.yaml").read_text()
    assert NETWORK in text and "cycles: 8" in text and "samples: 20" in text
    text = text.replace("cycles: 8", f"cycles: {WINDOWS}").replace("rank: 10, oversampling: 5, samples: 20",
                                                                   "rank: 4, oversampling: 2, samples: 4")
    out = deliver_in_three(tmp_path_factory.mktemp("live4dvar"), text, EXP, f"cycles: {WINDOWS}", "cycles: 2")
    obs = out["obs"]
    assert obs["y"].shape == (40, 2 * WINDOWS) and np.allclose(obs["t"], 0.1 * np.arange(1, 2 * WINDOWS + 1))
    return out


def test_three_deliveries_give_the_4dvar_campaign_over_all_observations(live):
    d = live["dir"]
    exp, ref = d / "live" / "experiments" / EXP, d / "all" / "experiments" / EXP
    assert f"{EXP} 4 cycles" in live["runs"][0].stdout and f"{EXP} 6 cycles" in live["runs"][1].stdout
    post = _values(exp / "posterior.nc", "l96_x")
    assert post.shape[1] == WINDOWS
    assert np.array_equal(post, _values(ref / "posterior.nc", "l96_x"))  # bitwise
    for name in ("cost", "cost_initial", "iterations", "n_obs", "chi2_per_dof", "parameter_F"):
        assert np.array_equal(_values(exp / "diagnostics.nc", name), _values(ref / "diagnostics.nc", name)), name
    assert np.all(_values(exp / "diagnostics.nc", "n_obs") == 80)  # two observation times of 40 per window
    from twin.io.checkpoint import CheckpointReader

    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in live["parts"]]
    with CheckpointReader(exp / "observations.h5") as r:
        files = r.meta["files"]
        assert np.array_equal(np.bincount(r.read_array("windows")), [80] * WINDOWS)
    assert [f["sha256"] for f in files] == shas and [f["qc"]["accepted"] for f in files] == [160] * 3
    status = _twin(d, "status", "live")
    assert status.returncode == 0 and "6/6" in status.stdout, status.stdout + status.stderr


def test_the_same_file_twice_changes_nothing(live):
    d = live["dir"]
    out = _twin(d, "assimilate", "live", str(live["parts"][2]))
    assert out.returncode == 0 and "already assimilated" in out.stdout and "nothing to do" in out.stdout, out.stdout


def test_an_observation_used_at_a_step_already_analysed_is_refused(live):
    d = live["dir"]
    # the last window ends at 1.2; an observation at 1.22 is used at its nearest step, 1.2 (dt 0.05): refused whole
    early = _write(d / "early.nc", live["obs"], [10, 11], times=[1.22, 1.4])
    before = sorted((p, p.stat().st_mtime_ns) for p in (d / "live").rglob("*") if p.is_file())
    out = _twin(d, "assimilate", "live", str(early))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "time 1.22" in lines[0] and "last analysis time 1.2" in lines[0] and "nearest model step" in lines[0]
    assert sorted((p, p.stat().st_mtime_ns) for p in (d / "live").rglob("*") if p.is_file()) == before


def test_esmda_is_refused_with_the_reason(tmp_path):
    from twin.campaign.live import file_network
    from twin.config.loader import load_campaign
    from twin.core.errors import ConfigError

    (tmp_path / "obs.csv").write_text("time,x,variable,value,error\n0.1,1.0,x,0.5,1.0\n")
    text = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
    network = "observations: [{type: file, file: obs.csv, variables: {x: {name: x, units: '1'}}, units: m}]"
    text = text.replace("observations: [{type: all_points, component: 0, error_std: 1.0}]", network)
    text = text.replace("method: etkf", "method: esmda")
    (tmp_path / "c.yaml").write_text(text)
    cfg = load_campaign(tmp_path / "c.yaml").config
    with pytest.raises(ConfigError, match="ES-MDA, which calibrates one window from the prior.*deliveries"):
        file_network(cfg, tmp_path)
