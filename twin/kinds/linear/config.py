"""YAML section of the linear advection-diffusion model (``type: linear_advection_diffusion``).

Example::

    models:
      tracer:
        type: linear_advection_diffusion
        n: 64
        length: {value: 1.0, units: m}
        dt: {value: 0.01, units: s}
        velocity: {value: 0.5, units: m/s}
        diffusivity: {value: 0.01, units: m^2/s,
                      prior: {dist: lognormal, median: 0.01, sigma: 0.5}, estimable: true}
        initial_condition: {shape: gaussian, amplitude: 1.0, width: {value: 0.1, units: m}}
        solver: {ts_type: cn}
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from twin.config.common import (
    GridSize,
    ModelConfigBase,
    ParameterSpec,
    Quantity,
    Strict,
)
from twin.core.units import compatible


def _needs_units(q: Quantity | ParameterSpec, expected: str, what: str) -> None:
    if not compatible(q.units, expected):
        raise ValueError(f"{what} needs units of {expected!r}, got {q.units!r}")


class InitialConditionSpec(Strict):
    """``u(x, 0)``: a Gaussian bump ``A exp(-(x - L/2)^2 / (2 w^2))`` or one sine wave ``A sin(2 pi x / L)``."""

    shape: Literal["gaussian", "sine"] = "gaussian"
    amplitude: float = 1.0
    width: Quantity = Field(default_factory=lambda: Quantity(value=0.1, units="m"))


class LinearAdvectionDiffusionConfig(ModelConfigBase):
    """1-D periodic advection-diffusion ``u_t + c u_x = nu u_xx`` on ``n`` cells of ``[0, length)``.

    Attributes
    ----------
    n : int
        Number of cells (at least 3 for the three-point stencil).
    length : Quantity
        Domain length (units of length).
    dt : Quantity
        Fixed time step (units of time).
    velocity : ParameterSpec
        Advection velocity ``c`` (units of velocity); may be estimable (transform ``none``).
    diffusivity : ParameterSpec
        Diffusivity ``nu`` (units of length^2/time, positive); may be estimable (transform ``log``).
    initial_condition : InitialConditionSpec
    """

    step_key: ClassVar[tuple] = ("dt",)

    type: Literal["linear_advection_diffusion"]
    n: int = Field(64, ge=3, le=10_000_000)
    length: Quantity = Field(default_factory=lambda: Quantity(value=1.0, units="m"))
    dt: Quantity = Field(default_factory=lambda: Quantity(value=0.01, units="s"))
    velocity: ParameterSpec = Field(default_factory=lambda: ParameterSpec(value=0.5, units="m/s"))
    diffusivity: ParameterSpec = Field(default_factory=lambda: ParameterSpec(value=0.01, units="m^2/s"))
    initial_condition: InitialConditionSpec = Field(default_factory=InitialConditionSpec)

    @model_validator(mode="after")
    def _check(self):
        _needs_units(self.length, "m", "length")
        _needs_units(self.dt, "s", "dt")
        _needs_units(self.velocity, "m/s", "velocity")
        _needs_units(self.diffusivity, "m^2/s", "diffusivity")
        _needs_units(self.initial_condition.width, "m", "initial_condition.width")
        if self.length.value <= 0 or self.dt.value <= 0:
            raise ValueError("length and dt must be positive")
        if self.diffusivity.value is not None and self.diffusivity.value <= 0:
            raise ValueError(f"diffusivity must be positive, got {self.diffusivity.value}")
        if self.initial_condition.width.value <= 0:
            raise ValueError("initial_condition.width must be positive")
        return self

    def metadata(self):
        from twin.config.metadata import ModelMetadata

        return ModelMetadata("linear_advection_diffusion", ("u",), ((0.0, float(self.length.to("m"))),), "m",
                             ("velocity", "diffusivity"), ("mass", "max"))

    def grid_size(self) -> GridSize:
        """One value per cell."""
        return GridSize(self.n, self.n, ("n",))

    def fixed_step(self) -> float:
        return self.dt.to(self.time_units)
