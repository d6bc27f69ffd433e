"""YAML section of a Basic Model Interface model (``type: bmi``).

Example (a landlab component through landlab's own BMI wrapper)::

    models:
      hill:
        type: bmi
        bmi_class: landlab.bmi.components:LinearDiffuserBMI   # a class implementing bmipy.Bmi, by import path
        config_file: hillslope.yaml                           # what its initialize() reads
        state: [topographic__elevation]                       # the BMI variables that are the twin's state
        time_step: {value: 100, units: s}                     # the cycle clock's step: a multiple of the BMI step
        shape: [8, 10]                                        # optional: the BMI grid's shape, for twin validate

Optional keys name other BMI input variables of the model (LinearDiffuserBMI has no floating-point one besides
the state; here a model with inputs ``target`` and ``rate``, as tests/bmi_relax.py)::

        imports: [target]                                     # BMI inputs a coupler sets (coupling routes)
        parameters:                                           # scalar BMI inputs as twin parameters
          rate: {value: 0.5, units: 1/s, prior: {dist: lognormal, median: 0.3, sigma: 0.5}, estimable: true}

What runs is bounded by what the campaign's author wrote: ``bmi_class`` names a class of a package installed in the
environment (a dotted module path and a name, never a file path or code), imported when the model is built, not
when the file is validated; nothing is ever imported because of a data file's content.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from twin.config.common import GridSize, ModelConfigBase, ParameterSpec, Quantity, Units, at
from twin.core.units import compatible, parse_units

#: ``package.module:Class`` (a class attribute path after the colon)
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class BmiConfig(ModelConfigBase):
    """A BMI model: its class, its configuration file, which of its variables are the twin's state.

    Attributes
    ----------
    bmi_class : str
        ``package.module:Class``, a class implementing the Basic Model Interface (``bmipy.Bmi`` or the same
        methods), importable in the environment twin runs in (workflow workers included).
    config_file : str
        The file the model's ``initialize`` reads. A relative path is relative to the working directory twin is
        started in; it is made absolute when the campaign is read (experiments and workflow tasks use that).
    state : list of str
        BMI variables that make up the state: each an input and an output variable of the model, floating point,
        all on one grid (``uniform_rectilinear`` or ``scalar``). Everything else the model holds must be constant or
        a function of time only: the adapter may copy or re-run the model to bring its clock to a member's start.
    time_step : Quantity
        Step of twin's cycle clock (``assimilation.schedule.every`` counts these); a whole multiple of the model's
        own time step.
    bmi_time_units : str, optional
        The model's time units when its ``get_time_units()`` gives none that twin understands.
    length_units : str
        Units of the BMI grid's spacing and origin (BMI does not say).
    shape : list of int, optional
        The BMI grid's shape as the model reports it (rows first); checked when the model is built, and used by
        ``twin validate`` to bound the state's size (without it, the size is known only once the model runs).
    max_instances : int
        Most instances of the BMI model held at once: an ensemble forecast keeps one per member, each with its own
        clock (:mod:`twin.kinds.bmi.adapter`); lower it for a model too large to hold that many times.
    imports : list of str
        BMI input variables a coupler sets (the ``to`` of a ``coupling.routes`` entry, ``<component>.<variable>``):
        each is passed to the model with ``set_value`` before every ``update_until`` and held constant over the
        coupling window (or sub-step). The state variables are the model's exports, under their BMI names.
    parameters : dict of str to ParameterSpec
        Scalar BMI input variables as twin parameters (``value``, ``prior``, ``estimable``; values in the variable's
        own units, which ``units``, when given, must equal): each is set with ``set_value`` before every update,
        broadcast to the variable's size, so that ensemble methods can estimate it with the state.
    """

    time_units: ClassVar[str] = "s"
    step_key: ClassVar[tuple] = ("time_step",)

    type: Literal["bmi"]
    bmi_class: str = Field(pattern=IMPORT_PATH, max_length=300)
    config_file: str = Field(min_length=1, max_length=4096)
    state: list[str] = Field(min_length=1, max_length=64)
    time_step: Quantity
    bmi_time_units: str | None = Field(default=None, max_length=100)
    length_units: Units = "m"
    shape: list[int] | None = Field(default=None, min_length=1, max_length=3)
    max_instances: int = Field(128, ge=1, le=1000)
    imports: list[str] = Field(default_factory=list, max_length=64)
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict, max_length=64)

    @field_validator("config_file")
    @classmethod
    def _existing_file(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("config_file must be a path")
        path = Path(v).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise ValueError(f"no such file: {str(path)!r} (a relative config_file is relative to the working "
                             "directory twin is started in)")
        return str(path.resolve())

    @field_validator("state")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"state lists a variable twice: {v}")
        return v

    @field_validator("imports")
    @classmethod
    def _distinct_imports(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"imports lists a variable twice: {v}")
        return v

    @model_validator(mode="after")
    def _roles(self):
        """A BMI variable has one role: state (set from the state vector), import (set by the coupler) or
        parameter (set from the parameter's value)."""
        state = set(self.state)
        for i, name in enumerate(self.imports):
            if name in state:
                raise ValueError(at("imports", i) + f"{name!r} is a state variable: the state sets it; import "
                                                    "another variable or take it out of state")
        for name in self.parameters:
            if name in state or name in self.imports:
                role = "a state variable" if name in state else "an import"
                raise ValueError(at("parameters", name) + f"{name!r} is {role}; a BMI variable is the state, an "
                                                          "import or a parameter, not two of them")
        return self

    @field_validator("time_step")
    @classmethod
    def _time(cls, v: Quantity) -> Quantity:
        if not compatible(v.units, "s") or not v.value > 0:
            raise ValueError(f"time_step must be a positive time (e.g. {{value: 1, units: day}}), got {v.value} "
                             f"{v.units}")
        return v

    @field_validator("bmi_time_units")
    @classmethod
    def _time_units(cls, v: str | None) -> str | None:
        if v is not None:
            parse_units(v)
            if not compatible(v, "s"):
                raise ValueError(f"bmi_time_units {v!r} is not a unit of time")
        return v

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(n < 1 for n in v):
            raise ValueError(f"shape has a non-positive size: {v}")
        return v

    def grid_size(self) -> GridSize:
        """From ``shape`` when given; otherwise one point (the model's grid is known only once it is built)."""
        cells = math.prod(self.shape) if self.shape else 1
        return GridSize(cells, cells * len(self.state), ("shape",) if self.shape else ("state",))

    def fixed_step(self) -> float:
        return self.time_step.to(self.time_units)
