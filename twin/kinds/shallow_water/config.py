"""YAML section of the rotating shallow-water model (``type: shallow_water``).

Example (an unstable double jet on a 4000 km doubly periodic f-plane, with a passive tracer)::

    models:
      atmosphere:
        type: shallow_water
        grid: {shape: [128, 128], extent: [[0, 4000], [0, 4000]], units: km, periodic: true}
        mean_depth: {value: 1000, units: m}
        time_step: {value: 120, units: s}
        parameters:
          gravity: {value: 9.81, units: m/s^2}
          f0: {value: 1.0e-4, units: 1/s}
          drag: {value: 1.0e-6, units: 1/s, estimable: true, prior: {dist: lognormal, median: 1.0e-6, sigma: 0.5}}
        initial: {name: unstable_jet, speed: {value: 20, units: m/s}}
        tracer: {center: [1000, 1000], radius: 300, amplitude: 1.0}     # grid units
        sites: {station_a: [500, 2500], station_b: [3000, 1200]}       # grid units
        threshold: {value: 1010, units: m}
        solver: {ts_type: rk, ts_rk_type: "4"}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from twin.config.common import (
    GridSize,
    GridSpec,
    ModelConfigBase,
    ParameterSpec,
    Quantity,
    Strict,
)
from twin.config.observation_networks import MAX_POINTS, NetworkBase
from twin.core.units import compatible


def _units(q: Quantity | None, want: str, what: str) -> Quantity | None:
    if q is not None and not compatible(q.units, want):
        raise ValueError(f"{what} has units {q.units!r}, which do not convert to {want!r}")
    return q


class GeostrophicBalanceIC(Strict):
    """A zonal jet in geostrophic balance: height wave of ``amplitude`` with ``wavenumber`` waves across y."""

    name: Literal["geostrophic_balance"]
    amplitude: Quantity = Field(default_factory=lambda: Quantity(value=10.0, units="m"))
    wavenumber: int = Field(1, ge=1, le=10_000)

    _u = field_validator("amplitude")(classmethod(lambda cls, v: _units(v, "m", "amplitude")))


class UnstableJetIC(Strict):
    """Two opposite balanced jets of peak ``speed`` and half-width ``width`` (default Ly/24) with a height bump of
    ``perturbation`` and ``perturbation_wavenumber`` waves along x that seeds the barotropic instability."""

    name: Literal["unstable_jet"]
    speed: Quantity = Field(default_factory=lambda: Quantity(value=20.0, units="m/s"))
    width: Quantity | None = None
    perturbation: Quantity = Field(default_factory=lambda: Quantity(value=1.0, units="m"))
    perturbation_wavenumber: int = Field(4, ge=0, le=10_000)

    _s = field_validator("speed")(classmethod(lambda cls, v: _units(v, "m/s", "speed")))
    _w = field_validator("width")(classmethod(lambda cls, v: _units(v, "m", "width")))
    _p = field_validator("perturbation")(classmethod(lambda cls, v: _units(v, "m", "perturbation")))


class BalancedTurbulenceIC(Strict):
    """Random geostrophic turbulence, ``max |u| = speed``, energy peaked at ``wavenumber``, phases from ``seed``."""

    name: Literal["balanced_turbulence"]
    speed: Quantity = Field(default_factory=lambda: Quantity(value=10.0, units="m/s"))
    wavenumber: int = Field(6, ge=1, le=10_000)
    seed: int = Field(0, ge=0)

    _s = field_validator("speed")(classmethod(lambda cls, v: _units(v, "m/s", "speed")))


#: the ``name`` values below must match twin.kinds.shallow_water.initial.INITIAL_CONDITIONS (a test checks)
InitialConditionSpec = Annotated[Union[GeostrophicBalanceIC, UnstableJetIC, BalancedTurbulenceIC],
                                 Field(discriminator="name")]


class BumpSpec(Strict):
    """A Gaussian bump ``background + amplitude exp(-d^2 / radius^2)``; ``center`` and ``radius`` in grid units."""

    center: list[float] = Field(min_length=2, max_length=2)
    radius: float = Field(gt=0)
    amplitude: float = 1.0
    background: float = 0.0


class TopographySpec(Strict):
    """A Gaussian mountain of ``height`` (a length); ``center`` and ``radius`` in grid units."""

    center: list[float] = Field(min_length=2, max_length=2)
    radius: float = Field(gt=0)
    height: Quantity

    _h = field_validator("height")(classmethod(lambda cls, v: _units(v, "m", "topography height")))


def _default(value: float, units: str):
    return Field(default_factory=lambda: ParameterSpec(value=value, units=units))


class ShallowWaterParameters(Strict):
    """The scalar parameters (each may be estimable with a prior)."""

    gravity: ParameterSpec = _default(9.81, "m/s^2")
    f0: ParameterSpec = _default(1.0e-4, "1/s")
    beta: ParameterSpec = _default(0.0, "1/(m*s)")
    drag: ParameterSpec = _default(0.0, "1/s")
    forcing_amplitude: ParameterSpec = _default(0.0, "m/s^2")

    @model_validator(mode="after")
    def _units(self):
        want = {"gravity": "m/s^2", "f0": "1/s", "beta": "1/(m*s)", "drag": "1/s", "forcing_amplitude": "m/s^2"}
        for key, units in want.items():
            spec = getattr(self, key)
            if not compatible(spec.units, units):
                raise ValueError(f"parameter '{key}' has units {spec.units!r}, which do not convert to {units!r}")
        return self


class ShallowWaterConfig(ModelConfigBase):
    """Rotating shallow water on a doubly periodic plane (see :mod:`twin.kinds.shallow_water`).

    Attributes
    ----------
    grid : GridSpec
        2-D, ``periodic: true`` (both axes), at least 3 cells per axis.
    mean_depth : Quantity
        Mean free-surface height ``H`` (a length).
    time_step : Quantity
        Fixed step of the explicit scheme (a time); refused if above the stable limit.
    parameters : ShallowWaterParameters
        ``gravity, f0, beta, drag, forcing_amplitude``.
    initial : one of the initial-condition sections, chosen by ``name``.
    forcing_wavenumber : int
        Shape ``cos(2 pi k y / Ly)`` of the zonal momentum forcing.
    topography, tracer : optional Gaussian bumps (a mountain in length units; an initial concentration).
    sites : mapping of name to ``[x, y]`` in grid units.
    threshold : Quantity, optional
        Free-surface height above which the area is reported.
    check_cfl : bool
        Refuse unstable time steps (default true).
    """

    step_key: ClassVar[tuple] = ("time_step",)

    type: Literal["shallow_water"]
    grid: GridSpec
    mean_depth: Quantity
    time_step: Quantity
    parameters: ShallowWaterParameters = Field(default_factory=ShallowWaterParameters)
    initial: InitialConditionSpec
    forcing_wavenumber: int = Field(1, ge=0, le=10_000)
    topography: TopographySpec | None = None
    tracer: BumpSpec | None = None
    sites: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(default_factory=dict)
    threshold: Quantity | None = None
    check_cfl: bool = True

    _d = field_validator("mean_depth")(classmethod(lambda cls, v: _units(v, "m", "mean_depth")))
    _t = field_validator("time_step")(classmethod(lambda cls, v: _units(v, "s", "time_step")))
    _h = field_validator("threshold")(classmethod(lambda cls, v: _units(v, "m", "threshold")))

    @field_validator("grid")
    @classmethod
    def _length_units(cls, g):
        if not compatible(g.units, "m"):
            raise ValueError(f"grid units {g.units!r} are not a length: the shallow-water equations need distances "
                             "(units: m or km)")
        return g

    @model_validator(mode="after")
    def _domain(self):
        g = self.grid
        if len(g.shape) != 2:
            raise ValueError(f"grid must be 2-D (shape [nx, ny]), got shape {g.shape}")
        if min(g.shape) < 3:
            raise ValueError(f"grid needs at least 3 cells per axis, got shape {g.shape}")
        periodic = g.periodic if isinstance(g.periodic, list) else [g.periodic] * 2
        if not all(periodic):
            raise ValueError("the shallow-water domain must be doubly periodic: set grid.periodic: true")
        if self.mean_depth.value <= 0 or self.time_step.value <= 0:
            raise ValueError("mean_depth and time_step must be positive")
        return self

    def metadata(self):
        from twin.config.metadata import ModelMetadata

        tracer = self.tracer is not None
        qois = ["mass", "energy", "enstrophy"] + (["tracer_mass"] if tracer else []) + \
            (["area_above_threshold"] if self.threshold is not None else [])
        for site in self.sites:
            qois += [f"eta_at_{site}", f"u_at_{site}", f"v_at_{site}"] + ([f"tracer_at_{site}"] if tracer else [])
        return ModelMetadata("shallow_water", ("h", "u", "v", "tracer")[:4 if tracer else 3],
                             tuple(self.grid.extent_in("m")), "m",
                             ("beta", "drag", "f0", "forcing_amplitude", "gravity"), tuple(qois), ("velocity",), ())

    def grid_size(self) -> GridSize:
        """``h, u, v`` per cell, and the tracer when there is one."""
        return GridSize(self.grid.cells, self.grid.cells * (4 if self.tracer is not None else 3), ("grid", "shape"))

    def fixed_step(self) -> float:
        return self.time_step.to(self.time_units)


# -- observation networks of the kind ----------------------------------------

class StationsNetwork(NetworkBase):
    type: Literal["stations"]
    points: list[list[float]] = Field(min_length=1)
    variables: list[str] = Field(default_factory=lambda: ["h"], min_length=1)


class SwathNetwork(NetworkBase):
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


class GriddedNetwork(NetworkBase):
    type: Literal["gridded"]
    variables: list[str] = Field(default_factory=lambda: ["h"], min_length=1)
    stride: list[int] = Field(default_factory=lambda: [1, 1], min_length=2, max_length=2)
    region: list[list[float]] | None = None
