"""The semi-discrete rotating shallow-water tendencies on an Arakawa C-grid (Sadourny's energy-conserving scheme).

Equations (vector-invariant form, SI units)::

    dh/dt   = -div(h u)                                             h    layer thickness                  [m]
    du/dt   =  q h v - d/dx (g (h + b) + K) - r u + A F(y) + S_u     u, v velocity                      [m/s]
    dv/dt   = -q h u - d/dy (g (h + b) + K) - r v + S_v              b    bottom topography               [m]
    dphi/dt = -div(h u c),  c = phi / h                             phi  tracer column amount (h c)      [m]

with potential vorticity ``q = (f + zeta) / h`` [1/(m s)], relative vorticity ``zeta = dv/dx - du/dy`` [1/s],
kinetic energy per unit mass ``K = (u^2 + v^2)/2`` [m^2/s^2], Coriolis parameter ``f = f0 + beta (y - y_mid)`` [1/s],
gravity ``g`` [m/s^2], linear drag ``r`` [1/s], forcing amplitude ``A`` [m/s^2] times a fixed zonal shape ``F(y)``
[1], and optional extra sources ``S`` (manufactured solutions).

Discretisation (why): a C-grid keeps the gravity-wave dispersion of the continuous equations well (no checkerboard
modes), the flux-form continuity and tracer equations conserve mass and tracer mass to round-off, and the Sadourny
(1975) energy-conserving form of the Coriolis term ``+avg_y(q avg_x(V))`` / ``-avg_x(q avg_y(U))`` with the
Bernoulli function ``B = g (h + b) + (avg_x(u^2) + avg_y(v^2)) / 2`` conserves the semi-discrete total energy
``sum (h K + g h (h/2 + b))``. It is second order in space. On cell ``(j, i)`` of a DMDA (C order ``a[j, i]``) the
unknowns sit at ``h``: centre ``(i+1/2, j+1/2)``, ``u``: west face ``(i, j+1/2)``, ``v``: south face
``(i+1/2, j)``, ``q``: south-west corner ``(i, j)``, all in units of the cell widths ``dx, dy``.

The kernel reads ghosted arrays (one ghost layer on every side: the domain is doubly periodic) and returns the
tendencies on the owned block. Every output point depends only on inputs in the 3 x 3 box around it, which fixes
the sparsity of the Jacobian (a DMDA box stencil of width 1).

The same code runs on plain NumPy arrays and on :class:`Dual` numbers (exact forward-mode derivatives, used for the
tangent-linear model and to assemble the Jacobian). The forward model runs a compiled float64 transcription of it
(:mod:`.compiled` says why and how much faster), tested equal to this reference to round-off; the reverse sweep
(:mod:`.reverse`) is checked against the Jacobian assembled from this code. Hand-written forward-mode
differentiation was chosen over finite differences because the adjoint must be exact to round-off (Taylor tests show
rate 2 only with an exact Jacobian), and over a second hand-linearised kernel because one kernel cannot drift from
its own derivative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class Dual:
    """``v + sum_k d[k] eps_k`` with ``eps_k eps_l = 0``: a value and its derivatives in ``m`` directions at once.

    ``v`` is an array (or scalar); ``d`` has shape ``(m,) + v.shape`` or a shape broadcastable to it (parameters
    carry ``d`` of shape ``(m, 1, 1)``). Arithmetic with plain arrays and floats treats them as constants.
    """

    __slots__ = ("v", "d")
    __array_ufunc__ = None  # make NumPy defer ``array * Dual`` to Dual.__rmul__

    def __init__(self, v: Any, d: np.ndarray):
        self.v = v
        self.d = d

    def __getitem__(self, idx) -> "Dual":
        idx = idx if isinstance(idx, tuple) else (idx,)
        d = self.d
        shape = np.shape(self.v)
        if d.shape[1:] != shape:
            d = np.broadcast_to(d, (d.shape[0],) + shape)
        return Dual(self.v[idx], d[(slice(None),) + idx])

    def __neg__(self) -> "Dual":
        return Dual(-self.v, -self.d)

    def __add__(self, other) -> "Dual":
        if isinstance(other, Dual):
            return Dual(self.v + other.v, self.d + other.d)
        return Dual(self.v + other, self.d)

    __radd__ = __add__

    def __sub__(self, other) -> "Dual":
        if isinstance(other, Dual):
            return Dual(self.v - other.v, self.d - other.d)
        return Dual(self.v - other, self.d)

    def __rsub__(self, other) -> "Dual":
        return Dual(other - self.v, -self.d)

    def __mul__(self, other) -> "Dual":
        if isinstance(other, Dual):
            return Dual(self.v * other.v, self.d * other.v + self.v * other.d)
        return Dual(self.v * other, self.d * other)

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Dual":
        if isinstance(other, Dual):
            ratio = self.v / other.v
            return Dual(ratio, (self.d - ratio * other.d) / other.v)
        return Dual(self.v / other, self.d / other)

    def __rtruediv__(self, other) -> "Dual":
        ratio = other / self.v
        return Dual(ratio, -ratio * self.d / self.v)


def tangent(x: Any, m: int, shape: tuple[int, ...]) -> np.ndarray:
    """The derivative array of ``x`` in ``m`` directions over ``shape`` (zeros for a constant)."""
    if isinstance(x, Dual):
        return np.broadcast_to(x.d, (m,) + shape)
    return np.zeros((m,) + shape)


def value(x: Any) -> Any:
    return x.v if isinstance(x, Dual) else x


@dataclass
class Geometry:
    """Constant data of one rank's block: spacings, Coriolis coordinates, forcing shape, topography.

    Attributes
    ----------
    dx, dy : float
        Cell widths [m].
    y_corner : ndarray, shape (ny + 1, 1)
        ``y - y_mid`` at the corner rows ``0 .. ny`` of the owned block (wrapped into the periodic domain) [m].
    forcing_shape : ndarray, shape (ny, 1)
        ``F(y)`` at the owned u-points [1].
    topography : ndarray, shape (ny + 2, nx + 2)
        ``b`` on the ghosted block [m].
    """

    dx: float
    dy: float
    y_corner: np.ndarray
    forcing_shape: np.ndarray
    topography: np.ndarray


def _w(a, j0: int, j1: int, i0: int, i1: int):
    """Window of a ghosted array: owned rows ``j0 .. ny-1+j1`` and columns ``i0 .. nx-1+i1`` (ghost width 1)."""
    ny2, nx2 = np.shape(value(a))[-2:]
    return a[1 + j0:ny2 - 1 + j1, 1 + i0:nx2 - 1 + i1]


def tendency(fields: list, geo: Geometry, p: dict, sources: list | None = None) -> list:
    """Tendencies ``[dh, du, dv(, dphi)]/dt`` on the owned block.

    Parameters
    ----------
    fields : list of arrays or Dual
        Ghosted ``h, u, v`` (and ``phi`` when a tracer is carried), each of shape ``(ny + 2, nx + 2)``.
    geo : Geometry
        Constant data of the block.
    p : dict
        ``gravity, f0, beta, drag, forcing_amplitude`` (floats or Dual).
    sources : list of arrays, optional
        Extra sources ``S_h, S_u, S_v(, S_phi)`` on the owned block (manufactured solutions).
    """
    h, u, v = fields[:3]
    dx, dy = geo.dx, geo.dy
    g = p["gravity"]
    # Mass fluxes U = avg_x(h) u on rows -1..ny-1, columns 0..nx; V = avg_y(h) v on rows 0..ny, columns -1..nx-1.
    U = 0.5 * (_w(h, -1, 0, -1, 0) + _w(h, -1, 0, 0, 1)) * _w(u, -1, 0, 0, 1)
    V = 0.5 * (_w(h, -1, 0, -1, 0) + _w(h, 0, 1, -1, 0)) * _w(v, 0, 1, -1, 0)
    # Potential vorticity at the corners, rows 0..ny, columns 0..nx.
    zeta = (_w(v, 0, 1, 0, 1) - _w(v, 0, 1, -1, 0)) / dx - (_w(u, 0, 1, 0, 1) - _w(u, -1, 0, 0, 1)) / dy
    h_corner = 0.25 * (_w(h, 0, 1, 0, 1) + _w(h, 0, 1, -1, 0) + _w(h, -1, 0, 0, 1) + _w(h, -1, 0, -1, 0))
    q = (p["f0"] + p["beta"] * geo.y_corner + zeta) / h_corner
    # Bernoulli function on rows -1..ny-1, columns -1..nx-1.
    u0, u1 = _w(u, -1, 0, -1, 0), _w(u, -1, 0, 0, 1)
    v0, v1 = _w(v, -1, 0, -1, 0), _w(v, 0, 1, -1, 0)
    B = g * (_w(h, -1, 0, -1, 0) + geo.topography[:-1, :-1]) + 0.25 * (u0 * u0 + u1 * u1 + v0 * v0 + v1 * v1)

    dh = -((U[1:, 1:] - U[1:, :-1]) / dx + (V[1:, 1:] - V[:-1, 1:]) / dy)
    qv = q[:, :-1] * (0.5 * (V[:, :-1] + V[:, 1:]))
    du = 0.5 * (qv[:-1] + qv[1:]) - (B[1:, 1:] - B[1:, :-1]) / dx
    qu = q[:-1, :] * (0.5 * (U[:-1, :] + U[1:, :]))
    dv = -0.5 * (qu[:, :-1] + qu[:, 1:]) - (B[1:, 1:] - B[:-1, 1:]) / dy
    drag = p["drag"]
    du = du - drag * _w(u, 0, 0, 0, 0) + p["forcing_amplitude"] * geo.forcing_shape
    dv = dv - drag * _w(v, 0, 0, 0, 0)
    out = [dh, du, dv]
    if len(fields) > 3:
        # Centred tracer fluxes U avg_x(c), V avg_y(c): constancy-preserving (c = const follows continuity exactly).
        c = fields[3] / h
        cu = 0.5 * (_w(c, -1, 0, -1, 0) + _w(c, -1, 0, 0, 1)) * U
        cv = 0.5 * (_w(c, -1, 0, -1, 0) + _w(c, 0, 1, -1, 0)) * V
        out.append(-((cu[1:, 1:] - cu[1:, :-1]) / dx + (cv[1:, 1:] - cv[:-1, 1:]) / dy))
    if sources is not None:
        out = [o + s for o, s in zip(out, sources)]
    return out


def local_energy(fields: list, geo: Geometry, gravity: float) -> float:
    """This block's part of ``sum (avg_x(h) u^2/2 + avg_y(h) v^2/2 + g h (h/2 + b))`` (multiply by dx dy) [m^4/s^2]."""
    h, u, v = fields[:3]
    hu = 0.5 * (_w(h, 0, 0, -1, -1) + _w(h, 0, 0, 0, 0))
    hv = 0.5 * (_w(h, -1, -1, 0, 0) + _w(h, 0, 0, 0, 0))
    ho = _w(h, 0, 0, 0, 0)
    ke = 0.5 * (hu * _w(u, 0, 0, 0, 0) ** 2 + hv * _w(v, 0, 0, 0, 0) ** 2)
    pe = gravity * ho * (0.5 * ho + _w(geo.topography, 0, 0, 0, 0))
    return float(np.sum(ke + pe))


def local_enstrophy(fields: list, geo: Geometry, f0: float, beta: float) -> float:
    """This block's part of the potential enstrophy ``sum h_corner q^2 / 2`` over its corners [1/(m s^2)]."""
    h, u, v = fields[:3]
    zeta = (_w(v, 0, 0, 0, 0) - _w(v, 0, 0, -1, -1)) / geo.dx - (_w(u, 0, 0, 0, 0) - _w(u, -1, -1, 0, 0)) / geo.dy
    hc = 0.25 * (_w(h, 0, 0, 0, 0) + _w(h, 0, 0, -1, -1) + _w(h, -1, -1, 0, 0) + _w(h, -1, -1, -1, -1))
    q = (f0 + beta * geo.y_corner[:-1] + zeta) / hc
    return float(np.sum(0.5 * hc * q * q))
