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
* ``stations`` / ``swath`` / ``gridded``: the shallow-water operators of :mod:`twin.kinds.shallow_water.observations`
  (staggered variables ``h, u, v``);
* ``imaging``: tumour cellularity averaged over imaging voxels (:class:`twin.kinds.tumour.imaging.CellularityOperator`;
  ``theta`` defaults to the model's carrying capacity);
* ``strain_gauges``: normal strain along ``angles`` (degrees from the x axis) at ``points``
  (:class:`twin.kinds.structure.gauges.StrainGauges`); ``strain_gauge_readings``: measured ones from files
  (:mod:`twin.kinds.structure.readings`);
* ``file``: measured observations from a file (:class:`FileNetwork`); a campaign observed through files has no
  nature run and no truth.

Common keys: ``name``, ``error_std``, ``units``; ``model``: in a coupled campaign, the component observed (its
positions, variables and units; the rows act on that component's block of the coupled state); ``fault``: a sensor
fault injected into the synthetic observations of the twin experiment, e.g. a drifting strain gauge
``fault: {sensor: 3, drift_per_cycle: 2.0e-7}`` (:class:`SensorFault`), to exercise the guardrails.

A single network may be given as a mapping instead of a list of one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from twin.config.common import FilePath, Strict, Units

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


class NetworkBase(Strict):
    """Keys every network has (a kind's network section derives from it)."""

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


class _Component(NetworkBase):
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


#: the network types every model has; the kinds add theirs (:meth:`twin.core.kinds.TwinKind.network_types`)
class FileVariable(Strict):
    """Which values of an observation file observe a state variable: the file's variable ``name`` (NetCDF variable
    or the CSV ``variable`` column) or its CF ``standard_name``, and the ``units`` the model wants (the file's own
    units are converted with pint); ``error``: the NetCDF variable holding its errors, when they carry no CF
    ``standard_error`` standard name; ``error_std`` (in the model's units) when the file has no errors.

    ``range: [low, high]``: the physical range check, in ``units`` (after conversion): a value below ``low`` or above
    ``high`` is flagged ``range`` and not used (``null`` for an open end, ``[0, null]``); the file's own
    ``valid_min``/``valid_max``/``valid_range`` attributes still make values missing before this check."""

    name: str | None = None
    standard_name: str | None = None
    units: Units
    error_std: float | None = Field(default=None, gt=0)
    error: str | None = Field(default=None, min_length=1, max_length=256)
    range: list[float | None] | None = None

    @field_validator("range")
    @classmethod
    def _range(cls, v):
        if v is None:
            return v
        if len(v) != 2 or all(b is None for b in v):
            raise ValueError(f"range is [low, high] in the variable's units (null for an open end, e.g. [0, null]), "
                             f"got {v}")
        low, high = v
        if low is not None and high is not None and not low < high:
            raise ValueError(f"range [{low:g}, {high:g}]: low must be below high")
        return v

    def bounds(self) -> tuple[float | None, float | None] | None:
        """``(low, high)`` of the range check (``None``: no check; either end ``None``: open)."""
        return None if self.range is None else (self.range[0], self.range[1])


class BoxSpacing(Strict):
    """Boxes of side ``spacing`` (in ``units``, a length; default the model's length units) that tile the domain
    from its lower corner: the thinning and super-observation boxes of a file network."""

    spacing: float = Field(gt=0)
    units: Units | None = None

    @field_validator("units")
    @classmethod
    def _length(cls, v):
        from twin.core.units import compatible

        if v is not None and not compatible(v, "m"):
            raise ValueError(f"units '{v}' are not a length (the box side is a distance, e.g. m or km)")
        return v


class FileNetwork(NetworkBase):
    """Measured observations from a file (:mod:`twin.observations.file_network`): a CF discrete-sampling-geometry
    NetCDF file (featureType point, timeSeries or trajectory) or a CSV (``time,x[,y],variable,value[,error]``,
    :mod:`twin.observations.csvfile`). ``file`` is relative to the campaign file; ``variables`` maps the model's state
    variables to the file's. Positions are in the file's units (NetCDF) or ``units`` (CSV); CSV times are ISO 8601
    instants or numbers in ``time_units`` after the campaign start. ``error_std`` is the error of observations the
    file and the variable give none for.

    When each observation is used: the filters (etkf, enkf, letkf) put it in the cycle whose analysis time is the
    first at or after it and assimilate it at that analysis time (the report nearest it when a site reports twice in
    a cycle); ES-MDA and 4D-Var use it at its own time, at the model step nearest to it, ``t_0 + n dt`` (``dt`` the
    model's step, half-way to the later step, clamped to the campaign's span; a step on 4D-Var's grid
    ``t_0 + j obs_interval`` takes that time exactly), 4D-Var in the window whose new span holds that step
    (:mod:`twin.observations.file_network`). Missing values, times outside the campaign, positions outside the
    domain and duplicates are counted, not used. In a coupled campaign ``model:`` names the component observed (its
    state variables, units and domain; the rows act on its block of the coupled state). ``deliveries``: files of the
    same layout and variables that arrived later, read after ``file`` as one network; ``twin assimilate`` appends
    them (copies inside the run directory, absolute paths) to an experiment's ``experiment.yaml``
    (:mod:`twin.campaign.live`).

    Quality control beyond those checks, each decision a flag of the observation and counted per file in the
    experiment's ``observations.h5`` and by ``twin status``:

    * ``variables.<v>.range: [low, high]`` (:class:`FileVariable`): values outside are flagged ``range``;
    * ``thinning: {spacing: 10, units: km}``: the domain is tiled by boxes of side ``spacing`` from its lower
      corner; per variable, box and cycle (ES-MDA and 4D-Var: per model step) only the observation nearest the box
      centre is used, the others are flagged ``thinned``;
    * ``superobs: {spacing: 10, units: km}`` (filters only; not with ``thinning``): per variable, box and cycle the
      observations (two or more) are replaced by one super-observation at their mean position with their mean
      value and the error ``sqrt(sum e_i^2) / n`` (the standard deviation of the mean of ``n`` independent errors);
      they are flagged ``superobs`` and the number of super-observations is counted too. A box with one observation
      keeps it as it is.

    Both work on what the other checks left, after a site's superseded reports in a cycle are set aside."""

    type: Literal["file"]
    file: FilePath
    variables: dict[str, FileVariable] = Field(min_length=1)
    time_units: Units | None = None
    deliveries: list[FilePath] = Field(default_factory=list, max_length=100_000)
    thinning: BoxSpacing | None = None
    superobs: BoxSpacing | None = None

    @field_validator("superobs")
    @classmethod
    def _one_reduction(cls, v, info):
        if v is not None and info.data.get("thinning") is not None:
            raise ValueError("give 'thinning' or 'superobs', not both (thinning keeps one observation per box, "
                             "superobs averages them)")
        return v

    def files(self) -> list[str]:
        """Every file of the network, in the order read: ``file``, then the ``deliveries``."""
        return [self.file, *self.deliveries]

    def default_error(self) -> float | None:
        """The network's ``error_std`` when the campaign gave one (the key's default does not count)."""
        return float(self.scalar_error()) if "error_std" in self.model_fields_set else None


GENERAL_NETWORKS = (PointsNetwork, AllPointsNetwork, FileNetwork)


def network_classes() -> list[type]:
    """The configuration class of every network type: the general ones and those of the installed kinds."""
    from twin.core.kinds import network_types

    return [*GENERAL_NETWORKS, *(n.config for n in network_types().values())]


def network_type_names() -> list[str]:
    return [cls.model_fields["type"].annotation.__args__[0] for cls in network_classes()]


def as_list(value: Any) -> Any:
    """One typed network may be given as a mapping instead of a one-element list; an untyped mapping (the form of
    files older than typed networks) is refused with the form to write instead."""
    if isinstance(value, dict):
        if "type" not in value:
            raise ValueError("observation networks are typed: write a list such as [{type: all_points, component: 0, "
                             "error_std: 1.0}] or [{type: points, points: [[2.5]], error_std: 1.0}] (network types: "
                             f"{', '.join(network_type_names())})")
        return [value]
    return value


def representative_error(networks) -> float:
    """Mean error standard deviation over the networks (the default background spread)."""
    return float(sum(n.scalar_error() for n in networks) / len(networks))


def networks_type():
    """The type of ``assimilation.observations``: a list of networks of the general and the kinds' types."""
    from pydantic import BeforeValidator

    network = Annotated[Union[tuple(network_classes())], Field(discriminator="type")]
    return Annotated[list[network], BeforeValidator(as_list), Field(min_length=1)]
