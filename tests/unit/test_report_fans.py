"""The fan panel's charts (``twin.report.figures.fan_series``): what each one is drawn over and how its values are
labelled. An ensemble smoother (ES-MDA) records its parameters once per step, every step at the window's start: over
time that was a vertical line at t = 0; a count (CF units "1") was labelled "[1]" where its name says what it is."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from twin.decision.prediction import forecast_members
from twin.report.data import RunData
from twin.report.figures import fan_series
from twin.report.timeaxis import time_axis


def _run(parameter_times, decision=None) -> RunData:
    rng = np.random.default_rng(0)
    steps = sorted(parameter_times)
    return RunData(name="r", directory=None, decision=decision,
                   parameters={c: {"D": rng.normal(0.1, 0.02 / (1 + c), 8)} for c in steps},
                   parameter_times=dict(parameter_times))


def test_a_smoothers_parameters_are_drawn_over_its_steps():
    data = _run({c: 0.0 for c in range(5)})
    (sr,) = fan_series(data, time_axis(data))
    assert sr.title == "parameter D" and sr.xlabel == "assimilation step (0: prior)"
    np.testing.assert_array_equal(sr.t, [0, 1, 2, 3, 4])
    assert sr.samples.shape == (8, 5)


def test_a_filters_parameters_are_drawn_over_time():
    data = _run({0: 0.0, 1: 10.0, 2: 20.0}, decision={"time_units": "day"})
    (sr,) = fan_series(data, time_axis(data))
    assert sr.xlabel is None
    t = np.asarray(sr.t, dtype=float)
    np.testing.assert_allclose(t / t[1], [0.0, 1.0, 2.0])


def test_one_window_is_left_out():
    data = _run({0: 0.0})
    assert fan_series(data, time_axis(data)) == []


def test_decision_fans_say_what_a_count_is_and_give_other_units():
    fan = {"levels": [0.05, 0.5, 0.95], "times": [1.0, 2.0], "quantiles": [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]}
    decision = {"time_units": "day",
                "fans": {"burden": {**fan, "qoi": "burden", "units": "1", "long_name": "total tumour cell count"},
                         "chosen": {**fan, "qoi": "burden", "units": "1", "long_name": "total tumour cell count"},
                         "volume": {**fan, "qoi": "volume", "units": "mm^3", "long_name": "detected volume"},
                         "old": {**fan, "qoi": "q", "units": "1"}}}
    series = {sr.title: sr for sr in fan_series(_run({}, decision), time_axis(_run({}, decision)))}
    assert series["decision: burden"].ylabel == "total tumour cell count"
    assert series["decision: burden (chosen)"].ylabel == "total tumour cell count"
    assert series["decision: volume"].ylabel == "detected volume [mm^3]"
    long = {**fan, "qoi": "v", "units": "mm^3", "long_name": "tumour volume with cellularity above 0.2"}
    (sr,) = fan_series(_run({}, {"fans": {"v": long}}), time_axis(_run({}, {})))
    assert sr.ylabel == "tumour volume with cellularity\nabove 0.2 [mm^3]"
    # a decision.json written before fans carried the QoI's name
    assert series["decision: q (old)"].ylabel == "[1]"
    assert all(sr.decision for sr in series.values())


def test_a_forecast_keeps_each_qois_name():
    from twin.decision.prediction import PosteriorEnsemble
    from twin.kinds.lorenz96.model import Lorenz96

    model = Lorenz96("l96", MPI.COMM_SELF, n=8, dt=0.01)
    try:
        states = np.random.default_rng(1).normal(3.0, 1.0, (3, 8))
        ensemble = PosteriorEnsemble(states=states, parameters={}, time=0.0)
        fc = forecast_members(model, ensemble, np.array([0.05, 0.1]))
    finally:
        model.destroy()
    assert fc.long_names == {"mean": "mean of x", "energy": "mean energy x^2/2"}
    assert fc.values["energy"].shape == (3, 2) and np.all(np.isfinite(fc.values["energy"]))


def _coupled_posterior():
    """A coupled posterior as the structure demo's: an atmosphere the analysis does not perturb (its members differ
    by rounding: depth 100 m, east wind 19 m/s, north wind 1e-3 m/s) and a mast whose members differ for real."""
    import xarray as xr

    rng = np.random.default_rng(1)
    members, times = 16, 5
    shape = (members, times, 4, 6)
    rounding = 1e-9 * rng.standard_normal(shape)
    atm = ("member", "time", "atm_y", "atm_x")
    mast = ("member", "time", "mast_y", "mast_x")
    return xr.Dataset({
        "atm_h": (atm, 100.0 + rng.normal(0, 1.0, shape[2:]) + rounding),
        "atm_u": (atm, 19.0 * np.sin(np.arange(24).reshape(4, 6)) + rounding),
        "atm_v": (atm, 1e-3 * np.cos(np.arange(24).reshape(4, 6)) + rounding),
        "mast_u": (mast, 5e-4 + 1e-5 * rng.standard_normal((members, times, 3, 2))),
    }, coords={"time": np.arange(times, dtype=float)})


def test_members_that_agree_to_rounding_are_drawn_as_no_spread(tmp_path):
    """The structure demo's atmosphere fans were bands of 1e-10 m/s on axes offset by 1e2, its horizon spread an
    image of rounding noise: where the members differ by at most 1e-8 of the largest value on their grid, the chart
    says "no spread"; the mast, whose members differ by 2 % of its values, keeps its band."""
    from twin.report.figures import ROUND_OFF, _agree, fan_panel, grid_scales, round_off

    ds = _coupled_posterior()
    data = RunData(name="r", directory=None, posterior=ds)
    scales = grid_scales(ds, list(ds.data_vars))
    assert scales["atm_v"] == scales["atm_h"] > 100.0  # the north wind rounds like the depth it is computed with
    assert scales["mast_u"] < 1e-3
    series = {sr.title: sr for sr in fan_series(data, time_axis(data))}
    assert {t: _agree(sr) for t, sr in series.items()} == {
        "domain mean of atm_h": True, "domain mean of atm_u": True, "domain mean of atm_v": True,
        "domain mean of mast_u": False}
    # the threshold is relative: the same spread next to values of 1e-3 alone is no rounding
    assert not round_off(1e-9 * np.ones(3), 1e-3) and round_off(1e-9 * np.ones(3), 1.0)
    assert round_off(np.array([0.0, ROUND_OFF]), 1.0) and not round_off(np.array([2 * ROUND_OFF]), 1.0)
    assert not round_off(np.ones(2), None)
    panel = fan_panel(data, tmp_path)
    assert panel.image is not None and panel.image.is_file()
