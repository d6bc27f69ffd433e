"""The initial states' noise of a twin experiment (``assimilation.background_std``): one number, one per state
variable, or in a coupled campaign one per component and ``<component>.<variable>``; by default each coupled
component the mean error of the networks observing it; never on a component whose state is recomputed at every step
(a static solve). Until 2026-12-07 one number went on every entry of a coupled state: the tumour's network error
(cells/mm^3) became metres of noise on the static tissue, whose solve then diverged with advice to tune its KSP."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _tumour_mechanics(tmp_path: Path, background_std=None, cycles: int = 2) -> Path:
    """configs/tumour_mechanics.yaml on small grids with an ETKF of the tumour's k from five probes of N."""
    data = yaml.safe_load((ROOT / "configs" / "tumour_mechanics.yaml").read_text())
    data.pop("experiments", None)
    data.pop("decision", None)
    data["models"]["tumour"]["grid"]["shape"] = [24, 24]
    data["models"]["tumour"]["parameters"]["k"].update(prior={"dist": "lognormal", "median": 0.12, "sigma": 0.3},
                                                       estimable=True)
    data["timeline"]["end"] = 5.0 * cycles
    data["assimilation"] = {
        "method": "etkf", "N": 6, "seed": 2, "inflation": {"multiplicative": 1.05},
        "schedule": {"every": 1, "cycles": cycles},
        "observations": [{"type": "points", "model": "tumour", "variable": "N", "error_std": 2000.0,
                          "points": [[20, 20], [24, 20], [20, 24], [16, 20], [20, 16]]}]}
    if background_std is not None:
        data["assimilation"]["background_std"] = background_std
    data["resources"] = {"type": "local", "ranks": 1}
    data["outputs"] = {"directory": str(tmp_path / "run"), "checkpoint_seconds": 0}
    path = tmp_path / "tumour_mechanics.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _spread(path: Path):
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config import load_campaign

    cfg = load_campaign(path).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        return ctx.background_spread(cfg, model), dict(model.blocks), model.models["tumour"].grid.size
    finally:
        model.destroy()


def test_a_coupled_state_gets_noise_by_component_and_never_on_a_static_solve(tmp_path):
    """Default: the tumour gets the mean error of the network observing it (2000 cells/mm^3), the static tissue none;
    a mapping by component and variable is read per entry, and a static component's value is ignored."""
    spread, blocks, n_tumour = _spread(_tumour_mechanics(tmp_path))
    assert blocks["tumour"].stop - blocks["tumour"].start == n_tumour == 24 * 24
    assert np.all(spread[blocks["tumour"]] == 2000.0)
    assert np.all(spread[blocks["tissue"]] == 0.0)  # static: recomputed from the tumour's growth every window
    spread, blocks, _ = _spread(_tumour_mechanics(tmp_path, {"tumour": 10.0, "tumour.N": 3.0, "tissue": 5.0}))
    assert np.all(spread[blocks["tumour"]] == 3.0)  # the variable's own value over its component's
    assert np.all(spread[blocks["tissue"]] == 0.0)


def test_a_coupled_filter_campaign_with_a_static_tissue_runs_and_its_members_differ_in_the_tumour_only(tmp_path):
    """The campaign of probe 7 #4: with noise asked for the tissue too it runs (it failed with DIVERGED_DTOL), the
    prior members' tissue displacements equal the configured state, the tumour's differ by the asked spread."""
    from mpi4py import MPI

    from twin.campaign import layout
    from twin.campaign.online import run_online
    from twin.config import load_campaign
    from twin.io.checkpoint import CheckpointReader

    path = _tumour_mechanics(tmp_path, {"tumour": 50.0, "tissue": 5.0})
    (exp,) = run_online(load_campaign(path), MPI.COMM_SELF, tmp_path / "run")
    assert layout.checkpoint_cycles(exp)[-1] == 2
    _, blocks, _ = _spread(path)
    with CheckpointReader(layout.observations_file(exp)) as r:
        truth = np.asarray(r.read_array("truth"))
    # the nature run's initial state: tissue as configured (zero displacement), tumour perturbed
    assert np.all(truth[0][blocks["tissue"]] == 0.0)
    noise = truth[0][blocks["tumour"]] - _configured(path)[blocks["tumour"]]
    assert 30.0 < noise.std() < 70.0


def _configured(path: Path) -> np.ndarray:
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config import load_campaign
    from twin.models.contract import initial_state

    cfg = load_campaign(path).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        x0 = initial_state(model)
        whole = model.grid.allgather(x0).ravel()
        x0.destroy()
        return whole
    finally:
        model.destroy()


def test_a_single_model_takes_one_value_per_state_variable(tmp_path):
    """The shallow-water atmosphere (h, u, v interleaved per cell): ``{h: 0.03}`` puts 0.03 on every h and none on
    u and v; a name that is no variable is refused with the variables it has."""
    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config import load_campaign
    from twin.core.errors import ConfigError

    data = yaml.safe_load((ROOT / "configs" / "atmosphere.yaml").read_text())
    data.pop("experiments", None)
    data["assimilation"]["background_std"] = {"h": 0.03}
    path = tmp_path / "atmosphere.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_campaign(path).config
    model = ctx.build_model(cfg, MPI.COMM_SELF)
    try:
        spread = ctx.background_spread(cfg, model).reshape(-1, 3)
        assert spread.shape[0] == model.grid.size
        assert np.all(spread[:, 0] == 0.03) and np.all(spread[:, 1:] == 0.0)
        cfg.assimilation.background_std = {"eta": 0.03}  # past the file's check (a model without metadata)
        with pytest.raises(ConfigError, match=r"assimilation.background_std: \['eta'\] name no state variable of "
                                              r"model 'atmosphere'; it has h, u, v"):
            ctx.background_spread(cfg, model)
    finally:
        model.destroy()
    data["assimilation"]["background_std"] = {"h": 0.03, "eta": 0.03}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as refused:
        load_campaign(path)
    (line,) = refused.value.lines()
    assert re.search(r"atmosphere.yaml:\d+:\d+: assimilation.background_std: 'eta': no state variable; the keys it "
                     r"takes are h, u, v$", line), line


@pytest.mark.parametrize("value, message", [
    (-1.0, r"must be finite and >= 0 \(0: no noise\), got \[-1.0\]"),
    (float("nan"), r"Input should be a finite number; found not-a-number"),
    ({"tumour": float("inf")}, r"tumour: Input should be a finite number; found infinity"),
    ({}, r"background_std is an empty mapping"),
    ({"tumor": 1.0}, r"\['tumor'\] are not coupled components; components are \['tumour', 'tissue'\]"),
    ({"tissue.v_x": 1.0}, r"'tissue.v_x': no state variable or component; the keys it takes are tumour, "
                          r"tissue, tumour.N, tissue.u_x, tissue.u_y"),
])
def test_bad_spreads_are_refused_at_their_line(tmp_path, value, message):
    from twin.config import load_campaign
    from twin.core.errors import ConfigError

    path = _tumour_mechanics(tmp_path, value)
    with pytest.raises(ConfigError) as refused:
        load_campaign(path)
    (line,) = refused.value.lines()  # one problem, one line (not a union member's complaint beside it)
    assert re.search(r"tumour_mechanics.yaml:\d+:\d+: assimilation.background_std(: background standard deviations |"
                     r"\.|: )" + message, line), line


def test_an_implicitly_coupled_filter_campaign_resumes_bitwise(tmp_path):
    """A resume of the tumour-tissue ETKF (implicit coupling, IQN-ILS) from its checkpoint of cycle 2 of 4 gives
    outputs equal to the uninterrupted run's bitwise. Until 2026-12-07 they differed from the first resumed cycle
    (~1e-9 relative, found by a probe): each member's first coupling iterate used a stress the tissue exported with
    the growth strain the member advanced before had left it, which a resume does not have."""
    import xarray as xr
    from mpi4py import MPI

    from twin.campaign import layout
    from twin.campaign.online import run_online
    from twin.config import load_campaign

    outputs = {}
    for name in ("whole", "resumed"):
        (tmp_path / name).mkdir()
        path = _tumour_mechanics(tmp_path / name, {"tumour": 50.0}, cycles=4)
        (exp,) = run_online(load_campaign(path), MPI.COMM_SELF, tmp_path / name / "run")
        if name == "resumed":  # what a run killed after checkpoint 2 leaves: resumed by the same command
            for p in [layout.checkpoint_file(exp, c) for c in (3, 4)] + [layout.done_marker(exp)] + \
                     [exp / n for n in layout.OUTPUTS]:
                p.unlink(missing_ok=True)
            (exp,) = run_online(load_campaign(path), MPI.COMM_SELF, tmp_path / name / "run")
        outputs[name] = {n: xr.load_dataset(exp / n) for n in ("posterior.nc", "diagnostics.nc")}
    for n, ds in outputs["whole"].items():
        other = outputs["resumed"][n]
        for v in ds.data_vars:
            assert np.asarray(ds[v]).tobytes() == np.asarray(other[v]).tobytes(), (n, v)


def test_an_ensemble_that_starts_without_spread_is_warned_about(tmp_path, caplog):
    """``background_std: 0`` and no estimated parameter: every member starts the same and no analysis can move them
    (an ensemble without spread has no covariance); legal, so a WARNING that says what to change, not an error.
    With a parameter drawn from its prior the members differ and nothing is said."""
    import logging

    from mpi4py import MPI

    from twin.campaign import context as ctx
    from twin.config import load_campaign

    data = yaml.safe_load((ROOT / "configs" / "lorenz96_etkf.yaml").read_text())
    data["assimilation"]["background_std"] = 0
    for estimated in (False, True):
        data["models"]["l96"]["forcing"]["estimable"] = estimated
        path = tmp_path / f"l96_{estimated}.yaml"
        path.write_text(yaml.safe_dump(data))
        cfg = load_campaign(path).config
        model = ctx.build_model(cfg, MPI.COMM_SELF)
        caplog.clear()
        try:
            with caplog.at_level(logging.WARNING, logger="twin.campaign"):
                members = ctx.prior_ensemble(cfg, model, 4, "l96")
        finally:
            model.destroy()
        same = all(np.array_equal(m[0], members[0][0]) for m in members)
        assert same  # no state noise either way
        warned = [r.getMessage() for r in caplog.records if "start the same" in r.getMessage()]
        if estimated:
            assert not warned and len({float(m[1]["F"]) for m in members}) == 4
        else:
            assert warned == ["experiment l96: its 4 members start the same (no initial-state noise and no parameter "
                              "drawn from a prior): the ensemble has no spread and the analyses cannot change it; "
                              "give assimilation.background_std > 0 or estimate a parameter"]
