"""The shallow-water kind: a rotating shallow-water atmosphere on a C grid with an exact discrete adjoint
(:mod:`.model`), station, swath and gridded observations (:mod:`.observations`) and the report's network, free-run
and site-forecast panels (:mod:`.report`)."""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import ModelType, NetworkType, TwinKind

_EXPORTS = {"Bump": "model", "ShallowWater": "model"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _builder(name: str):
    return lambda *a: getattr(import_module("twin.kinds.shallow_water.observations"), name)(*a)


class ShallowWaterKind(TwinKind):
    name = "shallow_water"
    description = "a regional atmosphere: rotating shallow water, stations, swaths and gridded fields"

    def model_types(self):
        from twin.kinds.shallow_water.config import ShallowWaterConfig

        return (ModelType("shallow_water", ShallowWaterConfig,
                          lambda: import_module("twin.kinds.shallow_water.model").ShallowWater, adjoint=True),)

    def network_types(self):
        from twin.kinds.shallow_water.config import (
            GriddedNetwork,
            StationsNetwork,
            SwathNetwork,
        )

        return (NetworkType("stations", StationsNetwork, _builder("build_stations")),
                NetworkType("swath", SwathNetwork, _builder("build_swath")),
                NetworkType("gridded", GriddedNetwork, _builder("build_gridded")))

    def report_panels(self):
        from twin.kinds.shallow_water.report import PANELS

        return PANELS


KIND = ShallowWaterKind()
