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


def test_two_ranks_checkpoint_when_rank_0s_clock_says(shared_dir):
    """``outputs.checkpoint_seconds`` on 2 ranks: rank 0's clock decides for both (a checkpoint is collective; each
    rank timing itself would deadlock or tear the file). 20 cycles checkpointed every 0.005 s: the run finishes,
    checkpoints fall where rank 0 said, each holding the cycles since the one before, and the outputs equal a 1-rank
    run checkpointed every cycle bitwise."""
    from twin.campaign.online import run_online

    comm = MPI.COMM_WORLD
    text_path = shared_dir / "clock.yaml"
    if comm.Get_rank() == 0:
        write_campaign(text_path, cycles=20)
        text = text_path.read_text().replace("end: 1.0", "end: 2.0")
        text_path.write_text(text.replace("outputs: {checkpoint_every: 1}", "outputs: {checkpoint_seconds: 0.005}"))
    comm.Barrier()
    loaded = load_campaign(text_path)
    two = shared_dir / "clock2"
    run_online(loaded, comm, two, experiments=ExperimentsConfig())
    ok, message = True, ""
    if comm.Get_rank() == 0:
        every = shared_dir / "every.yaml"
        every.write_text(text_path.read_text().replace("outputs: {checkpoint_seconds: 0.005}",
                                                       "outputs: {checkpoint_every: 1}"))
        one = shared_dir / "clock1"
        run_online(load_campaign(every), MPI.COMM_SELF, one, experiments=ExperimentsConfig())
        exp2, exp1 = layout.experiment_dir(two, "l96camp"), layout.experiment_dir(one, "l96camp")
        try:
            written = layout.checkpoint_cycles(exp2)
            assert written[0] == 0 and written[-1] == 20 and len(written) > 2, written
            assert layout.checkpoint_cycles(exp1) == list(range(21))
            outputs = {k: v for k, v in arrays(exp1).items() if not k.startswith("cycle")}
            assert_same({k: v for k, v in arrays(exp2).items() if not k.startswith("cycle")}, outputs)
        except AssertionError as exc:
            ok, message = False, str(exc)
    ok, message = comm.bcast((ok, message), root=0)
    assert ok, message
