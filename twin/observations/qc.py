"""Quality control of measured observations: every decision recorded per observation, nothing dropped silently.

Each check returns a boolean mask of the observations it rejects; :class:`QualityControl` applies them in a fixed
order and keeps, per observation, the first check that rejected it (:data:`FLAGS`), so a file's observation can be
traced to why it was or was not assimilated, and the counts per check go to ``diagnostics.nc`` and ``twin status``.

Checks, in order:

* ``missing``: a non-finite value or error (files: ``_FillValue``/NaN are dropped by the readers and counted there);
* ``outside_time`` / ``outside_domain``: not in the campaign's time span or the model's domain;
* ``range``: outside the physical range of the variable (``[low, high]`` in the model's units);
* ``duplicate``: the same variable at the same time and position (within ``tolerance``) as an earlier observation;
  the first is kept;
* ``thinned``: thinning to at most one observation per box of ``spacing`` (length units) per variable and cycle: the
  one nearest the box centre is kept;
* ``superobs``: averaged into a super-observation (:func:`superobservations`): per variable, cycle and box of two or
  more observations, one observation at their mean position with their mean value replaces them;
* ``background``: the innovation ``d = y - H x_b`` exceeds ``k sqrt(HBH^T + R)`` (the forecast ensemble's variance in
  observation space plus the observation error variance), the background check of operational centres
  (Lorenc 1981; ECMWF's first-guess check); it needs the forecast, so it runs at the analysis of each cycle.

Written by hand: these are a handful of vectorised comparisons; no library offers them in this form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.core.box import outside_box

#: flag of each outcome; 0 is assimilated
FLAGS = {"accepted": 0, "missing": 1, "outside_time": 2, "outside_domain": 3, "range": 4, "duplicate": 5,
         "thinned": 6, "background": 7, "superobs": 8}
NAMES = {v: k for k, v in FLAGS.items()}


def missing(values: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Non-finite values, or errors that are not positive and finite."""
    v, e = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    return ~np.isfinite(v) | ~(np.isfinite(e) & (e > 0))


def outside_time(times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Times not in ``(start, end]`` (the observations a campaign's cycles can assimilate)."""
    t = np.asarray(times, dtype=float)
    return ~((t > start) & (t <= end))


def outside_domain(positions: np.ndarray, extent) -> np.ndarray:
    """Positions ``(n, dim)`` outside the domain ``extent`` (:func:`twin.core.box.outside_box`)."""
    return outside_box(positions, extent)


def out_of_range(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """Values below ``low`` or above ``high`` (either may be ``None``: no bound)."""
    v = np.asarray(values, dtype=float)
    bad = np.zeros(v.shape, dtype=bool)
    if low is not None:
        bad |= v < low
    if high is not None:
        bad |= v > high
    return bad


def _codes(variables) -> np.ndarray:
    """Variable names as integer codes (hashing with pandas: sorting 10^6 strings with NumPy took 0.4 s)."""
    import pandas as pd

    return pd.factorize(np.asarray(variables, dtype=object).ravel())[0].astype(np.int64)


def _keys(values, tolerance: float) -> np.ndarray:
    """Integer keys, equal for two values exactly when they are the same to ``tolerance``: the multiple of
    ``tolerance`` a value rounds to while that is below ``2**52``, and beyond (where a float's spacing is already
    ``tolerance`` or more, so equal means equal) the value's bits with its sign, which are ``2**52`` or more in
    magnitude and so never the key of a smaller value. Not ``round(v / tolerance)`` cast to int64 for every value:
    that wraps beyond 9.2e18 (a time of 1e10 s over a tolerance of 1e-9), and t = 1.0e10 and 1.2e10 s got one key
    and the second was dropped as a duplicate, with a RuntimeWarning; these keys are right for every finite value."""
    v = np.asarray(values, dtype=float).ravel()
    small = np.abs(v) < max(tolerance * 2.0 ** 52, np.finfo(float).tiny)
    scaled = np.round(np.where(small, v, 0.0) / tolerance).astype(np.int64)
    bits = np.abs(np.where(small, 1.0, v)).view(np.int64)  # >= 2**52 for a normal float; NaN and inf are bits too
    return np.where(small, scaled, np.where(v < 0, -bits, bits))


def duplicates(times, positions, variables, tolerance: tuple[float, float] = (1e-9, 1e-9)) -> np.ndarray:
    """Observations of the same variable at the same time and position (to ``tolerance`` = (time, length)) as an
    earlier one in the table; the first of each group is kept. Rows are hashed (pandas ``duplicated``), not sorted:
    10^6 observations in 0.1 s instead of 0.9 s (``benchmarks/bench_observations.py``). Any finite time and position
    is compared right, however large (:func:`_keys`)."""
    import pandas as pd

    t = _keys(times, tolerance[0])
    if t.size == 0:
        return np.zeros(0, dtype=bool)
    p = np.atleast_2d(np.asarray(positions, dtype=float))
    keys = {"variable": _codes(variables), "time": t, **{f"x{i}": _keys(p[:, i], tolerance[1])
                                                        for i in range(p.shape[1])}}
    return pd.DataFrame(keys).duplicated(keep="first").to_numpy()


def _boxes(positions, spacing: float, origin) -> np.ndarray:
    p = np.atleast_2d(np.asarray(positions, dtype=float))
    return np.floor((p - np.asarray(origin, dtype=float)) / spacing).astype(np.int64)


def thinned(positions, variables, cycles, spacing: float, origin) -> np.ndarray:
    """Thinning: per variable, cycle and box of side ``spacing`` (boxes from ``origin``), all but the observation
    nearest the box centre."""
    p = np.atleast_2d(np.asarray(positions, dtype=float))
    n = p.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    boxes = _boxes(p, spacing, origin)
    centre = np.asarray(origin, dtype=float) + (boxes + 0.5) * spacing
    dist = np.sum((p - centre) ** 2, axis=1)
    group = np.column_stack([_codes(variables), np.asarray(cycles, dtype=np.int64), boxes])
    order = np.lexsort((np.arange(n), dist, *group.T[::-1]))
    g = group[order]
    first = np.ones(n, dtype=bool)
    first[1:] = np.any(g[1:] != g[:-1], axis=1)
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return ~keep


def box_groups(positions, spacing: float, origin) -> np.ndarray:
    """The box of every observation as an index ``0 .. n_boxes - 1`` in the order :func:`superobservations` returns
    the boxes (sorted box coordinates)."""
    p = np.atleast_2d(np.asarray(positions, dtype=float))
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, box = np.unique(_boxes(p, spacing, origin), axis=0, return_inverse=True)
    return box.ravel().astype(np.int64)


def superobservations(positions, values, errors, spacing: float, origin):
    """Super-observations of one variable and cycle: per box of side ``spacing``, the mean position and value and
    the error ``sqrt(mean(e^2) / n) = sqrt(sum e_i^2) / n``: the standard deviation of the mean of ``n`` observations
    whose errors are independent (``var(sum y_i / n) = sum e_i^2 / n^2``; ``e / sqrt(n)`` for equal errors).
    Correlated errors (a representativeness error the stations of a box share) would make it too small. Returns
    ``(positions, values, errors, counts)`` for the non-empty boxes, in the order of their box indices
    (:func:`box_groups` gives the box of every observation in that order)."""
    p = np.atleast_2d(np.asarray(positions, dtype=float))
    v, e = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    boxes = _boxes(p, spacing, origin)
    _, box, counts = np.unique(boxes, axis=0, return_inverse=True, return_counts=True)
    box = box.ravel()
    m = counts.size
    pos = np.zeros((m, p.shape[1]))
    np.add.at(pos, box, p)
    val = np.bincount(box, weights=v, minlength=m)
    var = np.bincount(box, weights=e ** 2, minlength=m)
    return pos / counts[:, None], val / counts, np.sqrt(var / counts / counts), counts


def background(innovations, hbht_variance, error_std, k: float) -> np.ndarray:
    """The background check: ``|y - H x_b| > k sqrt(HBH^T + R)`` per observation."""
    d = np.asarray(innovations, dtype=float)
    s = np.sqrt(np.asarray(hbht_variance, dtype=float) + np.asarray(error_std, dtype=float) ** 2)
    return np.abs(d) > k * s


@dataclass
class QualityControl:
    """The flag of every observation of a table (0: assimilated), set by the first check that rejects it."""

    n: int
    flags: np.ndarray = field(init=False)

    def __post_init__(self):
        self.flags = np.zeros(int(self.n), dtype=np.int8)

    def apply(self, name: str, rejected: np.ndarray) -> int:
        """Flag the still accepted observations that ``rejected`` marks with check ``name``; returns how many."""
        mask = np.asarray(rejected, dtype=bool) & (self.flags == 0)
        self.flags[mask] = FLAGS[name]
        return int(mask.sum())

    @property
    def accepted(self) -> np.ndarray:
        return self.flags == 0

    def counts(self) -> dict[str, int]:
        """Observations per outcome (every name of :data:`FLAGS`, zeros included)."""
        c = np.bincount(self.flags, minlength=len(FLAGS))
        return {NAMES[i]: int(c[i]) for i in range(len(FLAGS))}
