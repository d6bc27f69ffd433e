"""Strain-gauge readings as files: what a structure's twin experiment writes of its ``strain_gauges`` network into
``observations.nc`` (:func:`export`), and the ``strain_gauge_readings`` network that assimilates such files, the
readings of a real structure (:func:`read`, :func:`sites`).

YAML (``assimilation.observations``; :class:`twin.kinds.structure.config.StrainGaugeReadingsNetwork`)::

    - type: strain_gauge_readings
      model: mast                           # in a coupled campaign, the structure component
      file: gauges.nc                       # relative to the campaign file
      strain: obs_mast_strain               # the file's variable of the strains
      error: obs_mast_strain_error          # optional: its error standard deviations
      angle: obs_mast_strain_angle          # the file's variable of the gauge directions

The file is CF-1.10 discrete-sampling-geometry NetCDF, read by :func:`twin.observations.dsg.read_dsg` (every
representation it reads: ``timeSeries`` of stations with ``strain(station, time)``, ragged arrays, ...). Each gauge is
a station: its position ``x, y`` (axis X/Y or projection coordinates, in any length units, converted to the
structure's) and its direction ``angle(station)`` (counter-clockwise from the x axis, in ``degree``, ``rad`` or any
angle units). The strains are normal strains along the gauge, in any dimensionless units pint converts: ``"1"``,
``"microstrain"``, ``"um/m"``, ``"1e-6"`` (a UDUNITS scale factor, :mod:`twin.core.cfunits`), with their error
standard deviations in ``error`` (or an ancillary variable with a ``standard_error`` standard name, or the network's
``error_std``). No CSV: a gauge's direction is a per-station variable, which the CSV layout
(:mod:`twin.observations.csvfile`) has no column for.

Each distinct gauge (position and direction) is one site, ordered as the file first lists it; its operator row is the
:class:`twin.kinds.structure.gauges.StrainGauges` row at that position and direction,
``eps_nn = n_x^2 eps_xx + n_y^2 eps_yy + n_x n_y gamma_xy`` (:func:`~twin.kinds.structure.gauges
.strain_gauge_matrix`), so that a twin experiment's file read back gives its network's rows bitwise and the
guardrails watch the same gauges (one CUSUM per site). Two gauges at one point in different directions (a rosette)
are two sites: the table's variable of a reading names its direction (``"strain along 90 deg"``), so quality control
does not take them for duplicates. A gauge outside the structure is refused (its coordinates are in another frame or
unit, not a reading to flag); missing readings, times outside the campaign and duplicates are counted by the general
quality control (:mod:`twin.observations.file_network`).

Why a network type of its own rather than ``file:`` on ``strain_gauges``: whether a network reads files decides, per
type, that the campaign has no truth and no nature run, which files the loader resolves and that files are not mixed
with synthetic networks (:func:`twin.core.kinds.reads_files`); and the two share no key but the name and the
component: the synthetic network's ``points``, ``angles`` and ``fault`` are in the file here, the file's variables
mean nothing to a twin experiment. The tumour kind splits ``imaging`` and ``imaging_visits`` the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.core.errors import ObservationError

#: the table's units of strain and the file variables' stem a twin experiment writes (``obs_[<component>_]strain``)
STRAIN = "strain"
STRAIN_UNITS = "1"
ANGLE_UNITS = "degree"


def _label(angle_deg: np.ndarray) -> np.ndarray:
    """The table's variable of each reading: the strain along its gauge's direction."""
    return np.array([f"{STRAIN} along {a:g} deg" for a in np.asarray(angle_deg, dtype=float)], dtype=str)


def export(spec, part, model):
    """How ``observations.nc`` writes the ``strain_gauges`` network ``spec`` (:class:`twin.core.kinds.NetworkType`
    ``export``): one station per gauge at its position, its direction ``angle`` in degrees, the strains in ``"1"``.
    ``part``: the network's rows on the structure ``model``, checked to be the gauges of ``spec`` (to round-off).

    Raises
    ------
    ObservationError
        When the rows are not those gauges (the network is then named in ``twin_networks_not_written``).
    """
    from twin.kinds.structure.gauges import strain_gauge_matrix
    from twin.observations.export import Stations

    points = np.asarray(part.locations, dtype=float)
    angles = np.broadcast_to(np.asarray(spec.angles, dtype=float), (points.shape[0],)).copy()
    H = part.matrix
    ref = strain_gauge_matrix(model.grid, points, np.deg2rad(angles))
    if ref.shape != H.shape or abs(ref - H).max() > 1e-12 * max(1.0, abs(H).max()):
        raise ObservationError("its rows are not strain gauges at their positions and angles")
    return Stations(STRAIN, STRAIN_UNITS, "normal strain along the gauge", points,
                    {"angle": (angles, {"long_name": "gauge direction, counter-clockwise from the x axis",
                                        "units": ANGLE_UNITS})})


def read(spec, path, model, start):
    """The readings of the file ``path`` for the structure ``model`` as an
    :class:`~twin.observations.table.ObservationTable`: strains in ``"1"``, positions in the structure's length units,
    times in its time units after ``start``, the gauge direction of every reading in ``table.auxiliary["angle"]``
    (degrees). :class:`twin.core.kinds.NetworkType` ``read``.

    Raises
    ------
    ObservationError
        One line naming the file for a CSV file, what :func:`twin.observations.dsg.read_dsg` refuses (no such
        variable, no angle variable, a reading without an angle, units that do not convert, ...) and a gauge outside
        the structure.
    """
    from twin.observations.dsg import read_dsg

    path = Path(path)
    if path.suffix.lower() == ".csv":
        raise ObservationError(f"observation file {path}: strain-gauge readings are read from CF NetCDF files (the "
                               "gauge direction is a per-station variable, which the CSV layout has no column for)")
    request = {"name": spec.strain, "units": STRAIN_UNITS, "error": spec.error}
    table = read_dsg(path, {STRAIN: {k: v for k, v in request.items() if v is not None}}, start=start,
                     model_time_units=model.time_units, length_units=model.length_units,
                     error_std=spec.default_error(), ndim=model.grid.dim,
                     auxiliary={"angle": (spec.angle, ANGLE_UNITS)})
    inside = model.grid.contains(table.position)
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        raise ObservationError(f"observation file {path}: variable '{spec.strain}': observation {table.row[i]}: its "
                               f"gauge at {table.position[i].tolist()} "
                               f"{model.length_units} lies outside the structure "
                               f"{[list(e) for e in model.grid.extent]} ({model.length_units}); the gauge positions "
                               "must be in the structure's frame, in length units the file states")
    angle = np.asarray(table.auxiliary["angle"], dtype=float)
    far = np.flatnonzero(np.abs(angle) > 360.0)  # a direction is within a turn (1e300 degrees overflowed, unsaid)
    if far.size:
        i = int(far[0])
        raise ObservationError(f"observation file {path}: variable '{spec.angle}': observation {table.row[i]}: its "
                               f"gauge direction {angle[i]:g} degree is more than a turn; give directions in [-360, "
                               "360] degree, in the angle units the file states")
    table.variable = _label(angle)
    return table


def _keys(table) -> tuple[np.ndarray, np.ndarray]:
    """One code per distinct gauge (position and direction) of every row, numbered in order of first appearance,
    and the first row of each code."""
    import pandas as pd

    columns = {f"x{a}": np.round(table.position[:, a], 12) for a in range(table.position.shape[1])}
    columns["angle"] = np.round(table.auxiliary["angle"], 12)
    codes, _ = pd.MultiIndex.from_frame(pd.DataFrame(columns)).factorize()
    codes = codes.astype(np.int64)
    return codes, np.unique(codes, return_index=True)[1]


def sites(spec, table, ok: np.ndarray, model):
    """The gauges of the accepted rows ``ok``, in the order the file first lists them: the site of every row (-1
    outside ``ok``), the :class:`~twin.kinds.structure.gauges.StrainGauges` rows, the positions and the variable of
    each site (:func:`twin.observations.file_network.series` ``sites``)."""
    from twin.kinds.structure.gauges import strain_gauge_matrix

    code, first = _keys(table)
    used = np.unique(code[ok])  # ascending code: the file's order
    site = np.full(first.size, -1, dtype=np.int64)
    site[used] = np.arange(used.size)
    site_of = np.full(len(table), -1, dtype=np.int64)
    site_of[ok] = site[code[ok]]
    first = first[used]
    positions = table.position[first]
    H = strain_gauge_matrix(model.grid, positions, np.deg2rad(table.auxiliary["angle"][first]))
    return site_of, H, positions, table.variable[first].tolist()


def gauges(spec, model, start) -> tuple[np.ndarray, np.ndarray]:
    """Every gauge of the network's files, in the order they first appear: positions (structure length units) and
    directions (rad); what the maintenance decision's placement study takes as the deployed layout."""
    from twin.observations.table import concatenate

    tables = [read(spec, path, model, start) for path in spec.files()]
    table = concatenate(tables, tables[0].source, "", model.time_units, model.length_units)
    _, first = _keys(table)
    return table.position[first], np.deg2rad(table.auxiliary["angle"][first])


def build(spec, model, i: int, name: str):
    """Never reached through a campaign (a network read from files is built with its cycles,
    :func:`twin.observations.networks.build`)."""
    from twin.observations.networks import where

    raise ObservationError(f"{where(i)}: strain_gauge_readings reads measured strains from files; it observes a "
                           "campaign through assimilation.observations only")
