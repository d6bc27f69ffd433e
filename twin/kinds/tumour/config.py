"""YAML schema of the tumour model (``type: tumour``).

Internal units of the model: lengths in mm, time in days, density in cells/mm^3 (``1/mm^3``), dose in Gy. Every
parameter is written with its own units in YAML and converted; the schema refuses units that cannot be converted.

Example::

    tumour:
      type: tumour
      grid: {shape: [128, 128], extent: [[0, 200], [0, 200]], units: mm}
      dt: 0.5                          # days
      parameters:
        D_white: {value: 0.25, units: mm^2/day}
        D_grey: {value: 0.05, units: mm^2/day}
        k: {prior: {dist: gaussian_field, mean: -3.0, std: 0.3, length_scale: 20}, units: 1/day, estimable: true}
        theta: {value: 1.0e5, units: 1/mm^3}
        alpha: {value: 0.03, units: 1/Gy, prior: {dist: lognormal, median: 0.03, sigma: 0.3}, estimable: true}
        alpha_beta: {value: 10, units: Gy}
        kappa: {value: 0.1, units: 1/day}
        half_life: {value: 1.0, units: day}
        gamma: {value: 0.0, units: 1/kPa}     # mechanical coupling: D = D0 exp(-gamma sigma_vm), sigma_vm imported
      seed: {center: [80, 110], radius: 5, amplitude: 0.5}
      phantom: {kind: brain}
      treatment:
        radiotherapy: {times: [20, 21, 22, 23, 24], doses: [2.0]}
        chemotherapy: {times: [20, 27], doses: [1.0]}
      imaging: {resolution: [2, 2], noise_std: 0.05, threshold: 0.2}
      run: {start: 0, end: 120}
      solver: {ts_type: cn}
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from twin.config.common import (
    FilePath,
    GridSize,
    GridSpec,
    ModelConfigBase,
    ParameterSpec,
    Strict,
    at,
)
from twin.config.observation_networks import NetworkBase
from twin.core.units import compatible

#: internal units of every tumour parameter
PARAMETER_UNITS = {
    "D_white": "mm^2/day",
    "D_grey": "mm^2/day",
    "k": "1/day",
    "theta": "1/mm^3",
    "alpha": "1/Gy",
    "alpha_beta": "Gy",
    "kappa": "1/day",
    "half_life": "day",
    "gamma": "1/Pa",
}
#: parameters that must be strictly positive (the others may be zero)
STRICTLY_POSITIVE = {"theta", "alpha_beta", "half_life"}


def _spec(value: float, units: str) -> ParameterSpec:
    return ParameterSpec(value=value, units=units)


class TumourParameters(Strict):
    """The parameters of the tumour PDE (see :mod:`twin.kinds.tumour.model`)."""

    D_white: ParameterSpec = Field(default_factory=lambda: _spec(0.25, "mm^2/day"))
    D_grey: ParameterSpec = Field(default_factory=lambda: _spec(0.05, "mm^2/day"))
    k: ParameterSpec = Field(default_factory=lambda: _spec(0.05, "1/day"))
    theta: ParameterSpec = Field(default_factory=lambda: _spec(1.0e5, "1/mm^3"))
    alpha: ParameterSpec = Field(default_factory=lambda: _spec(0.03, "1/Gy"))
    alpha_beta: ParameterSpec = Field(default_factory=lambda: _spec(10.0, "Gy"))
    kappa: ParameterSpec = Field(default_factory=lambda: _spec(0.0, "1/day"))
    half_life: ParameterSpec = Field(default_factory=lambda: _spec(1.0, "day"))
    gamma: ParameterSpec = Field(default_factory=lambda: _spec(0.0, "1/kPa"),
                                 description="stress sensitivity of the diffusivity, D = D0 exp(-gamma sigma_vm)")

    @model_validator(mode="after")
    def _physical(self):
        for name, units in PARAMETER_UNITS.items():
            spec: ParameterSpec = getattr(self, name)
            if not compatible(spec.units, units):
                raise ValueError(f"{name}: units {spec.units!r} cannot be converted to {units!r}")
            prior = spec.prior
            if prior is not None and prior.dist == "gaussian_field" and name != "k":
                raise ValueError(f"{name}: only k may have a gaussian_field prior (it is the only field parameter)")
            if spec.value is None and prior is not None and prior.dist == "normal":
                raise ValueError(f"{name}: a normal prior allows negative values; use lognormal or give 'value'")
            if spec.value is not None:
                v = spec.value
                if not math.isfinite(v):
                    raise ValueError(f"{name}: value must be finite, got {v}")
                if v < 0 or (name in STRICTLY_POSITIVE and v == 0):
                    rel = "> 0" if name in STRICTLY_POSITIVE else ">= 0"
                    raise ValueError(f"{name}: value must be {rel}, got {v}")
            if prior is not None and prior.dist == "uniform" and prior.low < 0:
                raise ValueError(f"{name}: uniform prior must have low >= 0 (the parameter is non-negative)")
        return self

    def field_prior(self) -> bool:
        """Whether k is a field (its prior is a Gaussian random field)."""
        return self.k.prior is not None and self.k.prior.dist == "gaussian_field"


class SeedSpec(Strict):
    """Initial lesion: ``N0 = amplitude * theta * exp(-|x - center|^2 / (2 radius^2))`` (mm)."""

    center: list[float] = Field(min_length=1, max_length=3)
    radius: float = Field(gt=0)
    amplitude: float = Field(default=0.5, gt=0, le=1)


class PhantomSpec(Strict):
    """Tissue: ``brain`` (synthetic brain-like phantom) or ``box`` (every cell tissue, uniform white fraction)."""

    kind: Literal["brain", "box"] = "brain"
    center: list[float] | None = None
    semi_axes: list[float] | None = None
    white_radius: float = Field(default=0.7, gt=0, lt=1)
    smoothing: float = Field(default=2.0, gt=0)
    ventricles: bool = True
    white: float = Field(default=1.0, ge=0, le=1)


class _Times(Strict):
    times: list[float] = Field(default_factory=list)
    doses: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self):
        if any(not math.isfinite(t) for t in self.times):
            raise ValueError("treatment times must be finite")
        if any(b <= a for a, b in zip(self.times, self.times[1:])):
            raise ValueError(f"treatment times must be strictly increasing, got {self.times}")
        if self.times and len(self.doses) not in (1, len(self.times)):
            raise ValueError(f"give one dose for all times or one per time: {len(self.times)} times, "
                             f"{len(self.doses)} doses")
        if any(not (math.isfinite(d) and d > 0) for d in self.doses):
            raise ValueError(f"doses must be positive and finite, got {self.doses}")
        return self


class RadiotherapySpec(_Times):
    """Fractions: ``times`` in days, ``doses`` in Gy (one value for all fractions, or one per fraction)."""


class ChemotherapySpec(_Times):
    """Drug administrations: ``times`` in days, ``doses`` in concentration units (relative dose, 1 by default)."""


class TreatmentSpec(Strict):
    radiotherapy: RadiotherapySpec = Field(default_factory=RadiotherapySpec)
    chemotherapy: ChemotherapySpec = Field(default_factory=ChemotherapySpec)


class ImagingSpec(Strict):
    """Imaging visits: cellularity ``N/theta`` averaged over voxels of ``resolution`` mm (model resolution when
    omitted) inside ``roi`` (a box ``[[x0, x1], [y0, y1]]`` in mm; the tissue mask when omitted), with Gaussian noise
    of ``noise_std`` (cellularity units); the segmented volume (cells with cellularity above ``threshold``) has
    Gaussian noise of ``volume_noise_std`` mm^3."""

    resolution: list[float] | None = None
    roi: list[list[float]] | None = None
    noise_std: float = Field(default=0.05, gt=0)
    threshold: float = Field(default=0.2, gt=0, lt=1)
    volume_noise_std: float = Field(default=10.0, gt=0)
    segmentation_width: float = Field(default=0.02, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.resolution is not None and any(not (math.isfinite(r) and r > 0) for r in self.resolution):
            raise ValueError(f"imaging resolution must be positive, got {self.resolution}")
        if self.roi is not None:
            for box in self.roi:
                if len(box) != 2 or not box[1] > box[0]:
                    raise ValueError(f"roi entries must be [lo, hi] with hi > lo, got {box}")
        return self


class RunSpec(Strict):
    """The time span of the run (days); every treatment must lie inside it."""

    start: float = 0.0
    end: float

    @model_validator(mode="after")
    def _order(self):
        if not (math.isfinite(self.start) and math.isfinite(self.end) and self.end > self.start):
            raise ValueError(f"run needs finite start < end, got start={self.start}, end={self.end}")
        return self


class TumourConfig(ModelConfigBase):
    """The ``tumour`` model section (lengths mm, time days)."""

    time_units: ClassVar[str] = "day"
    step_key: ClassVar[tuple] = ("dt",)

    type: Literal["tumour"]
    grid: GridSpec
    dt: float = Field(default=0.5, gt=0, description="time step in days")
    parameters: TumourParameters = Field(default_factory=TumourParameters)
    seed: SeedSpec
    phantom: PhantomSpec = Field(default_factory=PhantomSpec)
    treatment: TreatmentSpec = Field(default_factory=TreatmentSpec)
    imaging: ImagingSpec = Field(default_factory=ImagingSpec)
    run: RunSpec | None = None
    progression_factor: float = Field(default=2.0, gt=1,
                                      description="time to progression: burden exceeds this multiple of baseline")

    @model_validator(mode="after")
    def _consistent(self):
        dim = len(self.grid.shape)
        if not compatible(self.grid.units, "mm"):
            raise ValueError(f"grid units {self.grid.units!r} are not a length")
        if len(self.seed.center) != dim:
            raise ValueError(f"seed.center has {len(self.seed.center)} coordinates for a {dim}-D grid")
        for key in ("center", "semi_axes"):
            v = getattr(self.phantom, key)
            if v is not None and len(v) != dim:
                raise ValueError(f"phantom.{key} has {len(v)} entries for a {dim}-D grid")
        if self.phantom.semi_axes is not None and any(s <= 0 for s in self.phantom.semi_axes):
            raise ValueError(f"phantom.semi_axes must be positive, got {self.phantom.semi_axes}")
        if self.grid.periodic not in (False, [False] * dim):
            raise ValueError("the tumour grid cannot be periodic (tissue has a no-flux boundary)")
        im = self.imaging
        if im.resolution is not None and len(im.resolution) != dim:
            raise ValueError(f"imaging.resolution has {len(im.resolution)} entries for a {dim}-D grid")
        if im.roi is not None and len(im.roi) != dim:
            raise ValueError(f"imaging.roi has {len(im.roi)} axes for a {dim}-D grid")
        return self

    def metadata(self):
        from twin.config.metadata import ModelMetadata

        return ModelMetadata("tumour", ("N",), tuple(self.grid.extent_in("mm")), "mm", tuple(sorted(PARAMETER_UNITS)),
                             ("burden", "volume"), ("density", "cellularity"), ("stress",))

    def grid_size(self) -> GridSize:
        """One cell density per cell."""
        return GridSize(self.grid.cells, self.grid.cells, ("grid", "shape"))

    def fixed_step(self) -> float:
        return self.dt


__all__ = ["TumourConfig", "TumourParameters", "SeedSpec", "PhantomSpec", "TreatmentSpec", "RadiotherapySpec",
           "ChemotherapySpec", "ImagingSpec", "RunSpec", "PARAMETER_UNITS"]


# -- observation networks and decision sections of the kind ----------------------------------------

class ImagingNetwork(NetworkBase):
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


class ImagingVisitsNetwork(NetworkBase):
    """A real patient's imaging visits from files (:mod:`twin.kinds.tumour.visits`)::

        observations: [{type: imaging_visits, file: visits.csv, error_std: 0.05}]

    ``file``: a CSV with the header ``date,image[,mask]``, relative to the campaign file; one row per visit: an ISO 8601
    date (or date-time) after ``timeline.start`` (which must then be a calendar date; a plain number is a number of
    days after the start), a NIfTI image (``.nii``/``.nii.gz``) of the cellularity ``N / theta`` in [0, 1] and an
    optional NIfTI mask (non-zero: observed), both relative to the CSV. Each image is sampled at the model's cell
    centres (:func:`twin.kinds.tumour.imaging.read_nifti`: world RAS mm = model mm; ``plane``: the world z of a 2-D
    model; ``order``: 1 trilinear, 0 nearest); every tissue cell inside the image and the mask is one observation of
    the cellularity of that cell, with error ``error_std``. ``theta`` defaults to the model's carrying capacity.
    ``value_range: [low, high]`` (default ``[0, 1]``): a sampled value outside it is refused, as a sign of intensities
    that are not cellularity; an estimate left unclipped so that its noise stays unbiased (a twin experiment's noisy
    visits, :mod:`twin.kinds.tumour.export`) goes a few ``error_std`` beyond [0, 1], and needs it wider."""

    type: Literal["imaging_visits"]
    file: FilePath
    theta: float | None = Field(default=None, gt=0)
    plane: float = 0.0
    order: Literal[0, 1] = 1
    value_range: list[float] = Field(default_factory=lambda: [0.0, 1.0], min_length=2, max_length=2)
    #: visit tables that arrived later, each naming its own visits (``twin assimilate`` lists them here)
    deliveries: list[FilePath] = Field(default_factory=list, max_length=100_000)

    @field_validator("value_range")
    @classmethod
    def _range(cls, v):
        if not (all(math.isfinite(x) for x in v) and v[0] < v[1]):
            raise ValueError(f"value_range is [low, high] with low < high (cellularity, e.g. [0, 1]), got {v}")
        return v

    @field_validator("error_std")
    @classmethod
    def _scalar(cls, v):
        if not isinstance(v, (int, float)):
            raise ValueError("imaging_visits takes one error_std (cellularity noise, dimensionless)")
        return v

    def files(self) -> list[str]:
        """The visit table, then the tables delivered later (``twin assimilate``); the images each names are read
        with it."""
        return [self.file, *self.deliveries]


class DoseRange(Strict):
    """Dose per fraction bounds (Gy)."""

    min: float = Field(default=1.0, gt=0)
    max: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if not self.max >= self.min:
            raise ValueError(f"dose range needs max >= min, got min={self.min}, max={self.max}")
        return self


class ChemoSpec(Strict):
    """Chemotherapy timing options: first dose ``start_options`` days after the first fraction, ``doses`` doses of
    ``amount`` every ``interval`` days."""

    start_options: list[float] = Field(min_length=1)
    doses: int = Field(default=1, ge=1, le=100)
    interval: float = Field(default=7.0, gt=0)
    amount: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _finite(self):
        if any(not math.isfinite(s) or s < 0 for s in self.start_options):
            raise ValueError(at("start_options") + "chemotherapy start options must be finite and >= 0 days")
        return self


class StandardRegimenSpec(Strict):
    """The standard of care used as the virtual control."""

    fractions: int = Field(default=30, ge=1, le=1000)
    dose: float = Field(default=2.0, gt=0)
    per_week: int = Field(default=5, ge=1, le=7)


class OncologyConfig(Strict):
    """Constraints and objective of the radiotherapy/chemotherapy choice (doses in Gy, times in days)."""

    objective: Literal["burden", "time_to_progression"] = "burden"
    alpha_beta_normal: float = Field(default=3.0, gt=0)
    max_bed_normal: float = Field(default=100.0, gt=0)
    min_fractions: int = Field(default=1, ge=1, le=1000)
    max_fractions: int = Field(default=40, ge=1, le=1000)
    dose: DoseRange = Field(default_factory=DoseRange)
    fraction_options: list[int] = Field(default_factory=lambda: [10, 15, 20, 25, 30, 35, 40], min_length=1)
    per_week_options: list[int] = Field(default_factory=lambda: [5], min_length=1)
    start_options: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    chemotherapy: ChemoSpec | None = None
    standard: StandardRegimenSpec = Field(default_factory=StandardRegimenSpec)

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_fractions < self.min_fractions:
            raise ValueError(at("max_fractions") + f"max_fractions ({self.max_fractions}) < min_fractions "
                                                   f"({self.min_fractions})")
        bad = [n for n in self.fraction_options if not self.min_fractions <= n <= self.max_fractions]
        if bad:
            raise ValueError(at("fraction_options") + f"options {bad} lie outside [min_fractions, max_fractions] = "
                                                      f"[{self.min_fractions}, {self.max_fractions}]")
        if any(not 1 <= w <= 7 for w in self.per_week_options):
            raise ValueError(at("per_week_options") + "fractions per week must lie in 1..7")
        if any(not math.isfinite(s) or s < 0 for s in self.start_options):
            raise ValueError(at("start_options") + "start days must be finite and >= 0")
        return self

    @property
    def min_dose(self) -> float:
        return self.dose.min

    @property
    def max_dose(self) -> float:
        return self.dose.max
