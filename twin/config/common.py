"""Building blocks of the campaign schema shared by every section: strict base class, quantities with units, priors,
grids, parameters and PETSc solver options.

Every class forbids unknown keys (``extra="forbid"``) so a misspelled key is an error, never silently ignored.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from twin.config.messages import short
from twin.config.solver_options import option_problem
from twin.core.units import compatible, convert, parse_units


class Strict(BaseModel):
    """Base of every configuration class: unknown keys are errors, values are not coerced across types (the loader
    validates in pydantic's strict mode), and no number is NaN or infinite: no field of schema version 1 means them
    (sizes, times, standard deviations, inflation factors...). A field that means infinity would say so with
    ``Field(allow_inf_nan=True)``."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True, allow_inf_nan=False)

    #: keys this section no longer takes, each with where its fact lives now: refused with that message at the key
    MOVED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_moved(cls, data):
        if cls.MOVED and isinstance(data, dict):
            for key, where in cls.MOVED.items():
                if key in data:
                    raise ValueError(at(key) + where)
        return data


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


_UNIT_TOKEN = re.compile(r"\s+|\*\*|[*/()^-]|[A-Za-z_\u00b0\u00b5\u03a9%][A-Za-z0-9_\u00b0\u00b5\u03a9%]*"
                         r"|[0-9]{1,6}(?:\.[0-9]{1,6})?(?:[eE][-+]?[0-9]{1,2})?")
_EXPONENT = re.compile(r"-?[0-9]{1,2}(?:\.[0-9]{1,3})?")


def _plain_units(text: str) -> str:
    """Refuse unit strings that are not a product of names and numbers with small exponents.

    pint evaluates what it parses: ``9^9^9^9`` would compute a number with billions of digits. A unit string here is
    names (``mm``, ``kg``, ``degC``), numbers, ``*``, ``/``, parentheses, and exponents of at most two digits on unit
    names (``m^2``, ``m**-3``, ``s^(-1)``), never on numbers or groups, never an exponent of an exponent.
    """
    tokens, pos = [], 0
    while pos < len(text):
        m = _UNIT_TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"units {short(text)}: character {text[pos]!r} is not part of a unit (write units such "
                             "as m, mm^2/day, kg/m^3, 1/s)")
        if not m.group().isspace():
            tokens.append(m.group())
        pos = m.end()
    depth = 0
    for i, tok in enumerate(tokens):
        depth += (tok == "(") - (tok == ")")
        if depth > 4 or depth < 0:
            raise ValueError(f"units {short(text)}: unbalanced or too deeply nested parentheses")
        if tok == "-" and not (tokens[i - 1:i] in (["^"], ["**"]) or tokens[max(i - 2, 0):i] in (["^", "("],
                                                                                           ["**", "("])):
            raise ValueError(f"units {short(text)}: a minus sign belongs only to an exponent (s^-1)")
        if tok in ("^", "**"):
            if i == 0 or not (tokens[i - 1][0].isalpha() or tokens[i - 1][0] in "_\u00b0\u00b5\u03a9%"):
                # powers of numbers or of groups can nest into numbers with billions of digits
                raise ValueError(f"units {short(text)}: only a unit name takes an exponent (m^2/s^2, not (m/s)^2 "
                                 "or 10^3)")
            j = i + 1
            paren = tokens[j:j + 1] == ["("]
            j += paren
            sign = tokens[j:j + 1] == ["-"]
            j += sign
            value = tokens[j] if j < len(tokens) else ""
            j += 1
            if paren:
                paren = tokens[j:j + 1] == [")"]
                j += 1
            if not _EXPONENT.fullmatch(value) or tokens[j:j + 1] in (["^"], ["**"]) or (tokens[i + 1:i + 2] == ["("]
                                                                                       and not paren):
                raise ValueError(f"units {short(text)}: an exponent is a number of at most two digits (m^2, s^-1), "
                                 "never another power")
    if depth != 0:
        raise ValueError(f"units {short(text)}: unbalanced parentheses")
    return text


def _path_text(v: str) -> str:
    if "\x00" in v or not v.strip():
        raise ValueError("file must be a path")
    return v


#: a file named in a campaign (relative to the campaign file): non-empty, no NUL; whether it exists is checked where
#: it is read (the observation sets at load, the file networks at ``twin validate``)
FilePath = Annotated[str, Field(min_length=1), AfterValidator(_path_text)]

#: a unit string: at most 100 characters of names, numbers, products, quotients and small powers
Units = Annotated[str, Field(min_length=1, max_length=100,
                             description="a unit string understood by pint, e.g. 'mm^2/day'"),
                  AfterValidator(_plain_units)]


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
        if self.value is not None and getattr(self.prior, "dist", None) == "lognormal" and not self.value > 0:
            raise ValueError(at("value") + f"value {self.value:g} is not positive, but the lognormal prior gives "
                             "positive values only: give a positive value or another prior")
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


#: largest coordinate of a grid's extent (metres): 6700 astronomical units, beyond any domain twin models, and far
#: below where squared spacings and their inverses overflow a double
MAX_EXTENT_METRES = 1e15


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
        try:
            metres = float(convert(1.0, self.units, "m"))
        except ValueError:
            raise ValueError(at("units") + f"grid units {short(self.units)} are not a length (m, km, mm ...)") from None
        for a, (lo, hi) in enumerate(self.extent):
            if not hi > lo:
                raise ValueError(at("extent", a) + f"extent of axis {'xyz'[a]} must have hi > lo, got [{lo}, {hi}]")
            if max(abs(lo), abs(hi)) * metres > MAX_EXTENT_METRES:
                raise ValueError(at("extent", a) + f"extent of axis {'xyz'[a]} [{lo:g}, {hi:g}] {self.units} reaches "
                                 f"beyond {MAX_EXTENT_METRES:g} m, where a grid's spacing and operators overflow; give "
                                 "the domain in its real size and units")
        if isinstance(self.periodic, list) and len(self.periodic) != len(self.shape):
            raise ValueError(at("periodic") + f"periodic has {len(self.periodic)} entries for {len(self.shape)} axes")
        return self

    def extent_in(self, units: str) -> list[tuple[float, float]]:
        return [(convert(lo, self.units, units), convert(hi, self.units, units)) for lo, hi in self.extent]

    @property
    def cells(self) -> int:
        """Number of cells (elements), the product of ``shape``."""
        return math.prod(self.shape)


_OPTION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SolverValue = Union[bool, int, float, str, None]


#: most options in one ``solver:`` section: PETSc 3.18 holds 512 options in all (and fails beyond them), shared by
#: the command line's and every component's
MAX_SOLVER_OPTIONS = 100


def _check_solver(options: dict[str, Any]) -> dict[str, Any]:
    if len(options) > MAX_SOLVER_OPTIONS:
        raise ValueError(f"{len(options)} PETSc options, more than the {MAX_SOLVER_OPTIONS} a component may set (PETSc "
                         "holds 512 options in all, shared by every component and the command line)")
    for key, value in options.items():
        if not _OPTION_KEY.match(key.lstrip("-")):
            raise ValueError(f"PETSc option name {short(key)} must be letters, digits and underscores (e.g. ts_type)")
        if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.,:+\-]*", value):
            raise ValueError(f"PETSc option {key}: value {short(value)} has characters PETSc options never use")
        # a type PETSc does not know, a number that is none (twin.config.solver_options): at the option's line
        problem = option_problem(key.lstrip("-"), value)
        if problem:
            raise ValueError(at(key) + problem)
    return options


SolverOptions = Annotated[dict[str, SolverValue], Field(default_factory=dict)]


class GridSize(NamedTuple):
    """How big a model's state is: ``cells`` of its grid, ``unknowns`` (values of the state vector, ``cells`` times
    the values per cell or node) and ``key``, the key path of the model section that sets the size."""

    cells: int
    unknowns: int
    key: tuple


class ModelConfigBase(Strict):
    """Common keys of every model section. Each model type subclasses this with ``type: Literal["<name>"]``.

    ``solver`` holds PETSc options without the prefix (``ts_type: bdf``); twin puts them under the component's prefix
    (``-<component>_ts_type bdf``), where command-line options still override them.

    Each model type also says, without building anything, how large its state is (:meth:`grid_size`), in which units
    it counts time (:attr:`time_units`, as its model class) and its fixed time step (:meth:`fixed_step`): the resource
    limits and the cycle clock are checked with them when the file is validated (:mod:`twin.config.limits`).
    """

    #: units each named parameter must be convertible to (checked when the section has ``parameters``)
    parameter_units: ClassVar[dict[str, str]] = {}
    #: the model's time units (``"1"``: dimensionless, the timeline's numbers are model time)
    time_units: ClassVar[str] = "s"
    #: key path of the section's time step (where a problem with the number of steps points)
    step_key: ClassVar[tuple] = ()

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

    def grid_size(self) -> GridSize:
        """Cells and unknowns of the model's state (see :class:`GridSize`)."""
        raise NotImplementedError(f"model type {self.type!r} does not say how large its state is")

    def fixed_step(self) -> float | None:
        """The model's fixed time step in :attr:`time_units` (``None``: it has none, e.g. a static model)."""
        raise NotImplementedError(f"model type {self.type!r} does not say what its time step is")

    def metadata(self):
        """State variables, domain, parameters and QoIs of the model this section builds, without building it
        (:class:`twin.config.metadata.ModelMetadata`); a section that cannot say raises ``NotImplementedError`` and
        the campaign's references to it are checked when the model is built."""
        raise NotImplementedError(f"model type {self.type!r} does not describe its model")
