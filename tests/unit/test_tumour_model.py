"""Unit tests of the tumour model: configuration, clear errors, treatment (exact LQ jump, chemo), QoIs."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from pydantic import ValidationError

from twin.kinds.tumour.config import TumourConfig
from twin.core.errors import ModelError, SolverError
from twin.core.grid import Grid
from twin.core.petsc import set_options
from twin.models.registry import model_types
from twin.kinds.tumour import TreatmentPlan, TumourModel, box_tissue, survival_fraction
from twin.kinds.tumour.phantom import Tissue
from twin.kinds.tumour.qoi import time_to_progression
from twin.kinds.tumour.treatment import lq_exponent

COMM = MPI.COMM_SELF


def _cfg(**over):
    base = {"type": "tumour", "grid": {"shape": [24, 20], "extent": [[0, 120], [0, 100]], "units": "mm"},
            "seed": {"center": [50, 55], "radius": 6, "amplitude": 0.5}, "dt": 1.0,
            "parameters": {"theta": {"value": 1.0, "units": "1/mm^3"}, "k": {"value": 0.1, "units": "1/day"}}}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TumourConfig.model_validate(base)


def _values(**over):
    v = dict(D_white=0.5, D_grey=0.1, k=0.1, theta=1.0, alpha=0.05, alpha_beta=10.0, kappa=0.0, half_life=1.0)
    v.update(over)
    return v


def _box_model(name, plan=None, **over):
    grid = Grid(COMM, (12, 10), ((0, 12), (0, 10)), name=name)
    return TumourModel(name, COMM, grid, box_tissue(grid.shape[::-1]), _values(**over), plan=plan, dt=0.5,
                       initial=lambda x, y: 0.5 * np.exp(-((x - 6) ** 2 + (y - 5) ** 2) / 8.0))


def test_registered_and_from_config():
    assert model_types()["tumour"] is TumourModel
    model = TumourModel.from_config("tumour", _cfg(), COMM)
    x = model.initial_state()
    q = model.qoi(x, 0.0)
    assert q["burden"].value > 0 and q["volume"].value > 0
    assert np.all(x.getArray()[model._mask == 0] == 0)
    assert model.parameters["k"].units == "1/day" and not model.parameters["k"].is_field
    x.destroy()
    model.destroy()


def test_config_units_are_converted():
    cfg = _cfg(parameters={"D_white": {"value": 0.025, "units": "cm^2/day"},
                           "theta": {"value": 1.0, "units": "1/mm^3"}, "k": {"value": 0.7, "units": "1/week"}})
    model = TumourModel.from_config("units", cfg, COMM)
    assert model.get_parameter("D_white") == pytest.approx(2.5)
    assert model.get_parameter("k") == pytest.approx(0.1)
    model.destroy()


def test_field_prior_makes_k_a_field():
    cfg = _cfg(parameters={"k": {"prior": {"dist": "gaussian_field", "mean": np.log(0.1), "std": 0.2,
                                           "length_scale": 10.0}, "units": "1/day", "estimable": True},
                           "theta": {"value": 1.0, "units": "1/mm^3"}})
    model = TumourModel.from_config("kfield", cfg, COMM)
    p = model.parameters["k"]
    assert p.is_field and p.estimable and p.transform == "log"
    np.testing.assert_allclose(p.value.getArray(), 0.1)
    model.destroy()


@pytest.mark.parametrize("section,value,match", [
    ("parameters", {"k": {"value": -0.1, "units": "1/day"}}, "k: value must be >= 0"),
    ("parameters", {"theta": {"value": 0.0, "units": "1/mm^3"}}, "theta: value must be > 0"),
    ("parameters", {"D_white": {"value": float("nan"), "units": "mm^2/day"}}, "parameters.D_white.value\n  Input should be a finite number"),
    ("parameters", {"D_white": {"value": 1.0, "units": "1/day"}}, "cannot be converted"),
    ("treatment", {"radiotherapy": {"times": [3, 2], "doses": [2]}}, "strictly increasing"),
    ("treatment", {"radiotherapy": {"times": [1, 2], "doses": [-2]}}, "positive and finite"),
    ("treatment", {"chemotherapy": {"times": [1, 2, 3], "doses": [1, 2]}}, "one dose for all"),
    ("seed", {"center": [1, 2, 3], "radius": 2}, "seed.center has 3"),
    ("grid", {"shape": [8, 8], "extent": [[0, 1], [0, 1]], "units": "s"}, "not a length"),
])
def test_schema_refuses(section, value, match):
    with pytest.raises(ValidationError, match=match):
        _cfg(**{section: value})


def test_treatment_outside_run_refused_before_solve():
    cfg = _cfg(treatment={"radiotherapy": {"times": [10, 200], "doses": [2]}}, run={"start": 0, "end": 100})
    with pytest.raises(ModelError, match=r"model 'rt': radiotherapy fraction at t=200 day lies outside the run"):
        TumourModel.from_config("rt", cfg, COMM)


def test_empty_mask_refused():
    grid = Grid(COMM, (8, 8), ((0, 8), (0, 8)), name="empty")
    tissue = Tissue(np.zeros((8, 8), bool), np.zeros((8, 8)))
    with pytest.raises(ModelError, match="model 'empty': the tissue mask is empty"):
        TumourModel("empty", COMM, grid, tissue, _values())
    grid.destroy()


def test_grid_not_fitting_mask_refused():
    grid = Grid(COMM, (8, 8), ((0, 8), (0, 8)), name="fit")
    with pytest.raises(ModelError, match="the grid does not fit the tissue mask"):
        TumourModel("fit", COMM, grid, box_tissue((10, 8)), _values())
    grid.destroy()
    cfg = _cfg(phantom={"kind": "brain", "semi_axes": [80.0, 40.0]})
    with pytest.raises(ModelError, match="does not fit in the grid box"):
        TumourModel.from_config("fit2", cfg, COMM)


@pytest.mark.parametrize("name,value,match", [("k", -1.0, "parameter k must be >= 0"),
                                              ("alpha", float("inf"), "parameter alpha must be finite"),
                                              ("half_life", 0.0, "parameter half_life must be > 0")])
def test_bad_parameters_refused(name, value, match):
    grid = Grid(COMM, (8, 8), ((0, 8), (0, 8)), name="bad")
    with pytest.raises(ModelError, match=match):
        TumourModel("bad", COMM, grid, box_tissue((8, 8)), _values(**{name: value}))
    model = _box_model("bad2")
    with pytest.raises(ModelError, match=match):
        model.set_parameter(name, value)
    model.destroy()


def test_negative_k_field_refused():
    grid = Grid(COMM, (8, 8), ((0, 8), (0, 8)), name="kneg")
    k = np.full((8, 8), 0.1)
    k[3, 4] = -0.01
    with pytest.raises(ModelError, match="parameter k must be >= 0"):
        TumourModel("kneg", COMM, grid, box_tissue((8, 8)), _values(k=k))


def test_diverging_solve_names_model_time_and_reason():
    set_options("diverge_", {"snes_max_it": 1, "snes_rtol": 1e-14, "snes_atol": 1e-300, "snes_stol": 0,
                             "ksp_max_it": 50})
    model = _box_model("diverge", k=5.0)
    x = model.initial_state()
    with pytest.raises(SolverError, match=r"model 'diverge': solver failed at t=2\.5 day: TS DIVERGED_NONLINEAR_SOLVE, "
                                          r"SNES DIVERGED_\w+") as info:
        model.advance(x, 2.5, 5.0)
    assert info.value.time == pytest.approx(2.5)
    x.destroy()
    model.destroy()


def test_radiotherapy_fraction_is_exact_lq():
    """Applying a fraction multiplies the density by exactly exp(-alpha d - beta d^2)."""
    model = _box_model("lq", alpha=0.3, alpha_beta=3.0)
    x = model.initial_state()
    before = x.getArray().copy()
    model.apply_radiotherapy(x, 2.0)
    expected = np.exp(-0.3 * 2.0 - 0.1 * 4.0)
    assert survival_fraction(2.0, 0.3, 3.0) == pytest.approx(expected, rel=1e-15)
    np.testing.assert_allclose(x.getArray(), before * expected, rtol=1e-15, atol=0)
    x.destroy()
    model.destroy()


def test_fraction_in_advance_scales_linear_dynamics():
    """Without reaction the dynamics are linear: advancing across a fraction equals S times advancing without it."""
    set_options("lin_", {"snes_rtol": 1e-13, "ksp_rtol": 1e-14})
    set_options("lin2_", {"snes_rtol": 1e-13, "ksp_rtol": 1e-14})
    treated = _box_model("lin", plan=TreatmentPlan.from_lists([1.0], [2.0]), k=0.0, alpha=0.2)
    free = _box_model("lin2", k=0.0, alpha=0.2)
    a, b = treated.initial_state(), free.initial_state()
    treated.advance(a, 0.0, 1.0)
    free.advance(b, 0.0, 1.0)
    np.testing.assert_array_equal(a.getArray(), b.getArray())  # the fraction at t=1 is not applied in [0, 1)
    treated.advance(a, 1.0, 3.0)
    free.advance(b, 1.0, 3.0)
    S = survival_fraction(2.0, 0.2, 10.0)
    np.testing.assert_allclose(a.getArray(), S * b.getArray(), rtol=1e-9, atol=1e-14)
    for obj in (a, b, treated, free):
        obj.destroy()


def test_chemo_concentration_and_kill():
    plan = TreatmentPlan.from_lists(chemo_times=[1.0, 3.0], chemo_doses=[2.0, 1.0])
    assert plan.concentration(0.5, 2.0) == 0.0
    assert plan.concentration(3.0, 2.0) == pytest.approx(2.0 * 0.5 + 1.0)
    assert plan.concentration(3.0, 2.0, given_by=2.9) == pytest.approx(1.0)
    assert plan.breakpoints(0.0, 5.0) == [0.0, 1.0, 3.0, 5.0]
    # with D uniform and a uniform state, N' = -kappa C(t) N: N(t) = N0 exp(-kappa int C)
    grid = Grid(COMM, (4, 4), ((0, 4), (0, 4)), name="chemo")
    set_options("chemo_", {"ts_type": "cn", "snes_rtol": 1e-13})
    model = TumourModel("chemo", COMM, grid, box_tissue((4, 4)), _values(k=0.0, kappa=0.5, half_life=2.0),
                        plan=plan, dt=0.01, initial=np.full((4, 4), 0.5))
    x = model.initial_state()
    model.advance(x, 0.0, 5.0)
    lam = np.log(2.0) / 2.0
    integral = 2.0 * (1 - np.exp(-lam * 4.0)) / lam + 1.0 * (1 - np.exp(-lam * 2.0)) / lam
    np.testing.assert_allclose(x.getArray(), 0.5 * np.exp(-0.5 * integral), rtol=1e-4)  # CN error ~ dt^2
    x.destroy()
    model.destroy()


def test_lq_exponent_dose_field():
    d = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(lq_exponent(d, 10.0), d + d * d / 10.0)


def test_time_to_progression_logistic():
    """Uniform logistic growth N' = k N (1 - N): doubling time from the exact solution."""
    grid = Grid(COMM, (4, 4), ((0, 4), (0, 4)), name="ttp")
    set_options("ttp_", {"snes_rtol": 1e-12})
    model = TumourModel("ttp", COMM, grid, box_tissue((4, 4)), _values(k=0.2), dt=0.05, initial=np.full((4, 4), 0.1),
                        progression_factor=2.0)
    x = model.initial_state()
    ttp = time_to_progression(model, x, 0.0, 30.0, check_every=0.5)
    exact = np.log(0.2 * 0.9 / (0.1 * 0.8)) / 0.2  # N(t) = 0.2 solves N/(1-N) = (N0/(1-N0)) e^{kt}
    assert ttp == pytest.approx(exact, rel=2e-3)
    assert time_to_progression(model, x, 0.0, 2.0) == float("inf")
    x.destroy()
    model.destroy()


def test_adjoint_refuses_unknown_parameter():
    model = _box_model("adjbad")
    x = model.initial_state()
    with pytest.raises(ModelError, match=r"no gradient for parameter\(s\) \['half_life'\]"):
        model.adjoint(x, 0.0, 1.0, x.copy(), ["half_life"])
    x.destroy()
    model.destroy()


def test_implicit_jacobian_is_shift_minus_the_rhs_jacobian_and_that_is_dF_dN():
    """The model's own ``shift I - dF/dN`` (the implicit TS types) equals the shift minus its RHS Jacobian, and the
    RHS Jacobian is the derivative of the right-hand side (central differences)."""
    from petsc4py import PETSc

    model = _box_model("tum_ijac", k=0.3)
    try:
        u = model.initial_state()
        rng = np.random.default_rng(3)
        u.getArray()[:] += 0.1 * rng.random(u.getLocalSize())
        J, Ji = model.op.A.duplicate(copy=True), model.op.A.duplicate(copy=True)
        model._jacobian(None, 0.0, u, J, None)
        shift = 7.5
        model._ijacobian(None, 0.0, u, None, shift, Ji, None)
        expected = J.duplicate(copy=True)
        expected.scale(-1.0)
        expected.shift(shift)
        expected.axpy(-1.0, Ji)
        assert expected.norm(PETSc.NormType.INFINITY) <= 1e-12 * J.norm(PETSc.NormType.INFINITY)
        v, fp, fm, Jv = u.duplicate(), u.duplicate(), u.duplicate(), u.duplicate()
        v.getArray()[:] = rng.standard_normal(v.getLocalSize())
        eps = 1e-6
        up, um = u.copy(), u.copy()
        up.axpy(eps, v)
        um.axpy(-eps, v)
        model._rhs(None, 0.0, up, fp)
        model._rhs(None, 0.0, um, fm)
        J.mult(v, Jv)
        fd = (fp.getArray() - fm.getArray()) / (2 * eps)
        assert np.max(np.abs(fd - Jv.getArray())) <= 1e-6 * np.max(np.abs(Jv.getArray()))
        for vec in (u, v, fp, fm, Jv, up, um):
            vec.destroy()
        for mat in (J, Ji, expected):
            mat.destroy()
    finally:
        model.destroy()
