"""A network of measured observations from a file, as the campaigns assimilate it: fixed sites, and either one value
per site and cycle (the filters, :func:`series`) or every observation at its own model step (ES-MDA and 4D-Var,
:func:`timed`).

The table a file gives (:mod:`twin.observations.files`) is turned into what a cycled filter needs:

* **sites**: every distinct (variable, position) of the accepted observations is one row of the network's linear
  operator ``H`` (multilinear interpolation of that state variable at that position, where the model keeps it: the
  cell centres, or a staggered grid's faces for a model that says so, :func:`twin.observations.base.point_matrix`),
  ordered by variable and then by first appearance;
* **series**: ``Y[k, j]`` is the value of site ``j`` assimilated in cycle ``k`` (NaN when the site reported nothing
  in that cycle), ``E[k, j]`` its error standard deviation. An observation at time ``t`` belongs to the cycle whose
  analysis time is the first at or after it (``e_k < t <= e_(k+1)``, :func:`twin.observations.table.bin_by_cycle`)
  and is assimilated at that analysis time: a filter does not shift observations in time, so a campaign should
  choose its cycle length to match the measurement interval. When a site reports more than once in one cycle, the
  report nearest the analysis time is used and the others are flagged ``thinned``;
* **quality control** (:class:`twin.observations.qc.QualityControl`): every observation of the file gets a flag:
  missing values were counted by the reader; observations outside the campaign's time span or the model's domain,
  outside a variable's physical range (``ranges``), duplicates and superseded reports are flagged here, in that
  order; then, on the reports left, the optional thinning (``thinning``: per variable, cycle and box of that side
  tiling the domain from its lower corner, the report nearest the box centre; the others flagged ``thinned``) or
  super-observations (``superobs``: per variable, cycle and box of two or more reports, one observation at their
  mean position with their mean value and the error ``sqrt(sum e_i^2) / n``, :func:`twin.observations.qc
  .superobservations`; the reports flagged ``superobs``). The sites are then those of the observations used (a
  super-observation's mean position is a site of its own). The background check runs at each analysis.

What ES-MDA and 4D-Var need instead (:func:`timed`, :class:`TimedSeries`): the same sites and the same checks, no
binning into cycles and no superseded reports; thinning works per model step instead of per cycle, and
super-observations are refused (they are made per cycle). **The rule for observation times**: an observation at time ``t`` is used at the
model step nearest to it, ``t_0 + n dt`` with ``n = floor((t - t_0) / dt + 1/2)`` (``dt`` the model's time step,
``t_0`` the campaign start; a time half-way between two steps goes to the later one), clamped to the campaign's span;
the model's state at that step is what the observation is compared with. ES-MDA's member runs stop at every such step
of its window (besides the schedule's observation times); 4D-Var gives the observation to the window whose new span
``(e_k - S obs_interval, e_k]`` holds that step, and its forward and adjoint passes stop there
(:class:`StepClock`). A step that is one of the 4D-Var scheme's observation times ``t_0 + j obs_interval`` takes that
time exactly, so that observations written at those times (a twin experiment's ``observations.nc``) are used at the
very times the twin experiment used them. Two observations of one site at one step are both used (independent
errors); only exact duplicates (same variable, time and position) are flagged.

Written by hand: the binning and the site table are a few NumPy operations on the reader's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.observations import qc
from twin.observations.base import LinearObservations, point_matrix
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
    #: the values each file's reader left out as missing (``_FillValue``, NaN, outside ``valid_range``)
    dropped: list[int] = field(default_factory=list)
    #: with ``superobs``: per super-observation the table row of its first report (``None``: no super-observations
    #: asked for)
    superobs_rows: np.ndarray | None = None
    #: the cycle of every table row (``-1`` before the first, ``K`` after the last; ``None``: not binned)
    cycle: np.ndarray | None = None
    _per_cycle: np.ndarray | None = field(default=None, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        return self.qc.counts()

    def rejected_per_cycle(self) -> np.ndarray | None:
        """``(K, len(CYCLE_CHECKS))``: the observations of each cycle each check of :data:`CYCLE_CHECKS` left
        out (counted once, then kept: the analysis asks every cycle); ``None`` when the rows are not binned."""
        if self.cycle is None:
            return None
        if self._per_cycle is None:
            K = self.values.shape[0]
            inside = (self.cycle >= 0) & (self.cycle < K)
            self._per_cycle = np.stack([np.bincount(self.cycle[inside & (self.qc.flags == qc.FLAGS[c])], minlength=K)
                                        for c in CYCLE_CHECKS], axis=1)
        return self._per_cycle


#: the checks counted per cycle in ``diagnostics.nc`` (:func:`cycle_counts`); ``missing`` and ``outside_time`` are
#: counted per file only (a missing value or an observation outside the span belongs to no cycle)
CYCLE_CHECKS = ("outside_domain", "range", "duplicate", "thinned", "superobs")


def cycle_counts(file_series, k: int) -> dict[str, int]:
    """The observations of the ``file`` networks (``{name: FileSeries}``) binned into cycle ``k`` that each check of
    :data:`CYCLE_CHECKS` left out, as ``{"n_rejected_<check>": count}`` (the background check's count,
    ``n_rejected_background``, comes from the analysis)."""
    total = np.zeros(len(CYCLE_CHECKS), dtype=np.int64)
    for fs in file_series.values():
        table = fs.rejected_per_cycle()
        if table is not None and 0 <= k < table.shape[0]:
            total += table[k]
    return {f"n_rejected_{c}": int(n) for c, n in zip(CYCLE_CHECKS, total)}


def _component(model, variable: str) -> int:
    names = list(getattr(model, "state_names", ()))
    if variable not in names:
        raise ValueError(f"'{variable}' is not a state variable of model '{model.name}'; it has {names}")
    return names.index(variable)


def _range_check(control: qc.QualityControl, table: ObservationTable, ranges) -> None:
    """Flag ``range`` the values outside ``ranges`` (``{variable: (low, high)}``, either end ``None``: open)."""
    if not ranges:
        return
    bad = np.zeros(len(table), dtype=bool)
    for variable, (low, high) in ranges.items():
        sel = table.variable == variable
        bad[sel] = qc.out_of_range(table.value[sel], low, high)
    control.apply("range", bad)


def _origin(model) -> np.ndarray:
    """The lower corner of the model's domain: where the thinning and super-observation boxes start."""
    return np.array([lo for lo, _ in model.grid.extent], dtype=float)


def _check_spacing(spacing, what: str) -> float | None:
    if spacing is None:
        return None
    spacing = float(spacing)
    if not (np.isfinite(spacing) and spacing > 0):
        raise ValueError(f"{what}: the box side must be positive, got {spacing:g}")
    return spacing


def series(table: ObservationTable, model, cycle_edges, name: str = "file", *, ranges=None,
           thinning: float | None = None, superobs: float | None = None, sites=None) -> FileSeries:
    """The network of ``table`` on ``model`` for the cycles of ``cycle_edges`` (``e_0 < .. < e_K``, model time).

    ``ranges``: ``{variable: (low, high)}`` of the physical range check (model units; ``None`` for an open end);
    ``thinning`` / ``superobs``: the side of the thinning or super-observation boxes in the model's length units
    (one of them at most; see the module docstring).
    ``sites``: ``(table, ok, model) -> (site of every row, H, positions, variables)``, the operator of the accepted
    rows ``ok`` for a table whose observations are not point values of state variables (a kind's network read from
    files, :class:`twin.core.kinds.NetworkType` ``sites``); default: interpolation at the positions.

    Raises
    ------
    ValueError
        When a requested variable is not a state variable of the model, or no observation survives the checks.
    """
    thinning, superobs = _check_spacing(thinning, "thinning"), _check_spacing(superobs, "superobs")
    if thinning is not None and superobs is not None:
        raise ValueError("give thinning or superobs, not both")
    e = np.asarray(cycle_edges, dtype=float)
    n, K = len(table), e.size - 1
    control = qc.QualityControl(n)
    control.apply("missing", qc.missing(table.value, table.error))
    control.apply("outside_time", qc.outside_time(table.time, e[0], e[-1]))
    control.apply("outside_domain", qc.outside_domain(table.position, model.grid.extent))
    _range_check(control, table, ranges)
    control.apply("duplicate", qc.duplicates(table.time, table.position, table.variable))
    ok = np.flatnonzero(control.accepted)
    if ok.size == 0:
        raise ValueError(f"observation file {table.source}: no observation lies inside the campaign's time span "
                         f"({e[0]:g}, {e[-1]:g}] and the model's domain ({control.counts()})")
    site_of, H, positions, names = (sites or _sites)(table, ok, model)
    m = positions.shape[0]
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
    origin = _origin(model)
    extra = None
    if thinning is not None:
        bad = qc.thinned(table.position[use], table.variable[use], cycle[use], thinning, origin)
        control.apply("thinned", _mask(n, use[bad]))
        use = use[~bad]
    elif superobs is not None:
        use, extra = _superobservations(table, use, cycle, superobs, origin, control)
    if use.size == 0 and (extra is None or extra["value"].size == 0):
        raise ValueError(f"observation file {table.source}: no observation is left after the quality control "
                         f"({control.counts()})")
    if (extra is not None and extra["value"].size) or np.setdiff1d(site_of[ok], site_of[use]).size:
        # thinning or super-observations changed the sites: those of the observations used, in the same order
        site_of, H, positions, names, extra_site = _final_sites(table, use, site_of, positions, names, extra, model)
        m = positions.shape[0]
    Y = np.full((K, m), np.nan)
    E = np.full((K, m), np.nan)
    Y[cycle[use], site_of[use]] = table.value[use]
    E[cycle[use], site_of[use]] = table.error[use]
    if extra is not None and extra["value"].size:
        Y[extra["cycle"], extra_site] = extra["value"]
        E[extra["cycle"], extra_site] = extra["error"]
    # the operator's nominal errors: each site's median error over the cycles (the analysis takes E per cycle)
    nominal = np.nanmedian(np.where(np.isfinite(E), E, np.nan), axis=0)
    nominal = np.where(np.isfinite(nominal), nominal, np.nanmedian(E))
    obs = LinearObservations(H, nominal, positions, name)
    out = FileSeries(obs, Y, E, control, table.source, table.sha256, names, cycle=cycle)
    if superobs is not None:
        out.superobs_rows = extra["row"]
    return out


def _mask(n: int, rows) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return mask


def _superobservations(table: ObservationTable, use: np.ndarray, cycle: np.ndarray, spacing: float, origin,
                       control: qc.QualityControl):
    """Replace, per variable, cycle and box, the reports ``use`` of a box that holds two or more by one
    super-observation (:func:`twin.observations.qc.superobservations`); flags those reports ``superobs``. Returns
    the reports still used one by one and the super-observations: ``{variable, position, value, error, cycle,
    row}`` (``row``: the table row of the first report of each, to count it with its file), ordered by variable
    (first appearance), cycle and box."""
    kept, members = [], []
    out = {"variable": [], "position": [], "value": [], "error": [], "cycle": [], "row": []}
    variables = list(dict.fromkeys(table.variable[use].tolist()))
    for v in variables:
        of_v = use[table.variable[use] == v]
        for k in np.unique(cycle[of_v]):
            rows = np.sort(of_v[cycle[of_v] == k])
            pos, val, err, counts = qc.superobservations(table.position[rows], table.value[rows], table.error[rows],
                                                         spacing, origin)
            box = qc.box_groups(table.position[rows], spacing, origin)
            single = counts[box] == 1
            kept.append(rows[single])
            members.append(rows[~single])
            many = np.flatnonzero(counts > 1)
            first = np.full(counts.size, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first, box, rows)  # the first report of each box
            out["variable"] += [v] * many.size
            out["position"].append(pos[many])
            out["value"].append(val[many])
            out["error"].append(err[many])
            out["cycle"].append(np.full(many.size, k, dtype=np.int64))
            out["row"].append(first[many])
    dim = table.position.shape[1]
    extra = {"variable": np.asarray(out["variable"], dtype=str),
             "position": np.concatenate(out["position"]) if out["position"] else np.zeros((0, dim)),
             **{key: np.concatenate(out[key]) if out[key] else np.zeros(0, dtype=float if key in ("value", "error")
                                                                             else np.int64)
                for key in ("value", "error", "cycle", "row")}}
    control.apply("superobs", _mask(len(table), np.concatenate(members) if members else []))
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return use[np.isin(use, kept)], extra


def _final_sites(table: ObservationTable, use: np.ndarray, site_of: np.ndarray, positions: np.ndarray,
                 names: list[str], extra, model):
    """The sites once thinning or super-observations have chosen what is used: the earlier sites that still have an
    observation, in their order, then the super-observations' positions that are new; grouped by variable in the
    order the variables first appear. Returns the site of every table row (-1 if unused), the operator, the
    positions, the variable of each site and the site of every super-observation."""
    import scipy.sparse as sp

    keys: dict[tuple, int] = {}
    for j in np.unique(site_of[use]):
        keys.setdefault((names[j], *np.round(positions[j], 12).tolist()), len(keys))
    extra_keys = []
    if extra is not None:
        for v, p in zip(extra["variable"].tolist(), extra["position"]):
            key = (v, *np.round(p, 12).tolist())
            keys.setdefault(key, len(keys))
            extra_keys.append(key)
    order = list(dict.fromkeys(k[0] for k in keys))
    sites = sorted(keys, key=lambda k: (order.index(k[0]), keys[k]))
    index = {k: j for j, k in enumerate(sites)}
    old_to_new = np.full(len(names), -1, dtype=np.int64)
    for j in np.unique(site_of[use]):
        old_to_new[j] = index[(names[j], *np.round(positions[j], 12).tolist())]
    new_site_of = np.full(len(table), -1, dtype=np.int64)
    new_site_of[use] = old_to_new[site_of[use]]
    m = len(sites)
    new_positions = np.array([s[1:] for s in sites], dtype=float).reshape(m, -1)
    rows = []
    for v in order:
        idx = [j for j, s in enumerate(sites) if s[0] == v]
        rows.append(point_matrix(model, new_positions[idx], _component(model, v)))
    extra_site = np.array([index[k] for k in extra_keys], dtype=np.int64)
    return new_site_of, sp.vstack(rows).tocsr(), new_positions, [s[0] for s in sites], extra_site


def _sites(table: ObservationTable, ok: np.ndarray, model):
    """The sites of the accepted rows ``ok``: distinct (variable, position), variables in the order they first
    appear, positions in order of appearance. Returns the site of every table row (-1 for rows not in ``ok``), the
    operator ``H`` (one row per site: multilinear interpolation of its variable at its position), the positions
    ``(m, dim)`` and the variable of each site."""
    import scipy.sparse as sp

    order = list(dict.fromkeys(table.variable[ok].tolist()))
    keys: dict[tuple, int] = {}
    site_of = np.full(len(table), -1, dtype=np.int64)
    for v in order:
        rows_v = ok[table.variable[ok] == v]
        # rounded as one array, not row by row (40 000 calls of np.round were 0.15 s of a campaign's start)
        for i, position in zip(rows_v.tolist(), np.round(table.position[rows_v], 12).tolist()):
            site_of[i] = keys.setdefault((v, *position), len(keys))
    sites = list(keys)
    m = len(sites)
    positions = np.array([s[1:] for s in sites], dtype=float).reshape(m, -1)
    rows = []
    for v in order:
        idx = [j for j, s in enumerate(sites) if s[0] == v]
        rows.append(point_matrix(model, positions[idx], _component(model, v)))
    return site_of, sp.vstack(rows).tocsr(), positions, [s[0] for s in sites]


@dataclass(frozen=True)
class StepClock:
    """The model steps observations are placed on (the rule in the module docstring): step ``n`` is at
    ``t0 + n dt``; the campaign's span is ``(t0, end]``. ``interval``: the 4D-Var observation interval, whose
    multiples ``t0 + j interval`` a step that falls on one takes exactly (``None``: none)."""

    t0: float
    end: float
    dt: float
    interval: float | None = None

    def __post_init__(self):
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"the model's time step must be positive to place observations on it, got {self.dt}")

    @property
    def last(self) -> int:
        """The last step inside the span."""
        return int(np.floor((self.end - self.t0) / self.dt + 1e-9))

    def steps(self, times) -> np.ndarray:
        """The step nearest each time (half-way: the later), clamped to ``0 .. last``."""
        n = np.floor((np.asarray(times, dtype=float) - self.t0) / self.dt + 0.5).astype(np.int64)
        return np.clip(n, 0, self.last)

    def time(self, n: int) -> float:
        """The model time of step ``n``: ``t0 + n dt``, or ``t0 + j interval`` when the step falls on that."""
        n = int(n)
        if self.interval is not None:
            q = n * self.dt / self.interval
            j = round(q)
            if abs(q - j) <= 1e-9 * max(1.0, abs(q)):
                return self.t0 + j * self.interval
        return self.t0 + n * self.dt


@dataclass
class TimedSeries:
    """A file network whose observations are each used at their own model step (ES-MDA, 4D-Var): the operator of its
    sites, and per assimilated observation (ordered by step, then site, then file row) its step, site (row of the
    operator), value, error standard deviation and row in the table; the flags of every observation of the file
    (``qc.flags[i]`` for table row ``i``)."""

    observations: LinearObservations
    step: np.ndarray
    site: np.ndarray
    value: np.ndarray
    error: np.ndarray
    row: np.ndarray
    qc: qc.QualityControl
    source: str
    sha256: str
    site_variables: list[str] = field(default_factory=list)
    parts: list[tuple[str, str, slice]] = field(default_factory=list)
    #: the values each file's reader left out as missing (``_FillValue``, NaN, outside ``valid_range``)
    dropped: list[int] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return self.qc.counts()


def timed(table: ObservationTable, model, clock: StepClock, name: str = "file", *, ranges=None,
          thinning: float | None = None, superobs: float | None = None, sites=None) -> TimedSeries:
    """The network of ``table`` on ``model`` with every observation at the model step of ``clock`` nearest to it
    (see the module docstring). The checks are the filters' (:func:`series`) but for the superseded reports: missing
    values, times outside ``(clock.t0, clock.end]``, positions outside the domain, outside ``ranges``, exact
    duplicates; ``thinning`` (box side in the model's length units) per variable, model step and box.

    Raises
    ------
    ValueError
        When a requested variable is not a state variable of the model, no observation survives the checks, or
        ``superobs`` is given (super-observations are made per cycle, for the filters).
    """
    if superobs is not None:
        raise ValueError("superobs: super-observations are made per cycle, for the filters (etkf, enkf, letkf); "
                         "ES-MDA and 4D-Var use each observation at its own time: use thinning instead")
    thinning = _check_spacing(thinning, "thinning")
    control = qc.QualityControl(len(table))
    control.apply("missing", qc.missing(table.value, table.error))
    control.apply("outside_time", qc.outside_time(table.time, clock.t0, clock.end))
    control.apply("outside_domain", qc.outside_domain(table.position, model.grid.extent))
    _range_check(control, table, ranges)
    control.apply("duplicate", qc.duplicates(table.time, table.position, table.variable))
    ok = np.flatnonzero(control.accepted)
    if ok.size and thinning is not None:
        bad = qc.thinned(table.position[ok], table.variable[ok], clock.steps(table.time[ok]), thinning,
                         _origin(model))
        control.apply("thinned", _mask(len(table), ok[bad]))
        ok = ok[~bad]
    if ok.size == 0:
        raise ValueError(f"observation file {table.source}: no observation lies inside the campaign's time span "
                         f"({clock.t0:g}, {clock.end:g}] and the model's domain ({control.counts()})")
    site_of, H, positions, names = (sites or _sites)(table, ok, model)
    step = clock.steps(table.time[ok])
    order = np.lexsort((ok, site_of[ok], step))
    use = ok[order]
    error = table.error[use]
    nominal = np.array([np.median(error[site_of[use] == j]) for j in range(positions.shape[0])])
    obs = LinearObservations(H, nominal, positions, name)
    return TimedSeries(obs, step[order], site_of[use], table.value[use], error, use, control, table.source,
                       table.sha256, names)
