"""Guardrails (continual verification of a running twin): per-cycle statistical checks of the assimilation, flags,
and automatic exclusion of faulty sensors.

Symbols (per cycle): ``Y`` the observed forecast ensemble (m x N, after prior inflation), ``y`` the observations,
``r`` their error standard deviations, ``d = y - mean(Y)`` the innovations, ``s_i^2 = var_i(Y) + r_i^2`` the
innovation variance expected from the forecast spread and ``R`` (Desroziers et al. 2005); units those of the
observations. The checks and their null distributions:

* **innovation chi-square**: ``chi2 = sum_i d_i^2 / s_i^2 ~ chi^2_m`` for a consistent system (diagonal
  approximation of ``H P H^T + R``). Flag when the two-sided p-value is below ``significance``. Recorded as
  ``innovation_chi2 = chi2 / m`` (1 when consistent).
* **spread/skill**: over a sliding window of ``window`` cycles, ``sqrt(sum spread^2 / sum error^2)``: with a truth
  (twin experiments) the forecast ensemble spread against the forecast-mean error in state space; without, in
  observation space, each sensor in units of its own error (so that sensors of different quantities, a strain gauge
  and a sea-level station, weigh alike): ``sqrt(sum mean(var(Y) / r^2) / sum max(mean(d^2 / r^2) - 1, 0))``. Flag
  outside ``[low, high]``.
* **rank histogram**: the rank of ``y_i`` among the members ``Y_i + r_i eps`` (perturbed with the observation
  error, so the observation is exchangeable with them when the system is reliable; Hamill 2001), pooled into at most
  ``rank_bins`` bins over the window, tested for flatness with Pearson's chi-square. Ranks of neighbouring sensors and
  successive cycles are correlated, which makes the test anticonservative: keep ``rank_significance`` small.
  When the ensemble size changes inside the window (a member dropped by the failure policy), the histograms of
  ``N + 1`` and ``N' + 1`` ranks cannot be added bin by bin; each cycle's ranks are then spread over ``B`` equal
  intervals of the probability integral transform ``[r / (N + 1), (r + 1) / (N + 1))`` in proportion to their overlap
  (``B = min(rank_bins, smallest N + 1)``, so that no interval is narrower than a rank) and tested against ``B``
  equal expected counts (:func:`window_rank_flatness`). Fractional counts vary less than multinomial ones, so over
  such a window the test is conservative (a membership change makes false alarms rarer, not more frequent).
* **sensor drift (control chart)**: per sensor the standardised innovation ``z_i = d_i / s_i`` feeds a two-sided
  CUSUM (Page 1954): ``S+ <- max(0, S+ + z - k)``, ``S- <- max(0, S- - z - k)``; an alarm when either exceeds ``h``.
  With the defaults ``k = 1, h = 6`` the in-control average run length of one sensor is about 4 10^5 cycles
  (Siegmund's approximation for standard normal ``z``), so a network of tens of sensors monitored for hundreds of
  cycles should not raise a false alarm, while a bias of 2 innovation standard deviations is caught in about 6 cycles
  and a bias growing by 0.1 standard deviations per cycle in about 20.

Policy: ``flag`` only records; ``exclude`` also removes an alarmed sensor from every later analysis (the caller
assimilates ``active`` rows only, e.g. through :func:`guarded_analysis`). Every flag is kept as a :class:`Flag`
(written as JSON lines by :meth:`Guardrails.write_flags`), and the per-cycle statistics are offered as diagnostics
variables (:meth:`Guardrails.diagnostics`, metadata in :data:`GUARDRAIL_DIAGNOSTICS`) for ``diagnostics.nc``.

The statistics are hand-written (a few lines each); p-values are chi-square tail probabilities, the regularised
incomplete gamma functions of ``scipy.special`` (what ``scipy.stats.chi2`` computes, bitwise, without importing
``scipy.stats``: 0.4-1.3 s in every process that runs an analysis).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import gammainc, gammaincc

from twin.core.errors import AssimilationError
from twin.core.log import get_logger

log = get_logger("twin.decision.guardrails")

#: (long_name, units) of the per-cycle guardrail diagnostics; ``{obs}`` stands for the observation units.
GUARDRAIL_DIAGNOSTICS = {
    "innovation_chi2": ("normalised innovation chi-square sum(d^2 / (var(HX) + r^2)) / m", "1"),
    "innovation_chi2_pvalue": ("two-sided p-value of the innovation chi-square test", "1"),
    "spread_skill_ratio": ("windowed ensemble spread / error of the mean", "1"),
    "rank_histogram_pvalue": ("p-value of the chi-square flatness test of the windowed rank histogram", "1"),
    "cusum_max": ("largest two-sided CUSUM statistic of the standardised sensor innovations", "1"),
    "flag_innovation_chi2": ("innovation statistics inconsistent with R and the spread (1 = flagged)", "1"),
    "flag_spread_skill": ("spread/skill outside its bounds (1 = flagged)", "1"),
    "flag_rank_histogram": ("rank histogram not flat (1 = flagged)", "1"),
    "flagged_sensors": ("number of sensors whose control chart has alarmed", "1"),
    "excluded_sensors": ("number of sensors excluded from the analysis", "1"),
    "n_obs_active": ("number of observations assimilated after exclusions", "1"),
}


def diagnostics_variables() -> dict:
    """:class:`twin.io.netcdf.VariableMeta` of the guardrail diagnostics, for ``DiagnosticsFile(variables=...)``."""
    from twin.io.netcdf import VariableMeta

    return {k: VariableMeta(long_name, units) for k, (long_name, units) in GUARDRAIL_DIAGNOSTICS.items()}


@dataclass
class GuardrailSettings:
    """Thresholds of the checks (see the module docstring) and the exclusion policy."""

    significance: float = 0.001
    spread_skill: tuple[float, float] = (0.5, 2.0)
    window: int = 10
    rank_significance: float = 0.001
    rank_bins: int = 10
    cusum_k: float = 1.0
    cusum_h: float = 6.0
    warmup: int = 0
    policy: str = "flag"

    def __post_init__(self):
        lo, hi = self.spread_skill
        problems = []
        if not 0 < self.significance < 1 or not 0 < self.rank_significance < 1:
            problems.append("significance levels must lie in (0, 1)")
        if not 0 < lo < 1 < hi:
            problems.append(f"spread_skill bounds must satisfy 0 < low < 1 < high, got {self.spread_skill}")
        if self.window < 1 or self.rank_bins < 2 or self.warmup < 0:
            problems.append("window >= 1, rank_bins >= 2 and warmup >= 0 are needed")
        if not (self.cusum_k >= 0 and self.cusum_h > 0):
            problems.append(f"CUSUM needs k >= 0 and h > 0, got k={self.cusum_k}, h={self.cusum_h}")
        if self.policy not in ("flag", "exclude"):
            problems.append(f"policy must be 'flag' or 'exclude', got {self.policy!r}")
        if problems:
            raise AssimilationError("guardrails: " + "; ".join(problems))

    @classmethod
    def from_config(cls, cfg) -> "GuardrailSettings":
        """From a :class:`twin.config.decision.GuardrailsConfig`."""
        return cls(cfg.significance, (cfg.spread_skill[0], cfg.spread_skill[1]), cfg.window, cfg.rank_significance,
                   cfg.rank_bins, cfg.cusum_k, cfg.cusum_h, cfg.warmup, cfg.policy)


@dataclass
class Flag:
    """One guardrail flag: what was checked, at which cycle/time, the statistic and its threshold, what was done."""

    cycle: int
    time: float
    kind: str
    value: float
    threshold: float
    message: str
    sensor: int = -1
    action: str = "flagged"


def innovation_chi2(d: np.ndarray, expected_var: np.ndarray) -> tuple[float, float]:
    """``(chi2 / m, two-sided p-value)`` of innovations ``d`` with expected variances ``expected_var``."""
    d = np.asarray(d, dtype=float)
    m = d.size
    stat = float(np.sum(d * d / expected_var))
    p = 2.0 * min(gammainc(m / 2.0, stat / 2.0), gammaincc(m / 2.0, stat / 2.0))
    return stat / m, float(min(p, 1.0))


def rank_flatness(counts: np.ndarray, bins: int) -> float:
    """p-value of Pearson's chi-square test that the rank counts are uniform, after pooling adjacent ranks into at
    most ``bins`` bins of (nearly) equal width."""
    counts = np.asarray(counts, dtype=float)
    groups = np.array_split(np.arange(counts.size), min(bins, counts.size))
    pooled = np.array([counts[g].sum() for g in groups])
    widths = np.array([g.size for g in groups], dtype=float)
    total = pooled.sum()
    if total <= 0:
        return 1.0
    expected = total * widths / widths.sum()
    stat = float(np.sum((pooled - expected) ** 2 / expected))
    return float(gammaincc((pooled.size - 1) / 2.0, stat / 2.0))


def rank_pit_counts(counts: np.ndarray, bins: int) -> np.ndarray:
    """A histogram of ``L`` equally likely ranks as fractional counts in ``bins`` equal intervals of [0, 1].

    Rank ``r`` stands for the probability integral transform interval ``[r / L, (r + 1) / L)``; its count is shared
    among the intervals ``[b / bins, (b + 1) / bins)`` in proportion to the overlap, so the result sums to the
    input and is uniform in expectation whenever the ranks are.
    """
    counts = np.asarray(counts, dtype=float)
    L = counts.size
    # integer interval ends in units of 1 / (L * bins): whole ranks map to whole intervals without rounding
    r = np.arange(L + 1)[:, None] * bins
    b = np.arange(bins + 1)[None, :] * L
    overlap = np.clip(np.minimum(r[1:], b[:, 1:]) - np.maximum(r[:-1], b[:, :-1]), 0, None)
    return counts @ (overlap / bins)


def window_rank_flatness(histograms: Sequence[np.ndarray], bins: int) -> float:
    """p-value of the flatness test of the rank histograms of a window of cycles (one histogram per cycle).

    Histograms of one ensemble size are added and tested by :func:`rank_flatness`; histograms of several sizes
    (members dropped inside the window) are mapped onto common probability-integral-transform intervals by
    :func:`rank_pit_counts` first (see the module docstring).
    """
    sizes = {int(np.size(h)) for h in histograms}
    if not sizes:
        return 1.0
    if len(sizes) == 1:
        return rank_flatness(np.sum([np.asarray(h, dtype=float) for h in histograms], axis=0), bins)
    common = min(bins, min(sizes))
    pooled = np.sum([rank_pit_counts(h, common) for h in histograms], axis=0)
    total = pooled.sum()
    if total <= 0:
        return 1.0
    expected = total / common
    stat = float(np.sum((pooled - expected) ** 2 / expected))
    return float(gammaincc((common - 1) / 2.0, stat / 2.0))


def observation_ranks(Y: np.ndarray, y: np.ndarray, r: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank (0..N) of each observation among its members perturbed by the observation error."""
    perturbed = Y + r[:, None] * rng.standard_normal(Y.shape)
    return np.sum(perturbed < y[:, None], axis=1)


class Guardrails:
    """Per-cycle checks of an assimilation run over ``n_obs`` sensors (see the module docstring).

    Parameters
    ----------
    n_obs : int
        Number of sensors (observation rows); each keeps its own control chart.
    settings : GuardrailSettings
    seed : int
        Seed of the perturbations of the observation-space rank histogram (the same on every rank).
    """

    def __init__(self, n_obs: int, settings: GuardrailSettings | None = None, seed: int = 0):
        self.settings = settings or GuardrailSettings()
        self.n_obs = int(n_obs)
        self.active = np.ones(self.n_obs, dtype=bool)
        self.alarmed = np.zeros(self.n_obs, dtype=bool)
        self.cusum_pos = np.zeros(self.n_obs)
        self.cusum_neg = np.zeros(self.n_obs)
        self.flags: list[Flag] = []
        self.history: list[dict[str, float]] = []
        self._rng = np.random.default_rng([int(seed), 11])
        self._skill: deque = deque(maxlen=self.settings.window)
        self._ranks: deque = deque(maxlen=self.settings.window)

    def check(self, cycle: int, time: float, Y: np.ndarray, y: np.ndarray, r: np.ndarray, *,
              forecast: np.ndarray | None = None, truth: np.ndarray | None = None) -> list[Flag]:
        """Run every check on this cycle's forecast; returns the new flags (also kept in :attr:`flags`).

        Parameters
        ----------
        cycle, time : int, float
        Y : ndarray (n_obs, N)
            Observed forecast ensemble of *all* sensors (excluded ones too: their charts keep running).
        y, r : ndarray (n_obs,)
            Observations and error standard deviations.
        forecast, truth : ndarray (n, N) and (n,), optional
            Forecast ensemble and true state (twin experiments): spread/skill in state space.
        """
        st = self.settings
        Y, y, r = np.asarray(Y, float), np.asarray(y, float), np.asarray(r, float)
        if Y.shape[0] != self.n_obs or y.shape != (self.n_obs,) or r.shape != (self.n_obs,):
            raise AssimilationError(f"guardrails: expected {self.n_obs} sensors, got Y {Y.shape}, y {y.shape}, "
                                    f"r {r.shape}")
        new: list[Flag] = []
        d = y - Y.mean(axis=1)
        var_f = Y.var(axis=1, ddof=1)
        s = np.sqrt(var_f + r * r)
        act = self.active
        rec: dict[str, float] = {}

        chi, p = innovation_chi2(d[act], s[act] ** 2)
        rec.update(innovation_chi2=chi, innovation_chi2_pvalue=p, flag_innovation_chi2=float(p < st.significance))
        if p < st.significance:
            new.append(Flag(cycle, time, "innovation_chi2", chi, st.significance,
                            f"innovation chi-square / m = {chi:.3g} (p = {p:.2g}): innovations inconsistent with the "
                            f"observation errors and the forecast spread"))

        if forecast is not None and truth is not None:
            err = forecast.mean(axis=1) - truth
            self._skill.append((float(np.mean(forecast.var(axis=1, ddof=1))), float(np.mean(err * err))))
        else:  # in observation space, in units of each sensor's error (unit-free: networks of mixed quantities)
            self._skill.append((float(np.mean(var_f[act] / r[act] ** 2)),
                                max(float(np.mean((d[act] / r[act]) ** 2)) - 1.0, 0.0)))
        var_sum, err_sum = (sum(v) for v in zip(*self._skill))
        ratio = float(np.sqrt(var_sum / err_sum)) if err_sum > 0 else float("inf")
        bad_ratio = len(self._skill) == st.window and not st.spread_skill[0] <= ratio <= st.spread_skill[1]
        rec.update(spread_skill_ratio=ratio, flag_spread_skill=float(bad_ratio))
        if bad_ratio:
            new.append(Flag(cycle, time, "spread_skill", ratio, st.spread_skill[0] if ratio < 1 else st.spread_skill[1],
                            f"spread/skill over the last {st.window} cycles is {ratio:.3g}, outside "
                            f"[{st.spread_skill[0]:g}, {st.spread_skill[1]:g}]"))

        N = Y.shape[1]
        self._ranks.append(np.bincount(observation_ranks(Y[act], y[act], r[act], self._rng), minlength=N + 1))
        p_rank = window_rank_flatness(self._ranks, st.rank_bins)
        bad_rank = len(self._ranks) == st.window and p_rank < st.rank_significance
        rec.update(rank_histogram_pvalue=p_rank, flag_rank_histogram=float(bad_rank))
        if bad_rank:
            new.append(Flag(cycle, time, "rank_histogram", p_rank, st.rank_significance,
                            f"rank histogram of the last {st.window} cycles is not flat (p = {p_rank:.2g})"))

        if cycle >= st.warmup:
            z = d / s
            self.cusum_pos = np.maximum(0.0, self.cusum_pos + z - st.cusum_k)
            self.cusum_neg = np.maximum(0.0, self.cusum_neg - z - st.cusum_k)
        stat = np.maximum(self.cusum_pos, self.cusum_neg)
        for i in np.flatnonzero((stat > st.cusum_h) & ~self.alarmed):
            self.alarmed[i] = True
            action = "flagged"
            if st.policy == "exclude" and self.active[i]:
                if self.active.sum() > 1:
                    self.active[i] = False
                    action = "excluded"
                else:
                    log.warning("guardrails: sensor %d alarmed but is the last active sensor; kept", i)
            direction = "upward" if self.cusum_pos[i] >= self.cusum_neg[i] else "downward"
            new.append(Flag(cycle, time, "sensor_drift", float(stat[i]), st.cusum_h,
                            f"sensor {i}: CUSUM of standardised innovations {stat[i]:.3g} > {st.cusum_h:g} "
                            f"({direction} drift){'; excluded from the analysis' if action == 'excluded' else ''}",
                            sensor=int(i), action=action))
        rec.update(cusum_max=float(stat.max(initial=0.0)), flagged_sensors=float(self.alarmed.sum()),
                   excluded_sensors=float((~self.active).sum()), n_obs_active=float(self.active.sum()))
        for f in new:
            log.warning("guardrail flag at cycle %d: %s", cycle, f.message)
        self.flags.extend(new)
        self.history.append(rec)
        return new

    def state(self) -> dict:
        """Everything the checks remember, as JSON-ready data (a campaign keeps it in its checkpoints)."""
        return {"active": self.active.astype(int).tolist(), "alarmed": self.alarmed.astype(int).tolist(),
                "cusum_pos": self.cusum_pos.tolist(), "cusum_neg": self.cusum_neg.tolist(),
                "skill": [list(p) for p in self._skill], "ranks": [np.asarray(c).tolist() for c in self._ranks],
                "flags": [asdict(f) for f in self.flags]}

    def restore(self, state: dict, rng: np.random.Generator | None = None) -> None:
        """Continue from :meth:`state` of the same sensors (``rng``: the random stream of the cycle to come)."""
        active = np.asarray(state["active"], dtype=bool)
        if active.size != self.active.size:
            raise ValueError(f"guardrails: the saved state tracks {active.size} sensors, the network has "
                             f"{self.active.size}")
        self.active = active
        self.alarmed = np.asarray(state["alarmed"], dtype=bool)
        self.cusum_pos = np.asarray(state["cusum_pos"], dtype=float)
        self.cusum_neg = np.asarray(state["cusum_neg"], dtype=float)
        self._skill = deque([tuple(p) for p in state["skill"]], maxlen=self.settings.window)
        self._ranks = deque([np.asarray(c, dtype=int) for c in state["ranks"]], maxlen=self.settings.window)
        self.flags = [Flag(**f) for f in state["flags"]]
        if rng is not None:
            self.reseed(rng)

    def reseed(self, rng: np.random.Generator) -> None:
        """Draw the checks' random numbers (rank-histogram ties) from ``rng`` from now on."""
        self._rng = rng

    def diagnostics(self) -> dict[str, float]:
        """The last cycle's statistics and flags as diagnostics variables (see :data:`GUARDRAIL_DIAGNOSTICS`)."""
        return dict(self.history[-1]) if self.history else {}

    def first_flag(self, kind: str, sensor: int | None = None) -> Flag | None:
        """The first flag of ``kind`` (for ``sensor``, when given), or ``None``."""
        for f in self.flags:
            if f.kind == kind and (sensor is None or f.sensor == sensor):
                return f
        return None

    def write_flags(self, path) -> Path:
        """Write every flag as one JSON line (``flags.jsonl`` in a run directory; read by ``twin report``), atomically;
        owner-only in an owner-only directory (a sensitive run)."""
        from twin.io.atomic import is_private_directory, write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text(path, "".join(json.dumps(asdict(f), sort_keys=True) + "\n" for f in self.flags),
                          private=is_private_directory(path.parent))


def read_flags(path) -> list[Flag]:
    """Flags written by :meth:`Guardrails.write_flags` (an empty list when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [Flag(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def active_rows(guardrails: Guardrails, rows: Sequence[int] | None = None) -> np.ndarray:
    """Indices of the sensors still assimilated (optionally restricted to ``rows``)."""
    idx = np.flatnonzero(guardrails.active)
    return idx if rows is None else np.intersect1d(idx, np.asarray(rows, dtype=int))
