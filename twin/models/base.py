"""The model contract: what every component, and every coupled model, presents to the rest of twin.

A model owns a :class:`~twin.core.grid.Grid` and PETSc objects on a communicator it is given; it never decides where
it runs. Assimilation, coupling, I/O and workflows only use the methods below, so "tumour + tissue mechanics" is handled
exactly like "tumour alone".

State vectors are PETSc global vectors on ``model.grid`` (``dof`` unknowns per point). Time is in the model's time
units (declared in ``time_units``). Parameters are named; a parameter is a scalar (a Python float) or a field (a
global vector on the model grid); any may be *estimable*, which puts it into the control vector of assimilation in the
space given by its ``transform`` (``"log"`` for positive quantities, ``"logit"`` for values in (0, 1)).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.petsc import clear_options, reason_name

#: prefix of the names with which a coupled model's adjoint asks a component for the sensitivity to an imported field
#: (``"import:<field>"``, :meth:`Model.adjoint` and :meth:`Model.export_adjoint`)
IMPORT_PREFIX = "import:"
#: relative round-off under which a window counts as a whole number of steps (:meth:`Model.fixed_steps`)
STEP_ROUNDOFF = 1e-12


@dataclass
class Parameter:
    """A named model parameter.

    Attributes
    ----------
    name : str
    value : float or PETSc.Vec
        Scalar value, or a global vector on the model grid for a field.
    units : str
        Units of ``value`` (the model's internal units).
    estimable : bool
        Whether assimilation may update it.
    transform : {"none", "log", "logit"}
        Space in which assimilation updates it (keeps bounds: positivity, (0, 1)).
    prior : Any
        The prior as given in the configuration (a typed config object), or ``None``.
    """

    name: str
    value: Any
    units: str = "1"
    estimable: bool = False
    transform: str = "none"
    prior: Any = None

    @property
    def is_field(self) -> bool:
        return isinstance(self.value, PETSc.Vec)


@dataclass
class Tape:
    """What :meth:`Model.adjoint_recorded` needs to run the adjoint of one recorded :meth:`Model.record` window.

    The default recording (models without their own) keeps a copy of the state at ``t0`` and lets the adjoint
    recompute the forward; TS-based models keep instead the TS that ran the window with its trajectory (``data``)
    and give a ``release`` callback that returns it to their pool. A tape is used once: :meth:`free` (called by
    :meth:`Model.adjoint_recorded`, or by whoever drops an unused tape) destroys what it holds; calling it again
    does nothing.

    Attributes
    ----------
    t0, t1 : float
        The recorded window, model time units.
    state0 : PETSc.Vec or None
        Copy of the state at ``t0`` (owned by the tape) when the model needs it.
    data : Any
        Model-specific record (TS objects, segment start states, step counts ...).
    release : callable or None
        ``release(tape)`` frees ``data``.
    """

    t0: float
    t1: float
    state0: PETSc.Vec | None = None
    data: Any = None
    release: Callable[["Tape"], None] | None = None

    @property
    def alive(self) -> bool:
        """Whether the tape still holds its record (not yet used or freed)."""
        return self.state0 is not None or self.data is not None

    def free(self) -> None:
        """Destroy what the tape holds (idempotent)."""
        release, self.release = self.release, None
        try:
            if release is not None:
                release(self)
        finally:
            if self.state0 is not None:
                self.state0.destroy()
            self.state0 = None
            self.data = None


def solve_adjoint(ts: PETSc.TS, component: str) -> None:
    """Run ``ts.adjointSolve()`` and raise :class:`SolverError` unless the adjoint reached the window's start.

    A TS created with ``setErrorIfStepFails(False)`` (as the implicit models do, so that a failed forward step is
    reported with the model's words) also lets a failed *adjoint* step pass silently: ``adjointSolve`` returns after
    the failed step with a negative converged reason, a partial gradient and a trajectory that was not traversed. At
    a 4D-Var trial point with extreme parameters the transposed linear solve can fail where the forward succeeded
    (GMRES stagnating on a stiff ``shift I - J``): that gradient must count as a failed trial point, and the TS must
    not go back to its pool (its trajectory stack is not empty; PETSc 3.18 then refuses the next forward solve with
    "Illegal modification of a non-top stack element").
    """
    try:
        ts.adjointSolve()
    except PETSc.Error as exc:
        raise SolverError(component, ts.getTime(), "adjoint solve failed", _petsc_error(exc)) from None
    reason = ts.getConvergedReason()
    if reason < 0:
        ksp = ts.getSNES().getKSP()
        detail = (f"linear solve {reason_name(PETSc.KSP.ConvergedReason, ksp.getConvergedReason())} after "
                  f"{ksp.getIterationNumber()} iterations (TS reason {reason})")
        prefix = ts.getOptionsPrefix() or ""
        raise SolverError(component, ts.getTime(), f"adjoint solve failed: {detail}",
                          f"if the parameters are reasonable, tune -{prefix}ksp_max_it or -{prefix}pc_type")


class TSPool:
    """TS objects with trajectory saving, created once per model and reused by successive recordings.

    A recording takes a TS (:meth:`acquire`: from the pool, or new from ``factory`` when all are in use, e.g. one per
    observation interval of a 4D-Var window), saves the trajectory of one solve in it, and gives it back after the
    adjoint (:meth:`release`); building a TS (``setFromOptions``, work vectors) costs as much as a short forward run
    of a small model. A trajectory that the adjoint traversed to its start (:meth:`mark_traversed`) is empty and the
    TS's next solve refills it; a TS whose trajectory was not traversed (a tape dropped unused, a failed solve or
    adjoint) is destroyed on release.

    Parameters
    ----------
    factory : callable
        ``factory() -> PETSc.TS``, configured (callbacks, options prefix, trajectory saving, ``setFromOptions``).
        Pooled TS objects may hold trajectories at the same time: they must not share matrices that an implicit
        method modifies in place (``shift I - J``).
    discard : callable, optional
        ``discard(ts)``, called before a TS is destroyed, frees what the factory made for it alone.
    """

    def __init__(self, factory: Callable[[], PETSc.TS], discard: Callable[[PETSc.TS], None] | None = None):
        self._factory = factory
        self._discard = discard
        self._free: list[PETSc.TS] = []
        self._busy: list[PETSc.TS] = []
        self._traversed: list[PETSc.TS] = []
        self._capacity: dict[int, int] = {}
        #: number of TS objects created so far (a test counts these)
        self.created = 0

    def acquire(self, max_steps: int) -> PETSc.TS:
        """A TS whose trajectory is empty and holds up to ``max_steps`` steps.

        PETSc sizes a memory trajectory once, from the TS's maximum number of steps at its first solve (a longer
        solve later overruns it), so a TS is reused only for solves of at most as many steps as its first one; the
        caller must set ``max_steps`` as the TS's maximum number of steps before solving.
        """
        fits = [ts for ts in self._free if self._capacity[ts.handle] >= max_steps]
        if fits:
            ts = min(fits, key=lambda t: self._capacity[t.handle])
            self._free = [t for t in self._free if t is not ts]
        else:
            ts = self._factory()
            self._capacity[ts.handle] = int(max_steps)
            self.created += 1
        # a no-op when the factory saved the trajectory already
        ts.setSaveTrajectory()
        self._busy.append(ts)
        return ts

    def mark_traversed(self, ts: PETSc.TS) -> None:
        """Note that the adjoint of ``ts`` ran back over its whole trajectory."""
        self._traversed.append(ts)

    def release(self, ts: PETSc.TS) -> None:
        """Return ``ts`` to the pool; one whose trajectory the adjoint did not traverse is destroyed instead."""
        traversed = any(t is ts for t in self._traversed)
        self._traversed = [t for t in self._traversed if t is not ts]
        self._busy = [b for b in self._busy if b is not ts]
        if traversed:
            self._free.append(ts)
        else:
            # A dropped tape or a failed solve leaves a partial trajectory and possibly a diverged TS; reusing such a
            # TS crashed in PETSc 3.18 (segmentation fault in the next solve), so it is replaced.
            self._destroy(ts)

    def _destroy(self, ts: PETSc.TS) -> None:
        self._capacity.pop(ts.handle, None)
        if self._discard is not None:
            self._discard(ts)
        ts.destroy()

    def destroy(self) -> None:
        for ts in self._free + self._busy:
            self._destroy(ts)
        self._free, self._busy, self._traversed = [], [], []


def _petsc_error(exc) -> str:
    """``PETSc error <code>: <PETSc's own words>`` for a PETSc error raised inside a solve (a solver package PETSc
    does not have, a matrix in the wrong state), which the code alone (``PETSc error 92``) does not say."""
    from twin.core.petsc import petsc_reason

    reason = petsc_reason(exc)
    return f"PETSc error {exc.ierr}" + ("" if reason.startswith("PETSc error code") else f": {reason}")


@dataclass
class QoI:
    """A scalar quantity of interest with its units and a human-readable name."""

    value: float
    units: str = "1"
    long_name: str = ""


class Model(ABC):
    """Base class of all models.

    Subclasses set ``self.grid``, ``self.parameters`` and implement :meth:`initial_state` and :meth:`advance`.
    Models with adjoints implement :meth:`adjoint`; those whose adjoint needs the forward trajectory also implement
    :meth:`record` (advance and keep the trajectory, e.g. the TS that ran the window, from a :class:`TSPool`) and
    :meth:`adjoint_recorded` (the adjoint over a recorded window), so that 4D-Var gradients cost one forward and one
    backward pass. The defaults of these two fall back on :meth:`advance` and :meth:`adjoint` (forward run twice).
    Models on a PETSc TS with a time step :attr:`dt` run it with :meth:`run_fixed` (or :meth:`run_ts` where the
    step may adapt), which count the steps of a window and report a failed solve the same way for every model.
    Models whose members are cheap enough that a solver object per member dominates may also implement
    :meth:`advance_ensemble` (many members at once, bitwise :meth:`advance`'s numbers).

    Parameters
    ----------
    name : str
        Component name (from the YAML ``models:`` key); also the PETSc options prefix ``name_``.
    comm : mpi4py communicator
        Where the model runs.
    """

    #: registry key (``type:`` in YAML)
    type_name: str = ""
    #: names of the state's components (length ``grid.dof``), used for output variable names
    state_names: tuple[str, ...] = ("u",)
    #: units of each state component
    state_units: tuple[str, ...] = ("1",)
    #: units of time for t0/t1 passed to advance
    time_units: str = "s"
    #: units of the grid's coordinates
    length_units: str = "m"
    #: the time step of a time-stepping model (its time units), set by the model; see :meth:`fixed_steps`
    dt: float
    #: whether :meth:`advance` carries the state it is given forward in time (an initial-value problem). ``False``
    #: for a model that recomputes its state from its inputs and parameters at every step (a static solve, whose state
    #: is a diagnostic of them): a campaign then perturbs no initial state of it
    #: (:func:`twin.campaign.context.background_spread`)
    prognostic: bool = True

    def __init__(self, name: str, comm):
        self.name = name
        self.comm = comm
        self.grid: Grid
        self.parameters: dict[str, Parameter] = {}
        self.imports: dict[str, PETSc.Vec] = {}

    @property
    def options_prefix(self) -> str:
        """PETSc options prefix for this component's solvers (``-<name>_ts_type`` etc.)."""
        return f"{self.name}_"

    # -- state ----------------------------------------------------------------------------------------------------
    def create_state(self) -> PETSc.Vec:
        """A new (zeroed) state vector."""
        v = self.grid.create_global()
        v.set(0.0)
        return v

    @abstractmethod
    def initial_state(self) -> PETSc.Vec:
        """The initial condition from the configuration, as a new vector."""

    @abstractmethod
    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        """Advance ``state`` in place from ``t0`` to ``t1``.

        Raises
        ------
        SolverError
            If the solve diverges; names the component, time and PETSc's reason.
        """

    def advance_ensemble(self, states: np.ndarray, parameters: Sequence[Mapping[str, Any]], t0: float,
                         t1: float) -> np.ndarray | None:
        """Optional: advance several members at once from ``t0`` to ``t1`` without a solver object per member (a
        batched forecast, for small ensembles of small models whose per-member TS overhead outweighs the
        arithmetic). Not collective: every rank that calls it computes whole states.

        A model that implements it must give :meth:`advance`'s numbers **bitwise** (the same integrator, with the
        same operations in the same order), because the campaigns use it only where a member's state is whole on
        one rank (:func:`twin.campaign.steps.batched_forecast`) and :meth:`advance` elsewhere, and the analysis
        must not depend on the layout or the mode.

        Parameters
        ----------
        states : ndarray of shape (members, n)
            Whole states in natural order (one row per member, as :meth:`Grid.allgather` gives them, flattened).
            Not modified.
        parameters : sequence of mappings
            One per member: physical values of the parameters the member carries (floats for scalars, whole
            fields in natural order); a parameter a member does not carry keeps the model's value. The model's own
            parameters are not changed.
        t0, t1 : float
            The window, model time units.

        Returns
        -------
        ndarray of shape (members, n) or None
            The states at ``t1``; a member whose integration blew up has non-finite entries in its row (the caller
            runs it through :meth:`advance`, which reports the failure). ``None`` (this default): the model has no
            batched forecast.

        Raises
        ------
        ModelError
            If the window is invalid for the model (as :meth:`advance` would).
        """
        return None

    @classmethod
    def has_adjoint(cls) -> bool:
        """Whether the model type gives :meth:`adjoint` (4D-Var needs it); the contract's own raises."""
        return cls.adjoint is not Model.adjoint

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint of :meth:`advance` over ``[t0, t1]``.

        On entry ``lam`` holds dJ/dx(t1); on exit dJ/dx(t0) (in place). ``state0`` is the state at ``t0`` (not
        modified; the forward trajectory is recomputed as needed). Returns dJ/dp over the window for each requested
        parameter: a float for scalars, a global vector for fields (derivative with respect to the parameter's value,
        not its transform).

        ``parameters`` may also contain ``"import:<field>"`` for an imported coupling field: the entry is dJ/dg, a new
        vector on ``field_grid(field)``, for the data held constant over ``[t0, t1]`` (what a coupled model's adjoint
        needs from its components, :mod:`twin.coupling.adjoint`).
        """
        raise ModelError(self.name, f"model type '{self.type_name}' has no adjoint")

    def export_adjoint(self, state: PETSc.Vec, cotangents: dict[str, PETSc.Vec], lam: PETSc.Vec,
                       parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Transpose of the derivative of :meth:`exports` at ``state`` (and the current imports).

        Adds ``sum_e (de/dx)^T cotangents[e]`` to ``lam`` in place and returns ``sum_e (de/dp)^T cotangents[e]`` for
        each requested name (parameters and ``"import:<field>"``). Needed of a component whose exports feed another
        component in a coupled model that is differentiated (4D-Var through coupling).
        """
        raise ModelError(self.name, f"model type '{self.type_name}' has no export adjoint (needed to differentiate "
                                    "a coupled model through its exports)")

    def record(self, state: PETSc.Vec, t0: float, t1: float, parameters: Sequence[str] = ()) -> Tape:
        """Advance ``state`` in place from ``t0`` to ``t1`` like :meth:`advance`, keeping what the adjoint needs.

        ``parameters`` names the parameter gradients the adjoint will be asked for (a hint: a model may set up its
        adjoint for them; asked for others, it must still answer, e.g. by recording again).
        The returned tape goes to :meth:`adjoint_recorded` (once) or is dropped with :meth:`Tape.free`. This default
        keeps a copy of the state at ``t0``, so its adjoint recomputes the forward (:meth:`adjoint`); TS-based models
        override it to keep the trajectory of this very run, so that a gradient costs one forward and one backward
        pass.
        """
        tape = Tape(float(t0), float(t1), state0=state.copy())
        try:
            self.advance(state, t0, t1)
        except BaseException:
            tape.free()
            raise
        return tape

    def adjoint_by_recording(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                             parameters: Sequence[str] = ()) -> dict[str, Any]:
        """:meth:`adjoint` for a model with a recording of its own: records a run from a copy of ``state0`` with
        this class's :meth:`record` and runs its :meth:`adjoint_recorded` (the class's methods, whatever an instance
        does to them, so that the two paths cannot drift apart). Call it after validating the arguments."""
        x = state0.copy()
        try:
            tape = type(self).record(self, x, t0, t1, parameters)
        finally:
            x.destroy()
        return type(self).adjoint_recorded(self, tape, lam, parameters)

    def adjoint_recorded(self, tape: Tape, lam: PETSc.Vec, parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint of the window recorded in ``tape`` (see :meth:`adjoint` for ``lam`` and the result).

        Consumes the tape (frees it, also on error). This default calls :meth:`adjoint` on the recorded start state.
        """
        if not tape.alive:
            raise ModelError(self.name, f"the tape of [{tape.t0:g}, {tape.t1:g}] was already used or freed; record "
                                        "the window again")
        try:
            return self.adjoint(tape.state0, tape.t0, tape.t1, lam, parameters)
        finally:
            tape.free()

    # -- time stepping ---------------------------------------------------------------------------------------------
    def fixed_steps(self, t0: float, t1: float) -> tuple[int, float]:
        """The steps of a window ``[t0, t1]``: ``n`` equal steps of ``(t1 - t0) / n``, the fewest not longer than
        :attr:`dt` (at least one; a window longer than whole steps by round-off, :data:`STEP_ROUNDOFF`, takes no
        extra step).

        Raises
        ------
        ModelError
            Unless ``t0`` and ``t1`` are finite and ``t1 >= t0``.
        """
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 < t0:
            raise ModelError(self.name, f"cannot advance from t={t0} to t={t1}: need finite t1 >= t0")
        n = max(1, int(np.ceil((t1 - t0) / self.dt * (1.0 - STEP_ROUNDOFF))))
        return n, (t1 - t0) / n

    def run_fixed(self, ts: PETSc.TS, state: PETSc.Vec, t0: float, t1: float,
                  hint: str | Callable[[], str] = "") -> None:
        """Advance ``state`` in place from ``t0`` to ``t1`` with ``ts`` in the steps of :meth:`fixed_steps`
        (:meth:`run_ts`)."""
        n, dt = self.fixed_steps(t0, t1)
        self.run_ts(ts, state, t0, t1, n, dt, hint)

    def run_ts(self, ts: PETSc.TS, state: PETSc.Vec, t0: float, t1: float, max_steps: int, dt: float,
               hint: str | Callable[[], str] = "") -> None:
        """Advance ``state`` in place from ``t0`` to ``t1`` with ``ts``, starting with the step ``dt`` and taking at
        most ``max_steps`` steps (exactly ``max_steps`` of ``dt`` unless the TS adapts its step).

        Raises
        ------
        SolverError
            If the solve raises a PETSc error or ends with a negative converged reason (a TS created with
            ``setErrorIfStepFails(False)`` reports a failed step so): names the time and :meth:`ts_reason`, with
            ``hint`` (or what ``hint()`` returns, for a cause known only after the solve, e.g. from a post-step
            check) as what to change.
        """
        ts.setTime(t0)
        ts.setStepNumber(0)
        ts.setTimeStep(dt)
        ts.setMaxTime(t1)
        ts.setMaxSteps(max_steps)
        try:
            ts.solve(state)
        except PETSc.Error as exc:
            raise SolverError(self.name, ts.getTime(), self.ts_reason(ts), _petsc_error(exc),
                              units=self.time_units) from None
        if ts.getConvergedReason() < 0:
            raise SolverError(self.name, ts.getTime(), self.ts_reason(ts), hint() if callable(hint) else hint,
                              units=self.time_units)

    def ts_reason(self, ts: PETSc.TS) -> str:
        """PETSc's reason for a failed solve of ``ts`` as :meth:`run_ts` reports it: the TS's converged reason."""
        return reason_name(PETSc.TS.ConvergedReason, ts.getConvergedReason())

    # -- parameters ------------------------------------------------------------------------------------------------
    def estimable(self) -> list[Parameter]:
        return [p for p in self.parameters.values() if p.estimable]

    def get_parameter(self, name: str) -> Any:
        try:
            return self.parameters[name].value
        except KeyError:
            raise ModelError(self.name, f"unknown parameter '{name}'; known: {sorted(self.parameters)}") from None

    def set_parameter(self, name: str, value: Any) -> None:
        """Set a parameter (a float, or for fields a vector/array of the owned block). Subclasses may validate."""
        p = self.parameters.get(name)
        if p is None:
            raise ModelError(self.name, f"unknown parameter '{name}'; known: {sorted(self.parameters)}")
        if p.is_field:
            if isinstance(value, PETSc.Vec):
                value.copy(p.value)
            else:
                p.value.getArray()[...] = np.asarray(value).ravel()
        else:
            p.value = float(value)
        self.parameters_changed([name])

    def parameters_changed(self, names: Sequence[str]) -> None:
        """Hook: called after parameters change (rebuild cached operators). Default: nothing."""

    # -- coupling -------------------------------------------------------------------------------------------------
    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """Named fields this model offers to a coupler (vectors on its grid). Default: none."""
        return {}

    def parameter_grid(self, name: str) -> Grid:
        """The grid field parameter ``name`` lives on, one value per point (default: the state grid; a model whose
        state grid has several components per point and field parameters overrides this)."""
        return self.grid

    def field_grid(self, name: str) -> Grid:
        """The grid an exported or imported field lives on (default: the state grid; face data may differ)."""
        return self.grid

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        """Receive a field from the coupler (already mapped to this grid)."""
        self.imports[name] = value

    # -- outputs ----------------------------------------------------------------------------------------------------
    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        """Quantities of interest at time ``t``. Collective. Default: none."""
        return {}

    def destroy(self) -> None:
        """Destroy the PETSc objects this model owns (and forget its YAML solver options)."""
        clear_options(self.options_prefix)
        for p in self.parameters.values():
            if p.is_field:
                p.value.destroy()
        self.grid.destroy()
