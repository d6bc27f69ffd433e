"""Imaging observations: cellularity and volume operators, the NetCDF visit file, NIfTI resampling, and the
synthetic-patient generator."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from mpi4py import MPI

from twin.kinds.tumour.config import TumourConfig
from twin.core.errors import ModelError, ObservationError
from twin.core.grid import Grid
from twin.kinds.tumour.synthetic_patient import generate_patient
from twin.kinds.tumour.imaging import (CellularityOperator, TumourVolumeOperator, read_nifti, read_visits,
                                       write_visits)

COMM = MPI.COMM_SELF


@pytest.fixture
def grid():
    g = Grid(COMM, (12, 8), ((0.0, 24.0), (0.0, 16.0)), name="img")
    yield g
    g.destroy()


def test_cellularity_block_average(grid):
    theta = 2.0
    state = grid.from_function(lambda x, y: theta * (0.1 + 0.01 * x * y))
    op = CellularityOperator(grid, theta, 0.05, resolution=[4.0, 4.0])
    assert op.voxels.shape == (6, 4) and op.n_obs == 24
    y = op.apply(state)
    field = state.getArray().reshape(8, 12) / theta
    blocks = field.reshape(4, 2, 6, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(op.voxels.to_image(y), blocks, rtol=1e-14)
    # adjoint: <H dx, dy> = <dx, H^T dy>
    rng = np.random.default_rng(0)
    dx = grid.create_global()
    dx.getArray()[...] = rng.standard_normal(dx.getLocalSize())
    dy = rng.standard_normal(op.n_obs)
    out = grid.create_global()
    out.set(0.0)
    op.apply_adjoint(state, dy, out)
    assert op.apply(dx) @ dy == pytest.approx(dx.dot(out), rel=1e-12)
    for v in (state, dx, out):
        v.destroy()
    op.destroy()


def test_roi_and_mask_select_voxels(grid):
    op = CellularityOperator(grid, 1.0, 0.1, resolution=[4.0, 4.0], roi=[[4.0, 16.0], [0.0, 8.0]])
    img = op.voxels.to_image(np.arange(op.n_obs, dtype=float))
    assert op.n_obs == 3 * 2
    assert np.isnan(img[:, 0]).all() and not np.isnan(img[0, 1:4]).any() and np.isnan(img[2:, :]).all()
    mask = np.zeros((8, 12), bool)
    mask[:, :6] = True
    op2 = CellularityOperator(grid, 1.0, 0.1, mask=mask)
    assert op2.n_obs == 48 and np.all(op2.locations[:, 0] < 12.0)
    with pytest.raises(ObservationError, match="at least the model spacing"):
        CellularityOperator(grid, 1.0, 0.1, resolution=[1.0, 2.0])
    op.destroy()
    op2.destroy()


def test_volume_operator_counts_and_gradient(grid):
    theta = 1.0
    state = grid.from_function(lambda x, y: np.where(x < 9.0, 0.6, 0.05))
    hard = TumourVolumeOperator(grid, theta, 0.2, 5.0, width=1e-4)
    assert hard.apply(state)[0] == pytest.approx(4 * 8 * 4.0)  # 4 columns of 8 cells of 2x2 mm
    smooth = TumourVolumeOperator(grid, theta, 0.2, 5.0, width=0.1)
    x = grid.from_function(lambda x, y: 0.1 + 0.02 * x)
    dx = grid.from_function(lambda x, y: 0.01 * np.cos(y))
    g = grid.create_global()
    g.set(0.0)
    smooth.apply_adjoint(x, np.array([1.0]), g)
    v0 = smooth.apply(x)[0]
    rem = []
    for h in (1.0, 0.5, 0.25):
        xp = x.copy()
        xp.axpy(h, dx)
        rem.append(abs(smooth.apply(xp)[0] - v0 - h * g.dot(dx)))
        xp.destroy()
    assert np.log2(rem[0] / rem[1]) > 1.9 and np.log2(rem[1] / rem[2]) > 1.9, rem
    for v in (state, x, dx, g):
        v.destroy()


def test_visit_file_round_trip(tmp_path):
    times = [10.0, 20.0, 35.0]
    rng = np.random.default_rng(0)
    cell = rng.uniform(0, 1, (3, 4, 5))
    cell[:, 0, 0] = np.nan
    x, y = np.arange(5) * 2.0 + 1.0, np.arange(4) * 2.0 + 1.0
    path = tmp_path / "visits.nc"
    write_visits(path, times, cell, [x, y], [100.0, 150.0, 90.0], noise_std=0.05, volume_noise_std=5.0,
                 attrs={"patient": "synthetic-1"})
    write_visits(path, times, cell * 0.5, [x, y], [1.0, 2.0, 3.0])  # replaced atomically
    assert sorted(os.listdir(tmp_path)) == ["visits.nc"]
    ds = read_visits(path)
    np.testing.assert_allclose(ds["cellularity"].values, cell * 0.5, equal_nan=True)
    assert ds["cellularity"].dims == ("time", "y", "x")
    assert ds["x"].attrs["units"] == "mm" and ds["time"].attrs["units"] == "day"
    assert ds.attrs["Conventions"] == "CF-1.8"
    np.testing.assert_allclose(ds["tumour_volume"].values, [1.0, 2.0, 3.0])
    with pytest.raises(ObservationError, match="must increase"):
        write_visits(tmp_path / "bad.nc", [2.0, 1.0], cell[:2], [x, y])
    with pytest.raises(ObservationError, match="cannot read"):
        read_visits(tmp_path / "missing.nc")


def _affine():
    """Anisotropic voxels (1.5, 2, 3 mm), x flipped, rotated by 30 degrees about z, offset origin."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    A = np.eye(4)
    A[:3, :3] = R @ np.diag([-1.5, 2.0, 3.0])
    A[:3, 3] = [60.0, -20.0, -15.0]
    return A


def _world_function(x, y, z):
    return 1.0 + 0.02 * x - 0.03 * y + 0.05 * z


def test_nifti_resampled_respecting_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    A = _affine()
    shape = (50, 50, 12)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij") + [np.ones(shape)], axis=0)
    world = np.tensordot(A, ijk, axes=1)
    data = _world_function(world[0], world[1], world[2])
    path = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), A), str(path))
    # a 2-D grid (slice at z = 0 mm) and a 3-D grid inside the imaged volume
    g2 = Grid(COMM, (20, 16), ((5.0, 30.0), (5.0, 28.0)), name="n2")
    got = read_nifti(path, g2, plane=0.0)
    X, Y = g2.mesh()
    np.testing.assert_allclose(got, _world_function(X, Y, 0.0), rtol=1e-5, atol=1e-6)  # float32 storage
    g3 = Grid(COMM, (10, 8, 6), ((5.0, 30.0), (5.0, 28.0), (-10.0, 8.0)), name="n3")
    got3 = read_nifti(path, g3)
    X, Y, Z = g3.mesh()
    np.testing.assert_allclose(got3, _world_function(X, Y, Z), rtol=1e-5, atol=1e-6)
    far = Grid(COMM, (4, 4), ((500.0, 520.0), (500.0, 520.0)), name="far")
    with pytest.raises(ObservationError, match="does not overlap"):
        read_nifti(path, far)
    # a NaN voxel is refused, naming it, rather than spread by the interpolation into the analysis
    data[7, 9, 3] = np.nan
    bad = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), A), str(bad))
    with pytest.raises(ObservationError, match=r"1 voxel\(s\) are not finite \(the first at voxel \(7, 9, 3\)\)"):
        read_nifti(bad, g2, plane=0.0)
    for g in (g2, g3, far):
        g.destroy()


def test_images_that_would_be_read_as_something_else_are_refused(tmp_path):
    """Found by a probe: a singular affine gave LinAlgError (a traceback in twin assimilate), a 4-D series was read
    as its first volume, a complex image lost its imaginary part, an RGB image a long NumPy error."""
    nib = pytest.importorskip("nibabel")
    A = _affine()
    g = Grid(COMM, (6, 6), ((5.0, 30.0), (5.0, 28.0)), name="odd")
    cube = np.full((50, 50, 12), 0.5)
    cases = []
    for name, data, affine, expect in (
            ("singular", cube, np.diag([2.0, 2.0, 0.0, 1.0]), r"singular.nii.gz: its affine \(the header's "
                                                              r"sform/qform\) is singular or not finite"),
            ("series", np.stack([cube] * 3, axis=-1), A, r"a 4-D image of 3 volumes \(\[50, 50, 12, 3\]\); a visit "
                                                         r"is one 3-D volume"),
            ("complex", cube.astype(np.complex64), A, r"its voxels are complex, not real numbers"),
    ):
        path = tmp_path / f"{name}.nii.gz"
        img = nib.Nifti1Image(data, A)
        if name == "singular":  # the sform alone (a qform cannot hold it), as a scanner's broken header does
            img.set_sform(affine, code=1)
            img.set_qform(None, code=0)
        nib.save(img, str(path))
        cases.append((path, expect))
    one = tmp_path / "one.nii.gz"  # a 4-D image of one volume is a volume
    nib.save(nib.Nifti1Image(cube[..., None], A), str(one))
    try:
        for path, expect in cases:
            with pytest.raises(ObservationError, match=expect):
                read_nifti(path, g, plane=0.0)
        np.testing.assert_allclose(read_nifti(one, g, plane=0.0), 0.5)
    finally:
        g.destroy()


def test_an_image_larger_than_its_bound_is_refused_from_its_header(tmp_path):
    """A header declaring 30000^3 voxels (a corrupt or hostile file) was read into memory first: a bare MemoryError."""
    nib = pytest.importorskip("nibabel")
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    path = tmp_path / "huge.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 64)
    g = Grid(COMM, (4, 4), ((0.0, 4.0), (0.0, 4.0)), name="huge")
    try:
        with pytest.raises(ObservationError, match=r"huge.nii: its header declares \[30000, 30000, 30000\] voxels "
                                                   r"\(27,000,000,000,000\), more than twin reads"):
            read_nifti(path, g)
    finally:
        g.destroy()


def test_synthetic_patient(tmp_path):
    cfg = TumourConfig.model_validate({
        "type": "tumour", "grid": {"shape": [32, 28], "extent": [[0, 160], [0, 140]], "units": "mm"}, "dt": 1.0,
        "seed": {"center": [60, 75], "radius": 6, "amplitude": 0.6},
        "parameters": {"theta": {"value": 1.0, "units": "1/mm^3"}, "D_white": {"value": 1.0, "units": "mm^2/day"},
                       "k": {"prior": {"dist": "gaussian_field", "mean": float(np.log(0.15)), "std": 0.3,
                                       "length_scale": 20.0}, "units": "1/day", "estimable": True},
                       "alpha": {"value": 0.1, "units": "1/Gy"}},
        "treatment": {"radiotherapy": {"times": [12, 13, 14], "doses": [2.0]}},
        "imaging": {"resolution": [10.0, 10.0], "noise_std": 0.02, "volume_noise_std": 2.0},
        "run": {"start": 0, "end": 40}})
    path = tmp_path / "patient.nc"
    p = generate_patient(cfg, COMM, [5.0, 12.0, 20.0], path, seed=11, name="synth")
    assert np.all(p.k > 0) and p.k.std() > 0.01  # a random field, not a constant
    assert p.true_volume[1] > p.true_volume[0] > 0
    ds = read_visits(path)
    assert ds["cellularity"].shape == (3, 14, 16)
    np.testing.assert_allclose(ds["cellularity"].values, p.cellularity, equal_nan=True)
    assert ds["cellularity"].attrs["noise_std"] == 0.02 and ds.attrs["seed"] == 11
    again = generate_patient(cfg, COMM, [5.0, 12.0, 20.0], None, seed=11, name="synth")
    np.testing.assert_array_equal(again.cellularity, p.cellularity)
    cfg_scalar = cfg.model_copy(update={"parameters": cfg.parameters.model_copy(
        update={"k": cfg.parameters.k.model_copy(update={"prior": None, "value": 0.1, "estimable": False})})})
    with pytest.raises(ModelError, match="gaussian_field prior"):
        generate_patient(cfg_scalar, COMM, [5.0], None)
