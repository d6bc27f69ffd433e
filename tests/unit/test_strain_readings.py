"""Strain-gauge readings as files (twin/kinds/structure/readings.py) and file networks on a coupled campaign
(twin/observations/networks.py): on the structure flagship's coupled model (atmosphere -> mast, built, never run),
the twin experiment's export of its gauges read back through ``strain_gauge_readings`` gives the synthetic network's
operator rows bitwise and the values as written; a ``type: file`` network of a component's state variable likewise;
units convert (microstrain, the UDUNITS factor "1e-6", rad, cm); a rosette is three gauges; and what is wrong gives
one line naming the network or the file."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

from twin.core.calendar import cf_time_units
from twin.core.errors import ObservationError

ROOT = Path(__file__).resolve().parents[2]
#: the flagship's gauges: windward (x = 0.02 m) and leeward (0.23 m) faces at four heights, axial
GAUGES = [[0.02, 0.5], [0.23, 0.5], [0.02, 1.5], [0.23, 1.5], [0.02, 3.0], [0.23, 3.0], [0.02, 5.0], [0.23, 5.0]]
EDGES = np.array([0.0, 2.0, 4.0, 6.0])  # three cycles of 2 s


@pytest.fixture(scope="module")
def coupled():
    """The flagship's coupled model and its components as :func:`twin.observations.networks.build` takes them."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config.loader import load_campaign

    cfg = load_campaign(ROOT / "configs" / "structure.yaml").config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    components = {c: (model.models[c], model.block(c).start) for c in model.blocks}
    yield model, components
    model.destroy()


def _net(kind: str, **keys):
    """A network section of ``assimilation.observations``, validated as the campaign file's would be."""
    from pydantic import TypeAdapter

    from twin.config.observation_networks import networks_type

    return TypeAdapter(networks_type()).validate_python([{"type": kind, **keys}])[0]


def _build(networks, coupled):
    from twin.observations.networks import build

    model, components = coupled
    return build(networks, model, components, cycle_edges=EDGES)


def _export(path: Path, obs, coupled, values) -> Path:
    from twin.observations.export import write_observation_file

    return write_observation_file(path, None, obs, coupled[0], EDGES, values, time_units=cf_time_units(None, "s"),
                                  time_scale=1.0)


def _readings(path, **keys):
    return _net("strain_gauge_readings", model="mast", file=str(path), strain="obs_mast_strain",
                error="obs_mast_strain_error", angle="obs_mast_strain_angle", **keys)


def test_exported_gauges_read_back_bitwise(tmp_path, coupled):
    gauges = _net("strain_gauges", name="gauges", model="mast", points=GAUGES, angles=[90, 90, 45, 90, 0, 90, 90, 90],
                  error_std=[5e-7] * 4 + [8e-7] * 4)
    synthetic = _build([gauges], coupled)
    values = np.random.default_rng(3).normal(0.0, 1e-5, (3, 8))
    values[1, 5] = np.nan  # gauge 5 silent in cycle 1
    path = _export(tmp_path / "observations.nc", synthetic, coupled, values)
    with netCDF4.Dataset(path) as nc:
        assert nc.twin_networks_not_written == "none"
        assert nc["obs_mast_strain"].units == "1" and nc["obs_mast_strain_angle"].units == "degree"
        assert np.array_equal(nc["obs_mast_strain_angle"][:], [90, 90, 45, 90, 0, 90, 90, 90])
        assert list(nc["obs_mast_strain_id"][:]) == [f"gauges:{j}" for j in range(8)]
    read = _build([_readings(path, name="gauges")], coupled)
    fs = read.file_series["gauges"]
    # the operator rows are the synthetic network's, bitwise, on the mast's block of the coupled state
    a, b = synthetic.matrix, read.matrix
    assert a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data) and np.array_equal(synthetic.locations, read.locations)
    assert np.array_equal(fs.values, values, equal_nan=True)
    assert np.array_equal(fs.errors, np.where(np.isnan(values), np.nan, synthetic.error_std), equal_nan=True)
    assert np.array_equal(read.error_std, synthetic.error_std)
    assert fs.counts["accepted"] == 23 and read.network_models == {"gauges": "mast"}
    assert fs.site_variables[2] == "strain along 45 deg"


def test_a_coupled_file_network_of_a_component_state_variable(tmp_path, coupled):
    """``type: file`` on the atmosphere of the coupled campaign: sea level at two sites, the rows on its block."""
    stations = _net("points", name="synop", model="atmosphere", variable="h", points=[[16, 32], [40, 20.5]],
                    units="km", error_std=0.05)
    gauges = _net("strain_gauges", name="gauges", model="mast", points=GAUGES[:2], angles=[90], error_std=5e-7)
    synthetic = _build([gauges, stations], coupled)
    values = np.random.default_rng(4).normal(0.0, 1.0, (3, 4))
    path = _export(tmp_path / "observations.nc", synthetic, coupled, values)
    with netCDF4.Dataset(path) as nc:
        assert nc["obs_atmosphere_h"].units == "m" and nc["obs_atmosphere_h_x"].units == "m"
        assert np.array_equal(nc["obs_atmosphere_h_x"][:], [16000.0, 40000.0])
    sea_level = _net("file", name="synop", model="atmosphere", file=str(path),
                     variables={"h": {"name": "obs_atmosphere_h", "error": "obs_atmosphere_h_error", "units": "m"}})
    read = _build([_readings(path, name="gauges"), sea_level], coupled)
    assert (synthetic.matrix != read.matrix).nnz == 0 and np.array_equal(synthetic.matrix.data, read.matrix.data)
    assert read.network_slices == {"gauges": slice(0, 2), "synop": slice(2, 4)}
    h = read.file_series["synop"]
    assert np.array_equal(h.values, values[:, 2:]) and np.all(h.errors == 0.05)
    atmosphere = coupled[0].block("atmosphere")
    cols = read.matrix[2:].indices
    assert cols.min() >= atmosphere.start and cols.max() < atmosphere.stop  # sea level acts on the atmosphere only


def _gauge_file(path: Path, *, x_cm, y_cm, angle, angle_units="rad", strain_units="microstrain", values=None,
                error=0.5, with_angle=True):
    """A hand-written CF-1.10 timeSeries of gauges, as a monitoring system would write it (not twin)."""
    n = len(x_cm)
    values = np.full((n, 2), 6.0) if values is None else np.asarray(values, dtype=float)
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", n)
        nc.createDimension("time", 2)
        t = nc.createVariable("time", "f8", ("time",))
        t.standard_name, t.units = "time", "s"
        t[:] = [2.0, 4.0]
        for axis, v in (("x", x_cm), ("y", y_cm)):
            c = nc.createVariable(axis, "f8", ("station",))
            c.axis, c.units = axis.upper(), "cm"
            c[:] = v
        if with_angle:
            a = nc.createVariable("direction", "f8", ("station",), fill_value=-999.0)
            a.units = angle_units
            a[:] = np.ma.masked_invalid(np.asarray(angle, dtype=float))
        s = nc.createVariable("strain", "f8", ("station", "time"))
        s.units, s.coordinates = strain_units, "time x y"
        s[:] = values
        e = nc.createVariable("strain_error", "f8", ("station", "time"))
        e.units = strain_units
        e[:] = np.full((n, 2), error)
    return path


def _file_spec(path):
    return _net("strain_gauge_readings", name="gauges", model="mast", file=str(path), strain="strain",
                error="strain_error", angle="direction")


@pytest.mark.parametrize("units, factor", [("microstrain", 1e-6), ("1e-6", 1e-6), ("um/m", 1e-6), ("1", 1.0)])
def test_units_convert_and_a_rosette_is_three_gauges(tmp_path, coupled, units, factor):
    from twin.kinds.structure.gauges import strain_gauge_matrix
    from twin.kinds.structure.readings import read

    # a rosette (0, 45, 90 degrees at one point) and an axial gauge higher up; positions in cm, angles in rad
    angle = np.deg2rad([0.0, 45.0, 90.0, 90.0])
    path = _gauge_file(tmp_path / "g.nc", x_cm=[2.0, 2.0, 2.0, 23.0], y_cm=[150.0] * 3 + [300.0], angle=angle,
                       strain_units=units, values=np.arange(8.0).reshape(4, 2))
    mast = coupled[1]["mast"][0]
    table = read(_file_spec(path), path, mast, None)
    np.testing.assert_allclose(table.value, factor * np.arange(8.0), rtol=1e-15)
    np.testing.assert_allclose(table.error, factor * 0.5, rtol=1e-15)
    np.testing.assert_allclose(table.auxiliary["angle"], np.repeat([0.0, 45.0, 90.0, 90.0], 2), rtol=1e-14)
    np.testing.assert_allclose(table.position[::2], [[0.02, 1.5]] * 3 + [[0.23, 3.0]], rtol=1e-15)
    obs = _build([_file_spec(path)], coupled)
    fs = obs.file_series["gauges"]
    assert fs.counts["accepted"] == 8 and fs.counts["duplicate"] == 0  # the rosette's gauges are not duplicates
    block = coupled[0].block("mast")
    expect = strain_gauge_matrix(mast.grid, table.position[::2], np.deg2rad(table.auxiliary["angle"][::2]))
    assert abs(obs.matrix[:, block] - expect).max() == 0.0
    assert fs.site_variables == ["strain along 0 deg", "strain along 45 deg", "strain along 90 deg",
                                 "strain along 90 deg"]


def test_bad_readings_give_one_line(tmp_path, coupled):
    from twin.kinds.structure.readings import read

    mast = coupled[1]["mast"][0]
    good = dict(x_cm=[2.0, 23.0], y_cm=[50.0, 50.0], angle=np.deg2rad([90.0, 90.0]))

    def refused(path, *expect, spec=None):
        with pytest.raises(ObservationError) as err:
            read(spec or _file_spec(path), path, mast, None)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg, msg
        for e in expect:
            assert e in msg, msg

    refused(_gauge_file(tmp_path / "outside.nc", **{**good, "x_cm": [2.0, 40.0]}),
            "lies outside the structure [[0.0, 0.25], [0.0, 8.0]] (m)", "[0.4, 0.5]")
    refused(_gauge_file(tmp_path / "no_angle.nc", **good, with_angle=False),
            "variable 'strain'", "its angle variable 'direction' is not in the file")
    refused(_gauge_file(tmp_path / "missing.nc", **{**good, "angle": [np.pi / 2, np.nan]}),
            "has a value but its angle ('direction') is missing")
    refused(_gauge_file(tmp_path / "metres.nc", **good, angle_units="m"), "angle variable 'direction'",
            "not convertible")
    refused(_gauge_file(tmp_path / "pascal.nc", **good, strain_units="Pa"), "variable 'strain'", "not convertible")
    csv = tmp_path / "gauges.csv"
    csv.write_text("time,x,y,variable,value\n")
    refused(csv, "read from CF NetCDF files")


def test_a_network_names_a_component_of_the_coupled_campaign(tmp_path, coupled):
    path = _gauge_file(tmp_path / "g.nc", x_cm=[2.0], y_cm=[50.0], angle=[np.pi / 2])

    def refused(spec, *expect):
        with pytest.raises(ObservationError) as err:
            _build([spec], coupled)
        msg = str(err.value)
        assert "\n" not in msg
        for e in expect:
            assert e in msg, msg

    spec = _file_spec(path)
    refused(spec.model_copy(update={"model": "tower"}), "assimilation.observations[0].model: 'tower' is not a "
            "component of the campaign's model; components are ['atmosphere', 'mast']")
    refused(spec.model_copy(update={"model": None}), "assimilation.observations[0].model: the campaign is coupled; "
            "name the component observed (one of ['atmosphere', 'mast'])")
    sea_level = _net("file", model="atmosphere", file=str(path), variables={"h": {"name": "strain", "units": "m"}})
    refused(sea_level, "assimilation.observations[0]", "not convertible")


def test_a_readings_network_refuses_what_belongs_to_synthetic_gauges():
    from pydantic import ValidationError

    base = dict(model="mast", file="g.nc", strain="s", angle="a")
    for extra, expect in ((dict(fault={"sensor": 3, "drift_per_cycle": 1e-6}), "sensor faults are injected"),
                          (dict(units="cm"), "the file states the units of its gauge positions"),
                          (dict(error_std=[1e-6, 2e-6]), "error_std: one value")):
        with pytest.raises(ValidationError) as err:
            _net("strain_gauge_readings", **base, **extra)
        assert expect in str(err.value)
    with pytest.raises(ValidationError) as err:
        _net("strain_gauge_readings", model="mast", file="g.nc", strain="s")
    assert "angle" in str(err.value)


@pytest.mark.parametrize("text, factor, rest", [("1e-6", 1e-6, "1"), ("1.0e-6 1", 1e-6, "1"), ("0.01 m", 0.01, "m"),
                                                ("1e3*Pa", 1e3, "Pa"), ("1/s", 1.0, "1/s"), ("m2 s-1", 1.0, "m2 s-1"),
                                                ("microstrain", 1.0, "microstrain")])
def test_udunits_scale_factors(text, factor, rest):
    from twin.core.cfunits import convert_cf, convert_cf_difference, scaled

    assert scaled(text) == (factor, rest)
    if rest in ("1", "m", "Pa"):
        to = {"1": "1", "m": "cm", "Pa": "kPa"}[rest]
        scale = {"1": 1.0, "m": 100.0, "Pa": 1e-3}[rest]
        np.testing.assert_allclose(convert_cf([2.0, -3.0], text, to), np.array([2.0, -3.0]) * factor * scale,
                                   rtol=1e-15)
        np.testing.assert_allclose(convert_cf_difference([0.5], text, to), [0.5 * factor * scale], rtol=1e-15)


def test_a_component_in_other_time_units_reads_on_the_campaigns_clock(tmp_path, coupled):
    """The campaign's cycles count in its first component's time units; a component whose time runs in other units
    has its files' times placed in the campaign's (here the whole model counts minutes, the mast seconds)."""
    from twin.observations.networks import _OnCampaignClock, build

    model, components = coupled
    values = np.arange(6.0).reshape(3, 2)  # the file's readings at 2 and 4 s (time units "s")
    path = _gauge_file(tmp_path / "g.nc", x_cm=[2.0, 23.0, 2.0], y_cm=[50.0, 50.0, 300.0],
                       angle=np.deg2rad([90.0, 90.0, 90.0]), strain_units="1", values=values)
    in_minutes = _OnCampaignClock(model, "min")
    obs = build([_file_spec(path)], in_minutes, components, cycle_edges=EDGES / 60.0)  # cycles of 2 s, in min
    fs = obs.file_series["gauges"]
    # 2 s and 4 s are 1/30 and 1/15 min: the first two cycles (read in seconds, they would lie after the last one)
    assert np.array_equal(fs.values, np.vstack([values.T, np.full(3, np.nan)]), equal_nan=True)
    assert fs.counts["accepted"] == 6 and fs.counts["outside_time"] == 0
