"""ES-MDA calibration over many truths on a linear-Gaussian problem whose posterior is known exactly, built like the
oncology flagship's (configs/oncology.yaml): a correlated field (``log k``: 60 points, unit variance, correlation
length 4) observed precisely (error 0.1) on a third of the domain (the tumour), plus a scalar (``log D``) that every
datum sees, calibrated by 32 members with four updates of ``alpha = 4``.

For each of 120 truths drawn from the prior (and data drawn from the truth) the 90 % interval of the posterior members
(5-95 % sample quantiles) is checked against the truth. Even a perfect sampler, 32 independent draws from the exact
posterior, covers only about 85 % (sample quantiles of 32 draws are narrower than the true ones): that is the
reference, computed here the same way. Asserted, with the values measured when the thresholds were set:

* plain ES-MDA is over-confident, the flagship's failure: coverage 0.70 of the field and 0.73 of the scalar (perfect
  sampler 0.855 and 0.85), member spread 0.79 of the exact posterior standard deviation everywhere, also where no
  datum reaches (sampling correlations with the data shrink it);
* localised (Gaspari-Cohn half-width 3) with ``parameter_rtps`` 0.5: coverage of the field within 0.03 of the perfect
  sampler's (0.868), the spread where no datum reaches that of the exact posterior, i.e. the prior's (ratio 0.99),
  1.10 of it where the data are, the scalar's coverage 0.81 and its spread 1.06 of the exact one.
"""

from __future__ import annotations

import numpy as np
import pytest

from twin.assimilation.esmda import ESMDA
from twin.assimilation.inflation import Inflation
from twin.assimilation.letkf import Geometry, LocalContext

N, TRUTHS, NOISE = 32, 120, 0.1
OBSERVED = np.arange(20, 40)
UNOBSERVED = np.arange(0, 8)  # more than 2 half-widths (and 3 correlation lengths) from every datum


def _problem():
    x = np.arange(60, dtype=float)
    P = np.zeros((61, 61))
    P[:60, :60] = np.exp(-0.5 * ((x[:, None] - x[None]) / 4.0) ** 2) + 1e-6 * np.eye(60)
    P[60, 60] = 1.0
    G = np.zeros((OBSERVED.size, 61))
    G[np.arange(OBSERVED.size), OBSERVED] = 1.0
    G[:, 60] = 1.0
    r = np.full(OBSERVED.size, NOISE)
    Pa = P - P @ G.T @ np.linalg.solve(G @ P @ G.T + np.diag(r ** 2), G @ P)
    local = LocalContext(np.r_[np.arange(60), -1], Geometry(x[:, None]), x[OBSERVED][:, None])
    return P, G, r, Pa, local


def _calibrate(method: ESMDA | None, localised: bool = False):
    """Fraction of (truth, entry) pairs inside the 90 % interval (field, scalar) and the mean ratio of member spread
    to the exact posterior standard deviation per entry; ``method`` None: draws from the exact posterior."""
    P, G, r, Pa, local = _problem()
    L, La = np.linalg.cholesky(P), np.linalg.cholesky(Pa + 1e-12 * np.eye(61))
    rng = np.random.default_rng(0)
    inside, ratio = [], []
    for _ in range(TRUTHS):
        truth = L @ rng.standard_normal(61)
        y = G @ truth + r * rng.standard_normal(r.size)
        if method is None:
            mean = P @ G.T @ np.linalg.solve(G @ P @ G.T + np.diag(r ** 2), y)
            M = mean[:, None] + La @ rng.standard_normal((61, N))
        else:
            M = L @ rng.standard_normal((61, N))
            for i in range(len(method.alphas)):
                M = method.update(M, G @ M, y, r, i, rng, local if localised else None)
        lo, hi = np.quantile(M, [0.05, 0.95], axis=1)
        inside.append((truth >= lo) & (truth <= hi))
        ratio.append(M.std(axis=1, ddof=1) / np.sqrt(np.diag(Pa)))
    inside, ratio = np.array(inside), np.array(ratio).mean(axis=0)
    return inside[:, :60].mean(), inside[:, 60].mean(), ratio


@pytest.fixture(scope="module")
def perfect():
    return _calibrate(None)


def test_plain_esmda_is_over_confident(perfect):
    field, scalar, ratio = _calibrate(ESMDA(N))
    print(f"\nplain ES-MDA: coverage field {field:.3f} scalar {scalar:.3f} (perfect sampler {perfect[0]:.3f}, "
          f"{perfect[1]:.3f}); spread / exact sd: observed {ratio[OBSERVED].mean():.2f}, unobserved "
          f"{ratio[UNOBSERVED].mean():.2f}, scalar {ratio[60]:.2f}")
    assert field < perfect[0] - 0.1 and scalar < perfect[1] - 0.08
    assert ratio[UNOBSERVED].mean() < 0.85 and ratio[60] < 0.85


def test_localised_esmda_with_parameter_rtps_is_calibrated(perfect):
    method = ESMDA(N, radius=3.0, inflation=Inflation(parameter_rtps=0.5))
    field, scalar, ratio = _calibrate(method, localised=True)
    print(f"\nlocalised ES-MDA + parameter RTPS 0.5: coverage field {field:.3f} scalar {scalar:.3f} (perfect sampler "
          f"{perfect[0]:.3f}, {perfect[1]:.3f}); spread / exact sd: observed {ratio[OBSERVED].mean():.2f}, unobserved "
          f"{ratio[UNOBSERVED].mean():.2f}, scalar {ratio[60]:.2f}")
    assert abs(field - perfect[0]) < 0.03
    assert 0.95 < ratio[UNOBSERVED].mean() < 1.05  # the prior spread is kept where the data say nothing
    assert 0.9 < ratio[OBSERVED].mean() < 1.2
    assert scalar > perfect[1] - 0.07 and 0.85 < ratio[60] < 1.2
