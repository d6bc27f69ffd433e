"""Synthetic patients for the tumour twin: a "truth" run and the imaging visits it would produce.

The truth draws the proliferation field ``k(x)`` from its prior (a log-Gaussian random field,
:func:`twin.models.priors.sample_prior`), grows the seed lesion of the configuration under its treatment plan, and at
each visit day records what imaging would: the cellularity map ``N/theta`` on the imaging voxels inside the region of
interest plus Gaussian noise, and the segmented tumour volume plus Gaussian noise (noise and resolution from the
``imaging`` section). The visits are written like real data (a CF NetCDF visit file,
:func:`twin.kinds.tumour.imaging.write_visits`), so the assimilation reads synthetic and real patients the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from twin.core.errors import ModelError
from twin.core.units import convert
from twin.kinds.tumour.imaging import (
    CellularityOperator,
    TumourVolumeOperator,
    write_visits,
)
from twin.kinds.tumour.model import TumourModel
from twin.models.priors import sample_prior


@dataclass
class SyntheticPatient:
    """What the generator produced (every rank holds the same arrays).

    Attributes
    ----------
    k : ndarray
        The true proliferation field (1/day), natural C order.
    times : ndarray
        Visit days.
    cellularity : ndarray
        Noisy cellularity images, shape ``(n_visits, [nz,] ny, nx)`` on the imaging voxels (NaN outside the ROI).
    volume : ndarray
        Noisy segmented volumes (mm^3).
    true_volume, burden : ndarray
        Noise-free segmented volume (mm^3) and total cell count at each visit.
    path : str or None
        The visit file written.
    """

    k: np.ndarray
    times: np.ndarray
    cellularity: np.ndarray
    volume: np.ndarray
    true_volume: np.ndarray
    burden: np.ndarray
    path: str | None = None
    attrs: dict = field(default_factory=dict)


def generate_patient(cfg, comm, visit_days: Sequence[float], path: str | os.PathLike | None = None, seed: int = 0,
                     name: str = "tumour") -> SyntheticPatient:
    """Run a truth and produce imaging visits (collective over ``comm``; rank 0 writes the file).

    Parameters
    ----------
    cfg : TumourConfig
        The model section; ``parameters.k`` must have a ``gaussian_field`` prior (the truth is drawn from it).
    comm : mpi4py communicator
    visit_days : sequence of float
        Imaging days (increasing, at or after the run start).
    path : path-like, optional
        Where to write the NetCDF visit file.
    seed : int
        Seed of the random generator (the k field, then the noise, in that order).
    name : str
        Component name of the truth model (PETSc options prefix).
    """
    prior = cfg.parameters.k.prior
    if prior is None or prior.dist != "gaussian_field":
        raise ModelError(name, "the synthetic patient draws k(x) from its prior: give parameters.k a gaussian_field "
                               "prior")
    times = np.asarray(visit_days, dtype=float)
    start = cfg.run.start if cfg.run is not None else 0.0
    if times.size == 0 or np.any(np.diff(times) <= 0) or times[0] < start:
        raise ModelError(name, f"visit days must be increasing and not before the run start {start}, "
                               f"got {times.tolist()}")
    rng = np.random.default_rng(seed)
    model = TumourModel.from_config(name, cfg, comm)
    try:
        grid = model.grid
        k = sample_prior(prior, rng, grid) * convert(1.0, cfg.parameters.k.units, "1/day")
        model.set_parameter("k", k)
        theta = model.get_parameter("theta")
        im = cfg.imaging
        cell_op = CellularityOperator(grid, theta, im.noise_std, im.resolution, im.roi, model.tissue.mask)
        vol_op = TumourVolumeOperator(grid, theta, im.threshold, im.volume_noise_std, im.segmentation_width,
                                      model.tissue.mask)
        x = model.initial_state()
        images, volumes, true_volumes, burdens = [], [], [], []
        t = start
        for day in times:
            model.advance(x, t, float(day))
            t = float(day)
            clean = cell_op.apply(x)
            noisy = clean + im.noise_std * rng.standard_normal(clean.size)
            images.append(cell_op.voxels.to_image(noisy))
            v = float(vol_op.apply(x)[0])
            true_volumes.append(v)
            volumes.append(max(0.0, v + im.volume_noise_std * rng.standard_normal()))
            burdens.append(model.qoi(x, t)["burden"].value)
        x.destroy()
        attrs = {"seed": int(seed), "model": name, "synthetic": 1, "threshold": im.threshold}
        patient = SyntheticPatient(k, times, np.asarray(images), np.asarray(volumes), np.asarray(true_volumes),
                                   np.asarray(burdens), None, attrs)
        if path is not None:
            if comm.Get_rank() == 0:
                write_visits(path, times, patient.cellularity, cell_op.voxels.coords, patient.volume,
                             noise_std=im.noise_std, volume_noise_std=im.volume_noise_std, attrs=attrs)
            comm.Barrier()
            patient.path = str(path)
        cell_op.destroy()
        return patient
    finally:
        model.destroy()
