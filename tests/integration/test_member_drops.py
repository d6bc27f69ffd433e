"""Members dropped at several cycles of a campaign with guardrails: the campaign finishes, every output accounts for
the membership changes, and a resume continues with exactly the same guardrail state.

Lorenz-96 (40 variables, RK4 at ``dt = 0.05``, 8 steps per cycle), ETKF with 10 members, forcing ``F`` estimable
under a wide lognormal prior, guardrails (window 4, policy ``exclude``) and ``on_member_failure: drop``. The
divergences are real model failures, not faked ones:

* cycle 0: with ``campaign.seed: 5`` the prior draws ``F = 123`` for member 3 (every other member below 21); RK4
  blows up within the 8 steps of the first cycle and the member is dropped;
* cycles 2 and 4: the run is interrupted there (later checkpoints and forecasts removed, as a crash would leave
  them) and the forcing of one member in the checkpoint it resumes from is set to ``F = 1000`` (rewritten through
  the checkpoint writer, so the file verifies); that member's forecast diverges and it is dropped on resume.

The rank-histogram window then holds histograms of 10, 9 and 8 ranks; before the fix the guardrails raised
``ValueError: inhomogeneous shape`` at the first analysis after a drop, and again on every resume.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from campaign_case import l96_campaign
from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(300)

N, CYCLES, NAME = 10, 6, "drops"
CAMPAIGN = l96_campaign(NAME, seed=5, forcing="{value: 8.0, prior: {dist: lognormal, median: 8.0, sigma: 1.2}, "
                        "estimable: true}", N=N, inflation=1.15, every=8, cycles=CYCLES, extra="""\
    decision:
      qois: [energy]
      horizon: 0.5
      exceedance_limits: {energy: 20.0}
      guardrails: {window: 4, warmup: 1, policy: exclude}
    outputs: {checkpoint_every: 1}  # the divergences are injected into the checkpoints of cycles 2 and 4
    """).replace("end: 1.0,", "end: 2.4,")  # 6 cycles of 8 steps of 0.05
POLICY = ExperimentsConfig(retries=1, on_member_failure="drop", min_members=3)
#: (cycle, member) of the injected divergences
INJECTED = ((2, 6), (4, 8))
NATURAL = 3


def _run(loaded, run):
    from mpi4py import MPI

    from twin.campaign.online import run_online

    run_online(loaded, MPI.COMM_SELF, run, experiments=POLICY)


def _interrupt_at(exp_dir, cycle: int) -> None:
    """Leave the experiment as a crash during cycle ``cycle`` would: checkpoints after it, its forecasts and every
    later file gone."""
    for k in layout.checkpoint_cycles(exp_dir):
        if k > cycle:
            layout.checkpoint_file(exp_dir, k).unlink()
    for k in range(cycle, CYCLES):
        shutil.rmtree(layout.forecast_dir(exp_dir, k), ignore_errors=True)
    for name in (*layout.OUTPUTS, "flags.jsonl", "decision.json", "free_run.nc", "done.json"):
        (exp_dir / name).unlink(missing_ok=True)


def _set_forcing(exp_dir, cycle: int, member: int, value: float) -> None:
    """Rewrite checkpoint ``cycle`` with member ``member``'s forcing set to ``value`` (everything else kept)."""
    from mpi4py import MPI

    from twin.campaign import steps
    from twin.io.checkpoint import CheckpointReader, write_checkpoint

    path = layout.checkpoint_file(exp_dir, cycle)
    s = steps.setup(exp_dir, MPI.COMM_SELF)
    model = s.get_model()
    with CheckpointReader(path) as r:
        states, F = r.read_field("l96"), np.array(r.scalar_parameters["F"])
        alive, meta, prov, t = r.read_array("alive"), r.meta, r.provenance, r.time
    assert alive[member]
    F[member] = value
    vecs = []
    try:
        for x in states:
            v = model.create_state()
            model.grid.set_global(x.ravel(), v)
            vecs.append(v)
        write_checkpoint(path, MPI.COMM_SELF, cycle=cycle, time=t, fields={"l96": (model.grid, vecs)},
                         parameters={"F": F}, arrays={"alive": alive}, meta=meta, provenance=prov, parallel=False)
    finally:
        for v in vecs:
            v.destroy()
        s.destroy()


def _outputs(exp_dir) -> dict[str, bytes]:
    """The bytes of every number the experiment leaves behind (NetCDF data, flags, decision QoIs)."""
    import xarray as xr

    out = {}
    for name in (*layout.OUTPUTS, "free_run.nc"):
        with xr.open_dataset(exp_dir / name, decode_times=False) as ds:
            for var in list(ds.data_vars) + list(ds.coords):
                out[f"{name}:{var}"] = ds[var].values.tobytes()
    out["flags"] = (exp_dir / "flags.jsonl").read_bytes()
    out["qois"] = json.dumps(json.loads((exp_dir / "decision.json").read_text())["qois"], sort_keys=True).encode()
    return out


def test_members_dropped_at_several_cycles_with_guardrails(tmp_path):
    import xarray as xr

    from twin.campaign.status import status
    from twin.io.checkpoint import CheckpointReader

    path = tmp_path / "drops.yaml"
    path.write_text(CAMPAIGN)
    loaded = load_campaign(path)
    run = tmp_path / "run"
    exp = layout.experiment_dir(run, NAME)

    _run(loaded, run)
    with CheckpointReader(layout.checkpoint_file(exp, 0)) as r:
        F0 = np.asarray(r.scalar_parameters["F"])
    assert np.argmax(F0) == NATURAL and 100 < F0[NATURAL] < 150 and np.all(np.delete(F0, NATURAL) < 25)
    assert list(layout.member_files(exp, 0)[1]) == [NATURAL]
    for cycle, member in INJECTED:
        _interrupt_at(exp, cycle)
        _set_forcing(exp, cycle, member, 1000.0)
        _run(loaded, run)
        assert layout.done_marker(exp).is_file(), layout.read_json(layout.error_marker(exp))

    # every drop is recorded where it happened, with the model's reason
    dropped = {k: layout.member_files(exp, k)[1] for k in range(CYCLES)}
    assert {k: sorted(d) for k, d in dropped.items() if d} == {0: [NATURAL], 2: [6], 4: [8]}
    assert all("non-finite" in reason for d in dropped.values() for reason in d.values())
    (e,) = status(run).experiments
    assert e.state == "done" and e.cycles_done == CYCLES and sorted(e.dropped) == [NATURAL, 6, 8]
    with CheckpointReader(layout.checkpoint_file(exp, CYCLES)) as r:
        alive, meta = r.read_array("alive"), r.meta
    assert np.flatnonzero(~alive).tolist() == [NATURAL, 6, 8]
    assert {int(m): d["cycle"] for m, d in meta["dropped"].items()} == {NATURAL: 0, 6: 2, 8: 4}
    # the rank-histogram window spans the drops: histograms of 10, 9 and 8 ranks side by side
    ranks = meta["guardrails"]["ranks"]
    assert [len(h) for h in ranks] == [9, 9, 8, 8]  # cycles 2..5: 8, 8, 7, 7 live members

    # diagnostics: one record per cycle, the live members counted, guardrail statistics finite
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        assert ds["members"].values.tolist() == [9, 9, 8, 8, 7, 7]
        p_rank = ds["rank_histogram_pvalue"].values
        chi = ds["innovation_chi2"].values
    assert p_rank.shape == (CYCLES,) and np.all((p_rank >= 0) & (p_rank <= 1)) and np.all(np.isfinite(chi))
    # posterior.nc: a dropped member is NaN from the analysis after its drop on, finite before
    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as ds:
        x = ds["l96_x"].values
    for member, cycle in ((NATURAL, 0), (6, 2), (8, 4)):
        assert np.all(np.isfinite(x[member, :cycle + 1])) and np.all(np.isnan(x[member, cycle + 1:]))
    assert np.all(np.isfinite(np.delete(x, [NATURAL, 6, 8], axis=0)))
    # the decision forecasts the 7 live members only
    decision = json.loads((exp / "decision.json").read_text())
    assert decision["members"] == N - 3
    q = decision["qois"]["energy"]["quantiles"]
    assert np.isfinite(q["0.5"]) and q["0.05"] <= q["0.5"] <= q["0.95"]
    # the report reads a run with dropped members: parameter samples keep the member axis (NaN once dropped), so
    # the parameter fan is drawn, and no panel fails
    from twin.report.data import load_run
    from twin.report.html import write_report

    data = load_run(exp)
    assert sorted(data.parameters) == list(range(CYCLES + 1))
    assert [data.parameters[k]["F"].size for k in range(CYCLES + 1)] == [N] * (CYCLES + 1)
    assert [int(np.isnan(data.parameters[k]["F"]).sum()) for k in range(CYCLES + 1)] == [0, 1, 1, 2, 2, 3, 3]
    text = write_report(run).read_text()
    assert NAME in text and "could not be drawn" not in text

    # a resume from the cycle after the last drop raises exactly the same flags and outputs
    before = _outputs(exp)
    _interrupt_at(exp, 5)
    _run(loaded, run)
    after = _outputs(exp)
    assert sorted(after) == sorted(before)
    for key in before:
        assert after[key] == before[key], key
