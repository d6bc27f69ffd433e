"""The ``coupling`` section: which components are coupled, which field goes where, scheme and acceleration.

Example (partitioned heat conduction, Dirichlet-Neumann, implicit with IQN-ILS)::

    coupling:
      components: [left, right]
      window: {value: 0.01, units: s}
      routes:
        - {from: left.heat_flux_x_hi, to: right.flux_in, mapping: consistent, scale: -1.0}
        - {from: right.temperature_x_lo, to: left.T_in, mapping: consistent}
        # a field sampled at one point and given to every receiving point (wind at a structure's site):
        # - {from: atmosphere.velocity, to: tower.wind, site: {point: [600, 400], units: km}}
      scheme:
        kind: implicit_serial            # explicit_serial | explicit_parallel | implicit_serial | implicit_parallel
        order: [left, right]             # who goes first in a serial scheme
        max_iterations: 30
        allow_nonconvergence: false      # true: log and go on with the last iterate instead of raising
        convergence:
          - {field: left.T_in, kind: relative, limit: 1.0e-8}
        acceleration: {kind: iqn_ils, relaxation: 0.5, reuse: 2, filter: 1.0e-10}
      substeps: {left: 1, right: 4}      # multirate: steps of each component per window
      time_interpolation: linear         # of interface data inside a window (linear | constant)

A field is written ``component.name``; ``from`` names an export of the sending component, ``to`` an import of the
receiving one. ``scale`` multiplies the mapped values (e.g. ``-1`` turns an outward flux into an inward one).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from twin.config.common import Quantity, Strict, Units, _check_units, at
from twin.core.units import compatible

FIELD = r"^[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*$"


class SiteSpec(Strict):
    """A point of the sending component's domain, ``point`` in length ``units``."""

    point: list[float] = Field(min_length=1, max_length=3)
    units: Units = "m"

    _check = field_validator("units")(classmethod(lambda cls, v: _check_units(v)))

    @field_validator("units")
    @classmethod
    def _length(cls, v: str) -> str:
        if not compatible(v, "m"):
            raise ValueError(f"site units {v!r} are not a length")
        return v


class RouteSpec(Strict):
    """One field sent from one component to another through a grid map.

    With ``site``, the source field is sampled at that one point (by ``mapping``: consistent or nearest) and every
    point of the receiver gets that value (e.g. the wind at a structure's location).
    """

    model_config = {"populate_by_name": True}

    from_: str = Field(alias="from", pattern=FIELD)
    to: str = Field(pattern=FIELD)
    mapping: Literal["consistent", "conservative", "nearest"] = "consistent"
    scale: float = 1.0
    site: SiteSpec | None = None
    #: a consistent map's target points outside the source's box: refused (``error``) or given 0 (``zero``)
    outside: Literal["error", "zero"] = "error"

    @model_validator(mode="after")
    def _site(self):
        if self.site is not None and self.mapping == "conservative":
            raise ValueError(at("mapping") + "a site is sampled by consistent or nearest mapping, not conservative")
        if self.outside != "error" and (self.mapping != "consistent" or self.site is not None):
            raise ValueError(at("outside") + "outside: zero applies to a consistent map between grids (a "
                                             f"{self.mapping} map{' of a site' if self.site else ''} has no such "
                                             "choice)")
        return self

    @property
    def source(self) -> tuple[str, str]:
        comp, name = self.from_.split(".", 1)
        return comp, name

    @property
    def target(self) -> tuple[str, str]:
        comp, name = self.to.split(".", 1)
        return comp, name


class ConvergenceSpec(Strict):
    """``||x~ - x|| < limit`` (absolute) or ``||x~ - x|| / ||x~|| < limit`` (relative) for one received field."""

    field: str = Field(pattern=FIELD)
    kind: Literal["absolute", "relative"] = "relative"
    limit: float = Field(gt=0)


class AccelerationSpec(Strict):
    """Fixed-point acceleration of an implicit scheme.

    ``constant``: ``x <- x + relaxation (x~ - x)``; ``aitken``: dynamic relaxation starting each window at
    ``relaxation``; ``iqn_ils``: interface quasi-Newton with least-squares Jacobian, columns from the current window
    and the last ``reuse`` windows (at most ``max_columns``), columns whose QR diagonal falls below ``filter`` times
    their norm are dropped.
    """

    kind: Literal["constant", "aitken", "iqn_ils"] = "iqn_ils"
    relaxation: float = Field(default=0.5, gt=0, le=1)
    reuse: int = Field(default=0, ge=0, le=100)
    filter: float = Field(default=1e-10, ge=0, lt=1)
    max_columns: int = Field(default=50, ge=1, le=1000)


class DivergenceSpec(Strict):
    """An explicit scheme is declared unstable when the interface residual grows by at least ``factor`` in each of
    ``windows`` consecutive windows while being at least ``relative`` times the size of the data."""

    factor: float = Field(default=1.05, gt=1)
    windows: int = Field(default=5, ge=2)
    relative: float = Field(default=0.5, gt=0)


class SchemeSpec(Strict):
    """The coupling scheme over one window."""

    kind: Literal["explicit_serial", "explicit_parallel", "implicit_serial", "implicit_parallel"]
    order: list[str] | None = None
    max_iterations: int = Field(default=50, ge=1, le=10_000)
    allow_nonconvergence: bool = False
    convergence: list[ConvergenceSpec] = Field(default_factory=list)
    acceleration: AccelerationSpec = Field(default_factory=AccelerationSpec)
    accelerated: list[str] | None = Field(default=None, description="received fields accelerated (default: those "
                                                                    "received by the first component in a serial "
                                                                    "scheme, all in a parallel one)")
    divergence: DivergenceSpec = Field(default_factory=DivergenceSpec)

    @property
    def implicit(self) -> bool:
        return self.kind.startswith("implicit")

    @property
    def serial(self) -> bool:
        return self.kind.endswith("serial")


class CouplingConfig(Strict):
    """The ``coupling`` section (see the module docstring for an example)."""

    def check_campaign(self, cfg) -> list[tuple[tuple, str]]:
        """Cross-section check: a forecast stops at every ``timeline.output_every`` and windows are cut there
        (:meth:`twin.coupling.coupled.CoupledModel.windows`), so a window longer than the output interval, or not
        dividing it, would not be the window asked for (window 7 day, outputs every 10 day: windows of 7, 3, 4, 6
        ... day, silently)."""
        every = getattr(cfg.timeline, "output_every", None)
        if every is None:
            return []
        try:
            window = float(self.window.to(cfg.timeline.units))
        except ValueError:
            return []  # not a time in the timeline's units: the window's own checks say so
        if not window > 0:
            return []
        ratio = every / window
        if abs(ratio - round(ratio)) <= 1e-9 * max(1.0, ratio) and round(ratio) >= 1:
            return []
        units = cfg.timeline.units
        if window > every:
            advice = f"a window of at most {every:g} {units}"
        else:
            n = max(1, round(ratio))
            fits = sorted({every / n, every / (n + 1)} if n > 1 else {every, every / 2})
            advice = f"a window that divides it ({' or '.join(f'{w:g} {units}' for w in fits)})"
        return [(("coupling", "window"), f"the window ({window:g} {units}) does not divide timeline.output_every "
                                         f"({every:g} {units}): a forecast stops at every output time, which would "
                                         f"cut windows short there; give {advice}")]

    components: list[str] = Field(min_length=2)
    window: Quantity
    routes: list[RouteSpec] = Field(min_length=1)
    scheme: SchemeSpec
    substeps: dict[str, int] = Field(default_factory=dict)
    time_interpolation: Literal["linear", "constant"] = "linear"

    @model_validator(mode="after")
    def _consistent(self):
        comps = self.components
        if len(set(comps)) != len(comps):
            raise ValueError(at("components") + f"components are listed twice: {comps}")
        if self.window.value <= 0:
            raise ValueError(at("window", "value") + f"window must be positive, got {self.window.value}")
        targets = []
        for i, r in enumerate(self.routes):
            for key, (comp, _) in (("from", r.source), ("to", r.target)):
                if comp not in comps:
                    raise ValueError(at("routes", i, key) + f"component {comp!r} is not in components {comps}")
            if r.source[0] == r.target[0]:
                raise ValueError(at("routes", i) + f"route {r.from_} -> {r.to} stays inside one component")
            if r.to in targets:
                raise ValueError(at("routes", i, "to") + f"field {r.to} receives from two routes")
            targets.append(r.to)
        s = self.scheme
        if s.order is not None and sorted(s.order) != sorted(comps):
            raise ValueError(at("scheme", "order") + f"order {s.order} must list each component {comps} once")
        if s.serial and len(comps) != 2:
            raise ValueError(at("scheme", "kind") + f"a serial scheme couples two components, got {len(comps)}; "
                                                    f"use a parallel scheme")
        for i, m in enumerate(s.convergence):
            if m.field not in targets:
                raise ValueError(at("scheme", "convergence", i, "field") + f"{m.field} is not received by any "
                                                                            f"route; received fields: {targets}")
        for f in s.accelerated or []:
            if f not in targets:
                raise ValueError(at("scheme", "accelerated") + f"{f} is not received by any route: {targets}")
        if not s.implicit and s.convergence:
            raise ValueError(at("scheme", "convergence") + f"an explicit scheme ({s.kind}) makes one pass per window "
                                                           "and checks no convergence (its max_iterations and "
                                                           "acceleration are not used either); remove convergence, "
                                                           "or use implicit_serial or implicit_parallel")
        if s.implicit and s.max_iterations < 2:
            raise ValueError(at("scheme", "max_iterations") + f"an implicit scheme's window converges when two "
                                                              f"iterates agree, so it needs max_iterations of at least "
                                                              f"2, got {s.max_iterations}; for one pass per window use "
                                                              f"an explicit scheme")
        if s.implicit and not s.convergence:
            raise ValueError(at("scheme", "convergence") + "an implicit scheme needs at least one convergence "
                                                           "measure, e.g. {field: " + targets[0] +
                                                           ", kind: relative, limit: 1.0e-6}")
        for name, n in self.substeps.items():
            if name not in comps:
                raise ValueError(at("substeps", name) + f"unknown component {name!r}; components are {comps}")
            if not 1 <= n <= 100_000:
                raise ValueError(at("substeps", name) + f"substeps must lie in 1..100000, got {n}")
        return self

    def component_names(self) -> list[tuple[tuple, str]]:
        """``(key path, component name)`` pairs, for the campaign's check that every component is a model."""
        return [(("components", i), c) for i, c in enumerate(self.components)]

    @property
    def first(self) -> str:
        return (self.scheme.order or self.components)[0]
