"""Loads of the structure model: nodal force vectors from body forces, edge tractions and eigenstrains.

Equations
---------
With Q1 shape functions ``N_a`` and thickness ``t`` [m], the consistent nodal forces [N] are::

    body force b(x) [N/m^3]:         f_a = t int_Omega N_a b dA           (b bilinear from its nodal values)
    traction tau(x) [Pa] on an edge: f_a = t int_edge  N_a tau ds        (tau linear between edge nodes)
    eigenstrain eps*(x) [1]:         f_e = E_e eps*_e t int B^T D (1, 1, 0) dA   (element mean of nodal eps*)

Wind from a coupled atmosphere (import ``wind``, the horizontal velocity ``U = (u, v)`` [m/s] at the structure's
site) becomes a drag traction on the windward edge (Morison/quasi-steady drag of a bluff section)::

    tau = 1/2 rho_air C_d |U| (u, 0)           [Pa]

the component of the drag force ``1/2 rho_air C_d |U| U`` in the plane of the model, whose x axis is the
atmosphere's x axis (``v`` is out of plane and only adds to the speed).

A *load case* is one named body force or traction with a time function ``phi(t)`` and a scale parameter ``s``
(``load_<name>``, default 1): it contributes ``s phi(t) f``. Scale parameters are estimable, so loads can be identified
by assimilation (the gradient is ``dJ/ds = -lambda^T dR/ds``, computed with the adjoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from twin.core.errors import ModelError
from twin.kinds.structure.elements import ReferenceElement
from twin.kinds.structure.mesh import EDGES, ElementMesh


@dataclass(frozen=True)
class TimeFunction:
    """Load history ``phi(t)`` [1].

    Parameters
    ----------
    kind : {"constant", "harmonic", "table"}
        ``constant``: 1. ``harmonic``: ``sin(2 pi frequency t + phase)``. ``table``: piecewise linear through
        ``(times, factors)``, constant beyond the ends.
    frequency : float
        Hz (harmonic).
    phase : float
        Radians (harmonic).
    times, factors : sequence of float
        Table points (seconds, increasing).
    """

    kind: str = "constant"
    frequency: float = 0.0
    phase: float = 0.0
    times: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in ("constant", "harmonic", "table"):
            raise ValueError(f"time function kind must be constant, harmonic or table, got {self.kind!r}")
        if self.kind == "table":
            t = np.asarray(self.times, dtype=float)
            if t.size < 1 or t.size != len(self.factors) or np.any(np.diff(t) <= 0):
                raise ValueError("a table time function needs as many factors as strictly increasing times")

    def __call__(self, t: float) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "harmonic":
            return float(np.sin(2.0 * np.pi * self.frequency * t + self.phase))
        return float(np.interp(t, self.times, self.factors))


@dataclass
class LoadCase:
    """A named load: a uniform body force or a uniform traction on a named edge, with its history.

    Attributes
    ----------
    name : str
    kind : {"body_force", "traction"}
    value : (float, float)
        ``(x, y)`` components: N/m^3 for a body force, Pa for a traction.
    boundary : str
        Edge name for a traction.
    history : TimeFunction
    """

    name: str
    kind: str
    value: tuple[float, float]
    boundary: str = ""
    history: TimeFunction = field(default_factory=TimeFunction)


@dataclass(frozen=True)
class WindLoad:
    """Quasi-steady drag of the imported wind on one edge (module docstring).

    Attributes
    ----------
    boundary : str
        The windward edge that carries the traction.
    air_density : float
        ``rho_air`` [kg/m^3].
    drag_coefficient : float
        ``C_d`` [1] of the section.
    """

    boundary: str = "left"
    air_density: float = 1.225
    drag_coefficient: float = 1.2

    def check(self, component: str) -> None:
        if self.boundary not in EDGES:
            raise ModelError(component, f"wind load: unknown boundary '{self.boundary}'; use one of {list(EDGES)}")
        if not (np.isfinite(self.air_density) and self.air_density > 0):
            raise ModelError(component, f"wind load: air density must be positive, got {self.air_density}")
        if not (np.isfinite(self.drag_coefficient) and self.drag_coefficient >= 0):
            raise ModelError(component, f"wind load: drag coefficient must be >= 0, got {self.drag_coefficient}")

    def traction(self, wind: np.ndarray) -> np.ndarray:
        """Traction ``(..., 2)`` [Pa] from wind velocities ``(..., 2)`` [m/s] (vectorised over nodes)."""
        speed = np.sqrt(wind[..., 0] ** 2 + wind[..., 1] ** 2)
        out = np.zeros_like(wind)
        out[..., 0] = 0.5 * self.air_density * self.drag_coefficient * speed * wind[..., 0]
        return out


def body_force_array(mesh: ElementMesh, ref: ReferenceElement, b_ghosted: np.ndarray) -> np.ndarray:
    """Ghosted nodal forces ``(gny, gnx, 2)`` of a nodal body-force field given as a ghosted ``(gny, gnx, 2)`` array."""
    out = mesh.zeros(2)
    be = mesh.corners(b_ghosted)  # (nej, nei, 4, 2)
    mesh.add_corners(out, np.einsum("ab,jibc->jiac", ref.M_scalar, be))
    return out


def traction_array(mesh: ElementMesh, ref: ReferenceElement, edge: str, tau_ghosted: np.ndarray) -> np.ndarray:
    """Ghosted nodal forces ``(gny, gnx, 2)`` of a traction on ``edge``, linear between the nodal values of the
    ghosted ``(gny, gnx, 2)`` array ``tau_ghosted`` [Pa] (only its values on the edge are used)."""
    if edge not in EDGES:
        raise ModelError(mesh.name, f"unknown boundary '{edge}' for a traction; use one of {list(EDGES)}")
    out = mesh.zeros(2)
    nx, ny = mesh.disp.shape
    (xs, xe), (ys, ye) = mesh.disp.owned
    oj, oi = mesh.offset
    t = ref.thickness
    if edge in ("bottom", "top"):
        line = 0 if edge == "bottom" else ny - 1
        if not ys <= line < ye:
            return out
        r = oj + line - ys
        h, n = mesh.hx, mesh.nei
        ta, tb = tau_ghosted[r, oi:oi + n], tau_ghosted[r, oi + 1:oi + 1 + n]
        out[r, oi:oi + n] += t * h / 6.0 * (2.0 * ta + tb)
        out[r, oi + 1:oi + 1 + n] += t * h / 6.0 * (ta + 2.0 * tb)
    else:
        line = 0 if edge == "left" else nx - 1
        if not xs <= line < xe:
            return out
        c = oi + line - xs
        h, n = mesh.hy, mesh.nej
        ta, tb = tau_ghosted[oj:oj + n, c], tau_ghosted[oj + 1:oj + 1 + n, c]
        out[oj:oj + n, c] += t * h / 6.0 * (2.0 * ta + tb)
        out[oj + 1:oj + 1 + n, c] += t * h / 6.0 * (ta + 2.0 * tb)
    return out


def eigenstrain_element_forces(ref: ReferenceElement, modulus_e: np.ndarray, eps_e: np.ndarray) -> np.ndarray:
    """Element nodal forces ``(nej, nei, 4, 2)`` of element-mean eigenstrains ``eps_e`` with moduli ``modulus_e``."""
    return (modulus_e * eps_e)[:, :, None, None] * ref.F_eig.reshape(4, 2)[None, None]


def load_case_array(mesh: ElementMesh, ref: ReferenceElement, case: LoadCase) -> np.ndarray:
    """Ghosted nodal forces of one uniform load case at unit history and unit scale."""
    uniform = np.broadcast_to(np.asarray(case.value, dtype=float), mesh.ghost_shape + (2,))
    if case.kind == "body_force":
        return body_force_array(mesh, ref, uniform)
    if case.kind == "traction":
        return traction_array(mesh, ref, case.boundary, uniform)
    raise ModelError(mesh.name, f"load '{case.name}': unknown kind '{case.kind}' (body_force or traction)")


def zero_constrained(mesh: ElementMesh, ghosted_forces: np.ndarray) -> np.ndarray:
    """Forces on constrained dofs are reactions, not loads: zero them (the rows are identity rows)."""
    ghosted_forces[mesh.constrained] = 0.0
    return ghosted_forces


def check_vector(name: str, component: str, value: Sequence[float]) -> tuple[float, float]:
    v = tuple(float(x) for x in value)
    if len(v) != 2 or not np.all(np.isfinite(v)):
        raise ModelError(component, f"load '{name}': value must be two finite numbers (x, y), got {value}")
    return v  # type: ignore[return-value]


__all__ = ["TimeFunction", "LoadCase", "WindLoad", "body_force_array", "traction_array", "eigenstrain_element_forces",
           "load_case_array", "zero_constrained", "check_vector"]
