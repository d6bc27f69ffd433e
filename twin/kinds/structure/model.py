"""The structure model: 2-D linear elasticity with a damage field, static (KSP) or dynamic (TS), with adjoints.

Equations
---------
Static::

    K(d) u = f(t, d)

Dynamic (Rayleigh damping ``C = alpha M + beta K(d)``)::

    M u'' + C u' + K(d) u = f(t, d)

with ``K(d) = sum_e E0 (1 - d_e) K_e`` (Q1 elements, plane stress or plane strain, thickness ``t``), ``d`` the nodal
damage field in [0, 1) averaged over each element's four nodes, ``E0`` Young's modulus [Pa], ``nu`` Poisson's ratio,
``rho`` density [kg/m^3], ``u`` displacement [m], ``f`` nodal forces [N] (see :mod:`.loads`, :mod:`.forcing`).

Discretisation and why: Q1 (bilinear) finite elements on a node-centred DMDA. They give a symmetric positive-definite
stiffness (CG + algebraic multigrid), second-order displacements in L2, natural traction boundary conditions and a
consistent mass matrix, on the same structured layout the rest of twin uses (coupling, observation operators). Their
known weakness, shear locking of fully integrated Q1 in bending, is handled by resolution (several elements through
the thickness, element aspect ratio near 1); the cantilever verification test shows the size of the effect.

State: static mode ``(u_x, u_y)`` [m] on ``mesh.disp``; dynamic mode ``(u_x, u_y, v_x, v_y)`` [m, m/s] on
``mesh.state``. Parameters: ``damage`` (field on ``mesh.scalar``), ``E0`` and ``load_<name>`` (scalars). Imports (on
the grids named): ``body_force`` [N/m^3] and ``traction_<edge>`` [Pa] on ``mesh.disp``, ``eigenstrain`` [1] on
``mesh.scalar`` (e.g. a growth strain ``beta_g N / theta`` from a tumour model), and, with a configured wind load,
``wind`` [m/s] on ``mesh.disp`` (turned into a drag traction on the windward edge, see :class:`.loads.WindLoad`).
Exports: ``displacement`` on ``mesh.disp``, ``von_mises`` and ``mean_stress`` (nodal averages of element values, Pa) on
``mesh.scalar``; :meth:`StructureModel.field_grid` names the grid of each field.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.log import get_logger
from twin.core.petsc import set_options
from twin.core.units import convert
from twin.kinds.structure.adjoint import StructureAdjoint
from twin.kinds.structure.config import COUPLING_EXPORTS, COUPLING_IMPORTS
from twin.kinds.structure.dynamic import DynamicSolver
from twin.kinds.structure.elements import Material, ReferenceElement, von_mises
from twin.kinds.structure.forcing import Forcing, ParameterLayout
from twin.kinds.structure.loads import (
    LoadCase,
    TimeFunction,
    WindLoad,
    check_vector,
)
from twin.kinds.structure.mesh import ElementMesh
from twin.kinds.structure.operators import Operators
from twin.kinds.structure.qoi import element_stress, natural_frequencies, nodal_average
from twin.kinds.structure.static import StaticSolver
from twin.models.base import Model, Parameter, QoI
from twin.models.registry import register_model

log = get_logger(__name__)


@register_model("structure")
class StructureModel(StructureAdjoint, Model):
    """Linear elasticity with damage on a rectangle, static or dynamic.

    Parameters
    ----------
    name : str
        Component name; PETSc options prefix ``<name>_``.
    comm : mpi4py communicator
    n_elements : (int, int)
        Q1 elements along x and y.
    extent : ((float, float), (float, float))
        The rectangle [m].
    material : Material
    boundary : mapping edge -> kind
        ``clamped``, ``pinned``, ``roller`` or ``free`` for ``left``, ``right``, ``bottom``, ``top``.
    loads : sequence of LoadCase
    plane : {"stress", "strain"}
    thickness : float
        Out-of-plane thickness [m].
    mode : {"static", "dynamic"}
    dt : float
        Time step [s] (dynamic mode).
    initial : {"rest", "static"}
        Dynamic initial state: at rest, or static equilibrium under the loads at ``t = 0`` with zero velocity.
    damage : float, ndarray or callable
        Initial damage: uniform value, whole nodal field in natural C order ``(ny + 1, nx + 1)``, or ``f(X, Y)``.
    estimable : sequence of str
        Parameters assimilation may update.
    wind : WindLoad, optional
        How an imported ``wind`` becomes a traction (without it, importing ``wind`` is refused).
    """

    #: coupling fields on the scalar nodal grid (the others live on the displacement grid)
    SCALAR_FIELDS = ("von_mises", "mean_stress", "eigenstrain")
    #: fields the model imports
    IMPORTS = COUPLING_IMPORTS

    def __init__(self, name: str, comm, n_elements: Sequence[int], extent, material: Material,
                 boundary: Mapping[str, str], loads: Sequence[LoadCase] = (), *, plane: str = "stress",
                 thickness: float = 1.0, mode: str = "static", dt: float | None = None, initial: str = "rest",
                 damage: float | np.ndarray | Callable = 0.0, estimable: Sequence[str] = (),
                 wind: WindLoad | None = None):
        super().__init__(name, comm)
        material.check(name)
        if wind is not None:
            wind.check(name)
        self.wind = wind
        self._wind_traction: PETSc.Vec | None = None
        if mode not in ("static", "dynamic"):
            raise ModelError(name, f"mode must be 'static' or 'dynamic', got {mode!r}")
        if plane not in ("stress", "strain"):
            raise ModelError(name, f"plane must be 'stress' or 'strain', got {plane!r}")
        if not thickness > 0:
            raise ModelError(name, f"thickness must be positive, got {thickness}")
        if mode == "dynamic" and not (dt is not None and dt > 0):
            raise ModelError(name, f"dynamic mode needs a positive time step dt, got {dt}")
        if initial not in ("rest", "static"):
            raise ModelError(name, f"initial must be 'rest' or 'static', got {initial!r}")
        names = [c.name for c in loads]
        if len(set(names)) != len(names):
            raise ModelError(name, f"load names must be unique, got {names}")
        for c in loads:
            check_vector(c.name, name, c.value)
        self.mode, self.plane, self.material, self.initial = mode, plane, material, initial
        self.prognostic = mode == "dynamic"  # a static solve's displacement follows from its loads at every step
        self.mesh = ElementMesh(comm, n_elements, extent, boundary, dynamic=(mode == "dynamic"), name=name)
        self.grid = self.mesh.state if mode == "dynamic" else self.mesh.disp
        if mode == "dynamic":
            self.state_names = ("u_x", "u_y", "v_x", "v_y")
            self.state_units = ("m", "m", "m/s", "m/s")
        else:
            self.state_names = ("u_x", "u_y")
            self.state_units = ("m", "m")
        self.ref = ReferenceElement(self.mesh.hx, self.mesh.hy, material.nu, plane, thickness)
        self.ops = Operators(self.mesh, self.ref, material.E0, material.rho, material.alpha, material.beta)

        d = self.mesh.scalar.create_global()
        self._fill_damage(damage, d)
        self._check_damage(d)
        self.parameters["damage"] = Parameter("damage", d, "1", "damage" in estimable, "logit")
        self.parameters["E0"] = Parameter("E0", material.E0, "Pa", "E0" in estimable, "log")
        for c in loads:
            key = f"load_{c.name}"
            self.parameters[key] = Parameter(key, 1.0, "1", key in estimable, "none")
        unknown = set(estimable) - set(self.parameters)
        if unknown:
            raise ModelError(name, f"unknown estimable parameters {sorted(unknown)}; known: {sorted(self.parameters)}")

        self.forcing = Forcing(self.ops, loads)
        self.layout = ParameterLayout(self.ops, ["E0"] + [f"load_{c.name}" for c in loads])
        self._version = 0
        self._k_version = -1
        self._freq_cache: tuple[int, int, np.ndarray] | None = None
        self.K = self.mesh.disp.da.createMatrix()
        self.ops.stiffness(self.K, d)
        self._k_version = 0
        self.static = StaticSolver(self.mesh, self.K, self.options_prefix)
        self._f = self.mesh.disp.create_global()
        self._M: PETSc.Mat | None = None
        self.dynamic = (DynamicSolver(self.ops, self.forcing, self.layout, d, self.imports, self.options_prefix, dt)
                        if mode == "dynamic" else None)

    # -- construction from YAML -----------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, cfg, comm) -> "StructureModel":
        """Build from a validated :class:`twin.kinds.structure.config.StructureConfig`."""
        set_options(f"{name}_", cfg.solver)  # the user's options; the defaults never overwrite them
        extent = cfg.grid.extent_in("m")
        material = Material(E0=cfg.E0.to("Pa"), nu=cfg.nu, rho=cfg.rho.to("kg/m^3"),
                            alpha=cfg.damping.alpha.to("1/s"), beta=cfg.damping.beta.to("s"))
        loads = []
        estimable = []
        for ld in cfg.loads:
            si = "N/m^3" if ld.kind == "body_force" else "Pa"
            try:
                value = tuple(float(convert(v, ld.units, si)) for v in ld.value)
            except ValueError as exc:
                raise ModelError(name, f"load '{ld.name}': {exc} (a {ld.kind} is in units of {si})") from None
            h = ld.history
            history = TimeFunction(kind=h.kind, frequency=h.frequency.to("Hz") if h.frequency else 0.0,
                                   phase=h.phase, times=tuple(float(convert(t, h.time_units, "s")) for t in h.times),
                                   factors=tuple(h.factors))
            loads.append(LoadCase(ld.name, ld.kind, value, ld.boundary or "", history))
            if ld.scale is not None and ld.scale.estimable:
                estimable.append(f"load_{ld.name}")
        if cfg.E0.estimable:
            estimable.append("E0")
        if cfg.damage.estimable:
            estimable.append("damage")
        dmg = cfg.damage

        def damage(X, Y):
            d = np.full_like(X, dmg.value, dtype=float)
            for r in dmg.regions:
                if r.shape == "circle":
                    inside = (X - r.centre[0]) ** 2 + (Y - r.centre[1]) ** 2 <= r.radius ** 2
                else:
                    inside = (X >= r.lower[0]) & (X <= r.upper[0]) & (Y >= r.lower[1]) & (Y <= r.upper[1])
                d[inside] = r.value
            return d

        model = cls(name, comm, cfg.grid.shape, extent, material, dict(cfg.boundary), loads, plane=cfg.plane,
                    thickness=cfg.thickness.to("m"), mode=cfg.mode,
                    dt=cfg.time.dt.to("s") if cfg.time else None,
                    initial=cfg.time.initial if cfg.time else "rest", damage=damage, estimable=estimable,
                    wind=None if cfg.wind is None else WindLoad(cfg.wind.boundary, cfg.wind.air_density.to("kg/m^3"),
                                                                cfg.wind.drag_coefficient))
        model.parameters["damage"].prior = dmg.prior
        model.parameters["E0"].prior = cfg.E0.prior
        for ld in cfg.loads:
            if ld.scale is not None:
                model.parameters[f"load_{ld.name}"].prior = ld.scale.prior
                if ld.scale.value is not None:
                    model.parameters[f"load_{ld.name}"].value = float(ld.scale.value)
                    model.forcing.scales[ld.name] = float(ld.scale.value)
        if cfg.eigenstrain:
            eps = model.mesh.scalar.create_global()
            eps.set(float(cfg.eigenstrain))
            model.set_import("eigenstrain", eps)
        return model

    # -- parameters -----------------------------------------------------------------------------------------------
    def parameter_grid(self, name: str):
        """The damage field lives on the nodes' scalar grid (the state grid carries 2 or 4 components per node)."""
        if name == "damage":
            return self.mesh.scalar
        return super().parameter_grid(name)

    def _fill_damage(self, damage, vec: PETSc.Vec) -> None:
        grid = self.mesh.scalar
        if callable(damage):
            grid.from_function(damage, vec)
        elif np.ndim(damage) == 0:
            vec.set(float(damage))
        else:
            arr = np.asarray(damage, dtype=float)
            if arr.size != grid.size:
                raise ModelError(self.name, f"damage field has {arr.size} values, the mesh has {grid.size} nodes "
                                            f"({grid.shape[1]} x {grid.shape[0]})")
            grid.set_global(arr, vec)

    def _check_damage(self, vec: PETSc.Vec) -> None:
        arr = vec.getArray(readonly=True)
        local = (float(arr.min()) if arr.size else np.inf, float(arr.max()) if arr.size else -np.inf,
                 bool(np.all(np.isfinite(arr))))
        comm = self.mesh.scalar.comm_mpi()
        lo, hi = comm.allreduce(local[0], op=MPI.MIN), comm.allreduce(local[1], op=MPI.MAX)
        finite = comm.allreduce(local[2], op=MPI.LAND)
        if not finite or lo < 0.0 or hi >= 1.0:
            raise ModelError(self.name, f"damage must lie in [0, 1) everywhere (d = 1 is a hole with no stiffness); "
                                        f"got values in [{lo:g}, {hi:g}]{'' if finite else ' and non-finite values'}")

    def set_parameter(self, name: str, value: Any) -> None:
        """Set a parameter; the damage field is checked to lie in [0, 1) and ``E0`` to be positive first."""
        if name == "damage":
            trial = self.parameters["damage"].value.duplicate()
            if isinstance(value, PETSc.Vec):
                value.copy(trial)
            else:
                trial.getArray()[...] = np.asarray(value, dtype=float).ravel()
            try:
                self._check_damage(trial)
            finally:
                trial.destroy()
        elif name == "E0" and not (np.isfinite(float(value)) and float(value) > 0):
            raise ModelError(self.name, f"Young's modulus E0 must be positive, got {value}")
        super().set_parameter(name, value)

    def parameters_changed(self, names: Sequence[str]) -> None:
        self.ops.E0 = float(self.parameters["E0"].value)
        for key, p in self.parameters.items():
            if key.startswith("load_"):
                self.forcing.scales[key[len("load_"):]] = float(p.value)
        self._version += 1

    def set_import(self, name: str, value: PETSc.Vec) -> None:
        if name not in self.IMPORTS:
            raise ModelError(self.name, f"unknown import '{name}'; the structure model imports {list(self.IMPORTS)}")
        grid = self.field_grid(name)
        probe = grid.create_global()
        sizes = (probe.getSize(), probe.getLocalSize())
        probe.destroy()
        if (value.getSize(), value.getLocalSize()) != sizes:
            raise ModelError(self.name, f"import '{name}' has {value.getSize()} values ({value.getLocalSize()} on this "
                                        f"rank); its grid needs {sizes[0]} ({sizes[1]})")
        if name == "wind":
            self._set_wind(value)
            return
        if self.wind is not None and name == f"traction_{self.wind.boundary}":
            raise ModelError(self.name, f"import '{name}' and the wind load both act on the {self.wind.boundary} "
                                        f"edge; move the wind load (wind.boundary) or the traction")
        super().set_import(name, value)

    def _set_wind(self, value: PETSc.Vec) -> None:
        """Turn the imported wind velocity [m/s] into the drag traction on the windward edge (module docstring)."""
        if self.wind is None:
            raise ModelError(self.name, "import 'wind' needs a wind load in the configuration, e.g. "
                                        "wind: {boundary: left, drag_coefficient: 1.2}")
        disp = self.mesh.disp
        if self._wind_traction is None:
            self._wind_traction = disp.create_global()
        u = disp.owned_array(value, readonly=True)
        if not bool(disp.comm_mpi().allreduce(bool(np.all(np.isfinite(u))), op=MPI.LAND)):
            raise ModelError(self.name, "import 'wind' has non-finite values")
        disp.owned_array(self._wind_traction)[...] = self.wind.traction(u)
        self.imports[f"traction_{self.wind.boundary}"] = self._wind_traction

    def field_grid(self, name: str):
        """The grid of a coupling field: ``mesh.scalar`` for von Mises, mean stress and eigenstrain, ``mesh.disp``
        for displacement, body force, tractions and wind."""
        if name in self.SCALAR_FIELDS:
            return self.mesh.scalar
        if name in ("displacement",) + self.IMPORTS:
            return self.mesh.disp
        raise ModelError(self.name, f"unknown coupling field '{name}'; the structure model exports "
                                    f"{list(COUPLING_EXPORTS)} and imports {list(self.IMPORTS)}")

    def stiffness(self) -> PETSc.Mat:
        """The stiffness ``K(d)`` on ``mesh.disp`` (re-assembled when parameters changed), constrained rows
        identity-scaled. Collective."""
        if self._k_version != self._version:
            self.ops.stiffness(self.K, self.parameters["damage"].value)
            self._k_version = self._version
        return self.K

    @property
    def damage(self) -> PETSc.Vec:
        return self.parameters["damage"].value

    # -- forward --------------------------------------------------------------------------------------------------
    def load_vector(self, t: float, out: PETSc.Vec | None = None) -> PETSc.Vec:
        """Nodal forces ``f(t, d)`` [N] on ``mesh.disp``."""
        out = out if out is not None else self.mesh.disp.create_global()
        return self.forcing.total(t, self.damage, self.imports, out)

    def solve_static(self, t: float, u: PETSc.Vec) -> int:
        """``u = K(d)^{-1} f(t)`` on ``mesh.disp`` (``u`` is the initial guess). Returns KSP iterations."""
        self.stiffness()
        self.load_vector(t, self._f)
        return self.static.solve(self._f, u, t)

    def initial_state(self) -> PETSc.Vec:
        x = self.create_state()
        if self.mode == "dynamic" and self.initial == "static":
            u = self.mesh.disp.create_global()
            u.set(0.0)
            self.solve_static(0.0, u)
            self.grid.owned_array(x)[..., :2] = self.mesh.disp.owned_array(u, readonly=True)
            u.destroy()
        return x

    def advance(self, state: PETSc.Vec, t0: float, t1: float) -> None:
        if self.mode == "static":
            self.solve_static(t1, state)
        else:
            self.dynamic._g_cache = None
            self.dynamic.advance(state, t0, t1, self._version)

    # -- outputs --------------------------------------------------------------------------------------------------
    def displacement(self, state: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec:
        """The displacement part of a state, as a vector on ``mesh.disp`` [m]."""
        out = out if out is not None else self.mesh.disp.create_global()
        self.mesh.disp.owned_array(out)[...] = self.grid.owned_array(state, readonly=True)[..., :2]
        return out

    def element_stresses(self, state: PETSc.Vec) -> np.ndarray:
        """Element-centre stresses ``(nej, nei, 3)`` [Pa] of the owned elements."""
        u = self.displacement(state)
        u_e = self.mesh.element_values(self.mesh.disp, u)
        u.destroy()
        return element_stress(self.ops, u_e, self.ops.moduli(self.damage),
                              self.ops.eigenstrain_elements(self.imports))

    def von_mises(self, state: PETSc.Vec) -> np.ndarray:
        """Element von Mises stresses ``(nej, nei)`` [Pa] of the owned elements."""
        return von_mises(self.element_stresses(state), self.material.nu, self.plane)

    def strain_energy(self, state: PETSc.Vec) -> float:
        """``U = 1/2 u^T K(d) u`` [J]. Collective."""
        u = self.displacement(state)
        Ku = u.duplicate()
        self.stiffness().mult(u, Ku)
        energy = 0.5 * u.dot(Ku)
        u.destroy()
        Ku.destroy()
        return float(energy)

    def mass_matrix(self) -> PETSc.Mat:
        """Consistent mass on ``mesh.disp`` with zero rows/columns at the constrained dofs (built once)."""
        if self._M is None:
            self._M = self.mesh.disp.da.createMatrix()
            self.ops.mass(self._M, 0.0)
        return self._M

    def natural_frequencies(self, n_modes: int = 1) -> np.ndarray:
        """The lowest ``n_modes`` natural frequencies [Hz] of the current (damaged) structure. Collective."""
        cache = self._freq_cache
        if cache is not None and cache[0] == self._version and cache[1] >= n_modes:
            return cache[2][:n_modes]
        freqs = natural_frequencies(self.static, self.stiffness(), self.mass_matrix(), n_modes)
        self._freq_cache = (self._version, n_modes, freqs)
        return freqs

    def qoi(self, state: PETSc.Vec, t: float) -> dict[str, QoI]:
        comm = self.mesh.disp.comm_mpi()
        vm = self.von_mises(state)
        u = self.displacement(state)
        umax = self.mesh.disp.owned_array(u, readonly=True)
        local_u = float(np.sqrt((umax ** 2).sum(axis=-1)).max()) if umax.size else 0.0
        u.destroy()
        return {
            "max_von_mises": QoI(comm.allreduce(float(vm.max()) if vm.size else 0.0, op=MPI.MAX), "Pa",
                                 "maximum von Mises stress"),
            "max_displacement": QoI(comm.allreduce(local_u, op=MPI.MAX), "m", "maximum displacement magnitude"),
            "strain_energy": QoI(self.strain_energy(state), "J", "strain energy 1/2 u^T K u"),
            "first_natural_frequency": QoI(float(self.natural_frequencies(1)[0]), "Hz",
                                           "first natural frequency of the damaged structure"),
        }

    def exports(self, state: PETSc.Vec) -> dict[str, PETSc.Vec]:
        """``displacement`` [m] on ``mesh.disp``; ``von_mises`` and ``mean_stress`` [Pa] (nodal means of the element
        values) on ``mesh.scalar``. New vectors, owned (and destroyed) by the caller. Collective."""
        stress = self.element_stresses(state)
        vm = von_mises(stress, self.material.nu, self.plane)
        sz = self.material.nu * (stress[..., 0] + stress[..., 1]) if self.plane == "strain" else 0.0
        mean = (stress[..., 0] + stress[..., 1] + sz) / 3.0
        return {"displacement": self.displacement(state),
                "von_mises": nodal_average(self.mesh, vm, self.mesh.scalar.create_global()),
                "mean_stress": nodal_average(self.mesh, mean, self.mesh.scalar.create_global())}

    def destroy(self) -> None:
        self.static.destroy()
        if self.dynamic is not None:
            self.dynamic.destroy()
        self.forcing.destroy()
        for obj in (self.K, self._M, self._f, self._wind_traction):
            if obj is not None:
                obj.destroy()
        for p in self.parameters.values():
            if p.is_field:
                p.value.destroy()
        self.mesh.destroy()

