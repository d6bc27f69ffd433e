"""The BMI kind: any model with a CSDMS Basic Model Interface (PyPI ``bmipy``) as a twin model (:mod:`.adapter`),
named by import path and run from its own configuration file; its uniform rectilinear grid becomes a twin grid.

Such a model serves the ensemble methods (ETKF, EnKF, LETKF, ES-MDA) and forecasts; it has no adjoint, so 4D-Var
refuses it.
"""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import ModelType, TwinKind


class BmiKind(TwinKind):
    name = "bmi"
    description = "any Basic Model Interface (bmipy) model, by import path and configuration file"

    def model_types(self):
        from twin.kinds.bmi.config import BmiConfig

        return (ModelType("bmi", BmiConfig, lambda: import_module("twin.kinds.bmi.adapter").BmiModel, adjoint=False),)


KIND = BmiKind()
