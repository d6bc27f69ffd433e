"""The low-rank Hessian of the Laplace posterior at the MAP point (``twin.assimilation.laplace.low_rank_hessian``).

In whitened controls the cost's Hessian is ``I + H_m``. A nonlinear model's misfit Hessian ``H_m`` may have negative
eigenvalues at a minimum as long as they stay above -1 (the prior holds the cost up); the oncology flagship's 4D-Var
has one near -0.02, and the warning "the MAP point may not be a minimum" it raised on every run was wrong. Only an
eigenvalue at or below -1 means the point is not a minimum. Either way the direction keeps the prior's variance.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from petsc4py import PETSc

from twin.assimilation.laplace import low_rank_hessian


def _functional(misfit_eigenvalues):
    """A control space of ``n`` entries whose cost has the Hessian ``I + Q diag(misfit_eigenvalues) Q^T``."""
    lam = np.asarray(misfit_eigenvalues, dtype=float)
    n = lam.size
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((n, n)))
    H = np.eye(n) + Q @ np.diag(lam) @ Q.T

    def create_control():
        return PETSc.Vec().createSeq(n, comm=PETSc.COMM_SELF)

    def from_natural(values, vec):
        vec.getArray()[...] = values

    def hessian_mult(c, dc, out, step=1e-4):
        out.getArray()[...] = H @ dc.getArray(readonly=True)

    return SimpleNamespace(name="f", comm=PETSc.COMM_SELF, space=SimpleNamespace(size=n, from_natural=from_natural),
                           create_control=create_control, hessian_mult=hessian_mult)


def _eigenvalues(lam, caplog):
    f = _functional(lam)
    c = f.create_control()
    with caplog.at_level(logging.INFO, logger="twin"):
        h = low_rank_hessian(f, c, rank=len(lam), oversampling=0)
    c.destroy()
    return h.eigenvalues, [r for r in caplog.records if r.name.startswith("twin.assimilation.laplace")]


@pytest.fixture(autouse=True)
def _propagate():
    """twin's loggers may not propagate to the root logger, where caplog listens."""
    log = logging.getLogger("twin")
    before = log.propagate
    log.propagate = True
    yield
    log.propagate = before


def test_a_nonconvex_misfit_at_a_minimum_is_no_warning(caplog):
    lam, records = _eigenvalues([40.0, 3.0, -0.02], caplog)
    np.testing.assert_allclose(lam, [40.0, 3.0, 0.0], atol=1e-10)
    assert [r.levelno for r in records] == [logging.INFO]
    assert "-0.02" in records[0].getMessage() and "2 % less" in records[0].getMessage()


def test_a_point_that_is_no_minimum_is_a_warning(caplog):
    lam, records = _eigenvalues([40.0, 3.0, -1.5], caplog)
    np.testing.assert_allclose(lam, [40.0, 3.0, 0.0], atol=1e-10)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "not a minimum" in records[0].getMessage()


def test_a_convex_misfit_says_nothing(caplog):
    lam, records = _eigenvalues([40.0, 3.0, 0.5], caplog)
    np.testing.assert_allclose(lam, [40.0, 3.0, 0.5], atol=1e-10)
    assert records == []
