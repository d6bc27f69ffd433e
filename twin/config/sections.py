"""Observation, coupling and assimilation sections of the campaign schema.

The sections of the methods themselves live next to them (``twin/config/coupling.py``,
``twin/config/assimilation_*.py``); this module joins them into the types the campaign schema uses.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, SerializeAsAny, WrapValidator, model_validator

from twin.config.common import FilePath, Strict, at

OBSERVATION_TYPES = ("points", "gridded", "file")


class ObservationSet(Strict):
    """One observation set.

    ``type: points``: values of state component ``variable`` of ``model`` interpolated at ``locations`` (a list of
    coordinates in the model's length units); ``type: gridded``: every ``stride``-th grid point; ``type: file``: read
    from a NetCDF observation file (``file``, relative to the campaign file). Observed every ``every`` time units (or
    at ``times``), with Gaussian errors of standard deviation ``error_std``.
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    type: Literal["points", "gridded", "file"]
    model: str
    variable: str | None = None
    locations: list[list[float]] | None = None
    stride: int | None = Field(default=None, ge=1)
    every: float | None = Field(default=None, gt=0)
    times: list[float] | None = None
    error_std: float | None = Field(default=None, gt=0)
    file: FilePath | None = None

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "points" and not self.locations:
            raise ValueError("type 'points' needs 'locations'")
        if self.type == "file" and not self.file:
            raise ValueError("type 'file' needs 'file'")
        if self.type != "file":
            if self.error_std is None:
                raise ValueError(f"type {self.type!r} needs 'error_std' (> 0)")
            if (self.every is None) == (self.times is None):
                raise ValueError("give exactly one of 'every' and 'times'")
        if self.locations:
            dims = {len(p) for p in self.locations}
            if len(dims) != 1 or dims.pop() not in (1, 2, 3):
                raise ValueError("every location needs the same number (1, 2 or 3) of coordinates")
        return self


def observation_section_type():
    return ObservationSet


def coupling_section_type():
    from twin.config.coupling import CouplingConfig

    return CouplingConfig


def assimilation_section_type():
    """The union (on ``method``) of the assimilation sections: ensemble methods and 4D-Var."""
    from twin.config.assimilation_ensemble import EnsembleAssimilationConfig
    from twin.config.assimilation_var import VarAssimilationConfig

    classes = [EnsembleAssimilationConfig, VarAssimilationConfig]
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="method")]


def model_configs() -> list[type]:
    """The configuration section of every model type of the installed kinds (:mod:`twin.core.kinds`)."""
    from twin.core.kinds import model_types

    return [mt.config for mt in model_types().values()]


def model_section_type():
    """The discriminated union (on ``type``) of the model sections of every installed kind; a ``type`` that names a
    class by import path (``"mypkg.models:Lorenz63"``) is validated by that class's ``config_class``
    (:func:`twin.core.kinds.model_type_by_path`)."""
    classes = model_configs()
    union = classes[0] if len(classes) == 1 else Annotated[Union[tuple(classes)], Field(discriminator="type")]
    # serialised as what it is: a section of a class named by import path is no member of the union
    return SerializeAsAny[Annotated[union, WrapValidator(_by_import_path)]]


def _by_import_path(value, handler, info):
    """A section whose ``type`` has a colon names its model class by import path: the class is imported now (only
    what the campaign's author wrote reaches here) and its section class validates the rest, strictly as the loader
    does; every other section goes to the union."""
    from twin.core.errors import ConfigError
    from twin.core.kinds import is_import_path, model_type_by_path

    kind = value.get("type") if isinstance(value, dict) else None
    if not is_import_path(kind):
        return handler(value)
    try:
        mt = model_type_by_path(kind)
    except ConfigError as exc:
        raise ValueError(at("type") + str(exc)) from None
    return mt.config.model_validate(value, strict=True)
