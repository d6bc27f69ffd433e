"""Initial conditions of the shallow-water model, by name.

Each returns the free-surface height ``eta = h + b`` [m] and the velocities ``u, v`` [m/s] on the owned block, at
their C-grid positions; the model subtracts the topography ``b``. Lengths in metres, times in seconds.

* ``geostrophic_balance``: a zonal jet in geostrophic balance, ``eta = H + A sin(2 pi k (y - y0) / Ly)``,
  ``f u = -g d(eta)/dy``, ``v = 0``. A zonal flow ``u(y)`` in geostrophic balance is an exact steady solution of the
  nonlinear equations on an f-plane, so the discrete state drifts only by truncation error.
* ``unstable_jet``: a pair of opposite, balanced jets ``u = U [sech^2((y - Ly/4)/w) - sech^2((y - 3Ly/4)/w)]``
  (two jets keep ``eta`` periodic), ``eta = H - (f0 U w / g)(tanh((y - Ly/4)/w) - tanh((y - 3Ly/4)/w) - 1)``, plus
  a small bump ``a exp(-((y - Ly/4)/w)^2) cos(2 pi k x / Lx)`` that seeds the barotropic instability (as in
  Galewsky et al. 2004, on a plane). Exactly periodic up to ``exp(-Ly / (2 w))``, hence ``w <= Ly / 16``.
* ``balanced_turbulence``: a random streamfunction ``psi`` at the corners with a spectrum peaked at wavenumber
  ``k0`` (phases from ``seed``), ``u = -d(psi)/dy``, ``v = d(psi)/dx`` by C-grid differences (discretely
  non-divergent), ``eta = H + f0 psi / g`` (geostrophic), scaled so that ``max |u|`` equals ``speed``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable

import numpy as np

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.kinds.shallow_water.staggering import coordinates, periodic_delta


@dataclass(frozen=True)
class Physics:
    """What initial conditions need to know: gravity [m/s^2], Coriolis ``f0`` [1/s], ``beta`` [1/(m s)], mean depth
    ``H`` [m]."""

    gravity: float
    f0: float
    beta: float
    mean_depth: float


Fields = tuple[np.ndarray, np.ndarray, np.ndarray]


def _lengths(grid: Grid) -> tuple[float, float, float, float]:
    (x0, x1), (y0, y1) = grid.extent
    return x0, y0, x1 - x0, y1 - y0


def geostrophic_balance(grid: Grid, phys: Physics, component: str, amplitude: float = 10.0,
                        wavenumber: int = 1) -> Fields:
    """Zonal geostrophic jet; ``amplitude`` [m] of the height wave, ``wavenumber`` waves across the domain in y."""
    if wavenumber < 1:
        raise ModelError(component, f"geostrophic_balance: wavenumber must be >= 1, got {wavenumber}")
    _, y0, _, ly = _lengths(grid)
    k = 2 * np.pi * wavenumber / ly
    _, yh = coordinates(grid, "h")
    xu, yu = coordinates(grid, "u")
    f = phys.f0 + phys.beta * (yu - (y0 + 0.5 * ly))
    if amplitude != 0 and np.any(np.abs(f) < 1e-12):
        raise ModelError(component, "geostrophic_balance needs a Coriolis parameter f = f0 + beta (y - y_mid) that "
                                    "does not vanish in the domain; raise f0 or lower beta")
    eta = phys.mean_depth + amplitude * np.sin(k * (yh - y0))
    u = -phys.gravity / np.where(f == 0, 1.0, f) * amplitude * k * np.cos(k * (yu - y0))
    return eta, u, np.zeros_like(u)


def unstable_jet(grid: Grid, phys: Physics, component: str, speed: float = 20.0, width: float | None = None,
                 perturbation: float = 1.0, perturbation_wavenumber: int = 4) -> Fields:
    """Two balanced opposite jets of peak ``speed`` [m/s] and half-width ``width`` [m] (default ``Ly/24``), with a
    height bump of ``perturbation`` [m] and ``perturbation_wavenumber`` waves along x on the first jet."""
    x0, y0, lx, ly = _lengths(grid)
    w = ly / 24 if width is None else width
    if not 0 < w <= ly / 16:
        raise ModelError(component, f"unstable_jet: width must be in (0, Ly/16 = {ly / 16:g} m] so that the double "
                                    f"jet is periodic, got {w:g} m")
    y1, y2 = y0 + 0.25 * ly, y0 + 0.75 * ly
    xh, yh = coordinates(grid, "h")
    _, yu = coordinates(grid, "u")
    xv, _ = coordinates(grid, "v")
    bracket = np.tanh((yh - y1) / w) - np.tanh((yh - y2) / w) - 1.0
    eta = phys.mean_depth - phys.f0 * speed * w / phys.gravity * bracket
    eta = eta + perturbation * np.exp(-((yh - y1) / w) ** 2) * np.cos(2 * np.pi * perturbation_wavenumber
                                                                     * (xh - x0) / lx)
    u = speed * (np.cosh((yu - y1) / w) ** -2 - np.cosh((yu - y2) / w) ** -2)
    return eta, u, np.zeros_like(xv)


def balanced_turbulence(grid: Grid, phys: Physics, component: str, speed: float = 10.0, wavenumber: int = 6,
                        seed: int = 0) -> Fields:
    """Random geostrophic turbulence with ``max |u| = speed`` [m/s], energy peaked at ``wavenumber`` (waves per
    domain length), phases from ``seed`` (every rank draws the same whole field, then keeps its block)."""
    if wavenumber < 1:
        raise ModelError(component, f"balanced_turbulence: wavenumber must be >= 1, got {wavenumber}")
    nx, ny = grid.shape
    dx, dy = grid.spacing
    rng = np.random.default_rng(seed)
    kx = np.fft.fftfreq(nx, 1.0 / nx)[None, :]
    ky = np.fft.fftfreq(ny, 1.0 / ny)[:, None]
    k = np.hypot(kx, ky)
    amplitude = np.where(k > 0, np.exp(-0.5 * ((k - wavenumber) / max(1.0, 0.25 * wavenumber)) ** 2)
                         / np.maximum(k, 1.0), 0.0)
    phases = np.exp(2j * np.pi * rng.random((ny, nx)))
    psi = np.real(np.fft.ifft2(amplitude * phases))  # at the corners (i, j)
    u = -(np.roll(psi, -1, axis=0) - psi) / dy
    v = (np.roll(psi, -1, axis=1) - psi) / dx
    scale = speed / max(np.abs(u).max(), np.abs(v).max(), 1e-300)
    psi_centre = 0.25 * (psi + np.roll(psi, -1, 0) + np.roll(psi, -1, 1) + np.roll(np.roll(psi, -1, 0), -1, 1))
    eta = phys.mean_depth + phys.f0 / phys.gravity * scale * psi_centre
    block = grid.owned_slices
    return eta[block].copy(), (scale * u)[block].copy(), (scale * v)[block].copy()


#: every initial condition by name (read-only)
INITIAL_CONDITIONS: "MappingProxyType[str, Callable[..., Fields]]" = MappingProxyType({
    "geostrophic_balance": geostrophic_balance,
    "unstable_jet": unstable_jet,
    "balanced_turbulence": balanced_turbulence,
})


def make_initial(name: str, grid: Grid, phys: Physics, component: str, **options) -> Fields:
    """Evaluate the initial condition ``name`` with ``options``; unknown names list the known ones.

    Raises
    ------
    ModelError
        Unknown name, unknown option, or an option value the condition cannot use.
    """
    fn = INITIAL_CONDITIONS.get(name)
    if fn is None:
        raise ModelError(component, f"unknown initial condition {name!r}; known: {sorted(INITIAL_CONDITIONS)}")
    known = [k for k in inspect.signature(fn).parameters if k not in ("grid", "phys", "component")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ModelError(component, f"initial condition {name!r} has no option(s) {unknown}; it takes {known}")
    return fn(grid, phys, component, **options)


def gaussian_blob(grid: Grid, center: tuple[float, float], radius: float, amplitude: float = 1.0,
                  background: float = 0.0, kind: str = "h") -> np.ndarray:
    """``background + amplitude exp(-d^2 / radius^2)`` at the owned ``kind`` points, ``d`` the periodic distance
    to ``center`` [m]."""
    x, y = coordinates(grid, kind)
    (x0, x1), (y0, y1) = grid.extent
    d2 = periodic_delta(x, center[0], x1 - x0) ** 2 + periodic_delta(y, center[1], y1 - y0) ** 2
    return background + amplitude * np.exp(-d2 / radius ** 2)
