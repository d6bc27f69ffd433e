"""Observation networks of ``assimilation.observations``: each type builds the operator of its module, several stack
in order with their row slices, positions are converted from ``units``, and bad networks are refused by name."""

import numpy as np
import pytest
from mpi4py import MPI
from pydantic import TypeAdapter, ValidationError

from twin.config.observation_networks import networks_type
from twin.core.errors import ObservationError
from twin.kinds.lorenz96.model import Lorenz96
from twin.kinds.shallow_water import ShallowWater
from twin.kinds.structure import Material, StructureModel
from twin.kinds.tumour import TumourModel, box_tissue
from twin.core.grid import Grid
from twin.kinds.shallow_water.observations import StationOperator, SwathOperator
from twin.kinds.tumour.imaging import CellularityOperator
from twin.observations.networks import build
from twin.kinds.structure.gauges import strain_gauge_matrix

COMM = MPI.COMM_SELF
NETWORKS = TypeAdapter(networks_type())
L = 1.2e6


@pytest.fixture(scope="module")
def sw():
    m = ShallowWater("sw_net", COMM, (12, 8), ((0, L), (0, 0.8 * L)), dt=60.0, mean_depth=1000.0,
                     initial=("balanced_turbulence", {"speed": 10.0, "seed": 4}))
    yield m
    m.destroy()


def test_networks_are_typed():
    nets = NETWORKS.validate_python({"type": "points", "points": [[1.0], [2.0]], "error_std": 0.5})
    assert len(nets) == 1 and nets[0].type == "points"
    with pytest.raises(ValidationError, match=r"observation networks are typed: write a list such as \[\{type: "
                                              "all_points"):
        NETWORKS.validate_python({"all_points": True, "component": 0})
    with pytest.raises(ValidationError, match="must be positive"):
        NETWORKS.validate_python([{"type": "stations", "points": [[0, 0]], "error_std": {"h": -1.0}}])
    with pytest.raises(ValidationError, match="one error_std"):
        NETWORKS.validate_python([{"type": "swath", "start": [0, 0], "heading": 0, "length": 1, "spacing": 1,
                                   "error_std": [1.0, 2.0]}])
    with pytest.raises(ValidationError):
        NETWORKS.validate_python([{"type": "radar", "points": [[0, 0]]}])


def test_stations_and_swath_stack_in_km(sw):
    nets = NETWORKS.validate_python([
        {"type": "stations", "name": "synop", "points": [[100, 200], [600, 500]], "units": "km",
         "variables": ["h", "u"], "error_std": {"h": 2.0, "u": 1.0}},
        {"type": "swath", "start": [0, 50], "heading": 30, "length": 900, "spacing": 100, "width": 200,
         "n_across": 3, "units": "km", "error_std": 1.5, "edge_error_factor": 2.0},
    ])
    obs = build(nets, sw)
    st = StationOperator(sw.grid, np.array([[1e5, 2e5], [6e5, 5e5]]), ["h", "u"], {"h": 2.0, "u": 1.0})
    swath = SwathOperator(sw.grid, (0.0, 5e4), 30.0, 9e5, 1e5, 2e5, 3, ["h"], 1.5, 2.0)
    n1 = st.n_obs
    assert obs.network_slices == {"synop": slice(0, n1), "swath_1": slice(n1, n1 + swath.n_obs)}
    assert abs(obs.matrix[:n1] - st.matrix).max() == 0 and abs(obs.matrix[n1:] - swath.matrix).max() == 0
    assert np.array_equal(obs.error_std, np.concatenate([st.error_std, swath.error_std]))
    assert obs.error_std[:2].tolist() == [2.0, 2.0] and obs.error_std[2:4].tolist() == [1.0, 1.0]
    assert np.allclose(obs.locations[:n1], st.locations)
    st.destroy()
    swath.destroy()


def test_bad_networks_are_named(sw):
    def refuse(spec, match):
        with pytest.raises(ObservationError, match=match):
            build(NETWORKS.validate_python(spec), sw)

    refuse([{"type": "stations", "points": [[100, 2000]], "units": "km"}],
           r"observations\[0\]\.points\[0\] = \[100.0, 2000.0\] \(in km\) lies outside the model domain")
    refuse([{"type": "stations", "points": [[1, 2]], "units": "s"}], r"observations\[0\]\.units")
    refuse([{"type": "stations", "points": [[1e5, 2e5]], "variables": ["w"]}], r"observations\[0\] \(stations\)")
    refuse([{"type": "points", "points": [[1e5, 2e5]], "variable": "q"}], "not a state variable")
    refuse([{"type": "all_points", "name": "a"}, {"type": "all_points", "name": "a"}], "used twice")
    refuse([{"type": "imaging"}], "has no parameter 'theta'")


def test_imaging_and_points():
    grid = Grid(COMM, (12, 10), ((0, 12), (0, 10)), name="tum_net")
    values = dict(D_white=0.5, D_grey=0.1, k=0.1, theta=2.0, alpha=0.05, alpha_beta=10.0, kappa=0.0, half_life=1.0)
    model = TumourModel("tum_net", COMM, grid, box_tissue(grid.shape[::-1]), values, dt=0.5,
                        initial=lambda x, y: 0.5 * np.exp(-((x - 6) ** 2 + (y - 5) ** 2) / 8.0))
    obs = build(NETWORKS.validate_python([{"type": "imaging", "resolution": [2, 2], "error_std": 0.05}]), model)
    ref = CellularityOperator(grid, 2.0, 0.05, [2, 2], None, model.tissue.mask)
    assert obs.n_obs == ref.n_obs == 30 and abs(obs.matrix - ref.matrix).max() == 0
    x = model.initial_state()
    # block means of N / theta: the same numbers through the stacked matrix and the PETSc operator
    assert np.allclose(obs.matrix @ grid.allgather(x).ravel(), ref.apply(x))
    ref.destroy()
    x.destroy()
    model.destroy()
    l96 = Lorenz96("l96_net", COMM, n=40)
    pts = build(NETWORKS.validate_python([{"type": "points", "points": [[2.5], [39.5]], "error_std": [0.5, 1.0]}]), l96)
    assert np.allclose(pts.matrix.toarray()[1, [39, 0]], 0.5) and pts.error_std.tolist() == [0.5, 1.0]
    l96.destroy()


def test_strain_gauges_take_degrees():
    steel = Material(E0=200e9, nu=0.3, rho=7800.0)
    m = StructureModel("s_net", COMM, (4, 12), ((0, 0.5), (0, 3.0)), steel, {"bottom": "clamped"})
    nets = NETWORKS.validate_python([{"type": "strain_gauges", "points": [[0.0, 0.5], [0.5, 0.5]], "angles": [90],
                                      "error_std": 1e-6}])
    obs = build(nets, m)
    ref = strain_gauge_matrix(m.grid, np.array([[0.0, 0.5], [0.5, 0.5]]), np.full(2, np.pi / 2))
    assert obs.n_obs == 2 and abs(obs.matrix - ref).max() == 0
    with pytest.raises(ObservationError, match=r"points\[1\]"):
        build(NETWORKS.validate_python([{"type": "strain_gauges", "points": [[0, 0.5], [0.7, 0.5]],
                                         "angles": [0, 90]}]), m)
    m.destroy()


def test_component_network_embedded_at_its_block_and_fault_offsets():
    """``model:`` networks act on their component's block of a whole (coupled) state; faults add a drift."""
    whole, a, b = (Lorenz96(n, COMM, n=k) for n, k in (("whole_net", 50), ("a_net", 20), ("b_net", 30)))
    try:
        nets = NETWORKS.validate_python([
            {"type": "points", "model": "a", "points": [[3.0]], "error_std": 0.5},
            {"type": "points", "model": "b", "points": [[4.0], [7.0]], "error_std": 1.0,
             "fault": {"sensor": 1, "drift_per_cycle": 0.25, "start": 2}}])
        obs = build(nets, whole, {"a": (a, 0), "b": (b, 20)})
        x = np.arange(50, dtype=float)
        assert obs.matrix.shape == (3, 50)
        np.testing.assert_allclose(obs.matrix @ x, [3.0, 24.0, 27.0])
        from twin.observations.networks import fault_offsets

        off = fault_offsets(nets, obs, 4)
        np.testing.assert_allclose(off[:, 2], [0.0, 0.0, 0.25, 0.5])
        assert not off[:, :2].any()
        with pytest.raises(ObservationError, match="name the component"):
            build([nets[0].model_copy(update={"model": None})], whole, {"a": (a, 0), "b": (b, 20)})
        with pytest.raises(ObservationError, match="not a component"):
            build([nets[0].model_copy(update={"model": "c"})], whole, {"a": (a, 0)})
    finally:
        for m in (whole, a, b):
            m.destroy()
