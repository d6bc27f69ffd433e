"""YAML section of the Lorenz-96 model (``type: lorenz96``).

Example::

    models:
      l96:
        type: lorenz96
        n: 40
        dt: 0.05
        forcing: {value: 8.0, prior: {dist: normal, mean: 8.0, std: 1.0}, estimable: true}
        initial_condition: perturbed_rest
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from twin.config.common import GridSize, ModelConfigBase, ParameterSpec


class Lorenz96Config(ModelConfigBase):
    """Lorenz-96: ``n`` variables on a periodic ring, forcing ``F``, classical RK4 with step ``dt``.

    Attributes
    ----------
    n : int
        Number of variables (at least 4, the stencil reaches ``i-2 .. i+1``).
    dt : float
        RK4 time step, in model time units (0.05 is "6 hours" in Lorenz's scaling).
    forcing : ParameterSpec
        The forcing ``F`` (dimensionless); may be estimable with a prior.
    initial_condition : {"perturbed_rest", "random"}
        ``perturbed_rest``: ``x = F`` with ``x_0 += perturbation`` (Lorenz & Emanuel 1998);
        ``random``: ``x = F + perturbation * N(0, 1)`` drawn from ``seed``.
    initial_state : list of float, optional
        The initial state itself, ``n`` values (e.g. a point on the attractor from another code); replaces
        ``initial_condition``.
    """

    #: Lorenz-96 time is dimensionless: the timeline's numbers are model time
    time_units: ClassVar[str] = "1"
    step_key: ClassVar[tuple] = ("dt",)

    type: Literal["lorenz96"]
    n: int = Field(40, ge=4, le=10_000_000)
    dt: float = Field(0.05, gt=0, le=1.0)
    forcing: ParameterSpec = Field(default_factory=lambda: ParameterSpec(value=8.0))
    initial_condition: Literal["perturbed_rest", "random"] = "perturbed_rest"
    perturbation: float = 0.01
    seed: int = Field(0, ge=0)
    initial_state: list[float] | None = Field(None, max_length=10_000_000)

    @field_validator("initial_state")
    @classmethod
    def _state(cls, v: list[float] | None, info) -> list[float] | None:
        n = info.data.get("n")
        if v is not None and n is not None and len(v) != n:
            raise ValueError(f"initial_state has {len(v)} values; the ring has n = {n} variables")
        return v

    @field_validator("forcing")
    @classmethod
    def _dimensionless(cls, v: ParameterSpec) -> ParameterSpec:
        if v.units != "1":
            raise ValueError(f"the Lorenz-96 forcing is dimensionless (units: '1'), got units {v.units!r}")
        return v

    def metadata(self):
        from twin.config.metadata import ModelMetadata

        return ModelMetadata("lorenz96", ("x",), ((0.0, float(self.n)),), "m", ("F",), ("energy", "mean"))

    def grid_size(self) -> GridSize:
        """``n`` variables on the ring."""
        return GridSize(self.n, self.n, ("n",))

    def fixed_step(self) -> float:
        return self.dt
