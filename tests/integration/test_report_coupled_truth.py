"""The report of a coupled twin experiment reads its truth per variable: ``observations.h5`` holds the whole
concatenated state (atmosphere h, u, v then mast u_x, u_y, v_x, v_y, each component in its natural order), while
``posterior.nc`` holds each component's fields on its own coordinates; the rank histogram, the truth panels and the
truth lines of the fans must use the truth of each variable in that same layout (they were skipped: "the truth in
observations.h5 does not match the posterior's shape")."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from campaign_case import structure_campaign

pytestmark = pytest.mark.timeout(180)

MEMBERS, CYCLES = 6, 3


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A reduced structure campaign (coupled atmosphere -> mast) run online on one rank, then its report."""
    from twin.cli import main

    tmp = tmp_path_factory.mktemp("coupled_truth")
    path, _ = structure_campaign(tmp, members=MEMBERS, cycles=CYCLES, placements=10)
    assert main(["run", str(path)]) == 0
    assert main(["report", str(tmp / "run")]) == 0
    (exp,) = [p for p in (tmp / "run" / "experiments").iterdir() if p.is_dir()]
    return tmp / "run", exp


def test_rank_histogram_of_a_coupled_twin_is_drawn(experiment):
    run_dir, exp = experiment
    page = (run_dir / "report" / "index.html").read_text()
    assert "does not match the posterior's shape" not in page
    assert "Rank histogram (truth among the analysis members)" in page
    assert (run_dir / "report" / exp.name / "rank_histogram.png").stat().st_size > 0


def test_truth_of_each_component_variable_is_its_slice_of_the_whole_state(experiment):
    from twin.io.checkpoint import CheckpointReader
    from twin.report.data import load_run
    from twin.report.figures import rank_counts

    _, exp = experiment
    data = load_run(exp)
    assert "truth" not in data.missing
    with CheckpointReader(exp / "observations.h5") as r:
        whole, times = r.read_array("truth"), r.read_array("times")
    post = data.posterior
    np.testing.assert_allclose(times, post["time"].values)  # one truth row per posterior time (seconds)
    n_atmosphere = 3 * post["atmosphere_h"][0, 0].size  # h, u, v on 16 x 16 cells, point-major, dof fastest
    assert whole.shape[1] == n_atmosphere + 4 * post["mast_u_x"][0, 0].size
    mast = whole[:, n_atmosphere:]
    for c, name in enumerate(("mast_u_x", "mast_u_y", "mast_v_x", "mast_v_y")):
        np.testing.assert_array_equal(data.truth_of(name), mast[:, c::4].reshape((len(times),) + post[name].shape[2:]))
    np.testing.assert_array_equal(data.truth_of("atmosphere_v"), whole[:, 2:n_atmosphere:3].reshape(
        (len(times),) + post["atmosphere_v"].shape[2:]))
    # the RMSE of the posterior mean against the per-variable truths is the campaign's own (whole-state) RMSE of
    # each analysis: the truths pair up with the posterior's entries
    se = sum(((post[v].values.mean(axis=0) - data.truth_of(v)) ** 2).reshape(len(times), -1).sum(axis=1)
             for v in data.state_variables())
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as diag:
        np.testing.assert_allclose(np.sqrt(se / whole.shape[1])[1:], diag["rmse"].values, rtol=1e-9)
    # the rank histogram: one count per mast node and cycle after the prior, over MEMBERS + 1 ranks
    counts = rank_counts(data, "mast_u_x")
    assert counts.size == MEMBERS + 1 and counts.sum() == CYCLES * post["mast_u_x"][0, 0].size
    # the truth lines of the fans: the domain mean of the true mast displacement, which the wind pushes downwind
    assert np.all(data.truth_of("mast_u_x")[1:].mean(axis=(1, 2)) > 0)
