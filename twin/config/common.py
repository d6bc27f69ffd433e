"""Building blocks of the campaign schema shared by every section: strict base class, quantities with units, priors,
grids, parameters and PETSc solver options.

Every class forbids unknown keys (``extra="forbid"``) so a misspelled key is an error, never silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twin.core.units import compatible, convert, parse_units


class Strict(BaseModel):
    """Base of every configuration class: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True)


_AT = re.compile(r"^\[\[at:([^\]]*)\]\] ")


def at(*keys: str | int) -> str:
    """Prefix for a validator's message that points the error at a key below the validated section.

    ``raise ValueError(at("kappa", "units") + "...")`` in a model validator of a section reports the problem at
    ``<section>.kappa.units`` (with that key's line) instead of at the section.
    """
    return "[[at:" + ".".join(str(k) for k in keys) + "]] "


def split_at(message: str) -> tuple[tuple, str]:
    """Inverse of :func:`at`: the key path (ints for list indices) and the message without the prefix."""
    m = _AT.match(message)
    if not m:
        return (), message
    keys = tuple(int(k) if k.isdigit() else k for k in m.group(1).split(".") if k)
    return keys, message[m.end():]


def _check_units(text: str) -> str:
    parse_units(text)
    return text


Units = Annotated[str, Field(min_length=1, description="a unit string understood by pint, e.g. 'mm^2/day'")]


class Quantity(Strict):
    """A value with units: ``{value: 0.1, units: mm^2/day}``."""

    value: float
    units: Units = "1"

    _check = field_validator("units")(classmethod(lambda cls, v: _check_units(v)))

    def to(self, units: str) -> float:
        """The value in ``units`` (``ValueError`` if incompatible)."""
        return float(convert(self.value, self.units, units))


class NormalPrior(Strict):
    dist: Literal["normal"]
    mean: float
    std: float = Field(gt=0)


class LogNormalPrior(Strict):
    """``log X ~ N(log median, sigma^2)``."""

    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(gt=0)


class UniformPrior(Strict):
    dist: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _order(self):
        if not self.high > self.low:
            raise ValueError(f"uniform prior needs high > low, got low={self.low}, high={self.high}")
        return self


class GaussianFieldPrior(Strict):
    """A Gaussian random field, in log space when ``log: true`` (for positive fields such as k(x)).

    ``mean`` is the mean (of the log when ``log``), ``std`` the pointwise standard deviation, ``length_scale`` the
    correlation length in the grid's length units (squared-exponential covariance).
    """

    dist: Literal["gaussian_field"]
    mean: float
    std: float = Field(gt=0)
    length_scale: float = Field(gt=0)
    log: bool = True


Prior = Annotated[Union[NormalPrior, LogNormalPrior, UniformPrior, GaussianFieldPrior], Field(discriminator="dist")]


class ParameterSpec(Strict):
    """A model parameter: ``value`` and ``units``, optionally a ``prior`` and ``estimable: true``."""

    value: float | None = None
    units: Units = "1"
    prior: Prior | None = None
    estimable: bool = False

    _check = field_validator("units")(classmethod(lambda cls, v: _check_units(v)))

    @model_validator(mode="after")
    def _needs_value_or_prior(self):
        if self.value is None and self.prior is None:
            raise ValueError("give a 'value' or a 'prior'")
        if self.estimable and self.prior is None:
            raise ValueError("an estimable parameter needs a 'prior'")
        return self

    def to(self, units: str) -> float:
        """The value (or, without one, the prior's central value) in ``units``."""
        if not compatible(self.units, units):
            raise ValueError(f"units {self.units!r} are not convertible to {units!r}")
        v = self.value
        if v is None:
            p = self.prior
            v = {"normal": lambda: p.mean, "lognormal": lambda: p.median,
                 "uniform": lambda: 0.5 * (p.low + p.high)}.get(p.dist, lambda: None)()
            if v is None:
                raise ValueError("a field prior has no scalar value; give 'value'")
        return float(convert(v, self.units, units))


class GridSpec(Strict):
    """A box grid: ``shape: [nx, ny]``, ``extent: [[x0, x1], [y0, y1]]`` in ``units``, per-axis periodicity."""

    shape: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=3)
    extent: list[Annotated[list[float], Field(min_length=2, max_length=2)]]
    units: Units = "m"
    periodic: bool | list[bool] = False

    _check = field_validator("units")(classmethod(lambda cls, v: _check_units(v)))

    @model_validator(mode="after")
    def _consistent(self):
        if len(self.extent) != len(self.shape):
            raise ValueError(at("extent") + f"extent has {len(self.extent)} axes but shape has {len(self.shape)}")
        for a, (lo, hi) in enumerate(self.extent):
            if not hi > lo:
                raise ValueError(at("extent", a) + f"extent of axis {'xyz'[a]} must have hi > lo, got [{lo}, {hi}]")
        if isinstance(self.periodic, list) and len(self.periodic) != len(self.shape):
            raise ValueError(at("periodic") + f"periodic has {len(self.periodic)} entries for {len(self.shape)} axes")
        return self

    def extent_in(self, units: str) -> list[tuple[float, float]]:
        return [(convert(lo, self.units, units), convert(hi, self.units, units)) for lo, hi in self.extent]


_OPTION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SolverValue = Union[bool, int, float, str, None]


def _check_solver(options: dict[str, Any]) -> dict[str, Any]:
    for key, value in options.items():
        if not _OPTION_KEY.match(key.lstrip("-")):
            raise ValueError(f"PETSc option name {key!r} must be letters, digits and underscores (e.g. ts_type)")
        if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.,:+\-]*", value):
            raise ValueError(f"PETSc option {key}: value {value!r} has characters PETSc options never use")
    return options


SolverOptions = Annotated[dict[str, SolverValue], Field(default_factory=dict)]


class ModelConfigBase(Strict):
    """Common keys of every model section. Each model type subclasses this with ``type: Literal["<name>"]``.

    ``solver`` holds PETSc options without the prefix (``ts_type: bdf``); twin puts them under the component's prefix
    (``-<component>_ts_type bdf``), where command-line options still override them.
    """

    #: units each named parameter must be convertible to (checked when the section has ``parameters``)
    parameter_units: ClassVar[dict[str, str]] = {}

    type: str
    solver: SolverOptions

    _check_solver = field_validator("solver")(classmethod(lambda cls, v: _check_solver(v)))

    @model_validator(mode="after")
    def _parameter_units(self):
        params = getattr(self, "parameters", None)
        if isinstance(params, dict):
            for name, spec in params.items():
                want = self.parameter_units.get(name)
                if want and isinstance(spec, ParameterSpec) and not compatible(spec.units, want):
                    raise ValueError(at("parameters", name, "units") + f"parameter '{name}' has units "
                                     f"{spec.units!r}, which do not convert to {want!r}")
        return self
