"""Acceleration methods on a linear fixed point, non-convergence errors, configuration errors, the coupled model's
contract (names, parameters, QoIs)."""

import numpy as np
import pytest
from mpi4py import MPI
from pydantic import ValidationError

from twin.config.coupling import CouplingConfig
from twin.core.errors import CouplingError, ModelError
from twin.coupling.acceleration import IQNILS, Aitken, ConstantRelaxation
from twin.kinds.heat.examples import partitioned_heat

COMM = MPI.COMM_SELF


def _fixed_point(n=8, seed=3):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    # eigenvalues of H' in [-1.6, 0.4]: plain iteration diverges, relaxation w must suit all of them
    A = q @ np.diag(np.linspace(-1.6, 0.4, n)) @ q.T
    b = rng.normal(size=n)
    return (lambda x: A @ x + b), np.linalg.solve(np.eye(n) - A, b)


def _iterate(acc, H, x_star, n_max=200, tol=1e-10):
    x = np.zeros_like(x_star)
    acc.start_window()
    for k in range(1, n_max + 1):
        xt = H(x)
        if np.linalg.norm(xt - x) < tol * np.linalg.norm(xt):
            return k, x
        x = acc.step(x, xt)
    return n_max, x


def test_iqn_ils_solves_a_linear_fixed_point_in_n_plus_2_iterations():
    H, x_star = _fixed_point()
    its = {}
    for name, acc in [("constant", ConstantRelaxation(COMM, 0.5)), ("aitken", Aitken(COMM, 0.5)),
                      ("iqn", IQNILS(COMM, 0.5))]:
        its[name], x = _iterate(acc, H, x_star)
        if its[name] < 200:
            np.testing.assert_allclose(x, x_star, rtol=1e-8)
    # secant method on an 8-dimensional linear map: exact after 8 differences (+ first and checking iterations)
    assert its["iqn"] <= 8 + 2
    assert its["iqn"] < its["aitken"] < its["constant"]


def test_iqn_ils_reuse_carries_the_jacobian_into_the_next_window_and_filter_drops_duplicates():
    H, x_star = _fixed_point()
    acc = IQNILS(COMM, 0.5, reuse=1)
    first, _ = _iterate(acc, H, x_star)
    acc.end_window()
    second, _ = _iterate(acc, H, x_star)
    assert second < first
    # a repeated difference column is linearly dependent and gets filtered out
    acc = IQNILS(COMM, 0.5, filter=1e-8)
    x = np.zeros(8)
    for xt in (np.ones(8), 2 * np.ones(8), 3 * np.ones(8)):
        acc.step(x, xt)
    assert acc.filtered == 1 and len(acc.V) == 1


def test_nonconvergence_is_an_error_naming_window_fields_and_history():
    pair = partitioned_heat(COMM, tag="_nc", nx=12, ny=6, split=3, kappa=1.0, dt=0.1,
                            scheme={"max_iterations": 2, "acceleration": {"kind": "constant", "relaxation": 0.5}})
    x = pair.initial_state()
    with pytest.raises(CouplingError, match=r"window 0 \[0, 0.1\] did not converge in 2 iterations.*left_nc.T_in"
                                            r".*residual history \{'left_nc.T_in': \[.*, .*\]\}"):
        pair.advance(x, 0.0, 0.2)
    pair.destroy()
    pair = partitioned_heat(COMM, tag="_nc2", nx=12, ny=6, split=3, kappa=1.0, dt=0.1,
                            scheme={"max_iterations": 2, "allow_nonconvergence": True,
                                    "acceleration": {"kind": "constant", "relaxation": 0.5}})
    x = pair.initial_state()
    pair.advance(x, 0.0, 0.2)
    assert [d.converged for d in pair.diagnostics] == [False, False]
    assert [d.iterations for d in pair.diagnostics] == [2, 2]
    pair.destroy()


def _coupling(**changes):
    base = {"components": ["a", "b"], "window": {"value": 1.0, "units": "s"},
            "routes": [{"from": "a.x", "to": "b.y"}, {"from": "b.z", "to": "a.w"}],
            "scheme": {"kind": "implicit_serial", "convergence": [{"field": "a.w", "limit": 1e-6}]}}
    base.update(changes)
    return base


@pytest.mark.parametrize("changes, message", [
    ({"routes": [{"from": "c.x", "to": "b.y"}]}, "component 'c' is not in components"),
    ({"routes": [{"from": "a.x", "to": "a.y"}]}, "stays inside one component"),
    ({"routes": [{"from": "a.x", "to": "b.y"}, {"from": "a.q", "to": "b.y"}]}, "receives from two routes"),
    ({"scheme": {"kind": "implicit_serial"}}, "needs at least one convergence measure"),
    ({"scheme": {"kind": "implicit_parallel", "max_iterations": 1, "convergence": [{"field": "a.w", "limit": 1e-6}]}},
     "converges when two iterates agree, so it needs max_iterations of at least 2"),
    ({"scheme": {"kind": "implicit_serial", "convergence": [{"field": "b.q", "limit": 1.0}]}}, "not received"),
    ({"scheme": {"kind": "explicit_sequential"}}, "explicit_serial"),
    ({"substeps": {"c": 2}}, "unknown component 'c'"),
    ({"window": {"value": -1.0, "units": "s"}}, "window must be positive"),
    ({"routes": [{"from": "a.x", "to": "b.y", "mapping": "cubic"}]}, "consistent"),
    ({"scheme": {"kind": "explicit_serial", "convergence": [{"field": "a.w", "limit": 1e-6}]}},
     "an explicit scheme \\(explicit_serial\\) makes one pass per window and checks no convergence"),
    ({"routes": [{"from": "a.x", "to": "b.y", "mapping": "nearest", "outside": "zero"}]},
     "outside: zero applies to a consistent map between grids"),
])
def test_coupling_config_errors(changes, message):
    with pytest.raises(ValidationError, match=message):
        CouplingConfig.model_validate(_coupling(**changes))


def test_coupled_model_presents_the_model_contract():
    pair = partitioned_heat(COMM, tag="_contract", nx=8, ny=4, split=4, kappa=0.5, dt=0.1)
    assert set(pair.parameters) == {"left_contract.kappa", "left_contract.source", "right_contract.kappa",
                                    "right_contract.source"}
    x = pair.initial_state()
    assert x.getSize() == 8 * 4
    q = pair.qoi(x, 0.0)
    assert set(q) >= {"left_contract.mean_temperature", "right_contract.heat_content"}
    total = q["left_contract.heat_content"].value + q["right_contract.heat_content"].value
    assert total == pytest.approx(4 / np.pi ** 2, rel=0.05)      # integral of sin(pi x) sin(pi y), coarse grid
    pair.set_parameter("right_contract.kappa", 0.25)
    assert pair.models["right_contract"].get_parameter("kappa") == 0.25
    assert "left_contract.temperature_x_hi" in pair.exports(x)
    with pytest.raises(ModelError, match="<component>.<name>"):
        pair.set_parameter("kappa", 1.0)
    with pytest.raises(ModelError, match="was not advanced from t=0"):
        pair.adjoint(x, 0.0, 0.1, x.duplicate())
    assert pair.windows(0.0, 0.25) == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.25)]
    pair.destroy()


def test_an_unknown_route_key_lists_the_keys_a_file_writes(tmp_path):
    """The list of allowed keys named a route's source "from_" (its Python name), which a file cannot write."""
    from pathlib import Path

    from twin.config.loader import load_campaign
    from twin.core.errors import ConfigError

    text = (Path(__file__).resolve().parents[2] / "configs" / "tumour_mechanics.yaml").read_text()
    (tmp_path / "c.yaml").write_text(text.replace("mapping: consistent, scale: 0.05}",
                                                  "mapping: consistent, scale: 0.05, outsid: zero}"))
    with pytest.raises(ConfigError, match=r"coupling.routes\[0\].outsid: unknown key 'outsid'; did you mean "
                                          r"'outside'\? allowed keys: from, mapping, outside, scale, site, to"):
        load_campaign(tmp_path / "c.yaml")
