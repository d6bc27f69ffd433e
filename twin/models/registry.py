"""Model types: the YAML ``type:`` of a model names a model class declared by an installed twin kind
(:mod:`twin.core.kinds`)."""

from __future__ import annotations

from typing import Callable

from twin.core import kinds
from twin.core.errors import ConfigError


def register_model(type_name: str) -> Callable[[type], type]:
    """Class decorator: the model class answers to ``type: <type_name>`` (its kind's :class:`~twin.core.kinds
    .ModelType` declares it to the registry)."""

    def deco(cls: type) -> type:
        cls.type_name = type_name
        return cls

    return deco


def model_types() -> dict[str, type]:
    """Every model class of the installed kinds by type name (imports the kinds' model modules)."""
    return {name: mt.model() for name, mt in kinds.model_types().items()}


def create_model(name: str, config, comm):
    """Build the model named ``name`` from its typed configuration section on ``comm``.

    The model's ``from_config`` puts the section's ``solver:`` options into the PETSc options database under the
    prefix ``<name>_`` before it builds its solvers; its own defaults then fill only what neither the user nor the
    command line set (:func:`twin.core.petsc.set_default_options`), so the order never matters.
    """
    types = kinds.model_types()
    mt = types.get(config.type)
    if mt is None:
        raise ConfigError(f"models.{name}.type: unknown model type {config.type!r}; known: {sorted(types)}")
    cls = mt.model()
    if getattr(cls, "type_name", None) != config.type:
        raise ConfigError(f"model type {config.type!r}: its class {cls.__qualname__} answers to "
                          f"{getattr(cls, 'type_name', None)!r}; decorate it with register_model({config.type!r})")
    return cls.from_config(name, config, comm)
