"""A network of measured observations from a file, as the filters assimilate it: fixed sites, one value per site and
cycle.

The table a file gives (:mod:`twin.observations.files`) is turned into what a cycled filter needs:

* **sites**: every distinct (variable, position) of the accepted observations is one row of the network's linear
  operator ``H`` (multilinear interpolation of that state variable at that position,
  :func:`twin.observations.base.interpolation_matrix`), ordered by variable and then by first appearance;
* **series**: ``Y[k, j]`` is the value of site ``j`` assimilated in cycle ``k`` (NaN when the site reported nothing
  in that cycle), ``E[k, j]`` its error standard deviation. An observation at time ``t`` belongs to the cycle whose
  analysis time is the first at or after it (``e_k < t <= e_(k+1)``, :func:`twin.observations.table.bin_by_cycle`)
  and is assimilated at that analysis time: a filter does not shift observations in time, so a campaign should
  choose its cycle length to match the measurement interval. When a site reports more than once in one cycle, the
  report nearest the analysis time is used and the others are flagged ``thinned``;
* **quality control** (:class:`twin.observations.qc.QualityControl`): every observation of the file gets a flag:
  missing values were counted by the reader; observations outside the campaign's time span or the model's domain,
  duplicates and superseded reports are flagged here; the background check runs at each analysis.

Written by hand: the binning and the site table are a few NumPy operations on the reader's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.observations import qc
from twin.observations.base import LinearObservations, interpolation_matrix
from twin.observations.table import ObservationTable


@dataclass
class FileSeries:
    """A file network on a model: the operator of its sites, their values and errors per cycle, and the flags of
    every observation of the file (``qc.flags[i]`` for table row ``i``)."""

    observations: LinearObservations
    values: np.ndarray
    errors: np.ndarray
    qc: qc.QualityControl
    source: str
    sha256: str
    site_variables: list[str] = field(default_factory=list)
    #: ``(file, sha256, rows)`` of each file when the table was read from several (a live twin's deliveries)
    parts: list[tuple[str, str, slice]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return self.qc.counts()


def _component(model, variable: str) -> int:
    names = list(getattr(model, "state_names", ()))
    if variable not in names:
        raise ValueError(f"'{variable}' is not a state variable of model '{model.name}'; it has {names}")
    return names.index(variable)


def series(table: ObservationTable, model, cycle_edges, name: str = "file") -> FileSeries:
    """The network of ``table`` on ``model`` for the cycles of ``cycle_edges`` (``e_0 < .. < e_K``, model time).

    Raises
    ------
    ValueError
        When a requested variable is not a state variable of the model, or no observation survives the checks.
    """
    e = np.asarray(cycle_edges, dtype=float)
    n, K = len(table), e.size - 1
    control = qc.QualityControl(n)
    control.apply("missing", qc.missing(table.value, table.error))
    control.apply("outside_time", qc.outside_time(table.time, e[0], e[-1]))
    control.apply("outside_domain", qc.outside_domain(table.position, model.grid.extent))
    control.apply("duplicate", qc.duplicates(table.time, table.position, table.variable))
    ok = np.flatnonzero(control.accepted)
    if ok.size == 0:
        raise ValueError(f"observation file {table.source}: no observation lies inside the campaign's time span "
                         f"({e[0]:g}, {e[-1]:g}] and the model's domain ({control.counts()})")
    # sites: distinct (variable, position), variables in the order requested, positions in order of appearance
    order = list(dict.fromkeys(table.variable[ok].tolist()))
    keys = {}
    site_of = np.full(n, -1, dtype=np.int64)
    for v in order:
        for i in ok[table.variable[ok] == v]:
            key = (v, *np.round(table.position[i], 12).tolist())
            site_of[i] = keys.setdefault(key, len(keys))
    sites = list(keys)
    m = len(sites)
    cycle = np.searchsorted(e, table.time - 1e-9 * float(np.min(np.diff(e))), side="left") - 1
    # per (cycle, site) the report nearest the analysis time e_(k+1); the others are superseded
    lag = np.where(control.accepted, e[np.clip(cycle + 1, 0, K)] - table.time, np.inf)
    chosen = np.lexsort((np.arange(n), lag, site_of, cycle))
    chosen = chosen[control.accepted[chosen]]
    first = np.ones(chosen.size, dtype=bool)
    first[1:] = (cycle[chosen][1:] != cycle[chosen][:-1]) | (site_of[chosen][1:] != site_of[chosen][:-1])
    superseded = np.zeros(n, dtype=bool)
    superseded[chosen[~first]] = True
    control.apply("thinned", superseded)
    use = chosen[first]
    Y = np.full((K, m), np.nan)
    E = np.full((K, m), np.nan)
    Y[cycle[use], site_of[use]] = table.value[use]
    E[cycle[use], site_of[use]] = table.error[use]
    rows = []
    positions = np.array([s[1:] for s in sites], dtype=float).reshape(m, -1)
    for v in order:
        idx = [j for j, s in enumerate(sites) if s[0] == v]
        rows.append(interpolation_matrix(model.grid, positions[idx], _component(model, v)))
    import scipy.sparse as sp

    H = sp.vstack(rows).tocsr()
    # the operator's nominal errors: each site's median error over the cycles (the analysis takes E per cycle)
    nominal = np.nanmedian(np.where(np.isfinite(E), E, np.nan), axis=0)
    nominal = np.where(np.isfinite(nominal), nominal, np.nanmedian(table.error[use]))
    obs = LinearObservations(H, nominal, positions, name)
    return FileSeries(obs, Y, E, control, table.source, table.sha256, [s[0] for s in sites])
