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
* **forecast**: ``advance(state, t0, t1)`` puts the state into the model with ``set_value`` and calls
  ``update_until(t1)``.

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

Errors name the component, the BMI model (its ``get_component_name()`` and class) and what to change: a class that
cannot be imported or lacks BMI methods, a variable that is not both an input and an output, variables on different
grids or a grid twin cannot map, values of the wrong size, a failing ``initialize`` or ``update_until`` (a
:class:`~twin.core.errors.SolverError`, which a campaign treats like a diverged solve: the member is retried or
dropped), and non-finite values returned by the model.
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.core.units import convert
from twin.models.base import Model, QoI
from twin.models.registry import register_model

log = get_logger("twin.kinds.bmi")

#: the BMI methods the adapter calls
REQUIRED = ("initialize", "update_until", "finalize", "get_component_name", "get_input_var_names",
            "get_output_var_names", "get_var_grid", "get_var_type", "get_var_units", "get_var_itemsize",
            "get_var_nbytes", "get_value", "set_value", "get_current_time", "get_start_time", "get_end_time",
            "get_time_step", "get_time_units", "get_grid_type", "get_grid_rank", "get_grid_size", "get_grid_shape",
            "get_grid_spacing", "get_grid_origin")
#: relative tolerance under which two times (in seconds) are the same instant
_TIME_RTOL = 1e-9


def load_class(path: str, component: str) -> type:
    """The class ``package.module:Class``; ``ModelError`` naming the path if it cannot be imported or is not a BMI."""
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - whatever a third-party import raises, name the class and the cause
        raise ModelError(component, f"bmi_class {path!r} cannot be imported ({type(exc).__name__}: {exc}); install "
                                    "the package that provides it in this environment") from None
    if not isinstance(obj, type):
        raise ModelError(component, f"bmi_class {path!r} is a {type(obj).__name__}, not a class")
    missing = [m for m in REQUIRED if not callable(getattr(obj, m, None))]
    if missing:
        raise ModelError(component, f"bmi_class {path!r} does not implement the Basic Model Interface: it has no "
                                    f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    return obj


def bmi_grid(bmi, grid_id: int, component: str, what: str = "the BMI model"
             ) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...], str]:
    """Shape (PETSc order), extent per axis and centering of the twin grid of BMI grid ``grid_id``; ``ModelError``
    for ``component`` (``what`` names the BMI model) when twin cannot map it."""
    kind = str(bmi.get_grid_type(grid_id))
    if kind == "scalar":
        return (1,), ((0.0, 1.0),), "cell"
    where = f"{what}, grid {grid_id}"
    if kind != "uniform_rectilinear":
        raise ModelError(component, f"{where} is of type {kind!r}: twin maps uniform_rectilinear and scalar grids "
                                    "only; choose state variables on such a grid")
    rank = int(bmi.get_grid_rank(grid_id))
    if not 1 <= rank <= 3:
        raise ModelError(component, f"{where} has rank {rank}; twin grids have 1 to 3 axes")
    shape = np.asarray(bmi.get_grid_shape(grid_id, np.zeros(rank, dtype=np.int64)), dtype=np.int64).ravel()
    spacing = np.asarray(bmi.get_grid_spacing(grid_id, np.zeros(rank)), dtype=float).ravel()
    origin = np.asarray(bmi.get_grid_origin(grid_id, np.zeros(rank)), dtype=float).ravel()
    if shape.size != rank or spacing.size != rank or origin.size != rank:
        raise ModelError(component, f"{where} of rank {rank} reports shape {shape.tolist()}, spacing "
                                    f"{spacing.tolist()} and origin {origin.tolist()}: one value per axis expected")
    if np.any(shape < 2) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or \
            not np.all(np.isfinite(origin)):
        raise ModelError(component, f"{where}: shape {shape.tolist()} needs at least 2 nodes per axis and "
                                    f"spacing {spacing.tolist()} must be positive")
    if int(np.prod(shape)) != int(bmi.get_grid_size(grid_id)):
        raise ModelError(component, f"{where}: shape {shape.tolist()} has {int(np.prod(shape))} nodes but "
                                    f"get_grid_size says {bmi.get_grid_size(grid_id)}")
    # BMI gives axes rows first (z, y, x); twin's grids x first, with the same row-major value layout
    extent = tuple((float(o), float(o + (n - 1) * h)) for n, h, o in zip(shape[::-1], spacing[::-1], origin[::-1]))
    return tuple(int(n) for n in shape[::-1]), extent, "node"


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
    """

    time_units = "s"

    def __init__(self, name: str, comm, *, bmi_class: str, config_file: str, state: Sequence[str], time_step: float,
                 bmi_time_units: str | None = None, length_units: str = "m", shape: Sequence[int] | None = None,
                 max_instances: int = 128):
        super().__init__(name, comm)
        self.cls_path = bmi_class
        self.config_file = str(config_file)
        self._cls = load_class(bmi_class, name)
        self.variables = tuple(state)
        self.length_units = length_units
        self.max_instances = max(1, int(max_instances))
        #: instances of the BMI model not in use, with their clocks (seconds)
        self._pool: list[tuple[float, Any]] = []
        bmi = self._initialize()
        try:
            self.component = self._call(bmi, "get_component_name", None)
            self._to_seconds = self._time_factor(bmi, bmi_time_units)
            self.start_time = float(bmi.get_start_time()) * self._to_seconds
            end = bmi.get_end_time()
            self.end_time = float(end) * self._to_seconds if end is not None and np.isfinite(float(end)) else np.inf
            self._check_variables(bmi)
            self.grid_id = int(bmi.get_var_grid(self.variables[0]))
            gshape, extent, centering = bmi_grid(bmi, self.grid_id, name, self._what())
            if shape is not None and tuple(shape) != tuple(gshape[::-1]) and not (centering == "cell" and
                                                                                   list(shape) == [1]):
                raise ModelError(name, f"{self._what()}: its grid has shape {list(gshape[::-1])} (rows first), the "
                                       f"section says shape: {list(shape)}; correct or remove 'shape'")
            self.n_points = int(np.prod(gshape))
            self.grid = Grid(comm, gshape, extent, dof=len(self.variables), stencil_width=0, centering=centering,
                             name=name)
            self.state_names = self.variables
            self.state_units = tuple(str(bmi.get_var_units(v)) for v in self.variables)
            self._dtypes = {v: np.dtype(str(bmi.get_var_type(v))) for v in self.variables}
            step = float(bmi.get_time_step()) * self._to_seconds
            if not (np.isfinite(time_step) and time_step > 0):
                raise ModelError(name, f"time_step must be positive, got {time_step} s")
            if np.isfinite(step) and step > 0:
                ratio = time_step / step
                if abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio) or round(ratio) < 1:
                    raise ModelError(name, f"time_step {time_step:g} s is not a whole multiple of the step of "
                                           f"{self._what()} ({step:g} s, set in {self.config_file}); make it one")
            self.dt = float(time_step)
            self._check_sizes(bmi, self.start_time)
            self._initial = self._values(bmi, self.start_time)
        except BaseException:
            self._finalize(bmi)
            raise
        self._pool.append((self.start_time, bmi))

    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "BmiModel":
        """Build from a :class:`~twin.kinds.bmi.config.BmiConfig` (its ``solver:`` options are not used: a BMI model
        has no PETSc solver)."""
        return cls(name, comm, bmi_class=cfg.bmi_class, config_file=cfg.config_file, state=cfg.state,
                   time_step=cfg.fixed_step(), bmi_time_units=cfg.bmi_time_units, length_units=cfg.length_units,
                   shape=cfg.shape, max_instances=cfg.max_instances)

    # -- talking to the BMI model ----------------------------------------------------------------------------------
    def _what(self) -> str:
        component = getattr(self, "component", None)
        return f"BMI model {component!r} ({self.cls_path})" if component else f"BMI model {self.cls_path}"

    def _call(self, bmi, method: str, t: float | None, *args):
        """``bmi.method(*args)``; an exception becomes a ``ModelError`` (``t`` None: building) or ``SolverError``."""
        try:
            return getattr(bmi, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a third-party model may raise anything: name it and say what
            shown = ", ".join(repr(a) if not isinstance(a, np.ndarray) else f"<{a.size} values>" for a in args)
            text = f"{self._what()}: {method}({shown}) raised {type(exc).__name__}: {str(exc).strip()[:300]}"
            if t is None:
                raise ModelError(self.name, text) from None
            raise SolverError(self.name, t, text, hint=f"check the model's configuration file {self.config_file}") \
                from None

    def _initialize(self):
        try:
            bmi = self._cls()
        except Exception as exc:  # noqa: BLE001
            raise ModelError(self.name, f"{self.cls_path}() raised {type(exc).__name__}: {exc}") from None
        self._call(bmi, "initialize", None, self.config_file)
        return bmi

    def _time_factor(self, bmi, override: str | None) -> float:
        units = override or str(bmi.get_time_units() or "").strip()
        aliases = {"d": "day", "days": "day", "years": "year", "yr": "year", "hours": "hour", "seconds": "s",
                   "sec": "s", "minutes": "minute", "min": "minute"}
        try:
            return float(convert(1.0, aliases.get(units, units), "s"))
        except ValueError:
            raise ModelError(self.name, f"{self._what()} counts time in {units!r}, which twin cannot convert to "
                                        "seconds; give bmi_time_units (e.g. day) in its section") from None

    def _check_variables(self, bmi) -> None:
        inputs = set(bmi.get_input_var_names())
        outputs = set(bmi.get_output_var_names())
        for v in self.variables:
            lacks = [k for k, names in (("an input", inputs), ("an output", outputs)) if v not in names]
            if lacks:
                known = sorted(inputs & outputs)
                raise ModelError(self.name, f"{self._what()}: state variable {v!r} is not {' nor '.join(lacks)} "
                                            f"variable (the state is set and read back; variables that are both: "
                                            f"{', '.join(known[:10]) or 'none'})")
            kind = np.dtype(str(bmi.get_var_type(v))).kind
            if kind != "f":
                raise ModelError(self.name, f"{self._what()}: state variable {v!r} has type "
                                            f"{bmi.get_var_type(v)}; the state is floating point")
        grids = {v: int(bmi.get_var_grid(v)) for v in self.variables}
        if len(set(grids.values())) > 1:
            raise ModelError(self.name, f"{self._what()}: the state variables lie on different grids ({grids}); "
                                        "choose variables of one grid")

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

    def _check_sizes(self, bmi, t: float) -> None:
        for v in self.variables:
            size = int(bmi.get_var_nbytes(v)) // max(1, int(bmi.get_var_itemsize(v)))
            if size != self.n_points:
                raise SolverError(self.name, t, f"{self._what()}: variable {v!r} has {size} values, its grid "
                                                f"{self.grid_id} has {self.n_points} points")

    def _values(self, bmi, t: float) -> np.ndarray:
        """The state variables as one natural-order array ``(points, dof)``; refuses wrong sizes and non-finite
        values, naming the variable. (Sizes and types are checked when an instance is made: asking a model for them
        costs as much as the values, e.g. landlab's.)"""
        out = np.empty((self.n_points, len(self.variables)))
        for j, v in enumerate(self.variables):
            dest = np.empty(self.n_points, dtype=self._dtypes[v])
            got = self._call(bmi, "get_value", t, v, dest)
            got = dest if got is None else np.asarray(got)
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
        for j, v in enumerate(self.variables):
            self._call(bmi, "set_value", t, v, np.ascontiguousarray(whole[:, j], dtype=self._dtypes[v]))

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
        except Exception as exc:  # noqa: BLE001 - a model failing to clean up must not hide the run's result
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
        super().destroy()
