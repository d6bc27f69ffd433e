"""Imaging observations of the tumour model: cellularity maps, segmented tumour volume, visit files, NIfTI input.

Cellularity map
    An imaging visit measures the cellularity ``c = N / theta`` (dimensionless, in [0, 1]) averaged over imaging voxels
    of size ``resolution`` (mm; the model cells when omitted). Voxel ``v`` averages the model cells whose centres lie
    in it (partial-volume effect included: non-tissue cells count as 0). Only voxels inside the region of interest are
    observed: a box ``roi = [[x0, x1], [y0, y1]]`` (mm), or, without one, the voxels that are at least half tissue.
    ``y = H N + e`` with ``H`` linear (:class:`CellularityOperator`) and ``e ~ N(0, noise_std^2 I)``.

Segmented tumour volume
    ``V(N) = h^d sum_i m_i sigma((N_i / theta - c*) / w)`` (mm^3): the cells whose cellularity exceeds the detection
    threshold ``c*``, with the step smoothed by the logistic ``sigma`` of width ``w`` so the operator has a derivative
    (``w -> 0`` recovers the hard count). Noise: ``N(0, volume_noise_std^2)``.

Visit file
    A CF-convention NetCDF file (written with xarray, atomically: a temporary file in the same directory, then
    ``os.replace``) with dimensions ``time`` and the voxel axes ``y, x`` (``z, y, x`` in 3-D), variables
    ``cellularity(time, [z,] y, x)`` (NaN outside the region of interest) and ``tumour_volume(time)``, coordinates in mm
    and time in days since the start of the run.

NIfTI
    :func:`read_nifti` samples a NIfTI-1/2 volume (what clinical pipelines export) at the model's cell centres: the
    model's coordinates are taken as the scanner's world (RAS) coordinates in mm, mapped to voxel indices through the
    inverse of the image affine, so voxel spacing, orientation and flips are respected; values are interpolated
    (trilinear by default) with scipy.ndimage. A real patient's visits (a CSV of dated NIfTI cellularity images and
    masks) are read with it by the ``imaging_visits`` network (:mod:`twin.kinds.tumour.visits`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from petsc4py import PETSc

from twin.core.errors import ObservationError
from twin.core.grid import Grid
from twin.observations.base import LinearObservationOperator, ObservationOperator


class VoxelGrid:
    """The imaging voxels covering a model grid.

    Parameters
    ----------
    grid : Grid
        The model grid (cell-centred, mm).
    resolution : sequence of float, optional
        Voxel size per axis in mm, PETSc order; at least the model spacing. Default: the model cells.
    roi : sequence of (float, float), optional
        Region of interest box in mm, PETSc order.
    mask : ndarray of bool, optional
        Tissue mask (natural C order); without ``roi``, voxels at least half tissue are observed.
    """

    def __init__(self, grid: Grid, resolution: Sequence[float] | None = None,
                 roi: Sequence[Sequence[float]] | None = None, mask: np.ndarray | None = None):
        h = np.asarray(grid.spacing)
        res = h.copy() if resolution is None else np.asarray(resolution, dtype=float)
        if res.shape != h.shape or np.any(~np.isfinite(res)) or np.any(res < h * (1 - 1e-12)):
            raise ObservationError(f"imaging resolution {np.asarray(resolution).tolist()} mm must have one positive "
                                   f"entry per axis, each at least the model spacing {h.tolist()} mm")
        self.grid = grid
        self.resolution = tuple(float(r) for r in res)
        lo = np.array([e[0] for e in grid.extent])
        hi = np.array([e[1] for e in grid.extent])
        self.shape = tuple(int(np.ceil((b - a) / r - 1e-9)) for a, b, r in zip(lo, hi, res))  # PETSc order
        self.coords = [lo[a] + (np.arange(n) + 0.5) * res[a] for a, n in enumerate(self.shape)]
        # voxel of every model cell (natural C order)
        vox_idx = [np.minimum(((grid.axis_coordinates(a) - lo[a]) / res[a]).astype(np.int64), self.shape[a] - 1)
                   for a in range(grid.dim)]
        cell_vox = np.zeros(grid.shape[::-1], dtype=np.int64)
        for a in reversed(range(grid.dim)):
            shape = [1] * grid.dim
            shape[grid.dim - 1 - a] = -1
            cell_vox = cell_vox * self.shape[a] + vox_idx[a].reshape(shape)
        cell_vox = cell_vox.ravel()
        n_vox = int(np.prod(self.shape))
        counts = np.bincount(cell_vox, minlength=n_vox).astype(float)
        keep = counts > 0
        mesh = [c.reshape(-1) for c in np.meshgrid(*reversed(self.coords), indexing="ij")][::-1]
        centres = np.stack(mesh, axis=1)  # natural C order of voxels, columns x, y[, z]
        if roi is not None:
            roi = np.asarray(roi, dtype=float)
            if roi.shape != (grid.dim, 2):
                raise ObservationError(f"roi must be {grid.dim} pairs [lo, hi] in mm, got {roi.tolist()}")
            keep &= np.all((centres >= roi[:, 0]) & (centres <= roi[:, 1]), axis=1)
        elif mask is not None:
            tissue = np.bincount(cell_vox, weights=np.asarray(mask, bool).ravel().astype(float), minlength=n_vox)
            keep &= tissue >= 0.5 * counts
        if not keep.any():
            raise ObservationError("the imaging region of interest contains no voxel of the model grid")
        self.observed = np.flatnonzero(keep)
        row_of = -np.ones(n_vox, dtype=np.int64)
        row_of[self.observed] = np.arange(self.observed.size)
        rows = row_of[cell_vox]
        used = rows >= 0
        self.average = sp.csr_matrix((1.0 / counts[cell_vox[used]], (rows[used], np.flatnonzero(used))),
                                     shape=(self.observed.size, grid.size))
        self.centres = centres[self.observed]

    @property
    def n_obs(self) -> int:
        return int(self.observed.size)

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """Observed voxel values -> a voxel image (C order ``shape[::-1]``) with NaN outside the region of interest."""
        img = np.full(int(np.prod(self.shape)), np.nan)
        img[self.observed] = values
        return img.reshape(self.shape[::-1])

    def from_image(self, image: np.ndarray) -> np.ndarray:
        """A voxel image (C order) -> the observation vector (observed voxels only)."""
        image = np.asarray(image, dtype=float)
        if image.shape != tuple(self.shape[::-1]):
            raise ObservationError(f"image has shape {image.shape}, the voxel grid is {tuple(self.shape[::-1])}")
        return image.ravel()[self.observed]


class CellularityOperator(LinearObservationOperator):
    """Cellularity ``N / theta`` averaged over imaging voxels inside the region of interest (linear).

    Parameters
    ----------
    grid : Grid
    theta : float
        Carrying capacity (cells/mm^3).
    noise_std : float
        Standard deviation of the cellularity noise (dimensionless).
    resolution, roi, mask :
        See :class:`VoxelGrid`.
    """

    def __init__(self, grid: Grid, theta: float, noise_std: float, resolution=None, roi=None, mask=None,
                 name: str = "cellularity"):
        if not (np.isfinite(theta) and theta > 0):
            raise ObservationError(f"observation operator '{name}': theta must be positive, got {theta}")
        self.voxels = VoxelGrid(grid, resolution, roi, mask)
        super().__init__(grid, self.voxels.average / theta, noise_std, self.voxels.centres, name)


class TumourVolumeOperator(ObservationOperator):
    """Segmented tumour volume (mm^3) with a smoothed threshold (one observation).

    Parameters
    ----------
    grid : Grid
    theta : float
        Carrying capacity (cells/mm^3).
    threshold : float
        Detection threshold on the cellularity, in (0, 1).
    noise_std : float
        Standard deviation of the volume noise (mm^3).
    width : float
        Width of the logistic step (cellularity units).
    mask : ndarray of bool, optional
        Tissue mask (natural C order); only tissue is segmented.
    """

    def __init__(self, grid: Grid, theta: float, threshold: float, noise_std: float, width: float = 0.02,
                 mask: np.ndarray | None = None, name: str = "tumour_volume"):
        super().__init__(noise_std, 1, None, name)
        if not (0 < threshold < 1 and width > 0 and theta > 0):
            raise ObservationError(f"observation operator '{name}': need 0 < threshold < 1, width > 0, theta > 0")
        self.grid = grid
        self.theta, self.threshold, self.width = float(theta), float(threshold), float(width)
        m = np.ones(grid.shape[::-1], bool) if mask is None else np.asarray(mask, bool)
        self._mask = m[grid.owned_slices].ravel().astype(float)
        self._comm = grid.comm_mpi()

    def _sigma(self, state: PETSc.Vec) -> np.ndarray:
        z = (state.getArray(readonly=True) / self.theta - self.threshold) / self.width
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, overflow-free

    def apply(self, state: PETSc.Vec) -> np.ndarray:
        local = float(np.sum(self._mask * self._sigma(state))) * self.grid.cell_volume
        return np.array([self._comm.allreduce(local)])

    def apply_adjoint(self, state: PETSc.Vec, dy: np.ndarray, out: PETSc.Vec) -> None:
        s = self._sigma(state)
        scale = float(np.asarray(dy).ravel()[0]) * self.grid.cell_volume / (self.theta * self.width)
        out.getArray()[...] += scale * self._mask * s * (1.0 - s)


# -- visit files ---------------------------------------------------------------------------------------------------
_AXES = ("x", "y", "z")


def write_visits(path: str | os.PathLike, times: Sequence[float], cellularity: np.ndarray, coords: Sequence[np.ndarray],
                 tumour_volume: Sequence[float] | None = None, *, noise_std: float | None = None,
                 volume_noise_std: float | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write imaging visits to a CF NetCDF file atomically (serial: call it on one rank).

    Parameters
    ----------
    path : path-like
    times : sequence of float
        Visit times (days since the start of the run), increasing.
    cellularity : ndarray, shape (n_times, [nz,] ny, nx)
        Cellularity images (NaN outside the region of interest).
    coords : sequence of ndarray
        Voxel-centre coordinates per axis in mm, PETSc order ``(x, y[, z])``.
    tumour_volume : sequence of float, optional
        Segmented volumes (mm^3), one per visit.
    noise_std, volume_noise_std : float, optional
        The noise model, stored as attributes (used as observation errors when assimilating the file).
    attrs : mapping, optional
        Extra global attributes (provenance).
    """
    import xarray as xr

    path = Path(path)
    times = np.asarray(times, dtype=float)
    cell = np.asarray(cellularity, dtype=float)
    dim = len(coords)
    if cell.ndim != dim + 1 or cell.shape[0] != times.size:
        raise ObservationError(f"cellularity has shape {cell.shape}; expected ({times.size}, "
                               f"{', '.join(str(len(c)) for c in reversed(coords))})")
    if np.any(np.diff(times) <= 0):
        raise ObservationError(f"visit times must increase, got {times.tolist()}")
    dims = ("time",) + tuple(reversed(_AXES[:dim]))
    cell_attrs = {"units": "1", "long_name": "tumour cellularity N/theta", "coordinates": " ".join(dims[1:])}
    if noise_std is not None:
        cell_attrs["noise_std"] = float(noise_std)
    data = {"cellularity": (dims, cell, cell_attrs)}
    if tumour_volume is not None:
        vol_attrs = {"units": "mm3", "long_name": "segmented tumour volume"}
        if volume_noise_std is not None:
            vol_attrs["noise_std"] = float(volume_noise_std)
        data["tumour_volume"] = (("time",), np.asarray(tumour_volume, dtype=float), vol_attrs)
    crd = {"time": ("time", times, {"units": "day", "standard_name": "time", "axis": "T",
                                    "long_name": "time since the start of the run"})}
    for a in range(dim):
        name = _AXES[a]
        crd[name] = (name, np.asarray(coords[a], dtype=float),
                     {"units": "mm", "axis": name.upper(), "long_name": f"{name} coordinate of the voxel centre"})
    ds = xr.Dataset(data, coords=crd, attrs={"Conventions": "CF-1.8", "title": "tumour imaging visits",
                                             "source": "twin", **dict(attrs or {})})
    encoding = {v: {"zlib": True, "complevel": 4, "_FillValue": np.nan} for v in ds.data_vars}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_visits(path: str | os.PathLike):
    """Read a visit file into memory as an ``xarray.Dataset`` (ObservationError if unreadable or incomplete)."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, ValueError) as exc:
        raise ObservationError(f"cannot read imaging visits from {path}: {exc}") from None
    if "cellularity" not in ds or "time" not in ds.coords:
        raise ObservationError(f"{path}: not an imaging visit file (needs 'cellularity' and 'time')")
    return ds


# -- NIfTI --------------------------------------------------------------------------------------------------------
def read_nifti(path: str | os.PathLike, grid: Grid, *, plane: float = 0.0, order: int = 1,
               fill: float = 0.0) -> np.ndarray:
    """Sample a NIfTI volume at the model's cell centres.

    Parameters
    ----------
    path : path-like
        A ``.nii`` / ``.nii.gz`` file (3-D, or 4-D of one volume) of real-valued voxels.
    grid : Grid
        The model grid; its coordinates (mm) are world (scanner RAS) coordinates.
    plane : float
        For a 2-D grid, the world z (mm) of the slice.
    order : int
        Spline order of the interpolation (0 nearest, 1 trilinear).
    fill : float
        Value outside the volume.

    Returns
    -------
    ndarray
        The whole field in natural C order (shape ``grid.shape[::-1]``), on every rank that calls it.

    Raises
    ------
    ObservationError
        If the file cannot be read, is not 3-D/4-D, holds a voxel that is not finite, or no cell centre lies inside
        the volume.
    """
    from scipy.ndimage import map_coordinates

    from twin.kinds.tumour.nifti import open_volume, world_to_voxel

    img = open_volume(path)  # its header checked: bounded, one 3-D volume of real numbers
    try:
        data = np.asarray(img.dataobj, dtype=float)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several unrelated types for unreadable files
        raise ObservationError(f"cannot read NIfTI volume {path}: {type(exc).__name__}: {exc}") from None
    if data.ndim == 4:
        data = data[..., 0]
    mesh = grid.mesh()
    world = [m.ravel() for m in mesh]
    while len(world) < 3:
        world.append(np.full(world[0].shape, float(plane)))
    world = np.stack(world + [np.ones(world[0].shape)], axis=0)
    ijk = world_to_voxel(path, img.affine) @ world
    inside = np.all((ijk[:3] >= -0.5) & (ijk[:3] <= np.asarray(data.shape)[:, None] - 0.5), axis=0)
    if not inside.any():
        raise ObservationError(f"{path}: the model grid {[list(e) for e in grid.extent]} mm does not overlap the "
                               f"image (check the affine and the grid extent)")
    bad = ~np.isfinite(data)
    if bad.any():
        # a NaN or infinite voxel would spread through the interpolation to its neighbours and into the analysis
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ObservationError(f"{path}: {int(bad.sum())} voxel(s) are not finite (the first at voxel {first}); "
                               "mask them in the image (e.g. set them to 0) or fix the file")
    values = map_coordinates(data, ijk[:3], order=order, mode="nearest")
    values = np.where(inside, values, fill)
    return values.reshape(grid.shape[::-1])


def build_imaging(spec, model, i: int, name: str):
    """The ``imaging`` network of ``assimilation.observations`` on a tumour model (see
    :class:`twin.kinds.tumour.config.ImagingNetwork`); ``theta`` defaults to the model's carrying capacity."""
    from twin.observations.networks import from_operator, scale, where

    theta = spec.theta
    if theta is None:
        if "theta" not in model.parameters:
            raise ObservationError(f"{where(i)}: imaging needs 'theta' (carrying capacity); model "
                                   f"'{model.name}' has no parameter 'theta'")
        theta = float(model.get_parameter("theta"))
    s = scale(spec, model)
    res = None if spec.resolution is None else [r * s for r in spec.resolution]
    roi = None if spec.roi is None else (np.asarray(spec.roi) * s).tolist()
    mask = getattr(getattr(model, "tissue", None), "mask", None)
    op = CellularityOperator(model.grid, theta, float(spec.error_std), res, roi, mask, name=name)
    return from_operator(op, name)
