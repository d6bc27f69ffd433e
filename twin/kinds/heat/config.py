"""YAML section of the heat-equation model (``type: heat``).

Example (a 2-D quickstart)::

    models:
      heat:
        type: heat
        grid: {shape: [32, 32], extent: [[0, 1], [0, 1]], units: m}
        parameters:
          kappa:
            value: 1.0e-2
            units: m^2/s
            estimable: true
            prior: {dist: lognormal, median: 1.0e-2, sigma: 0.5}
        initial_condition: {kind: gaussian, amplitude: 1.0, center: [0.5, 0.5], width: 0.1}
        time: {start: 0, end: 10, dt: 0.1, units: s}
        solver: {ts_type: beuler, ksp_type: cg, pc_type: jacobi}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from twin.config.common import (
    GridSize,
    GridSpec,
    ModelConfigBase,
    ParameterSpec,
    Strict,
    Units,
    _check_units,
    at,
)
from twin.core.units import compatible, convert

SIDES = ("x_lo", "x_hi", "y_lo", "y_hi", "z_lo", "z_hi")


class GaussianIC(Strict):
    """``T0 = background + amplitude * exp(-|x - center|^2 / (2 width^2))`` (center, width in the grid's units)."""

    kind: Literal["gaussian"]
    amplitude: float = 1.0
    center: list[float] = Field(min_length=1, max_length=3)
    width: float = Field(gt=0)
    background: float = 0.0


class ConstantIC(Strict):
    """``T0 = value`` everywhere."""

    kind: Literal["constant"]
    value: float = 0.0


class ManufacturedIC(Strict):
    """The exact solution ``T = amplitude * exp(-kappa |k|^2 t) * prod_a sin(k_a x_a + phase_a)`` of the source-free
    equation, sampled at ``t = time.start``; ``wavenumber`` in rad per grid length unit, ``phase`` in rad.
    """

    kind: Literal["manufactured"]
    amplitude: float = 1.0
    wavenumber: list[float] = Field(min_length=1, max_length=3)
    phase: list[float] | None = None


InitialCondition = Annotated[Union[GaussianIC, ConstantIC, ManufacturedIC], Field(discriminator="kind")]


class BoundarySpec(Strict):
    """Condition on one side of the box.

    ``type: dirichlet`` prescribes the temperature ``value`` (K) on the face; ``type: neumann`` prescribes the inward
    heat flux ``value = kappa dT/dn`` (K m/s, ``n`` the outward normal). With ``import: NAME`` the data come from the
    coupler as a field on the face (overriding ``value``); the model then also accepts that field by ``NAME``.
    """

    type: Literal["dirichlet", "neumann"] = "dirichlet"
    value: float = 0.0
    import_: str | None = Field(default=None, alias="import")

    model_config = {"populate_by_name": True}


class TimeSpec(Strict):
    """Time span and step: ``start``, ``end`` (optional: the campaign may give the span) and ``dt`` in ``units``."""

    start: float = 0.0
    end: float | None = None
    dt: float = Field(gt=0)
    units: Units = "s"

    _check = field_validator("units")(classmethod(lambda cls, v: _check_units(v)))

    @model_validator(mode="after")
    def _order(self):
        if self.end is not None and not self.end > self.start:
            raise ValueError(f"time.end ({self.end}) must be after time.start ({self.start})")
        if not compatible(self.units, "s"):
            raise ValueError(at("units") + f"time units {self.units!r} are not a unit of time (e.g. s, h, day)")
        return self


class HeatConfig(ModelConfigBase):
    """Heat equation ``dT/dt = div(kappa grad T) + f`` on a box (1-, 2- or 3-D).

    Keys
    ----
    type : "heat"
    grid : GridSpec
        Cell-centred finite-volume grid; lengths in ``grid.units`` (converted to metres).
    parameters : dict
        ``kappa`` (diffusivity, required, units convertible to m^2/s) and optionally ``source`` (uniform heat source
        ``f``, units convertible to K/s). Either may carry a prior and ``estimable: true``.
    initial_condition : {gaussian, constant, manufactured}
        See :class:`GaussianIC`, :class:`ConstantIC`, :class:`ManufacturedIC`.
    boundary : dict side -> BoundarySpec
        Sides ``x_lo, x_hi, y_lo, ...``; a side not listed is Dirichlet with ``T = 0``.
    time : TimeSpec
        ``dt`` is the model's own step; windows that are not multiples of it are split into equal smaller steps.
    solver : dict
        PETSc options without prefix (``ts_type``, ``ksp_type``, ``pc_type``, ...), put under ``-<name>_``.
    """

    parameter_units = {"kappa": "m^2/s", "source": "K/s"}

    parameter_units: ClassVar[dict[str, str]] = {"kappa": "m^2/s", "source": "K/s"}

    step_key: ClassVar[tuple] = ("time", "dt")

    type: Literal["heat"]
    grid: GridSpec
    parameters: dict[str, ParameterSpec]
    initial_condition: InitialCondition = Field(default_factory=lambda: ConstantIC(kind="constant"))
    boundary: dict[str, BoundarySpec] = Field(default_factory=dict)
    time: TimeSpec

    @model_validator(mode="after")
    def _consistent(self):
        dim = len(self.grid.shape)
        if "kappa" not in self.parameters:
            raise ValueError("parameters need 'kappa' (diffusivity, e.g. {value: 1.0e-2, units: m^2/s})")
        unknown = sorted(set(self.parameters) - {"kappa", "source"})
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; the heat model knows 'kappa' and 'source'")
        kappa = self.parameters["kappa"]
        if kappa.value is not None and not kappa.value > 0:
            raise ValueError(at("parameters", "kappa", "value") + f"diffusivity kappa must be positive, got "
                             f"{kappa.value:g} {kappa.units}")
        allowed = SIDES[: 2 * dim]
        bad = sorted(set(self.boundary) - set(allowed))
        if bad:
            raise ValueError(f"unknown boundary sides {bad} for a {dim}-D grid; use {list(allowed)}")
        ic = self.initial_condition
        if isinstance(ic, GaussianIC) and len(ic.center) != dim:
            raise ValueError(f"initial_condition.center has {len(ic.center)} coordinates, grid is {dim}-D")
        if isinstance(ic, ManufacturedIC):
            if len(ic.wavenumber) != dim or (ic.phase is not None and len(ic.phase) != dim):
                raise ValueError(f"initial_condition.wavenumber/phase need {dim} entries for a {dim}-D grid")
        return self

    def metadata(self):
        from twin.config.metadata import ModelMetadata

        coupled = [(side, bc.import_) for side, bc in self.boundary.items() if bc.import_ is not None]
        return ModelMetadata("heat", ("T",), tuple(self.grid.extent_in("m")), "m", ("kappa", "source"),
                             ("heat_content", "max_temperature", "mean_temperature"),
                             ("temperature",) + tuple(f"{k}_{side}" for side, _ in coupled
                                                      for k in ("temperature", "heat_flux")),
                             tuple(name for _, name in coupled))

    def grid_size(self) -> GridSize:
        """One temperature per cell."""
        return GridSize(self.grid.cells, self.grid.cells, ("grid", "shape"))

    def fixed_step(self) -> float:
        return float(convert(self.time.dt, self.time.units, self.time_units))
