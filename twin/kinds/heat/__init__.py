"""The heat kind: the heat equation on a DMDA with implicit time steps (:mod:`.model`), the face it couples through (:mod:`.face`); the verification problems of coupling (:mod:`.examples`)."""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import ModelType, TwinKind


class HeatKind(TwinKind):
    name = "heat"
    description = "the heat equation: verification problems for coupling and assimilation"

    def model_types(self):
        from twin.kinds.heat.config import HeatConfig

        return (ModelType("heat", HeatConfig, lambda: import_module("twin.kinds.heat.model").HeatModel, adjoint=True),)


KIND = HeatKind()
