"""Campaigns with ``method: 4dvar`` (cycled windows) and ``method: esmda`` (calibration over one window), online."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from twin.campaign import layout
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(120)

MODEL = """\
schema_version: 1
campaign: {name: NAME, seed: 1}
models:
  l96:
    type: lorenz96
    n: 40
    dt: 0.05
    forcing: {value: 8.0, prior: {dist: normal, mean: 7.0, std: 1.0}, estimable: true}
    initial_condition: random
    perturbation: 1.0
timeline: {start: 0.0, end: 1.0, units: s}
resources: {type: local, ranks: 1, workers: 1}
"""

FOURDVAR = MODEL.replace("NAME", "var") + textwrap.dedent("""\
    assimilation:
      method: 4dvar
      model: l96
      obs_interval: 0.1
      window: 2
      cycles: 4
      seed: 3
      background_covariance: {kind: diagonal, std: 1.0}
      parameters: [{name: F, std: 1.0}]
      observations: [{type: all_points, component: 0, error_std: 1.0}]
      tao: {gatol: 1.0e-4, max_iterations: 60, on_failure: warn}
    """)

ESMDA = MODEL.replace("NAME", "smoother") + textwrap.dedent("""\
    assimilation:
      method: esmda
      N: 20
      seed: 2
      esmda_alphas: [4.0, 4.0, 4.0, 4.0]
      schedule: {every: 2, cycles: 5}
      observations: [{type: all_points, component: 0, error_std: 0.1}]
    """)


def _run(tmp_path, text):
    from mpi4py import MPI

    from twin.campaign.online import run_online

    f = tmp_path / "c.yaml"
    f.write_text(text)
    (d,) = run_online(load_campaign(f), MPI.COMM_WORLD, tmp_path / "run")
    return d


def _diagnostics(exp_dir) -> dict[str, np.ndarray]:
    import xarray as xr

    with xr.open_dataset(exp_dir / "diagnostics.nc", decode_times=False) as ds:
        return {k: ds[k].values for k in ds.data_vars}


def _free_run_rmse(exp_dir) -> np.ndarray:
    """RMSE of the background run forward with the prior forcing and no assimilation, at the window ends."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.campaign.checkpoints import reader

    cfg = load_campaign(layout.config_file(exp_dir)).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        with reader(layout.checkpoint_file(exp_dir, 0), MPI.COMM_SELF) as r:
            x0 = r.read_field("initial").ravel()
            F = float(np.asarray(r.scalar_parameters["F"]))
        with reader(layout.observations_file(exp_dir), MPI.COMM_SELF) as r:
            truth, times = r.read_array("truth"), r.read_array("times")
        model.set_parameter("F", F)
        x = model.create_state()
        model.grid.set_global(x0, x)
        out = []
        for j in range(1, times.size):
            model.advance(x, times[j - 1], times[j])
            if j % 2 == 0:
                out.append(np.sqrt(np.mean((model.grid.allgather(x).ravel() - truth[j]) ** 2)))
        x.destroy()
        return np.array(out)
    finally:
        model.destroy()


def test_fourdvar_campaign_beats_free_run_and_resumes_exactly(tmp_path):
    d = _run(tmp_path, FOURDVAR)
    diag = _diagnostics(d)
    assert diag["cost"].size == 4
    assert np.all(diag["cost"] < diag["cost_initial"])
    assert np.all(np.isfinite(diag["gradient_norm"]))
    free = _free_run_rmse(d)
    # the analysis at every window end is better than the free run, and better than the background forecast
    assert np.all(diag["rmse"] < 0.6 * free), (diag["rmse"], free)
    assert np.all(diag["rmse"] < diag["rmse_forecast"])
    assert abs(diag["parameter_F"][-1] - 8.0) < abs(7.0 - 8.0)
    for name in layout.OUTPUTS:
        assert (d / name).is_file()
    # resume: delete the last window's checkpoint; the rerun computes it again, bitwise identical
    layout.checkpoint_file(d, 4).unlink()
    d2 = _run(tmp_path, FOURDVAR)
    again = _diagnostics(d2)
    assert sorted(again) == sorted(diag)
    for k in diag:
        assert again[k].tobytes() == diag[k].tobytes(), k


def test_esmda_campaign_estimates_forcing(tmp_path):
    d = _run(tmp_path, ESMDA)
    diag = _diagnostics(d)
    F, spread = diag["parameter_F"], diag["parameter_spread_F"]
    assert F.size == 5  # four updates and the posterior
    assert abs(F[-1] - 8.0) < 0.1, F
    assert np.all(np.diff(spread[:4]) < 0), spread
    assert spread[-1] < 0.2                     # prior std 1.0
    assert diag["misfit"][-1] < 0.05 * diag["misfit"][0]
    import xarray as xr

    with xr.open_dataset(d / "posterior.nc", decode_times=False) as ds:
        assert ds.sizes["member"] == 20 and ds.sizes["time"] == 6


def test_overlapping_fourdvar_windows_survive_diverging_trial_points(tmp_path):
    """Windows of 4 observation intervals sliding by 1, forcing unbounded: from window 3 on (0.4 time units of
    Lorenz-96), More-Thuente's first trial step along the large initial gradient sends F far off the attractor and
    the model diverges there (F = -7 at t = 0.4 with this seed). :func:`twin.assimilation.tao.minimise` then goes on
    from the last accepted point with Armijo backtracking; before, the window ended after one iteration with
    ``J`` unchanged and the analysis stayed the background (RMSE 1.5 -> 6.8 over the next windows)."""
    import logging

    text = FOURDVAR.replace("window: 2", "window: 4\n  shift: 1").replace("cycles: 4", "cycles: 7")
    text = text.replace("end: 1.0", "end: 1.2")
    seen: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("twin.assimilation.tao")
    logger.addHandler(handler)
    try:
        d = _run(tmp_path, text)
    finally:
        logger.removeHandler(handler)
    assert any("continuing with Armijo backtracking" in m for m in seen)
    diag = _diagnostics(d)
    assert diag["cost"].size == 7
    # every window makes real progress (the failure mode left J at its initial value)
    assert np.all(diag["cost"] < 0.6 * diag["cost_initial"]), (diag["cost"], diag["cost_initial"])
    assert np.all(diag["rmse"] < diag["rmse_forecast"]), (diag["rmse"], diag["rmse_forecast"])
    assert np.all(diag["rmse"] < 1.0)


def _truth(exp_dir) -> np.ndarray:
    from mpi4py import MPI

    from twin.campaign.checkpoints import reader

    with reader(layout.observations_file(exp_dir), MPI.COMM_SELF) as r:
        return r.read_array("truth")


def test_fourdvar_truth_is_a_draw_of_its_prior_and_its_samples_are_scored(tmp_path):
    """The background of window 0 is the configured state (the prior's centre) and the nature run starts from an
    independent draw of N(x_config, B), not from the background's centre; the Laplace samples are scored against the
    truth per window and after the burn-in as the filters' members are. With a right prior (B is the truth's
    distribution here) their 90 % intervals hold the truth about 90 % of the time."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.campaign.checkpoints import reader

    text = FOURDVAR.replace("cycles: 4", "cycles: 8\n  burn_in: 2").replace("end: 1.0", "end: 1.6") + \
        "  laplace: {rank: 10, oversampling: 5, samples: 20, level: 0.9}\n"
    d = _run(tmp_path, text)
    model = ctx.build_model(load_campaign(layout.config_file(d)).config, MPI.COMM_SELF)
    try:
        x = model.initial_state()
        configured = model.grid.allgather(x).ravel()
        x.destroy()
    finally:
        model.destroy()
    with reader(layout.checkpoint_file(d, 0), MPI.COMM_SELF) as r:
        background = r.read_field("initial").ravel()
    assert np.array_equal(background, configured)
    offset = _truth(d)[0] - configured
    assert 0.7 < offset.std() < 1.3 and abs(offset.mean()) < 0.5, offset  # B: std 1 on each of 40 entries
    diag = _diagnostics(d)
    for name in ("spread", "crps", "coverage_90"):
        assert diag[name].size == 8 and np.all(np.isfinite(diag[name])), name
    assert np.isclose(diag["coverage_90_a"], np.mean(diag["coverage_90"][2:]))
    assert np.isclose(diag["rmse_a"], np.mean(diag["rmse"][2:]))
    assert 0.75 <= float(diag["coverage_90_a"]) <= 1.0, diag["coverage_90"]
    assert 0.6 < float(diag["spread_a"] / diag["rmse_a"]) < 2.0, (diag["spread"], diag["rmse"])


def test_methods_that_share_truth_initial_std_and_seed_twin_one_system(tmp_path):
    """``experiments.truth.initial_std``: an ETKF and a 4D-Var experiment of one campaign (same assimilation.seed)
    start their nature runs from the same draw, so their answers are about the same truth."""
    etkf = textwrap.dedent("""\
        - method: etkf
          N: 10
          seed: 3
          background_std: 0.5
          schedule: {every: 2, cycles: 4}
          observations: [{type: all_points, component: 0, error_std: 1.0}]
        """)
    var = textwrap.dedent("""\
        - method: 4dvar
          model: l96
          obs_interval: 0.1
          window: 2
          cycles: 2
          seed: 3
          background_covariance: {kind: diagonal, std: 0.5}
          parameters: [{name: F, std: 1.0}]
          observations: [{type: all_points, component: 0, error_std: 1.0}]
          tao: {gatol: 1.0e-4, max_iterations: 30, on_failure: warn}
        """)
    text = MODEL.replace("NAME", "paired").replace("end: 1.0", "end: 0.4") + \
        "experiments:\n  truth: {initial_std: 0.5}\n  matrix:\n    assimilation:\n" + \
        textwrap.indent(etkf + var, "      ")
    from mpi4py import MPI

    from twin.campaign.checkpoints import reader
    from twin.campaign.online import run_online

    f = tmp_path / "c.yaml"
    f.write_text(text)
    var_dir, etkf_dir = sorted(run_online(load_campaign(f), MPI.COMM_WORLD, tmp_path / "run"),
                               key=lambda p: p.name)  # assimilation-4dvar, assimilation-etkf
    truth = _truth(var_dir)
    assert np.array_equal(truth, _truth(etkf_dir))
    # and it is a draw, not the configured state the 4D-Var background is
    with reader(layout.checkpoint_file(var_dir, 0), MPI.COMM_SELF) as r:
        background = r.read_field("initial").ravel()
    assert 0.35 < np.std(truth[0] - background) < 0.65
