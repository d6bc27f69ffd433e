"""Q1 (bilinear, four-node) plane elasticity elements on a uniform rectangular mesh.

Equations
---------
Small-strain linear elasticity in 2-D, plane stress or plane strain, thickness ``t`` [m]::

    eps = B u_e                      strain (eps_xx, eps_yy, gamma_xy), gamma_xy = 2 eps_xy  [1]
    sigma = E D(nu) (eps - eps*)     stress (sigma_xx, sigma_yy, tau_xy)                      [Pa]
    K_e = t int B^T E D B dA         element stiffness                                        [N/m]
    M_e = t int rho N^T N dA         consistent element mass                                  [kg]

``E`` is Young's modulus [Pa], ``nu`` Poisson's ratio [1], ``rho`` density [kg/m^3], ``eps*`` an in-plane isotropic
eigenstrain (``eps*_xx = eps*_yy``, no shear; out-of-plane eigenstrain zero in plane strain).

Why hand-written: on a uniform mesh every element is the same rectangle, so each element matrix is a reference
matrix (computed here once with 2x2 Gauss quadrature, exact for these integrands) times the element's scalar
coefficient (``E_e`` or ``rho``). Assembly then needs no per-element quadrature at all: it is a broadcast multiply.

Local numbering: nodes counter-clockwise from the lower-left corner, ``(i, j), (i+1, j), (i+1, j+1), (i, j+1)``;
element dofs interleaved ``(u0x, u0y, u1x, u1y, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.core.errors import ModelError

#: offsets (di, dj) of the four element nodes from the lower-left node
CORNERS = ((0, 0), (1, 0), (1, 1), (0, 1))
#: natural coordinates of the corners
_XI = np.array([-1.0, 1.0, 1.0, -1.0])
_ETA = np.array([-1.0, -1.0, 1.0, 1.0])
_GAUSS = (-1.0 / np.sqrt(3.0), 1.0 / np.sqrt(3.0))


def constitutive_matrix(nu: float, plane: str) -> np.ndarray:
    """Elasticity matrix ``D`` for unit Young's modulus, Voigt order (xx, yy, xy) with engineering shear.

    Parameters
    ----------
    nu : float
        Poisson's ratio, ``0 <= nu < 0.5``.
    plane : {"stress", "strain"}
        Plane stress (thin plate, sigma_zz = 0) or plane strain (eps_zz = 0).
    """
    if plane == "stress":
        return np.array([[1.0, nu, 0.0], [nu, 1.0, 0.0], [0.0, 0.0, 0.5 * (1.0 - nu)]]) / (1.0 - nu * nu)
    if plane == "strain":
        c = 1.0 / ((1.0 + nu) * (1.0 - 2.0 * nu))
        return c * np.array([[1.0 - nu, nu, 0.0], [nu, 1.0 - nu, 0.0], [0.0, 0.0, 0.5 * (1.0 - 2.0 * nu)]])
    raise ValueError(f"plane must be 'stress' or 'strain', got {plane!r}")


def shape_functions(xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Bilinear shape functions at natural points, shape ``(..., 4)``."""
    xi, eta = np.asarray(xi, dtype=float), np.asarray(eta, dtype=float)
    return 0.25 * (1.0 + xi[..., None] * _XI) * (1.0 + eta[..., None] * _ETA)


def strain_matrix(xi: np.ndarray, eta: np.ndarray, hx: float, hy: float) -> np.ndarray:
    """Strain-displacement matrices ``B`` at natural points, shape ``(..., 3, 8)``."""
    xi, eta = np.asarray(xi, dtype=float), np.asarray(eta, dtype=float)
    dndx = 0.25 * _XI * (1.0 + eta[..., None] * _ETA) * (2.0 / hx)
    dndy = 0.25 * _ETA * (1.0 + xi[..., None] * _XI) * (2.0 / hy)
    B = np.zeros(xi.shape + (3, 8))
    B[..., 0, 0::2] = dndx
    B[..., 1, 1::2] = dndy
    B[..., 2, 0::2] = dndy
    B[..., 2, 1::2] = dndx
    return B


class ReferenceElement:
    """The reference matrices of one ``hx`` x ``hy`` Q1 element for unit coefficients.

    Attributes
    ----------
    K : ndarray (8, 8)
        Stiffness for ``E = 1`` [m^3 ... per Pa]: multiply by ``E_e``.
    M : ndarray (8, 8)
        Consistent mass for ``rho = 1``: multiply by ``rho``.
    M_scalar : ndarray (4, 4)
        Scalar consistent "mass" ``t int N_a N_b dA`` (nodal load from a bilinear body-force field).
    F_eig : ndarray (8,)
        Nodal forces of a unit isotropic eigenstrain for ``E = 1``: ``t int B^T D (1, 1, 0) dA``.
    B_centre : ndarray (3, 8)
        Strain-displacement matrix at the element centre (strain and stress output).
    D : ndarray (3, 3)
        Constitutive matrix for ``E = 1``.
    """

    def __init__(self, hx: float, hy: float, nu: float, plane: str, thickness: float = 1.0):
        self.hx, self.hy, self.nu, self.plane, self.thickness = float(hx), float(hy), float(nu), plane, thickness
        self.D = constitutive_matrix(nu, plane)
        g = np.array(_GAUSS)
        xi, eta = np.meshgrid(g, g, indexing="ij")
        xi, eta = xi.ravel(), eta.ravel()
        weight = thickness * hx * hy / 4.0  # Gauss weights are 1; detJ = hx hy / 4
        B = strain_matrix(xi, eta, hx, hy)
        N = shape_functions(xi, eta)
        self.K = weight * np.einsum("qki,kl,qlj->ij", B, self.D, B)
        self.M_scalar = weight * np.einsum("qa,qb->ab", N, N)
        self.M = np.zeros((8, 8))
        self.M[0::2, 0::2] = self.M_scalar
        self.M[1::2, 1::2] = self.M_scalar
        self.F_eig = weight * np.einsum("qki,kl,l->i", B, self.D, np.array([1.0, 1.0, 0.0]))
        self.B_centre = strain_matrix(np.array(0.0), np.array(0.0), hx, hy)


def von_mises(stress: np.ndarray, nu: float, plane: str) -> np.ndarray:
    """Von Mises equivalent stress from in-plane stresses ``(..., 3)`` [Pa].

    In plane strain the out-of-plane stress ``sigma_zz = nu (sigma_xx + sigma_yy)`` enters (no eigenstrain through
    the thickness).
    """
    sx, sy, txy = stress[..., 0], stress[..., 1], stress[..., 2]
    sz = nu * (sx + sy) if plane == "strain" else 0.0
    j2 = 0.5 * ((sx - sy) ** 2 + (sy - sz) ** 2 + (sz - sx) ** 2) + 3.0 * txy ** 2
    return np.sqrt(j2)


@dataclass(frozen=True)
class Material:
    """Material constants: ``E0`` [Pa], ``nu`` [1], ``rho`` [kg/m^3], Rayleigh ``alpha`` [1/s] and ``beta`` [s]."""

    E0: float
    nu: float
    rho: float = 1000.0
    alpha: float = 0.0
    beta: float = 0.0

    def check(self, component: str) -> None:
        if not (np.isfinite(self.E0) and self.E0 > 0):
            raise ModelError(component, f"Young's modulus E0 must be positive, got {self.E0}")
        if not 0.0 <= self.nu < 0.5:
            raise ModelError(component, f"Poisson's ratio nu must lie in [0, 0.5), got {self.nu}")
        if not (np.isfinite(self.rho) and self.rho > 0):
            raise ModelError(component, f"density rho must be positive, got {self.rho}")
        if self.alpha < 0 or self.beta < 0:
            raise ModelError(component, f"Rayleigh damping needs alpha, beta >= 0, got {self.alpha}, {self.beta}")
