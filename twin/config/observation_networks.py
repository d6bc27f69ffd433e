"""Observation networks of an assimilation section (``assimilation.observations``).

A campaign observes its model with one or more networks, each a typed mapping; together they form one linear
observation operator (the networks' rows stacked in the order given). Positions are in ``units`` (default: the
model's length units, e.g. ``m`` for the shallow-water and structure models, ``mm`` for the tumour model)::

    observations:
      - {type: stations, variables: [h, u, v], points: [[10, 20], [40, 44]], units: km, error_std: {h: 0.5, u: 0.3}}
      - {type: swath, start: [0, 5], heading: 30, length: 60, spacing: 4, width: 8, n_across: 3, units: km,
         variables: [h], error_std: 0.4, edge_error_factor: 2}
      - {type: imaging, resolution: [2, 2], error_std: 0.05}          # tumour cellularity N / theta per voxel
      - {type: strain_gauges, points: [[0.25, 1.0]], angles: [90], error_std: 2.0e-6}

Types:

* ``points``: state component ``component`` (or ``variable``, a name of the model's ``state_names``) interpolated at
  ``points``;
* ``all_points``: every grid point of ``component`` (or ``variable``);
* ``stations`` / ``swath`` / ``gridded``: the shallow-water operators of :mod:`twin.observations.atmosphere`
  (staggered variables ``h, u, v``);
* ``imaging``: tumour cellularity averaged over imaging voxels (:class:`twin.observations.imaging.CellularityOperator`;
  ``theta`` defaults to the model's carrying capacity);
* ``strain_gauges``: normal strain along ``angles`` (degrees from the x axis) at ``points``
  (:class:`twin.observations.structure.StrainGauges`).

Common keys: ``name``, ``error_std``, ``units``; ``model``: in a coupled campaign, the component observed (its
positions, variables and units; the rows act on that component's block of the coupled state); ``fault``: a sensor
fault injected into the synthetic observations of the twin experiment, e.g. a drifting strain gauge
``fault: {sensor: 3, drift_per_cycle: 2.0e-7}`` (:class:`SensorFault`), to exercise the guardrails.

The legacy single mapping without ``type`` (``{component: 0, points: [...], error_std: 1.0}`` or ``{all_points:
true}``) is read as one ``points``/``all_points`` network.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from twin.config.common import Strict, Units

#: most observation points one network may generate (a swath's track)
MAX_POINTS = 1_000_000
#: error standard deviations: one value, one per observation, or one per variable (``{h: 0.5, u: 0.3}``)
ErrorStd = Union[float, list[float], dict[str, float]]


class SensorFault(Strict):
    """A fault of one sensor of a network in the *synthetic* observations of a twin experiment (never applied to
    real data): ``sensor`` (row of the network) reads ``bias + drift_per_cycle * (k - start + 1)`` too much at the
    observation of cycle ``k >= start`` (observation units)."""

    sensor: int = Field(ge=0)
    drift_per_cycle: float = 0.0
    bias: float = 0.0
    start: int = Field(default=0, ge=0)


class _Network(Strict):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    error_std: ErrorStd = 1.0
    units: Units | None = None
    model: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
                              description="component of a coupled campaign the network observes")
    fault: SensorFault | None = None

    @field_validator("error_std")
    @classmethod
    def _positive(cls, v):
        values = list(v.values()) if isinstance(v, dict) else (v if isinstance(v, list) else [v])
        bad = [e for e in values if not e > 0]
        if bad or not values:
            raise ValueError(f"observation error standard deviations must be positive, got {bad or values}")
        return v

    def scalar_error(self) -> float:
        """A representative error standard deviation (mean over the given values)."""
        v = self.error_std
        values = list(v.values()) if isinstance(v, dict) else (v if isinstance(v, list) else [v])
        return float(sum(values) / len(values))


class _Component(_Network):
    component: int | None = Field(default=None, ge=0)
    variable: str | None = None

    @model_validator(mode="after")
    def _one_component(self):
        if self.component is not None and self.variable is not None:
            raise ValueError("give 'component' or 'variable', not both")
        if isinstance(self.error_std, dict):
            raise ValueError("error_std per variable only applies to stations, swath and gridded networks")
        return self


class PointsNetwork(_Component):
    type: Literal["points"] = "points"
    points: list[list[float]]

    @model_validator(mode="after")
    def _points(self):
        if not self.points:
            raise ValueError("'points' is empty")
        dims = {len(p) for p in self.points}
        if len(dims) != 1:
            raise ValueError(f"all points need the same number of coordinates, got {sorted(dims)}")
        if isinstance(self.error_std, list) and len(self.error_std) != len(self.points):
            raise ValueError(f"{len(self.error_std)} error_std values for {len(self.points)} points")
        return self


class AllPointsNetwork(_Component):
    type: Literal["all_points"] = "all_points"


class StationsNetwork(_Network):
    type: Literal["stations"]
    points: list[list[float]] = Field(min_length=1)
    variables: list[str] = Field(default_factory=lambda: ["h"], min_length=1)


class SwathNetwork(_Network):
    type: Literal["swath"]
    start: list[float] = Field(min_length=2, max_length=2)
    heading: float
    length: float = Field(ge=0)
    spacing: float = Field(gt=0)
    width: float = Field(0.0, ge=0)
    n_across: int = Field(1, ge=1, le=10_000)
    variables: list[str] = Field(default_factory=lambda: ["h"], min_length=1)
    edge_error_factor: float = Field(1.0, ge=1)

    @field_validator("error_std")
    @classmethod
    def _scalar(cls, v):
        if not isinstance(v, (int, float)):
            raise ValueError("a swath takes one error_std (scaled across the track by edge_error_factor)")
        return v

    @model_validator(mode="after")
    def _points(self):
        along = self.length / self.spacing
        if along * self.n_across > MAX_POINTS:
            raise ValueError(f"the swath has {along:.3g} x {self.n_across} points (length / spacing x n_across), "
                             f"more than {MAX_POINTS}: take a larger spacing")
        return self


class GriddedNetwork(_Network):
    type: Literal["gridded"]
    variables: list[str] = Field(default_factory=lambda: ["h"], min_length=1)
    stride: list[int] = Field(default_factory=lambda: [1, 1], min_length=2, max_length=2)
    region: list[list[float]] | None = None


class ImagingNetwork(_Network):
    type: Literal["imaging"]
    theta: float | None = Field(default=None, gt=0)
    resolution: list[float] | None = None
    roi: list[list[float]] | None = None

    @field_validator("error_std")
    @classmethod
    def _scalar(cls, v):
        if not isinstance(v, (int, float)):
            raise ValueError("imaging takes one error_std (cellularity noise, dimensionless)")
        return v


class StrainGaugesNetwork(_Network):
    type: Literal["strain_gauges"]
    points: list[list[float]] = Field(min_length=1)
    angles: list[float] = Field(min_length=1, description="degrees from the x axis")

    @model_validator(mode="after")
    def _angles(self):
        if len(self.angles) not in (1, len(self.points)):
            raise ValueError(f"{len(self.angles)} angles for {len(self.points)} gauges (give one, or one per gauge)")
        return self


Network = Annotated[Union[PointsNetwork, AllPointsNetwork, StationsNetwork, SwathNetwork, GriddedNetwork,
                          ImagingNetwork, StrainGaugesNetwork], Field(discriminator="type")]

NETWORK_TYPES = ("points", "all_points", "stations", "swath", "gridded", "imaging", "strain_gauges")


def legacy_to_networks(value: Any) -> Any:
    """Read the legacy single mapping (no ``type``: ``component``/``points``/``all_points``) as a one-network list."""
    if isinstance(value, dict) and "type" not in value:
        v = dict(value)
        if v.pop("all_points", None) is True and "points" not in v:
            v["type"] = "all_points"
        elif "points" in v:
            v["type"] = "points"
            if "all_points" in value:
                raise ValueError("give either 'points' or 'all_points: true'")
        else:
            raise ValueError("give either 'points' or 'all_points: true' (or a list of typed networks: "
                             f"type one of {', '.join(NETWORK_TYPES)})")
        return [v]
    if isinstance(value, dict):
        return [value]
    return value


def representative_error(networks) -> float:
    """Mean error standard deviation over the networks (the legacy default background spread)."""
    return float(sum(n.scalar_error() for n in networks) / len(networks))


def _networks_type():
    from pydantic import BeforeValidator

    return Annotated[list[Network], BeforeValidator(legacy_to_networks), Field(min_length=1)]


#: the type of ``assimilation.observations``: a list of networks (or the legacy single mapping)
Networks = _networks_type()
