"""Analysis functions on tiny arrays, checked against the explicit Kalman formulas; localisation, inflation,
transforms, diagnostics and ES-MDA."""

import numpy as np
import pytest

from twin.assimilation import diagnostics as diag
from twin.assimilation.ensemble import ETKF, EnKF, enkf_analysis, enkf_transform, etkf_transform, random_rotation
from twin.assimilation.esmda import ESMDA, check_alphas
from twin.assimilation.inflation import Inflation, inflate, rtpp, rtps
from twin.assimilation.letkf import (LETKF, ComponentContext, CoupledContext, Geometry, LocalContext, distances,
                                    gaspari_cohn, letkf_analysis)
from twin.assimilation.transforms import ControlParameter, ControlVector, forward, inverse
from twin.core.errors import AssimilationError


def _problem(n=6, N=5, m=4, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, N)) + np.arange(n)[:, None]
    H = rng.standard_normal((m, n))
    y = rng.standard_normal(m)
    r = 0.5 + rng.random(m)
    return E, H, y, r


def _kalman(E, H, y, r):
    """Kalman mean and covariance with the ensemble's sample covariance as prior."""
    N = E.shape[1]
    x, X = E.mean(axis=1), E - E.mean(axis=1, keepdims=True)
    P = X @ X.T / (N - 1)
    K = P @ H.T @ np.linalg.inv(H @ P @ H.T + np.diag(r ** 2))
    return x + K @ (y - H @ x), (np.eye(len(x)) - K @ H) @ P


def test_etkf_is_the_kalman_update_of_mean_and_covariance():
    E, H, y, r = _problem()
    Ea = E @ etkf_transform(H @ E, y, r)
    xa, Pa = _kalman(E, H, y, r)
    Xa = Ea - Ea.mean(axis=1, keepdims=True)
    assert np.allclose(Ea.mean(axis=1), xa, atol=1e-12)
    assert np.allclose(Xa @ Xa.T / (E.shape[1] - 1), Pa, atol=1e-12)
    # symmetric square root: the analysis anomalies are the closest to the forecast ones (no rotation)
    rot = random_rotation(E.shape[1], np.random.default_rng(1))
    assert np.allclose(rot @ np.ones(5), 1.0) and np.allclose(rot.T @ rot, np.eye(5), atol=1e-12)
    Er = E @ etkf_transform(H @ E, y, r, rot)
    Xr = Er - Er.mean(axis=1, keepdims=True)
    assert np.allclose(Er.mean(axis=1), xa, atol=1e-12) and np.allclose(Xr @ Xr.T / 4, Pa, atol=1e-12)
    assert np.linalg.norm(Xa - (E - E.mean(axis=1, keepdims=True))) < np.linalg.norm(
        Xr - (E - E.mean(axis=1, keepdims=True)))


def test_enkf_mean_is_kalman_and_blocks_are_independent():
    E, H, y, r = _problem()
    Z = np.random.default_rng(5).standard_normal((4, 5))
    T = enkf_transform(H @ E, y, r, Z)
    Ea = E @ T
    assert np.allclose(Ea.mean(axis=1), _kalman(E, H, y, r)[0], atol=1e-12)
    # the perturbed-observation update equals the textbook gain form with D = y + R^1/2 (Z - mean Z)
    Zc = Z - Z.mean(axis=1, keepdims=True)
    X, Y = E - E.mean(axis=1, keepdims=True), H @ (E - E.mean(axis=1, keepdims=True))
    K = X @ Y.T @ np.linalg.inv(Y @ Y.T + 4 * np.diag(r ** 2))
    assert np.allclose(Ea, E + K @ (y[:, None] + r[:, None] * Zc - H @ E), atol=1e-12)
    # few observations (m < N): the observation-space path gives the same analysis
    Zb = np.random.default_rng(6).standard_normal((2, 5))
    few = enkf_analysis(E, (H @ E)[:2], y[:2], r[:2], Zb)
    assert np.allclose(few, E @ enkf_transform((H @ E)[:2], y[:2], r[:2], Zb), atol=1e-12)
    # a rank's block is analysed with the same T: splitting the state changes nothing
    assert np.allclose(np.vstack([E[:2] @ T, E[2:] @ T]), Ea, atol=1e-14)


def test_method_classes_refuse_small_ensembles_and_zero_radius():
    for make in (lambda: ETKF(1), lambda: EnKF(0), lambda: ESMDA(1)):
        with pytest.raises(AssimilationError, match="at least 2"):
            make()
    from twin.assimilation.letkf import LETKF

    with pytest.raises(AssimilationError, match="localisation radius must be positive"):
        LETKF(10, 0.0)
    with pytest.raises(AssimilationError, match="sum\\(1/alpha\\) = 1"):
        check_alphas([2.0, 3.0])


def test_gaspari_cohn_values():
    c = 2.0
    z = np.array([0.0, c, 2 * c, 3 * c])
    assert np.allclose(gaspari_cohn(z, c), [1.0, 5.0 / 24.0, 0.0, 0.0])
    # continuous at c and smooth (C^2 overall): left and right values meet
    eps = 1e-9
    assert abs(gaspari_cohn(c - eps, c) - gaspari_cohn(c + eps, c)) < 1e-8
    d = distances(np.array([[0.5], [9.5]]), np.array([[9.5]]), np.array([10.0]))
    assert np.allclose(d.ravel(), [1.0, 0.0])


def _ring(n=12, N=5, seed=2):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, N))
    obs_pts = np.arange(0, n, 2, dtype=float)
    H = np.zeros((obs_pts.size, n))
    H[np.arange(obs_pts.size), obs_pts.astype(int)] = 1.0
    geo = Geometry(np.arange(n, dtype=float)[:, None], 1, np.array([float(n)]))
    y = rng.standard_normal(obs_pts.size)
    r = np.full(obs_pts.size, 0.7)
    return E, H, y, r, geo, obs_pts[:, None]


def test_letkf_equals_pointwise_etkf_with_tapered_errors():
    E, H, y, r, geo, loc = _ring()
    c = 2.5
    Ea = letkf_analysis(E, H @ E, y, r, np.arange(12), geo, loc, c, batch=5)
    for p in range(12):
        rho = gaspari_cohn(distances(geo.points[[p]], loc, geo.periods)[0], c)
        use = rho > 0
        T = etkf_transform((H @ E)[use], y[use], r[use] / np.sqrt(rho[use]))
        assert np.allclose(Ea[p], E[p] @ T, atol=1e-12)
    # a huge radius is the global ETKF; entries marked -1 (parameters) get the global transform
    big = letkf_analysis(E, H @ E, y, r, np.arange(12), geo, loc, 1e6)
    glob = E @ etkf_transform(H @ E, y, r)
    assert np.allclose(big, glob, atol=1e-6)
    mixed = letkf_analysis(E, H @ E, y, r, np.r_[np.arange(11), -1], geo, loc, c)
    assert np.allclose(mixed[-1], glob[-1], atol=1e-12) and np.allclose(mixed[:11], Ea[:11], atol=1e-12)
    # far from every observation the background is kept
    far = letkf_analysis(E, H @ E, y, r, np.arange(12), geo, loc[:1], 0.2)
    assert np.allclose(far[1:], E[1:]) and not np.allclose(far[0], E[0])


@pytest.mark.parametrize("rotate", [False, True])
def test_letkf_in_observation_space_equals_the_ensemble_space_transforms(rotate):
    """With fewer local observations than members (spantini2019: 100 members, 20 observations of 40 variables,
    about 7 of them local) each point's transform is solved in observation space (m x m instead of N x N); it is
    the same transform as the ensemble-space one of the tapered ETKF, point by point, rotation included."""
    from twin.assimilation.letkf import _point_transforms, _transforms

    n, N = 40, 100
    rng = np.random.default_rng(7)
    E = rng.standard_normal((n, N)) + 3.0
    obs_pts = np.arange(0, n, 2)
    H = np.zeros((obs_pts.size, n))
    H[np.arange(obs_pts.size), obs_pts] = 1.0
    geo = Geometry(np.arange(n, dtype=float)[:, None], 1, np.array([float(n)]))
    y, r = H @ E.mean(axis=1) + rng.standard_normal(obs_pts.size), np.full(obs_pts.size, 0.7)
    rot = random_rotation(N, rng) if rotate else None
    c = 7.28
    Ea = letkf_analysis(E, H @ E, y, r, np.arange(n), geo, obs_pts[:, None].astype(float), c, rotation=rot)
    counts = []
    for p in range(n):
        rho = gaspari_cohn(distances(geo.points[[p]], obs_pts[:, None].astype(float), geo.periods)[0], c)
        use = rho > 0
        counts.append(int(use.sum()))
        T = etkf_transform((H @ E)[use], y[use], r[use] / np.sqrt(rho[use]), rot)
        assert np.allclose(Ea[p], E[p] @ T, rtol=0, atol=1e-11)
    assert max(counts) < N  # every point took the observation-space path
    # the two solvers of one batch directly, with a point that has more observations than members
    S, d = rng.standard_normal((8, 6)), rng.standard_normal(8)
    import scipy.sparse as sps

    dense = np.where(rng.random((3, 8)) < 0.5, rng.random((3, 8)), 0.0) + np.eye(3, 8)
    dense[2] = 0.9  # 8 observations, 6 members: ensemble space
    T = _point_transforms(sps.csr_matrix(dense), S, d, None)
    ref = _transforms(np.einsum("pk,ki,kj->pij", dense, S, S), (dense * d) @ S, None)
    assert np.allclose(T, ref, rtol=0, atol=1e-12)


def test_coupled_letkf_analyses_each_component_with_its_own_observations():
    """Weakly coupled LETKF: component A (a ring in km) sees only its observations with its radius, component B
    (a line in m) is not observed and keeps its forecast, the scalar row gets the global transform from all
    observations; dropping observations (guardrails) renumbers them consistently."""
    E, H, y, r, geo, loc = _ring()                   # 12 points of component A, observations of A
    rng = np.random.default_rng(7)
    N = E.shape[1]
    EB = rng.standard_normal((5, N))                 # component B: 5 points on a line, unobserved
    geoB = Geometry(np.linspace(0.0, 4.0, 5)[:, None])
    scalar = rng.standard_normal((1, N))
    # rows: B first, then A, then the scalar; observations of A at rows 0..m-1
    Ebig = np.vstack([EB, E, scalar])
    Y = H @ E
    m = y.size
    a_rows, b_rows = np.arange(5, 17), np.arange(5)
    ctx = CoupledContext([
        ComponentContext("b", b_rows, LocalContext(np.arange(5), geoB, np.zeros((0, 1))), np.zeros(0, dtype=int), 0.3),
        ComponentContext("a", a_rows, LocalContext(np.arange(12), geo, loc), np.arange(m), 2.5)])
    Ea = LETKF(N, radius=99.0).analysis(Ebig, Y, y, r, np.random.default_rng(0), ctx)
    assert np.array_equal(Ea[b_rows], EB)
    assert np.allclose(Ea[a_rows], letkf_analysis(E, Y, y, r, np.arange(12), geo, loc, 2.5), atol=1e-12)
    assert np.allclose(Ea[-1], scalar[0] @ etkf_transform(Y, y, r), atol=1e-12)
    # the component's own radius wins over the filter's; without one, the filter's applies
    ctx_default = CoupledContext([ComponentContext("a", np.arange(12), LocalContext(np.arange(12), geo, loc),
                                                   np.arange(m))])
    assert np.allclose(LETKF(N, radius=2.5).analysis(E, Y, y, r, None, ctx_default), Ea[a_rows], atol=1e-12)
    # guardrails keep observations 1 and 3 only: same as a context built with just those
    keep = np.zeros(m, dtype=bool)
    keep[[1, 3]] = True
    sub = ctx.observed(keep)
    direct = CoupledContext([ctx.components[0],
                             ComponentContext("a", a_rows, LocalContext(np.arange(12), geo, loc[keep]), np.arange(2),
                                              2.5)])
    got = sub.analyse(Ebig, Y[keep], y[keep], r[keep], 99.0)
    assert np.allclose(got, direct.analyse(Ebig, Y[keep], y[keep], r[keep], 99.0), atol=1e-14)
    assert not np.allclose(got[a_rows], Ea[a_rows])
    # stacked data (ES-MDA over two visits: every observation twice) = one context listing them twice
    twice = np.tile(np.arange(m), 2)
    stacked = ctx.observed(twice)
    assert stacked.components[1].obs.tolist() == list(range(2 * m)) and stacked.components[0].obs.size == 0
    both = CoupledContext([ctx.components[0],
                           ComponentContext("a", a_rows, LocalContext(np.arange(12), geo, np.vstack([loc, loc])),
                                            np.arange(2 * m), 2.5)])
    Y2, y2, r2 = Y[twice], y[twice], r[twice]
    assert np.allclose(stacked.analyse(Ebig, Y2, y2, r2, 99.0), both.analyse(Ebig, Y2, y2, r2, 99.0), atol=1e-14)


def test_entry_points_of_state_fields_and_scalars():
    """Control vector [state (3 points x 2 dof), scalar, field on the 3 points]: points 0 0 1 1 2 2, -1, 0 1 2."""
    geo = Geometry(np.arange(3.0)[:, None], dof=2)
    assert geo.entry_points(0, 10, fields=[(7, 10)]).tolist() == [0, 0, 1, 1, 2, 2, -1, 0, 1, 2]
    assert geo.entry_points(5, 9, fields=[(7, 10)]).tolist() == [2, -1, 0, 1]   # an owned block of rows
    with pytest.raises(AssimilationError, match="field parameter has 2 values, the grid 3 points"):
        geo.entry_points(0, 9, fields=[(7, 9)])


def test_inflation_and_relaxation():
    E, *_ = _problem(N=8)
    Ei = inflate(E, 1.5)
    assert np.allclose(Ei.mean(1), E.mean(1)) and np.allclose(Ei.std(1), 1.5 * E.std(1))
    Ea = inflate(E, 0.5) + 0.3
    assert np.allclose(rtpp(Ea, E, 1.0) - Ea.mean(1, keepdims=True), E - E.mean(1, keepdims=True))
    relaxed = rtps(Ea, E, 0.5)
    assert np.allclose(relaxed.mean(1), Ea.mean(1))
    assert np.allclose(relaxed.std(1), 0.5 * E.std(1) + 0.5 * Ea.std(1))
    with pytest.raises(AssimilationError, match="positive"):
        Inflation(multiplicative=0.0)
    with pytest.raises(AssimilationError, match="not both"):
        Inflation(rtps=0.5, rtpp=0.5)
    # adaptive: innovations twice as large as the spread explains -> the factor grows
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((200, 10)) * 0.5
    infl = Inflation(1.0, adaptive=True, smoothing=1.0, bounds=(1.0, 5.0))
    y = Y.mean(1) + rng.standard_normal(200) * np.sqrt(1.0 + 4 * 0.25)
    assert infl.updated_factor(1.0, Y, y, np.ones(200)) == pytest.approx(2.0, rel=0.15)


def test_transforms_and_control_vector():
    p = np.array([0.1, 1.0, 30.0])
    assert np.allclose(inverse(forward(p, "log"), "log"), p)
    q = np.array([1e-9, 0.5, 1 - 1e-9])
    assert np.allclose(inverse(forward(q, "logit"), "logit"), q, rtol=1e-6)
    assert np.all(inverse(np.array([-800.0, 800.0]), "logit") >= 0) and np.all(inverse([800.0], "logit") <= 1)
    with pytest.raises(AssimilationError, match="positive"):
        forward([-1.0], "log", "D")
    with pytest.raises(AssimilationError, match=r"\(0, 1\)"):
        forward([1.0], "logit", "fraction")
    with pytest.raises(AssimilationError, match="unknown transform"):
        ControlParameter("k", 1, "sqrt")
    cv = ControlVector(4, [ControlParameter("F", 1, "log"), ControlParameter("k", 2, "logit")])
    states = np.arange(8.0).reshape(4, 2)
    packed = cv.pack(states, {"F": np.array([8.0, 9.0]), "k": np.array([[0.2, 0.3], [0.4, 0.5]])})
    assert packed.shape == (7, 2) and np.allclose(packed[4], np.log([8.0, 9.0]))
    s, prm = cv.unpack(packed)
    assert np.allclose(s, states) and np.allclose(prm["F"], [8.0, 9.0]) and np.allclose(prm["k"][1], [0.4, 0.5])


def test_diagnostics_against_brute_force():
    rng = np.random.default_rng(4)
    E, truth = rng.standard_normal((30, 6)), rng.standard_normal(30)
    brute = np.mean([np.mean(np.abs(E[i] - truth[i])) - np.mean(np.abs(E[i][:, None] - E[i][None, :])) / 2
                     for i in range(30)])
    assert diag.crps(E, truth) == pytest.approx(brute, rel=1e-12)
    assert diag.rmse(E, truth) == pytest.approx(np.sqrt(np.mean((E.mean(1) - truth) ** 2)))
    assert diag.spread(E) == pytest.approx(np.sqrt(np.mean(E.var(1, ddof=1))))
    h = diag.rank_histogram(E, truth)
    assert h.sum() == 30 and h.size == 7
    s = diag.block_sums(E, truth)
    assert s[3] / s[0] == pytest.approx(brute) and np.sqrt(s[2] / s[0]) == pytest.approx(diag.rmse(E, truth))
    # a reliable ensemble (truth drawn like the members) has spread/skill near 1 and a flat rank histogram
    big = rng.standard_normal((20000, 10))
    t = rng.standard_normal(20000)
    assert diag.spread(big) / diag.rmse(big, t) == pytest.approx(np.sqrt(10 / 11), rel=0.05)
    hist = diag.rank_histogram(big, t)
    assert hist.min() > 0.85 * hist.mean() and hist.max() < 1.15 * hist.mean()


def test_esmda_linear_gaussian_posterior():
    """ES-MDA on a linear-Gaussian problem reproduces the exact Gaussian posterior (large ensemble)."""
    rng = np.random.default_rng(9)
    G = rng.standard_normal((5, 3))
    m_true = np.array([1.0, -0.5, 0.3])
    r = np.full(5, 0.3)
    y = G @ m_true + r * rng.standard_normal(5)
    prior_std = 1.0
    P = np.linalg.inv(np.eye(3) / prior_std ** 2 + G.T @ np.diag(r ** -2) @ G)
    mean = P @ (G.T @ (y / r ** 2))
    M0 = prior_std * rng.standard_normal((3, 4000))
    res = ESMDA(4000, (4.0, 4.0, 4.0, 4.0)).run(M0, lambda M: G @ M, y, r, np.random.default_rng(1))
    assert np.allclose(res.ensemble.mean(1), mean, atol=0.03)
    assert np.allclose(np.cov(res.ensemble), P, atol=0.02)
    assert res.misfit[-1] < res.misfit[0]


def test_localised_esmda_update():
    """Localised ES-MDA updates (esmda_local_update): the textbook gain ``C_MY (C_YY + alpha R)^-1`` tapered entry by
    entry by Gaspari-Cohn, applied to perturbed data; an unbounded radius is the unlocalised update exactly; entries
    out of reach of every datum keep their prior, a scalar row (-1) gets the untapered gain."""
    from twin.assimilation.esmda import esmda_local_update, esmda_update

    E, H, y, r, geo, loc = _ring(n=12, N=20, seed=4)
    Z = np.random.default_rng(6).standard_normal((y.size, 20))
    wide = LocalContext(np.arange(12), geo, loc)
    assert np.allclose(esmda_local_update(E, H @ E, y, r, 4.0, wide, 1e6, Z), esmda_update(E, H @ E, y, r, 4.0, Z),
                       atol=1e-12)
    E2 = np.vstack([E, np.random.default_rng(5).standard_normal((1, 20))])
    c = 2.0
    near = LocalContext(np.r_[np.arange(12), -1], geo, loc)
    Y = H @ E
    M2 = esmda_local_update(E2, Y, y, r, 4.0, near, c, Z)
    X, Ya = E2 - E2.mean(axis=1, keepdims=True), Y - Y.mean(axis=1, keepdims=True)
    K = X @ Ya.T @ np.linalg.inv(Ya @ Ya.T + 19 * 4.0 * np.diag(r ** 2))
    rho = np.ones_like(K)
    rho[:12] = gaspari_cohn(distances(geo.points, loc, geo.periods), c)
    Zc = Z - Z.mean(axis=1, keepdims=True)
    D = y[:, None] + 2.0 * r[:, None] * Zc
    assert np.allclose(M2, E2 + (rho * K) @ (D - Y), atol=1e-12)
    # one datum at point 0, radius 1 (no influence beyond 2): points 3..9 keep their prior; the scalar row moves
    M3 = esmda_local_update(E2, Y[:1], y[:1], r[:1], 4.0, near.observed([0]), 1.0, Z[:1])
    assert np.array_equal(M3[3:10], E2[3:10])
    assert not np.allclose(M3[0], E2[0]) and not np.allclose(M3[-1], E2[-1])


def test_esmda_parameter_rtps_relaxes_only_the_untapered_rows():
    """``inflation.parameter_rtps`` in ES-MDA: after a localised update the scalar row's spread is relaxed to
    ``(1 - w) sigma_a + w sigma_f`` (its mean kept), the field rows are the plain localised update; ES-MDA refuses the
    filters' inflation settings."""
    from twin.assimilation.esmda import global_rows

    E, H, y, r, geo, loc = _ring(n=12, N=20, seed=4)
    E2 = np.vstack([E, np.random.default_rng(5).standard_normal((1, 20))])
    near = LocalContext(np.r_[np.arange(12), -1], geo, loc)
    plain = ESMDA(20, (4.0, 4.0, 4.0, 4.0), radius=2.0)
    relaxed = ESMDA(20, (4.0, 4.0, 4.0, 4.0), radius=2.0, inflation=Inflation(parameter_rtps=0.5))
    Y = H @ E
    a = plain.update(E2, Y, y, r, 0, np.random.default_rng(3), near)
    b = relaxed.update(E2, Y, y, r, 0, np.random.default_rng(3), near)
    assert np.array_equal(global_rows(near, 13), [12]) and np.array_equal(global_rows(None, 3), [0, 1, 2])
    assert np.array_equal(a[:12], b[:12])
    sa, sf = a[12].std(ddof=1), E2[12].std(ddof=1)
    assert sa < 0.9 * sf
    assert np.isclose(b[12].std(ddof=1), 0.5 * (sa + sf)) and np.isclose(b[12].mean(), a[12].mean())
    for bad in (Inflation(multiplicative=1.1), Inflation(rtps=0.5), Inflation(rtpp=0.5), Inflation(adaptive=True)):
        with pytest.raises(AssimilationError, match="only inflation.parameter_rtps"):
            ESMDA(20, inflation=bad)


def test_background_check_rejects_what_lies_beyond_k_sigma_and_nothing_else():
    """The background check of EnsembleAnalysis: an observation 20 sigma off is left out exactly as a silent site
    (NaN) would be; one at 2 sigma with k = 3 stays; every rejection is named and counted."""
    import scipy.sparse as sp

    from twin.assimilation.analysis import EnsembleAnalysis
    from twin.observations.base import LinearObservations

    E, H, y, r = _problem(n=6, N=8, m=4)
    obs = LinearObservations(sp.csr_matrix(H), r, None, "net")
    control = ControlVector(6, [])
    Y = H @ E
    sigma = np.sqrt(Y.var(axis=1, ddof=1) + r ** 2)
    y = Y.mean(axis=1) + np.array([0.5, -2.0, 20.0, 1.0]) * sigma  # row 2 far off, row 1 at 2 sigma
    checked = EnsembleAnalysis(ETKF(8), obs, control, background_check=3.0)
    res = checked.analyse(E, y, r, 1.0, np.random.default_rng(0), cycle=0)
    assert res.rejected.tolist() == [2] and res.record["n_rejected_background"] == 1 and res.record["n_obs"] == 3
    silent = y.copy()
    silent[2] = np.nan
    ref = EnsembleAnalysis(ETKF(8), obs, control).analyse(E, silent, r, 1.0, np.random.default_rng(0), cycle=0)
    assert np.array_equal(res.ensemble, ref.ensemble)
    # without the check the far observation pulls the analysis
    free = EnsembleAnalysis(ETKF(8), obs, control).analyse(E, y, r, 1.0, np.random.default_rng(0), cycle=0)
    assert np.abs(free.ensemble.mean(axis=1) - ref.ensemble.mean(axis=1)).max() > 0.5
    with pytest.raises(AssimilationError, match="k must be positive"):
        EnsembleAnalysis(ETKF(8), obs, control, background_check=0.0)
    # a cycle with nothing to assimilate says which and why: every site silent (no observation at its time), or
    # all rejected (only then is the background check the thing to change)
    with pytest.raises(AssimilationError, match=r"cycle 3 \(t = 1.5\): no observation to assimilate in this cycle "
                                                r"\(every site was silent\): give observations at the cycle's time"):
        EnsembleAnalysis(ETKF(8), obs, control).analyse(E, np.full(4, np.nan), r, 1.0, np.random.default_rng(0),
                                                         cycle=3, time=1.5)
    with pytest.raises(AssimilationError, match=r"\(4 rejected by the background check\): give a larger "
                                                r"background_check"):
        checked.analyse(E, Y.mean(axis=1) + 20.0 * sigma, r, 1.0, np.random.default_rng(0), cycle=0)


def test_parameter_rtps_relaxes_only_the_parameters_spread():
    """A joint state-parameter control (6 state entries and a scalar parameter correlated with them): with
    parameter_rtps the parameter row's analysis spread is relaxed toward its forecast spread by that weight (1: kept
    whole), with the mean and the state rows exactly as without it; 0 changes nothing."""
    import scipy.sparse as sp

    from twin.assimilation.analysis import EnsembleAnalysis
    from twin.observations.base import LinearObservations

    E, H, y, r = _problem(n=6, N=16, m=4)
    rng = np.random.default_rng(5)
    p = E[:2].sum(axis=0) + 0.3 * rng.standard_normal(16)          # the parameter, seen through the state
    Ep = np.vstack([E, p])
    obs = LinearObservations(sp.csr_matrix(H), r, None, "net")
    control = ControlVector(6, [ControlParameter("F", 1, "none")])

    def analysed(**inflation):
        method = ETKF(16, Inflation(**inflation))
        return EnsembleAnalysis(method, obs, control).analyse(Ep, y, r, 1.0, np.random.default_rng(0),
                                                              cycle=0).ensemble

    plain, none, whole, half = analysed(), analysed(parameter_rtps=0.0), analysed(parameter_rtps=1.0), \
        analysed(parameter_rtps=0.5)
    assert np.array_equal(plain, none)
    for relaxed in (whole, half):
        assert np.array_equal(relaxed[:6], plain[:6]) and np.allclose(relaxed[6].mean(), plain[6].mean())
    sd_f, sd_a = p.std(ddof=1), plain[6].std(ddof=1)
    assert sd_a < 0.8 * sd_f                                         # the data narrow the parameter
    assert whole[6].std(ddof=1) == pytest.approx(sd_f)
    assert half[6].std(ddof=1) == pytest.approx(0.5 * (sd_a + sd_f))
    with pytest.raises(AssimilationError, match="parameter_rtps"):
        Inflation(parameter_rtps=1.5)
