"""Online mode on 2 ranks gives the analysis of online mode on 1 rank, bit for bit, whatever the member layout
(workflow mode equals online mode on 1 rank: tests/integration/test_campaign_local.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from campaign_case import arrays, assert_same, write_campaign  # noqa: E402
from twin.campaign import layout  # noqa: E402
from twin.config.experiments import ExperimentsConfig  # noqa: E402
from twin.config.loader import load_campaign  # noqa: E402


@pytest.fixture
def shared_dir(tmp_path_factory):
    comm = MPI.COMM_WORLD
    path = str(tmp_path_factory.mktemp("campaign")) if comm.Get_rank() == 0 else None
    return Path(comm.bcast(path, root=0))


@pytest.mark.parametrize("ranks_per_member", [2, 1])
def test_online_two_ranks_equals_one_rank(shared_dir, ranks_per_member):
    from twin.campaign.online import run_online

    comm = MPI.COMM_WORLD
    text_path = shared_dir / f"c{ranks_per_member}.yaml"
    if comm.Get_rank() == 0:
        write_campaign(text_path, cycles=2)
        # with a decision: its posterior prediction (decision.json, prediction.nc) runs on both ranks too, and
        # every collective step of it must be taken by every rank
        text_path.write_text(text_path.read_text().replace("ranks_per_member: 2",
                                                           f"ranks_per_member: {ranks_per_member}")
                             + "decision: {qois: [energy], horizon: 0.2, exceedance_limits: {energy: 20.0}}\n")
    comm.Barrier()
    loaded = load_campaign(text_path)
    policy = ExperimentsConfig()
    two = shared_dir / f"two{ranks_per_member}"
    run_online(loaded, comm, two, experiments=policy)  # members on groups of ranks_per_member ranks
    ok, message = True, ""
    if comm.Get_rank() == 0:
        one = shared_dir / f"one{ranks_per_member}"
        run_online(loaded, MPI.COMM_SELF, one, experiments=policy)
        try:
            assert_same(arrays(layout.experiment_dir(two, "l96camp")), arrays(layout.experiment_dir(one, "l96camp")))
            import xarray as xr

            with xr.open_dataset(layout.experiment_dir(two, "l96camp") / "prediction.nc", decode_times=False) as a, \
                    xr.open_dataset(layout.experiment_dir(one, "l96camp") / "prediction.nc", decode_times=False) as b:
                assert a["energy"].shape == b["energy"].shape and float(abs(a["energy"] - b["energy"]).max()) < 1e-12
        except AssertionError as exc:
            ok, message = False, str(exc)
        records = [r for r in layout.read_task_log(layout.experiment_dir(two, "l96camp")) if r["task"] == "forecast"]
        if {r["ranks"] for r in records} != {ranks_per_member}:
            ok, message = False, f"members ran on {sorted({r['ranks'] for r in records})} ranks"
    ok, message = comm.bcast((ok, message), root=0)
    assert ok, message
