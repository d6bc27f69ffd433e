"""Localisation in campaigns. LETKF on a coupled campaign (configs/structure.yaml, reduced, with ``method: letkf``):
each component is analysed with its own observations on its own grid (weakly coupled assimilation); the unobserved
atmosphere keeps its forecast exactly, the mast's state and its damage field change only within the localisation
reach of the gauges. On one model (the oncology tumour) field parameters are localised at their grid points, by
LETKF and by localised ES-MDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from campaign_case import structure_campaign

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
RADIUS = 0.4                       # m: Gaspari-Cohn half-width, no influence beyond 0.8 m
ATMOSPHERE = 16 * 16 * 3           # the atmosphere's block of the coupled state in a checkpoint comes first
NODES = (33, 5)                    # mast nodes (rows, columns): 0.25 m vertically, 0.0625 m across


def test_coupled_letkf_updates_each_component_from_its_own_observations(tmp_path):
    import xarray as xr

    from twin.cli import main
    from twin.kinds.structure.report import damage_fields

    path, cfg = structure_campaign(tmp_path, members=6, cycles=2, placements=10, method="letkf",
                                   localisation={"radius": RADIUS, "component_radius": {"mast": RADIUS}},
                                   inflation={"multiplicative": 1.0, "rtps": 0.0})
    acfg = cfg["assimilation"]
    assert main(["run", str(path)]) == 0
    (exp,) = [p for p in (tmp_path / "run" / "experiments").iterdir() if p.is_dir()]

    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as post, \
            xr.open_dataset(exp / "forecast.nc", decode_times=False) as fc:
        # each component's fields on its own grid: (member, cycle, rows, columns); the posterior starts with the prior
        atmosphere = {v: (post[v].values[:, 1:], fc[v].values) for v in ("atmosphere_h", "atmosphere_u",
                                                                         "atmosphere_v")}
        mast = np.stack([post[v].values[:, 1:] - fc[v].values for v in ("mast_u_x", "mast_u_y", "mast_v_x",
                                                                          "mast_v_y")], axis=-1)
    # the atmosphere is not observed: its analysis is its forecast, bit for bit
    for v, (analysis, forecast) in atmosphere.items():
        assert np.array_equal(analysis, forecast), v
    # mast nodes farther than 2 * radius from every gauge keep their forecast; nodes at a gauge do not
    gauges = np.asarray(acfg["observations"][0]["points"], dtype=float)
    yy, xx = np.meshgrid(np.arange(NODES[0]) * 0.25, np.arange(NODES[1]) * 0.0625, indexing="ij")
    nodes = np.column_stack([xx.ravel(), yy.ravel()])
    dist = np.min(np.hypot(*(nodes[:, None, :] - gauges[None, :, :]).transpose(2, 0, 1)), axis=1)
    far, near = dist > 2 * RADIUS, dist < 0.1
    assert far.sum() >= 45 and near.sum() >= 8          # far: 4 m and from 6 m up
    mast = mast.reshape(*mast.shape[:2], -1, 4)   # nodes row by row, 4 unknowns per node
    assert np.array_equal(mast[:, :, far], np.zeros_like(mast[:, :, far]))
    assert np.all(np.abs(mast[:, :, near]).max(axis=(0, 1, 3)) > 0)
    # the damage field (a field parameter of the mast) is localised the same way
    fields = damage_fields(exp, "mast")
    change = np.abs(fields["posterior_mean"] - fields["prior_mean"])
    print(f"damage mean change: far {change[far].max():.1e}, near {change[near].min():.1e}")
    assert change[far].max() < 1e-12
    assert change[near].min() > 1e-4


def test_single_model_letkf_localises_field_parameters(tmp_path):
    """On one model (the oncology tumour, k(x) a field parameter, D a scalar) the entries of k sit at their grid
    points: an analysis from images of one corner changes k near that corner only, and D globally."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config import load_campaign

    data = yaml.safe_load((ROOT / "configs" / "oncology.yaml").read_text())
    data.pop("experiments")
    data["assimilation"] = {"method": "letkf", "N": 8, "localisation": {"radius": 3.0},
                            "schedule": {"every": 10, "cycles": 1},
                            "observations": [{"type": "imaging", "error_std": 0.05}]}
    path = tmp_path / "tumour_letkf.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_campaign(path).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        obs = ctx.observations(cfg, model)
        control = ctx.control_vector(model)
        local = ctx.local_context(cfg, model, obs, control)
        n = model.grid.size
        (lo, hi), (dlo, dhi) = control.offsets["k"], control.offsets["D_white"]
        assert np.array_equal(local.point_index[lo:hi], np.arange(n))
        assert np.all(local.point_index[dlo:dhi] == -1)
        assert np.array_equal(local.point_index[:control.n_state], np.arange(control.n_state) // model.grid.dof)
        # one analysis from the images of the lower-left corner only
        rng = np.random.default_rng(3)
        E = rng.standard_normal((control.size, 8))
        Y = np.asarray(obs.matrix @ E[:control.n_state])
        y = Y.mean(axis=1) + 0.1
        locs = np.atleast_2d(obs.locations)
        corner = np.all(locs < 10.0, axis=1)
        letkf = ctx.method(cfg, 8)
        Ea = letkf.analysis(E, Y[corner], y[corner], np.full(corner.sum(), 0.05), rng, local.observed(corner))
        points = np.column_stack([c.ravel() for c in model.grid.mesh()])
        dist = np.min(np.hypot(*(points[:, None, :] - locs[corner][None]).transpose(2, 0, 1)), axis=1)
        k_change = np.abs(Ea[lo:hi] - E[lo:hi]).max(axis=1)
        assert np.all(k_change[dist > 6.0] == 0) and np.all(k_change[dist < 1.0] > 0)
        assert np.abs(Ea[dlo:dhi] - E[dlo:dhi]).max() > 0
    finally:
        model.destroy()


def test_localised_esmda_campaign_updates_k_near_the_probes_only(tmp_path):
    """ES-MDA with ``localisation`` on the tumour campaign, observed by two probes near the lesion: after the two
    updates the members' k(x) differs from the prior within the reach of the probes (the same data at three visits)
    and not beyond 2 * radius; D, a scalar, is updated globally."""
    from mpi4py import MPI

    from twin.campaign import layout
    from twin.campaign.online import run_online
    from twin.config import load_campaign
    from twin.io.checkpoint import CheckpointReader

    radius = 4.0                                        # mm
    probes = [[24.0, 24.0], [28.0, 24.0]]
    data = yaml.safe_load((ROOT / "configs" / "oncology.yaml").read_text())
    for key in ("experiments", "decision"):
        data.pop(key)
    data["assimilation"] = {"method": "esmda", "N": 8, "seed": 2, "esmda_alphas": [2.0, 2.0],
                            "localisation": {"radius": radius}, "schedule": {"every": 10, "cycles": 3},
                            "observations": [{"type": "points", "points": probes, "error_std": 500.0}],
                            "background_std": 1.0e-12}
    data["outputs"]["directory"] = str(tmp_path / "run")
    path = tmp_path / "tumour_esmda_local.yaml"
    path.write_text(yaml.safe_dump(data))
    (exp,) = run_online(load_campaign(path), MPI.COMM_WORLD, tmp_path / "run")

    def ensemble(cycle):
        with CheckpointReader(layout.checkpoint_file(exp, cycle)) as r:
            k = r.read_field("k", "parameters").reshape(8, -1)
            D = np.asarray(r.scalar_parameters["D_white"], dtype=float)
        return k, D

    (k0, D0), (k2, D2) = ensemble(0), ensemble(2)
    x = (np.arange(24) + 0.5) * 2.0                      # cell centres, 2 mm cells
    yy, xx = np.meshgrid(x, x, indexing="ij")
    dist = np.min(np.hypot(xx.ravel()[:, None] - np.array(probes)[:, 0], yy.ravel()[:, None] - np.array(probes)[:, 1]),
                  axis=1)
    change = np.abs(k2 - k0).max(axis=0)
    print(f"k change: beyond 2c {change[dist > 2 * radius].max():.1e}, at the probes {change[dist < 2.0].min():.1e}")
    assert np.all(change[dist > 2 * radius] < 1e-12)
    assert np.all(change[dist < 2.0] > 1e-3)
    assert np.abs(D2 - D0).max() > 1e-3


def test_component_radius_names_are_checked_when_the_file_is_read(tmp_path):
    """A component_radius for a component the coupling does not have, or in a campaign without coupling, is refused
    by ``load_campaign`` with the file and line, before anything runs."""
    from twin.config import load_campaign
    from twin.core.errors import ConfigError

    path, _ = structure_campaign(tmp_path, members=6, cycles=2, placements=10, method="letkf",
                                 localisation={"radius": RADIUS, "component_radius": {"mass": RADIUS}})
    with pytest.raises(ConfigError, match=r"structure.yaml:\d+:\d+: assimilation.localisation.component_radius: "
                                          r"\['mass'\] are not coupled components; components are \['atmosphere', "
                                          r"'mast'\]"):
        load_campaign(path)
    data = yaml.safe_load((ROOT / "configs" / "oncology.yaml").read_text())
    data.pop("experiments")
    data["assimilation"] = {"method": "letkf", "N": 8, "localisation": {"radius": 3.0, "component_radius": {"x": 1}},
                            "schedule": {"every": 10, "cycles": 1},
                            "observations": [{"type": "imaging", "error_std": 0.05}]}
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="component_radius: only for coupled campaigns"):
        load_campaign(single)


def test_localised_esmda_on_the_coupled_structure_campaign(tmp_path):
    """ES-MDA on a coupled campaign (the reduced structure flagship), localised per component: the data misfit falls
    over the two updates, the mast's damage field changes only within reach of the gauges, the unobserved
    atmosphere's initial state not at all; the decision step runs on the posterior (decision.json)."""
    import xarray as xr

    from twin.campaign import layout
    from twin.cli import main
    from twin.io.checkpoint import CheckpointReader

    path, cfg = structure_campaign(tmp_path, members=6, cycles=2, placements=5, method="esmda",
                                   esmda_alphas=[2.0, 2.0], inflation={"multiplicative": 1.0},
                                   localisation={"radius": RADIUS, "component_radius": {"mast": RADIUS}})
    assert main(["run", str(path)]) == 0
    (exp,) = [p for p in (tmp_path / "run" / "experiments").iterdir() if p.is_dir()]
    assert (exp / "decision.json").is_file()
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as ds:
        misfit = ds["misfit"].values
    assert misfit[-1] < misfit[0], misfit

    def members(cycle):
        with CheckpointReader(layout.checkpoint_file(exp, cycle)) as r:
            return r.read_field("coupled").reshape(6, -1), r.read_field("mast.damage", "parameters").reshape(6, -1)

    (x0, d0), (x2, d2) = members(0), members(2)
    assert np.array_equal(x2[:, :ATMOSPHERE], x0[:, :ATMOSPHERE])
    gauges = np.asarray(cfg["assimilation"]["observations"][0]["points"], dtype=float)
    yy, xx = np.meshgrid(np.arange(NODES[0]) * 0.25, np.arange(NODES[1]) * 0.0625, indexing="ij")
    dist = np.min(np.hypot(xx.ravel()[:, None] - gauges[:, 0], yy.ravel()[:, None] - gauges[:, 1]), axis=1)
    change = np.abs(d2 - d0).max(axis=0)
    assert change[dist > 2 * RADIUS].max() < 1e-12 and change[dist < 0.1].min() > 1e-6
