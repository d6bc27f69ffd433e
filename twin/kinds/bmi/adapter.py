"""A Basic Model Interface model behind twin's model contract.

The CSDMS Basic Model Interface (BMI 2.0, PyPI ``bmipy``) is what many earth-surface, hydrology and permafrost models
expose: ``initialize(config_file)``, ``update_until(t)``, ``get_value``/``set_value`` of named variables and a
description of their grids. :class:`BmiModel` runs such a model as a twin model:

* **state**: the chosen BMI variables (``state:`` in the section), all on one BMI grid, as the ``dof`` components of
  one twin state vector (in the order listed);
* **grid**: a BMI ``uniform_rectilinear`` grid of shape ``(n_rows, n_cols)`` (or 1-D, 3-D), spacing and origin
  given rows first, becomes a node-centred :class:`~twin.core.grid.Grid` of shape ``(n_cols, n_rows)`` from the origin
  over ``(n - 1)`` spacings per axis: the BMI's row-major value arrays are then twin's natural order, unchanged. A
  ``scalar`` grid (a lumped model) becomes one cell;
* **time**: twin counts seconds; the BMI's times are converted with its ``get_time_units()``;
* **forecast**: ``advance(state, t0, t1)`` puts the parameters, the imports and the state into the model with
  ``set_value`` and calls ``update_until(t1)``;
* **parameters** (``parameters:`` in the section): scalar BMI input variables as twin :class:`Parameter` objects (a
  value, a prior, estimable or not; in the variable's own units), given to the model with ``set_value``, broadcast to
  the variable's size, before every ``update_until``, so that ensemble methods estimate them jointly with the state
  (each member's value reaches the instance that runs the member);
* **coupling**: :meth:`exports` gives every state variable under its BMI name, taken from the state vector (so each
  member's own), on :meth:`field_grid` (the state grid, or a one-component copy of it when the state has several
  variables); the BMI input variables listed in ``imports:`` are what a coupler may set (:meth:`set_import`), each on
  the twin grid of its own BMI grid. An imported field is given to the model with ``set_value`` before every
  ``update_until`` and so is held constant over the coupling window (or sub-step) the coupler advances; until the
  coupler sets it, the value the model had after ``initialize`` is given (when its ``get_value`` gives it), so that
  no member depends on what another member's instance received.

A BMI model has one clock, which only goes forward, while an ensemble forecast starts every member at the same
``t0``. The adapter therefore keeps a pool of instances of the BMI model, each with its clock: a member starting at
``t0`` takes an instance whose clock is at ``t0`` (after the first cycle there is one per member), else the latest one
behind ``t0`` (run forward to ``t0``), else a new one (``initialize``, run from its start to ``t0``); after the member's
forecast the instance goes back to the pool at ``t1``. So a cycled ensemble costs one BMI update per member and cycle,
as calling the model directly would, and holds one instance per member (at most ``max_instances``; beyond that the one
furthest behind is finalized). What an instance holds besides the state variables must be constant or depend on time
only (forcing): a member may continue on the instance another member used before.

The BMI model is serial: on a communicator of several ranks every rank runs it on the whole grid (the same
computation) and keeps its own block of the state. Nothing here is differentiable: :meth:`adjoint` is the contract's
default, which refuses (4D-Var needs an adjoint; the ensemble methods do not).

Every call of the BMI model goes through :meth:`BmiModel._call`, so errors name the component, the BMI model (its
``get_component_name()`` and class), the method and what to change: a class that cannot be imported or lacks BMI
methods, any BMI method that raises (or calls ``sys.exit``) or returns what BMI 2.0 does not allow (``None`` for a
time step, ``'real'`` for a type), a variable that is not both an input and an output, variables on different grids
or a grid twin cannot map, an import or parameter that is not an input variable of the model, values of the wrong
size or of another type than ``get_var_type`` declares, a ``get_value`` that neither fills ``dest`` nor returns the
values (``dest`` is filled with NaN before the call), a failing ``initialize`` or ``update_until`` (a
:class:`~twin.core.errors.SolverError`, which a campaign treats like a diverged solve: the member is retried or
dropped), and non-finite values returned by the model. Units twin cannot read (``get_var_units``) are a warning and
are treated as unknown: the state's are written as ``"1"``, and a parameter takes its value without units.

``set_value`` is given a private copy of twin's values each time, never a view of twin's own arrays: a BMI may keep
the array it is given (as some Python implementations do) and change it in place, on any number of ranks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.core.units import convert
from twin.kinds.bmi.interface import bmi_grid, campaign_units, load_class, readable_units, same_units
from twin.models.base import Model, Parameter, QoI
from twin.models.registry import register_model

log = get_logger("twin.kinds.bmi")

#: relative tolerance under which two times (in seconds) are the same instant
_TIME_RTOL = 1e-9
#: (class, variable, units) whose unreadable units this process has warned about (a model is built several times)
_WARNED: set[tuple[str, str, str]] = set()


#: what a BMI method's result must be (``want`` of :meth:`BmiModel._call`), as the error line names it
_WANT = {"number": "a number", "end": "a number (or None: no end)", "integer": "an integer", "text": "a string",
         "units": "a unit string (UDUNITS, e.g. 'm s-1')", "type": "a NumPy type name such as 'float64'",
         "names": "a tuple of variable names", "integers": "integers in the array it is given",
         "numbers": "numbers in the array it is given"}


def _result(want: str, got, given: tuple):
    """The result ``got`` of a BMI method as ``want`` (a key of :data:`_WANT`) says, converted (a ``float``, an
    ``int``, a ``str``, a ``np.dtype``, a tuple of names, a flat array); ``TypeError`` or ``ValueError`` for anything
    else. One place that knows what BMI 2.0 allows each kind of method to return, because implementations return
    anything (``None``, ``'real'``, a list) and Python's own conversions accept too much (``float('1.5')``) or fail
    with a line naming nothing. ``given``: the call's arguments (an array method may fill the array it was given,
    the last one, and return ``None``)."""
    if want in ("integers", "numbers"):
        a = np.asarray(given[-1] if got is None else got)
        if a.dtype.kind not in ("iu" if want == "integers" else "iuf"):
            raise TypeError
        return a.ravel().astype(np.int64 if want == "integers" else float)
    if want in ("text", "units", "type"):
        if got is None and want == "units":
            return ""
        got = got.decode() if isinstance(got, bytes) else got
        if not isinstance(got, str):
            raise TypeError
        return np.dtype(got.strip()) if want == "type" else got.strip()
    if want == "names":
        names = tuple(got) if got is not None and not isinstance(got, (str, bytes)) else (0,)
        if not all(isinstance(n, str) for n in names):
            raise TypeError
        return names
    if want == "end" and got is None:
        return np.inf
    a = None if got is None or isinstance(got, (str, bytes, bool, np.bool_)) else np.asarray(got)  # a number
    if a is None or a.ndim != 0 or a.dtype.kind not in "iuf":
        raise TypeError
    if want == "integer":
        if a != int(a):
            raise ValueError
        return int(a)
    return float(a)


@register_model("bmi")
class BmiModel(Model):
    """A BMI model as a twin model (see the module docstring).

    Parameters
    ----------
    name : str
        Component name.
    comm : mpi4py communicator
    bmi_class : str
        ``package.module:Class`` of the BMI implementation.
    config_file : str
        Passed to its ``initialize``.
    state : sequence of str
        The BMI variables of the state.
    time_step : float
        Step of the cycle clock, seconds; a whole multiple of the model's own step.
    bmi_time_units : str, optional
        The model's time units when it does not say.
    length_units : str
        Units of the grid's coordinates.
    shape : sequence of int, optional
        The BMI grid's shape (rows first) as the section expects it.
    max_instances : int
        Most instances of the BMI model kept at once (one per ensemble member is what a cycled ensemble uses).
    imports : sequence of str
        BMI input variables a coupler sets (:meth:`set_import`).
    parameters : mapping of str to ParameterSpec
        Scalar BMI input variables as twin parameters (``to(units)``, ``units``, ``prior``, ``estimable`` as
        :class:`twin.config.common.ParameterSpec`); ``units`` other than ``"1"`` must equal the variable's.
    """

    time_units = "s"

    def __init__(self, name: str, comm, *, bmi_class: str, config_file: str, state: Sequence[str], time_step: float,
                 bmi_time_units: str | None = None, length_units: str = "m", shape: Sequence[int] | None = None,
                 max_instances: int = 128, imports: Sequence[str] = (),
                 parameters: Mapping[str, Any] | None = None):
        super().__init__(name, comm)
        self.cls_path = bmi_class
        self.config_file = str(config_file)
        self._cls = load_class(bmi_class, name)
        self.variables = tuple(state)
        self.length_units = length_units
        self.max_instances = max(1, int(max_instances))
        self.import_names = tuple(imports)
        #: instances of the BMI model not in use, with their clocks (seconds)
        self._pool: list[tuple[float, Any]] = []
        #: coupling field -> its twin grid; grids made here (destroyed with the model)
        self._field_grids: dict[str, Grid] = {}
        self._own_grids: list[Grid] = []
        #: import -> the whole field (natural order) given to every instance before an update (None: not settable)
        self._import_values: dict[str, np.ndarray | None] = {}
        self._import_dtypes: dict[str, np.dtype] = {}
        #: parameter -> (dtype, number of values) of its BMI variable
        self._parameter_vars: dict[str, tuple[np.dtype, int]] = {}
        bmi = self._initialize()
        try:
            self.component = self._call(bmi, "get_component_name", None, want="text")
            self._to_seconds = self._time_factor(bmi, bmi_time_units)
            self.start_time = self._call(bmi, "get_start_time", None, want="number") * self._to_seconds
            if not np.isfinite(self.start_time):
                raise ModelError(name, f"{self._what()}: get_start_time() returned {self.start_time:g}; make it "
                                       "return the model's (finite) start time")
            end = self._call(bmi, "get_end_time", None, want="end")
            self.end_time = end * self._to_seconds if np.isfinite(end) else np.inf
            self._check_variables(bmi)
            self.grid_id = self._call(bmi, "get_var_grid", None, self.variables[0], want="integer")
            gshape, extent, centering = bmi_grid(self._asking(bmi), self.grid_id, name, self._what())
            if shape is not None and tuple(shape) != tuple(gshape[::-1]) and not (centering == "cell" and
                                                                                   list(shape) == [1]):
                raise ModelError(name, f"{self._what()}: its grid has shape {list(gshape[::-1])} (rows first), the "
                                       f"section says shape: {list(shape)}; correct or remove 'shape'")
            self.n_points = int(np.prod(gshape))
            self.grid = Grid(comm, gshape, extent, dof=len(self.variables), stencil_width=0, centering=centering,
                             name=name)
            self.state_names = self.variables
            self.state_units = tuple(self._units(bmi, v)[0] for v in self.variables)
            self._dtypes = {v: self._call(bmi, "get_var_type", None, v, want="type") for v in self.variables}
            step = self._call(bmi, "get_time_step", None, want="number") * self._to_seconds
            if not (np.isfinite(time_step) and time_step > 0):
                raise ModelError(name, f"time_step must be positive, got {time_step} s")
            if np.isfinite(step) and step > 0:
                ratio = time_step / step
                if abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio) or round(ratio) < 1:
                    raise ModelError(name, f"time_step {time_step:g} s is not a whole multiple of the step of "
                                           f"{self._what()} ({step:g} s, set in {self.config_file}); make it one")
            self.dt = float(time_step)
            self._check_sizes(bmi, None)
            self._initial = self._values(bmi, self.start_time)
            self._build_fields(bmi)
            self._build_parameters(bmi, parameters or {})
        except BaseException:
            self._finalize(bmi)
            for g in self._own_grids:
                g.destroy()
            raise
        self._pool.append((self.start_time, bmi))

    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "BmiModel":
        """Build from a :class:`~twin.kinds.bmi.config.BmiConfig` (its ``solver:`` options are not used: a BMI model
        has no PETSc solver)."""
        return cls(name, comm, bmi_class=cfg.bmi_class, config_file=cfg.config_file, state=cfg.state,
                   time_step=cfg.fixed_step(), bmi_time_units=cfg.bmi_time_units, length_units=cfg.length_units,
                   shape=cfg.shape, max_instances=cfg.max_instances, imports=cfg.imports,
                   parameters=cfg.parameters)

    # -- talking to the BMI model ----------------------------------------------------------------------------------
    def _what(self) -> str:
        component = getattr(self, "component", None)
        return f"BMI model {component!r} ({self.cls_path})" if component else f"BMI model {self.cls_path}"

    def _call(self, bmi, method: str, t: float | None, *args, want: str | None = None):
        """``bmi.method(*args)``: every call of the BMI model goes through here (but ``finalize``, whose failure is a
        warning), so that whatever it raises, ``sys.exit`` included, is one line naming the component, the BMI class,
        the method and what to change: a ``ModelError`` (``t`` None: building) or a ``SolverError`` at model time
        ``t``. ``want`` (a key of :data:`_WANT`) checks and converts the result (:func:`_result`)."""
        shown = ", ".join(repr(a) if not isinstance(a, np.ndarray) else f"<{a.size} values>" for a in args)
        call = f"{self._what()}: {method}({shown})"
        config = f"the model's configuration file {self.config_file}"
        try:
            got = getattr(bmi, method)(*args)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a third-party model may raise anything: name it
            if isinstance(exc, SystemExit):  # a wrapped legacy code that exits on an error
                text = f"{call} called sys.exit({exc.code!r})"
                hint = f"check {config}; a BMI model should raise an exception, not exit"
            else:
                why = " ".join(str(exc).split())[:300]
                text = f"{call} raised {type(exc).__name__}" + (f": {why}" if why else "")
                hint = f"twin calls {method}: implement it in {self.cls_path}" \
                    if isinstance(exc, NotImplementedError) else f"check {config}"
            self._fail(t, text, hint)
        if want is None:
            return got
        try:
            return _result(want, got, args)
        except (TypeError, ValueError, OverflowError):
            text = repr(got) if not isinstance(got, np.ndarray) else f"an array of {got.dtype}"
            self._fail(t, f"{call} returned {text[:80]}, not {_WANT[want]}",
                       f"make {method} of {self.cls_path} return {_WANT[want]} (Basic Model Interface 2.0)")

    def _fail(self, t: float | None, text: str, hint: str):
        """Raise the error of a BMI call that failed: ``ModelError`` while building (``t`` None), else
        ``SolverError`` (a campaign retries or drops the member)."""
        if t is None:
            raise ModelError(self.name, f"{text}; {hint}") from None
        raise SolverError(self.name, t, text, hint=hint) from None

    def _asking(self, bmi):
        """``call(method, *args, want=...)`` of ``bmi`` while building, for :func:`~twin.kinds.bmi.interface.bmi_grid`
        (which asks for a grid in its own module and must name a failing method as :meth:`_call` does)."""
        return lambda method, *args, want=None: self._call(bmi, method, None, *args, want=want)

    def _initialize(self):
        try:
            bmi = self._cls()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the model's own constructor: name it
            what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
                f"raised {type(exc).__name__}: {exc}"
            raise ModelError(self.name, f"{self.cls_path}() {what}") from None
        self._call(bmi, "initialize", None, self.config_file)
        return bmi

    def _time_factor(self, bmi, override: str | None) -> float:
        units = override or self._call(bmi, "get_time_units", None, want="units")
        aliases = {"d": "day", "days": "day", "years": "year", "yr": "year", "hours": "hour", "seconds": "s",
                   "sec": "s", "minutes": "minute", "min": "minute"}
        try:
            return float(convert(1.0, aliases.get(units, units), "s"))
        except ValueError:
            raise ModelError(self.name, f"{self._what()} counts time in {units!r}, which twin cannot convert to "
                                        "seconds; give bmi_time_units (e.g. day) in its section") from None

    def _check_variables(self, bmi) -> None:
        inputs = set(self._call(bmi, "get_input_var_names", None, want="names"))
        outputs = set(self._call(bmi, "get_output_var_names", None, want="names"))
        for v in self.variables:
            lacks = [k for k, names in (("an input", inputs), ("an output", outputs)) if v not in names]
            if lacks:
                known = sorted(inputs & outputs)
                raise ModelError(self.name, f"{self._what()}: state variable {v!r} is not {' nor '.join(lacks)} "
                                            f"variable (the state is set and read back; variables that are both: "
                                            f"{', '.join(known[:10]) or 'none'})")
            dtype = self._call(bmi, "get_var_type", None, v, want="type")
            if dtype.kind != "f":
                raise ModelError(self.name, f"{self._what()}: state variable {v!r} has type {dtype}; the state is "
                                            "floating point")
        grids = {v: self._call(bmi, "get_var_grid", None, v, want="integer") for v in self.variables}
        if len(set(grids.values())) > 1:
            raise ModelError(self.name, f"{self._what()}: the state variables lie on different grids ({grids}); "
                                        "choose variables of one grid")

    def _input(self, bmi, name: str, role: str) -> tuple[np.dtype, int, int]:
        """dtype, number of values and grid of BMI input variable ``name`` (an import or a parameter, ``role``);
        ``ModelError`` unless the model takes it as a floating-point input."""
        inputs = list(self._call(bmi, "get_input_var_names", None, want="names"))
        if name not in inputs:
            shown = [v for v in inputs if v not in self.variables]
            raise ModelError(self.name, f"{self._what()}: {role} {name!r} is not an input variable of the model "
                                        f"(its inputs besides the state: {', '.join(shown[:12]) or 'none'}"
                                        f"{' ...' if len(shown) > 12 else ''}); correct the name in the section")
        dtype = self._call(bmi, "get_var_type", None, name, want="type")
        if dtype.kind != "f":
            raise ModelError(self.name, f"{self._what()}: {role} {name!r} has type {dtype}; twin sets floating-point "
                                        "inputs only")
        size = self._size(bmi, name, None)
        if size < 1:
            raise ModelError(self.name, f"{self._what()}: {role} {name!r} has no values (get_var_nbytes)")
        return dtype, size, self._call(bmi, "get_var_grid", None, name, want="integer")

    def _build_fields(self, bmi) -> None:
        """The twin grid of every coupling field: the state variables (exports) and the imports. Collective."""
        if self.grid.dof == 1:
            state_grid = self.grid
        else:
            # one component of the state, with the state grid's points and ownership
            state_grid = Grid(self.comm, self.grid.shape, self.grid.extent, dof=1, stencil_width=0,
                              centering=self.grid.centering, proc_sizes=self.grid.da.getProcSizes(),
                              name=f"{self.name}.field")
            self._own_grids.append(state_grid)
        for v in self.variables:
            self._field_grids[v] = state_grid
        by_id: dict[int, Grid] = {self.grid_id: state_grid}
        for name in self.import_names:
            dtype, size, grid_id = self._input(bmi, name, "import")
            if grid_id not in by_id:
                gshape, extent, centering = bmi_grid(self._asking(bmi), grid_id, self.name, self._what())
                by_id[grid_id] = Grid(self.comm, gshape, extent, dof=1, stencil_width=0, centering=centering,
                                      name=f"{self.name}.{name}")
                self._own_grids.append(by_id[grid_id])
            grid = by_id[grid_id]
            if size != grid.size:
                raise ModelError(self.name, f"{self._what()}: import {name!r} has {size} values, its grid {grid_id} "
                                            f"has {grid.size} points")
            self._field_grids[name] = grid
            self._import_dtypes[name] = dtype
            self._import_values[name] = self._initial_input(bmi, name, dtype, size)

    def _initial_input(self, bmi, name: str, dtype: np.dtype, size: int) -> np.ndarray | None:
        """The value of an import after ``initialize`` (given until the coupler sets one), or ``None`` when the
        model does not give the values of that input."""
        dest = np.full(size, np.nan, dtype=dtype)  # still NaN if get_value neither fills it nor returns values
        try:
            got = self._call(bmi, "get_value", None, name, dest, want="numbers")
        except ModelError as exc:  # a BMI need not give the values of an input-only variable
            log.debug("%s; the import is set only once a coupler gives it", exc)
            return None
        got = got.astype(dtype)
        return got.copy() if got.size == size and np.all(np.isfinite(got)) else None

    def _build_parameters(self, bmi, specs: Mapping[str, Any]) -> None:
        for name, spec in specs.items():
            dtype, size, _ = self._input(bmi, name, "parameter")
            units, text, readable = self._units(bmi, name)
            given = str(getattr(spec, "units", "1") or "1")
            if given != "1" and readable is None:
                raise ModelError(self.name, f"{self._what()}: parameter {name!r} is given in {given!r}, the model "
                                            f"takes it in {text!r}, which twin cannot read (get_var_units); give its "
                                            "value and prior in the model's units, without 'units'")
            if given not in ("1", text) and not same_units(given, readable):
                spelled = campaign_units(readable)
                advice = f"in {spelled!r} (or without 'units')" if spelled and spelled != "1" else "without 'units'"
                raise ModelError(self.name, f"{self._what()}: parameter {name!r} is given in {given!r}, the model "
                                            f"takes it in {text!r}; give its value and prior {advice}")
            value = float(spec.to(given))
            if not np.isfinite(value):
                raise ModelError(self.name, f"parameter {name!r} must be finite, got {value}")
            prior = getattr(spec, "prior", None)
            transform = "log" if getattr(prior, "dist", None) == "lognormal" else "none"
            self.parameters[name] = Parameter(name, value, units, bool(getattr(spec, "estimable", False)), transform,
                                              prior)
            self._parameter_vars[name] = (dtype, size)

    def _clock(self, bmi) -> float:
        return float(self._call(bmi, "get_current_time", None)) * self._to_seconds

    def _same(self, a: float, b: float) -> bool:
        return abs(a - b) <= _TIME_RTOL * max(1.0, abs(a), abs(b), self.dt)

    def _update_until(self, bmi, t: float) -> None:
        self._call(bmi, "update_until", t, t / self._to_seconds)
        reached = self._clock(bmi)
        if not self._same(reached, t):
            raise SolverError(self.name, reached, f"{self._what()}: update_until({t / self._to_seconds:g}) stopped "
                                                  f"at {reached / self._to_seconds:g}",
                              hint=f"check its end time and step in {self.config_file}")

    def _units(self, bmi, name: str) -> tuple[str, str, str | None]:
        """The units of BMI variable ``name``: as twin gives them (``"1"`` for none and for units twin cannot read,
        which are unknown, never written into a CF output as units), as the model gives them, and in pint spelling
        (``None``: unreadable, a warning naming them, once per process). Building."""
        text = self._call(bmi, "get_var_units", None, name, want="units")
        readable = readable_units(text)
        if readable is None and (self.cls_path, name, text) not in _WARNED:
            _WARNED.add((self.cls_path, name, text))
            log.warning("model '%s': %s gives the units of variable %r as %r, which twin cannot read "
                        "(get_var_units); they are treated as unknown (written as '1' in the outputs)", self.name,
                        self._what(), name, text)
        return ("1" if readable in (None, "1") else text), text, readable

    def _size(self, bmi, name: str, t: float | None) -> int:
        """Number of values of BMI variable ``name`` (``get_var_nbytes // get_var_itemsize``), asked when building and
        when an instance is taken (both sizes must be checked there, so this is one place)."""
        itemsize = self._call(bmi, "get_var_itemsize", t, name, want="integer")
        return self._call(bmi, "get_var_nbytes", t, name, want="integer") // max(1, itemsize)

    def _check_sizes(self, bmi, t: float | None) -> None:
        """Each state variable has one value per grid point (``t`` None: building, a ``ModelError``)."""
        for v in self.variables:
            size = self._size(bmi, v, t)
            if size != self.n_points:
                self._fail(t, f"{self._what()}: variable {v!r} has {size} values, its grid {self.grid_id} has "
                              f"{self.n_points} points", f"check the model's configuration file {self.config_file}")

    def _values(self, bmi, t: float) -> np.ndarray:
        """The state variables as one natural-order array ``(points, dof)``; refuses wrong sizes and non-finite
        values, naming the variable. (Sizes and types are checked when an instance is made: asking a model for them
        costs as much as the values, e.g. landlab's.)"""
        out = np.empty((self.n_points, len(self.variables)))
        for j, v in enumerate(self.variables):
            want = self._dtypes[v]
            dest = np.full(self.n_points, np.nan, dtype=want)  # still NaN if get_value neither fills nor returns it
            got = self._call(bmi, "get_value", t, v, dest)
            if got is None and not np.any(np.isfinite(dest)):
                raise SolverError(self.name, t, f"{self._what()}: get_value({v!r}, dest) returned None and left "
                                                f"dest as twin gave it (all {self.n_points} values NaN)",
                                  hint="fill dest in place (dest[:] = values) or return the values")
            got = dest if got is None else np.asarray(got)
            if got.dtype.kind != want.kind or got.dtype.itemsize != want.itemsize:
                raise SolverError(self.name, t, f"{self._what()}: get_value({v!r}) returned {got.dtype} values; "
                                                f"get_var_type({v!r}) says {want}",
                                  hint="return values of the declared type (or declare the type it returns)")
            if got.size != self.n_points:
                raise SolverError(self.name, t, f"{self._what()}: get_value({v!r}) gave {got.size} values, its grid "
                                                f"{self.grid_id} has {self.n_points} points")
            bad = int(np.count_nonzero(~np.isfinite(got)))
            if bad:
                raise SolverError(self.name, t, f"{self._what()} returned {bad} non-finite values of {v!r} (of "
                                                f"{self.n_points})", hint=f"check its parameters and time step in "
                                                                          f"{self.config_file}")
            out[:, j] = got.ravel()
        return out

    def _set_values(self, bmi, whole: np.ndarray, t: float) -> None:
        for j, v in enumerate(self.variables):  # a private copy: the model may keep the array it is given
            self._call(bmi, "set_value", t, v, np.array(whole[:, j], dtype=self._dtypes[v], order="C", copy=True))

    def _set_inputs(self, bmi, t: float) -> None:
        """Parameters (broadcast to their variables' sizes) and imports, before an update."""
        for name, (dtype, size) in self._parameter_vars.items():
            self._call(bmi, "set_value", t, name, np.full(size, self.parameters[name].value, dtype=dtype))
        for name, values in self._import_values.items():
            if values is not None:  # a copy: the model may keep (and change) it, and other members need it unchanged
                self._call(bmi, "set_value", t, name, values.copy())

    def _take(self, t0: float):
        """An instance of the BMI model with its clock at ``t0``, out of the pool (see the module docstring)."""
        if t0 < self.start_time and not self._same(t0, self.start_time):
            raise ModelError(self.name, f"{self._what()} starts at t={self.start_time:g} s; twin asked for "
                                        f"t={t0:g} s: start the campaign's timeline there")
        at = [i for i, (t, _) in enumerate(self._pool) if self._same(t, t0)]
        behind = [i for i, (t, _) in enumerate(self._pool) if t < t0 and not self._same(t, t0)]
        if at:
            return self._pool.pop(at[-1])[1]
        if behind:
            bmi = self._pool.pop(max(behind, key=lambda i: self._pool[i][0]))[1]
        else:
            bmi = self._initialize()
        try:
            self._check_sizes(bmi, t0)
            if not self._same(self._clock(bmi), t0):
                self._update_until(bmi, t0)
        except BaseException:
            self._finalize(bmi)
            raise
        return bmi

    def _give_back(self, bmi, t: float) -> None:
        self._pool.append((t, bmi))
        while len(self._pool) > self.max_instances:
            oldest = min(range(len(self._pool)), key=lambda i: self._pool[i][0])
            self._finalize(self._pool.pop(oldest)[1])

    def _finalize(self, bmi) -> None:
        try:
            bmi.finalize()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a model failing to clean up must not hide the result
            log.warning("%s: finalize raised %s: %s", self._what(), type(exc).__name__, exc)

    # -- contract --------------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        return self.grid.set_global(self._initial, self.create_state())

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
            raise ModelError(self.name, f"advance needs finite t1 > t0, got t0={t0}, t1={t1}")
        if t1 > self.end_time and not self._same(t1, self.end_time):
            raise ModelError(self.name, f"{self._what()} ends at t={self.end_time:g} s (its configuration file "
                                        f"{self.config_file}); twin asked for t={t1:g} s: raise its end time")
        whole = self._whole(state)
        bmi = self._take(t0)
        try:
            self._set_inputs(bmi, t0)
            self._set_values(bmi, whole, t0)
            self._update_until(bmi, t1)
            values = self._values(bmi, t1)
        except BaseException:
            self._finalize(bmi)  # its clock and state are unknown after a failure: never reused
            raise
        self._give_back(bmi, t1)
        self.grid.set_global(values, state)

    def _whole(self, state: PETSc.Vec) -> np.ndarray:
        """The whole state, ``(points, dof)`` in natural order, on every rank (on one rank: the vector's own array,
        whose order is the natural one)."""
        if self.comm.Get_size() == 1:
            return self.grid.owned_array(state, readonly=True).reshape(self.n_points, -1)
        return np.asarray(self.grid.allgather(state), dtype=float).reshape(self.n_points, -1)

    def parameters_changed(self, names: Sequence[str]) -> None:
        """Refuses a non-finite value (the value reaches the BMI model at the next :meth:`advance`)."""
        for name in names:
            value = self.parameters[name].value
            if not np.isfinite(value):
                raise ModelError(self.name, f"parameter {name!r} must be finite, got {value}")

    # -- coupling --------------------------------------------------------------------------------------------------
    def field_grid(self, name: str) -> Grid:
        """The twin grid of coupling field ``name``: a state variable (an export) or an import."""
        grid = self._field_grids.get(name)
        if grid is None:
            raise ModelError(self.name, f"{self._what()} has no coupling field {name!r}: it exports its state "
                                        f"variables {list(self.variables)} and imports {list(self.import_names)} "
                                        "(the section's imports:)")
        return grid

    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """Each state variable under its BMI name, from ``state`` (new vectors on :meth:`field_grid`, owned by the
        caller). Collective."""
        if self.grid.dof == 1:
            return {self.variables[0]: state.copy()}
        out = {}
        values = self.grid.owned_array(state, readonly=True)
        for j, v in enumerate(self.variables):
            grid = self._field_grids[v]
            vec = grid.create_global()
            grid.owned_array(vec)[...] = values[..., j]
            out[v] = vec
        return out

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        """Keep imported field ``name`` (a vector on :meth:`field_grid`, copied): it is given to the BMI model with
        ``set_value`` before every ``update_until`` until the next call, so it is held constant over the coupling
        window (or sub-step) that the coupler advances next. Collective."""
        if name not in self.import_names:
            raise ModelError(self.name, f"{self._what()}: unknown import {name!r}; the section imports "
                                        f"{list(self.import_names)} (add it to imports:)")
        grid = self._field_grids[name]
        if value.getSize() != grid.size:
            raise ModelError(self.name, f"import {name!r} has {value.getSize()} values; its grid has {grid.size}")
        whole = np.asarray(grid.allgather(value), dtype=float).ravel()
        if not np.all(np.isfinite(whole)):
            raise ModelError(self.name, f"import {name!r}: {int(np.count_nonzero(~np.isfinite(whole)))} non-finite "
                                        f"values received from the coupler")
        self._import_values[name] = whole.astype(self._import_dtypes[name])

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        """Mean and maximum of each state variable, in its units (collective)."""
        whole = self._whole(state)
        out = {}
        for j, (v, units) in enumerate(zip(self.variables, self.state_units)):
            out[f"mean_{v}"] = QoI(float(np.mean(whole[:, j])), units or "1", f"mean of {v}")
            out[f"max_{v}"] = QoI(float(np.max(whole[:, j])), units or "1", f"maximum of {v}")
        return out

    def destroy(self) -> None:
        for _, bmi in self._pool:
            self._finalize(bmi)
        self._pool = []
        for g in self._own_grids:
            g.destroy()
        self._own_grids, self._field_grids = [], {}
        super().destroy()
