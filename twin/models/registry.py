"""Registry of model types: the YAML ``type:`` of a model names a class registered here."""

from __future__ import annotations

from typing import Callable

from twin.core.errors import ConfigError

_MODELS: dict[str, type] = {}


def register_model(type_name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`~twin.models.base.Model` subclass available as ``type: <type_name>``."""

    def deco(cls: type) -> type:
        if type_name in _MODELS and _MODELS[type_name] is not cls:
            raise ValueError(f"model type {type_name!r} registered twice")
        cls.type_name = type_name
        _MODELS[type_name] = cls
        return cls

    return deco


def model_types() -> dict[str, type]:
    """All registered model types (importing :mod:`twin.models` registers the built-in ones)."""
    import twin.models  # noqa: F401  (registers built-in models)

    return dict(_MODELS)


def create_model(name: str, config, comm):
    """Build the model named ``name`` from its typed configuration section on ``comm``.

    The model's ``from_config`` puts the section's ``solver:`` options into the PETSc options database under the
    prefix ``<name>_`` before it builds its solvers; its own defaults then fill only what neither the user nor the
    command line set (:func:`twin.core.petsc.set_default_options`), so the order never matters.
    """
    types = model_types()
    cls = types.get(config.type)
    if cls is None:
        raise ConfigError(f"models.{name}.type: unknown model type {config.type!r}; known: {sorted(types)}")
    return cls.from_config(name, config, comm)
