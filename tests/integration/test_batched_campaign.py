"""Online mode forecasts the members of a rank at once through the model's batched forecast
(:meth:`twin.models.base.Model.advance_ensemble`); switched off (the contract's default, ``None``), every member runs
on its own PETSc TS. Both give the same campaign, bit for bit: every number left behind (checkpoints, posterior,
forecast, diagnostics), for an estimated forcing (one F per member), and for a member that diverges (its batched row
is not finite: it runs on its TS, fails there and is dropped with the same words). Workflow mode runs a member task
as a batch of one (tests/integration/test_campaign_local.py, test_warm_workers.py: the online analysis bitwise)."""

from __future__ import annotations

import numpy as np
import pytest
from campaign_case import arrays, assert_same, l96_campaign

from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign
from twin.kinds.lorenz96.model import Lorenz96
from twin.models.base import Model

pytestmark = pytest.mark.timeout(300)

ESTIMATED_F = l96_campaign("l96batch", N=6, cycles=4)
#: tests/integration/test_campaign_failures.py's divergence: member 2 draws F = 244 and blows up in its first cycle
DIVERGING = l96_campaign("l96diverge", seed=8675, forcing="{value: 8.0, prior: {dist: lognormal, median: 8.0, "
                         "sigma: 1.2}, estimable: true}", N=5, inflation=None, every=8, cycles=2)


def _run(tmp_path, text: str, name: str, policy: ExperimentsConfig):
    from mpi4py import MPI

    from twin.campaign.online import run_online

    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    run_online(load_campaign(path), MPI.COMM_SELF, tmp_path / name, experiments=policy)
    return tmp_path / name


def _both(tmp_path, monkeypatch, text: str, policy: ExperimentsConfig):
    """The campaign online with the batched forecast, then with every member on its TS; their experiment dirs."""
    batched = _run(tmp_path, text, "batched", policy)
    with monkeypatch.context() as m:
        m.setattr(Lorenz96, "advance_ensemble", Model.advance_ensemble)
        per_member = _run(tmp_path, text, "per_member", policy)
    return batched, per_member


def _forecast_records(exp_dir) -> list[dict]:
    return [r for r in layout.read_task_log(exp_dir) if r["task"] == "forecast" and r["outcome"] == "done"]


def test_batched_and_per_member_forecasts_give_the_same_campaign(tmp_path, monkeypatch):
    batched, per_member = _both(tmp_path, monkeypatch, ESTIMATED_F, ExperimentsConfig())
    a = arrays(layout.experiment_dir(batched, "l96batch"))
    b = arrays(layout.experiment_dir(per_member, "l96batch"))
    assert_same(a, b)
    # the paths really differed: one task-log line per cycle for the batch, one per member on the TS
    assert [r["members"] for r in _forecast_records(layout.experiment_dir(batched, "l96batch"))] == [list(range(6))] * 4
    assert sorted((r["cycle"], r["member"]) for r in _forecast_records(layout.experiment_dir(per_member, "l96batch"))) \
        == [(k, m) for k in range(4) for m in range(6)]
    # and the forcing was estimated member by member (one F each, moved by the analyses)
    F = a["cycle4:F"]
    assert F.shape == (6,) and np.unique(F).size == 6 and not np.array_equal(F, a["cycle0:F"])


def test_a_diverging_member_is_dropped_the_same_way(tmp_path, monkeypatch):
    policy = ExperimentsConfig(retries=1, on_member_failure="drop")
    batched, per_member = _both(tmp_path, monkeypatch, DIVERGING, policy)
    a, b = layout.experiment_dir(batched, "l96diverge"), layout.experiment_dir(per_member, "l96diverge")
    assert_same(arrays(a), arrays(b))
    (_, failed_a), (_, failed_b) = layout.member_files(a, 0), layout.member_files(b, 0)
    assert list(failed_a) == [2] and failed_a == failed_b and "non-finite" in failed_a[2]
    # cycle 0: the four that stayed finite in one batch line, member 2 on its TS (failed twice: no done line)
    first = [r for r in _forecast_records(a) if r["cycle"] == 0]
    assert [r.get("members") for r in first] == [[0, 1, 3, 4]]
