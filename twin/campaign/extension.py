"""How a live twin (:mod:`twin.campaign.live`, whose docstring states the rules) extends one experiment with delivered
files: the campaign's analysis times (:class:`Cycles`: a filter's cycles or 4D-Var's windows), the extended
``experiment.yaml`` (:func:`plan`), and the checks made before anything is written (an observation used at or
before the last analysis, a new cycle or window without observations, the analysed cycles' observations changed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.campaign import layout
from twin.core.errors import ConfigError, ObservationError, WorkflowError


@dataclass
class Plan:
    """An experiment extended by delivered files: its new ``experiment.yaml`` text and its cycles before and after."""

    exp_dir: Path
    text: str
    cycles_before: int
    cycles_after: int


@dataclass
class Cycles:
    """The analysis times of a campaign, ``t_0 + k L`` for ``k = 1 .. K``: a filter's cycles (``L`` = ``every dt``)
    or 4D-Var's windows (``L`` = ``S dt_obs``, the end of each). ``step``: with 4D-Var the model's time step, on
    whose nearest step each observation is used (``None``: a filter analyses an observation at the first analysis at
    or after it). ``key``: where the count is in the configuration."""

    t0: float
    length: float
    K: int
    key: tuple[str, ...]
    step: float | None = None

    @classmethod
    def of(cls, s) -> Cycles:
        """The cycles of the experiment set up in ``s`` (:class:`twin.campaign.experiment.Setup`). Collective."""
        if s.cfg.assimilation.method != "4dvar":
            sch = s.schedule
            return cls(float(sch.t0), float(sch.every * sch.dt), int(sch.n_cycles), ("schedule", "cycles"))
        from twin.campaign.windows import WindowPlan

        plan = WindowPlan(s.cfg, s.get_model())
        try:
            return cls(plan.t0, plan.cycle.S * plan.cycle.dt_obs, plan.n_cycles, ("cycles",),
                       float(plan.clock.dt))
        finally:
            plan.destroy()

    @property
    def last(self) -> float:
        """The last analysis time (the end of the last window)."""
        return self.t0 + self.K * self.length

    def used_at(self, times: np.ndarray) -> np.ndarray:
        """When observations at ``times`` are compared with the model: their own times (filters) or the model step
        nearest each (4D-Var; half-way: the later, the rule of :class:`twin.observations.file_network.StepClock`)."""
        times = np.asarray(times, dtype=float)
        if self.step is None:
            return times
        return self.t0 + np.floor((times - self.t0) / self.step + 0.5) * self.step

    def to_cover(self, t: float) -> int:
        """The fewest cycles (at least ``K``) whose last analysis time is at or after ``t``."""
        n = max(self.K, int(np.ceil((t - self.t0) / self.length - 1e-9)))
        while self.t0 + n * self.length < t - 1e-9 * self.length:
            n += 1
        return n


def _time_text(t: float, units: str) -> str:
    return f"{t:.9g}" + ("" if units in ("", "1") else f" {units}")


def plan(exp_dir: Path, comm, network: int, paths: list[str], check: bool = True) -> Plan:
    """The extension of one experiment by the files ``paths`` (fed to its network number ``network``). Collective:
    builds the experiment's model on ``comm`` to read the files in its units and cycles; writes nothing.

    With ``check``, also what :mod:`this module <twin.campaign.live>` promises before anything is written: the cycles
    already in ``observations.h5`` keep their observations bitwise and every new cycle has one.

    Raises
    ------
    ObservationError
        For a file that cannot be read with the network's variables, an observation at or before the last analysis
        time, a file without an observation inside the model's domain, a new cycle without observations, or
        observations so far ahead that the extended campaign does not validate (e.g. more steps than the limits
        allow): the file with the latest observation is named.
    WorkflowError
        When the files would change the observations of cycles already analysed.
    """
    from twin.campaign import context as ctx
    from twin.campaign.experiment import setup
    from twin.config.loader import parse_yaml, validate_data
    from twin.config.writer import dump_yaml
    from twin.core.units import compatible, convert
    from twin.observations import qc
    from twin.observations.networks import read_file, reading_model

    s = setup(exp_dir, comm)
    try:
        cfg, model, cycles = s.cfg, s.get_model(), Cycles.of(s)
        spec = cfg.assimilation.observations[network]
        observed = reading_model(spec, model, ctx.components(model))  # a coupled model's component it observes
        K, last = cycles.K, cycles.last
        tol = 1e-9 * cycles.length
        latest, latest_source = last, None
        held: dict[tuple, str] = {}  # what each file delivered together observes: (time, variable, position)
        for path in paths:
            table = read_file(spec, path, observed, cfg.timeline.calendar_start)
            _refuse_twice_delivered(table, held)
            early = np.flatnonzero(cycles.used_at(table.time) <= last + tol)
            if early.size:
                i = int(early[0])
                request = getattr(spec, "variables", {}).get(str(table.variable[i]))
                named = (request.name or request.standard_name) if request is not None else None
                raise ObservationError(
                    f"observation file {table.source}: observation {table.row[i]} of "
                    f"'{named or table.variable[i]}' at time "
                    f"{_time_text(table.time[i], table.time_units)} is at or before the last analysis time "
                    f"{_time_text(last, table.time_units)} of experiment {s.name}"
                    + ("" if cycles.step is None else " (4D-Var uses it at its nearest model step)")
                    + f" ({early.size} of {len(table)} observations are): twin assimilate takes only observations "
                    "after the last analysis (it does not rewind); leave the earlier ones out of the file")
            usable = ~qc.missing(table.value, table.error) & ~qc.outside_domain(table.position, observed.grid.extent)
            if not usable.any():
                raise ObservationError(f"observation file {table.source}: none of its {len(table)} observations lies "
                                       f"inside the model's domain {[list(e) for e in observed.grid.extent]} (in "
                                       f"{observed.length_units}) with a value and an error")
            last_used = float(np.max(cycles.used_at(table.time[usable])))
            if last_used > latest:
                latest, latest_source = last_used, table.source
        K_new = cycles.to_cover(latest)
        config = layout.config_file(exp_dir)
        data, _ = parse_yaml(config.read_text(encoding="utf-8"), str(config))
        functools.reduce(dict.get, cycles.key[:-1], data["assimilation"])[cycles.key[-1]] = K_new
        networks = data["assimilation"]["observations"]
        entry = networks[network] if isinstance(networks, list) else networks
        entry["deliveries"] = list(entry.get("deliveries", [])) + [str(p) for p in paths]
        span = K_new * cycles.length  # model time after the start
        if not compatible(model.time_units, "1"):
            span = float(convert(span, model.time_units, cfg.timeline.units))
        if cfg.timeline.start + span > cfg.timeline.end:
            data["timeline"]["end"] = float(cfg.timeline.start + span)
        try:
            new_cfg = validate_data(data, str(config))
        except ConfigError as exc:  # the file asks for more than the campaign allows: say so of the file
            why = exc.problems[0]
            raise ObservationError(
                f"observation file {latest_source}: its last observation, at time "
                f"{_time_text(latest, observed.time_units)}, would extend experiment {s.name} from {K} to {K_new} "
                f"cycles, which its campaign refuses ({why.path}: {why.message}); deliver observations up to "
                "where the campaign may run") from None
        text = dump_yaml(data, default_flow_style=None, width=120)
        if check and K_new > K:
            _check_observations(s, new_cfg, model, K, K_new, paths)
        return Plan(exp_dir, text, K, K_new)
    finally:
        s.destroy()


def _refuse_twice_delivered(table, held: dict[tuple, str]) -> None:
    """:class:`ObservationError` when ``table`` observes a variable at a time and place that another file of the same
    delivery observes (``held``, updated): one of the two would be dropped as a duplicate without a word (two visit
    tables of one date: both said assimilated, one scan lost), where the same files delivered one after the other are
    refused (the second is not after the last analysis)."""
    keys = [(round(float(t), 9), str(v), tuple(np.round(np.atleast_1d(x), 9).tolist()))
            for t, v, x in zip(table.time, table.variable, table.position)]
    for key in keys:
        other = held.get(key)
        if other is not None and other != str(table.source):
            n = sum(k in held for k in keys)
            raise ObservationError(f"observation files {other} and {table.source} both observe '{key[1]}' at time "
                                   f"{_time_text(key[0], table.time_units)} at the same place ({n} observation(s)); "
                                   "twin would keep one and drop the other: deliver the one meant (a corrected file "
                                   "replaces the other), or give them different times")
    held.update({k: str(table.source) for k in keys})


def _check_observations(s, new_cfg, model, K: int, K_new: int, paths: list[str]) -> None:
    """The extended campaign's observations keep those of the ``K`` cycles in ``observations.h5`` and give each new
    cycle one at least."""
    if new_cfg.assimilation.method == "4dvar":
        _check_windows(s, new_cfg, model, K, paths)
        return
    from twin.campaign import context as ctx
    from twin.campaign.checkpoints import is_valid_checkpoint, reader
    from twin.campaign.steps import file_values, unchanged_before

    obs = ctx.observations(new_cfg, model)
    ys, errs = file_values(obs, K_new)
    sch = ctx.schedule(new_cfg, model)
    for k in range(K, K_new):
        if not np.isfinite(ys[k]).any():
            a, b = sch.window(k)
            raise ObservationError(f"{', '.join(map(str, paths))}: cycle {k} ({a:.9g}, {b:.9g}] of experiment {s.name} "
                                   "would have no observation, and a filter cannot analyse an empty cycle: deliver "
                                   "observations for every cycle up to the latest one")
    path = layout.observations_file(s.exp_dir)
    if not is_valid_checkpoint(path, s.comm):
        return  # nothing analysed from it yet: the resume writes it whole
    with reader(path, s.comm) as r:
        old_y, old_e = r.read_array("observations"), r.read_array("errors")
        before = {name: int(b) - int(a) for name, (a, b) in r.meta.get("networks", {}).items()}
    after = {name: sl.stop - sl.start for name, sl in obs.network_slices.items()}
    for name, m in after.items():
        if before.get(name, m) != m:
            raise ObservationError(f"{', '.join(map(str, paths))}: network {name} of experiment {s.name} would "
                                   f"observe {m} sites instead of its {before[name]}: a live twin keeps the sites its "
                                   "campaign started with (its guardrails, localisation and diagnostics are per "
                                   "site); leave the other sites out of the files, or start a new campaign with them")
    if not (unchanged_before(ys, old_y) and unchanged_before(errs, old_e)):
        raise WorkflowError(f"{', '.join(map(str, paths))}: with these files the observations of the {old_y.shape[0]} "
                            f"cycles experiment {s.name} has analysed would change (new sites before old ones, or an "
                            "earlier file changed since): deliver observations of the same sites, and leave the "
                            "campaign's files as they were")


def _check_windows(s, new_cfg, model, K: int, paths: list[str]) -> None:
    """:func:`_check_observations` of a 4D-Var campaign: every window of the extended campaign gets observations
    (:func:`twin.campaign.windows.placed_observations` refuses one without) and the ``K`` windows analysed keep
    theirs bitwise."""
    from twin.campaign.checkpoints import is_valid_checkpoint, reader
    from twin.campaign.windows import (
        PLACED,
        WindowPlan,
        placed_observations,
        same_windows,
    )

    plan = WindowPlan(new_cfg, model)
    try:
        placed = placed_observations(plan, s.name)
    finally:
        plan.destroy()
    path = layout.observations_file(s.exp_dir)
    if not is_valid_checkpoint(path, s.comm):
        return  # nothing analysed from it yet: the resume writes it whole
    with reader(path, s.comm) as r:
        stored = {a: r.read_array(a) for a in (*PLACED, "windows")}
    if not same_windows(placed, stored, K):
        raise WorkflowError(f"{', '.join(map(str, paths))}: with these files the observations of the {K} windows "
                            f"experiment {s.name} has analysed would change (new sites before old ones, or an "
                            "earlier file changed since): deliver observations of the same sites, and leave the "
                            "campaign's files as they were")
