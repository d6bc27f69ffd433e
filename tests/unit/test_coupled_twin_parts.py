"""The pieces the two coupled twins add to the models and the coupler, each checked on its own (serial, small).

* tumour: the imported von Mises stress lowers the diffusivity to D0 exp(-gamma sigma); the operator's derivative
  matrices stay exact with the factor (central differences); cellularity export; clear errors.
* structure: the imported wind becomes the drag traction 1/2 rho C_d |U| u on the windward edge; field grids.
* shallow water: the exported velocity is the face average; the wind QoIs at a site match the geostrophic jet.
* coupler: maps between grids in mm and m reproduce linear fields exactly; a site map broadcasts the bilinear value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from twin.config.coupling import CouplingConfig
from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.coupling.mapping import site_map
from twin.coupling.schemes import Component, Route
from twin.kinds.structure import Material, StructureModel
from twin.kinds.structure.loads import WindLoad
from twin.kinds.tumour import TumourModel, box_tissue
from twin.kinds.tumour.operators import DiffusionOperator

COMM = MPI.COMM_SELF
VALUES = dict(D_white=0.5, D_grey=0.1, k=0.1, theta=2.0, alpha=0.05, alpha_beta=10.0, kappa=0.0, half_life=1.0)


def _tumour(name, gamma):
    grid = Grid(COMM, (12, 10), ((0, 12), (0, 10)), name=name)
    return TumourModel(name, COMM, grid, box_tissue(grid.shape[::-1], white=0.7), {**VALUES, "gamma": gamma},
                       dt=0.5, initial=lambda x, y: np.exp(-((x - 6) ** 2 + (y - 5) ** 2) / 8.0))


def test_tumour_stress_lowers_diffusivity_and_exports_cellularity():
    m = _tumour("ts_stress", gamma=2e-3)   # 1/Pa
    D0 = m.op.diffusivity.copy()
    assert np.allclose(D0, 0.7 * 0.5 + 0.3 * 0.1)
    sigma = m.grid.from_function(lambda x, y: 100.0 * x)    # Pa
    m.set_import("stress", sigma)
    X, _ = m.grid.owned_mesh()
    assert np.allclose(m.op.diffusivity, D0 * np.exp(-2e-3 * 100.0 * X.ravel()), rtol=1e-14)
    # gamma = 0 switches the coupling off again
    m.set_parameter("gamma", 0.0)
    assert np.allclose(m.op.diffusivity, D0, rtol=1e-15)
    x = m.initial_state()
    out = m.exports(x)
    assert np.allclose(out["cellularity"].getArray(), x.getArray() / 2.0)
    with pytest.raises(ModelError, match="imports \\['stress'\\]"):
        m.set_import("pressure", sigma)
    with pytest.raises(ModelError, match="import 'stress' has 9 values"):
        m.set_import("stress", _seq_vec(9))
    with pytest.raises(ModelError, match="parameter gamma must be >= 0"):
        m.set_parameter("gamma", -1.0)
    for v in (sigma, x, out["cellularity"]):
        v.destroy()
    m.destroy()


def _seq_vec(n):
    from petsc4py import PETSc

    return PETSc.Vec().createSeq(n, comm=COMM)


def test_diffusion_derivatives_exact_with_stress_factor():
    """dA/dD_white and dA/dD_grey with a non-uniform factor against central differences (error ~ h^2)."""
    grid = Grid(COMM, (9, 7), ((0, 9), (0, 7)), name="dA")
    Y, X = np.mgrid[0:7, 0:9]
    tissue = box_tissue((7, 9), white=0.6)
    tissue.white = 0.2 + 0.6 * (X / 8.0)
    factor = np.exp(-0.3 * (X + Y) / 10.0)
    op, plus, minus = (DiffusionOperator(grid, tissue) for _ in range(3))
    Dw, Dg, h = 0.4, 0.15, 1e-5
    op.update(Dw, Dg, factor)
    for which, dA in (("white", op.dA_white), ("grey", op.dA_grey)):
        dw, dg = (h, 0.0) if which == "white" else (0.0, h)
        plus.update(Dw + dw, Dg + dg, factor)
        minus.update(Dw - dw, Dg - dg, factor)
        fd = (plus.A[:, :] - minus.A[:, :]) / (2 * h)
        assert np.max(np.abs(fd - dA[:, :])) < 1e-8 * np.max(np.abs(dA[:, :]))
    for o in (op, plus, minus):
        o.destroy()
    grid.destroy()


def test_structure_wind_drag_and_field_grids():
    steel = Material(210e9, 0.3, 7850.0)
    m = StructureModel("mast_unit", COMM, (2, 8), ((0, 0.5), (0, 4.0)), steel, {"bottom": "clamped"},
                       wind=WindLoad("left", 1.2, 1.5))
    assert m.field_grid("von_mises") is m.mesh.scalar and m.field_grid("eigenstrain") is m.mesh.scalar
    assert m.field_grid("wind") is m.mesh.disp and m.field_grid("traction_top") is m.mesh.disp
    with pytest.raises(ModelError, match="unknown coupling field 'stress'"):
        m.field_grid("stress")
    wind = m.mesh.disp.create_global()
    a = m.mesh.disp.owned_array(wind)
    a[..., 0], a[..., 1] = 12.0, -5.0                       # |U| = 13 m/s
    m.set_import("wind", wind)
    tau = m.mesh.disp.owned_array(m.imports["traction_left"], readonly=True)
    assert np.allclose(tau[..., 0], 0.5 * 1.2 * 1.5 * 13.0 * 12.0) and np.all(tau[..., 1] == 0)
    x = m.initial_state()
    m.advance(x, 0.0, 1.0)
    assert np.all(m.mesh.disp.owned_array(x)[-1, :, 0] > 0)  # the tip moves downwind
    with pytest.raises(ModelError, match="both act on the left edge"):
        m.set_import("traction_left", wind)
    plain = StructureModel("plain_unit", COMM, (2, 2), ((0, 1), (0, 1)), steel, {"bottom": "clamped"})
    with pytest.raises(ModelError, match="needs a wind load in the configuration"):
        plain.set_import("wind", plain.mesh.disp.create_global())
    for obj in (x, wind, m, plain):
        obj.destroy()


def test_shallow_water_velocity_export_and_site_wind():
    from twin.kinds.shallow_water.config import ShallowWaterConfig
    from twin.kinds.shallow_water import ShallowWater

    cfg = ShallowWaterConfig.model_validate({
        "type": "shallow_water", "grid": {"shape": [8, 16], "extent": [[0, 32], [0, 64]], "units": "km",
                                          "periodic": True},
        "mean_depth": {"value": 100, "units": "m"}, "time_step": {"value": 10, "units": "s"},
        "initial": {"name": "geostrophic_balance", "amplitude": {"value": 2, "units": "m"}},
        "sites": {"a": [5, 32], "b": [20, 7]}})
    m = ShallowWater.from_config("sw_unit", cfg, COMM)
    x = m.initial_state()
    vel = m.exports(x)["velocity"]
    grid = m.field_grid("velocity")
    assert grid.dof == 2 and grid.shape == m.grid.shape
    u = m.grid.owned_array(x)[..., 1]
    # u does not depend on x, so the face average is u itself; v is zero
    assert np.allclose(grid.owned_array(vel)[..., 0], u) and np.all(grid.owned_array(vel)[..., 1] == 0)
    # the jet u = -(g/f) A k cos(k y), sampled by linear interpolation in y between u points 4 km apart: the error
    # is at most u_max (k dy)^2 / 8 (reached at the jet's core, halfway between two u points)
    q = m.qoi(x, 0.0)
    k = 2 * np.pi / 64e3
    u_max = 9.81 / 1e-4 * 2.0 * k
    for name, y in (("a", 32e3), ("b", 7e3)):
        exact = -u_max * np.cos(k * y)
        assert abs(q[f"u_at_{name}"].value - exact) <= 1.01 * u_max * (k * 4e3) ** 2 / 8
        assert q[f"v_at_{name}"].value == 0.0
    vel.destroy()
    x.destroy()
    m.destroy()


class _Stub:
    """The least of a model that a route needs: a field grid and length units."""

    def __init__(self, grid, units):
        self.grid, self.length_units = grid, units

    def field_grid(self, name):
        return self.grid


def test_route_maps_between_length_units_and_site_map_broadcasts():
    src = Grid(COMM, (10, 8), ((0, 50), (0, 40)), name="mm")                        # cells, mm
    dst = Grid(COMM, (6, 5), ((0, 0.05), (0, 0.04)), centering="node", name="m")   # nodes, m
    spec = CouplingConfig.model_validate({
        "components": ["a", "b"], "window": {"value": 1, "units": "s"},
        "routes": [{"from": "a.f", "to": "b.g"}], "scheme": {"kind": "explicit_serial"}}).routes[0]
    a = Component("a", _Stub(src, "mm"), src.create_global())
    b = Component("b", _Stub(dst, "m"), dst.create_global())
    route = Route(spec, a, b)
    field = src.from_function(lambda x, y: 1.0 + 0.3 * x - 0.2 * y)              # linear in mm
    route.receive({"f": field})
    X, Y = dst.owned_mesh()
    assert np.allclose(dst.owned_array(route.received), 1.0 + 0.3 * 1e3 * X - 0.2 * 1e3 * Y, atol=1e-12)
    # a site map: the bilinear value at (12.5, 31) mm everywhere on the target
    smap = site_map("consistent", src, dst, (12.5, 31.0), name="site")
    y = smap.apply(field)
    assert np.allclose(y.getArray(), 1.0 + 0.3 * 12.5 - 0.2 * 31.0, rtol=1e-13)
    for obj in (route, smap, field, y, a.state, b.state, src, dst):
        obj.destroy()


def test_campaign_errors_name_the_problem(tmp_path):
    import yaml
    from pydantic import ValidationError

    from twin.config import load_campaign
    from twin.core.errors import ConfigError
    from twin.coupling.build import build_coupled

    root = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "configs" / "tumour_mechanics.yaml").read_text())
    data["models"]["spare"] = dict(data["models"]["tissue"])
    path = tmp_path / "spare.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models \['spare'\] are not coupled"):
        build_coupled(load_campaign(path), COMM)
    route = {"from": "a.f", "to": "b.g", "mapping": "conservative", "site": {"point": [1, 2], "units": "km"}}
    with pytest.raises(ValidationError, match="a site is sampled by consistent or nearest mapping"):
        CouplingConfig.model_validate({"components": ["a", "b"], "window": {"value": 1, "units": "s"},
                                       "routes": [route], "scheme": {"kind": "explicit_serial"}})


@pytest.mark.parametrize("config, scale", [("wind_structure.yaml", 0.9), ("tumour_mechanics.yaml", 0.9)])
def test_a_members_coupled_forecast_does_not_depend_on_the_member_before(config, scale):
    """Found by a probe: the members of a campaign share one coupled model, and a member's window started from the
    interface data the member before had left (the rewind to data remembered at t0), with its quasi-Newton
    columns: a 10 % different atmosphere in member B changed member A's mast by 33 %. Each member's forecast is now
    its own: A advanced after B equals A advanced alone, bitwise, in every component. (Until 2026-12-07 the
    implicit tumour differed by ~1e-10: the tissue exported its first stress with the growth strain member B had
    left it, which a resume does not have either; a probe saw its resumes differ.)"""
    from twin.campaign.state import CoupledState
    from twin.config import load_campaign
    from twin.coupling.build import build_coupled

    loaded = load_campaign(Path(__file__).resolve().parents[2] / "configs" / config)

    def run(with_b: bool) -> np.ndarray:
        m = CoupledState(build_coupled(loaded, MPI.COMM_WORLD))
        try:
            x0 = m.initial_state()
            a = x0.copy()
            whole = np.array(m.grid.allgather(x0)).ravel()
            first = m.block(m.coupled.config.components[0])
            whole[first] *= scale
            b = m.grid.set_global(whole, m.create_state())
            for t0, t1 in ((0.0, 2.0), (2.0, 4.0)):
                if with_b:
                    m.advance(b, t0, t1)
                m.advance(a, t0, t1)
            out = np.array(m.grid.allgather(a)).ravel()
            for v in (x0, a, b):
                v.destroy()
            return out
        finally:
            m.destroy()

    alone, after = run(False), run(True)
    assert after.tobytes() == alone.tobytes(), np.max(np.abs(after - alone))


def test_a_coupled_states_diagnostics_name_their_components_units():
    """A coupled campaign's RMSE and spread over the whole state were written in units "1" (the coupled state's own,
    a concatenation) and the report's axis said [1]: they mix the components' units and say which."""
    from twin.campaign.outputs import state_units
    from twin.campaign.state import CoupledState
    from twin.config import load_campaign
    from twin.coupling.build import build_coupled

    m = CoupledState(build_coupled(load_campaign(Path(__file__).resolve().parents[2] / "configs" / "structure.yaml"),
                                   MPI.COMM_WORLD))
    try:
        units, mix = state_units(m)
    finally:
        m.destroy()
    assert units is None
    assert mix.startswith("atmosphere.h [m], atmosphere.u [m/s], atmosphere.v [m/s], mast.u_x [m]")
