"""Local ensemble transform Kalman filter (LETKF; Hunt, Kostelich & Szunyogh 2007) with Gaspari-Cohn observation
localisation.

Each state entry ``p`` gets its own ETKF transform ``T_p`` from the observations near it, with ``R^-1`` tapered by
the Gaspari & Cohn (1999, eq. 4.10) function ``rho(dist / c)`` of the distance between the entry's grid point and
each observation (``c`` is the half-width: ``rho(0) = 1``, ``rho(c) = 0.208``, ``rho = 0`` beyond ``2 c``)::

    C_p = (N-1) I + Ya^T R^-1/2 diag(rho_p) R^-1/2 Ya,     w_p = C_p^-1 Ya^T R^-1/2 diag(rho_p) R^-1/2 (y - ybar)
    T_p = 1 1^T / N + Pi (w_p 1^T + [(N-1) C_p^-1]^(1/2) Q)          E_a[p, :] = E[p, :] T_p

(``Q`` an optional mean-preserving random rotation, the same for all points so the analysis stays smooth.)

Parallelism: a rank computes the local analyses of the entries it owns only; observation-space quantities are known on
every rank. The local problems are solved in batches of points: nearby observations from k-d trees, the local
matrices as one sparse-times-dense product, batched ``numpy.linalg.eigh`` (no per-point Python loop), which is what
makes LETKF on PDE grids affordable in Python. Entries that are not attached to a grid point
(e.g. estimable scalar parameters in a joint control vector) are updated with the global (unlocalised) transform;
a field parameter's entries are attached to the grid points they belong to and localised like the state.

Distances are Euclidean in the grid's coordinates, with the minimum image on periodic axes.

Coupled models (:class:`CoupledContext`): the components live on different grids, often in different length units
(an atmosphere in km, a mast in m), so there is no one distance between a mast gauge and an atmosphere cell. Each
component is analysed with its own observations, grid and radius; observations of one component do not update
another (weakly coupled assimilation: information crosses components through the coupled forecast, not through
ensemble cross-covariances, which small ensembles estimate badly). Entries of no component (scalar parameters) get
the global transform from all observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from twin.assimilation.ensemble import check_ensemble_size, etkf_transform, random_rotation
from twin.assimilation.inflation import Inflation
from twin.core.errors import AssimilationError

#: points per batch of local analyses: bounds the memory of the (batch, N, N) stacks.
BATCH = 4096
#: below this many point-observation pairs per batch, distances are computed densely instead of with k-d trees.
DENSE_PAIRS = 65536


def gaspari_cohn(distance: np.ndarray, half_width: float) -> np.ndarray:
    """The Gaspari-Cohn fifth-order piecewise rational taper; 1 at 0, zero beyond ``2 * half_width``."""
    z = np.abs(np.asarray(distance, dtype=float)) / half_width
    out = np.zeros_like(z)
    a = z <= 1.0
    za = z[a]
    out[a] = (((-0.25 * za + 0.5) * za + 0.625) * za - 5.0 / 3.0) * za ** 2 + 1.0
    b = (z > 1.0) & (z < 2.0)
    zb = z[b]
    out[b] = ((((zb / 12.0 - 0.5) * zb + 0.625) * zb + 5.0 / 3.0) * zb - 5.0) * zb + 4.0 - 2.0 / (3.0 * zb)
    return out


def distances(a: np.ndarray, b: np.ndarray, periods: np.ndarray | None = None) -> np.ndarray:
    """Pairwise Euclidean distances between points ``a`` (p, dim) and ``b`` (m, dim); minimum image where
    ``periods[axis] > 0``."""
    diff = np.abs(a[:, None, :] - b[None, :, :])
    if periods is not None:
        L = np.asarray(periods, dtype=float)
        wrap = L > 0
        if wrap.any():
            diff[..., wrap] = np.minimum(diff[..., wrap], L[wrap] - diff[..., wrap])
    return np.sqrt(np.sum(diff ** 2, axis=-1))


@dataclass
class Geometry:
    """Where the state entries sit, for localisation.

    Attributes
    ----------
    points : ndarray (n_points, dim)
        Coordinates of the grid points in natural (C) order.
    dof : int
        State entries per point (natural ordering is dof-fastest: entry ``e`` is at point ``e // dof``).
    periods : ndarray (dim,)
        Period of each axis (0 for non-periodic).
    """

    points: np.ndarray
    dof: int = 1
    periods: np.ndarray | None = None

    @classmethod
    def from_grid(cls, grid) -> "Geometry":
        """The geometry of a :class:`~twin.core.grid.Grid` (coordinates in natural order, periodic extents)."""
        mesh = grid.mesh()
        points = np.stack([c.ravel() for c in mesh], axis=1)
        periods = np.array([hi - lo if p else 0.0 for (lo, hi), p in zip(grid.extent, grid.periodic)])
        return cls(points, grid.dof, periods)

    @property
    def n_entries(self) -> int:
        return self.points.shape[0] * self.dof

    def entry_points(self, start: int, stop: int, fields=()) -> np.ndarray:
        """Point index of the control-vector entries ``start .. stop-1``: state entries at their grid point, the
        entries of each field parameter (``fields``: its rows ``(lo, hi)`` in the whole control vector, one value per
        grid point in natural order) at theirs, ``-1`` for the rest (scalar parameters)."""
        e = np.arange(start, stop)
        out = np.where(e < self.n_entries, e // self.dof, -1)
        for lo, hi in fields:
            if hi - lo != self.points.shape[0]:
                raise AssimilationError(f"a field parameter has {hi - lo} values, the grid {self.points.shape[0]} "
                                        "points")
            inside = (e >= lo) & (e < hi)
            out[inside] = e[inside] - lo
        return out


def _transforms(C: np.ndarray, b: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """``T_p`` from the local ``C_p`` (p, N, N, without the ``(N-1) I``) and ``b_p = Ya^T R_p^-1 (y - ybar)``."""
    N = C.shape[-1]
    C[:, np.arange(N), np.arange(N)] += N - 1
    s, V = np.linalg.eigh(C)
    Vt = V.transpose(0, 2, 1)
    # matrix-vector products of the stacks through einsum: numpy's matmul of (p, N, N) by (p, N, 1) takes a slow
    # loop (25 ms against 0.6 ms at p = 40, N = 100, NumPy 1.26)
    w = np.einsum("pij,pj->pi", V, np.einsum("pji,pj->pi", V, b) / s)[:, :, None]
    W = (V * np.sqrt((N - 1) / s)[:, None, :]) @ Vt
    if rotation is not None:
        W = W @ rotation
    return 1.0 / N + _centred(w + W)


def _centred(X: np.ndarray) -> np.ndarray:
    """``Pi X`` for a stack ``X`` (p, N, N), ``Pi = I - 1 1^T / N`` (:func:`~twin.assimilation.ensemble.centering`):
    each column less its mean, O(p N^2) instead of the O(p N^3) product."""
    return X - X.mean(axis=1, keepdims=True)


def _dual_transforms(A: np.ndarray, dl: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """``T_p`` (p, N, N) from each point's ``m < N`` local observations, in observation space.

    ``A_p = diag(sqrt(rho_p)) S_p`` (p, m, N) and ``dl_p = sqrt(rho_p) d_p`` (p, m): with ``C_p = (N-1) I + A^T A``
    and ``G_p = A A^T = U diag(lam) U^T`` (m x m), the push-through identity gives ``w_p = C_p^-1 A^T dl =
    A^T U diag(1 / (N-1 + lam)) U^T dl`` and ``[(N-1) C_p^-1]^(1/2) = I + A^T U diag(g) U^T A`` with
    ``g = (sqrt((N-1) / (N-1 + lam)) - 1) / lam = -1 / (sqrt(N-1 + lam) (sqrt(N-1) + sqrt(N-1 + lam)))`` (no division
    by a vanishing ``lam``). An ``m x m`` eigendecomposition per point instead of ``N x N``: DAPPER's choice too
    when observations are fewer than members. Equal to :func:`_transforms` up to round-off (tested)."""
    N = A.shape[-1]
    a = N - 1.0
    lam, U = np.linalg.eigh(A @ A.transpose(0, 2, 1))
    lam = np.maximum(lam, 0.0)  # G is positive semi-definite; round-off can make a zero eigenvalue -1e-17
    At, Ut = A.transpose(0, 2, 1), U.transpose(0, 2, 1)
    w = At @ (U @ ((Ut @ dl[:, :, None]) / (a + lam)[:, :, None]))
    g = -1.0 / (np.sqrt(a + lam) * (np.sqrt(a) + np.sqrt(a + lam)))
    W = At @ (((U * g[:, None, :]) @ Ut) @ A)
    W[:, np.arange(N), np.arange(N)] += 1.0
    if rotation is not None:
        W = W @ rotation
    return 1.0 / N + _centred(w + W)


def _point_transforms(weights: sp.csr_matrix, S: np.ndarray, d: np.ndarray,
                      rotation: np.ndarray | None) -> np.ndarray:
    """``T_p`` (p, N, N) of a batch of points from their localisation ``weights`` (p, k: ``rho`` of the k nearby
    observations, each row with at least one) and the observations' normalised anomalies ``S`` (k, N) and
    innovations ``d`` (k,). A point with fewer local observations than members is solved in observation space
    (:func:`_dual_transforms`, grouped by its count of observations), the others in ensemble space
    (:func:`_transforms`)."""
    N = S.shape[1]
    counts = np.diff(weights.indptr)
    T = np.empty((weights.shape[0], N, N))
    primal = np.flatnonzero(counts >= N)
    if primal.size:
        Wp = weights[primal]
        SS = (S[:, :, None] * S[:, None, :]).reshape(S.shape[0], N * N)
        T[primal] = _transforms(np.asarray(Wp @ SS).reshape(-1, N, N), np.asarray(Wp @ (S * d[:, None])),
                                rotation)
    for m in np.unique(counts[counts < N]):
        rows = np.flatnonzero(counts == m)
        at = weights.indptr[rows][:, None] + np.arange(m)
        idx, root = weights.indices[at], np.sqrt(weights.data[at])
        T[rows] = _dual_transforms(root[:, :, None] * S[idx], root * d[idx], rotation)
    return T


def local_transforms(Y: np.ndarray, y: np.ndarray, r: np.ndarray, weights: np.ndarray,
                     rotation: np.ndarray | None = None) -> np.ndarray:
    """Batched LETKF transforms ``T_p`` (p, N, N) for dense localisation weights ``weights`` (p, m) in [0, 1]."""
    ybar = Y.mean(axis=1)
    S = (Y - ybar[:, None]) / r[:, None]
    d = (y - ybar) / r
    return _transforms(np.einsum("pk,ki,kj->pij", weights, S, S, optimize=True), (weights * d) @ S, rotation)


def _tree(coords: np.ndarray, periods: np.ndarray | None):
    """A k-d tree (``scipy.spatial.cKDTree``) of points with the minimum-image metric on periodic axes
    (``periods > 0``)."""
    from scipy.spatial import cKDTree  # 0.1 s to import: only the LETKF's start pays it, not every campaign's

    box = np.zeros(coords.shape[1]) if periods is None else np.where(np.asarray(periods) > 0, periods, 0.0)
    if not np.any(box > 0):
        return cKDTree(coords)
    wrapped = coords.copy()
    per = box > 0
    wrapped[:, per] = np.mod(wrapped[:, per], box[per])
    # np.mod of a tiny negative number can round to the period itself, outside [0, period)
    wrapped[:, per] = np.where(wrapped[:, per] >= box[per], 0.0, wrapped[:, per])
    return cKDTree(wrapped, boxsize=box)


def letkf_analysis(E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, point_index: np.ndarray,
                   geometry: Geometry, obs_locations: np.ndarray, half_width: float,
                   rotation: np.ndarray | None = None, batch: int = BATCH) -> np.ndarray:
    """LETKF analysis of an owned block.

    The observations within ``2 c`` of a batch of points are found with k-d trees (periodic where the geometry is),
    so the local matrices ``C_p = sum_k rho_pk s_k s_k^T`` are a sparse (points x observations) times dense
    (observations x N^2) product: the cost grows with the number of point-observation pairs, not points x
    observations. Points that see no observation keep their forecast.

    Parameters
    ----------
    E : ndarray (n_local, N)
        Forecast block.
    Y, y, r :
        Observed ensemble (m, N), observations (m,), error standard deviations (m,): the same on every rank.
    point_index : ndarray (n_local,) of int
        Grid point of each entry of the block (``-1``: not localised, global transform).
    geometry : Geometry
    obs_locations : ndarray (m, dim)
    half_width : float
        Gaspari-Cohn half-width ``c`` (> 0), in the grid's length units.
    rotation : ndarray (N, N), optional
    batch : int
        Points per batch.

    Returns
    -------
    ndarray (n_local, N)
    """
    N = E.shape[1]
    Ea = E.copy()
    glob = point_index < 0
    if glob.any():
        Ea[glob] = E[glob] @ etkf_transform(Y, y, r, rotation)
    if glob.all():
        return Ea
    ybar = Y.mean(axis=1)
    S = (Y - ybar[:, None]) / r[:, None]
    d = (y - ybar) / r
    obs_locations = np.atleast_2d(obs_locations)
    obs_tree = None
    points, inverse = np.unique(point_index[~glob], return_inverse=True)
    rows = np.flatnonzero(~glob)
    coords = geometry.points[points]
    for start in range(0, points.size, batch):
        stop = min(start + batch, points.size)
        if (stop - start) * obs_locations.shape[0] <= DENSE_PAIRS:
            # small problems (e.g. Lorenz-96): all pairwise distances are cheaper than building trees
            rho_all = gaspari_cohn(distances(coords[start:stop], obs_locations, geometry.periods), half_width)
            near = np.flatnonzero(rho_all.any(axis=0))
            seen = np.flatnonzero(rho_all.any(axis=1))
            Wseen = rho_all[np.ix_(seen, near)]
        else:
            if obs_tree is None:
                obs_tree = _tree(obs_locations, geometry.periods)
            pairs = _tree(coords[start:stop], geometry.periods).sparse_distance_matrix(
                obs_tree, 2.0 * half_width, output_type="ndarray")
            rho = gaspari_cohn(pairs["v"], half_width)
            keep = rho > 0
            near, cols = np.unique(pairs["j"][keep], return_inverse=True)
            W = sp.csr_matrix((rho[keep], (pairs["i"][keep], cols)), shape=(stop - start, near.size))
            seen = np.flatnonzero(np.diff(W.indptr) > 0)
            Wseen = W[seen]
        if seen.size == 0:
            continue
        T = _point_transforms(sp.csr_matrix(Wseen), S[near], d[near], rotation)
        # map each entry of the batch to its point's transform (entries of unseen points keep the forecast)
        slot = np.full(stop - start, -1)
        slot[seen] = np.arange(seen.size)
        in_batch = (inverse >= start) & (inverse < stop)
        which = slot[inverse[in_batch] - start]
        use = which >= 0
        r_idx = rows[in_batch][use]
        Ea[r_idx] = np.einsum("pi,pij->pj", E[r_idx], T[which[use]])  # not (p, 1, N) @ (p, N, N): 400x slower
    return Ea


@dataclass
class LETKF:
    """Local ETKF with Gaspari-Cohn observation localisation.

    Attributes
    ----------
    N : int
        Ensemble size (>= 2).
    radius : float
        Gaspari-Cohn half-width ``c`` (> 0) in grid length units; observations beyond ``2 c`` have no influence.
    inflation : Inflation
    rotate : bool
        Mean-preserving random rotation (one per analysis, shared by all points).
    """

    N: int
    radius: float
    inflation: Inflation = field(default_factory=Inflation)
    rotate: bool = False
    name: str = "letkf"

    def __post_init__(self):
        self.N = check_ensemble_size(self.N, self.name)
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise AssimilationError(f"{self.name}: localisation radius must be positive, got {self.radius}")

    def analysis(self, E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, rng: np.random.Generator,
                 local=None) -> np.ndarray:
        """Local analyses of the owned block; ``local`` is a :class:`LocalContext` (entry points, geometry,
        observation locations) or, for a coupled model, a :class:`CoupledContext`."""
        if local is None:
            raise AssimilationError(f"{self.name}: localisation needs observation locations and the state geometry")
        rot = random_rotation(self.N, rng) if self.rotate else None
        return local.analyse(E, Y, y, r, self.radius, rot, self.name)


def _kept(rows) -> np.ndarray:
    """Observation rows as indices (``rows``: indices or a boolean mask)."""
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)


@dataclass
class LocalContext:
    """What local analyses need to know about a block: its entries' points, the geometry, observation positions."""

    point_index: np.ndarray
    geometry: Geometry
    obs_locations: np.ndarray | None

    def observed(self, rows) -> "LocalContext":
        """This context for the observations ``rows`` only (indices or mask; e.g. the sensors guardrails keep)."""
        if self.obs_locations is None:
            return self
        return replace(self, obs_locations=np.atleast_2d(self.obs_locations)[_kept(rows)])

    def analyse(self, E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, radius: float,
                rotation: np.ndarray | None = None, name: str = "letkf") -> np.ndarray:
        """:func:`letkf_analysis` of ``E`` with this context."""
        if self.obs_locations is None:
            raise AssimilationError(f"{name}: localisation needs observation locations (a network without positions "
                                    "cannot be localised)")
        return letkf_analysis(E, Y, y, r, self.point_index, self.geometry, self.obs_locations, radius, rotation)


@dataclass
class ComponentContext:
    """One component of a coupled model in a :class:`CoupledContext`.

    Attributes
    ----------
    name : str
    rows : ndarray of int
        The component's rows of the analysed block (its state entries and field-parameter entries).
    local : LocalContext
        Grid points of those rows, the component's geometry and the positions of its observations.
    obs : ndarray of int
        The component's observation rows (in the order of ``local.obs_locations``).
    radius : float or None
        Gaspari-Cohn half-width in the component's length units (``None``: the filter's radius).
    """

    name: str
    rows: np.ndarray
    local: LocalContext
    obs: np.ndarray
    radius: float | None = None


@dataclass
class CoupledContext:
    """Localisation for a coupled model: each component analysed on its own grid with its own observations
    (module docstring); rows of no component get the global transform."""

    components: list[ComponentContext]

    def observed(self, rows) -> "CoupledContext":
        """This context for the observations ``rows`` (indices, possibly repeated, or a mask), renumbered as
        ``Y[rows]`` is."""
        rows = _kept(rows)
        comps = []
        for c in self.components:
            mine = {int(o): i for i, o in enumerate(c.obs)}
            # the new rows of this component and where each was in its old list (rows may repeat: stacked data)
            pairs = [(k, mine[int(o)]) for k, o in enumerate(rows) if int(o) in mine]
            obs = np.array([k for k, _ in pairs], dtype=int)
            comps.append(replace(c, obs=obs, local=c.local.observed(np.array([i for _, i in pairs], dtype=int))))
        return CoupledContext(comps)

    def analyse(self, E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, radius: float,
                rotation: np.ndarray | None = None, name: str = "letkf") -> np.ndarray:
        Ea = E.copy()
        covered = np.zeros(E.shape[0], dtype=bool)
        for c in self.components:
            covered[c.rows] = True
            if c.obs.size == 0:
                continue  # nothing observes this component: it keeps its forecast
            Ea[c.rows] = c.local.analyse(E[c.rows], Y[c.obs], y[c.obs], r[c.obs],
                                         radius if c.radius is None else c.radius, rotation, f"{name} ({c.name})")
        rest = np.flatnonzero(~covered)
        if rest.size:
            Ea[rest] = E[rest] @ etkf_transform(Y, y, r, rotation)
        return Ea
