"""The rotating shallow-water atmosphere model on a doubly periodic f- or beta-plane (``type: shallow_water``).

Equations, symbols and units: see :mod:`twin.kinds.shallow_water.kernel` (Sadourny energy-conserving C-grid scheme,
flux-form continuity and tracer). State per cell: ``h`` [m], ``u`` [m/s], ``v`` [m/s] and, with a tracer, the tracer
column amount ``phi = h c`` [m] (``c`` the dimensionless concentration); time in seconds.

The right-hand side is the compiled kernel of :mod:`.compiled` (one pass over the owned block, the ghost layer by
a scatter of its strips), tested equal to the NumPy reference :func:`~twin.kinds.shallow_water.kernel.tendency`.
Time stepping is a PETSc TS under the options prefix ``<name>_``: explicit classical RK4 with a fixed step by
default (``-<name>_ts_type``, ``-<name>_ts_rk_type``, ``-<name>_ts_dt``, ``-<name>_ts_adapt_type`` change it). A
fixed step larger than the stable limit of the chosen method (:mod:`.stability`) is refused with the limit named.
The RHS Jacobian and the parameter Jacobian ``dF/dp`` make PETSc's TSAdjoint give the discrete adjoint with respect to
the initial state and to ``gravity, f0, beta, drag, forcing_amplitude``: the adjoint TS uses shell matrices whose
transposed products are the reverse-mode sweep of the kernel (:mod:`.reverse`, ~2 RHS evaluations per stage); the
assembled Jacobians (:mod:`.jacobian`, exact by forward mode) check it. :meth:`ShallowWater.record` runs a window on
a pooled TS that keeps its trajectory, which :meth:`ShallowWater.adjoint_recorded` integrates back over.

Coupling: exports ``velocity``, the wind ``(u, v)`` [m/s] averaged from the C-grid faces to the cell centres
(``u_c[j, i] = (u[j, i] + u[j, i+1]) / 2``, ``v_c[j, i] = (v[j, i] + v[j+1, i]) / 2``, second order), on a dof-2
grid with the model's decomposition (:meth:`ShallowWater.field_grid`); a coupler samples it where it is needed,
e.g. at a structure's site.

On a doubly periodic domain a beta-plane ``f = f0 + beta (y - y_mid)`` jumps at the southern edge; keep ``beta``
small or zero there (a walled beta-channel is not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.core.petsc import (
    set_default_options,
    set_from_options,
    set_options,
    trajectory_in_memory,
)
from twin.kinds.shallow_water import qoi as qoi_mod
from twin.kinds.shallow_water.compiled import CompiledTendency
from twin.kinds.shallow_water.initial import Physics, gaussian_blob, make_initial
from twin.kinds.shallow_water.jacobian import PARAMETER_NAMES, JacobianAssembler
from twin.kinds.shallow_water.kernel import Geometry
from twin.kinds.shallow_water.reverse import ShellJacobians
from twin.kinds.shallow_water.stability import (
    imaginary_stability_limit,
    max_frequency,
    stable_dt,
)
from twin.kinds.shallow_water.staggering import COMPONENTS, UNITS, coordinates
from twin.kinds.shallow_water.tangent import TangentLinear, fixed_step_options
from twin.models.base import Model, Parameter, QoI, Tape, TSPool, solve_adjoint
from twin.models.registry import register_model

log = get_logger("twin.kinds.shallow_water")

#: units of the scalar parameters, and the space assimilation updates them in when estimable
PARAMETER_UNITS = {"gravity": "m/s^2", "f0": "1/s", "beta": "1/(m*s)", "drag": "1/s", "forcing_amplitude": "m/s^2"}
PARAMETER_TRANSFORMS = {"gravity": "log", "f0": "none", "beta": "none", "drag": "log", "forcing_amplitude": "none"}
DEFAULT_PARAMETERS = {"gravity": 9.81, "f0": 1.0e-4, "beta": 0.0, "drag": 0.0, "forcing_amplitude": 0.0}


@dataclass(frozen=True)
class Bump:
    """A Gaussian ``background + amplitude exp(-d^2 / radius^2)`` around ``center`` (periodic distance ``d``), for
    the topography [m] and the tracer concentration [1]; ``center`` and ``radius`` in metres."""

    center: tuple[float, float]
    radius: float
    amplitude: float
    background: float = 0.0


@register_model("shallow_water")
class ShallowWater(Model):
    """Rotating shallow water on a PETSc DMDA (Arakawa C-grid), explicit PETSc TS, exact discrete adjoint.

    Parameters
    ----------
    name : str
        Component name; PETSc options prefix ``<name>_``.
    comm : mpi4py communicator
        Where the model runs.
    shape : (int, int)
        Cells along x and y (at least 3 each).
    extent : ((float, float), (float, float))
        Domain ``[x0, x1] x [y0, y1]`` [m]; doubly periodic.
    dt : float
        Fixed time step [s] (``-<name>_ts_dt`` overrides).
    mean_depth : float
        Mean free-surface height ``H`` [m] used by the initial conditions.
    parameters : mapping
        Values (floats) or :class:`~twin.models.base.Parameter` objects for ``gravity`` [m/s^2], ``f0`` [1/s],
        ``beta`` [1/(m s)], ``drag`` [1/s], ``forcing_amplitude`` [m/s^2]; missing ones take
        :data:`DEFAULT_PARAMETERS`.
    initial : (str, dict)
        Initial condition name and options (:mod:`.initial`).
    tracer : Bump, optional
        Carry a passive tracer with this initial concentration.
    topography : Bump, optional
        Bottom topography ``b`` [m].
    forcing_wavenumber : int
        The zonal momentum forcing is ``forcing_amplitude * cos(2 pi k (y - y0) / Ly)``.
    sites : mapping of str to (float, float), optional
        Named points [m] whose surface height (and tracer concentration) are quantities of interest.
    threshold : float, optional
        Surface height [m]; the area above it is a quantity of interest.
    check_cfl : bool
        Refuse fixed steps above the stable limit (switch off only to study instability).
    """

    time_units = "s"

    def __init__(self, name: str, comm, shape: Sequence[int], extent, *, dt: float, mean_depth: float,
                 parameters: Mapping[str, Any] | None = None, initial: tuple[str, dict] = ("balanced_turbulence", {}),
                 tracer: Bump | None = None, topography: Bump | None = None, forcing_wavenumber: int = 1,
                 sites: Mapping[str, Sequence[float]] | None = None, threshold: float | None = None,
                 check_cfl: bool = True, proc_sizes: Sequence[int] | None = None):
        super().__init__(name, comm)
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 3:
            raise ModelError(name, f"shallow_water needs a 2-D grid with at least 3 cells per axis, got {shape}")
        if not (np.isfinite(dt) and dt > 0):
            raise ModelError(name, f"time step must be positive, got dt={dt}")
        if not mean_depth > 0:
            raise ModelError(name, f"mean depth must be positive, got {mean_depth} m")
        self.state_names = COMPONENTS[:4 if tracer is not None else 3]
        self.state_units = UNITS[:len(self.state_names)]
        self.grid = Grid(comm, shape, extent, dof=len(self.state_names), stencil_width=1, periodic=True,
                         stencil="box", proc_sizes=proc_sizes, name=name)
        self.mean_depth = float(mean_depth)
        self.dt = float(dt)
        self.check_cfl = bool(check_cfl)
        self.sites = {k: (float(p[0]), float(p[1])) for k, p in (sites or {}).items()}
        self.threshold = threshold
        unknown = sorted(set(parameters or {}) - set(PARAMETER_UNITS))
        if unknown:
            raise ModelError(name, f"unknown parameter(s) {unknown}; known: {sorted(PARAMETER_UNITS)}")
        for key, default in DEFAULT_PARAMETERS.items():
            given = (parameters or {}).get(key, default)
            if not isinstance(given, Parameter):
                given = Parameter(key, float(given), PARAMETER_UNITS[key], transform=PARAMETER_TRANSFORMS[key])
            self.parameters[key] = given
        self._check_parameters()
        self._initial_spec = (initial[0], dict(initial[1]))
        self._tracer = tracer
        self._sources: Callable[[float], list[np.ndarray]] | None = None
        self.geometry = self._geometry(topography, int(forcing_wavenumber))
        self._tendency = CompiledTendency(self.grid, self.geometry)
        self._xloc = self.grid.create_local()
        self._sol = self.grid.create_global()
        self._assembler: JacobianAssembler | None = None
        self._shell: ShellJacobians | None = None
        self._J: PETSc.Mat | None = None
        self._Jp: PETSc.Mat | None = None
        self._failure: str | None = None
        self._tlm: TangentLinear | None = None
        self._limits: dict[tuple, float] = {}
        self._velocity_grid: Grid | None = None
        set_default_options(self.options_prefix, {"ts_type": "rk", "ts_rk_type": "4", "ts_adapt_type": "none",
                                                  "ts_trajectory_type": "memory"})
        self.ts = self._create_ts()
        self.dt = self.ts.getTimeStep()
        # TS objects that save their trajectory, for record/adjoint_recorded; reused across windows and gradients.
        self._adjoint_ts = TSPool(lambda: self._create_ts(save_trajectory=True))
        self._initial = self._make_initial_state()
        self.check_time_step(self._initial, self.dt)

    # -- set-up ------------------------------------------------------------------------------------------------------
    def _check_parameters(self) -> None:
        p = {k: self.parameters[k].value for k in PARAMETER_UNITS}
        for key, v in p.items():
            if not np.isfinite(v):
                raise ModelError(self.name, f"parameter {key} must be finite, got {v}")
        if p["gravity"] <= 0:
            raise ModelError(self.name, f"gravity must be positive, got {p['gravity']} m/s^2")
        if p["drag"] < 0:
            raise ModelError(self.name, f"drag must be non-negative, got {p['drag']} 1/s")

    def parameters_changed(self, names: Sequence[str]) -> None:
        self._check_parameters()

    def _geometry(self, topography: Bump | None, wavenumber: int) -> Geometry:
        g = self.grid
        (x0, x1), (y0, y1) = g.extent
        dx, dy = g.spacing
        (_, _), (ys, ye) = g.owned
        ny_global = g.shape[1]
        rows = (ys + np.arange(ye - ys + 1)) % ny_global
        y_corner = (y0 + rows * dy - 0.5 * (y0 + y1))[:, None]
        _, yu = coordinates(g, "u")
        forcing = np.cos(2 * np.pi * wavenumber * (yu[:, :1] - y0) / (y1 - y0))
        b = self.grid.create_global()
        b.set(0.0)
        if topography is not None:
            self.grid.owned_array(b)[..., 0] = gaussian_blob(g, topography.center, topography.radius,
                                                              topography.amplitude, topography.background)
        bl = self.grid.create_local()
        self.grid.global_to_local(b, bl)
        topo = self.grid.ghosted_array(bl)[..., 0].copy()
        self.topography = b
        bl.destroy()
        return Geometry(dx=dx, dy=dy, y_corner=y_corner, forcing_shape=forcing, topography=topo)

    def _create_ts(self, save_trajectory: bool = False) -> PETSc.TS:
        ts = PETSc.TS().create(comm=self.grid.da.getComm())
        ts.setOptionsPrefix(self.options_prefix)
        ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        ts.setType(PETSc.TS.Type.RK)
        ts.setRKType("4")
        ts.setRHSFunction(self._rhs, self.grid.create_global())
        ts.setTimeStep(self.dt)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        ts.setPostStep(self._post_step)
        if save_trajectory:
            # TSAdjoint of explicit RK only multiplies the Jacobians transposed: shell matrices by reverse mode
            # (.reverse) instead of assembling them at every stage
            if self._shell is None:
                self._shell = ShellJacobians(self)
            ts.setRHSJacobian(self._shell.rhs_jacobian, self._shell.J, self._shell.J)
            ts.setRHSJacobianP(self._shell.rhs_jacobian_p, self._shell.Jp)
            ts.setSaveTrajectory()
            with fixed_step_options(self.options_prefix), trajectory_in_memory():
                set_from_options(ts)
        else:
            set_from_options(ts)
        return ts

    def _jacobians(self) -> tuple[PETSc.Mat, PETSc.Mat]:
        if self._assembler is None:
            self._assembler = JacobianAssembler(self.grid)
            self._J = self._assembler.create_matrix()
            self._Jp = self._assembler.create_parameter_matrix()
        return self._J, self._Jp

    def _make_initial_state(self) -> PETSc.Vec:
        phys = Physics(self.parameters["gravity"].value, self.parameters["f0"].value, self.parameters["beta"].value,
                       self.mean_depth)
        eta, u, v = make_initial(self._initial_spec[0], self.grid, phys, self.name, **self._initial_spec[1])
        x = self.create_state()
        a = self.grid.owned_array(x)
        a[..., 0] = eta - self.grid.owned_array(self.topography, readonly=True)[..., 0]
        a[..., 1] = u
        a[..., 2] = v
        if self._tracer is not None:
            t = self._tracer
            a[..., 3] = a[..., 0] * gaussian_blob(self.grid, t.center, t.radius, t.amplitude, t.background)
        self.check_state(x)
        return x

    # -- the contract ----------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        return self._initial.copy()

    def parameter_values(self) -> dict[str, float]:
        return {k: float(self.parameters[k].value) for k in PARAMETER_NAMES}

    def set_sources(self, sources: Callable[[float], list[np.ndarray]] | None) -> None:
        """Extra source terms: ``sources(t)`` returns ``[S_h, S_u, S_v(, S_phi)]`` on the owned block at their
        C-grid points (manufactured solutions, external forcing); ``None`` removes them."""
        self._sources = sources

    def ghosted_fields(self, X: PETSc.Vec) -> list[np.ndarray]:
        """The components of ``X`` on this rank's ghosted block, as contiguous arrays (collective)."""
        self.grid.global_to_local(X, self._xloc)
        a = self.grid.ghosted_array(self._xloc)
        return [np.ascontiguousarray(a[..., c]) for c in range(self.grid.dof)]

    def check_state(self, state: PETSc.Vec) -> None:
        """Refuse a state with non-finite values or non-positive layer thickness (collective)."""
        a = self.grid.owned_array(state, readonly=True)
        local = np.array([a[..., 0].min() if a.size else np.inf, 0.0 if np.isfinite(a).all() else 1.0])
        h_min, bad = _allreduce(self.grid, local * [1, -1], MPI.MIN) * [1, -1]
        if bad:
            raise ModelError(self.name, "state has non-finite values")
        if h_min <= 0:
            raise ModelError(self.name, f"layer thickness must be positive everywhere, min h = {h_min:g} m")

    def stable_time_step(self, state: PETSc.Vec) -> float:
        """The largest stable fixed step [s] of the configured TS method for ``state`` (``inf`` if not limited)."""
        ts_type = self.ts.getType()
        rk_type = self.ts.getRKType() if ts_type == "rk" else None
        key = (ts_type, rk_type)
        if key not in self._limits:
            self._limits[key] = imaginary_stability_limit(ts_type, rk_type)
        a = self.grid.owned_array(state, readonly=True)
        local = np.array([a[..., 0].max(), np.abs(a[..., 1]).max(), np.abs(a[..., 2]).max()])
        h_max, u_max, v_max = _allreduce(self.grid, local, MPI.MAX)
        p = self.parameter_values()
        f_max = abs(p["f0"]) + abs(p["beta"]) * 0.5 * (self.grid.extent[1][1] - self.grid.extent[1][0])
        freq = max_frequency(h_max, u_max, v_max, f_max, p["gravity"], *self.grid.spacing)
        return stable_dt(self._limits[key], freq)

    def check_time_step(self, state: PETSc.Vec, dt: float) -> None:
        """Refuse a fixed step above the stable limit, naming the limit (ModelError)."""
        if not self.check_cfl or self._adaptive():
            return
        limit = self.stable_time_step(state)
        if dt > limit:
            rk = f" {self.ts.getRKType()}" if self.ts.getType() == "rk" else ""
            raise ModelError(self.name, f"time step dt = {dt:g} s exceeds the stable limit {limit:.6g} s of "
                                        f"TS {self.ts.getType()}{rk} for gravity waves (sqrt(g h_max) with grid "
                                        f"spacing {self.grid.spacing[0]:g} x {self.grid.spacing[1]:g} m); "
                                        f"use dt <= {limit:.6g} s")

    def _adaptive(self) -> bool:
        return PETSc.Options().getString(f"{self.options_prefix}ts_adapt_type", "none") != "none"

    def _run(self, ts: PETSc.TS, x: PETSc.Vec, t0: float, t1: float, fixed: bool) -> None:
        if fixed or not self._adaptive():
            n, dt = self.fixed_steps(t0, t1)
        else:
            # an adaptive TS (ts_adapt_type set) starts from dt, at most the window, with no limit on its steps
            n, dt = 10 ** 9, min(self.dt, t1 - t0)
        log.debug("%s: TS %s from t=%g s to %g s, dt=%g s", self.name, ts.getType(), t0, t1, dt)
        self._failure = None
        self.run_ts(ts, x, t0, t1, n, dt, hint=lambda: self._failure or "")

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        if not t1 >= t0:
            raise ModelError(self.name, f"advance needs t1 >= t0, got t0={t0}, t1={t1}")
        if t1 == t0:
            return
        self.check_state(state)
        self.check_time_step(state, self.fixed_steps(t0, t1)[1])
        state.copy(self._sol)
        self._run(self.ts, self._sol, t0, t1, fixed=False)
        self._sol.copy(state)

    def _check_gradient_names(self, parameters: Sequence[str]) -> None:
        unknown = [p for p in parameters if p not in PARAMETER_NAMES]
        if unknown:
            raise ModelError(self.name, f"no gradient for parameter(s) {unknown}; available: {list(PARAMETER_NAMES)}")

    def record(self, state: PETSc.Vec, t0: float, t1: float, parameters: Sequence[str] = ()) -> Tape:
        """:meth:`advance` with fixed steps on a pooled TS that saves its trajectory; the tape holds that TS."""
        if not t1 > t0:
            raise ModelError(self.name, f"adjoint needs t1 > t0, got t0={t0}, t1={t1}")
        self.check_state(state)
        self.check_time_step(state, self.fixed_steps(t0, t1)[1])
        ts = self._adjoint_ts.acquire(self.fixed_steps(t0, t1)[0])
        try:
            state.copy(self._sol)
            self._run(ts, self._sol, t0, t1, fixed=True)
            self._sol.copy(state)
        except BaseException:
            self._adjoint_ts.release(ts)
            raise
        return Tape(float(t0), float(t1), data=(ts, ts.getStepNumber()),
                    release=lambda tape: self._adjoint_ts.release(ts))

    def adjoint_recorded(self, tape: Tape, lam: PETSc.Vec, parameters: Sequence[str] = ()) -> dict[str, float]:
        """TSAdjoint over the recorded window with the exact Jacobians: ``lam`` goes from dJ/dx(t1) to dJ/dx(t0);
        returns dJ/dp for the named scalar parameters."""
        try:
            self._check_gradient_names(parameters)
            if not tape.alive:
                raise ModelError(self.name, f"the tape of [{tape.t0:g}, {tape.t1:g}] was already used or freed")
            ts, steps = tape.data
            mu = self._shell.Jp.createVecRight()
            try:
                mu.set(0.0)
                ts.setCostGradients([lam], [mu])
                ts.adjointSetSteps(steps)
                solve_adjoint(ts, self.name)
                self._adjoint_ts.mark_traversed(ts)
                grads = np.concatenate(self.grid.comm_mpi().allgather(mu.getArray(readonly=True).copy()))
            finally:
                mu.destroy()
        finally:
            tape.free()
        return {p: float(grads[PARAMETER_NAMES.index(p)]) for p in parameters}

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, float]:
        """Discrete adjoint of :meth:`advance` (fixed steps, PETSc TSAdjoint with the exact Jacobians), recomputing
        the forward from ``state0`` (:meth:`record` keeps it instead).

        ``lam`` holds dJ/dx(t1) on entry and dJ/dx(t0) on exit; returns dJ/dp for the named scalar parameters.
        """
        self._check_gradient_names(parameters)
        return self.adjoint_by_recording(state0, t0, t1, lam, parameters)

    def tangent_linear(self, state0: PETSc.Vec, dx: PETSc.Vec, t0: float, t1: float) -> None:
        """Replace ``dx`` by ``M dx``, the tangent-linear model of :meth:`advance` over ``[t0, t1]`` along the
        trajectory from ``state0`` (not modified); fixed steps, as :meth:`adjoint`."""
        if not t1 > t0:
            raise ModelError(self.name, f"tangent_linear needs t1 > t0, got t0={t0}, t1={t1}")
        self.check_state(state0)
        self.check_time_step(state0, self.fixed_steps(t0, t1)[1])
        if self._tlm is None:
            self._tlm = TangentLinear(self)
        self._tlm.apply(state0, dx, t0, t1)

    # -- TS callbacks ------------------------------------------------------------------------------------------------
    def _rhs(self, ts, t, X, F) -> None:
        # the compiled float64 kernel (.compiled); kernel.tendency is its reference and the Dual-number path
        self._tendency(X, F, self.parameter_values())
        if self._sources is not None:
            a = self.grid.owned_array(F)
            for c, s in enumerate(self._sources(t)):
                a[..., c] += s

    def _rhs_jacobian(self, ts, t, X, J, P) -> None:
        self._assembler.assemble(J, self.ghosted_fields(X), self.geometry, self.parameter_values())

    def _rhs_jacobian_p(self, ts, t, X, Jp) -> None:
        self._assembler.assemble_parameters(Jp, self.ghosted_fields(X), self.geometry, self.parameter_values())

    def _post_step(self, ts) -> None:
        a = self.grid.owned_array(ts.getSolution(), readonly=True)
        ok = bool(np.isfinite(a).all()) and (a.size == 0 or float(a[..., 0].min()) > 0)
        if _allreduce(self.grid, np.array([0.0 if ok else 1.0]), MPI.MAX)[0]:
            self._failure = (f"non-finite state or non-positive layer thickness after step {ts.getStepNumber()}; "
                             f"reduce the time step or the forcing")
            ts.setConvergedReason(PETSc.TS.ConvergedReason.DIVERGED_STEP_REJECTED)

    # -- observation -----------------------------------------------------------------------------------------------
    def point_matrix(self, points, component: int):
        """The rows observing state ``component`` at ``points`` [m] where it lives on the C-grid (``u`` on the west
        faces, ``v`` on the south faces): what a ``file`` network observes (:func:`twin.observations.base
        .point_matrix`), the rows of the ``stations`` network."""
        from twin.kinds.shallow_water.observations import staggered_interpolation

        return staggered_interpolation(self.grid, points, self.state_names[component], "observation file")

    # -- coupling --------------------------------------------------------------------------------------------------
    def field_grid(self, name: str) -> Grid:
        """The grid of the coupling field ``velocity``: cell centres, dof 2 (created on first use; collective)."""
        if name != "velocity":
            raise ModelError(self.name, f"unknown coupling field '{name}'; the shallow-water model exports "
                                        f"['velocity'] and imports nothing")
        if self._velocity_grid is None:
            g = self.grid
            self._velocity_grid = Grid(g.comm_mpi(), g.shape, g.extent, dof=2, stencil_width=1, periodic=True,
                                       proc_sizes=g.da.getProcSizes(), name=f"{self.name} velocity")
        return self._velocity_grid

    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """``velocity``: the wind at the cell centres (module docstring), a new vector on :meth:`field_grid`."""
        grid = self.field_grid("velocity")
        fields = self.ghosted_fields(state)
        u, v = fields[1], fields[2]
        out = grid.create_global()
        a = grid.owned_array(out)
        a[..., 0] = 0.5 * (u[1:-1, 1:-1] + u[1:-1, 2:])
        a[..., 1] = 0.5 * (v[1:-1, 1:-1] + v[2:, 1:-1])
        return {"velocity": out}

    # -- outputs ---------------------------------------------------------------------------------------------------
    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        return qoi_mod.quantities(self, state)

    def destroy(self) -> None:
        self._adjoint_ts.destroy()
        if self._shell is not None:
            self._shell.destroy()
            self._shell = None
        for obj in (self.ts, self._tendency, self._xloc, self._sol, self._J, self._Jp, self._initial,
                    self.topography, self._velocity_grid):
            if obj is not None:
                obj.destroy()
        if self._tlm is not None:
            self._tlm.destroy()
        self.ts = self._J = self._Jp = self._tlm = None
        super().destroy()

    # -- configuration ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "ShallowWater":
        """Build from a :class:`twin.kinds.shallow_water.config.ShallowWaterConfig` (converted to m, s)."""
        from twin.kinds.shallow_water.configure import model_arguments

        set_options(f"{name}_", cfg.solver)  # the user's options; the defaults never overwrite them
        return cls(name, comm, **model_arguments(name, cfg))



def _allreduce(grid: Grid, local: np.ndarray, op) -> np.ndarray:
    """Element-wise reduction of a small float array over the grid's communicator."""
    local = np.ascontiguousarray(local, dtype=float)
    out = np.empty_like(local)
    grid.comm_mpi().Allreduce(local, out, op=op)
    return out
