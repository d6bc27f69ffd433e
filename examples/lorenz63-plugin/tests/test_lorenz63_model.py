"""The Lorenz-63 plugin model: its equations, its adjoint, its YAML section, and twin's conformance kit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from twin_lorenz63.model import PARAMETERS, Lorenz63, tendency

HERE = Path(__file__).resolve().parents[1]


@pytest.fixture
def model():
    m = Lorenz63("l63", MPI.COMM_SELF, dt=0.01, initial_state=(1.0, 2.0, 20.0))
    yield m
    m.destroy()


def _rk4(x, steps, h=0.01, p=(10.0, 28.0, 8.0 / 3.0)):
    for _ in range(steps):
        k1 = tendency(x, *p)
        k2 = tendency(x + h / 2 * k1, *p)
        k3 = tendency(x + h / 2 * k2, *p)
        k4 = tendency(x + h * k3, *p)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_advance_is_classical_rk4_of_the_lorenz_equations(model):
    x = model.initial_state()
    model.advance(x, 0.0, 0.5)
    got = model.grid.allgather(x).ravel()
    x.destroy()
    assert np.max(np.abs(got - _rk4(np.array([1.0, 2.0, 20.0]), 50))) < 1e-12


def test_window_must_be_whole_steps(model):
    from twin.core.errors import ModelError

    x = model.initial_state()
    with pytest.raises(ModelError, match="not a whole number of RK4 steps"):
        model.advance(x, 0.0, 0.005)
    x.destroy()


def test_adjoint_passes_the_taylor_test_for_state_and_parameters(model):
    """J = |x(T)|^2 / 2; the remainder of J(m + h dm) - J(m) - h dJ.dm falls as h^2 (state and all parameters)."""
    x0, p0 = np.array([1.0, 2.0, 20.0]), np.array([10.0, 28.0, 8.0 / 3.0])

    def J(x, p):
        for name, v in zip(PARAMETERS, p):
            model.set_parameter(name, v)
        vec = model.grid.set_global(x, model.create_state())
        model.advance(vec, 0.0, 0.3)
        a = model.grid.allgather(vec).ravel()
        vec.destroy()
        return 0.5 * a @ a, a

    j0, xT = J(x0, p0)
    lam = model.grid.set_global(xT, model.create_state())
    start = model.grid.set_global(x0, model.create_state())
    grads = model.adjoint(start, 0.0, 0.3, lam, PARAMETERS)
    gx, gp = model.grid.allgather(lam).ravel(), np.array([grads[p] for p in PARAMETERS])
    lam.destroy()
    start.destroy()
    gen = np.random.default_rng(0)
    dx, dp = gen.standard_normal(3), gen.standard_normal(3)
    r = np.array([abs(J(x0 + h * dx, p0 + h * dp)[0] - j0 - h * (gx @ dx + gp @ dp)) for h in (1e-3, 5e-4, 2.5e-4)])
    rates = np.log2(r[:-1] / r[1:])
    assert np.all(np.abs(rates - 2.0) < 0.1), rates


def test_the_section_refuses_units_on_a_dimensionless_parameter(tmp_path):
    from twin.config.loader import load_campaign
    from twin.core.errors import ConfigError

    text = (HERE / "campaign.yaml").read_text().replace("rho: {value: 28.0,", "rho: {value: 28.0, units: m,")
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_campaign(f)
    assert "models.l63.rho" in str(err.value) and "dimensionless" in str(err.value)


def test_the_conformance_kit_passes():
    """twin's model-contract checks on the model of campaign.yaml (``twin check-model lorenz63 --config
    campaign.yaml``), the 1-vs-2-ranks check included."""
    from twin.conformance import check_model, subject_from_file

    report = check_model(subject_from_file("lorenz63", HERE / "campaign.yaml"), ranks=2)
    report.assert_ok()
    assert "rates 2.0" in report.result("adjoint Taylor test").measured
