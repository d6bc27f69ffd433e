"""Lorenz-63 as a twin kind: what this package contributes to twin (one model type, ``lorenz63``).

twin finds this module through the entry point ``lorenz63 = "twin_lorenz63:KIND"`` of group ``twin.kinds`` in this
package's ``pyproject.toml``. The methods import the configuration and the model lazily, so that loading the registry
(``twin validate``) never imports PETSc.
"""

from __future__ import annotations

from importlib import import_module

from twin.core.kinds import ModelType, TwinKind

__version__ = "0.1.0"


class Lorenz63Kind(TwinKind):
    name = "lorenz63"
    description = "Lorenz-63: the three-variable convection model (example plugin package)"

    def model_types(self):
        from twin_lorenz63.config import Lorenz63Config

        return (ModelType("lorenz63", Lorenz63Config, lambda: import_module("twin_lorenz63.model").Lorenz63,
                          adjoint=True),)


KIND = Lorenz63Kind()
