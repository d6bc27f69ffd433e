"""Measured observation files: CF-DSG NetCDF and CSV written by plain netCDF4/xarray code here (not by twin), in
other units and with another calendar reference date, read into the same table as the same observations written in
model units; calendar time; binning into cycles; and one clear error per kind of bad data."""

from __future__ import annotations

import importlib.util
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.core.calendar import EPOCH, cf_time_units, parse_start, since_start, to_model_time
from twin.core.cfunits import convert_cf, convert_cf_difference, to_pint
from twin.core.errors import ObservationError
from twin.observations.files import (ObservationTable, VariableRequest, bin_by_cycle, outside_campaign, read_csv,
                                     read_dsg, reader_for)

ROOT = Path(__file__).resolve().parents[2]
START = parse_start("2026-03-01T00:00Z")
RTOL = 1e-12

# -- the observations, in model units (s after START, m, m/s, Pa) -----------------------------------------------------
XY = np.array([[250e3, 400e3], [1200e3, 800e3], [1800e3, 1500e3]])
TIMES = np.array([10800.5, 21601.25, 32400.0, 43199.75])
_rng = np.random.default_rng(17)
H = _rng.uniform(0.5, 2.0, (3, 4))
H_ERR = _rng.uniform(0.01, 0.05, (3, 4))
U = _rng.uniform(2.0, 15.0, (3, 4))
P = _rng.uniform(98000.0, 103000.0, (3, 4))
P[2, 3] = np.nan  # written as NaN: missing
HOLE = (1, 1)  # h at station 1, time 1 is a _FillValue
PRESENT = [(s, k) for s in range(3) for k in range(4) if (s, k) != HOLE]

# how a file states them: units and the factor from model units; times as "<unit> since <reference>"
MODEL = dict(h="m", u="m s-1", p="Pa", xy="m", scale=dict(h=1.0, u=1.0, p=1.0, xy=1.0),
             time="seconds since 2026-03-01 00:00:00", calendar="standard", t=lambda s: s)
OTHER = dict(h="cm", u="km h-1", p="hPa", xy="km", scale=dict(h=100.0, u=3.6, p=0.01, xy=1e-3),
             time="hours since 2026-02-28 12:00", calendar="gregorian", t=lambda s: s / 3600.0 + 12.0)
OTHER_SLASH = dict(OTHER, u="km/h", time="days since 2026-03-01T06:00:00+06:00", calendar="proleptic_gregorian",
                   t=lambda s: s / 86400.0)  # 06:00+06:00 is midnight UTC

REQUEST = {"h": {"standard_name": "sea_surface_height", "units": "m"},
           "u": {"name": "wind", "units": "m/s", "error_std": 0.7},
           "p": {"name": "pressure", "units": "Pa"}}
FILL = -9999.0


def _sn(nc_var, **attrs):
    for k, v in attrs.items():
        nc_var.setncattr(k, v)
    return nc_var


def _data_vars(nc, spec, dims, h, u, p, err, coordinates):
    """h (with its standard error), wind and pressure on ``dims``, in ``spec``'s units."""
    sc = spec["scale"]
    v = nc.createVariable("sea_level", "f8", dims, fill_value=FILL)
    _sn(v, standard_name="sea_surface_height", units=spec["h"], coordinates=coordinates,
        ancillary_variables="quality sea_level_error")
    v[:] = np.where(np.isnan(h), FILL, h * sc["h"])
    q = nc.createVariable("quality", "i4", dims)
    _sn(q, standard_name="sea_surface_height status_flag")
    q[:] = np.zeros(np.shape(h), dtype=np.int32)
    e = nc.createVariable("sea_level_error", "f8", dims)
    _sn(e, standard_name="sea_surface_height standard_error", units=spec["h"])
    e[:] = err * sc["h"]
    w = nc.createVariable("wind", "f8", dims)
    _sn(w, standard_name="wind_speed", units=spec["u"], coordinates=coordinates)
    w[:] = u * sc["u"]
    pv = nc.createVariable("pressure", "f8", dims)
    _sn(pv, standard_name="air_pressure", units=spec["p"], coordinates=coordinates)
    pv[:] = p * sc["p"]


def _coords(nc, spec, dims_xy, dims_t, xy, t):
    time = nc.createVariable("time", "f8", dims_t, fill_value=FILL)
    _sn(time, standard_name="time", axis="T", units=spec["time"], calendar=spec["calendar"])
    time[:] = np.where(np.isnan(t), FILL, spec["t"](t))
    for a, name in enumerate(("x", "y")):
        c = nc.createVariable(name, "f8", dims_xy)
        _sn(c, standard_name=f"projection_{name}_coordinate", units=spec["xy"])
        c[:] = xy[..., a] * spec["scale"]["xy"]


def write_orthogonal(path, spec=MODEL):
    """timeSeries, orthogonal multidimensional array: h(station, time), time(time), x(station)."""
    h = H.copy()
    h[HOLE] = np.nan
    with netCDF4.Dataset(path, "w") as nc:
        nc.featureType = "timeSeries"
        nc.createDimension("station", 3)
        nc.createDimension("time", 4)
        _coords(nc, spec, ("station",), ("time",), XY, TIMES)
        _data_vars(nc, spec, ("station", "time"), h, U, P, H_ERR, "time x y")
    return path


def write_incomplete(path, spec=MODEL):
    """timeSeries, incomplete multidimensional array: h(station, obs), time(station, obs) padded with fill."""
    keep = {s: [k for k in range(4) if (s, k) in PRESENT] for s in range(3)}
    shape = (3, 4)
    t, h, err, u, p = (np.full(shape, np.nan) for _ in range(5))
    for s, ks in keep.items():
        n = len(ks)
        t[s, :n], h[s, :n], err[s, :n] = TIMES[ks], H[s, ks], H_ERR[s, ks]
        u[s, :n], p[s, :n] = U[s, ks], P[s, ks]
    with netCDF4.Dataset(path, "w") as nc:
        nc.featureType = "timeSeries"
        nc.createDimension("station", 3)
        nc.createDimension("obs", 4)
        _coords(nc, spec, ("station",), ("station", "obs"), XY, t)
        _data_vars(nc, spec, ("station", "obs"), h, u, p, np.nan_to_num(err, nan=1.0), "time x y")
    return path


def write_ragged(path, spec=MODEL, indexed=False):
    """timeSeries, contiguous (row_size) or indexed (station_index) ragged array."""
    rows = PRESENT if not indexed else PRESENT[::-1]
    st_, ks = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    with netCDF4.Dataset(path, "w") as nc:
        nc.featureType = "timeSeries"
        nc.createDimension("station", 3)
        nc.createDimension("obs", len(rows))
        _coords(nc, spec, ("station",), ("obs",), XY, TIMES[ks])
        if indexed:
            i = nc.createVariable("station_index", "i4", ("obs",))
            _sn(i, instance_dimension="station")
            i[:] = st_
        else:
            c = nc.createVariable("row_size", "i4", ("station",))
            _sn(c, sample_dimension="obs")
            c[:] = np.bincount(st_, minlength=3)
        _data_vars(nc, spec, ("obs",), H[st_, ks], U[st_, ks], P[st_, ks], H_ERR[st_, ks], "time x y")
    return path


def _trajectory_arrays():
    """Two tracks of five points: positions and times along each."""
    k = np.arange(5.0)
    x = np.stack([100e3 + 50e3 * k, 900e3 - 20e3 * k])
    y = np.stack([200e3 + 10e3 * k, 300e3 + 70e3 * k])
    t = np.stack([3600.0 + 600.25 * k, 7200.0 + 900.5 * k])
    v = np.stack([1.0 + 0.1 * k, 2.0 - 0.05 * k])
    return x, y, t, v


def write_trajectory(path, spec=MODEL):
    """trajectory, multidimensional, written with xarray: h(trajectory, obs), x/y/time(trajectory, obs)."""
    x, y, t, v = _trajectory_arrays()
    sc = spec["scale"]
    dims = ("trajectory", "obs")
    ds = xr.Dataset(
        {"sea_level": (dims, v * sc["h"], {"standard_name": "sea_surface_height", "units": spec["h"],
                                           "coordinates": "time lon lat x y"}),
         "time": (dims, spec["t"](t), {"standard_name": "time", "units": spec["time"], "calendar": spec["calendar"]}),
         "x": (dims, x * sc["xy"], {"axis": "X", "units": spec["xy"]}),
         "y": (dims, y * sc["xy"], {"axis": "Y", "units": spec["xy"]}),
         "lon": (dims, x * 0 + 3.0, {"standard_name": "longitude", "units": "degrees_east"}),
         "lat": (dims, y * 0 + 50.0, {"standard_name": "latitude", "units": "degrees_north"}),
         "track": ("trajectory", np.array(["a", "b"]), {"cf_role": "trajectory_id"})},
        attrs={"featureType": "trajectory", "Conventions": "CF-1.10"})
    ds.to_netcdf(path, encoding={n: {"_FillValue": None} for n in ("time", "x", "y")})
    return path


def write_point(path, spec=MODEL, **overrides):
    """point, written with xarray: h(obs), time(obs), x(obs), y(obs), with a standard error."""
    s, k = np.array([r[0] for r in PRESENT]), np.array([r[1] for r in PRESENT])
    sc = spec["scale"]
    variables = {
        "sea_level": ("obs", H[s, k] * sc["h"], {"standard_name": "sea_surface_height", "units": spec["h"],
                                                 "coordinates": "time x y", "ancillary_variables": "sea_level_error"}),
        "sea_level_error": ("obs", H_ERR[s, k] * sc["h"], {"standard_name": "sea_surface_height standard_error",
                                                           "units": spec["h"]}),
        "time": ("obs", spec["t"](TIMES[k]), {"standard_name": "time", "units": spec["time"],
                                              "calendar": spec["calendar"]}),
        "x": ("obs", XY[s, 0] * sc["xy"], {"standard_name": "projection_x_coordinate", "units": spec["xy"]}),
        "y": ("obs", XY[s, 1] * sc["xy"], {"standard_name": "projection_y_coordinate", "units": spec["xy"]}),
    }
    variables.update(overrides)
    xr.Dataset(variables, attrs={"featureType": "point"}).to_netcdf(path)
    return path


def read(path, variables=None, **kw):
    kw = {"start": START, "model_time_units": "s", "length_units": "m", "error_std": 50.0, **kw}
    return read_dsg(path, variables or {"h": REQUEST["h"]}, **kw)


def _sorted(t: ObservationTable):
    return t.subset(np.lexsort((t.position[:, 0], t.time, t.variable)))


def assert_same(a: ObservationTable, b: ObservationTable, sort=False):
    """Same observations (to round-off); with ``sort``, in any order and with any count of padding values."""
    if sort:
        a, b = _sorted(a), _sorted(b)
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.variable, b.variable)
    for name in ("time", "position", "value", "error"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=RTOL, atol=0, err_msg=name)
    assert a.units == b.units and (sort or a.missing == b.missing)


def expected_h():
    s, k = np.array([r[0] for r in PRESENT]), np.array([r[1] for r in PRESENT])
    return TIMES[k], XY[s], H[s, k], H_ERR[s, k]


# -- calendar --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("2026-03-01T00:00Z", datetime(2026, 3, 1, tzinfo=timezone.utc)),
    ("2026-03-01", datetime(2026, 3, 1, tzinfo=timezone.utc)),
    ("2026-03-01T01:30:00+01:00", datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)),
    ("2026-03-01T01:30:00+0130", datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)),
    ("2026-02-28T20:00-05", datetime(2026, 3, 1, 1, 0, tzinfo=timezone.utc)),
    ("2026-03-01 06:30:15.25", datetime(2026, 3, 1, 6, 30, 15, 250000, tzinfo=timezone.utc)),
    (date(2026, 3, 1), datetime(2026, 3, 1, tzinfo=timezone.utc)),
    (datetime(2026, 3, 1, 12), datetime(2026, 3, 1, 12, tzinfo=timezone.utc)),
])
def test_parse_start_gives_utc(text, expected):
    got = parse_start(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2026-3-1", "2026-02-30", "2026-03-01T25:00", "01/03/2026", ""])
def test_parse_start_names_bad_text(text):
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        parse_start(text)


def test_cf_time_units():
    assert cf_time_units(START, "day") == "days since 2026-03-01T00:00:00Z"
    assert cf_time_units(parse_start("2026-03-01T06:00+02:00"), "s") == "seconds since 2026-03-01T04:00:00Z"
    assert cf_time_units(None, "h") == "hours since 1970-01-01T00:00:00Z"
    assert cf_time_units(None, "1") == "1"
    with pytest.raises(ValueError, match="dimensionless"):
        cf_time_units(START, "1")
    with pytest.raises(ValueError, match="no CF name"):
        cf_time_units(START, "week")
    # the string is one xarray decodes to the right instants
    ds = xr.decode_cf(xr.Dataset({"t": ("t", [1.5], {"units": cf_time_units(START, "day")})}))
    assert ds["t"].values[0] == np.datetime64("2026-03-02T12:00")


def test_to_model_time_conversions():
    t = to_model_time([36.0, 48.0], "hours since 2026-02-28 12:00", None, START, "day")
    np.testing.assert_allclose(t, [1.0, 1.5], rtol=RTOL)
    assert to_model_time([2.0], "day", "standard", START, "s")[0] == 172800.0  # a duration from the start
    assert to_model_time([3.0], "1", None, None, "1")[0] == 3.0
    # no start: the origin is the epoch (twin's files so far)
    assert to_model_time([86400.0], "seconds since 1970-01-02", None, None, "day")[0] == 2.0
    assert to_model_time([0.0], "days since 1992-10-8 15:15:42.5 -6:00", None, parse_start("1992-10-08T21:15:42.5Z"),
                         "s")[0] == 0.0


@pytest.mark.parametrize("units, calendar, model, match", [
    ("hours since 2026-03-01", "noleap", "s", "calendar 'noleap' is not supported"),
    ("hours since 2026-03-01", "360_day", "s", "calendar '360_day'"),
    ("months since 2026-03-01", None, "s", "not a fixed duration"),
    ("year", None, "s", "not a fixed duration"),
    ("hours since 2026-03-01", None, "1", "dimensionless"),
    ("day", None, "1", "dimensionless"),
    ("", None, "s", "no units"),
    ("hours since the flood", None, "s", "'the flood' is not a date"),
    ("furlongs since 2026-03-01", None, "s", "not a unit of time"),
    ("hours since 1500-01-01", "standard", "s", "Julian"),
])
def test_to_model_time_refuses(units, calendar, model, match):
    with pytest.raises(ValueError, match=match):
        to_model_time([1.0], units, calendar, START, model)


def test_since_start():
    t = since_start(["2026-03-01T06:00Z", parse_start("2026-03-02T00:00+01:00")], START, "h")
    np.testing.assert_allclose(t, [6.0, 23.0], rtol=RTOL)
    with pytest.raises(ValueError, match="dimensionless"):
        since_start([START], START, "1")


@settings(max_examples=60, deadline=None)
@given(offset_minutes=st.integers(-10**6, 10**6), unit=st.sampled_from(["s", "min", "h", "day"]),
       model=st.sampled_from(["s", "h", "day"]),
       values=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=8))
def test_calendar_time_round_trip(offset_minutes, unit, model, values):
    """A time written as '<unit> since <start + offset>' reads back as the same instant after the start."""
    length = {"s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0}
    reference = START + timedelta(minutes=offset_minutes)
    text = f"{unit} since {reference.strftime('%Y-%m-%d %H:%M:%S')}"
    seconds = np.asarray(values) * length[unit] + 60.0 * offset_minutes
    got = to_model_time(values, text, None, START, model) * length[model]
    scale = np.abs(np.asarray(values)) * length[unit] + 60.0 * abs(offset_minutes)
    np.testing.assert_allclose(got, seconds, rtol=0, atol=1e-12 * float(np.max(scale) + 1.0) * 4)


# -- units -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cf, pint_", [("m s-1", "m*s**-1"), ("km h-1", "km*h**-1"), ("kg m-2 s-1", "kg*m**-2*s**-1"),
                                       ("m.s-1", "m*s**-1"), ("m2", "m**2"), ("km/h", "km/h"), ("hPa", "hPa"),
                                       ("degrees_Celsius", "degC"), ("%", "percent")])
def test_udunits_spellings(cf, pint_):
    assert to_pint(cf) == pint_


def test_cf_conversions():
    np.testing.assert_allclose(convert_cf([36.0], "km h-1", "m/s"), [10.0], rtol=RTOL)
    np.testing.assert_allclose(convert_cf([1013.25], "hPa", "Pa"), [101325.0], rtol=RTOL)
    np.testing.assert_allclose(convert_cf([20.0], "degrees_Celsius", "K"), [293.15], rtol=RTOL)
    np.testing.assert_allclose(convert_cf_difference([0.5], "degC", "K"), [0.5], rtol=RTOL)  # no offset on errors
    with pytest.raises(ValueError, match="not convertible"):
        convert_cf([1.0], "cm", "Pa")
    with pytest.raises(ValueError, match="unknown units 'bogus'"):
        convert_cf([1.0], "bogus", "m")


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6),
       pair=st.sampled_from([("cm", "m"), ("hPa", "Pa"), ("km h-1", "m s-1"), ("km", "m"), ("degC", "K")]))
def test_unit_round_trip(values, pair):
    there = convert_cf(values, pair[0], to_pint(pair[1]))
    back = convert_cf(there, pair[1], to_pint(pair[0]))
    np.testing.assert_allclose(back, values, rtol=1e-12, atol=1e-9)


# -- CF-DSG: other units give the same table as model units ---------------------------------------------------------
@pytest.mark.parametrize("writer", [write_orthogonal, write_incomplete, write_ragged, write_point])
@pytest.mark.parametrize("spec", [OTHER, OTHER_SLASH], ids=["cm-hPa-kmh-hours", "kmh-slash-days-offset"])
def test_other_units_and_reference_date_give_the_same_table(tmp_path, writer, spec):
    variables = REQUEST if writer is not write_point else {"h": REQUEST["h"]}
    a = read(writer(tmp_path / "model.nc", MODEL), variables)
    b = read(writer(tmp_path / "other.nc", spec), variables)
    assert_same(a, b)
    t, xy, h, err = expected_h()
    sel = a.variable == "h"
    order = np.lexsort((a.position[sel, 0], a.time[sel]))
    ref = np.lexsort((xy[:, 0], t))
    np.testing.assert_allclose(a.time[sel][order], t[ref], rtol=RTOL)
    np.testing.assert_allclose(a.position[sel][order], xy[ref], rtol=RTOL)
    np.testing.assert_allclose(a.value[sel][order], h[ref], rtol=RTOL)
    np.testing.assert_allclose(a.error[sel][order], err[ref], rtol=RTOL)  # from the standard_error ancillary


def test_model_time_in_days(tmp_path):
    a = read(write_orthogonal(tmp_path / "o.nc", OTHER), model_time_units="day", length_units="km")
    t, xy, _, _ = expected_h()
    np.testing.assert_allclose(a.time, t / 86400.0, rtol=RTOL)
    np.testing.assert_allclose(a.position, xy / 1000.0, rtol=RTOL)
    assert a.time_units == "day" and a.length_units == "km"


@pytest.mark.parametrize("writer", [write_incomplete, write_ragged,
                                    lambda p, s=MODEL: write_ragged(p, s, indexed=True)],
                         ids=["incomplete", "contiguous-ragged", "indexed-ragged"])
def test_representations_agree_with_orthogonal(tmp_path, writer):
    a = read(write_orthogonal(tmp_path / "o.nc", OTHER))
    b = read(writer(tmp_path / "r.nc", OTHER))
    assert_same(a, b, sort=True)


def test_trajectory(tmp_path):
    a = read(write_trajectory(tmp_path / "m.nc", MODEL))
    b = read(write_trajectory(tmp_path / "o.nc", OTHER))
    assert_same(a, b)
    x, y, t, v = _trajectory_arrays()
    np.testing.assert_allclose(a.time, t.ravel(), rtol=RTOL)
    np.testing.assert_allclose(a.position, np.stack([x.ravel(), y.ravel()], axis=1), rtol=RTOL)
    np.testing.assert_allclose(a.value, v.ravel(), rtol=RTOL)
    np.testing.assert_array_equal(a.row, np.arange(10))
    assert a.position.shape == (10, 2)  # latitude/longitude are listed but not positions


def test_fill_values_and_nan_are_dropped_and_counted(tmp_path):
    a = read(write_orthogonal(tmp_path / "o.nc", OTHER), REQUEST)
    assert a.missing == {"h": 1, "u": 0, "p": 1}
    assert len(a) == 11 + 12 + 11
    h = a.subset(a.variable == "h")
    assert 1 * 4 + 1 not in h.row.tolist()  # station 1, time 1: the _FillValue
    assert np.all(np.isfinite(a.value))


def test_standard_error_from_ancillary_and_defaults(tmp_path):
    a = read(write_orthogonal(tmp_path / "o.nc", OTHER), REQUEST, error_std=123.0)
    np.testing.assert_allclose(a.error[a.variable == "h"], H_ERR.ravel()[[4 * s + k for s, k in PRESENT]], rtol=RTOL)
    assert np.all(a.error[a.variable == "u"] == 0.7)  # the request's error_std
    assert np.all(a.error[a.variable == "p"] == 123.0)  # the reader's default


def test_error_variable_named_by_the_request(tmp_path):
    """A file whose errors carry no standard_error standard name (its data variable has none to modify): the request
    names the error variable; it is converted from the file's units (cm) like the values."""
    path = write_orthogonal(tmp_path / "o.nc", OTHER)
    with netCDF4.Dataset(path, "a") as nc:
        e = nc.createVariable("wind_error", "f8", ("station", "time"))
        e.units = "km h-1"
        e[:] = 3.6 * np.arange(1.0, 13.0).reshape(3, 4)
    a = read(path, {"u": {"name": "wind", "error": "wind_error", "units": "m/s"},
                    "h": {"name": "sea_level", "error": "sea_level_error", "units": "m"}})
    np.testing.assert_allclose(a.error[a.variable == "u"], np.arange(1.0, 13.0), rtol=RTOL)
    np.testing.assert_allclose(a.error[a.variable == "h"], H_ERR.ravel()[[4 * s + k for s, k in PRESENT]], rtol=RTOL)
    with pytest.raises(ObservationError, match="error variable 'wind_err' is not in the file"):
        read(path, {"u": {"name": "wind", "error": "wind_err", "units": "m/s"}})
    csv = tmp_path / "o.csv"
    csv.write_text("time,x,variable,value,error\n2026-03-01T03:00Z,1.0,h,0.5,0.1\n")
    with pytest.raises(ObservationError, match="a CSV gives each observation's error in its 'error' column"):
        read_csv(csv, {"h": {"name": "h", "error": "e", "units": "m"}}, start=START)


def test_single_station_with_scalar_coordinates(tmp_path):
    with netCDF4.Dataset(tmp_path / "one.nc", "w") as nc:
        nc.featureType = "timeSeries"
        nc.createDimension("time", 3)
        t = _sn(nc.createVariable("time", "f8", ("time",)), units="minutes since 2026-03-01 00:00")
        t[:] = [10.0, 20.0, 30.0]
        for name, value in (("x", 2.5), ("y", 4.0)):
            _sn(nc.createVariable(name, "f8", ()), units="km").assignValue(value)
        v = _sn(nc.createVariable("gauge", "f4", ("time",)), units="mm", coordinates="time x y")
        v[:] = [1.0, 2.0, 4.0]
    a = read(tmp_path / "one.nc", {"h": {"name": "gauge", "units": "m", "error_std": 0.01}})
    np.testing.assert_allclose(a.time, [600.0, 1200.0, 1800.0], rtol=RTOL)
    np.testing.assert_allclose(a.position, [[2500.0, 4000.0]] * 3, rtol=RTOL)
    np.testing.assert_allclose(a.value, [0.001, 0.002, 0.004], rtol=1e-7)


def test_position_names_and_ndim(tmp_path):
    path = write_orthogonal(tmp_path / "o.nc", OTHER)
    assert read(path, ndim=1).position.shape == (11, 1)
    swapped = read(path, position_names=["y", "x"])
    np.testing.assert_allclose(swapped.position, read(path).position[:, ::-1], rtol=RTOL)
    with pytest.raises(ObservationError, match="no z position"):
        read(path, ndim=3)


def test_table_knows_its_file(tmp_path):
    import hashlib

    path = write_orthogonal(tmp_path / "o.nc", MODEL)
    a = read(path)
    assert a.source == str(path) and a.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert a.where(0) == f"observation file {path}: variable 'h': observation 0"


def test_variable_found_by_name_or_standard_name(tmp_path):
    path = write_orthogonal(tmp_path / "o.nc", MODEL)
    by_name = read(path, {"h": {"name": "sea_level", "units": "m"}})
    by_sn = read(path, {"h": {"standard_name": "sea_surface_height", "units": "m"}})
    assert_same(by_name, by_sn)
    assert read(path, {"wind": {"units": "m/s", "error_std": 1.0}}).variable[0] == "wind"  # the model name itself
    req = VariableRequest("h", "m", name="sea_level")
    assert_same(read(path, {"h": req}), by_name)


# -- CSV -------------------------------------------------------------------------------------------------------------
def _csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _csv_rows(spec, iso):
    t, xy, h, err = expected_h()
    sc = spec["scale"]
    rows = []
    for i in range(t.size):
        when = (START + timedelta(seconds=float(t[i]))).isoformat() if iso else repr(float(spec["t"](t[i])))
        rows.append(f"{when},{xy[i, 0] * sc['xy']!r},{xy[i, 1] * sc['xy']!r},sea_level,{h[i] * sc['h']!r},"
                    f"{err[i] * sc['h']!r},{spec['h']}")
    return rows


CSV_REQUEST = {"h": {"name": "sea_level", "units": "m"}}


def test_csv_other_units_and_numeric_times_give_the_same_table(tmp_path):
    model = _csv(tmp_path / "m.csv", ["time,x,y,variable,value,error,units"] + _csv_rows(MODEL, iso=True))
    other = _csv(tmp_path / "o.csv", ["# numeric times, km, cm", "Time, X , y,variable,value,error,units"]
                 + _csv_rows(OTHER, iso=False))
    a = read_csv(model, CSV_REQUEST, start=START, model_time_units="s", length_units="m")
    b = read_csv(other, CSV_REQUEST, start=START, model_time_units="s", length_units="m", time_units=OTHER["time"],
                 position_units="km")
    assert_same(a, b)
    assert_same(a, read(write_point(tmp_path / "p.nc", OTHER)))


def test_csv_example_matches_the_example_netcdf(tmp_path):
    spec = importlib.util.spec_from_file_location("make_example", ROOT / "examples/observations/make_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nc = module.write(tmp_path / "stations.nc")
    wanted = {"h": {"standard_name": "sea_surface_height_above_mean_sea_level", "units": "m"},
              "u": {"name": "wind", "units": "m/s"}}
    a = read_dsg(nc, wanted, start=START, model_time_units="h", length_units="km")
    b = read_csv(ROOT / "examples/observations/stations.csv", {"h": {"name": "sea_level", "units": "m"},
                                                                 "u": {"name": "wind", "units": "m/s"}},
                 start=START, model_time_units="h", length_units="km")
    assert_same(a, b)
    assert a.missing == {"h": 1, "u": 0} and len(a) == 23
    np.testing.assert_allclose(a.value[a.variable == "u"][:4], [10.0, 9.0, 8.0, 7.0], rtol=RTOL)
    assert reader_for(nc) is read_dsg and reader_for("a/stations.CSV") is read_csv


def test_csv_missing_values_default_error_and_other_variables(tmp_path):
    path = _csv(tmp_path / "c.csv", ["time,x,variable,value", "2026-03-01T01:00Z,1,a,1.5", "2026-03-01T02:00Z,2,b,7",
                                     "2026-03-01T03:00Z,3,a,", "2026-03-01T04:00Z,4,a,nan", "2026-03-01T05:00Z,5,a,2"])
    a = read_csv(path, {"a": {"units": "m"}}, start=START, model_time_units="h", error_std=0.5)
    np.testing.assert_allclose(a.time, [1.0, 5.0])
    np.testing.assert_array_equal(a.row, [0, 4])
    assert a.missing == {"a": 2} and np.all(a.error == 0.5) and a.position.shape == (2, 1)


def test_csv_rows_nobody_reads_are_said_and_a_near_name_is_a_warning(tmp_path, caplog):
    """Rows of variables not asked for were skipped without a word (found by trying: ``Temp`` and ``tmep`` rows for
    ``temp`` vanished, the counts said nothing was missing): each name is a log line, a WARNING when it is close to
    one asked for (case, one character more or less; a transposition is only an INFO line: names of other networks'
    variables in the same file are as close); a header repeated inside the file is refused at its line."""
    import logging

    from twin.core.errors import ObservationError

    path = _csv(tmp_path / "c.csv", ["time,x,variable,value", "2026-03-01T01:00Z,1,temp,1.5",
                                     "2026-03-01T02:00Z,2,Temp,7", "2026-03-01T03:00Z,3,tmep,2",
                                     "2026-03-01T04:00Z,4,wind,3", "2026-03-01T05:00Z,5,Temp,2",
                                     "2026-03-01T06:00Z,6,temp.,2"])
    logging.getLogger("twin").propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="twin.observations.csv"):
            a = read_csv(path, {"temp": {"units": "m"}}, start=START, model_time_units="h", error_std=0.5)
    finally:
        logging.getLogger("twin").propagate = False
    assert a.time.size == 1
    said = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert said == {
        ("WARNING", f"observation file {path}: 2 row(s) of variable 'Temp' not read: no network asks for it (did you "
                    "mean 'temp'? the names must match exactly)"),
        ("WARNING", f"observation file {path}: 1 row(s) of variable 'temp.' not read: no network asks for it (did "
                    "you mean 'temp'? the names must match exactly)"),
        ("INFO", f"observation file {path}: 1 row(s) of variable 'tmep' not read here (no request of this network "
                 "names it)"),
        ("INFO", f"observation file {path}: 1 row(s) of variable 'wind' not read here (no request of this network "
                 "names it)")}, said
    joined = _csv(tmp_path / "j.csv", ["time,x,variable,value", "2026-03-01T01:00Z,1,temp,1.5",
                                       "time,x,variable,value", "2026-03-01T02:00Z,2,temp,7"])
    with pytest.raises(ObservationError, match=r"j.csv: line 3: the header again \(two files joined\?\)"):
        read_csv(joined, {"temp": {"units": "m"}}, start=START, model_time_units="h", error_std=0.5)


def test_csv_numbers_are_read_as_in_c_and_any_nan_is_missing(tmp_path):
    """``1_0`` was read as 10 (Python's float); ``-nan`` (C's printf) was an error where ``nan`` is missing."""
    from twin.core.errors import ObservationError

    path = _csv(tmp_path / "c.csv", ["time,x,variable,value", "2026-03-01T01:00Z,1,a,1.5", "2026-03-01T02:00Z,2,a,-nan",
                                     "2026-03-01T03:00Z,3,a,NaN", "2026-03-01T04:00Z,4,a,2"])
    a = read_csv(path, {"a": {"units": "m"}}, start=START, model_time_units="h", error_std=0.5)
    assert a.missing == {"a": 2} and list(a.value) == [1.5, 2.0]
    path = _csv(tmp_path / "u.csv", ["time,x,variable,value", "2026-03-01T01:00Z,1,a,1_0"])
    with pytest.raises(ObservationError, match=r"u.csv: line 2: variable 'a': value '1_0' is not a number"):
        read_csv(path, {"a": {"units": "m"}}, start=START, model_time_units="h", error_std=0.5)


@pytest.mark.parametrize("value, error, words", [
    ("1e308", "1", "value 1e+308 m is beyond what an analysis can square"),
    ("1", "1e-300", "error 1e-300 m is beyond what an analysis can square"),
    ("1", "1e200", "error 1e+200 m is beyond"),
])
def test_values_and_errors_an_analysis_cannot_square_are_refused(tmp_path, value, error, words):
    """A finite 1e308 or an error of 1e-300 ended the experiment far from the file ("non-finite values",
    "eigenvalues did not converge ... lower the inflation"): refused when the file is read, naming it."""
    from twin.core.errors import ObservationError

    path = _csv(tmp_path / "c.csv", ["time,x,variable,value,error", "2026-03-01T01:00Z,1,a,1.5,1",
                                     f"2026-03-01T02:00Z,2,a,{value},{error}"])
    with pytest.raises(ObservationError) as info:
        read_csv(path, {"a": {"units": "m"}}, start=START, model_time_units="h")
    assert str(info.value).startswith(f"observation file {path}: variable 'a': observation 1: {words}"), info.value


# -- binning into cycles ---------------------------------------------------------------------------------------------
def _table(times):
    n = len(times)
    return ObservationTable(times, np.zeros((n, 1)), "h", np.ones(n), np.ones(n), np.arange(n), "f.nc", "",
                            time_units="h")


def test_bin_by_cycle_edges_belong_to_the_cycle_they_end():
    table = _table([0.5, 1.0, 1.0 + 1e-13, 1.5, 2.0, 3.0 - 1e-13, 3.0])
    bins = bin_by_cycle(table, [0.0, 1.0, 2.0, 3.0])
    assert [b.tolist() for b in bins] == [[0, 1, 2], [3, 4], [5, 6]]


def test_bin_by_cycle_refuses_observations_outside():
    table = _table([0.0, 0.5, 3.5, 4.0])
    np.testing.assert_array_equal(outside_campaign(table, [0.0, 1.0, 3.0]), [0, 2, 3])
    with pytest.raises(ObservationError, match=r"f.nc: variable 'h': observation 0: time 0 h is outside the "
                                               r"campaign \(0, 3\] \(3 of 4 observations are\)"):
        bin_by_cycle(table, [0.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="increasing"):
        bin_by_cycle(table, [0.0, 0.0])


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=12),
       fractions=st.lists(st.floats(1e-6, 1.0), min_size=0, max_size=40),
       on_edges=st.lists(st.integers(0, 12), max_size=5))
def test_every_observation_is_in_exactly_one_cycle(steps, fractions, on_edges):
    edges = np.concatenate([[-5.0], -5.0 + np.cumsum(steps)])
    times = [edges[0] + f * (edges[-1] - edges[0]) for f in fractions]
    times += [edges[min(j, len(steps) - 1) + 1] for j in on_edges]  # exactly on an edge: the cycle it ends
    table = _table(np.asarray(times, dtype=float))
    bins = bin_by_cycle(table, edges)
    together = np.concatenate(bins) if bins else np.zeros(0, dtype=np.int64)
    assert sorted(together.tolist()) == list(range(len(table)))
    tol = 1e-9 * min(steps)
    for k, b in enumerate(bins):
        assert np.all(table.time[b] > edges[k] - tol) and np.all(table.time[b] <= edges[k + 1] + tol)


# -- bad data: one line naming the file and the cause ----------------------------------------------------------------
def _error(call) -> str:
    with pytest.raises(ObservationError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_file_that_does_not_exist(tmp_path):
    for reader in (read_dsg, read_csv):
        msg = _error(lambda reader=reader: reader(tmp_path / "gone.nc", CSV_REQUEST))
        assert f"observation file {tmp_path / 'gone.nc'}: does not exist" == msg
    assert "is not a file" in _error(lambda: read(tmp_path))


def test_not_netcdf(tmp_path):
    path = _csv(tmp_path / "stations.nc", ["time,x,variable,value"])
    msg = _error(lambda: read(path))
    assert str(path) in msg and "is not a NetCDF file" in msg


@pytest.mark.parametrize("writer", [write_orthogonal, write_point])
def test_truncated_netcdf(tmp_path, writer):
    path = writer(tmp_path / "t.nc", MODEL)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _error(lambda: read(path))
    assert str(path) in msg and "truncated or corrupted" in msg
    path.write_bytes(data[:2])
    assert "empty or truncated" in _error(lambda: read(path))


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"])
@pytest.mark.parametrize("unlimited", [False, True], ids=["fixed", "records"])
def test_truncated_classic_netcdf(tmp_path, fmt, unlimited):
    """The netCDF library reads a cut classic file without complaint (zeros); the reader checks the header's size."""
    path = tmp_path / "c.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.featureType = "point"
        nc.createDimension("obs", None if unlimited else 50)
        for name, units in (("time", "hours since 2026-03-01"), ("x", "km"), ("h", "cm")):
            _sn(nc.createVariable(name, "f8", ("obs",)), units=units)[:] = np.arange(1.0, 51.0)
        nc.createVariable("flag", "i1", ("obs",))[:] = np.ones(50, dtype=np.int8)
    a = read(path, {"h": {"units": "m"}})
    np.testing.assert_allclose(a.value, np.arange(1.0, 51.0) / 100.0, rtol=RTOL)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    msg = _error(lambda: read(path))
    assert msg.startswith(f"observation file {path}: is truncated: it has {len(data) - 8} bytes, but its header "
                          "places data up to byte")
    path.write_bytes(data[:40])
    assert "is truncated or corrupted (the header is cut short)" in _error(lambda: read(path))


@pytest.mark.parametrize("feature, match", [("profile", "featureType 'profile' is not read by twin"),
                                            (None, "no global featureType attribute")])
def test_wrong_feature_type(tmp_path, feature, match):
    path = write_orthogonal(tmp_path / "f.nc", MODEL)
    with netCDF4.Dataset(path, "a") as nc:
        if feature is None:
            nc.delncattr("featureType")
        else:
            nc.featureType = feature
    msg = _error(lambda: read(path))
    assert str(path) in msg and match in msg


def _edit(path, name, **attrs):
    with netCDF4.Dataset(path, "a") as nc:
        var = nc.variables[name]
        for k, v in attrs.items():
            if v is None:
                var.delncattr(k)
            else:
                var.setncattr(k, v)
    return path


@pytest.mark.parametrize("name, attrs, variables, match", [
    ("sea_level", {"units": None}, None, "variable 'sea_level' (for 'h'): 'sea_level' has no units attribute"),
    ("sea_level", {"units": "K"}, None, "variable 'sea_level' (for 'h'): units 'K' are not convertible to 'm'"),
    ("sea_level", {"units": "bogus"}, None, "variable 'sea_level' (for 'h'): unknown units 'bogus'"),
    ("time", {"units": None}, None, "'time' has no units attribute"),
    ("time", {"units": "hours since 2026-03-01", "calendar": "noleap"}, None,
     "time coordinate 'time': calendar 'noleap' is not supported"),
    ("time", {"units": "m"}, None, "time coordinate 'time': time units 'm'"),
    ("x", {"units": "degrees_east"}, None, "missing coordinates: no x position"),
    ("x", {"units": "s"}, None, "coordinate 'x': units 's' are not convertible to 'm'"),
    ("sea_level_error", {"units": "Pa"}, None, "standard error 'sea_level_error'"),
    ("sea_level", {"ancillary_variables": "nowhere"}, None, "ancillary_variables attribute names 'nowhere'"),
    ("sea_level", {"coordinates": "time x y ghost"}, None, "coordinates attribute names 'ghost'"),
    ("wind", {}, {"u": {"name": "wind", "units": "m/s"}}, "variable 'wind' (for 'u'): no observation error"),
    ("wind", {}, {"u": {"name": "windd", "units": "m/s"}}, "has no variable 'windd'"),
    ("wind", {}, {"u": {"standard_name": "northward_wind", "units": "m/s"}}, "no variable has standard_name "
                                                                             "'northward_wind'"),
    ("wind", {"standard_name": "sea_surface_height"}, None, "variables sea_level, wind all have standard_name"),
    ("wind", {}, {"u": {"name": "wind", "unit": "m/s"}}, "variable 'u': unknown key(s) unit"),
])
def test_bad_attributes(tmp_path, name, attrs, variables, match):
    path = _edit(write_orthogonal(tmp_path / "b.nc", OTHER), name, **attrs)
    msg = _error(lambda: read(path, variables, error_std=None))
    assert msg.startswith(f"observation file {path}: ") and match in msg, msg


def test_missing_coordinates(tmp_path):
    path = tmp_path / "nox.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.featureType = "point"
        nc.createDimension("obs", 2)
        for name, units in (("time", "s"), ("lon", "degrees_east"), ("lat", "degrees_north"), ("h", "m")):
            _sn(nc.createVariable(name, "f8", ("obs",)), units=units)[:] = [1.0, 2.0]
        nc.variables["h"].coordinates = "time lat lon"
    msg = _error(lambda: read(path, {"h": {"units": "m", "error_std": 1.0}}))
    assert msg.startswith(f"observation file {path}: variable 'h': missing coordinates: no x position")
    assert "latitude/longitude" in msg
    with netCDF4.Dataset(path, "a") as nc:
        nc.renameVariable("time", "when")
        nc.variables["h"].coordinates = "when lat lon"
    msg = _error(lambda: read(path, {"h": {"units": "m", "error_std": 1.0}}))
    assert "variable 'h': missing time coordinate" in msg


def test_unlinked_ragged_coordinate(tmp_path):
    path = write_ragged(tmp_path / "r.nc", MODEL)
    _edit(path, "row_size", sample_dimension=None)
    msg = _error(lambda: read(path))
    assert "coordinate 'x' has dimensions ('station',)" in msg and "no ragged-array count or index" in msg
    path = write_ragged(tmp_path / "r2.nc", MODEL)
    with netCDF4.Dataset(path, "a") as nc:
        nc.variables["row_size"][0] = 9
    assert "row sizes in 'row_size' sum to 16" in _error(lambda: read(path))


def test_all_missing_variable(tmp_path):
    path = write_point(tmp_path / "nan.nc", MODEL,
                       sea_level=("obs", np.full(11, np.nan), {"standard_name": "sea_surface_height", "units": "m",
                                                               "coordinates": "time x y"}))
    msg = _error(lambda: read(path, error_std=1.0))
    assert msg == f"observation file {path}: variable 'sea_level' (for 'h'): all 11 values are missing " \
                  "(_FillValue, missing_value, outside valid_range or NaN)"


def test_infinite_value_is_refused_like_csv(tmp_path):
    path = write_orthogonal(tmp_path / "inf.nc", MODEL)
    with netCDF4.Dataset(path, "a") as nc:
        nc.variables["sea_level"][2, 1] = np.inf
        nc.variables["sea_level"][2, 2] = -np.inf
    msg = _error(lambda: read(path))
    assert msg == (f"observation file {path}: variable 'sea_level' (for 'h'): observation 9 (station 2, time 1) is inf "
                   "(2 infinite values): a measurement is finite; write a missing value as _FillValue, "
                   "missing_value or NaN")


def test_present_value_without_time_or_with_bad_error(tmp_path):
    path = write_orthogonal(tmp_path / "t.nc", MODEL)
    with netCDF4.Dataset(path, "a") as nc:
        nc.variables["time"][2] = FILL
    msg = _error(lambda: read(path))
    assert "variable 'sea_level' (for 'h'): observation 2 (station 0, time 2) has a value but its time ('time') is " \
           "missing (3 such observations)" in msg
    path = write_orthogonal(tmp_path / "e.nc", MODEL)
    with netCDF4.Dataset(path, "a") as nc:
        nc.variables["sea_level_error"][2, 1] = -1.0
    msg = _error(lambda: read(path))
    assert "observation 9 (station 2, time 1) has standard error -1.0 in 'sea_level_error'" in msg


def test_too_many_observations(tmp_path):
    path = write_orthogonal(tmp_path / "big.nc", MODEL)
    msg = _error(lambda: read(path, REQUEST, max_obs=20))
    assert str(path) in msg and "36 values, more than the limit of 20" in msg and "max_obs=" in msg
    csv = _csv(tmp_path / "big.csv", ["time,x,variable,value"] + ["1,1,a,1"] * 5)
    msg = _error(lambda: read_csv(csv, {"a": {"units": "m"}}, time_units="s", error_std=1.0, max_obs=4))
    assert str(csv) in msg and "more than the limit of 4" in msg


@pytest.mark.parametrize("lines, kw, match", [
    (["time,x,variable,vale"], {}, "line 1: unknown column 'vale' (did you mean 'value'?)"),
    (["# header follows", "time,variable,value"], {}, "line 2: missing column(s) x"),
    (["time,x,x,variable,value"], {}, "column(s) x appear twice"),
    (["time,x,z,variable,value"], {}, "column z needs a column y"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,h"], {}, "line 2: 3 fields, but the header has 4"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,h,high"], {}, "line 2: variable 'h': value 'high' is not a number"),
    (["time,x,variable,value", "2026-03-01T01:00Z,east,h,1"], {}, "line 2: variable 'h': x 'east' is not a number"),
    (["time,x,variable,value", "tomorrow,1,h,1"], {}, "line 2: variable 'h': time: 'tomorrow' is not an ISO 8601"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,h,1", "3.5,1,h,1"], {}, "line 3: variable 'h': time '3.5' is a "
                                                                           "number, but the first time is an ISO"),
    (["time,x,variable,value", "3.5,1,h,1"], {}, "times are numbers, but no time_units were given"),
    (["time,x,variable,value,units", "2026-03-01T01:00Z,1,h,1,hPa"], {}, "line 2: variable 'h': units 'hPa': units "
                                                                         "'hPa' are not convertible to 'm'"),
    (["time,x,variable,value,units", "2026-03-01T01:00Z,1,h,1,"], {}, "line 2: variable 'h': units '': no units"),
    (["time,x,variable,value,error", "2026-03-01T01:00Z,1,h,1,0"], {}, "line 2: variable 'h': error 0.0 must be "
                                                                       "positive"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,g,1"], {}, "has no rows of variable 'h' (variables in the "
                                                               "file: g)"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,h,"], {}, "all 1 values of 'h' are missing"),
    (["# nothing but comments"], {}, "has no header line"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,h,1"], {"error_std": None}, "no observation error"),
    (["time,x,variable,value", "2026-03-01T01:00Z,1,h,1"], {"position_units": "s"}, "positions: units 's' are not "
                                                                                    "convertible to 'm'"),
])
def test_bad_csv(tmp_path, lines, kw, match):
    path = _csv(tmp_path / "bad.csv", lines)
    options = {"start": START, "error_std": 1.0, **kw}
    msg = _error(lambda: read_csv(path, {"h": {"units": "m"}}, **options))
    assert msg.startswith(f"observation file {path}: ") and match in msg, msg


def test_binary_file_given_as_csv(tmp_path):
    path = write_orthogonal(tmp_path / "stations.csv", MODEL)
    msg = _error(lambda: read_csv(path, CSV_REQUEST))
    assert str(path) in msg and "CSV" in msg


def test_epoch_is_the_origin_without_a_start(tmp_path):
    a = read(write_point(tmp_path / "p.nc", OTHER), start=None, model_time_units="day")
    expected = (START - EPOCH).total_seconds() / 86400.0 + expected_h()[0] / 86400.0
    np.testing.assert_allclose(a.time, expected, rtol=RTOL)
