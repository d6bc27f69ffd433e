"""Unit tests of the structure model: element matrices, loads, refusals, configuration."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from pydantic import ValidationError

from twin.kinds.structure.config import StructureConfig
from twin.core.errors import ModelError, ObservationError
from twin.kinds.structure import Material, StructureModel
from twin.kinds.structure.elements import ReferenceElement, constitutive_matrix, strain_matrix
from twin.kinds.structure.loads import LoadCase, TimeFunction

COMM = MPI.COMM_SELF
STEEL = Material(E0=200e9, nu=0.3, rho=7800.0)


def rigid_modes(hx, hy):
    x = np.array([0, hx, hx, 0.0])
    y = np.array([0, 0, hy, hy])
    r = np.zeros((3, 8))
    r[0, 0::2] = 1.0
    r[1, 1::2] = 1.0
    r[2, 0::2], r[2, 1::2] = -y, x
    return r


@pytest.mark.parametrize("plane", ["stress", "strain"])
def test_reference_element_rigid_modes_symmetry_and_mass(plane):
    ref = ReferenceElement(0.3, 0.2, 0.25, plane, thickness=0.05)
    assert np.allclose(ref.K, ref.K.T)
    assert np.abs(ref.K @ rigid_modes(0.3, 0.2).T).max() < 1e-12 * np.abs(ref.K).max()
    eig = np.linalg.eigvalsh(ref.K)
    assert np.sum(eig > 1e-10 * eig.max()) == 5  # 8 dofs - 3 rigid modes
    # total mass of a unit-density element: each direction carries rho * area * thickness
    assert ref.M[0::2, 0::2].sum() == pytest.approx(0.3 * 0.2 * 0.05)


def test_uniform_strain_gives_exact_constitutive_stress():
    """Patch test at element level: a linear displacement field gives its exact strain at any point."""
    hx, hy = 0.5, 0.25
    exx, eyy, gxy = 1e-3, -2e-4, 5e-4
    x = np.array([0, hx, hx, 0.0])
    y = np.array([0, 0, hy, hy])
    u = np.zeros(8)
    u[0::2] = exx * x + 0.5 * gxy * y
    u[1::2] = eyy * y + 0.5 * gxy * x
    for xi, eta in [(-0.3, 0.7), (0.0, 0.0), (0.9, -0.9)]:
        assert np.allclose(strain_matrix(xi, eta, hx, hy) @ u, [exx, eyy, gxy])
    D = constitutive_matrix(0.3, "stress")
    sigma = D @ [exx, eyy, gxy]
    assert sigma[0] == pytest.approx((exx + 0.3 * eyy) / (1 - 0.09))


def test_traction_and_body_force_totals():
    """Nodal forces integrate the loads exactly: total force = traction x edge area, body force x volume."""
    m = StructureModel("s", COMM, (6, 3), ((0, 3.0), (0, 1.0)), STEEL, {"left": "clamped"},
                       [LoadCase("p", "traction", (0.0, -2.0e3), "right"),
                        LoadCase("g", "body_force", (5.0, 0.0))], thickness=0.1)
    fp = m.mesh.disp.owned_array(m.forcing.vectors["p"], readonly=True)
    fg = m.mesh.disp.owned_array(m.forcing.vectors["g"], readonly=True)
    assert fp[..., 1].sum() == pytest.approx(-2.0e3 * 1.0 * 0.1)
    assert fp[..., 0].sum() == 0.0
    # the share of the clamped nodes (half an element column, 1/12 of the body) is a reaction, not a load
    assert fg[..., 0].sum() == pytest.approx(5.0 * 3.0 * 1.0 * 0.1 * (5.5 / 6.0))
    m.destroy()


def test_time_functions():
    assert TimeFunction("harmonic", frequency=2.0)(0.125) == pytest.approx(1.0)
    assert TimeFunction("table", times=(0, 1), factors=(0, 4))(0.25) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TimeFunction("table", times=(1, 0), factors=(0, 1))


def test_unconstrained_body_is_refused():
    with pytest.raises(ModelError, match="unconstrained"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {})
    with pytest.raises(ModelError, match="rigid-body"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"left": "pinned"})
    with pytest.raises(ModelError, match="rigid-body"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"bottom": "roller"})
    # two pins, or a roller and a pin, are enough
    StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"left": "pinned", "right": "pinned"}).destroy()
    StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"bottom": "roller", "left": "pinned"}).destroy()


def test_bad_inputs_are_refused_before_any_solve():
    with pytest.raises(ModelError, match=r"damage must lie in \[0, 1\)"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"left": "clamped"}, damage=1.0)
    with pytest.raises(ModelError, match="unknown boundary 'west'"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"west": "clamped"})
    with pytest.raises(ModelError, match="Poisson"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), Material(1e9, 0.5), {"left": "clamped"})
    with pytest.raises(ModelError, match="time step"):
        StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"left": "clamped"}, mode="dynamic")
    m = StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"left": "clamped"}, damage=0.1)
    with pytest.raises(ModelError, match="damage"):
        m.set_parameter("damage", np.full(15, -0.2))
    assert m.damage.getArray().min() == pytest.approx(0.1)  # unchanged after the refusal
    with pytest.raises(ModelError, match="unknown import"):
        m.set_import("pressure", m.damage)
    m.destroy()


def test_observation_points_outside_are_refused():
    from twin.kinds.structure.gauges import StrainGauges

    m = StructureModel("s", COMM, (4, 2), ((0, 2), (0, 1)), STEEL, {"left": "clamped"})
    with pytest.raises(ObservationError, match="outside"):
        StrainGauges(m.grid, [[2.5, 0.5]], 0.0, 1e-6)
    m.destroy()


CONFIG = {
    "type": "structure", "mode": "static", "plane": "stress",
    "grid": {"shape": [8, 2], "extent": [[0, 400], [0, 100]], "units": "cm"},
    "thickness": {"value": 10, "units": "cm"},
    "E0": {"value": 70, "units": "GPa"}, "nu": 0.33, "rho": {"value": 2700, "units": "kg/m^3"},
    "damage": {"value": 0.0, "regions": [{"shape": "circle", "centre": [2.0, 0.5], "radius": 0.4, "value": 0.5}]},
    "boundary": {"left": "clamped"},
    "loads": [{"name": "tip", "kind": "traction", "boundary": "right", "value": [0, -1], "units": "MPa"}],
}


def test_config_builds_model_with_units():
    cfg = StructureConfig.model_validate(CONFIG)
    m = StructureModel.from_config("wing", cfg, COMM)
    assert m.mesh.disp.shape == (9, 3)
    assert m.mesh.disp.extent[0] == (0.0, 4.0)
    assert m.ops.E0 == pytest.approx(70e9)
    d = m.mesh.scalar.allgather(m.damage)
    assert d.max() == pytest.approx(0.5) and d.min() == 0.0
    assert m.forcing.vectors["tip"].sum() == pytest.approx(-1e6 * 1.0 * 0.1)
    m.destroy()


@pytest.mark.parametrize("change, message", [
    ({"boundary": {}}, "no boundary is constrained"),
    ({"damage": {"value": 1.0}}, "less than 1"),
    ({"nu": 0.5}, "less than 0.5"),
    ({"loads": [{"name": "p", "kind": "traction", "value": [0, 1]}]}, "needs a 'boundary'"),
    ({"mode": "dynamic"}, "needs 'time"),
    ({"colour": "red"}, "Extra inputs"),
])
def test_config_errors(change, message):
    with pytest.raises(ValidationError, match=message):
        StructureConfig.model_validate({**CONFIG, **change})


def test_uniform_eigenstrain_of_a_free_to_expand_body_is_stress_free():
    """Rollers on two sides leave the body free to grow: u = eps* (x, y) exactly, with zero stress."""
    m = StructureModel("tissue", COMM, (6, 4), ((0, 3.0), (0, 2.0)), Material(3e3, 0.45),
                       {"left": "roller", "bottom": "roller"}, plane="strain")
    eps = m.mesh.scalar.create_global()
    eps.set(0.02)
    m.set_import("eigenstrain", eps)
    u = m.initial_state()
    m.advance(u, 0.0, 1.0)
    X, Y = m.grid.owned_mesh()
    assert m.grid.owned_array(u) == pytest.approx(np.stack([0.02 * X, 0.02 * Y], axis=-1), abs=1e-9)
    assert np.abs(m.element_stresses(u)).max() < 1e-8 * 3e3 * 0.02
    m.destroy()


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_failed_solve_raises_solver_error_with_reason(mode):
    from petsc4py import PETSc

    from twin.core.errors import SolverError
    from twin.core.petsc import set_options

    # one iteration to an unreachable tolerance (the dynamic field split is exact: it would converge in one)
    set_options("tiny_", {"ksp_max_it": 1, "ksp_rtol": 1e-30})
    try:
        m = StructureModel("tiny", COMM, (16, 4), ((0, 4), (0, 1)), STEEL, {"left": "clamped"},
                           [LoadCase("p", "traction", (0.0, -1e6), "right")], mode=mode, dt=1e-4)
        x = m.initial_state()
        with pytest.raises(SolverError, match="model 'tiny': solver failed at t=.*DIVERGED"):
            m.advance(x, 0.0, 1e-4)
        m.destroy()
    finally:
        PETSc.Options().delValue("tiny_ksp_max_it")
        PETSc.Options().delValue("tiny_ksp_rtol")


def test_dynamic_config_with_wind_history_runs_and_reports_qois():
    cfg = StructureConfig.model_validate({
        **CONFIG, "mode": "dynamic", "damping": {"alpha": {"value": 0.5, "units": "1/s"}},
        "loads": [{"name": "wind", "kind": "traction", "boundary": "top", "value": [0, -2], "units": "kPa",
                   "history": {"kind": "harmonic", "frequency": {"value": 20, "units": "Hz"}},
                   "scale": {"value": 1.0, "prior": {"dist": "normal", "mean": 1.0, "std": 0.2},
                             "estimable": True}}],
        "time": {"dt": {"value": 1, "units": "ms"}, "initial": "rest"}})
    m = StructureModel.from_config("mast", cfg, COMM)
    assert [p.name for p in m.estimable()] == ["load_wind"]
    assert m.state_names == ("u_x", "u_y", "v_x", "v_y")
    x = m.initial_state()
    m.advance(x, 0.0, 0.01)
    q = m.qoi(x, 0.01)
    assert q["max_displacement"].value > 0 and q["max_von_mises"].units == "Pa"
    assert q["first_natural_frequency"].value > 0
    exports = m.exports(x)
    assert set(exports) == {"displacement", "von_mises", "mean_stress"}
    for v in exports.values():
        v.destroy()
    m.destroy()


def test_exceedance_probability():
    from twin.kinds.structure.qoi import exceedance_probability

    assert exceedance_probability([1.0, 2.0, 3.0, 4.0], 2.5) == 0.5
    with pytest.raises(ValueError):
        exceedance_probability([], 1.0)
