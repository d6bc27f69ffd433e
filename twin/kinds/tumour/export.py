"""A tumour twin experiment's imaging visits as a patient's files: NIfTI-1 cellularity images and a visit table.

:func:`export_visits` reads what a twin experiment observed with its ``imaging`` network (``observations.h5`` of the
experiment directory, the arrays ``observations`` (visit x observed voxel), ``locations`` (voxel centres, mm) and
``times`` (``t_0`` then the visit times, days), rows of the network ``networks[<name>]``) and writes what the
``imaging_visits`` network (:mod:`twin.kinds.tumour.visits`) reads back::

    visits.csv          date,image[,mask]: one row per visit, date = start + visit time (days)
    visit1.nii.gz ...   the observed cellularity N/theta of the visit on every observed voxel (0 elsewhere)
    observed.nii.gz     the voxels observed (1) or not (0): written only when the network did not observe every cell

Voxels are the model's cells: the affine (:func:`cell_affine`) maps voxel ``(i, j, k)`` to the world (scanner RAS)
point ``(x_0 + (i + 1/2) h_x, y_0 + (j + 1/2) h_y, z)`` mm, the centre of cell ``(i, j)`` of the model grid (``z``:
``plane`` for a 2-D model, whose one slice is given the thickness ``min(h_x, h_y)``). Sampled at the cell centres
(:func:`twin.kinds.tumour.imaging.read_nifti`), voxel ``i`` is at index ``(x - x_0) / h - 1/2``: exactly ``i`` when
``h`` and ``x_0`` are binary fractions (the flagship's 2 mm cells from 0), so trilinear sampling returns the voxel
value with weight 1 and the visits read back are the twin experiment's observations bitwise; otherwise they agree to
round-off. Images are stored as float64 for that reason (float32 would round the observations at 3e-8 relative, and
the calibration with them); a 24 x 24 visit is about 4.5 KB gzipped.

The values are the twin experiment's noisy observations as it assimilated them: cellularity plus Gaussian noise, not
clipped, so some lie a few noise standard deviations outside [0, 1] (half the background cells are below 0). A
clipped image would be biased (the mean of ``max(0, e)`` is ``0.4 sigma``, not 0) and not the twin experiment's
observations; read them back with the network's ``value_range`` widened to hold them.

Only an imaging network whose voxels are the model's cells can be written this way (``resolution`` omitted or equal to
the model spacing): a coarser voxel averages cells, which sampling the image at the cell centres does not do.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import numpy as np

from twin.core.errors import ObservationError

#: file name of the visit table written next to the images
TABLE = "visits.csv"
#: file name of the mask of observed voxels (written when some cells are not observed)
MASK = "observed.nii.gz"


def cell_affine(shape, extent, plane: float = 0.0) -> np.ndarray:
    """The 4 x 4 NIfTI affine whose voxel centres are the cell centres of a grid of ``shape`` cells over ``extent``
    (``[(lo, hi), ...]`` in mm, PETSc order x, y[, z]); a 2-D grid's slice lies at world z = ``plane`` mm."""
    h = [(hi - lo) / n for n, (lo, hi) in zip(shape, extent)]
    lo = [e[0] for e in extent]
    if len(shape) == 2:
        h.append(min(h))
        lo.append(plane - 0.5 * h[-1])
    affine = np.eye(4)
    for a in range(3):
        affine[a, a] = h[a]
        affine[a, 3] = lo[a] + 0.5 * h[a]
    return affine


def export_visits(exp_dir, out_dir, start, *, network: str | None = None) -> Path:
    """Write the imaging visits a tumour twin experiment observed as NIfTI-1 images and a visit table.

    Parameters
    ----------
    exp_dir : path-like
        The experiment directory of a twin experiment (``experiment.yaml`` and ``observations.h5``).
    out_dir : path-like
        Where to write ``visits.csv``, ``visit<k>.nii.gz`` and, when needed, ``observed.nii.gz`` (created if absent).
    start : str or date or datetime
        The calendar date of the experiment's time 0 (``timeline.start`` of a campaign reading the files).
    network : str, optional
        The imaging network's name in ``observations.h5``; default: the experiment's only ``imaging`` network.

    Returns
    -------
    Path
        The visit table.

    Raises
    ------
    ObservationError
        In one line naming the experiment and what to change, when it is not a tumour twin experiment with one
        imaging network on the model's cells.
    """
    import nibabel as nib

    from twin.core.calendar import parse_start

    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    when = parse_start(start)
    times, values, voxels, shape, extent, sd = _visits(exp_dir, network)
    affine = cell_affine(shape, extent)      # z = 0: the plane the imaging_visits network samples by default
    vol_shape = tuple(shape) + ((1,) if len(shape) == 2 else ())
    out_dir.mkdir(parents=True, exist_ok=True)
    observed = np.zeros(vol_shape, np.uint8)
    observed[voxels] = 1
    mask = None if observed.all() else MASK
    if mask is not None:
        _save(nib, observed, affine, out_dir / mask, "voxels observed by the twin experiment's imaging")
    rows = io.StringIO()
    table = csv.writer(rows, lineterminator="\n")
    table.writerow(["date", "image", "mask"] if mask else ["date", "image"])
    for k, (t, y) in enumerate(zip(times, values), start=1):
        image = np.zeros(vol_shape, np.float64)
        image[voxels] = y
        name = f"visit{k}.nii.gz"
        _save(nib, image, affine, out_dir / name, f"cellularity N/theta, day {t:g}, noise sd {sd:g}")
        table.writerow([_date(when, t), name] + ([mask] if mask else []))
    path = out_dir / TABLE
    path.write_text(rows.getvalue())
    return path


def _date(start, days: float) -> str:
    when = start + timedelta(days=float(days))
    if when.hour == when.minute == when.second == when.microsecond == 0:
        return when.date().isoformat()
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _save(nib, data: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description[:79].encode()
    # scanner RAS: the model's millimetres are the world coordinates the imaging_visits network samples at
    img.set_sform(affine, code="scanner")
    img.set_qform(affine, code="scanner")
    nib.save(img, str(path))


def _visits(exp_dir: Path, network: str | None):
    """``(visit times, observations (visit x voxel), voxel index tuple, grid shape, extent in mm, noise sd)`` of the
    imaging network of the twin experiment ``exp_dir``."""
    from mpi4py import MPI

    from twin.config import load_campaign
    from twin.core.errors import ConfigError
    from twin.core.units import convert
    from twin.io.checkpoint import CheckpointReader
    from twin.observations.networks import network_names

    obs_file, cfg_file = exp_dir / "observations.h5", exp_dir / "experiment.yaml"
    for f in (obs_file, cfg_file):
        if not f.is_file():
            raise ObservationError(f"{exp_dir}: no {f.name}; give the directory of a finished twin experiment "
                                   "(runs/<name>/experiments/<experiment>)")
    try:
        cfg = load_campaign(cfg_file).config
    except ConfigError as exc:
        raise ObservationError(f"{cfg_file}: {str(exc).splitlines()[0]}") from None
    models = [m for m in cfg.models.values() if m.type == "tumour"]
    if len(cfg.models) != 1 or not models:
        raise ObservationError(f"{cfg_file}: not a campaign of one tumour model (models: {sorted(cfg.models)}); "
                               "visits are exported from a tumour twin experiment")
    model = models[0]
    specs = list(cfg.assimilation.observations or [])
    names = network_names(specs)
    imaging = {n: s for n, s in zip(names, specs) if s.type == "imaging"}
    if not imaging:
        raise ObservationError(f"{cfg_file}: no imaging network (it observes through "
                               f"{sorted({s.type for s in specs}) or 'none'}); visits are exported from a twin "
                               "experiment's synthetic imaging")
    if network is None and len(imaging) != 1:
        raise ObservationError(f"{cfg_file}: {len(imaging)} imaging networks ({sorted(imaging)}); name the one to "
                               "export (network=...)")
    name = network if network is not None else next(iter(imaging))
    if name not in imaging:
        raise ObservationError(f"{cfg_file}: no imaging network {name!r}; it has {sorted(imaging) or 'none'}")
    spec = imaging[name]
    shape, extent = list(model.grid.shape), model.grid.extent_in("mm")
    h = np.array([(hi - lo) / n for n, (lo, hi) in zip(shape, extent)])
    if spec.resolution is not None:
        # the network's units, else the model's length units (mm), as build_imaging scales it
        res = np.asarray(spec.resolution, float) * float(convert(1.0, spec.units or "mm", "mm"))
        if not np.allclose(res, h, rtol=1e-12):
            raise ObservationError(f"{cfg_file}: imaging network {name!r} has voxels of {res.tolist()} mm, the model's "
                                   f"cells are {h.tolist()} mm; only voxels that are the model's cells are written "
                                   "as images a visit table reproduces")
    try:
        with CheckpointReader(obs_file, MPI.COMM_SELF) as r:
            if "truth" in r.array_names:
                rows = r.meta["networks"][name]
                y, loc, times, err = (r.read_array(a) for a in ("observations", "locations", "times", "error_std"))
            else:
                rows = None
    except (OSError, KeyError) as exc:
        raise ObservationError(f"{obs_file}: cannot read the imaging visits ({type(exc).__name__}: {exc})") from None
    if rows is None:
        raise ObservationError(f"{obs_file}: not a twin experiment (no truth): its observations came from files "
                               "already")
    lo_row, hi_row = int(rows[0]), int(rows[1])
    y, loc, err = y[:, lo_row:hi_row], loc[lo_row:hi_row], err[lo_row:hi_row]
    if y.ndim != 2 or times.size != y.shape[0] + 1:
        raise ObservationError(f"{obs_file}: {y.shape[0]} visits and {times.size} times; expected the start and one "
                               "time per visit")
    lo = np.array([e[0] for e in extent])
    index = (loc - lo) / h - 0.5
    ijk = np.rint(index).astype(np.int64)
    if np.abs(index - ijk).max(initial=0.0) > 1e-9 or np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)):
        raise ObservationError(f"{obs_file}: the imaging network {name!r} observes points that are not cell centres "
                               "of the model grid")
    voxels = tuple(ijk[:, a] for a in range(len(shape))) + ((np.zeros(len(ijk), np.int64),) if len(shape) == 2 else ())
    return times[1:], y, voxels, shape, extent, float(np.mean(err))
