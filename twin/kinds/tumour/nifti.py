"""What a NIfTI volume must be before its voxels are read, from its header alone (no PETSc, no grid).

:func:`open_volume` opens a ``.nii`` / ``.nii.gz`` file with nibabel, which reads the header only, and refuses what
would be read as something else or could not be read within bounds: a volume of more voxels than twin reads as
observations (:data:`twin.config.limits.IMAGE_VOXELS`, refused before anything that size is allocated), a 4-D image
of several volumes (the first alone would be used: a time series or a diffusion scan read as one visit), voxels that
are not real numbers (complex: the imaginary part dropped; RGB), a file nibabel cannot read. :func:`world_to_voxel`
inverts the affine and refuses one that has no inverse worth the name.

:func:`twin.kinds.tumour.imaging.read_nifti` samples a volume at the model's cell centres through both; the
``imaging_visits`` network checks every image and mask of a visit table with them before anything runs
(:func:`twin.kinds.tumour.visits.check`: ``twin validate``, ``twin run``, ``twin submit``).
"""

from __future__ import annotations

import math

import numpy as np

from twin.core.errors import ObservationError


def open_volume(path):
    """The nibabel image of ``path`` (its header read, its voxels not), checked as the module docstring says.

    Raises
    ------
    ObservationError
        One line naming the file."""
    import nibabel as nib

    from twin.config.limits import IMAGE_VOXELS

    try:
        img = nib.load(str(path))  # the header only
        shape = tuple(int(n) for n in img.shape)
        dtype = np.dtype(img.get_data_dtype())
    except Exception as exc:  # noqa: BLE001 - nibabel raises several unrelated types for unreadable files
        raise ObservationError(f"cannot read NIfTI volume {path}: {type(exc).__name__}: {exc}") from None
    voxels = math.prod(shape)
    if voxels > IMAGE_VOXELS:  # the header's claim, before anything that size is allocated
        raise ObservationError(f"{path}: its header declares {list(shape)} voxels ({voxels:,}), more than twin reads "
                               f"as observations ({IMAGE_VOXELS:,}, 2 GiB as float64): crop the image to the region "
                               "of the model grid")
    if len(shape) not in (3, 4):
        raise ObservationError(f"{path}: expected a 3-D volume, got {len(shape)} dimensions")
    if len(shape) == 4 and shape[3] > 1:
        raise ObservationError(f"{path}: a 4-D image of {shape[3]} volumes ({list(shape)}); a visit is one 3-D "
                               "volume: give each visit an image of its own")
    if dtype.kind not in "biuf" or dtype.fields:
        what = "complex" if dtype.kind == "c" else "RGB (structured)" if dtype.fields else str(dtype)
        raise ObservationError(f"{path}: its voxels are {what}, not real numbers: give the cellularity as a "
                               "real-valued image")
    return img


def world_to_voxel(path, affine) -> np.ndarray:
    """The inverse of the image's affine (world mm to voxel indices); :class:`ObservationError` when the affine has
    no inverse worth the name (a zero row: no world coordinates along an axis)."""
    a = np.asarray(affine, dtype=float)
    if not np.all(np.isfinite(a)) or np.linalg.cond(a[:3, :3]) > 1e12:
        raise ObservationError(f"{path}: its affine (the header's sform/qform) is singular or not finite, "
                               f"{np.array2string(a[:3], precision=3).replace(chr(10), '')}: the voxels have no "
                               "world coordinates; fix the header")
    return np.linalg.inv(a)
