"""Bad ensemble-DA input is refused with a clear message before any forecast runs."""

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from pydantic import ValidationError

from twin.assimilation.cycle import EnsembleCycle, ObservationSchedule
from twin.observations.base import LinearObservations
from twin.assimilation.ensemble import ETKF
from twin.assimilation.factory import method_from_config, observations_from_config, schedule_from_config
from twin.assimilation.letkf import LETKF
from twin.config.assimilation_ensemble import EnsembleAssimilationConfig
from twin.core.errors import AssimilationError, ObservationError
from twin.kinds.lorenz96.model import Lorenz96

GOOD = {"method": "letkf", "N": 10, "seed": 1, "inflation": {"multiplicative": 1.04},
        "localisation": {"radius": 7.3}, "schedule": {"every": 1, "cycles": 50, "burn_in": 10},
        "observations": [{"type": "all_points", "error_std": 1.0}]}


def _cfg(**change):
    d = {**GOOD, **change}
    return EnsembleAssimilationConfig.model_validate(d)


@pytest.mark.parametrize("change, message", [
    ({"N": 1}, "ensemble size N must be at least 2"),
    ({"localisation": {"radius": 0.0}}, "localisation radius must be positive"),
    ({"observations": [{"type": "all_points", "error_std": 0.0}]}, "observation error standard deviations must be "
                                                               "positive"),
    ({"observations": [{"type": "points", "points": [[1.0], [2.0]], "error_std": [1.0, -2.0]}]}, "must be positive"),
    ({"localisation": None}, "method 'letkf' needs 'localisation"),
    ({"schedule": {"cycles": 5, "burn_in": 5}}, "burn_in"),
    ({"inflation": {"multiplicative": 0.0}}, "inflation factor must be positive"),
    ({"method": "esmda", "esmda_alphas": [2.0, 3.0]}, "sum\\(1/alpha\\) = 1"),
    ({"method": "3dvar"}, "method"),
    ({"N": 10, "ensemble": 3}, "Extra inputs are not permitted"),
    ({"method": "etkf"}, "'localisation' applies to methods letkf and esmda; etkf is a global filter"),
    ({"localisation": {"radius": 1.0, "component_radius": {"mast": -1.0}}}, "component_radius.mast: the localisation "
                                                                           "radius must be positive"),
], ids=["N<2", "radius0", "error0", "error<0", "no-loc", "burn-in", "inflation0", "alphas", "method", "extra",
        "loc-global", "component-radius"])
def test_config_refuses_bad_input(change, message):
    with pytest.raises(ValidationError, match=message):
        _cfg(**change)


def test_observation_outside_domain_refused_before_any_forecast():
    model = Lorenz96("l96bad", MPI.COMM_SELF, n=40)
    cfg = _cfg(observations=[{"type": "points", "points": [[3.0], [45.0]], "error_std": 1.0}])
    with pytest.raises(ObservationError,
                       match=r"points\[1\] = \[45.0\] lies outside the model domain \[\[0.0, 40.0\]\]"):
        observations_from_config(cfg, model)
    with pytest.raises(ObservationError, match="outside the model domain"):
        LinearObservations.at_points(model.grid, [[41.0]], 1.0)
    with pytest.raises(ObservationError, match="1 state component"):
        observations_from_config(_cfg(observations=[{"type": "all_points", "component": 1}]), model)
    model.destroy()


def test_factory_builds_a_working_setup():
    model = Lorenz96("l96fac", MPI.COMM_SELF, n=40)
    cfg = _cfg()
    method = method_from_config(cfg)
    assert isinstance(method, LETKF) and method.radius == 7.3 and method.inflation.multiplicative == 1.04
    obs = observations_from_config(cfg, model)
    assert obs.n_obs == 40 and np.allclose(obs.matrix.toarray(), np.eye(40))
    assert np.allclose(obs.locations[:, 0], np.arange(40))
    pts = observations_from_config(_cfg(observations=[{"type": "points", "points": [[2.5], [39.5]], "error_std": [0.5, 1.0]}]),
                                   model)
    assert np.allclose(pts.matrix.toarray()[0, 2:4], 0.5) and np.allclose(pts.matrix.toarray()[1, [39, 0]], 0.5)
    sch = schedule_from_config(cfg, model.dt)
    assert sch.window(3) == pytest.approx((0.15, 0.2))
    assert method_from_config(_cfg(method="esmda", localisation=None)).alphas == (4.0,) * 4
    model.destroy()


def test_cycle_refuses_before_forecasting():
    calls = []

    def forecast(states, params, t0, t1):
        calls.append(t0)
        return states

    sch = ObservationSchedule(0.05, 1, 4)
    obs = LinearObservations(sp.identity(8), 1.0)
    with pytest.raises(ObservationError, match="errors must be positive"):
        LinearObservations(sp.identity(8), np.r_[np.ones(7), 0.0])
    with pytest.raises(AssimilationError, match="at least 2"):
        EnsembleCycle(ETKF(1), forecast, obs, sch, MPI.COMM_SELF, 8)
    with pytest.raises(AssimilationError, match="LETKF needs the state geometry and observation locations"):
        EnsembleCycle(LETKF(4, 2.0), forecast, obs, sch, MPI.COMM_SELF, 8)
    with pytest.raises(ObservationError, match="act on 8 state entries, the model state has 9"):
        EnsembleCycle(ETKF(4), forecast, obs, sch, MPI.COMM_SELF, 9)
    cyc = EnsembleCycle(ETKF(4), forecast, obs, sch, MPI.COMM_SELF, 8)
    with pytest.raises(ObservationError, match=r"expected observations of shape \(4, 8\)"):
        cyc.run(lambda j, rng: (np.zeros(8), {}), np.zeros((3, 8)))
    with pytest.raises(AssimilationError, match="every >= 1"):
        ObservationSchedule(0.05, 0, 4)
    cyc.free()
    assert calls == []


def test_analysis_refuses_non_finite_forecasts_and_analyses_with_what_to_change():
    """The checks of the one filter analysis (:class:`EnsembleAnalysis`, campaigns and the cycle driver alike):
    a member whose forecast holds NaN, an inflation that overflows, a screen on a distributed block."""
    from twin.assimilation.analysis import EnsembleAnalysis
    from twin.assimilation.esmda import ESMDA
    from twin.assimilation.inflation import Inflation
    from twin.assimilation.transforms import ControlVector

    rng = np.random.default_rng(0)
    obs = LinearObservations(sp.identity(8), 1.0)
    analysis = EnsembleAnalysis(ETKF(4, Inflation(1.0)), obs, ControlVector(8))
    E = rng.standard_normal((8, 4))
    y = np.zeros(8)
    out = analysis.analyse(E, y, 1.0, 1.0, rng, cycle=0, truth=np.zeros(8))
    assert out.ensemble.shape == (8, 4) and out.factor == 1.0 and out.rank_counts.sum() == 8
    assert {"rmse_forecast", "spread_forecast", "rmse", "spread", "crps", "coverage_90", "innovation_std",
            "inflation", "n_obs", "members"} <= set(out.record)
    bad = E.copy()
    bad[3, 2] = np.nan
    with pytest.raises(AssimilationError, match=r"cycle 4: the inflated forecast of member\(s\) \[2\] holds "
                                                r"non-finite values \(inflation factor 1\); lower the inflation"):
        analysis.analyse(bad, y, 1.0, 1.0, rng, cycle=4)
    with pytest.raises(AssimilationError, match=r"member\(s\) \[0, 1, 2, 3\].*inflation factor 1e\+308"):
        analysis.analyse(1e10 * E, y, 1.0, 1e308, rng, cycle=1)
    with pytest.raises(ObservationError, match="act on 8 state entries, the control vector has 9"):
        EnsembleAnalysis(ETKF(4), obs, ControlVector(9))
    # a localised ES-MDA update needs its radius; iterations are counted from 0
    esmda = ESMDA(4, (2.0, 2.0))
    with pytest.raises(AssimilationError, match="iteration 2 outside 0..1"):
        esmda.update(E, E, y, np.ones(8), 2, rng)
    with pytest.raises(AssimilationError, match="needs a localisation radius"):
        esmda.update(E, E, y, np.ones(8), 0, rng, local=object())
