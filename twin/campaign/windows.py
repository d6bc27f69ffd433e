"""The windows of a cycled 4D-Var campaign and the observations each one gets (:mod:`twin.campaign.variational`).

Window ``k`` spans ``[s_k, e_k]`` with ``e_k = t_0 + (k + 1) S dt_obs`` and assimilates the observations of its new
span ``(e_k - S dt_obs, e_k]``. A twin experiment observes its nature run at ``t_0 + j dt_obs``; observations from files
are each placed at the model step nearest their time (:class:`twin.observations.file_network.StepClock`) and go to
the window whose new span holds that step (:func:`placed_observations`). ``twin assimilate``
(:mod:`twin.campaign.live`) places the observations of an extended campaign the same way, to check before anything is
written that the windows already analysed keep theirs and every new window gets some.
"""

from __future__ import annotations

import numpy as np

from twin.core.errors import ConfigError, ObservationError


class WindowPlan:
    """The 4D-Var objects of a campaign configuration ``cfg`` on ``model`` (collective): the window scheme
    (``cycle``), the observation network (``obs``), ``t_0``, and with observation files the
    :class:`~twin.observations.file_network.StepClock` (``clock``) placing each observation at its model step
    (``None`` for a twin experiment)."""

    def __init__(self, cfg, model):
        from twin.assimilation.factory import observations_from_config
        from twin.assimilation.fourdvar_cycle import cycle_from_config
        from twin.core.units import compatible, convert

        acfg = cfg.assimilation
        if acfg.observations is None:
            raise ConfigError("assimilation.observations: a 4D-Var campaign observes its nature run with this "
                              "network (e.g. {component: 0, all_points: true, error_std: 1.0})")
        if acfg.model != model.name:
            raise ConfigError(f"assimilation.model: {acfg.model!r} is not the campaign's component {model.name!r}")
        if not model.has_adjoint():  # a type that did not declare it (twin.core.kinds.ModelType.adjoint)
            raise ConfigError(f"assimilation.method: 4D-Var needs the adjoint of model '{model.name}', and model type "
                              f"'{model.type_name}' has none: use an ensemble method (etkf, enkf, letkf, esmda) or "
                              "give the model an adjoint (docs/your-own-model.md)")
        for p in acfg.parameters:
            par = model.parameters.get(p.name)
            if par is None:
                raise ConfigError(f"assimilation.parameters: {p.name!r} is not a parameter of model {model.name!r} "
                                  f"(parameters: {sorted(model.parameters)})")
            if par.is_field and p.bounds is not None:
                raise ConfigError(f"assimilation.parameters: bounds on the field parameter {p.name!r} are not "
                                  "supported; its transform (log for a log-Gaussian-field prior) keeps it in range")
        self.t0 = float(cfg.timeline.start) if compatible(model.time_units, "1") else \
            float(convert(cfg.timeline.start, cfg.timeline.units, model.time_units))
        self.n_cycles = int(acfg.cycles)
        self.cycle = cycle_from_config(model, acfg, name=f"{model.name}_fourdvar")
        self.n_times = self.n_cycles * self.cycle.S
        #: observations from files: each at its model step (StepClock); None for a twin experiment
        self.clock = None
        from twin.observations.networks import reads_files

        if any(reads_files(n) for n in acfg.observations):
            from twin.observations.file_network import StepClock
            from twin.observations.networks import build

            dt = getattr(model, "dt", None)
            if dt is None:
                raise ConfigError(f"assimilation.observations: observation files place each observation at the "
                                  f"nearest step of the model, and model '{model.name}' (type "
                                  f"'{model.type_name}') has no fixed time step 'dt'")
            self.clock = StepClock(self.t0, self.time(self.n_times), float(dt), interval=self.cycle.dt_obs)
            self.obs = build(acfg.observations, model, start=cfg.timeline.calendar_start, clock=self.clock)
        else:
            self.obs = observations_from_config(acfg, model)

    def time(self, j: int) -> float:
        return self.t0 + j * self.cycle.dt_obs

    def window_index(self, t: np.ndarray) -> np.ndarray:
        """The window whose new span ``(e_k - S dt_obs, e_k]`` holds each time (window 0 also ``t_0``)."""
        q = (np.asarray(t, dtype=float) - self.t0) / (self.cycle.S * self.cycle.dt_obs)
        return np.clip(np.ceil(q - 1e-9).astype(np.int64) - 1, 0, self.n_cycles - 1)

    def destroy(self) -> None:
        if self.cycle.B is not None and hasattr(self.cycle.B, "destroy"):
            self.cycle.B.destroy()


def placed_observations(plan: WindowPlan, name: str) -> dict:
    """Every observation of the files of ``plan`` (which has a clock) at its model step and in its window: arrays
    ``value``, ``error``, ``row`` (of the stacked operator), ``step``, ``obs_times``, ``windows`` (one entry per
    observation used, ordered by step, then row, then file row) and ``files`` (every file's SHA-256 and QC counts,
    :func:`twin.observations.networks.file_records`).

    Raises
    ------
    ObservationError
        For a window without observations (one line naming it and experiment ``name``).
    """
    from twin.observations.networks import file_records, timed_observations

    data = timed_observations(plan.obs)
    obs_times = np.array([plan.clock.time(n) for n in data["step"]])
    windows = plan.window_index(obs_times)
    empty = np.setdiff1d(np.arange(plan.n_cycles), windows)
    files = file_records(plan.obs)
    if empty.size:
        k = int(empty[0])
        ts, te = plan.cycle.window_of(k, plan.t0)
        names = ", ".join(sorted({str(f["file"]) for f in files}))
        raise ObservationError(f"experiment {name}: 4D-Var window {k} [{ts:g}, {te:g}] gets no observation from "
                               f"{names} in ({te - plan.cycle.S * plan.cycle.dt_obs:g}, {te:g}] "
                               f"({empty.size} such windows): give observations there, or fewer/longer windows "
                               "(assimilation.cycles, window, shift, obs_interval)")
    return {**data, "obs_times": obs_times, "windows": windows, "files": files}


#: the arrays of ``observations.h5`` that place each file observation, and their keys in :func:`placed_observations`
PLACED = {"observations": "value", "errors": "error", "rows": "row", "steps": "step", "obs_times": "obs_times"}


def same_windows(placed: dict, stored: dict, n_windows: int) -> bool:
    """Whether ``placed`` (:func:`placed_observations` of an extended campaign) gives windows ``0 .. n_windows - 1``
    exactly the observations ``stored`` (the arrays of :data:`PLACED` and ``windows`` read from ``observations.h5``)
    holds for them, bitwise."""
    mine = np.asarray(placed["windows"]) < n_windows
    theirs = np.asarray(stored["windows"]) < n_windows
    for array, key in PLACED.items():
        a = np.ascontiguousarray(np.asarray(placed[key])[mine])
        b = np.ascontiguousarray(np.asarray(stored[array])[theirs])
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            return False
    return True
