"""The recording contract (``Model.record`` / ``Model.adjoint_recorded``) behind 4D-Var gradients.

For each model with an adjoint, the 4D-Var gradient from the recorded forward pass must equal, to round-off, the
gradient of the recompute path (the base-class default: a copy of the state per window and ``Model.adjoint``, which
runs the forward again). The windows have observation intervals of different lengths, and two controls are visited
twice in alternation, so pooled TS objects are reused with other step counts and stale trajectories. Counts, not
times: PETSc's ``TSStep`` event counts forward steps (one forward per recorded gradient, two on the recompute path)
and each model's TS pool counts the TS objects it ever created (one per observation interval, or per treatment segment
for the tumour, whatever the number of gradients).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from petsc4py import PETSc

from twin.assimilation.covariance import DiagonalCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.var_control import ParameterControl
from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.core.petsc import set_options
from twin.models.base import Model
from twin.observations.base import LinearObservationOperator, interpolation_matrix

COMM = MPI.COMM_SELF


def _linear():
    from twin.kinds.linear.model import LinearAdvectionDiffusion

    m = LinearAdvectionDiffusion("rec_lin", COMM, n=48, dt=0.01, velocity=0.5, diffusivity=0.01)
    H = LinearObservationOperator(m.grid, interpolation_matrix(m.grid, np.linspace(0.05, 0.95, 9)[:, None]), 0.05)
    return m, H, (0.0, 0.03, 0.08, 0.1), [ParameterControl("velocity", std=0.1),
                                         ParameterControl("diffusivity", std=0.5)], 0.05


def _lorenz96():
    from twin.kinds.lorenz96.model import Lorenz96

    m = Lorenz96("rec_l96", COMM, n=12, dt=0.05, initial_condition="random", perturbation=1.0)
    H = LinearObservationOperator(m.grid, sp.identity(12, format="csr"), 1.0)
    return m, H, (0.0, 0.1, 0.25, 0.3), [ParameterControl("F", std=0.5)], 0.5


def _shallow_water():
    from twin.kinds.shallow_water import ShallowWater

    L = 2.0e6
    m = ShallowWater("rec_sw", COMM, (8, 6), ((0, L), (0, 0.75 * L)), dt=240.0, mean_depth=1000.0,
                     parameters={"drag": 1e-5, "forcing_amplitude": 1e-5, "beta": 1e-11},
                     initial=("balanced_turbulence", {"speed": 20.0, "seed": 2}))
    pts = np.column_stack([np.linspace(0.1, 0.9, 7) * L, np.linspace(0.2, 0.8, 7) * 0.75 * L])
    H = LinearObservationOperator(m.grid, interpolation_matrix(m.grid, pts, component=0), 0.5)
    return m, H, (0.0, 480.0, 1200.0, 1440.0), [ParameterControl("drag", std=0.5),
                                                ParameterControl("gravity", std=0.1)], 0.5


def _tumour():
    from twin.kinds.tumour import TreatmentPlan, TumourModel, brain_phantom

    grid = Grid(COMM, (10, 9), ((0.0, 40.0), (0.0, 36.0)), name="rec_tumour")
    tissue = brain_phantom(grid.mesh(), grid.extent, smoothing=3.0)
    values = dict(D_white=1.5, D_grey=0.4, k=0.3, theta=1.0, alpha=0.15, alpha_beta=10.0, kappa=0.3, half_life=1.5)
    plan = TreatmentPlan.from_lists([1.0, 2.5], [2.0, 3.0], [0.5], [1.0])
    set_options("rec_tumour_", {"snes_rtol": 1e-13, "snes_atol": 1e-14, "ksp_rtol": 1e-14})
    m = TumourModel("rec_tumour", COMM, grid, tissue, values, dt=0.5, plan=plan,
                    initial=lambda x, y: 0.6 * np.exp(-((x - 17.0) ** 2 + (y - 20.0) ** 2) / (2 * 6.0 ** 2)))
    H = LinearObservationOperator(m.grid, sp.identity(m.grid.size, format="csr"), 0.05)
    return m, H, (0.0, 1.5, 3.0, 4.0), [ParameterControl("D_white", std=0.3), ParameterControl("k", std=0.3),
                                        ParameterControl("alpha", std=0.3)], 0.1


MODELS = {"linear": _linear, "lorenz96": _lorenz96, "shallow_water": _shallow_water, "tumour": _tumour}


def _steps() -> int:
    return PETSc.Log.Event("TSStep").getPerfInfo()["count"]


def _functional(make):
    model, H, times, controls, std = make()
    x = model.initial_state()
    y = x.copy()
    obs = []
    for ta, tb in zip(times[:-1], times[1:]):
        model.advance(y, ta, tb)
        obs.append(Observation(tb, H, H.apply(y) * 1.01))
    sd = x.duplicate()
    sd.set(std)
    fn = FourDVar(model, (times[0], times[-1]), obs, x, DiagonalCovariance(sd), controls, name=f"rec_{model.name}")
    y.destroy()
    return model, fn, len(times) - 1


@pytest.mark.parametrize("name", list(MODELS))
def test_recorded_gradient_equals_recompute_path_with_one_forward_pass(name):
    PETSc.Log.begin()
    model, fn, intervals = _functional(MODELS[name])
    rng = np.random.default_rng(1)
    controls = []
    for _ in range(2):
        c = fn.create_control()
        c.getArray()[...] = 0.3 * rng.standard_normal(c.getLocalSize())
        controls.append(c)

    pool = lambda: getattr(model, "_adjoint_ts", None)  # noqa: E731
    created = []

    def gradients():
        out, steps = [], []
        for c in controls + controls:  # a, b, a, b: the second visits reuse pooled TS objects
            fn._drop_cache()
            g = fn.create_control()
            s0 = _steps()
            fn.gradient(c, g)
            steps.append(_steps() - s0)
            out.append(g.getArray().copy())
            created.append(pool().created)
            g.destroy()
        return out, steps

    recorded, rec_steps = gradients()
    # the recompute path: the base-class recording (a state copy) and the model's adjoint, which re-runs the forward
    model.record = types.MethodType(Model.record, model)
    model.adjoint_recorded = types.MethodType(Model.adjoint_recorded, model)
    recompute, old_steps = gradients()
    fn._drop_cache()
    forward_steps = old_steps[0] // 2
    print(f"{name}: forward steps per gradient recorded {rec_steps}, recompute {old_steps}; TS objects created by "
          f"the pool {created}; max relative difference "
          f"{max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(recorded, recompute)):.1e}")
    for a, b in zip(recorded, recompute):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * np.abs(b).max())
    assert np.abs(recorded[0] - recorded[1]).max() > 1e-6 * np.abs(recorded[0]).max()  # the controls differ
    np.testing.assert_array_equal(recorded[0], recorded[2])  # a reused TS gives the same numbers
    assert old_steps == [2 * forward_steps] * 4
    assert rec_steps == [forward_steps] * 4
    # one TS per observation interval (per treatment segment for the tumour), created by the first gradient only
    assert created == [created[0]] * len(created)
    assert created[0] == intervals or name == "tumour"
    fn.destroy()
    model.destroy()


def test_pooled_ts_is_reused_only_for_windows_it_can_hold():
    """A TS first run over 2 steps must not hold a 6-step trajectory later (PETSc sized it at its first solve)."""
    model, fn, _ = _functional(_lorenz96)
    x = model.initial_state()
    lam = x.duplicate()
    results = []
    for t1 in (0.1, 0.3, 0.1, 0.3):
        y = x.copy()
        lam.set(1.0)
        results.append((model.adjoint_recorded(model.record(y, 0.0, t1), lam, ["F"])["F"], lam.norm()))
        y.destroy()
    assert results[0] == results[2] and results[1] == results[3]
    assert model._adjoint_ts.created == 2
    for v in (x, lam):
        v.destroy()
    fn.destroy()
    model.destroy()


def test_a_used_tape_is_refused_and_value_only_passes_do_not_record():
    model, fn, _ = _functional(_lorenz96)
    x = model.initial_state()
    tape = model.record(x, 0.0, 0.1)
    lam = x.duplicate()
    lam.set(1.0)
    model.adjoint_recorded(tape, lam, ["F"])
    assert not tape.alive
    with pytest.raises(ModelError, match="already used"):
        model.adjoint_recorded(tape, lam, ["F"])
    with pytest.raises(ModelError, match="unknown parameters"):
        model.adjoint(x, 0.0, 0.1, lam, ["G"])
    c = fn.create_control()
    fn.value(c)
    assert fn._cache[1]["tapes"] is None
    g = fn.create_control()
    fn.gradient(c, g)  # runs the forward again, recording, and consumes the tapes
    assert fn.n_forward == 2 and fn._cache[1]["tapes"] is None
    fn.value(c)  # cached
    assert fn.n_forward == 2
    for v in (x, lam, c, g):
        v.destroy()
    fn.destroy()
    model.destroy()


def test_shallow_water_reverse_mode_equals_assembled_jacobians_transposed():
    """The shell Jacobians of the adjoint TS (reverse-mode sweep) against the assembled exact Jacobians, with a
    tracer, topography, beta, drag and forcing switched on: equal to round-off."""
    from twin.kinds.shallow_water import Bump, ShallowWater
    from twin.kinds.shallow_water.reverse import ShellJacobians

    L = 2.0e6
    m = ShallowWater("rec_sw_vjp", COMM, (7, 5), ((0, L), (0, 0.75 * L)), dt=240.0, mean_depth=1000.0,
                     parameters={"drag": 1e-5, "forcing_amplitude": 1e-5, "beta": 1e-11},
                     initial=("balanced_turbulence", {"speed": 20.0, "seed": 2}),
                     tracer=Bump((L / 2, L / 3), L / 6, 1.0), topography=Bump((L / 3, L / 3), L / 8, 100.0))
    x = m.initial_state()
    rng = np.random.default_rng(5)
    x.getArray()[...] *= 1.0 + 0.01 * rng.standard_normal(x.getLocalSize())
    J, Jp = m._jacobians()
    m._rhs_jacobian(None, 0.0, x, J, J)
    m._rhs_jacobian_p(None, 0.0, x, Jp)
    shell = ShellJacobians(m)
    shell.rhs_jacobian(None, 0.0, x, shell.J, shell.J)
    shell.rhs_jacobian_p(None, 0.0, x, shell.Jp)
    y = x.duplicate()
    y.setArray(rng.standard_normal(y.getLocalSize()))
    a, b = x.duplicate(), x.duplicate()
    J.multTranspose(y, a)
    shell.J.multTranspose(y, b)
    pa, pb = Jp.createVecRight(), shell.Jp.createVecRight()
    Jp.multTranspose(y, pa)
    shell.Jp.multTranspose(y, pb)
    err = np.abs(a.getArray() - b.getArray()).max() / np.abs(a.getArray()).max()
    perr = np.abs(pa.getArray() - pb.getArray()) / np.abs(pa.getArray())
    print(f"reverse mode vs assembled: state {err:.1e}, parameters {perr.max():.1e}")
    assert err < 1e-12
    assert perr.max() < 1e-11
    for v in (x, y, a, b, pa, pb):
        v.destroy()
    shell.destroy()
    m.destroy()


def test_tumour_adjoint_across_treatment_segments_matches_finite_differences():
    """The tumour window [0, 4] has radiotherapy at 1.0 and 2.5 and a drug dose at 0.5: four segments, each on its
    own pooled TS with a memory trajectory. PETSc's memory trajectory starts each segment's adjoint from the TS's
    current solution; when the segments shared the caller's state vector, every segment but the last started from a
    later state and the gradients were off by ~3e-2 (Crank-Nicolson evaluates its Jacobian there). Central differences
    of J = lam . x(4) in D_white, alpha and a state direction agree to 1e-6 now, and the caller's state is left at
    x(4) by the adjoint."""
    m, *_ = _tumour()
    x0 = m.initial_state()
    rng = np.random.default_rng(11)
    lam = x0.duplicate()
    lam.setArray(rng.standard_normal(lam.getLocalSize()))

    def J(x_start, **params) -> float:
        for name, value in params.items():
            m.set_parameter(name, value)
        x = x_start.copy()
        m.advance(x, 0.0, 4.0)
        out = lam.dot(x)
        x.destroy()
        for name in params:
            m.set_parameter(name, {"D_white": 1.5, "alpha": 0.15}[name])
        return out

    x = x0.copy()
    tape = m.record(x, 0.0, 4.0, ["D_white", "alpha"])
    assert len(tape.data["segments"]) == 4
    end = x.copy()
    lt = lam.copy()
    grads = m.adjoint_recorded(tape, lt, ["D_white", "alpha"])
    assert np.array_equal(x.getArray(), end.getArray())
    for name, value, h in (("D_white", 1.5, 1e-4), ("alpha", 0.15, 1e-5)):
        fd = (J(x0, **{name: value + h}) - J(x0, **{name: value - h})) / (2 * h)
        assert abs(grads[name] - fd) <= 1e-6 * abs(fd), (name, grads[name], fd)
    dx = x0.duplicate()
    dx.setArray(1e-3 * rng.standard_normal(dx.getLocalSize()))
    xp, xm = x0.copy(), x0.copy()
    xp.axpy(1.0, dx)
    xm.axpy(-1.0, dx)
    fd = (J(xp) - J(xm)) / 2
    assert abs(lt.dot(dx) - fd) <= 1e-6 * abs(fd), (lt.dot(dx), fd)
    for v in (x0, lam, x, end, lt, dx, xp, xm):
        v.destroy()
    m.destroy()


def test_adjoints_leave_no_trajectory_files_in_the_working_directory(tmp_path, monkeypatch):
    """PETSc's "basic" trajectory (the default) keeps its checkpoints in TS-data-* folders of the working directory
    while the model lives; destroying the model removes them (every model here keeps them in memory)."""
    from twin.kinds.lorenz96.model import Lorenz96

    monkeypatch.chdir(tmp_path)
    m = Lorenz96("l96_nofiles", MPI.COMM_SELF, n=40)
    x = m.initial_state()
    lam = x.copy()
    lam.set(1.0)
    m.adjoint(x, 0.0, 0.2, lam, ["F"])
    m.destroy()
    assert list(tmp_path.iterdir()) == []
    for v in (x, lam):
        v.destroy()


def test_a_failed_adjoint_step_raises_and_does_not_poison_the_pool():
    """The oncology demo crash (patient 2's 4D-Var): at a line-search trial point the transposed Crank-Nicolson
    solve stagnated (GMRES DIVERGED_ITS), ``adjointSolve`` returned silently with a partial gradient, and the TS went
    back to its pool with its trajectory not traversed; the next forward solve on it failed in PETSc ("Illegal
    modification of a non-top stack element") and TAO stopped on a non-finite J. Here the adjoint's linear solve is
    made to fail (one GMRES iteration) after a good forward run: it must raise SolverError, and the next gradient,
    on the same model and pool, must equal the gradient of a fresh model."""
    from twin.core.errors import SolverError

    def gradient(model, starve: bool = False):
        x = model.initial_state()
        lam = x.duplicate()
        try:
            tape = model.record(x, 0.0, 4.0, ["k", "D_white"])
            if starve:
                for _ta, _tb, _start, ts, _steps, _x in tape.data["segments"]:
                    ts.getSNES().getKSP().setTolerances(rtol=1e-30, atol=1e-300, max_it=1)
            lam.set(1.0)
            g = model.adjoint_recorded(tape, lam, ["k", "D_white"])
            return np.array([g["k"], g["D_white"]]), lam.getArray().copy()
        finally:
            x.destroy()
            lam.destroy()

    reference_model = _tumour()[0]
    reference = gradient(reference_model)
    reference_model.destroy()

    model = _tumour()[0]
    with pytest.raises(SolverError, match="adjoint solve failed: linear solve DIVERGED_MAX_IT after 1 iterations"):
        gradient(model, starve=True)
    created = model._adjoint_ts.created
    again = gradient(model)
    # the starved TS objects were destroyed, not pooled: the pool had to build new ones
    assert model._adjoint_ts.created > created
    np.testing.assert_allclose(again[0], reference[0], rtol=1e-12)
    np.testing.assert_allclose(again[1], reference[1], rtol=1e-12, atol=1e-14)
    model.destroy()
