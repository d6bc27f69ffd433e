"""YAML section of the Lorenz-63 model (``type: lorenz63``).

Example::

    models:
      l63:
        type: lorenz63
        dt: 0.01
        sigma: {value: 10.0}
        rho: {value: 28.0, prior: {dist: lognormal, median: 25.0, sigma: 0.2}, estimable: true}
        beta: {value: 2.6666666666666665}
        initial_state: [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from twin.config.common import GridSize, ModelConfigBase, ParameterSpec

#: Lorenz's (1963) values
SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


class Lorenz63Config(ModelConfigBase):
    """Lorenz-63: three variables, parameters ``sigma``, ``rho``, ``beta``, classical RK4 with step ``dt``.

    Attributes
    ----------
    dt : float
        RK4 time step, in (dimensionless) model time; 0.01 resolves the attractor's fastest oscillations.
    sigma, rho, beta : ParameterSpec
        The Prandtl number, the reduced Rayleigh number and the aspect factor (dimensionless); each may be
        estimable with a prior (a log-normal prior makes assimilation update its logarithm).
    initial_state : list of 3 floats
        ``(x, y, z)`` at the start of the timeline.
    """

    #: Lorenz-63 time is dimensionless: the timeline's numbers are model time
    time_units: ClassVar[str] = "1"
    step_key: ClassVar[tuple] = ("dt",)

    type: Literal["lorenz63"]
    dt: float = Field(0.01, gt=0, le=0.1)
    sigma: ParameterSpec = Field(default_factory=lambda: ParameterSpec(value=SIGMA))
    rho: ParameterSpec = Field(default_factory=lambda: ParameterSpec(value=RHO))
    beta: ParameterSpec = Field(default_factory=lambda: ParameterSpec(value=BETA))
    initial_state: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)

    @field_validator("sigma", "rho", "beta")
    @classmethod
    def _dimensionless(cls, v: ParameterSpec, info) -> ParameterSpec:
        if v.units != "1":
            raise ValueError(f"the Lorenz-63 parameter {info.field_name} is dimensionless (units: '1'), got units "
                             f"{v.units!r}")
        return v

    def grid_size(self) -> GridSize:
        """Three variables."""
        return GridSize(3, 3, ("initial_state",))

    def fixed_step(self) -> float:
        return self.dt

    def metadata(self):
        """What the model reports, without building it (used by ``twin validate`` where twin checks it)."""
        from twin.config.metadata import ModelMetadata

        return ModelMetadata("lorenz63", ("x",), ((0.0, 3.0),), "m", ("beta", "rho", "sigma"),
                             ("energy", "x", "y", "z"))
