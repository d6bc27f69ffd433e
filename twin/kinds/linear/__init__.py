"""The linear kind: linear advection-diffusion on a DMDA (:mod:`.model`), the Kalman-limit test model of the assimilation methods."""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import ModelType, TwinKind


class LinearKind(TwinKind):
    name = "linear"
    description = "linear advection-diffusion: the Kalman-limit test model"

    def model_types(self):
        from twin.kinds.linear.config import LinearAdvectionDiffusionConfig

        return (ModelType("linear_advection_diffusion", LinearAdvectionDiffusionConfig, lambda: import_module("twin.kinds.linear.model").LinearAdvectionDiffusion, adjoint=True),)


KIND = LinearKind()
