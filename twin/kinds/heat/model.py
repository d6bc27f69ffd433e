"""Heat equation on a box, cell-centred finite volumes, implicit PETSc TS with an assembled Jacobian.

Equation
--------
    dT/dt = div(kappa grad T) + f          on  prod_a [lo_a, hi_a]  (1-, 2- or 3-D)

* ``T``: temperature (K); ``kappa``: diffusivity (m^2/s, uniform scalar parameter); ``f``: uniform heat source
  (K/s, scalar parameter ``source``, default 0); lengths in m, time in s.
* Boundary conditions per side (``x_lo``, ``x_hi``, ...): Dirichlet ``T = g`` on the face (K), or Neumann with the
  inward flux ``q = kappa dT/dn`` (K m/s, ``n`` the outward normal). Data are constants from the configuration or
  fields on the face imported from a coupler (Dirichlet-Neumann partitioned coupling).

Discretisation
--------------
Cell averages ``T_c`` on ``n_a`` cells of width ``h_a``; the flux between neighbours is ``kappa (T_R - T_L) / h``;
a Dirichlet face sits half a cell from the boundary cell centre, so its flux is ``2 kappa (g - T_b) / h``; a Neumann
face contributes ``q / h``. This gives ``dT/dt = A T + b(t)`` with the constant, symmetric negative-definite matrix
``A`` (assembled once per ``kappa``) and ``b`` holding boundary data and sources. The method of lines is integrated by
a PETSc TS (default backward Euler, options prefix ``<name>_``), as a LINEAR problem so SNES reduces to one KSP solve
per stage. Second order in space; the time order is the TS's.

For coupling, each side with an ``import`` also exports its face temperature and inward flux on a face grid of
dimension ``dim - 1`` (:mod:`twin.kinds.heat.face`, which holds the model's faces to a coupler).

Adjoint
-------
The discrete adjoint (:meth:`HeatModel.adjoint`) uses TSAdjoint with ``setRHSJacobianP``: the parameter Jacobian
``dF/dp`` is a sparse matrix whose columns are ``kappa``, ``source`` and, for every coupled side, the face data
(``dF/dg = 2 kappa / h^2`` on the boundary cells of a Dirichlet side, ``1 / h`` on a Neumann side), so TSAdjoint's
``mu`` holds ``dJ/dkappa``, ``dJ/dsource`` and ``dJ/dg`` (requested as ``"import:<field>"``, the coupled adjoint's
sensitivity to imported data, held constant over the adjoint's interval as in :meth:`HeatModel.advance`).
:meth:`HeatModel.export_adjoint` is the transpose of the derivative of :meth:`HeatModel.exports` (with respect to
the state, the imported face data and ``kappa``; :meth:`twin.kinds.heat.face.Faces.export_adjoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.core.petsc import set_default_options, set_from_options, set_options
from twin.core.units import convert
from twin.kinds.heat.face import Faces, boundary_slab, side_axis
from twin.kinds.heat.initial import initial_condition
from twin.kinds.heat.operator import SIDES, laplacian
from twin.models.base import IMPORT_PREFIX, Model, Parameter, QoI, solve_adjoint
from twin.models.registry import register_model

log = get_logger("twin.kinds.heat.model")

#: defaults under the component prefix; YAML ``solver:`` and the command line override them
DEFAULT_SOLVER = {"ts_type": "beuler", "ts_adapt_type": "none", "ksp_type": "cg", "pc_type": "jacobi",
                  "ksp_rtol": 1e-12, "ksp_atol": 1e-14,
                  # TSAdjoint's checkpoints in memory, not TS-data-* directories in the working directory
                  "ts_trajectory_type": "memory"}


@dataclass
class Boundary:
    """A boundary condition on one side: ``kind`` is ``dirichlet`` (K) or ``neumann`` (inward flux, K m/s)."""

    kind: str = "dirichlet"
    value: float = 0.0
    import_name: str | None = None


@register_model("heat")
class HeatModel(Model):
    """The heat equation (module docstring) on a :class:`Grid` with ``centering="cell"``.

    Parameters
    ----------
    name : str
        Component name and PETSc options prefix ``name_``.
    comm : mpi4py communicator
    grid : Grid
        Cell-centred, ``dof=1``, lengths in m. The model takes ownership (destroys it).
    kappa : float
        Diffusivity (m^2/s), > 0.
    source : float
        Uniform heat source ``f`` (K/s).
    boundary : dict side -> Boundary
        Sides not given are Dirichlet ``T = 0``. Periodic axes take no boundary conditions.
    initial : callable
        ``initial(X, Y[, Z])`` (m) -> T0 (K), vectorised.
    dt : float
        The model's time step (s); a window ``[t0, t1]`` is split into ``ceil((t1 - t0) / dt)`` equal steps.
    solver : dict
        PETSc options (without prefix) added on top of :data:`DEFAULT_SOLVER`.
    exact : callable, optional
        ``exact(X, Y[, Z], t)``, the analytic solution when the initial condition is manufactured.
    t_start, t_end : float
        The configured time span (s); ``t_end`` may be ``None``.
    """

    state_names = ("T",)
    state_units = ("K",)
    time_units = "s"

    def __init__(self, name: str, comm, grid: Grid, *, kappa: float, source: float = 0.0,
                 boundary: dict[str, Boundary] | None = None, initial: Callable[..., np.ndarray] | None = None,
                 dt: float, solver: dict[str, Any] | None = None, exact: Callable[..., np.ndarray] | None = None,
                 t_start: float = 0.0, t_end: float | None = None, priors: dict[str, Any] | None = None,
                 estimable: Sequence[str] = ()):
        super().__init__(name, comm)
        if grid.centering != "cell" or grid.dof != 1:
            raise ModelError(name, f"the heat model needs a cell-centred grid with dof=1, got {grid!r}")
        if not (np.isfinite(dt) and dt > 0):
            raise ModelError(name, f"time step dt must be positive, got {dt}")
        boundary = dict(boundary or {})
        allowed = SIDES[: 2 * grid.dim]
        bad = sorted(set(boundary) - set(allowed))
        if bad:
            raise ModelError(name, f"unknown boundary sides {bad} for a {grid.dim}-D grid; use {list(allowed)}")
        for side in allowed:
            boundary.setdefault(side, Boundary())
        for side, bc in boundary.items():
            axis, _ = side_axis(side)
            if bc.kind not in ("dirichlet", "neumann"):
                raise ModelError(name, f"boundary {side}: type must be 'dirichlet' or 'neumann', got {bc.kind!r}")
            if grid.periodic[axis] and bc.import_name is not None:
                raise ModelError(name, f"boundary {side}: axis {'xyz'[axis]} is periodic and has no boundary")
        imports = [bc.import_name for bc in boundary.values() if bc.import_name]
        if len(imports) != len(set(imports)):
            raise ModelError(name, f"two boundary sides import the same field: {imports}")
        self.grid = grid
        self.boundary = boundary
        self.dt = float(dt)
        self.t_start, self.t_end = float(t_start), (None if t_end is None else float(t_end))
        self._initial = initial or (lambda *x: np.zeros_like(x[0]))
        self._exact = exact
        priors = priors or {}
        self.parameters = {
            "kappa": Parameter("kappa", float(kappa), "m^2/s", "kappa" in estimable, "log", priors.get("kappa")),
            "source": Parameter("source", float(source), "K/s", "source" in estimable, "none", priors.get("source")),
        }
        self._check_parameters()
        self.coupling = Faces(name, comm, grid, boundary)
        self._A = self._assemble()
        self._J = self._A.duplicate(copy=True)
        self._F = grid.create_global()
        self._b = grid.create_global()
        self._work = grid.create_global()
        set_options(self.options_prefix, solver or {})
        set_default_options(self.options_prefix, DEFAULT_SOLVER)
        self._ts = self._make_ts()
        self._Jp: PETSc.Mat | None = None
        self._jp_layout: dict[str, Any] = {}

    # -- construction from YAML ------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "HeatModel":
        """Build from a :class:`twin.kinds.heat.config.HeatConfig` (units converted to m, s, K)."""
        try:
            extent = cfg.grid.extent_in("m")
            length = float(convert(1.0, cfg.grid.units, "m"))
            kappa = cfg.parameters["kappa"].to("m^2/s")
            source = cfg.parameters["source"].to("K/s") if "source" in cfg.parameters else 0.0
            to_s = float(convert(1.0, cfg.time.units, "s"))
        except ValueError as exc:
            raise ModelError(name, str(exc)) from None
        grid = Grid(comm, cfg.grid.shape, extent, periodic=cfg.grid.periodic, name=name)
        model = None  # the manufactured solution follows the model's kappa (set below, read when evaluated)
        initial, exact = initial_condition(cfg.initial_condition, length, grid.dim, cfg.time.start * to_s,
                                           lambda: model.get_parameter("kappa"))
        boundary = {side: Boundary(b.type, b.value, b.import_) for side, b in cfg.boundary.items()}
        model = cls(name, comm, grid, kappa=kappa, source=source, boundary=boundary, initial=initial,
                    dt=cfg.time.dt * to_s, solver=cfg.solver, exact=exact, t_start=cfg.time.start * to_s,
                    t_end=None if cfg.time.end is None else cfg.time.end * to_s,
                    priors={k: p.prior for k, p in cfg.parameters.items()},
                    estimable=[k for k, p in cfg.parameters.items() if p.estimable])
        return model

    # -- operators ---------------------------------------------------------------------------------------------------
    def _check_parameters(self) -> None:
        kappa = self.parameters["kappa"].value
        if not (np.isfinite(kappa) and kappa > 0):
            raise ModelError(self.name, f"diffusivity kappa must be positive and finite, got {kappa}")
        if not np.isfinite(self.parameters["source"].value):
            raise ModelError(self.name, f"source must be finite, got {self.parameters['source'].value}")

    def _assemble(self) -> PETSc.Mat:
        """``A`` for the current kappa (:func:`twin.kinds.heat.operator.laplacian`)."""
        return laplacian(self.grid, self.parameters["kappa"].value, self._row_start(),
                         {side: b.kind for side, b in self.boundary.items()})

    def _row_start(self) -> int:
        v = self.grid.create_global()
        r0 = v.getOwnershipRange()[0]
        v.destroy()
        return r0

    def _boundary_data(self, side: str) -> np.ndarray | float:
        face = self.coupling.faces.get(side)
        return face.owned_values() if face is not None else self.boundary[side].value

    def _fill_b(self) -> None:
        """``b = kappa * (Dirichlet terms) + Neumann terms + f``."""
        kappa = self.parameters["kappa"].value
        b = self.grid.owned_array(self._b)
        b[...] = self.parameters["source"].value
        for side, bc in self.boundary.items():
            slab = boundary_slab(self.grid, side)
            if slab is None or self.grid.periodic[side_axis(side)[0]]:
                continue
            index, h = slab
            data = self._boundary_data(side)
            b[index] += (2.0 * kappa / h ** 2) * data if bc.kind == "dirichlet" else data / h

    def _rhs(self, ts, t, x, f):
        self._A.mult(x, f)
        self._fill_b()
        f.axpy(1.0, self._b)

    def _jac(self, ts, t, x, J, P):
        # TS shifts/scales the matrix it is given for implicit stages, so hand it a fresh copy of A each time.
        self._A.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)

    def _face_coefficient(self, side: str) -> float:
        """``dF/dg`` on the boundary cells of ``side``: ``2 kappa / h^2`` (Dirichlet) or ``1 / h`` (Neumann)."""
        h = self.grid.spacing[side_axis(side)[0]]
        if self.boundary[side].kind == "dirichlet":
            return 2.0 * self.parameters["kappa"].value / h ** 2
        return 1.0 / h

    def _parameter_jacobian(self) -> PETSc.Mat:
        """The sparse ``dF/dp`` for TSAdjoint, built once: columns ``kappa`` and ``source`` (owned by rank 0), then the
        entries of each coupled side's face data, laid out like the face vectors (so ``mu`` splits into faces without
        communication)."""
        if self._Jp is not None:
            return self._Jp
        comm = self.grid.comm_mpi()
        size, rank = comm.Get_size(), comm.Get_rank()
        faces = self.coupling.faces
        ranges = {side: np.asarray(face.vec.getOwnershipRanges(), dtype=np.int64) for side, face in faces.items()}
        ncol = np.array([2 if q == 0 else 0 for q in range(size)], dtype=np.int64)
        base: dict[str, np.ndarray] = {}
        for side, rng in ranges.items():
            base[side] = ncol.copy()
            ncol = ncol + np.diff(rng)
        col_start = np.concatenate([[0], np.cumsum(ncol)])
        n_local = int(np.prod(self.grid.local_shape))
        cells = np.arange(n_local)
        rows, cols = [cells, cells], [np.zeros(n_local, np.int64), np.ones(n_local, np.int64)]
        face_slices: dict[str, slice] = {}
        for side, face in faces.items():
            slab = boundary_slab(self.grid, side)
            if slab is None:
                r = np.zeros(0, np.int64)
            else:
                r = cells.reshape(self.grid.local_shape)[slab[0]].ravel()
            p = face.petsc_idx.astype(np.int64)
            q = np.searchsorted(ranges[side], p, side="right") - 1
            rows.append(r)
            cols.append(col_start[q] + base[side][q] + (p - ranges[side][q]))
            lo = int(base[side][rank])
            face_slices[side] = slice(lo, lo + int(np.diff(ranges[side])[rank]))
        rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
        perm = np.lexsort((cols_all, rows_all))
        indptr = np.searchsorted(rows_all[perm], np.arange(n_local + 1)).astype(PETSc.IntType)
        indices = cols_all[perm].astype(PETSc.IntType)
        self._Jp = PETSc.Mat().createAIJ(size=((n_local, self.grid.size), (int(ncol[rank]), int(col_start[-1]))),
                                         csr=(indptr, indices, np.zeros(len(indices))), comm=self.comm)
        self._jp_layout = {"indptr": indptr, "indices": indices, "perm": perm, "faces": face_slices,
                           "counts": [len(r) for r in rows[2:]]}
        return self._Jp

    def _jacp(self, ts, t, x, Jp):
        """Columns dF/dkappa = (A x) / kappa + (Dirichlet terms), dF/dsource = 1 and dF/dg of each coupled side."""
        kappa = self.parameters["kappa"].value
        self._A.mult(x, self._work)
        col = (self._work.getArray(readonly=True) + self._dirichlet_part()) / kappa
        lay = self._jp_layout
        parts = [col, np.ones(col.size)]
        parts += [np.full(n, self._face_coefficient(side)) for side, n in zip(self.coupling.faces, lay["counts"])]
        Jp.setValuesCSR(lay["indptr"], lay["indices"], np.concatenate(parts)[lay["perm"]])
        Jp.assemble()

    def _dirichlet_part(self) -> np.ndarray:
        kappa = self.parameters["kappa"].value
        out = np.zeros(self.grid.local_shape)
        for side, bc in self.boundary.items():
            slab = boundary_slab(self.grid, side)
            if slab is None or bc.kind != "dirichlet" or self.grid.periodic[side_axis(side)[0]]:
                continue
            index, h = slab
            out[index] += (2.0 * kappa / h ** 2) * self._boundary_data(side)
        return out.ravel()

    def _make_ts(self, save_trajectory: bool = False) -> PETSc.TS:
        ts = PETSc.TS().create(comm=self.comm)
        ts.setOptionsPrefix(self.options_prefix)
        ts.setProblemType(PETSc.TS.ProblemType.LINEAR)
        ts.setType(PETSc.TS.Type.BEULER)
        ts.setRHSFunction(self._rhs, self._F)
        ts.setRHSJacobian(self._jac, self._J, self._J)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        # report failures as SolverError with the reason, not as a bare PETSc error
        ts.setErrorIfStepFails(False)
        ts.setTimeStep(self.dt)
        if save_trajectory:
            # before setFromOptions, so the trajectory type option applies
            ts.setSaveTrajectory()
        set_from_options(ts)
        self._warn_if_unstable(ts)
        return ts

    #: explicit TS types whose fixed steps have a stability limit (an adaptive TS chooses its own steps)
    EXPLICIT_TS_TYPES = frozenset({"euler", "rk", "ssp"})

    def _warn_if_unstable(self, ts: PETSc.TS) -> None:
        """One WARNING when the options chose an explicit TS with fixed steps past forward Euler's stability limit of
        the diffusion, ``h^2 / (2 d kappa)`` for equal spacings (``1 / (2 kappa sum 1/h_a^2)``): such a run grows
        without bound and used to end with exit status 0 and values of 1e17 (found by trying ``-heat_ts_type
        euler``). Other explicit methods' limits are of the same order."""
        kind = ts.getType()
        if getattr(self, "_stability_warned", False) or kind not in self.EXPLICIT_TS_TYPES:
            return
        # petsc4py 3.18 has no TSGetAdapt: the option says it (PETSc's default: basic for rk, none for euler and ssp)
        adapt = PETSc.Options().getString(f"{self.options_prefix}ts_adapt_type", "basic" if kind == "rk" else "none")
        if adapt != "none":
            return
        kappa = self.parameters["kappa"].value
        limit = 1.0 / (2.0 * kappa * sum(1.0 / h**2 for h in self.grid.spacing))
        if self.dt > limit:
            self._stability_warned = True
            log.warning("model '%s': explicit TS %s with fixed steps dt = %g s is past the diffusion's stability limit "
                        "of about %.3g s (h^2 / (2 d kappa)): the solution will grow without bound; use an implicit "
                        "TS (beuler, the default, or cn) or dt <= %.3g s", self.name, ts.getType(), self.dt, limit,
                        limit)

    # -- the model contract ------------------------------------------------------------------------------------------
    def parameters_changed(self, names: Sequence[str]) -> None:
        self._check_parameters()
        if "kappa" in names:
            self._A.destroy()
            self._A = self._assemble()

    def initial_state(self) -> PETSc.Vec:
        return self.grid.from_function(self._initial)

    def exact_solution(self, t: float) -> PETSc.Vec:
        """The manufactured solution at ``t`` (only for ``initial_condition.kind: manufactured``)."""
        if self._exact is None:
            raise ModelError(self.name, "exact_solution needs a manufactured initial condition")
        return self.grid.from_function(lambda *x: self._exact(*x, t))

    def _run(self, ts: PETSc.TS, state: PETSc.Vec, t0: float, t1: float) -> None:
        self.run_fixed(ts, state, t0, t1, hint=f"try a smaller dt or -{self.options_prefix}ksp_type preonly "
                                               f"-{self.options_prefix}pc_type lu")
        if not np.isfinite(state.norm()):
            raise SolverError(self.name, t1, "non-finite temperature", units=self.time_units)

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        if t1 == t0:
            return
        self._run(self._ts, state, t0, t1)

    def _check_gradient_names(self, parameters: Sequence[str]) -> None:
        bad = [p for p in parameters if p not in self.parameters and not p.startswith(IMPORT_PREFIX)]
        if bad:
            raise ModelError(self.name, f"no adjoint for unknown parameters {sorted(bad)}; known "
                                        f"{sorted(self.parameters)} and '{IMPORT_PREFIX}<import>'")
        for p in parameters:
            if p.startswith(IMPORT_PREFIX):
                self.coupling.side_of(p[len(IMPORT_PREFIX):])

    def adjoint(self, state0: PETSc.Vec, t0: float, t1: float, lam: PETSc.Vec,
                parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Discrete adjoint by TSAdjoint: recompute the forward run with a saved trajectory, then solve backwards.

        Boundary data and imports are held at their current values (as in :meth:`advance`). Besides ``kappa`` and
        ``source``, ``parameters`` may name ``"import:<field>"`` for an imported field: its entry is ``dJ/dg``, a new
        vector on the field's face grid (the data held constant over ``[t0, t1]``).
        """
        self._check_gradient_names(parameters)
        if not parameters and t1 == t0:
            return {}
        Jp = self._parameter_jacobian()
        ts = self._make_ts(save_trajectory=True)
        x = state0.copy()
        mu = Jp.createVecRight()
        mu.set(0.0)
        out: dict[str, Any] = {}
        try:
            if t1 > t0:
                ts.setRHSJacobianP(self._jacp, Jp)
                self._run(ts, x, t0, t1)
                ts.setCostGradients([lam], [mu])
                solve_adjoint(ts, self.name)
            arr = mu.getArray(readonly=True)
            comm = self.grid.comm_mpi()
            scalars = comm.bcast(arr[:2].copy() if comm.Get_rank() == 0 else None, root=0)
            for p in parameters:
                if p.startswith(IMPORT_PREFIX):
                    side = self.coupling.side_of(p[len(IMPORT_PREFIX):])
                    g = self.coupling.faces[side].grid.create_global()
                    g.getArray()[...] = arr[self._jp_layout["faces"][side]]
                    out[p] = g
                else:
                    out[p] = float(scalars[["kappa", "source"].index(p)])
        finally:
            for obj in (ts, x, mu):
                obj.destroy()
        return out

    # -- coupling (:mod:`twin.kinds.heat.face`) ----------------------------------------------------------------------
    def export_adjoint(self, state: PETSc.Vec, cotangents: dict[str, PETSc.Vec], lam: PETSc.Vec,
                       parameters: Sequence[str] = ()) -> dict[str, Any]:
        """Transpose of the derivative of :meth:`exports` at ``state`` (with the current imports): adds
        ``sum_e (d e / d x)^T cotangents[e]`` to ``lam`` and returns ``sum_e (d e / d p)^T cotangents[e]`` for each
        requested name (``kappa``, ``source``, ``"import:<field>"``); :meth:`Faces.export_adjoint`."""
        self._check_gradient_names(parameters)
        return self.coupling.export_adjoint(state, cotangents, lam, self.parameters["kappa"].value, parameters)

    def field_grid(self, name: str) -> Grid:
        """The grid a coupling field (export or import) lives on: the model grid or a face grid."""
        return self.coupling.field_grid(name)

    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """``temperature`` (a copy of the state) and, for each coupled side, the face temperature and inward flux."""
        return self.coupling.exports(state, self.parameters["kappa"].value)

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        self.coupling.set_import(name, value)

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        total = self.grid.integrate(state)
        volume = float(np.prod([hi - lo for lo, hi in self.grid.extent]))
        return {
            "mean_temperature": QoI(total / volume, "K", "domain-mean temperature"),
            "heat_content": QoI(total, f"K*m^{self.grid.dim}", "integral of temperature over the domain"),
            "max_temperature": QoI(float(state.max()[1]), "K", "maximum cell temperature"),
        }

    def destroy(self) -> None:
        self.coupling.destroy()
        for obj in (self._ts, self._A, self._J, self._F, self._b, self._work, self._Jp):
            if obj is not None:
                obj.destroy()
        super().destroy()
