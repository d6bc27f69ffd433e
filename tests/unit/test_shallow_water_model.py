"""Shallow-water model: bad inputs refused with clear errors, stable limits, exact Jacobians, QoIs, configuration."""

import math

import numpy as np
import pytest
from mpi4py import MPI
from pydantic import ValidationError

from twin.kinds.shallow_water.config import InitialConditionSpec, ShallowWaterConfig
from twin.core.errors import ModelError, SolverError
from twin.kinds.shallow_water import Bump, ShallowWater
from twin.kinds.shallow_water.initial import INITIAL_CONDITIONS
from twin.kinds.shallow_water.kernel import Dual, tangent, tendency
from twin.kinds.shallow_water.stability import imaginary_stability_limit

L = 2.0e6


def make(name, shape=(12, 9), **kw):
    kw.setdefault("dt", 60.0)
    kw.setdefault("mean_depth", 1000.0)
    kw.setdefault("initial", ("balanced_turbulence", {"speed": 15.0}))
    return ShallowWater(name, MPI.COMM_SELF, shape, ((0, L), (0, 0.75 * L)), **kw)


def test_unknown_initial_condition_lists_the_known_ones():
    with pytest.raises(ModelError) as err:
        make("sw_unknown_ic", initial=("hurricane", {}))
    for known in INITIAL_CONDITIONS:
        assert known in str(err.value)
    assert "hurricane" in str(err.value) and "sw_unknown_ic" in str(err.value)


def test_initial_conditions_have_their_declared_properties():
    m = make("sw_ic_turb", shape=(16, 12), initial=("balanced_turbulence", {"speed": 12.0, "seed": 5}))
    a = m.grid.owned_array(m.initial_state(), readonly=True)
    assert max(np.abs(a[..., 1]).max(), np.abs(a[..., 2]).max()) == pytest.approx(12.0, rel=1e-12)
    assert a[..., 0].mean() == pytest.approx(1000.0, rel=1e-12)  # a streamfunction has zero mean
    m.destroy()
    m = make("sw_ic_jet", shape=(12, 48), initial=("unstable_jet", {"speed": 25.0, "perturbation": 0.0}))
    a = m.grid.owned_array(m.initial_state(), readonly=True)
    ly, w = 0.75 * L, 0.75 * L / 24
    y = (np.arange(48) + 0.5) * ly / 48
    jet = 25.0 * (np.cosh((y - ly / 4) / w) ** -2 - np.cosh((y - 3 * ly / 4) / w) ** -2)
    assert np.allclose(a[..., 1], jet[:, None], rtol=0, atol=1e-12) and np.all(a[..., 2] == 0)
    assert np.ptp(a[..., 0], axis=1).max() < 1e-9  # zonally symmetric without the perturbation
    m.destroy()
    with pytest.raises(ModelError, match="width must be in"):
        make("sw_ic_wide", initial=("unstable_jet", {"width": 0.2 * L}))


def test_unknown_initial_condition_option_is_refused():
    with pytest.raises(ModelError, match=r"no option\(s\) \['sped'\]"):
        make("sw_bad_opt", initial=("unstable_jet", {"sped": 3.0}))


def test_config_initial_condition_names_match_the_model_registry():
    names = {cls.model_fields["name"].annotation.__args__[0] for cls in InitialConditionSpec.__origin__.__args__}
    assert names == set(INITIAL_CONDITIONS)


def _config(**over):
    cfg = {"type": "shallow_water",
           "grid": {"shape": [12, 9], "extent": [[0, 2000], [0, 1500]], "units": "km", "periodic": True},
           "mean_depth": {"value": 1, "units": "km"}, "time_step": {"value": 1, "units": "min"},
           "parameters": {"drag": {"value": 1.0, "units": "1/day"}},
           "initial": {"name": "unstable_jet", "speed": {"value": 72, "units": "km/h"}},
           "tracer": {"center": [500, 500], "radius": 200}, "sites": {"a": [1000, 750]},
           "threshold": {"value": 1000, "units": "m"}}
    cfg.update(over)
    return cfg


def test_config_unknown_initial_condition_lists_the_known_ones():
    with pytest.raises(ValidationError) as err:
        ShallowWaterConfig.model_validate(_config(initial={"name": "hurricane"}))
    for known in INITIAL_CONDITIONS:
        assert known in str(err.value)


@pytest.mark.parametrize("bad, match", [({"grid": {"shape": [8, 8], "extent": [[0, 1], [0, 1]]}}, "periodic"),
                                        ({"time_step": {"value": 1, "units": "m"}}, "time_step"),
                                        ({"parameters": {"drag": {"value": 1, "units": "m"}}}, "drag")])
def test_config_refuses_bad_sections(bad, match):
    with pytest.raises(ValidationError, match=match):
        ShallowWaterConfig.model_validate(_config(**bad))


def test_from_config_converts_units():
    cfg = ShallowWaterConfig.model_validate(_config())
    m = ShallowWater.from_config("sw_cfg", cfg, MPI.COMM_SELF)
    try:
        assert m.grid.extent == ((0.0, 2.0e6), (0.0, 1.5e6))
        assert m.dt == pytest.approx(60.0) and m.mean_depth == pytest.approx(1000.0)
        assert m.get_parameter("drag") == pytest.approx(1 / 86400)
        assert m.state_names == ("h", "u", "v", "tracer")
        assert m._initial_spec == ("unstable_jet", {"speed": pytest.approx(20.0), "perturbation": 1.0,
                                                    "perturbation_wavenumber": 4})  # 72 km/h
        assert set(m.qoi(m.initial_state(), 0.0)) >= {"mass", "energy", "enstrophy", "tracer_mass", "eta_at_a",
                                                      "tracer_at_a", "area_above_threshold"}
    finally:
        m.destroy()


@pytest.mark.parametrize("rk, limit", [("4", math.sqrt(8)), ("3", math.sqrt(3)), ("3bs", math.sqrt(3))])
def test_stability_interval_of_rk_methods(rk, limit):
    assert imaginary_stability_limit("rk", rk) == pytest.approx(limit, rel=1e-6)
    assert imaginary_stability_limit("rk", "1fe") < 1e-3
    assert imaginary_stability_limit("beuler") == math.inf


def test_time_step_above_the_stable_limit_is_refused_with_the_limit_named():
    g, H = 9.81, 1000.0
    dx, dy = L / 12, 0.75 * L / 9
    # at rest, f = 0: the exact spectral radius of the C-grid gravity-wave operator
    expected = math.sqrt(8) / (2 * math.sqrt(g * H) * math.sqrt(dx ** -2 + dy ** -2))
    m = make("sw_cfl_ok", dt=0.9 * expected, initial=("geostrophic_balance", {"amplitude": 0.0}),
             parameters={"f0": 1e-4})
    x = m.initial_state()
    flat = m.create_state()
    m.grid.owned_array(flat)[..., 0] = H
    m.parameters["f0"].value = 0.0
    assert m.stable_time_step(flat) == pytest.approx(expected, rel=1e-6)
    m.parameters["f0"].value = 1e-4
    m.destroy()
    with pytest.raises(ModelError) as err:
        make("sw_cfl_bad", dt=1.2 * expected, initial=("geostrophic_balance", {"amplitude": 0.0}))
    msg = str(err.value)
    assert "stable limit" in msg and "sw_cfl_bad" in msg
    limit = float(msg.split("stable limit ")[1].split(" s")[0])
    assert limit == pytest.approx(math.sqrt(8) / (1e-4 + 2 * math.sqrt(g * H) * math.sqrt(dx ** -2 + dy ** -2)),
                                  rel=1e-5)
    x.destroy()


def test_diverging_run_raises_solver_error_with_time_and_reason():
    m = make("sw_diverge", check_cfl=False)
    dt = 1.5 * m.stable_time_step(m.initial_state())
    m.destroy()
    m = make("sw_diverge", dt=dt, check_cfl=False)
    x = m.initial_state()
    with pytest.raises(SolverError) as err:
        m.advance(x, 0.0, dt * 500)
    assert err.value.component == "sw_diverge" and err.value.time > 0
    assert "DIVERGED" in err.value.reason
    m.destroy()


def test_bad_states_and_parameters_are_refused():
    m = make("sw_bad_state")
    x = m.initial_state()
    m.grid.owned_array(x)[0, 0, 0] = -1.0
    with pytest.raises(ModelError, match="layer thickness must be positive"):
        m.advance(x, 0.0, 60.0)
    with pytest.raises(ModelError, match="drag must be non-negative"):
        m.set_parameter("drag", -1.0)
    with pytest.raises(ModelError, match="no gradient for parameter"):
        m.adjoint(m.initial_state(), 0.0, 60.0, x, ["mean_depth"])
    m.destroy()
    with pytest.raises(ModelError, match="unknown parameter"):
        make("sw_bad_param", parameters={"viscosity": 1.0})


def _fields(m, x):
    return [f.copy() for f in m.ghosted_fields(x)]


def test_assembled_jacobian_equals_forward_mode_derivative_and_finite_differences():
    m = make("sw_jac", tracer=Bump((L / 2, L / 3), L / 6, 1.0), topography=Bump((L / 3, L / 3), L / 8, 100.0),
             parameters={"drag": 1e-5, "beta": 1e-11, "forcing_amplitude": 1e-5})
    x = m.initial_state()
    J, _ = m._jacobians()
    m._rhs_jacobian(None, 0.0, x, J, J)
    rng = np.random.default_rng(3)
    scale = np.tile([1.0, 0.01, 0.01, 1.0], m.grid.size)
    dx, y, Jdx, JTy = (x.duplicate() for _ in range(4))
    dx.setArray(rng.standard_normal(dx.getLocalSize()) * scale)
    y.setArray(rng.standard_normal(y.getLocalSize()))
    J.mult(dx, Jdx)
    J.multTranspose(y, JTy)
    # forward-mode directional derivative through the same kernel, no colouring involved
    fx, fd = _fields(m, x), _fields(m, dx)
    out = tendency([Dual(a, d[None]) for a, d in zip(fx, fd)], m.geometry, m.parameter_values())
    tlm = np.stack([tangent(o, 1, fx[0][1:-1, 1:-1].shape)[0] for o in out], -1).ravel()
    assert np.abs(tlm - Jdx.getArray()).max() <= 1e-13 * np.abs(tlm).max()
    # <J dx, y> = <dx, J^T y> with J dx from the forward mode and J^T y from the assembled matrix
    assert np.dot(tlm, y.getArray()) == pytest.approx(dx.dot(JTy), rel=1e-13)
    # central differences converge to it at second order
    F1, F2 = x.duplicate(), x.duplicate()
    errs = []
    for eps in (1e-1, 5e-2):
        xp, xm = x.copy(), x.copy()
        xp.axpy(eps, dx)
        xm.axpy(-eps, dx)
        m._rhs(None, 0.0, xp, F1)
        m._rhs(None, 0.0, xm, F2)
        errs.append(np.abs((F1.getArray() - F2.getArray()) / (2 * eps) - tlm).max())
    assert errs[1] < errs[0] / 3.5
    assert errs[1] < 1e-6 * np.abs(tlm).max()
    m.destroy()


def test_site_values_and_area_above_threshold():
    amp, H = 20.0, 1000.0
    m = make("sw_qoi", shape=(40, 30), initial=("geostrophic_balance", {"amplitude": amp}),
             sites={"a": (0.3 * L, 0.2 * L), "b": (0.9 * L, 0.7 * L)}, threshold=H + amp / 2)
    q = m.qoi(m.initial_state(), 0.0)
    ly = 0.75 * L
    dy = ly / 30
    for site, (_, y) in m.sites.items():
        exact = amp * np.sin(2 * np.pi * y / ly)  # the sea-level anomaly: free surface minus the rest level H
        assert q[f"eta_at_{site}"].value == pytest.approx(exact, abs=amp * (2 * np.pi * dy / ly) ** 2)
    # eta > H + A/2 where sin > 1/2: one third of the domain, up to one row of cells
    assert q["area_above_threshold"].value == pytest.approx(L * ly / 3, abs=2 * L * dy)
    assert q["mass"].value == pytest.approx(H * L * ly, rel=1e-14)
    m.destroy()


def test_site_sea_level_is_the_anomaly_over_topography():
    """A flat surface at rest over a 100 m seamount: the layer is 900 m deep at its top, the anomaly 0 there."""
    from twin.kinds.shallow_water.model import Bump

    top = (L / 3, L / 3)
    m = make("sw_anomaly", shape=(24, 18), initial=("geostrophic_balance", {"amplitude": 0.0}), sites={"top": top},
             topography=Bump(top, L / 5, 100.0))
    state = m.initial_state()
    q = m.qoi(state, 0.0)
    assert q["eta_at_top"].value == pytest.approx(0.0, abs=1e-9) and q["eta_at_top"].units == "m"
    assert "anomaly" in q["eta_at_top"].long_name
    state.shift(2.5)  # raise every h (and the free surface) by 2.5 m (u, v too, which the anomaly ignores)
    assert m.qoi(state, 0.0)["eta_at_top"].value == pytest.approx(2.5, abs=1e-9)
    state.destroy()
    m.destroy()
