"""Building the analysis method, observation network and schedule from an
:class:`~twin.config.assimilation_ensemble.EnsembleAssimilationConfig` (typed config in, typed objects out).

Every check runs here, before any forecast: the configuration's own validation, then the observation positions and
component against the model grid.
"""

from __future__ import annotations

from twin.assimilation.cycle import ObservationSchedule
from twin.observations.base import LinearObservations
from twin.assimilation.ensemble import ETKF, EnKF
from twin.assimilation.esmda import ESMDA, default_alphas
from twin.assimilation.inflation import Inflation
from twin.assimilation.letkf import LETKF
from twin.config.assimilation_ensemble import EnsembleAssimilationConfig


def method_from_config(cfg: EnsembleAssimilationConfig):
    """The analysis method (ETKF, EnKF, LETKF or ESMDA) with its inflation."""
    infl = Inflation(multiplicative=cfg.inflation.multiplicative, rtps=cfg.inflation.rtps, rtpp=cfg.inflation.rtpp,
                     adaptive=cfg.inflation.adaptive, parameter_rtps=cfg.inflation.parameter_rtps)
    if cfg.method == "etkf":
        return ETKF(cfg.N, infl, rotate=cfg.rotate)
    if cfg.method == "enkf":
        return EnKF(cfg.N, infl)
    if cfg.method == "letkf":
        return LETKF(cfg.N, cfg.localisation.radius, infl, rotate=cfg.rotate)
    return ESMDA(cfg.N, tuple(cfg.esmda_alphas) if cfg.esmda_alphas else tuple(default_alphas(4)),
                 radius=cfg.localisation.radius if cfg.localisation is not None else None,
                 inflation=Inflation(parameter_rtps=cfg.inflation.parameter_rtps))


def observations_from_config(cfg, model) -> LinearObservations:
    """The stacked observation networks of ``cfg.observations`` on ``model``
    (:func:`twin.observations.networks.build`): refuses points outside the domain, components or variables the model
    does not have. Collective."""
    from twin.observations.networks import build

    return build(cfg.observations, model)


def schedule_from_config(cfg: EnsembleAssimilationConfig, dt: float, t0: float = 0.0) -> ObservationSchedule:
    """The cycle schedule for a model step ``dt``."""
    s = cfg.schedule
    return ObservationSchedule(dt, s.every, s.cycles, s.burn_in, t0)
