"""Quality control of a file network beyond the reader's checks: the physical range of a variable, thinning and
super-observations, configured on the network (``variables.<v>.range``, ``thinning``, ``superobs``). Every decision is
a flag of the observation; the kept rows, the super-observations' values, positions and errors (``sqrt(sum e_i^2) /
n``) are checked on small tables with known answers, and each configuration mistake is refused in one line naming
the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from pydantic import ValidationError

from twin.campaign.status import ExperimentStatus
from twin.config.observation_networks import FileNetwork
from twin.core.errors import ConfigError
from twin.kinds.lorenz96.model import Lorenz96
from twin.observations import qc
from twin.observations.base import interpolation_matrix
from twin.observations.file_network import StepClock, series, timed
from twin.observations.networks import quality_control
from twin.observations.table import ObservationTable

ROOT = Path(__file__).resolve().parents[2]
EDGES = [0.0, 0.1, 0.2]
F = {"accepted": 0, "range": 4, "thinned": 6, "superobs": 8}


@pytest.fixture(scope="module")
def l96():
    m = Lorenz96("l96_fileqc", MPI.COMM_SELF, n=40)
    yield m
    m.destroy()


def _table(rows) -> ObservationTable:
    t, x, v, y, e = zip(*rows)
    return ObservationTable(np.array(t), np.array(x)[:, None], np.array(v), np.array(y), np.array(e),
                            np.arange(len(rows)), "obs.csv", "0" * 64, {"x": "1"}, {}, "1", "m")


# cycle 0: box [0, 2) holds 0.2, 0.9, 1.5 (centre 1.0: 0.9 nearest); box [2, 4) holds 2.1 and 3.8 (centre 3.0: 3.8);
# box [10, 12) holds 10.5 alone; 30.5 reads 99 (outside the range [-30, 30]); cycle 1: 0.2 and 0.9 again
ROWS = [
    (0.1, 0.2, "x", 1.0, 0.3),    # 0
    (0.1, 0.9, "x", 2.0, 0.4),    # 1
    (0.1, 1.5, "x", 4.0, 1.2),    # 2
    (0.1, 2.1, "x", 5.0, 0.5),    # 3
    (0.1, 3.8, "x", 7.0, 0.5),    # 4
    (0.1, 10.5, "x", 3.0, 0.7),   # 5
    (0.1, 30.5, "x", 99.0, 0.5),  # 6: out of range
    (0.2, 0.2, "x", -1.0, 0.6),   # 7
    (0.2, 0.9, "x", -3.0, 0.8),   # 8
]


def test_range_check_flags_values_outside_and_allows_an_open_end(l96):
    s = series(_table(ROWS), l96, EDGES, ranges={"x": (-30.0, 30.0)})
    assert s.qc.flags.tolist() == [0, 0, 0, 0, 0, 0, F["range"], 0, 0]
    assert s.counts["range"] == 1 and s.counts["accepted"] == 8
    # [None, 2.5]: no lower bound; 4, 5, 7, 99 and 3 are above 2.5
    s = series(_table(ROWS), l96, EDGES, ranges={"x": (None, 2.5)})
    assert np.flatnonzero(s.qc.flags == F["range"]).tolist() == [2, 3, 4, 5, 6]
    assert 30.5 not in s.observations.locations[:, 0]  # a site only the rejected value had is no site


def test_thinning_keeps_the_observation_nearest_each_box_centre_per_cycle(l96):
    s = series(_table(ROWS), l96, EDGES, ranges={"x": (-30.0, 30.0)}, thinning=2.0)
    assert s.qc.flags.tolist() == [6, 0, 6, 6, 0, 0, 4, 6, 0]
    assert s.counts == {"accepted": 4, "missing": 0, "outside_time": 0, "outside_domain": 0, "range": 1,
                        "duplicate": 0, "thinned": 4, "background": 0, "superobs": 0}
    # the sites are those of the observations used, in the order of the file: 0.9, 3.8, 10.5
    np.testing.assert_array_equal(s.observations.locations[:, 0], [0.9, 3.8, 10.5])
    np.testing.assert_array_equal(s.values, [[2.0, 7.0, 3.0], [-3.0, np.nan, np.nan]])
    np.testing.assert_array_equal(s.errors, [[0.4, 0.5, 0.7], [0.8, np.nan, np.nan]])
    H = interpolation_matrix(l96.grid, np.array([[0.9], [3.8], [10.5]]), 0)
    assert abs(s.observations.matrix - H).max() == 0


def test_boxes_smaller_than_the_station_spacing_change_nothing(l96):
    plain = series(_table(ROWS), l96, EDGES)
    for kw in ({"thinning": 0.25}, {"superobs": 0.25}):
        s = series(_table(ROWS), l96, EDGES, **kw)
        assert s.qc.flags.tolist() == plain.qc.flags.tolist()
        np.testing.assert_array_equal(s.values, plain.values)
        np.testing.assert_array_equal(s.errors, plain.errors)
        np.testing.assert_array_equal(s.observations.locations, plain.observations.locations)
        np.testing.assert_array_equal(s.observations.error_std, plain.observations.error_std)
        assert abs(s.observations.matrix - plain.observations.matrix).max() == 0


def test_superobservations_average_position_and_value_and_combine_the_errors(l96):
    s = series(_table(ROWS), l96, EDGES, ranges={"x": (-30.0, 30.0)}, superobs=2.0)
    S = F["superobs"]
    assert s.qc.flags.tolist() == [S, S, S, S, S, 0, 4, S, S]
    assert s.counts["superobs"] == 7 and s.counts["accepted"] == 1
    # sites: 10.5 (used as it is) first, then the super-observations' mean positions in box order
    x = s.observations.locations[:, 0]
    np.testing.assert_allclose(x, [10.5, (0.2 + 0.9 + 1.5) / 3, (2.1 + 3.8) / 2, (0.2 + 0.9) / 2],
                               rtol=0, atol=1e-12)  # sites are kept to 12 decimals
    nan = np.nan
    np.testing.assert_allclose(s.values, [[3.0, 7.0 / 3, 6.0, nan], [nan, nan, nan, -2.0]], rtol=1e-15)
    # sqrt(sum e_i^2) / n: the standard deviation of the mean of independent errors
    np.testing.assert_allclose(s.errors, [[0.7, 1.3 / 3, np.sqrt(0.5) / 2, nan], [nan, nan, nan, 1.0 / 2]],
                               rtol=1e-14)
    # each counted with the file of its first report: rows 0, 3 (cycle 0) and 7 (cycle 1)
    assert s.superobs_rows.tolist() == [0, 3, 7]
    H = interpolation_matrix(l96.grid, s.observations.locations, 0)
    assert abs(s.observations.matrix - H).max() == 0


def test_the_qc_function_gives_the_same_superobservation():
    _, v, e, n = qc.superobservations(np.array([[0.2], [0.9], [1.5]]), [1.0, 2.0, 4.0], [0.3, 0.4, 1.2], 2.0, (0.0,))
    assert n.tolist() == [3] and v[0] == pytest.approx(7 / 3) and e[0] == pytest.approx(1.3 / 3)
    assert qc.box_groups(np.array([[3.9], [0.1], [2.0]]), 2.0, (0.0,)).tolist() == [1, 0, 1]


def test_es_mda_and_4dvar_thin_per_model_step_and_refuse_superobservations(l96):
    clock = StepClock(0.0, 0.2, 0.05)
    s = timed(_table(ROWS), l96, clock, ranges={"x": (-30.0, 30.0)}, thinning=2.0)
    assert s.qc.flags.tolist() == [6, 0, 6, 6, 0, 0, 4, 6, 0]
    assert s.row.tolist() == [1, 4, 5, 8]
    with pytest.raises(ValueError, match=r"^superobs: super-observations are made per cycle"):
        timed(_table(ROWS), l96, clock, superobs=2.0)


def _network(**keys):
    base = {"type": "file", "file": "o.nc", "variables": {"x": {"name": "x_obs", "units": "1"}}}
    return FileNetwork.model_validate({**base, **keys})


def test_the_keys_are_validated():
    n = _network(thinning={"spacing": 2, "units": "km"}, variables={"x": {"units": "1", "range": [0, None]}})
    assert n.thinning.spacing == 2 and n.variables["x"].bounds() == (0, None) and n.superobs is None
    for keys, words in [({"thinning": {"spacing": 0}}, "greater than 0"),
                        ({"superobs": {"spacing": -1.0}}, "greater than 0"),
                        ({"thinning": {"spacing": 1, "units": "s"}}, "not a length"),
                        ({"thinning": {"spacing": 1, "units": "parsec^2"}}, "not a length"),
                        ({"thinning": {"spacing": 1}, "superobs": {"spacing": 1}}, "not both"),
                        ({"variables": {"x": {"units": "1", "range": [5, 1]}}}, "low must be below high"),
                        ({"variables": {"x": {"units": "1", "range": [5, 5]}}}, "low must be below high"),
                        ({"variables": {"x": {"units": "1", "range": [1]}}}, "range is \\[low, high\\]"),
                        ({"variables": {"x": {"units": "1", "range": [None, None]}}}, "range is \\[low, high\\]"),
                        ({"thinning": {"spacing": 1, "unit": "m"}}, "Extra inputs")]:
        with pytest.raises(ValidationError, match=words):
            _network(**keys)


def test_spacing_in_other_units_is_converted_to_the_models(l96):
    n = _network(superobs={"spacing": 0.002, "units": "km"},
                 variables={"x": {"name": "x_obs", "units": "1", "range": [-20, 20]}})
    assert quality_control(n, l96, 0) == {"ranges": {"x": (-20, 20)}, "superobs": 2.0}
    assert quality_control(_network(thinning={"spacing": 3}), l96, 0) == {"ranges": {}, "thinning": 3.0}


@pytest.mark.parametrize("network, where, words", [
    ("variables: {x: {name: x_obs, units: '1', range: [5, 1]}}", "observations[0].variables.x.range",
     "low must be below high"),
    ("variables: {x: {name: x_obs, units: '1'}}, thinning: {spacing: 0}", "observations[0].thinning.spacing",
     "greater than 0"),
    ("variables: {x: {name: x_obs, units: '1'}}, superobs: {spacing: 2, units: s}", "observations[0].superobs.units",
     "not a length"),
    ("variables: {x: {name: x_obs, units: '1'}}, thinning: {spacing: 2}, superobs: {spacing: 2}",
     "observations[0].superobs", "not both"),
])
def test_a_campaign_file_with_a_mistake_gets_one_line_naming_the_key(tmp_path, network, where, words):
    from twin.config.loader import load_campaign

    (tmp_path / "o.nc").write_bytes(b"")
    text = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
    old = "observations: [{type: all_points, component: 0, error_std: 1.0}]"
    assert old in text
    (tmp_path / "c.yaml").write_text(text.replace(old, f"observations: [{{type: file, file: o.nc, {network}}}]"))
    with pytest.raises(ConfigError) as exc:
        load_campaign(tmp_path / "c.yaml")
    lines = str(exc.value).splitlines()
    assert len(lines) == 1 and f"assimilation.{where}: " in lines[0] and words in lines[0], lines


def test_the_status_line_of_an_experiment_fed_by_files():
    q = {"accepted": 200, "missing": 2, "outside_time": 0, "outside_domain": 1, "range": 3, "duplicate": 0,
         "thinned": 197, "superobs": 0, "superobservations": None, "background": 4}
    e = ExperimentStatus("x", "done", 10, 10, 20, observations=q)
    assert e.qc_line() == ("x observations: 196 used, 2 missing, 0 outside the time span, 1 outside the domain, "
                           "0 duplicate, 3 out of range, 197 thinned or superseded, 4 rejected by the background "
                           "check")
    q.update(superobs=10, superobservations=4, background=None)
    assert "10 averaged into 4 super-observations, no background check" in e.qc_line()
    assert ExperimentStatus("y", "done", 10, 10, 20).qc_line() is None


def test_a_csv_network_with_superobs_counts_them_per_file(tmp_path, l96):
    """Through the network build: the keys reach the checks, and the file's record (what observations.h5 keeps)
    counts the reports averaged and the super-observations made."""
    from twin.observations.networks import build, file_records

    lines = ["time,x,variable,value,error"] + [f"{t},{x},x,{v},{e}" for t, x, _, v, e in ROWS]
    (tmp_path / "o.csv").write_text("\n".join(lines) + "\n")
    net = FileNetwork.model_validate({"type": "file", "file": str(tmp_path / "o.csv"), "time_units": "1",
                                      "variables": {"x": {"units": "1", "range": [-30, 30]}},
                                      "superobs": {"spacing": 2.0, "units": "m"}})
    obs = build([net], l96, cycle_edges=EDGES)
    (record,) = file_records(obs)
    assert record["qc"]["superobs"] == 7 and record["qc"]["range"] == 1 and record["qc"]["accepted"] == 1
    assert record["superobservations"] == 3
    assert obs.n_obs == 4
    net = FileNetwork.model_validate({**net.model_dump(), "superobs": None})
    assert "superobservations" not in file_records(build([net], l96, cycle_edges=EDGES))[0]
