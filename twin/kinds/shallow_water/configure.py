"""Turn a validated ``ShallowWaterConfig`` into the keyword arguments of :class:`ShallowWater` (SI units)."""

from __future__ import annotations

from typing import Any

from twin.core.errors import ModelError
from twin.core.units import convert
from twin.kinds.shallow_water.model import PARAMETER_TRANSFORMS, PARAMETER_UNITS, Bump
from twin.models.base import Parameter


def _ic_options(ic) -> dict[str, Any]:
    """The options of an initial-condition section, quantities converted to m and m/s."""
    out: dict[str, Any] = {}
    for key, value in ic.model_dump(exclude={"name"}).items():
        if value is None:
            continue
        if isinstance(value, dict) and "units" in value:
            target = "m/s" if key == "speed" else "m"
            value = float(convert(value["value"], value["units"], target))
        out[key] = value
    return out


def model_arguments(name: str, cfg) -> dict[str, Any]:
    """Keyword arguments for ``ShallowWater(name, comm, **kwargs)`` from the typed section ``cfg``."""
    try:
        length = float(convert(1.0, cfg.grid.units, "m"))
        params = {}
        for key, units in PARAMETER_UNITS.items():
            spec = getattr(cfg.parameters, key)
            params[key] = Parameter(key, spec.to(units), units, estimable=spec.estimable,
                                    transform=PARAMETER_TRANSFORMS[key], prior=spec.prior)
        topography = None
        if cfg.topography is not None:
            t = cfg.topography
            topography = Bump((t.center[0] * length, t.center[1] * length), t.radius * length, t.height.to("m"))
        tracer = None
        if cfg.tracer is not None:
            t = cfg.tracer
            tracer = Bump((t.center[0] * length, t.center[1] * length), t.radius * length, t.amplitude, t.background)
        return dict(
            shape=cfg.grid.shape,
            extent=cfg.grid.extent_in("m"),
            dt=cfg.time_step.to("s"),
            mean_depth=cfg.mean_depth.to("m"),
            parameters=params,
            initial=(cfg.initial.name, _ic_options(cfg.initial)),
            tracer=tracer,
            topography=topography,
            forcing_wavenumber=cfg.forcing_wavenumber,
            sites={k: (v[0] * length, v[1] * length) for k, v in cfg.sites.items()},
            threshold=None if cfg.threshold is None else cfg.threshold.to("m"),
            check_cfl=cfg.check_cfl,
        )
    except ValueError as exc:
        raise ModelError(name, str(exc)) from None
