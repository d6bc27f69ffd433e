"""YAML schema of the structure model (``type: structure``): 2-D linear elasticity with a damage field.

Example::

    models:
      bridge:
        type: structure
        mode: static                      # or dynamic
        plane: stress                     # or strain
        grid: {shape: [160, 8], extent: [[0, 10], [0, 0.5]], units: m}   # shape = ELEMENTS per axis
        thickness: {value: 0.1, units: m}
        E0: {value: 210, units: GPa}
        nu: 0.3
        rho: {value: 7850, units: kg/m^3}
        damping: {alpha: {value: 0.1, units: 1/s}, beta: {value: 1.0e-4, units: s}}
        damage:
          value: 0.0
          regions: [{shape: circle, centre: [5.0, 0.25], radius: 0.3, value: 0.4}]
          prior: {dist: gaussian_field, mean: 0.0, std: 0.1, length_scale: 1.0, log: false}
          estimable: true
        boundary: {left: clamped}
        loads:
          - {name: tip, kind: traction, boundary: right, value: [0, -1.0e5], units: Pa}
          - {name: gravity, kind: body_force, value: [0, -77000], units: N/m^3}
          - {name: wind, kind: traction, boundary: top, value: [0, -2000], units: Pa,
             history: {kind: harmonic, frequency: {value: 1.5, units: Hz}}}
        eigenstrain: 0.0
        wind: {boundary: left, air_density: {value: 1.225, units: kg/m^3}, drag_coefficient: 1.2}  # coupled wind
        time: {dt: {value: 1.0e-3, units: s}, initial: rest}
        solver: {ksp_rtol: 1.0e-10}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union, get_args

from pydantic import Field, model_validator

from twin.config.common import (
    FilePath,
    GaussianFieldPrior,
    GridSize,
    GridSpec,
    ModelConfigBase,
    ParameterSpec,
    Quantity,
    Strict,
    Units,
    at,
)
from twin.config.observation_networks import NetworkBase
from twin.core.units import compatible

Edge = Literal["left", "right", "bottom", "top"]

#: the fields a structure offers to a coupler and those it receives (:class:`~twin.kinds.structure.model.StructureModel`
#: .exports, .set_import; tractions on the edges of the 2-D mesh)
COUPLING_EXPORTS = ("displacement", "von_mises", "mean_stress")
COUPLING_IMPORTS = ("body_force", "eigenstrain", "wind") + tuple(f"traction_{e}" for e in get_args(Edge))
BoundaryKind = Literal["clamped", "pinned", "roller", "free"]


class CircleRegion(Strict):
    """Damage ``value`` inside a disc (grid length units)."""

    shape: Literal["circle"]
    centre: list[float] = Field(min_length=2, max_length=2)
    radius: float = Field(gt=0)
    value: float = Field(ge=0, lt=1)


class RectangleRegion(Strict):
    """Damage ``value`` inside ``[x0, x1] x [y0, y1]`` (grid length units)."""

    shape: Literal["rectangle"]
    lower: list[float] = Field(min_length=2, max_length=2)
    upper: list[float] = Field(min_length=2, max_length=2)
    value: float = Field(ge=0, lt=1)


Region = Annotated[Union[CircleRegion, RectangleRegion], Field(discriminator="shape")]


class DamageSpec(Strict):
    """The damage field ``d(x)`` in [0, 1): a background ``value`` with ``regions`` overriding it (last wins)."""

    value: float = Field(default=0.0, ge=0, lt=1)
    regions: list[Region] = Field(default_factory=list)
    prior: GaussianFieldPrior | None = None
    estimable: bool = False

    @model_validator(mode="after")
    def _prior_if_estimable(self):
        if self.estimable and self.prior is None:
            raise ValueError("an estimable damage field needs a 'prior'")
        return self


class HistorySpec(Strict):
    """Time function of a load: constant, harmonic ``sin(2 pi f t + phase)`` or a piecewise-linear table."""

    kind: Literal["constant", "harmonic", "table"] = "constant"
    frequency: Quantity | None = None
    phase: float = 0.0
    times: list[float] = Field(default_factory=list)
    factors: list[float] = Field(default_factory=list)
    time_units: Units = "s"

    @model_validator(mode="after")
    def _complete(self):
        if self.kind == "harmonic" and self.frequency is None:
            raise ValueError("a harmonic history needs a 'frequency' (e.g. {value: 2, units: Hz})")
        if self.kind == "table":
            if len(self.times) < 1 or len(self.times) != len(self.factors):
                raise ValueError("a table history needs 'times' and as many 'factors'")
            if any(b <= a for a, b in zip(self.times, self.times[1:])):
                raise ValueError("table 'times' must be strictly increasing")
        return self


class LoadSpec(Strict):
    """One named load: a uniform body force [force/volume] or a uniform traction [pressure] on a named edge."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    kind: Literal["body_force", "traction"]
    value: list[float] = Field(min_length=2, max_length=2)
    units: Units = "Pa"
    boundary: Edge | None = None
    history: HistorySpec = Field(default_factory=HistorySpec)
    scale: ParameterSpec | None = None

    @model_validator(mode="after")
    def _boundary(self):
        if self.kind == "traction" and self.boundary is None:
            raise ValueError(f"traction '{self.name}' needs a 'boundary' (left, right, bottom or top)")
        if self.kind == "body_force" and self.boundary is not None:
            raise ValueError(f"body force '{self.name}' acts on the whole body: remove 'boundary'")
        return self


class DampingSpec(Strict):
    """Rayleigh damping ``C = alpha M + beta K``."""

    alpha: Quantity = Field(default_factory=lambda: Quantity(value=0.0, units="1/s"))
    beta: Quantity = Field(default_factory=lambda: Quantity(value=0.0, units="s"))


class TimeSpec(Strict):
    """Dynamic mode: fixed time step, and the initial state (at rest, or static equilibrium under the loads)."""

    dt: Quantity
    initial: Literal["rest", "static"] = "rest"

    @model_validator(mode="after")
    def _step(self):
        if not compatible(self.dt.units, "s"):
            raise ValueError(at("dt", "units") + f"the time step's units {self.dt.units!r} are not a time (e.g. s, ms)")
        if not self.dt.value > 0:
            raise ValueError(at("dt", "value") + f"the time step must be positive, got {self.dt.value}")
        return self


class WindSpec(Strict):
    """Drag of an imported wind (coupling field ``wind``, m/s) on the windward ``boundary``:
    ``tau = 1/2 air_density drag_coefficient |U| (u, 0)``."""

    boundary: Edge = "left"
    air_density: Quantity = Field(default_factory=lambda: Quantity(value=1.225, units="kg/m^3"))
    drag_coefficient: float = Field(default=1.2, ge=0)

    @model_validator(mode="after")
    def _units(self):
        if not compatible(self.air_density.units, "kg/m^3"):
            raise ValueError(f"air_density has units {self.air_density.units!r}, which are not a density")
        if not self.air_density.value > 0:
            raise ValueError(f"air_density must be positive, got {self.air_density.value}")
        return self


class StructureConfig(ModelConfigBase):
    """The ``structure`` model section. ``grid.shape`` counts elements (nodes are one more per axis)."""

    step_key: ClassVar[tuple] = ("time", "dt")

    type: Literal["structure"]
    mode: Literal["static", "dynamic"] = "static"
    plane: Literal["stress", "strain"] = "stress"
    grid: GridSpec
    thickness: Quantity = Field(default_factory=lambda: Quantity(value=1.0, units="m"))
    E0: ParameterSpec
    nu: float = Field(ge=0.0, lt=0.5)
    rho: Quantity = Field(default_factory=lambda: Quantity(value=1000.0, units="kg/m^3"))
    damping: DampingSpec = Field(default_factory=DampingSpec)
    damage: DamageSpec = Field(default_factory=DamageSpec)
    boundary: dict[Edge, BoundaryKind] = Field(default_factory=dict)
    loads: list[LoadSpec] = Field(default_factory=list)
    eigenstrain: float = 0.0
    wind: WindSpec | None = None
    time: TimeSpec | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if len(self.grid.shape) != 2:
            raise ValueError(f"the structure model is 2-D: grid.shape needs 2 entries, got {self.grid.shape}")
        if self.grid.periodic not in (False, [False, False]):
            raise ValueError("the structure model has no periodic axes")
        if not any(kind != "free" for kind in self.boundary.values()):
            raise ValueError("no boundary is constrained: the body is free to move and the problem is singular; "
                             "clamp, pin or put a roller on at least one boundary, e.g. boundary: {left: clamped}")
        if self.mode == "dynamic" and self.time is None:
            raise ValueError("mode: dynamic needs 'time: {dt: {value: ..., units: s}}'")
        names = [ld.name for ld in self.loads]
        if len(set(names)) != len(names):
            raise ValueError(f"load names must be unique, got {names}")
        return self

    def metadata(self):
        from twin.config.metadata import ModelMetadata

        names = ("u_x", "u_y", "v_x", "v_y") if self.mode == "dynamic" else ("u_x", "u_y")
        return ModelMetadata("structure", names, tuple(self.grid.extent_in("m")), "m", ("E0", "damage"),
                             ("first_natural_frequency", "max_displacement", "max_von_mises", "strain_energy"),
                             COUPLING_EXPORTS, COUPLING_IMPORTS)

    def grid_size(self) -> GridSize:
        """Displacements (and, dynamic, velocities) at the nodes: one more node than elements per axis."""
        nodes = 1
        for n in self.grid.shape:
            nodes *= n + 1
        return GridSize(self.grid.cells, nodes * (4 if self.mode == "dynamic" else 2), ("grid", "shape"))

    def fixed_step(self) -> float | None:
        """The dynamic mode's step; a static model has none."""
        return self.time.dt.to(self.time_units) if self.mode == "dynamic" and self.time is not None else None


# -- observation networks and decision sections of the kind ----------------------------------------

class StrainGaugesNetwork(NetworkBase):
    type: Literal["strain_gauges"]
    points: list[list[float]] = Field(min_length=1)
    angles: list[float] = Field(min_length=1, description="degrees from the x axis")

    @model_validator(mode="after")
    def _angles(self):
        if len(self.angles) not in (1, len(self.points)):
            raise ValueError(f"{len(self.angles)} angles for {len(self.points)} gauges (give one, or one per gauge)")
        return self


class StrainGaugeReadingsNetwork(NetworkBase):
    """Measured strain-gauge readings from CF-DSG NetCDF files (:mod:`twin.kinds.structure.readings`)::

        observations:
          - {type: strain_gauge_readings, model: mast, file: gauges.nc, strain: obs_mast_strain,
             error: obs_mast_strain_error, angle: obs_mast_strain_angle}

    ``file``: relative to the campaign file; ``strain``: the file's variable of the strains (any dimensionless units:
    ``1``, ``microstrain``, ``1e-6``); ``error``: the file's variable of their error standard deviations (else an
    ancillary variable with a ``standard_error`` standard name, else ``error_std``); ``angle``: the file's
    per-gauge variable of the gauge directions (counter-clockwise from the x axis, in angle units). Positions and
    their units are the file's (``x``, ``y``). The campaign has no truth."""

    type: Literal["strain_gauge_readings"]
    file: FilePath
    strain: str = Field(min_length=1, max_length=256)
    angle: str = Field(min_length=1, max_length=256)
    error: str | None = Field(default=None, min_length=1, max_length=256)
    #: files of the same gauges that arrived later (``twin assimilate`` lists them here)
    deliveries: list[FilePath] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _measured(self):
        if isinstance(self.error_std, (list, dict)):
            raise ValueError("error_std: one value (the strain error, dimensionless) for readings the file gives no "
                             "error for")
        if self.fault is not None:
            raise ValueError("fault: sensor faults are injected into a twin experiment's synthetic strain_gauges; "
                             "measured readings carry their own (the guardrails find them)")
        if self.units is not None:
            raise ValueError("units: the file states the units of its gauge positions; remove 'units'")
        return self

    def files(self) -> list[str]:
        """The files of the network, in the order read: ``file``, then the ``deliveries``."""
        return [self.file, *self.deliveries]

    def default_error(self) -> float | None:
        """The network's ``error_std`` when the campaign gave one (the key's default does not count)."""
        return float(self.scalar_error()) if "error_std" in self.model_fields_set else None


class StructureDecisionSpec(Strict):
    """Stress ``limit`` (a pressure), the exceedance probability ``threshold`` above which inspection is
    recommended, the load ``scenario`` (scale factor per load case), the structure ``component`` of a coupled
    campaign and the number of ``random_placements`` the sensor-placement study compares the greedy choice with."""

    limit: Quantity
    threshold: float = Field(default=0.05, gt=0, le=1)
    scenario: dict[str, float] = Field(default_factory=dict)
    #: the structure component of a coupled campaign (``None``: the campaign's single model)
    component: str | None = None
    #: random gauge layouts per sensor count in the placement study (``decision.sensors``), the greedy baseline
    random_placements: int = Field(default=200, ge=1, le=100_000)

    @model_validator(mode="after")
    def _units(self):
        if not compatible(self.limit.units, "Pa"):
            raise ValueError(at("limit", "units") + f"stress limit units {self.limit.units!r} are not a pressure")
        if not self.limit.value > 0:
            raise ValueError(at("limit", "value") + "the stress limit must be positive")
        return self


class SensorDesignSpec(Strict):
    """Sensor placement: ``count`` sensors from the candidates, each with error ``error_std`` (observation units)."""

    count: int = Field(ge=1, le=10_000)
    error_std: float = Field(gt=0)
    candidates: list[list[float]] | None = None
