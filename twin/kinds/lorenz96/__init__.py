"""The Lorenz-96 kind: the classic chaotic test model of data assimilation (:mod:`.model`), distributed over ranks, with its tangent and adjoint."""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import ModelType, TwinKind


class Lorenz96Kind(TwinKind):
    name = "lorenz96"
    description = "Lorenz-96: the data-assimilation literature's test model"

    def model_types(self):
        from twin.kinds.lorenz96.config import Lorenz96Config

        return (ModelType("lorenz96", Lorenz96Config, lambda: import_module("twin.kinds.lorenz96.model").Lorenz96, adjoint=True),)


KIND = Lorenz96Kind()
