"""The tumour growth model: a reaction-diffusion equation for the tumour cell density on a tissue mask, with
radiotherapy and chemotherapy, integrated by PETSc TS and differentiated by TSAdjoint.

Equation (lengths mm, time days)::

    dN/dt = div(D(x) grad N) + k(x) N (1 - N / theta) - kappa C(t) N      in the tissue,
    D grad N . n = 0                                                      on the tissue boundary,
    N(t_f+) = exp(-alpha d_f - beta d_f^2) N(t_f-)                        at each radiotherapy fraction,

with
    N      tumour cell density (cells/mm^3); N/theta is the cellularity imaged by MRI,
    D(x)   diffusivity (mm^2/day): D_white in white matter, D_grey in grey matter (see ``phantom``), times
           exp(-gamma sigma_vm(x)) when a mechanics model sends the von Mises stress sigma_vm (Pa; import
           ``stress``) and gamma (1/Pa) > 0: compressed tissue slows the invasion (mechanically coupled model of
           Hormuth et al. / Weis et al.),
    k(x)   proliferation rate (1/day), a scalar or a field,
    theta  carrying capacity (cells/mm^3),
    alpha  LQ radiosensitivity (1/Gy), beta = alpha / (alpha/beta), d_f the fraction dose (Gy),
    kappa  chemotherapy kill rate (1/day per unit concentration), C(t) the drug concentration (``treatment``).

Discretisation: cell-centred finite volumes (``operators``) give the ODE system ``dN/dt = F(t, N) = A N + r(t, N)``
with ``r_i = m_i N_i (k_i (1 - N_i/theta) - kappa C(t))`` (``m`` the tissue mask), integrated by a PETSc TS (default
Crank-Nicolson; any implicit TS with adjoint support via ``-<name>_ts_type``, e.g. ``beuler``) with the assembled
Jacobian ``A + diag(m (k (1 - 2N/theta) - kappa C))`` and Newton (SNES). Treatments are exact: the integration is
split at every treatment time (TS segments), the LQ jump is applied between segments, and ``C(t)`` never jumps
inside a segment.

Solvers: the time discretisation, its Jacobians and the solver defaults (CG, the lagged preconditioner) are in
:mod:`twin.kinds.tumour.dynamics`, with where the time of a step goes.

Coupling: imports ``stress`` (von Mises stress, Pa, on the model grid); exports ``density`` (N, cells/mm^3) and
``cellularity`` (N / theta, 1; what a growth eigenstrain ``eps_g = beta_g N / theta`` is proportional to). The
imported stress is held fixed during :meth:`TumourModel.advance` and the adjoint (a partial derivative for the
component alone).

Adjoint (:mod:`twin.kinds.tumour.adjoint`): :meth:`TumourModel.record` runs the forward segments on pooled TS objects
that keep their trajectories, :meth:`TumourModel.adjoint_recorded` runs TSAdjoint backwards segment by segment with the
parameter Jacobian ``dF/dp`` (RHSJacobianP: a diagonal block for the field k, one column for each scalar parameter; see
``sensitivity``), and at each fraction multiplies lambda by the survival fraction and accumulates ``dJ/dalpha``;
:meth:`TumourModel.adjoint` records from a given start state first. The gradients are those of the discrete model
(checked by Taylor tests).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.core.petsc import set_options
from twin.core.units import convert
from twin.kinds.tumour.adjoint import TumourAdjoint
from twin.kinds.tumour.config import PARAMETER_UNITS, STRICTLY_POSITIVE
from twin.kinds.tumour.dynamics import TumourDynamics
from twin.kinds.tumour.operators import DiffusionOperator
from twin.kinds.tumour.phantom import Tissue, box_tissue, brain_phantom
from twin.kinds.tumour.qoi import detected_volume, total_cells
from twin.kinds.tumour.treatment import TreatmentPlan, survival_fraction
from twin.models.base import Model, Parameter, QoI
from twin.models.priors import prior_center, prior_transform
from twin.models.registry import register_model

log = get_logger("twin.kinds.tumour")


#: parameters that may be left out of ``values`` (their default switches the feature off)
OPTIONAL_PARAMETERS = {"gamma": 0.0}



@register_model("tumour")
class TumourModel(TumourDynamics, TumourAdjoint, Model):
    """Reaction-diffusion tumour growth with radiotherapy and chemotherapy (see the module docstring).

    Parameters
    ----------
    name : str
        Component name; PETSc options prefix ``<name>_``.
    comm : mpi4py communicator
    grid : Grid
        Cell-centred, non-periodic, ``dof=1``, lengths in mm.
    tissue : Tissue
        Tissue mask and white-matter fraction, whole-grid arrays in natural C order.
    values : mapping
        Parameter values in internal units (``PARAMETER_UNITS``); ``k`` may be a whole field (natural C order);
        ``gamma`` may be left out (no stress coupling).
    initial : ndarray or callable, optional
        Initial density: a whole field (natural C order) or ``f(X, Y[, Z])`` at cell centres (cells/mm^3). Zero
        outside the tissue.
    plan : TreatmentPlan, optional
    dt : float
        Time step (days); each segment between treatment times is divided into equal steps of at most ``dt``.
    specs : mapping of ParameterSpec, optional
        Priors and estimable flags from the configuration.
    run : (float, float), optional
        Start and end of the run (days); every treatment time must lie inside it.
    threshold : float
        Detection threshold on the cellularity for the tumour volume QoI.
    progression_factor : float
        Time to progression: first time the burden exceeds this multiple of the baseline.
    source : callable, optional
        ``source(t)`` -> owned-block array (cells/mm^3/day) added to F; for manufactured-solution verification.
    """

    state_names = ("N",)
    state_units = ("1/mm^3",)
    time_units = "day"
    length_units = "mm"

    def __init__(self, name: str, comm, grid: Grid, tissue: Tissue, values: Mapping[str, Any], *,
                 initial: np.ndarray | Callable | None = None, plan: TreatmentPlan | None = None, dt: float = 0.5,
                 specs: Mapping[str, Any] | None = None, run: tuple[float, float] | None = None,
                 threshold: float = 0.2, progression_factor: float = 2.0,
                 source: Callable[[float], np.ndarray] | None = None):
        super().__init__(name, comm)
        self.grid = grid
        self.plan = plan or TreatmentPlan()
        self.dt = float(dt)
        self.threshold = float(threshold)
        self.progression_factor = float(progression_factor)
        self.source = source
        self._mpi = grid.comm_mpi()
        values = {**OPTIONAL_PARAMETERS, **dict(values)}
        self._check_inputs(grid, tissue, values, run)
        self.tissue = tissue
        self.run = run
        specs = specs or {}
        for pname, units in PARAMETER_UNITS.items():
            spec = specs.get(pname)
            prior = getattr(spec, "prior", None)
            value = values[pname]
            if pname == "k" and not np.isscalar(value):
                value = self._field_vec(value, "k")
            else:
                value = float(value)
            self.parameters[pname] = Parameter(pname, value, units, bool(getattr(spec, "estimable", False)),
                                               prior_transform(prior), prior)
        self._mask = tissue.mask[grid.owned_slices].ravel().astype(float)
        self._initial = self._initial_vec(initial)
        self._stress: np.ndarray | None = None  # imported von Mises stress (Pa), whole grid, natural C order
        self.op = DiffusionOperator(grid, tissue)
        self._J = self.op.A.duplicate(copy=True)
        self._f = grid.create_global()
        self._tmp = grid.create_global()
        self._work = np.empty(self._mask.size)
        self._ts: PETSc.TS | None = None
        self._init_adjoint()
        self._segment_start = 0.0
        self._rebuild(list(PARAMETER_UNITS))

    # -- construction and checks ------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "TumourModel":
        """Build from a :class:`~twin.kinds.tumour.config.TumourConfig` section."""
        set_options(f"{name}_", cfg.solver)  # the user's options; the defaults never overwrite them
        extent = cfg.grid.extent_in("mm")
        grid = Grid(comm, cfg.grid.shape, extent, stencil_width=1, centering="cell", name=name)
        ph = cfg.phantom
        if ph.kind == "box":
            tissue = box_tissue(grid.shape[::-1], ph.white)
        else:
            try:
                tissue = brain_phantom(grid.mesh(), extent, center=ph.center, semi_axes=ph.semi_axes,
                                       white_radius=ph.white_radius, smoothing=ph.smoothing, ventricles=ph.ventricles)
            except ValueError as exc:
                grid.destroy()
                raise ModelError(name, str(exc)) from None
        specs = {p: getattr(cfg.parameters, p) for p in PARAMETER_UNITS}
        values: dict[str, Any] = {}
        for pname, units in PARAMETER_UNITS.items():
            spec = specs[pname]
            if spec.value is None and spec.prior is not None and spec.prior.dist == "gaussian_field":
                values[pname] = float(convert(prior_center(spec.prior), spec.units, units))
            else:
                values[pname] = spec.to(units)
        if cfg.parameters.field_prior() and np.isscalar(values["k"]):
            values["k"] = np.full(grid.shape[::-1], values["k"])
        rt, ch = cfg.treatment.radiotherapy, cfg.treatment.chemotherapy
        plan = TreatmentPlan.from_lists(rt.times, rt.doses, ch.times, ch.doses)
        seed = cfg.seed
        theta = values["theta"]

        def initial(*X):
            r2 = sum((x - c) ** 2 for x, c in zip(X, seed.center))
            return seed.amplitude * theta * np.exp(-0.5 * r2 / seed.radius ** 2)

        run = (cfg.run.start, cfg.run.end) if cfg.run is not None else None
        return cls(name, comm, grid, tissue, values, initial=initial, plan=plan, dt=cfg.dt, specs=specs, run=run,
                   threshold=cfg.imaging.threshold, progression_factor=cfg.progression_factor)

    def _fail(self, message: str) -> None:
        raise ModelError(self.name, message)

    def _check_inputs(self, grid: Grid, tissue: Tissue, values: Mapping[str, Any], run) -> None:
        if grid.centering != "cell" or grid.dof != 1 or any(grid.periodic) or grid.stencil_width < 1:
            self._fail(f"needs a cell-centred, non-periodic grid with dof=1 and stencil width >= 1, got {grid!r}")
        if tissue.mask.shape != tuple(grid.shape[::-1]):
            self._fail(f"the grid does not fit the tissue mask: mask has shape {tissue.mask.shape} (C order), "
                       f"grid {tuple(grid.shape[::-1])}")
        if not tissue.mask.any():
            self._fail("the tissue mask is empty: no cell is tissue (check the phantom or the mask file)")
        missing = [p for p in PARAMETER_UNITS if p not in values]
        if missing:
            self._fail(f"missing parameter values {missing}")
        for pname in PARAMETER_UNITS:
            self._check_value(pname, values[pname])
        if not (np.isfinite(self.dt) and self.dt > 0):
            self._fail(f"time step dt must be positive and finite, got {self.dt}")
        if not (np.isfinite(self.threshold) and 0 < self.threshold < 1):
            self._fail(f"detection threshold must lie in (0, 1), got {self.threshold}")
        for f in self.plan.fractions:
            if not (np.isfinite(f.time) and np.isfinite(f.dose) and f.dose > 0):
                self._fail(f"radiotherapy fraction at t={f.time} day with dose {f.dose} Gy: need a finite time and "
                           "a positive finite dose")
        for d in self.plan.doses:
            if not (np.isfinite(d.time) and np.isfinite(d.amount) and d.amount > 0):
                self._fail(f"chemotherapy dose at t={d.time} day of {d.amount}: need a finite time and a positive "
                           "finite amount")
        if run is not None:
            self.validate_run(*run)

    def _check_value(self, pname: str, value, distributed: bool = False) -> None:
        """Refuse non-finite or negative values; ``distributed`` values (field blocks) are checked collectively."""
        is_vec = isinstance(value, PETSc.Vec)
        arr = value.getArray(readonly=True) if is_vec else np.asarray(value, dtype=float)
        finite = bool(np.all(np.isfinite(arr)))
        low = float(np.min(arr, initial=np.inf)) if finite else -np.inf
        if distributed or is_vec:
            finite = bool(self._mpi.allreduce(finite, op=MPI.LAND))
            low = float(self._mpi.allreduce(low, op=MPI.MIN))
        if not finite:
            self._fail(f"parameter {pname} must be finite, got a non-finite value")
        if low < 0 or (pname in STRICTLY_POSITIVE and low <= 0):
            rel = "> 0" if pname in STRICTLY_POSITIVE else ">= 0"
            self._fail(f"parameter {pname} must be {rel} ({PARAMETER_UNITS[pname]}), got {low:g}")

    def validate_run(self, start: float, end: float) -> None:
        """Refuse a run ``[start, end]`` (days) that some treatment time falls outside (ModelError)."""
        if not (np.isfinite(start) and np.isfinite(end) and end > start):
            self._fail(f"run needs finite start < end, got [{start}, {end}]")
        for kind, times in (("radiotherapy fraction", [f.time for f in self.plan.fractions]),
                            ("chemotherapy dose", [d.time for d in self.plan.doses])):
            for t in times:
                if not start <= t <= end:
                    self._fail(f"{kind} at t={t:g} day lies outside the run [{start:g}, {end:g}] day")

    def _field_vec(self, value, pname: str) -> PETSc.Vec:
        if isinstance(value, PETSc.Vec):
            return value.copy()
        arr = np.asarray(value, dtype=float)
        if arr.shape != tuple(self.grid.shape[::-1]):
            self._fail(f"field parameter {pname} has shape {arr.shape}, grid needs {tuple(self.grid.shape[::-1])}")
        return self.grid.set_global(arr, self.grid.create_global())

    def _initial_vec(self, initial) -> PETSc.Vec:
        vec = self.grid.create_global()
        if initial is None:
            vec.set(0.0)
        elif callable(initial):
            self.grid.from_function(initial, vec)
        else:
            arr = np.asarray(initial, dtype=float)
            if arr.shape != tuple(self.grid.shape[::-1]):
                self._fail(f"initial density has shape {arr.shape}, grid needs {tuple(self.grid.shape[::-1])}")
            self.grid.set_global(arr, vec)
        a = vec.getArray()
        a *= self._mask
        bad = bool(self._mpi.allreduce(bool(not np.all(np.isfinite(a)) or (a < 0).any()), op=MPI.LOR))
        if bad:
            self._fail("the initial density must be finite and non-negative")
        return vec

    # -- parameters --------------------------------------------------------------------------------------------------
    def set_parameter(self, name: str, value: Any) -> None:
        """Set a parameter, validated (finite, non-negative; theta, alpha_beta, half_life positive). Collective.

        For the field ``k`` the value may be a global vector, this rank's owned block (flat), or the whole field in
        natural C order (an array of shape ``grid.shape[::-1]``, the same on every rank).
        """
        p = self.parameters.get(name)
        if p is not None and p.is_field and not isinstance(value, PETSc.Vec):
            arr = np.asarray(value, dtype=float)
            if arr.shape == tuple(self.grid.shape[::-1]):
                value = self.grid.set_global(arr, self._tmp)
        if p is not None:
            self._check_value(name, value, distributed=p.is_field)
        super().set_parameter(name, value)

    def parameters_changed(self, names: Sequence[str]) -> None:
        self._rebuild(names)

    def _rebuild(self, names: Sequence[str]) -> None:
        v = {n: p.value for n, p in self.parameters.items()}
        if {"D_white", "D_grey", "gamma"} & set(names):
            self.op.update(v["D_white"], v["D_grey"], self.diffusivity_factor())
        k = v["k"].getArray(readonly=True) if isinstance(v["k"], PETSc.Vec) else v["k"]
        self._kk = self._mask * k
        self._kt = self._kk / v["theta"]
        self._km = self._mask * v["kappa"]

    def diffusivity_factor(self) -> np.ndarray | None:
        """``exp(-gamma sigma_vm)`` on the whole grid (natural C order), or ``None`` without stress coupling.

        The von Mises stress is non-negative; an accelerated coupling iterate may undershoot zero slightly, which is
        clipped so that the stress never raises the diffusivity above ``D0``.
        """
        gamma = float(self.parameters["gamma"].value)
        if self._stress is None or gamma == 0.0:
            return None
        return np.exp(-gamma * np.maximum(self._stress, 0.0))

    def k_field(self) -> np.ndarray:
        """This rank's block of ``k`` (1/day) as a flat array (the scalar broadcast when k is a scalar)."""
        k = self.parameters["k"].value
        return k.getArray(readonly=True).copy() if isinstance(k, PETSc.Vec) else np.full(self._mask.size, k)

    # -- state ---------------------------------------------------------------------------------------------------------
    def initial_state(self) -> PETSc.Vec:
        return self._initial.copy()

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        """Tumour burden (total cell count) and detected volume (cellularity above the threshold, mm^3)."""
        theta = self.parameters["theta"].value
        return {"burden": QoI(total_cells(self.grid, state), "1", "total tumour cell count"),
                "volume": QoI(detected_volume(self.grid, state, theta, self.threshold), "mm^3",
                              f"tumour volume with cellularity above {self.threshold:g}")}

    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """``density`` (the state itself, cells/mm^3) and ``cellularity`` ``N / theta`` (a new vector, 1)."""
        cellularity = state.copy()
        cellularity.scale(1.0 / self.parameters["theta"].value)
        return {"density": state, "cellularity": cellularity}

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        """Receive the von Mises stress ``stress`` (Pa, a vector laid out like the state) from a mechanics model;
        the diffusivity becomes ``D0 exp(-gamma sigma_vm)`` (see the module docstring). Collective."""
        if name != "stress":
            self._fail(f"unknown import '{name}'; the tumour model imports ['stress'] (von Mises stress in Pa)")
        if value.getSize() != self.grid.size or value.getLocalSize() != self._mask.size:
            self._fail(f"import 'stress' has {value.getSize()} values ({value.getLocalSize()} on this rank); the "
                       f"grid needs {self.grid.size} ({self._mask.size})")
        # whole field on every rank: the face conductances need the neighbours' diffusivities (as the tissue does)
        stress = np.asarray(self.grid.allgather(value), dtype=float).reshape(self.grid.shape[::-1])
        if not np.all(np.isfinite(stress)):
            self._fail("import 'stress' has non-finite values")
        self._stress = stress
        self._rebuild(["gamma"])

    def _check_window(self, t0: float, t1: float) -> None:
        if not (np.isfinite(t0) and np.isfinite(t1) and t1 >= t0):
            self._fail(f"cannot advance from t={t0} to t={t1} day: need finite t0 <= t1")

    def _apply_fractions(self, x: PETSc.Vec, t: float) -> None:
        for frac in self.plan.fractions_in(t, np.nextafter(t, np.inf)):
            self.apply_radiotherapy(x, frac.dose)

    def apply_radiotherapy(self, x: PETSc.Vec, dose) -> None:
        """Multiply ``x`` by the LQ survival fraction of a dose (Gy; scalar or owned-block dose field)."""
        p = self.parameters
        x.getArray()[...] *= survival_fraction(dose, p["alpha"].value, p["alpha_beta"].value)

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        """Advance ``state`` from ``t0`` to ``t1`` (days), applying the treatments in ``[t0, t1)``."""
        self._check_window(t0, t1)
        if t1 == t0:
            return
        if self._ts is None:
            self._ts = self._create_ts(self._J, trajectory=False)
        points = self.plan.breakpoints(t0, t1)
        for ta, tb in zip(points[:-1], points[1:]):
            self._apply_fractions(state, ta)
            self._integrate(self._ts, state, ta, tb)
        log.debug("%s: advanced %g -> %g day in %d segment(s)", self.name, t0, t1, len(points) - 1)

    def destroy(self) -> None:
        self._destroy_adjoint()
        for obj in (self._ts, self._J, self._f, self._tmp, self._initial):
            if obj is not None:
                obj.destroy()
        self._ts = None
        self.op.destroy()
        super().destroy()
