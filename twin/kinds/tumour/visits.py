"""A real patient's imaging visits from files: the ``imaging_visits`` network of the tumour kind.

YAML (``assimilation.observations``; :class:`twin.kinds.tumour.config.ImagingVisitsNetwork`)::

    timeline: {start: 2026-03-01, end: 30, units: day}        # a calendar date: visits are dated
    assimilation:
      observations: [{type: imaging_visits, file: visits.csv, error_std: 0.05}]

The visit table (CSV, relative to the campaign file), one row per visit::

    date,image,mask
    2026-03-11,visit1.nii.gz,lesion.nii.gz
    2026-03-21,visit2.nii.gz,
    2026-03-31,visit3.nii.gz,lesion.nii.gz

* ``date``: ISO 8601 date or date-time (UTC unless it has an offset), strictly increasing, after ``timeline.start``
  (which must be a calendar date); the visit's model time is the number of days since that start;
* ``image``: a NIfTI-1/2 volume (``.nii``, ``.nii.gz``; relative to the CSV) whose values **are the cellularity**
  ``N / theta`` in [0, 1], the quantity the tumour model's imaging observes. twin does not convert intensities: a
  clinical pipeline turns an ADC or T1/T2 map into cellularity first (e.g. the ADC model ``c = (ADC_w - ADC) /
  (ADC_w - ADC_min)`` of Atuegwu et al. 2013, clipped to [0, 1]). A value outside [0, 1] at an observed cell, or a
  voxel that is not finite anywhere in the image, is refused, naming the file and the visit (``value_range: [low,
  high]`` widens [0, 1] for an estimate left unclipped so that its noise stays unbiased, such as a twin experiment's
  noisy visits written by :mod:`twin.kinds.tumour.export`);
* ``mask`` (optional, may be empty): a NIfTI volume on the image's voxels (same shape and affine); cells where it is
  zero are not observed.

Sampling (:func:`twin.kinds.tumour.imaging.read_nifti`): the image is sampled at the model's cell centres, the model's
coordinates (mm) taken as world (RAS) mm through the image's affine; ``order: 1`` (default) interpolates trilinearly,
``order: 0`` takes the nearest voxel; ``plane`` is the world z of a 2-D model. The mask is sampled with the nearest
voxel. A cell is observed at a visit when it is tissue (the model's tissue mask, as for the synthetic ``imaging``
network), lies inside the image volume and inside the mask: one observation ``y = N_cell / theta + e``,
``e ~ N(0, error_std^2)``. On voxels that coincide with the model's cells (same spacing, centres on the cell centres)
the sampled values are the voxel values exactly; otherwise they are interpolated.

How a campaign uses them is the general path of observation files (:mod:`twin.observations.file_network`): the
filters (ETKF, EnKF, LETKF) assimilate a visit at the first analysis time at or after it (choose
``assimilation.schedule`` so that the analyses fall on the visit days); ES-MDA and 4D-Var use each visit at the model
step nearest to it. Cells outside the image volume are counted as missing, visits after ``timeline.end`` as outside
the time span (``observations.h5``, ``twin status``). The run has no truth: diagnostics are in observation space and
the tumour's panels show the observed and posterior cellularity only.

The record of the files (``observations.h5``, ``files``): the CSV's path and one SHA-256 over the CSV's bytes followed
by the hex SHA-256 of every image and mask it names, in order (a changed image changes it).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from twin.core.errors import ObservationError

#: the variable of the observation table (not a state variable: the sites' operator is :func:`sites`)
VARIABLE = "cellularity"
COLUMNS = ("date", "image", "mask")


def _theta(spec, model) -> float:
    if spec.theta is not None:
        return float(spec.theta)
    if "theta" not in model.parameters:
        raise ObservationError(f"imaging_visits needs 'theta' (carrying capacity); model '{model.name}' has no "
                               "parameter 'theta': give the network's theta")
    return float(model.get_parameter("theta"))


def read_table(path) -> list[tuple[int, str, str, str | None]]:
    """The rows of a visit table: ``(line number, date text, image path, mask path or None)``, paths resolved
    against the CSV's directory. One-line :class:`ObservationError` for a table that is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ObservationError(f"cannot read the visit table {path}: {exc}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise ObservationError(f"{path}: the visit table is empty; it needs the header date,image[,mask] and one row "
                               "per visit")
    reader = csv.reader([line for _, line in lines])
    header = [h.strip().lower() for h in next(reader)]
    if header not in (list(COLUMNS[:2]), list(COLUMNS)):
        raise ObservationError(f"{path} line {lines[0][0]}: the header must be date,image or date,image,mask, got "
                               f"{','.join(header)}")
    rows = []
    for (n, _), cells in zip(lines[1:], reader):
        cells = [c.strip() for c in cells]
        if len(cells) != len(header) and not (len(header) == 3 and len(cells) == 2):
            raise ObservationError(f"{path} line {n}: {len(cells)} columns, the header has {len(header)}")
        if not cells[0] or not cells[1]:
            raise ObservationError(f"{path} line {n}: a visit needs a date and an image")
        mask = cells[2] if len(cells) > 2 and cells[2] else None
        rows.append((n, cells[0], str(path.parent / cells[1]), None if mask is None else str(path.parent / mask)))
    if not rows:
        raise ObservationError(f"{path}: the visit table has a header and no visit")
    return rows


def companions(path) -> list[Path]:
    """The images and masks the visit table ``path`` names, in order, each once (:class:`twin.core.kinds.NetworkType`
    ``companions``: a live twin keeps them with the table it is delivered, at the same places relative to it).

    Raises
    ------
    ObservationError
        For a table that does not read, or an image or mask that does not exist or lies outside the table's
        directory (a delivered table carries its visits' files below it).
    """
    path = Path(path)
    base = path.resolve().parent
    out: dict[Path, None] = {}
    for line, _, image, mask in read_table(path):
        for what, f in (("image", image), ("mask", mask)):
            if f is None:
                continue
            f = Path(f)
            if not f.is_file():
                raise ObservationError(f"{path} line {line}: {what} {f} does not exist (paths are relative to the "
                                       "visit table)")
            if not f.resolve().is_relative_to(base):
                raise ObservationError(f"{path} line {line}: {what} {f} lies outside the visit table's directory "
                                       f"{base}; a delivered table carries its images below it")
            out[f] = None
    return list(out)


def _rows(path, start, day: float):
    """The visits of the table ``path``, checked as far as the table goes: ``(where, date text, model time, image,
    mask or None)`` for each, ``where`` naming the table's line and the visit; ``day``: one day in the model's time
    units. One-line :class:`ObservationError` for a date that is not one, not after ``start`` or not after the visit
    before, and for an image or mask that does not exist."""
    from twin.core.calendar import parse_start

    if start is None:
        raise ObservationError(f"{path}: visits are dated; give timeline.start as a calendar date (e.g. start: "
                               "2026-03-01) so that a visit's date is a number of days after it")
    previous = None
    for line, text, image, mask in read_table(path):
        where = f"{path} line {line}"
        try:
            when = parse_start(text)
        except ValueError:
            raise ObservationError(f"{where}: date {text!r} is not an ISO 8601 date (e.g. 2026-03-11 or "
                                   "2026-03-11T09:30Z)") from None
        t = (when - start).total_seconds() / 86400.0 * day
        if t <= 0:
            raise ObservationError(f"{where}: visit {text} is not after timeline.start {start.isoformat()}; "
                                   "assimilated visits come after the start: move the start before it or drop the row")
        if previous is not None and t <= previous:
            raise ObservationError(f"{where}: visit {text} is not after the previous one; list the visits in date "
                                   "order, one row per date")
        previous = t
        where = f"{where} (visit {text})"
        for what, f in (("image", image), ("mask", mask)):
            if f is not None and not Path(f).is_file():
                raise ObservationError(f"{where}: {what} {f} does not exist (paths are relative to the visit table)")
        yield where, text, t, image, mask


def _check_volumes(image: str, mask: str | None) -> None:
    """What a visit's image and mask must be before their voxels are read, from their headers
    (:mod:`twin.kinds.tumour.nifti`): each readable, bounded, one 3-D volume of real numbers with an invertible
    affine, and the mask on the image's voxels (same shape and affine)."""
    from twin.kinds.tumour.nifti import open_volume, world_to_voxel

    a = open_volume(image)
    world_to_voxel(image, a.affine)
    if mask is None:
        return
    b = open_volume(mask)
    world_to_voxel(mask, b.affine)
    if tuple(a.shape[:3]) != tuple(b.shape[:3]) or not np.allclose(a.affine, b.affine):
        raise ObservationError(f"mask {mask} has shape {tuple(b.shape)}, image {image} "
                               f"{tuple(a.shape)}{'' if tuple(a.shape[:3]) != tuple(b.shape[:3]) else ' and another affine'}"
                               ": the mask must lie on the image's voxels")


def _day(model) -> float:
    from twin.core.units import convert

    return float(convert(1.0, "day", model.time_units))


def check(spec, path, model, start) -> None:
    """What reading the visit table ``path`` checks before the model is built (:class:`twin.core.kinds.NetworkType`
    ``check``, run by ``twin validate``, ``twin run`` and ``twin submit``): the table, its dates against ``start``
    and each other, and every image and mask from its header (:func:`_check_volumes`); ``model``: its time units.
    What needs the model's grid (the cells inside an image and its mask, the values there) is read when the
    experiment starts. One-line :class:`ObservationError` naming the table's line and the visit."""
    for where, _, _, image, mask in _rows(Path(path), start, _day(model)):
        try:
            _check_volumes(image, mask)
        except ObservationError as exc:
            raise ObservationError(f"{where}: {exc}") from None


def read(spec, path, model, start):
    """The observations of the visit table ``path`` on ``model`` as an
    :class:`~twin.observations.table.ObservationTable` (every rank reads every image): one row per observed cell
    and visit, ``variable`` :data:`VARIABLE`, ``position`` the cell centre, ``time`` the visit in days after
    ``start`` (the calendar start), ``value`` the sampled cellularity, ``error`` the network's ``error_std``.
    :class:`twin.core.kinds.NetworkType` ``read``."""
    from twin.kinds.tumour.imaging import read_nifti
    from twin.observations.table import ObservationTable, file_sha256

    path = Path(path)
    grid = model.grid
    tissue = getattr(getattr(model, "tissue", None), "mask", None)
    tissue = np.ones(grid.shape[::-1], bool) if tissue is None else np.asarray(tissue, bool)
    centres = np.stack([m.ravel() for m in grid.mesh()], axis=1)          # natural order, columns x, y[, z]
    digest = hashlib.sha256(path.read_bytes())
    times, cells, values, missing = [], [], [], 0
    low, high = (float(x) for x in spec.value_range)
    for where, text, t, image, mask in _rows(path, start, _day(model)):
        try:
            _check_volumes(image, mask)
            field = read_nifti(image, grid, plane=spec.plane, order=spec.order, fill=np.nan).ravel()
            keep = tissue.ravel() & np.isfinite(field)
            if mask is not None:
                keep &= read_nifti(mask, grid, plane=spec.plane, order=0, fill=0.0).ravel() != 0
        except ObservationError as exc:
            raise ObservationError(f"{where}: {exc}") from None
        missing += int(np.sum(tissue.ravel() & ~np.isfinite(field)))
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            raise ObservationError(f"{where}: no tissue cell of the model grid lies inside image {image}"
                                   + ("" if mask is None else f" and mask {mask}") + " (check the affine and the mask)")
        v = field[idx]
        bad = (v < low) | (v > high)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ObservationError(f"{where}: image {image} holds {int(bad.sum())} value(s) outside "
                                   f"[{low:g}, {high:g}] at observed cells (the first {v[j]:.6g} at "
                                   f"{centres[idx[j]].tolist()} mm); the image must hold the cellularity N/theta (in "
                                   "[0, 1], and within the network's value_range): convert the intensities first")
        times.append(np.full(idx.size, t))
        cells.append(idx)
        values.append(v)
        for f in (image, mask):
            if f is not None:
                digest.update(file_sha256(Path(f)).encode())
    cell = np.concatenate(cells)
    n = cell.size
    return ObservationTable(np.concatenate(times), centres[cell], np.full(n, VARIABLE), np.concatenate(values),
                            np.full(n, float(spec.scalar_error())), np.arange(n), str(path), digest.hexdigest(),
                            {VARIABLE: "1"}, {VARIABLE: missing}, model.time_units, model.length_units)


def sites(spec, table, ok: np.ndarray, model):
    """The sites of the accepted rows ``ok`` of a visit table: the distinct cells observed, in the grid's natural
    order, each observing ``N_cell / theta`` (the rows of the synthetic ``imaging`` network's operator on those cells,
    :class:`twin.kinds.tumour.imaging.CellularityOperator`, bitwise). Returns the site of every row (-1 outside
    ``ok``), ``H``, the cell centres and the variable of each site (:func:`twin.observations.file_network.series`
    ``sites``)."""
    import scipy.sparse as sp

    grid = model.grid
    lo = np.array([e[0] for e in grid.extent])
    ijk = np.floor((table.position - lo) / np.asarray(grid.spacing)).astype(np.int64)
    ijk = np.clip(ijk, 0, np.asarray(grid.shape) - 1)
    cell = np.ravel_multi_index(tuple(ijk[:, a] for a in reversed(range(grid.dim))), tuple(grid.shape[::-1]))
    observed, index = np.unique(cell[ok], return_inverse=True)
    site_of = np.full(len(table), -1, dtype=np.int64)
    site_of[ok] = index.ravel()
    m = observed.size
    H = sp.csr_matrix((np.full(m, 1.0 / _theta(spec, model)), (np.arange(m), observed * grid.dof + 0)),
                      shape=(m, grid.size * grid.dof))
    centres = np.stack([c.ravel()[observed] for c in grid.mesh()], axis=1)
    return site_of, H, centres, [VARIABLE] * m


def build(spec, model, i: int, name: str):
    """Never reached through a campaign (a network read from files is built with its cycles,
    :func:`twin.observations.networks.build`)."""
    from twin.observations.networks import where

    raise ObservationError(f"{where(i)}: imaging_visits reads a patient's visits from files; it observes a campaign "
                           "through assimilation.observations only")
