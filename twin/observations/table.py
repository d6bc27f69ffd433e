"""Measured observations as one table: what every file reader returns, and how it is cut into assimilation cycles.

An :class:`ObservationTable` holds ``n`` observations, each with its model time ``t`` (model time units after the
campaign start, :mod:`twin.core.calendar`), position ``x`` (model length units), the model variable it observes, its
value ``y`` and error standard deviation ``sigma`` (both in the units requested for that variable), and where it came
from: the file, its SHA-256 and the row in the file, so that an error or a quality-control record can point at it.

Cycles: with cycle edges ``e_0 < e_1 < ... < e_K`` (model time), observation ``i`` belongs to cycle ``k`` when
``e_k < t_i <= e_(k+1)`` (:func:`bin_by_cycle`): an analysis at ``e_(k+1)`` uses what was measured since the previous
one, up to and including its own time. An observation at or before ``e_0`` or after ``e_K`` is outside the campaign;
:func:`bin_by_cycle` refuses such a table (naming the first one) and :func:`outside_campaign` finds them, so that
quality control can flag and remove them first. Times within ``1e-9`` of the shortest cycle of an edge count as on
the edge: round-off from a unit conversion (hours to days) must not move an observation into the next cycle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np

from twin.core.errors import ObservationError
from twin.core.units import parse_units

#: refuse files with more observations than this unless the caller raises it (``max_obs=``)
DEFAULT_MAX_OBS = 10**7

_EDGE_TOLERANCE = 1e-9  # relative to the shortest cycle


@dataclass(frozen=True)
class VariableRequest:
    """Which values of a file become observations of the model variable ``variable``.

    Parameters
    ----------
    variable : str
        The model variable (e.g. ``h``, ``tumour.density``); the table's ``variable`` column holds it.
    units : str
        Units of the table's values and errors for this variable (the model's units).
    name : str, optional
        The variable's name in the file (NetCDF variable, or the CSV ``variable`` column).
    standard_name : str, optional
        Its CF ``standard_name`` (used when ``name`` is not given). With neither, the file name is ``variable``.
    error_std : float, optional
        Observation error standard deviation in ``units``, used when the file has none for this variable.
    error : str, optional
        The NetCDF variable holding this variable's error standard deviations, for files whose errors carry no CF
        ``standard_error`` standard name (a variable without a standard name cannot have one).
    """

    variable: str
    units: str
    name: str | None = None
    standard_name: str | None = None
    error_std: float | None = None
    error: str | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("name", "standard_name", "units", "error_std", "error")

    @classmethod
    def from_mapping(cls, variable: str, spec: Mapping) -> "VariableRequest":
        """A request from a YAML-like mapping ``{name | standard_name, units, [error_std], [error]}``.

        Raises
        ------
        ValueError
            For an unknown key, missing or unknown ``units``, or a non-positive ``error_std``.
        """
        if isinstance(spec, VariableRequest):
            return spec
        unknown = sorted(set(spec) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"variable '{variable}': unknown key(s) {', '.join(unknown)} (expected "
                             f"{', '.join(cls.KEYS)})")
        units = spec.get("units")
        if not units:
            raise ValueError(f"variable '{variable}': 'units' is required (the model's units of '{variable}')")
        try:
            parse_units(str(units))
        except ValueError as exc:
            raise ValueError(f"variable '{variable}': {exc}") from None
        err = spec.get("error_std")
        if err is not None and not (np.isfinite(float(err)) and float(err) > 0):
            raise ValueError(f"variable '{variable}': error_std must be positive and finite, got {err!r}")
        return cls(variable=str(variable), units=str(units), name=spec.get("name"),
                   standard_name=spec.get("standard_name"), error_std=None if err is None else float(err),
                   error=spec.get("error"))

    def describe(self) -> str:
        """How the request finds its file variable, for messages."""
        if self.name:
            return f"'{self.name}'"
        if self.standard_name:
            return f"standard_name '{self.standard_name}'"
        return f"'{self.variable}'"


def parse_requests(variables: Mapping[str, Mapping | VariableRequest]) -> list[VariableRequest]:
    """The :class:`VariableRequest` of each entry of ``{model variable: spec}`` (``ValueError`` if one is bad)."""
    if not variables:
        raise ValueError("no variables requested")
    return [VariableRequest.from_mapping(k, v) for k, v in variables.items()]


@dataclass
class ObservationTable:
    """Observations read from one file (see the module docstring).

    Attributes
    ----------
    time : ndarray, shape (n,)
        Model time (``time_units``) after the campaign start.
    position : ndarray, shape (n, d)
        Position in ``length_units``, columns in axis order ``x, y[, z]``.
    variable : ndarray of str, shape (n,)
        The model variable each observation observes.
    value, error : ndarray, shape (n,)
        Observed value and error standard deviation (> 0), in ``units[variable]``.
    row : ndarray of int64, shape (n,)
        Where in the file: for NetCDF the index into the file variable flattened in C order (for ``h(station,
        time)`` that is ``station * n_time + time``); for CSV the 0-based data row.
    source : str
        Path of the file.
    sha256 : str
        SHA-256 of the file's bytes (hex).
    units : dict
        Units of ``value`` and ``error`` per model variable.
    missing : dict
        Per model variable, how many values the file held as missing (``_FillValue``, ``missing_value``, NaN, an
        empty CSV cell); they are not in the table.
    time_units, length_units : str
        The model units of ``time`` and ``position``.
    auxiliary : dict
        Per-observation values of the file's auxiliary variables asked for (``{name: array (n,)}``): what an
        observation operator needs besides the position, e.g. a strain gauge's direction
        (:func:`twin.observations.dsg.read_dsg` ``auxiliary``); empty by default.
    """

    time: np.ndarray
    position: np.ndarray
    variable: np.ndarray
    value: np.ndarray
    error: np.ndarray
    row: np.ndarray
    source: str
    sha256: str
    units: dict[str, str] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    time_units: str = "s"
    length_units: str = "m"
    auxiliary: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.time = np.asarray(self.time, dtype=np.float64).reshape(-1)
        n = self.time.size
        pos = np.asarray(self.position, dtype=np.float64)
        self.position = pos.reshape(n, -1) if n else pos.reshape(0, pos.shape[-1] if pos.ndim == 2 else 1)
        self.variable = _column(self.variable, n, str)
        self.value = np.asarray(self.value, dtype=np.float64).reshape(-1)
        self.error = _column(self.error, n, np.float64)
        self.row = _column(self.row, n, np.int64)
        if self.value.size != n:
            raise ValueError(f"observation table: {self.value.size} values for {n} times")
        self.auxiliary = {k: _column(v, n, np.float64) for k, v in self.auxiliary.items()}

    def __len__(self) -> int:
        return self.time.size

    def subset(self, index) -> "ObservationTable":
        """The observations ``index`` (an index array or boolean mask), with the same source and units."""
        return ObservationTable(self.time[index], self.position[index], self.variable[index], self.value[index],
                                self.error[index], self.row[index], self.source, self.sha256, dict(self.units),
                                dict(self.missing), self.time_units, self.length_units,
                                {k: v[index] for k, v in self.auxiliary.items()})

    def where(self, i: int) -> str:
        """``observation file F: variable 'v': observation r``, for messages about observation ``i``."""
        return f"observation file {self.source}: variable '{self.variable[i]}': observation {self.row[i]}"


def _column(values, n: int, dtype) -> np.ndarray:
    """``values`` as a length-``n`` array (a scalar is repeated; an array of the right shape is not copied)."""
    a = np.asarray(values, dtype=dtype)
    return a if a.shape == (n,) else np.broadcast_to(a, (n,)).copy()


def _edges(cycle_edges: Sequence[float]) -> np.ndarray:
    e = np.asarray(cycle_edges, dtype=np.float64).reshape(-1)
    if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"cycle edges must be at least two finite, increasing times, got {e.tolist()[:6]}")
    return e


def _cycle_of(table: ObservationTable, e: np.ndarray) -> np.ndarray:
    """Cycle index of every observation; -1 or ``len(e) - 1`` when outside."""
    tol = _EDGE_TOLERANCE * float(np.min(np.diff(e)))
    return np.searchsorted(e, table.time - tol, side="left") - 1


def outside_campaign(table: ObservationTable, cycle_edges: Sequence[float]) -> np.ndarray:
    """Indices of the observations in no cycle: ``t <= edges[0]`` or ``t > edges[-1]`` (within the edge tolerance)."""
    e = _edges(cycle_edges)
    k = _cycle_of(table, e)
    return np.flatnonzero((k < 0) | (k >= e.size - 1))


def bin_by_cycle(table: ObservationTable, cycle_edges: Sequence[float]) -> list[np.ndarray]:
    """Observations of each cycle: ``bins[k]`` holds the indices ``i`` with ``edges[k] < time[i] <= edges[k+1]``.

    Parameters
    ----------
    table : ObservationTable
    cycle_edges : sequence of float, length K + 1
        Increasing model times (the table's ``time_units``): the campaign start and the end of every cycle.

    Returns
    -------
    list of ndarray of int64, length K
        Sorted indices into ``table``; every observation is in exactly one.

    Raises
    ------
    ObservationError
        If an observation is outside ``(edges[0], edges[-1]]``: names the file, the first such observation, its time,
        how many there are and the campaign's span (remove them first with :func:`outside_campaign`).
    ValueError
        If the edges are not increasing.
    """
    e = _edges(cycle_edges)
    k = _cycle_of(table, e)
    out = np.flatnonzero((k < 0) | (k >= e.size - 1))
    if out.size:
        i = int(out[0])
        raise ObservationError(f"{table.where(i)}: time {table.time[i]:.9g} {table.time_units} is outside the "
                               f"campaign ({e[0]:.9g}, {e[-1]:.9g}] ({out.size} of {len(table)} observations "
                               "are); extend the timeline or leave them out of the file")
    order = np.argsort(k, kind="stable")
    bounds = np.searchsorted(k[order], np.arange(e.size))
    return [order[bounds[j]:bounds[j + 1]].astype(np.int64) for j in range(e.size - 1)]


# -- file checks shared by the readers -------------------------------------------------------------------------------
def existing_file(path) -> Path:
    """``path`` as a :class:`Path`, or ``ObservationError`` if it does not exist or is not a file."""
    p = Path(path)
    if not p.exists():
        raise ObservationError(f"observation file {p}: does not exist")
    if not p.is_file():
        raise ObservationError(f"observation file {p}: is not a file")
    return p


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_count(path: Path, count: int, max_obs: int, what: str) -> None:
    """Refuse ``count`` values (before they are allocated) when there are more than ``max_obs``."""
    if count > max_obs:
        raise ObservationError(f"observation file {path}: {what}: {count} values, more than the limit of "
                               f"{max_obs} observations per file; raise it with max_obs= if the machine has the "
                               "memory, or split the file")


#: the largest magnitude of an observed value or error, and the smallest error, a reader takes (model units): an
#: analysis squares them (innovation / error, its square summed), which 1e308 or an error of 1e-300 turn into inf or
#: NaN far from the file ("non-finite values", "eigenvalues did not converge")
MAX_MAGNITUDE = 1e150


def _within_range(table: ObservationTable) -> ObservationTable:
    """``table``, or :class:`ObservationError` naming its first value or error outside :data:`MAX_MAGNITUDE`."""
    for what, bad in (("value", np.abs(table.value) > MAX_MAGNITUDE),
                      ("error", (table.error > MAX_MAGNITUDE) | (table.error < 1.0 / MAX_MAGNITUDE))):
        hits = np.flatnonzero(bad)
        if hits.size:
            i = int(hits[0])
            number = table.value[i] if what == "value" else table.error[i]
            raise ObservationError(f"{table.where(i)}: {what} {number:g} {table.units.get(table.variable[i], '')} "
                                   f"is beyond what an analysis can square (a value within +-{MAX_MAGNITUDE:g}, an "
                                   f"error between {1 / MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}; {hits.size} such "
                                   "observations): check the file's numbers and units")
    return table


def concatenate(parts: Sequence[ObservationTable], source: str, sha256: str, time_units: str,
                length_units: str) -> ObservationTable:
    """One table of the observations of ``parts`` (each one variable of the same file), in order; values and errors
    beyond :data:`MAX_MAGNITUDE` are refused."""
    if len(parts) == 1:
        p = parts[0]
        table = ObservationTable(p.time, p.position, p.variable, p.value, p.error, p.row, source, sha256,
                                 dict(p.units), dict(p.missing), time_units, length_units, dict(p.auxiliary))
        return _within_range(table)
    dims = {p.position.shape[1] for p in parts}
    if len(dims) > 1:
        raise ObservationError(f"observation file {source}: variables have positions with different numbers of "
                               f"coordinates ({sorted(dims)}); name the coordinates to use (position_names)")
    keys = {tuple(sorted(p.auxiliary)) for p in parts}
    if len(keys) > 1:
        raise ObservationError(f"observation file {source}: the tables to join carry different auxiliary variables "
                               f"({sorted(keys)}); every part needs the same")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    table = ObservationTable(cat("time"), np.concatenate([p.position for p in parts], axis=0), cat("variable"),
                             cat("value"), cat("error"), cat("row"), source, sha256,
                             {k: v for p in parts for k, v in p.units.items()},
                             {k: v for p in parts for k, v in p.missing.items()}, time_units, length_units,
                             {k: np.concatenate([p.auxiliary[k] for p in parts]) for k in parts[0].auxiliary})
    return _within_range(table)


__all__ = ["DEFAULT_MAX_OBS", "VariableRequest", "parse_requests", "ObservationTable", "bin_by_cycle",
           "outside_campaign", "existing_file", "file_sha256", "check_count", "concatenate"]
