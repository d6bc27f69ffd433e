"""The compiled shallow-water kernels against the reference NumPy kernel: the forward tendencies the model runs
(:mod:`twin.kinds.shallow_water.compiled`) equal :func:`~twin.kinds.shallow_water.kernel.tendency` to round-off, its
ghost layer equals the DMDA's, and the compiled reverse sweep (:func:`~twin.kinds.shallow_water.reverse.tendency_vjp`)
is the transpose of the forward-mode (Dual) derivative of the reference kernel."""

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.shallow_water import Bump, ShallowWater
from twin.kinds.shallow_water.compiled import Halo
from twin.kinds.shallow_water.jacobian import PARAMETER_NAMES
from twin.kinds.shallow_water.kernel import Dual, tangent, tendency
from twin.kinds.shallow_water.reverse import FlatGeometry, tendency_vjp

L = 2.0e6
FULL = dict(tracer=Bump((L / 2, L / 3), L / 6, 1.0), topography=Bump((L / 3, L / 3), L / 8, 100.0),
            parameters={"drag": 1e-5, "beta": 1e-11, "forcing_amplitude": 1e-5})
CASES = {
    "plain": ((48, 36), {}),
    "tracer, topography, beta, drag, forcing": ((17, 9), FULL),
    "smallest grid": ((3, 3), FULL),
    "one long row": ((64, 3), {}),
    "odd sizes with tracer": ((13, 30), {"tracer": FULL["tracer"]}),
}


def make(name, shape, **options):
    return ShallowWater(name, MPI.COMM_SELF, shape, ((0, L), (0, 0.75 * L)), dt=60.0, mean_depth=1000.0,
                        initial=("balanced_turbulence", {"speed": 20.0, "seed": 4}), check_cfl=False, **options)


def perturbed_state(m, seed):
    """The initial state with random perturbations, so that no term of the tendencies is small by symmetry."""
    x = m.initial_state()
    rng = np.random.default_rng(seed)
    a = m.grid.owned_array(x)
    a[..., 0] *= 1.0 + 0.05 * rng.standard_normal(a.shape[:2])
    a[..., 1:3] += 5.0 * rng.standard_normal(a.shape[:2] + (2,))
    if m.grid.dof > 3:
        a[..., 3] *= 1.0 + 0.1 * rng.standard_normal(a.shape[:2])
    return x


@pytest.mark.parametrize("case", CASES)
def test_compiled_tendency_equals_the_reference_kernel(case):
    shape, options = CASES[case]
    m = make(f"sw_kernel_{shape[0]}x{shape[1]}", shape, **options)
    x = perturbed_state(m, 1)
    F = x.duplicate()
    m._rhs(None, 0.0, x, F)
    got = m.grid.owned_array(F, readonly=True)
    ref = tendency(m.ghosted_fields(x), m.geometry, m.parameter_values())
    for c, r in enumerate(ref):
        assert np.abs(got[..., c] - r).max() <= 1e-13 * np.abs(r).max(), f"component {c}"
    F.destroy()
    x.destroy()
    m.destroy()


def test_compiled_tendency_adds_the_sources_as_the_reference_does():
    m = make("sw_kernel_sources", (11, 8), **FULL)
    x = perturbed_state(m, 2)
    rng = np.random.default_rng(7)
    sources = [1e-3 * rng.standard_normal((8, 11)) for _ in range(m.grid.dof)]
    m.set_sources(lambda t: [s * (1.0 + t) for s in sources])
    F = x.duplicate()
    m._rhs(None, 0.5, x, F)
    got = m.grid.owned_array(F, readonly=True)
    ref = tendency(m.ghosted_fields(x), m.geometry, m.parameter_values(), [s * 1.5 for s in sources])
    for c, r in enumerate(ref):
        assert np.abs(got[..., c] - r).max() <= 1e-13 * np.abs(r).max(), f"component {c}"
    F.destroy()
    x.destroy()
    m.destroy()


def test_halo_strips_equal_the_dmda_ghost_layer():
    m = make("sw_kernel_halo", (9, 6), tracer=FULL["tracer"])
    x = perturbed_state(m, 3)
    halo = Halo(m.grid)
    halo.update(x)
    m.grid.global_to_local(x, m._xloc)
    g = m.grid.ghosted_array(m._xloc)
    assert np.array_equal(halo.south, g[0])
    assert np.array_equal(halo.north, g[-1])
    assert np.array_equal(halo.west, g[1:-1, 0])
    assert np.array_equal(halo.east, g[1:-1, -1])
    halo.destroy()
    x.destroy()
    m.destroy()


@pytest.mark.parametrize("case", ["plain", "tracer, topography, beta, drag, forcing"])
def test_reverse_sweep_is_the_transpose_of_the_forward_mode_derivative(case):
    """<J dx, lambda> = <dx, J^T lambda> on the ghosted block (every ghosted value an independent input), with J dx
    from Dual numbers through the reference kernel, and likewise for the parameters."""
    shape, options = CASES[case]
    m = make(f"sw_kernel_vjp_{shape[0]}", shape, **options)
    x = perturbed_state(m, 4)
    fields = [f.copy() for f in m.ghosted_fields(x)]
    params = m.parameter_values()
    owned = fields[0][1:-1, 1:-1].shape
    rng = np.random.default_rng(5)
    dx = [rng.standard_normal(f.shape) * np.abs(f).max() for f in fields]
    lam = [np.zeros_like(f) for f in fields]
    for lc in lam:
        lc[1:-1, 1:-1] = rng.standard_normal(owned)
    adj, grads = tendency_vjp(fields, FlatGeometry.of(m.geometry, fields[0].shape), params, lam)
    out = tendency([Dual(f, d[None]) for f, d in zip(fields, dx)], m.geometry, params)
    forward = sum(np.vdot(tangent(o, 1, owned)[0], lc[1:-1, 1:-1]) for o, lc in zip(out, lam))
    reverse = sum(np.vdot(d, a) for d, a in zip(dx, adj))
    assert reverse == pytest.approx(forward, rel=1e-12)
    k = len(PARAMETER_NAMES)
    seeded = {name: Dual(params[name], np.eye(k)[i][:, None, None]) for i, name in enumerate(PARAMETER_NAMES)}
    out = tendency(fields, m.geometry, seeded)
    for i, name in enumerate(PARAMETER_NAMES):
        dp = sum(np.vdot(tangent(o, k, owned)[i], lc[1:-1, 1:-1]) for o, lc in zip(out, lam))
        assert grads[name] == pytest.approx(dp, rel=1e-11), name
    x.destroy()
    m.destroy()
