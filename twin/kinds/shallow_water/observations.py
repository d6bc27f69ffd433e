"""Observation operators for the shallow-water atmosphere: stations, gridded subsets and satellite swaths.

All three are linear maps of the state (``H x``, stored as a PETSc AIJ matrix, see
:class:`~twin.observations.base.LinearObservationOperator`) with Gaussian, uncorrelated errors ``R = diag(sigma^2)``:

* :class:`StationOperator`: bilinear interpolation of chosen variables (``h`` [m], ``u``, ``v`` [m/s], ``tracer``
  column amount ``h c`` [m]) at fixed points [m]; one error standard deviation per variable (instrument plus
  representativeness error).
* :class:`GriddedSubsetOperator`: the values at every ``stride``-th grid point of a box (a gridded product, e.g. an
  analysis or a radar composite), at the variable's own C-grid position; one error per variable.
* :class:`SwathOperator`: an along-track "satellite" swath: a ground track from ``start`` along ``heading`` sampled
  every ``spacing``, with ``n_across`` footprints across a swath of ``width``, wrapped around the periodic domain;
  the error grows quadratically from ``error_std`` at nadir to ``edge_error_factor * error_std`` at the swath edges
  (larger incidence angles).

The variables live at their C-grid points (``u`` on west faces, ``v`` on south faces): a point is interpolated from
the four nearest points of its own variable, so a station placed on a ``u``-point returns that ``u`` exactly.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from twin.core.errors import ObservationError
from twin.core.grid import Grid
from twin.kinds.shallow_water.staggering import COMPONENTS, OFFSETS, coordinates, wrap
from twin.observations.base import (
    LinearObservationOperator,
    interpolation_matrix,
    natural_index,
)

ErrorSpec = float | Mapping[str, float] | Sequence[float] | np.ndarray


def _component(grid: Grid, variable: str, who: str) -> int:
    names = COMPONENTS[:grid.dof]
    if variable not in names:
        raise ObservationError(f"observation operator '{who}': unknown variable {variable!r}; the state has "
                               f"{list(names)}")
    return names.index(variable)


def _errors(error_std: ErrorSpec, variables: Sequence[str], counts: Sequence[int], who: str) -> np.ndarray:
    """Per-observation standard deviations from a scalar, a per-variable mapping or a full array."""
    if isinstance(error_std, Mapping):
        missing = [v for v in variables if v not in error_std]
        if missing:
            raise ObservationError(f"observation operator '{who}': no error_std for variable(s) {missing}")
        return np.concatenate([np.full(n, float(error_std[v])) for v, n in zip(variables, counts)])
    err = np.asarray(error_std, dtype=float)
    total = int(sum(counts))
    if err.ndim == 0:
        return np.full(total, float(err))
    if err.shape != (total,):
        raise ObservationError(f"observation operator '{who}': error_std has {err.size} entries for {total} "
                               f"observations")
    return err


def staggered_interpolation(grid: Grid, points: np.ndarray, variable: str, who: str = "stations") -> sp.csr_matrix:
    """Bilinear interpolation of ``variable`` at physical ``points`` (``(m, 2)``, metres) on the periodic C-grid."""
    comp = _component(grid, variable, who)
    points = np.atleast_2d(np.asarray(points, dtype=float))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ObservationError(f"observation operator '{who}': points must have shape (m, 2), got {points.shape}")
    inside = grid.contains(points)
    if not inside.all():
        bad = int(np.flatnonzero(~inside)[0])
        raise ObservationError(f"observation operator '{who}': point {points[bad].tolist()} lies outside the model "
                               f"domain {[list(e) for e in grid.extent]}")
    # interpolation_matrix treats values as cell-centred: shift the points by the variable's offset, then wrap.
    shift = np.array([-OFFSETS[variable][a] * grid.spacing[a] for a in range(2)])
    return interpolation_matrix(grid, wrap(points + shift, grid), component=comp)


class StationOperator(LinearObservationOperator):
    """Point values of ``variables`` at ``points`` (rows ordered variable by variable, stations within).

    Parameters
    ----------
    grid : Grid
        The shallow-water model's grid.
    points : array, shape (m, 2)
        Station positions [m].
    variables : sequence of str
        Any of ``h, u, v, tracer``.
    error_std : float, mapping or array
        One value, one per variable (``{"h": 2.0, "u": 1.5}``), or one per observation; in the variable's units.
    """

    name = "stations"

    def __init__(self, grid: Grid, points, variables: Sequence[str] = ("h",), error_std: ErrorSpec = 1.0,
                 name: str | None = None):
        who = name or self.name
        points = np.atleast_2d(np.asarray(points, dtype=float))
        variables = list(variables)
        if not variables:
            raise ObservationError(f"observation operator '{who}': no variables given")
        blocks = [staggered_interpolation(grid, points, v, who) for v in variables]
        err = _errors(error_std, variables, [len(points)] * len(variables), who)
        self.variables = [v for v in variables for _ in range(len(points))]
        super().__init__(grid, sp.vstack(blocks).tocsr(), err, np.tile(points, (len(variables), 1)), name=who)


class GriddedSubsetOperator(LinearObservationOperator):
    """Values of ``variables`` at every ``stride``-th point of each variable inside ``region``.

    Parameters
    ----------
    grid : Grid
    variables : sequence of str
    stride : (int, int)
        Take every ``sx``-th point along x and ``sy``-th along y, starting from the first inside the region.
    region : ((x0, x1), (y0, y1)), optional
        Box [m] (default: the whole domain); points of the variable inside it (bounds included) are used.
    error_std : float, mapping or array
        As for :class:`StationOperator`.
    """

    name = "gridded"

    def __init__(self, grid: Grid, variables: Sequence[str] = ("h",), stride: Sequence[int] = (1, 1),
                 region=None, error_std: ErrorSpec = 1.0, name: str | None = None):
        who = name or self.name
        sx, sy = (int(s) for s in stride)
        if sx < 1 or sy < 1:
            raise ObservationError(f"observation operator '{who}': stride must be >= 1, got {tuple(stride)}")
        region = grid.extent if region is None else region
        rows, locs, counts = [], [], []
        for v in variables:
            comp = _component(grid, v, who)
            X, Y = coordinates(grid, v, owned=False)
            inside = ((X >= region[0][0]) & (X <= region[0][1]) & (Y >= region[1][0]) & (Y <= region[1][1]))
            jj, ii = np.nonzero(inside)
            if jj.size:
                keep = ((ii - ii.min()) % sx == 0) & ((jj - jj.min()) % sy == 0)
                jj, ii = jj[keep], ii[keep]
            if not jj.size:
                raise ObservationError(f"observation operator '{who}': no {v}-points inside region {region}")
            rows.append(natural_index(grid, (ii, jj), comp))
            locs.append(np.column_stack([X[jj, ii], Y[jj, ii]]))
            counts.append(jj.size)
        cols = np.concatenate(rows)
        H = sp.csr_matrix((np.ones(cols.size), (np.arange(cols.size), cols)), shape=(cols.size, grid.size * grid.dof))
        err = _errors(error_std, list(variables), counts, who)
        self.variables = [v for v, n in zip(variables, counts) for _ in range(n)]
        super().__init__(grid, H, err, np.concatenate(locs), name=who)


def swath_points(grid: Grid, start: Sequence[float], heading: float, length: float, spacing: float,
                 width: float = 0.0, n_across: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Footprint centres of a swath and their signed cross-track distance [m].

    The track starts at ``start`` [m], runs ``length`` [m] along ``heading`` (degrees counter-clockwise from +x),
    with samples every ``spacing`` [m]; ``n_across`` footprints span ``[-width/2, width/2]`` across it. Points wrap
    around the periodic domain. Returns ``(points (m, 2), cross (m,))``.
    """
    if not (length >= 0 and spacing > 0 and width >= 0 and n_across >= 1):
        raise ObservationError(f"swath needs length >= 0, spacing > 0, width >= 0, n_across >= 1; got length="
                               f"{length}, spacing={spacing}, width={width}, n_across={n_across}")
    theta = np.deg2rad(heading)
    along = np.arange(0.0, length + 0.5 * spacing, spacing)
    cross = np.linspace(-0.5 * width, 0.5 * width, n_across) if n_across > 1 else np.zeros(1)
    t = np.array([np.cos(theta), np.sin(theta)])
    nrm = np.array([-np.sin(theta), np.cos(theta)])
    pts = np.asarray(start, dtype=float)[None, None, :] + along[:, None, None] * t + cross[None, :, None] * nrm
    return wrap(pts.reshape(-1, 2), grid), np.tile(cross, along.size)


class SwathOperator(StationOperator):
    """Along-track satellite swath of ``variables`` (see :func:`swath_points`), with a cross-track error model
    ``sigma(d) = error_std * (1 + (edge_error_factor - 1) (2 d / width)^2)``."""

    name = "swath"

    def __init__(self, grid: Grid, start: Sequence[float], heading: float, length: float, spacing: float,
                 width: float = 0.0, n_across: int = 1, variables: Sequence[str] = ("h",), error_std: float = 1.0,
                 edge_error_factor: float = 1.0, name: str | None = None):
        who = name or self.name
        if not (np.isfinite(error_std) and error_std > 0 and edge_error_factor >= 1):
            raise ObservationError(f"observation operator '{who}': error_std must be positive and "
                                   f"edge_error_factor >= 1, got {error_std}, {edge_error_factor}")
        pts, cross = swath_points(grid, start, heading, length, spacing, width, n_across)
        rel = (2 * cross / width) ** 2 if width > 0 else np.zeros_like(cross)
        sigma = error_std * (1 + (edge_error_factor - 1) * rel)
        self.cross_track = np.tile(cross, len(variables))
        super().__init__(grid, pts, variables, np.tile(sigma, len(variables)), name=who)


def build_stations(spec, model, i: int, name: str):
    """The ``stations`` network (:class:`twin.kinds.shallow_water.config.StationsNetwork`)."""
    from twin.observations.networks import from_operator, positions

    pts = positions(spec.points, spec, model, i)
    return from_operator(StationOperator(model.grid, pts, spec.variables, spec.error_std, name=name), name)


def build_swath(spec, model, i: int, name: str):
    """The ``swath`` network (:class:`twin.kinds.shallow_water.config.SwathNetwork`)."""
    from twin.observations.networks import from_operator, scale

    s = scale(spec, model)
    op = SwathOperator(model.grid, np.asarray(spec.start) * s, spec.heading, spec.length * s, spec.spacing * s,
                       spec.width * s, spec.n_across, spec.variables, float(spec.error_std), spec.edge_error_factor,
                       name=name)
    return from_operator(op, name)


def build_gridded(spec, model, i: int, name: str):
    """The ``gridded`` network (:class:`twin.kinds.shallow_water.config.GriddedNetwork`)."""
    from twin.observations.networks import from_operator, scale

    s = scale(spec, model)
    region = None if spec.region is None else (np.asarray(spec.region) * s).tolist()
    op = GriddedSubsetOperator(model.grid, spec.variables, spec.stride, region, spec.error_std, name=name)
    return from_operator(op, name)
