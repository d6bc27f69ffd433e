"""Configuration sections of the model types. Each module defines one ``<Name>Config(ModelConfigBase)`` with
``type: Literal["<name>"]``; :data:`MODEL_CONFIGS` lists them and a test checks it matches the model registry."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

MODEL_CONFIGS: list[type] = []


def _register_builtin() -> None:
    from twin.config.models.heat import HeatConfig
    from twin.config.models.linear import LinearAdvectionDiffusionConfig
    from twin.config.models.lorenz96 import Lorenz96Config
    from twin.config.models.shallow_water import ShallowWaterConfig
    from twin.config.models.structure import StructureConfig
    from twin.config.models.tumour import TumourConfig

    for cls in (HeatConfig, LinearAdvectionDiffusionConfig, Lorenz96Config, ShallowWaterConfig, StructureConfig,
                TumourConfig):
        if cls not in MODEL_CONFIGS:
            MODEL_CONFIGS.append(cls)


def model_section_type():
    """The discriminated union (on ``type``) of every model configuration class."""
    _register_builtin()
    if not MODEL_CONFIGS:
        raise RuntimeError("no model configuration classes are registered")
    if len(MODEL_CONFIGS) == 1:
        return MODEL_CONFIGS[0]
    return Annotated[Union[tuple(MODEL_CONFIGS)], Field(discriminator="type")]


def config_for(type_name: str) -> type:
    for cls in MODEL_CONFIGS:
        if cls.model_fields["type"].annotation.__args__[0] == type_name:
            return cls
    raise KeyError(type_name)
