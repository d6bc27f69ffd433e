"""What every campaign step rebuilds from an experiment's configuration: the model on a communicator, the cycle
clock, the observation network, the analysis method, the control vector and the random streams.

Nothing here is a new analysis or model: the pieces come from :mod:`twin.assimilation` (ETKF/EnKF/LETKF, inflation,
control vectors, the observation schedule and synthetic observations of twin experiments) and :mod:`twin.models`.
This module only maps the typed configuration onto them, the same way in every step and in both modes (online and
workflow), which is what makes the two modes give the same analysis.

Coupled campaigns
-----------------
A campaign with a ``coupling`` section assimilates into the coupled model itself: :func:`build_model` wraps it in
:class:`twin.campaign.state.CoupledState` (one natural-order state: the components' states one after the other),
every observation network names the component it observes (``model:``), and its field parameters
(``<component>.<name>``) are gathered and set through their own grids (:func:`twin.campaign.state.field_grid`).
LETKF localises every component on its own grid with the observations of that component (weakly coupled
assimilation, :class:`twin.assimilation.letkf.CoupledContext`).

Random streams
--------------
Every random number of a campaign comes from ``numpy.random.default_rng([campaign.seed, assimilation.seed, purpose,
index])`` (:func:`streams`, :func:`rng`), the purposes and indices of the one table in :mod:`twin.core.streams`: the
initial ensemble of member ``m`` (INITIAL, ``m``), the analysis of cycle ``k`` (ANALYSIS, ``k``: perturbed
observations, random rotations), the nature run (TRUTH: observation noise 0, initial state 1), the guardrails and a
placement study. No stream depends on which process or how many ranks draw it, or on how often a step was run
before, so a resumed campaign draws exactly what an uninterrupted one would.

Cycle clock
-----------
Cycle ``k`` runs from ``t_k = t0 + k * every * dt`` to ``t_{k+1}`` in the model's time units (``dt`` the model's
own step, ``every`` and the number of cycles from ``assimilation.schedule``), as in
:class:`twin.assimilation.cycle.ObservationSchedule`; ``t0`` is ``timeline.start`` (in the model's time units;
for dimensionless models such as Lorenz-96 the timeline's numbers are model time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.core.errors import ConfigError, ModelError
from twin.core.streams import TRUTH_INITIAL_STATE, Purpose, Streams

#: Cycled ensemble filters; the other campaign methods (online only) have their own drivers.
FILTERS = ("etkf", "enkf", "letkf")
OTHER_METHODS = ("esmda", "4dvar")


def seeds(cfg) -> tuple[int, int]:
    """The campaign's two seeds: ``campaign.seed`` and ``assimilation.seed``."""
    return int(cfg.campaign.seed), int(getattr(cfg.assimilation, "seed", 0))


def streams(cfg) -> Streams:
    """The campaign's random streams (:mod:`twin.core.streams`), seeded by :func:`seeds`."""
    return Streams(seeds(cfg))


def rng(cfg, purpose: Purpose | int, index: int) -> np.random.Generator:
    """The random stream of ``purpose`` (:class:`twin.core.streams.Purpose`) and ``index`` (member or cycle)."""
    return streams(cfg).rng(purpose, index)


def assimilation_section(cfg):
    """The ensemble ``assimilation`` section, refused with a clear message when absent or not a cycling filter."""
    acfg = cfg.assimilation
    if acfg is None:
        raise ConfigError("assimilation: a cycled campaign needs an 'assimilation' section (method, N, schedule, "
                          "observations)")
    method = getattr(acfg, "method", None)
    if method not in FILTERS + OTHER_METHODS:
        raise ConfigError(f"assimilation.method: campaigns run the filters etkf, enkf and letkf, the smoother esmda "
                          f"and cycled 4dvar; {method!r} is not one")
    return acfg


def is_filter(cfg) -> bool:
    """Whether the campaign cycles an ensemble filter (the forecast/analyse steps of :mod:`twin.campaign.steps`);
    ``esmda`` and ``4dvar`` run in :mod:`twin.campaign.smoother` and :mod:`twin.campaign.variational`."""
    return assimilation_section(cfg).method in FILTERS


def ensemble_size(cfg) -> int:
    """``assimilation.N``."""
    return int(assimilation_section(cfg).N)


def ranks_per_member(cfg) -> int:
    """MPI ranks of one member run (``ensemble.ranks_per_member``)."""
    return int(cfg.ensemble.ranks_per_member)


def component(cfg) -> tuple[str, Any]:
    """The campaign's single model component (name, section); a coupled campaign has none (see
    :func:`is_coupled`)."""
    if is_coupled(cfg):
        raise ConfigError(f"models: the campaign couples {', '.join(cfg.coupling.components)}; it has no single "
                          "component")
    if len(cfg.models) != 1:
        raise ConfigError(f"models: campaigns assimilate into one component; got {len(cfg.models)} "
                          f"({', '.join(cfg.models)}); couple them with a 'coupling' section")
    return next(iter(cfg.models.items()))


def is_coupled(cfg) -> bool:
    """Whether the campaign runs a coupled model (a ``coupling`` section)."""
    return getattr(cfg, "coupling", None) is not None


#: name of the coupled model of a coupled campaign (checkpoint field, diagnostics, PETSc logs)
COUPLED_NAME = "coupled"


def build_model(cfg, comm):
    """The component's model on ``comm`` (its solver options go under its prefix first); for a campaign with a
    ``coupling`` section the coupled model (:func:`twin.coupling.build.build_coupled`) seen through
    :class:`twin.campaign.state.CoupledState` (one natural-order state)."""
    from types import SimpleNamespace

    from twin.models.registry import create_model

    if is_coupled(cfg):
        from twin.campaign.state import CoupledState
        from twin.coupling.build import build_coupled

        coupled = build_coupled(SimpleNamespace(config=cfg, path="campaign"), comm, COUPLED_NAME)
        try:
            return CoupledState(coupled)
        except BaseException:
            coupled.destroy()
            raise
    name, mcfg = component(cfg)
    return create_model(name, mcfg, comm, getattr(cfg, "limits", None))


def schedule(cfg, model):
    """The observation schedule (:func:`twin.assimilation.factory.schedule_from_config`) in the model's time."""
    from twin.assimilation.factory import schedule_from_config
    from twin.core.units import compatible, convert

    acfg = assimilation_section(cfg)
    dt = getattr(model, "dt", None)
    if dt is None:
        raise ModelError(model.name, f"model type '{model.type_name}' has no fixed time step 'dt', which the cycle "
                                     "clock (assimilation.schedule.every steps) counts in")
    if compatible(model.time_units, "1"):
        t0 = float(cfg.timeline.start)
    else:
        t0 = float(convert(cfg.timeline.start, cfg.timeline.units, model.time_units))
    return schedule_from_config(acfg, float(dt), t0)


def observations(cfg, model):
    """The observation networks of ``assimilation.observations`` on the model (:func:`twin.observations.networks
    .build`); on a coupled model each network observes the component it names."""
    from twin.observations.networks import build

    acfg = assimilation_section(cfg)
    networks = acfg.observations
    edges = clock = None
    from twin.observations.networks import reads_files

    if any(reads_files(n) for n in networks):
        sch = schedule(cfg, model)
        if acfg.method == "esmda":  # every observation at its own model step of the window (smoother.py)
            from twin.observations.file_network import StepClock

            clock = StepClock(sch.window(0)[0], sch.window(sch.n_cycles - 1)[1], sch.dt)
        else:
            edges = [sch.window(0)[0]] + [sch.window(k)[1] for k in range(sch.n_cycles)]
    return build(networks, model, components(model), cycle_edges=edges, start=cfg.timeline.calendar_start,
                 clock=clock)


def components(model) -> dict | None:
    """``{component: (its model, offset of its block)}`` of a coupled model's natural-order state, else ``None``
    (what :func:`twin.observations.networks.build` needs)."""
    from twin.campaign.state import CoupledState

    if not isinstance(model, CoupledState):
        return None
    return {c: (model.models[c], model.block(c).start) for c in model.blocks}


def method(cfg, n_members: int):
    """The analysis (:func:`twin.assimilation.factory.method_from_config`) for ``n_members`` live members."""
    from twin.assimilation.factory import method_from_config

    acfg = assimilation_section(cfg)
    return method_from_config(acfg.model_copy(update={"N": int(n_members)}))


def analysis(cfg, model, obs, control, n_members: int):
    """The filter analysis of a cycle (:class:`twin.assimilation.analysis.EnsembleAnalysis`) of the configured method
    for ``n_members`` live members on whole control vectors ``control``, localised by :func:`local_context`."""
    from twin.assimilation.analysis import EnsembleAnalysis

    return EnsembleAnalysis(method(cfg, n_members), obs, control, local=local_context(cfg, model, obs, control),
                            background_check=cfg.assimilation.background_check)


def local_context(cfg, model, obs, control):
    """The localisation context of LETKF and localised ES-MDA for the whole control vector ``control`` (``None``
    for global methods).

    State entries sit at their grid points, field-parameter entries at the points of their field, scalar parameters
    nowhere (global transform). A coupled campaign gets one context per component
    (:class:`twin.assimilation.letkf.CoupledContext`): its state block and field parameters on its own grid, the
    observations of the networks that name it, radius ``localisation.component_radius[c]`` or
    ``localisation.radius`` (the names are checked when the file is read:
    :meth:`twin.config.assimilation_ensemble.EnsembleAssimilationConfig.check_campaign`)."""
    from twin.assimilation.letkf import ComponentContext, CoupledContext, Geometry, LocalContext
    from twin.campaign.state import CoupledState

    acfg = assimilation_section(cfg)
    spec = getattr(acfg, "localisation", None)
    if acfg.method not in ("letkf", "esmda") or spec is None:
        return None
    if not isinstance(model, CoupledState):
        geometry = Geometry.from_grid(model.grid)
        fields = [rows for _, rows in _field_rows(model, control)]
        return LocalContext(geometry.entry_points(0, control.size, fields), geometry, obs.locations)
    observed_by = getattr(obs, "network_models", {})
    comps = []
    for comp, block in model.blocks.items():
        grid = model.models[comp].grid
        rows = [np.arange(block.start, block.stop)]
        points = [np.arange(block.stop - block.start) // grid.dof]
        for name, (lo, hi) in _field_rows(model, control):
            if name.partition(".")[0] == comp:
                rows.append(np.arange(lo, hi))
                points.append(np.arange(hi - lo))
        obs_rows = [np.arange(sl.start, sl.stop) for net, sl in obs.network_slices.items()
                    if observed_by.get(net) == comp]
        obs_rows = np.concatenate(obs_rows).astype(int) if obs_rows else np.zeros(0, dtype=int)
        locations = None if obs.locations is None else np.atleast_2d(obs.locations)[obs_rows]
        local = LocalContext(np.concatenate(points), Geometry.from_grid(grid), locations)
        comps.append(ComponentContext(comp, np.concatenate(rows), local, obs_rows, spec.component_radius.get(comp)))
    return CoupledContext(comps)


def _field_rows(model, control) -> list[tuple[str, tuple[int, int]]]:
    """The control-vector rows of every field parameter: ``(name, (lo, hi))``."""
    return [(p.name, control.offsets[p.name]) for p in control.parameters if model.parameters[p.name].is_field]


def control_vector(model):
    """State entries (natural order) then every estimable parameter in its transform's space."""
    from twin.assimilation.transforms import ControlParameter, ControlVector
    from twin.campaign.state import field_size, state_size

    params = []
    for p in model.estimable():
        size = field_size(model, p.name) if p.is_field else 1
        params.append(ControlParameter(p.name, size, p.transform))
    return ControlVector(state_size(model), params)


def initial_member(cfg, model, member: int,
                   spread: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Member ``member`` of the prior ensemble: estimable parameters drawn from their priors
    (:func:`twin.models.priors.sample_prior`), and the configured initial state plus Gaussian noise of standard
    deviation ``assimilation.background_std`` per state entry (:func:`background_spread`; default: the networks' mean
    ``error_std``, the background error of a twin experiment); ``spread``: that deviation when the caller has it
    already (:func:`prior_ensemble` computes it once for all members).

    A field parameter updated in logit space (``transform: logit``, e.g. the structure's damage in [0, 1)) with a
    ``gaussian_field`` prior with ``log: false`` reads that prior as one of ``logit(d)``: the member is the
    logistic of the draw, inside (0, 1) as the transform needs.

    Returns the full state (natural order) and the physical parameter values (floats, or whole fields in natural
    order). Deterministic in ``(seeds, member)`` on any number of ranks.
    """
    gen = rng(cfg, Purpose.INITIAL, member)
    from twin.models.contract import initial_state

    params = {p.name: sample_parameter(model, p, gen) for p in model.estimable()}
    x0 = initial_state(model)  # checked: a PETSc vector of the model's state
    try:
        state = model.grid.allgather(x0).ravel()
    finally:
        x0.destroy()
    spread = background_spread(cfg, model) if spread is None else spread
    state = state + spread * gen.standard_normal(state.size)
    return state, params


def prior_ensemble(cfg, model, n_members: int, experiment: str) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The ``n_members`` members of the prior ensemble (:func:`initial_member`); a WARNING when they are all the
    same (no initial noise, ``background_std: 0`` or only on static components, and no parameter drawn from a
    prior): an ensemble without spread has no covariance, so no analysis can move it."""
    spread = background_spread(cfg, model)  # once for the ensemble: the same for every member
    members = [initial_member(cfg, model, m, spread) for m in range(n_members)]
    if not np.any(spread) and not list(model.estimable()):
        from twin.core.log import get_logger

        get_logger("twin.campaign").warning(
            "experiment %s: its %d members start the same (no initial-state noise and no parameter drawn from a "
            "prior): the ensemble has no spread and the analyses cannot change it; give assimilation.background_std "
            "> 0 or estimate a parameter", experiment, n_members)
    return members


def sample_parameter(model, p, gen: np.random.Generator) -> Any:
    """A draw of parameter ``p`` of ``model`` from its prior: a float, or a whole field in natural order on the
    field's own grid (:func:`twin.campaign.state.field_grid`: a coupled model's fields are not on its state grid). A
    field updated in logit space (``transform: logit``) with a ``gaussian_field`` prior with ``log: false`` reads
    the prior as one of ``logit(d)``: the draw is its logistic, inside (0, 1)."""
    from twin.campaign.state import field_grid
    from twin.models.priors import sample_prior

    if not p.is_field:
        return sample_prior(p.prior, gen)
    with field_grid(model, p.name) as g:
        value = np.asarray(sample_prior(p.prior, gen, grid=g), dtype=float).ravel()
    if p.transform == "logit" and not getattr(p.prior, "log", False):
        value = 1.0 / (1.0 + np.exp(-value))
    return value


def background_spread(cfg, model, std: float | None = None) -> np.ndarray:
    """The standard deviation of the background error of every entry of ``model``'s whole state (natural order): the
    initial states' noise of a twin experiment's members and of its nature run.

    ``std`` (the truth's ``initial_std``) or ``assimilation.background_std``: one number for every entry, or a
    mapping by state variable (``{h: 0.03, u: 0.01}``) or, for a coupled model, by component and
    ``<component>.<variable>`` (an entry it does not name: 0). Unset: the networks' mean ``error_std``; for a coupled
    model each component the mean of the networks observing it (``model:``), 0 for a component none observes (the
    errors are in the observed component's units, metres of noise on a tissue measured in cells/mm^3 otherwise). A
    component that is not :attr:`~twin.models.base.Model.prognostic` (a static solve recomputes its state from its
    inputs) gets 0 whatever is asked: its state is no initial condition, and noise on it only spoils the solver's
    first guess.

    Raises
    ------
    ConfigError
        For a mapping key that names no variable or component of the model.
    """
    from twin.config.observation_networks import representative_error

    acfg = assimilation_section(cfg)
    given = std if std is not None else acfg.background_std
    parts = getattr(model, "models", None)  # a coupled model's components, in the whole state's order
    components = dict(parts) if isinstance(parts, dict) and parts else {None: model}
    if given is None:
        if None in components:
            given = representative_error(acfg.observations)
        else:
            given = {c: representative_error(nets) for c in components
                     if (nets := [n for n in acfg.observations if getattr(n, "model", None) == c])}
    known = {}  # key -> (component, variable index or None)
    for c, m in components.items():
        if c is not None:
            known[c] = (c, None)
        for i, v in enumerate(m.state_names):
            known[v if c is None else f"{c}.{v}"] = (c, i)
    if isinstance(given, dict):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"assimilation.background_std: {unknown} name no state variable"
                              f"{'' if None in components else ' or component'} of model {model.name!r}; it has "
                              f"{', '.join(known)}")
    out = []
    for c, m in components.items():
        per = np.zeros(len(m.state_names))
        if isinstance(given, dict):
            for key, value in given.items():  # a component's value first, a variable's of it after (more specific)
                comp, i = known[key]
                if comp == c and i is None:
                    per[:] = value
            for key, value in given.items():
                comp, i = known[key]
                if comp == c and i is not None:
                    per[i] = value
        else:
            per[:] = given
        if not getattr(m, "prognostic", True):
            per[:] = 0.0
        out.append(np.tile(per, m.grid.size))
    return np.concatenate(out)


def true_initial_state(cfg, model, std: float | None = None) -> np.ndarray:
    """The nature run's initial state: the configured initial state plus Gaussian noise (random stream TRUTH, index
    ``TRUTH_INITIAL_STATE``; the observation noise has its own index) of standard deviation ``std``, else
    ``experiments.truth.initial_std`` when the campaign sets it (one truth for every method), else the background
    standard deviation, i.e. a draw from the distribution the prior members are drawn from. Natural order, whole
    state; deterministic on any number of ranks."""
    from twin.campaign.experiments import truth_spec
    from twin.models.contract import initial_state

    x0 = initial_state(model)  # checked: a PETSc vector of the model's state
    try:
        state = model.grid.allgather(x0).ravel()
    finally:
        x0.destroy()
    if std is None:
        spec = truth_spec(cfg)
        std = spec.initial_std if spec is not None and spec.initial_std is not None else None
    gen = rng(cfg, Purpose.TRUTH, TRUTH_INITIAL_STATE)
    return state + background_spread(cfg, model, std) * gen.standard_normal(state.size)


def set_member_parameters(model, params: dict[str, Any]) -> None:
    """Give the model a member's physical parameter values (scalars or whole fields in natural order)."""
    from twin.campaign.state import set_field

    for name, value in params.items():
        p = model.parameters[name]
        if p.is_field:
            set_field(model, name, value)
        else:
            model.set_parameter(name, float(np.asarray(value).reshape(())))


def truth_parameters(model) -> dict[str, Any]:
    """The configured (true) values of the estimable parameters, for the nature run of a twin experiment."""
    from twin.campaign.state import gather_field

    out = {}
    for p in model.estimable():
        out[p.name] = gather_field(model, p.name) if p.is_field else float(p.value)
    return out
