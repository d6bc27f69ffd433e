"""4D-Var refuses bad input with clear errors before any solve: a window without observations, observation times
outside the window, covariance settings that are not positive definite, no controls; and TAO non-convergence is
reported, not hidden."""

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from pydantic import ValidationError

from twin.assimilation.covariance import DiagonalCovariance
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.tao import TaoSettings, minimise
from twin.assimilation.var_control import ParameterControl
from twin.config.assimilation_var import VarAssimilationConfig
from twin.kinds.linear.config import LinearAdvectionDiffusionConfig
from twin.core.errors import AssimilationError, ModelError, ObservationError
from twin.kinds.linear.model import LinearAdvectionDiffusion
from twin.observations.base import LinearObservationOperator


@pytest.fixture
def setup():
    model = LinearAdvectionDiffusion("lin_inputs", MPI.COMM_SELF, n=16, dt=0.05)
    H = LinearObservationOperator(model.grid, sp.identity(16, format="csr")[::4], 0.1, name="probes")
    xb = model.initial_state()
    B = DiagonalCovariance.on_grid(model.grid, 0.2)
    yield model, H, xb, B
    for obj in (H, xb, B, model):
        obj.destroy()


def test_window_without_observations(setup):
    model, H, xb, B = setup
    with pytest.raises(AssimilationError, match=r"window \[0, 0.5\] has no observations"):
        FourDVar(model, (0.0, 0.5), [], xb, B)


def test_observation_time_outside_window(setup):
    model, H, xb, B = setup
    ob = Observation(0.7, H, np.zeros(4))
    with pytest.raises(AssimilationError, match=r"'probes' at t=0.7 lies outside the 4D-Var window \[0, 0.5\]"):
        FourDVar(model, (0.0, 0.5), [ob], xb, B)


def test_bad_observations_and_controls(setup):
    model, H, xb, B = setup
    with pytest.raises(ObservationError, match="3 values for an operator with 4"):
        Observation(0.1, H, np.zeros(3))
    with pytest.raises(ObservationError, match="finite"):
        Observation(0.1, H, [0.0, np.nan, 0.0, 0.0])
    ob = Observation(0.5, H, np.zeros(4))
    with pytest.raises(AssimilationError, match="no controls"):
        FourDVar(model, (0.0, 0.5), [ob], xb, None)
    with pytest.raises(AssimilationError, match="has no parameter 'kappa'"):
        FourDVar(model, (0.0, 0.5), [ob], xb, B, [ParameterControl("kappa", std=1.0)])
    with pytest.raises(AssimilationError, match="needs a prior standard deviation"):
        FourDVar(model, (0.0, 0.5), [ob], xb, B, [ParameterControl("velocity")])
    with pytest.raises(AssimilationError, match="positive and finite"):
        FourDVar(model, (0.0, 0.5), [ob], xb, B, [ParameterControl("velocity", std=-1.0)])
    with pytest.raises(ModelError, match="t1 >= t0"):
        model.advance(xb.copy(), 1.0, 0.5)


def test_tao_non_convergence_is_reported(setup):
    model, H, xb, B = setup
    truth = xb.copy()
    truth.scale(1.5)
    obs = []
    for k, t in enumerate((0.25, 0.5)):
        model.advance(truth, 0.25 * k, t)
        obs.append(Observation(t, H, H.apply(truth)))
    fn = FourDVar(model, (0.0, 0.5), obs, xb, B)
    with pytest.raises(AssimilationError, match=r"did not converge: DIVERGED_MAXITS after 1 iterations"):
        minimise(fn, settings=TaoSettings(max_iterations=1, gatol=1e-12, grtol=0, prefix="inputs_a_"))
    res = minimise(fn, settings=TaoSettings(max_iterations=1, gatol=1e-12, grtol=0, on_failure="warn",
                                            prefix="inputs_b_"))
    assert not res.converged and res.reason == "DIVERGED_MAXITS" and res.value < res.initial_value
    res.control.destroy()
    res = minimise(fn, settings=TaoSettings(gatol=1e-6, grtol=0, prefix="inputs_c_"))
    assert res.converged and res.gradient_norm <= 1e-6
    res.control.destroy()
    with pytest.raises(AssimilationError, match="on_failure"):
        minimise(fn, settings=TaoSettings(on_failure="ignore"))
    truth.destroy()
    fn.destroy()


BASE = {"method": "4dvar", "model": "tracer", "obs_interval": 0.1, "window": 4, "cycles": 3,
        "background_covariance": {"kind": "diffusion", "std": 0.5, "length_scale": 0.1}}


@pytest.mark.parametrize("change, message", [
    ({"background_covariance": {"kind": "diffusion", "std": -0.5, "length_scale": 0.1}}, "not positive definite"),
    ({"background_covariance": {"kind": "diffusion", "std": 0.5, "length_scale": -1.0}}, "not positive definite"),
    ({"background_covariance": {"kind": "diffusion", "std": 0.5}}, "needs a 'length_scale'"),
    ({"background_covariance": {"kind": "diagonal", "std": [1.0, 0.0]}}, "not positive definite"),
    ({"shift": 5}, "must not exceed the window"),
    ({"initial_state": False}, "no controls"),
    ({"background_covariance": None}, "needs a 'background_covariance'"),
    ({"parameters": [{"name": "F", "bounds": [2.0, 1.0]}]}, "high > low"),
    ({"tao": {"method": "newton_raphson"}}, "method"),
    ({"windw": 3}, "Extra inputs"),
])
def test_var_config_refuses_bad_settings(change, message):
    with pytest.raises(ValidationError, match=message):
        VarAssimilationConfig(**{**BASE, **change})


def test_var_config_observation_times():
    cfg = VarAssimilationConfig(**{**BASE, "shift": 1})
    cfg.check_observation_times([0.1, 0.2, 0.3], 0.0)
    with pytest.raises(AssimilationError, match="observation time 0.45 lies outside the assimilated span"):
        cfg.check_observation_times([0.1, 0.2, 0.3, 0.45], 0.0)
    with pytest.raises(AssimilationError, match=r"window 1 \[0, 0.2\] has no observations"):
        cfg.check_observation_times([0.1, 0.3], 0.0)
    assert cfg.window_bounds(2, 0.0) == pytest.approx((0.0, 0.3))


def test_linear_model_config():
    cfg = LinearAdvectionDiffusionConfig(type="linear_advection_diffusion", n=32,
                                         diffusivity={"value": 2.0, "units": "cm^2/s"})
    model = LinearAdvectionDiffusion.from_config("lin_cfg", cfg, MPI.COMM_SELF)
    assert model.get_parameter("diffusivity") == pytest.approx(2e-4)
    assert model.parameters["diffusivity"].transform == "log"
    model.destroy()
    with pytest.raises(ValidationError, match="velocity needs units"):
        LinearAdvectionDiffusionConfig(type="linear_advection_diffusion", velocity={"value": 1.0, "units": "m"})
    with pytest.raises(ValidationError, match="diffusivity must be positive"):
        LinearAdvectionDiffusionConfig(type="linear_advection_diffusion",
                                       diffusivity={"value": -1.0, "units": "m^2/s"})
