"""Experiments: a matrix of settings expands one campaign into validated, deterministically named experiments."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from twin.campaign import layout
from twin.campaign.experiments import expand, experiment_names, prepare_experiments, set_path
from twin.campaign.status import status
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign
from twin.core.errors import ConfigError

CAMPAIGN = textwrap.dedent("""\
    schema_version: 1
    campaign: {name: l96x, seed: 1}
    models:
      l96:
        type: lorenz96
        n: 8
        dt: 0.05
        forcing: {value: 8.0, prior: {dist: normal, mean: 8.0, std: 0.5}, estimable: true}
    timeline: {start: 0.0, end: 1.0, units: s}
    assimilation:
      method: etkf
      N: 4
      inflation: {multiplicative: 1.02}
      schedule: {every: 1, cycles: 2}
      observations: [{type: all_points, component: 0, error_std: 1.0}]
    """)


@pytest.fixture
def loaded(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN)
    return load_campaign(path)


def test_matrix_expands_to_the_product_with_values_applied(loaded):
    matrix = {"assimilation.inflation.multiplicative": [1.0, 1.05], "campaign.seed": [1, 2, 3]}
    exps = expand(loaded.config, matrix)
    assert len(exps) == 6
    assert [e.name for e in exps][:3] == ["multiplicative-1_seed-1", "multiplicative-1_seed-2",
                                          "multiplicative-1_seed-3"]
    assert len({e.name for e in exps}) == 6
    for e in exps:
        assert e.config.assimilation.inflation.multiplicative == e.overrides["assimilation.inflation.multiplicative"]
        assert e.config.campaign.seed == e.overrides["campaign.seed"]
        assert e.config.assimilation.N == 4  # untouched keys survive
        assert yaml.safe_load(e.text) == e.data
    # deterministic: the same matrix gives the same names and data
    again = expand(loaded.config, matrix)
    assert [(e.name, e.data) for e in again] == [(e.name, e.data) for e in exps]


def test_no_matrix_is_one_experiment_named_after_the_campaign(loaded):
    (e,) = expand(loaded.config, {})
    assert e.name == "l96x" and e.overrides == {}


def test_bad_path_and_bad_value_are_reported_per_experiment(loaded):
    with pytest.raises(ConfigError) as err:
        expand(loaded.config, {"assimilation.inflaton.multiplicative": [1.0]})
    text = str(err.value)
    assert "inflaton" in text and "experiment" in text
    with pytest.raises(ConfigError) as err:
        expand(loaded.config, {"assimilation.inflation.multiplicative": [1.0, -2.0]})
    text = str(err.value)
    assert "multiplicative--2" in text and "positive" in text
    assert "multiplicative-1:" not in text  # the good experiment is not reported


def test_set_path_indexes_lists_and_refuses_values():
    data = {"a": [{"b": 1}, {"b": 2}], "c": 3}
    set_path(data, "a.1.b", 5)
    set_path(data, "d.e", 7)
    assert data["a"][1]["b"] == 5 and data["d"] == {"e": 7}
    with pytest.raises(KeyError, match="index 4"):
        set_path(data, "a.4.b", 1)
    with pytest.raises(KeyError, match="is a value"):
        set_path(data, "c.x", 1)


def test_names_stay_unique_when_sanitised_values_collide():
    names = experiment_names({"campaign.description": ["a b", "a/b"]}, [("a b",), ("a/b",)])
    assert len(set(names)) == 2
    assert all(layout.EXPERIMENTS not in n and "/" not in n and " " not in n for n in names)


def test_a_list_of_sections_is_named_by_their_labels():
    """A matrix over the observation networks names each experiment by its networks' types, not by a slug of
    the whole list (which held the file's path and was cut at 120 characters)."""
    networks = [[{"type": "file", "file": "/data/a.csv"}], [{"type": "points", "points": [[1.0]]},
                                                             {"type": "all_points"}]]
    names = experiment_names({"assimilation.observations": networks}, [(v,) for v in networks])
    assert names == ["observations-file", "observations-points-all-points"]


@pytest.mark.parametrize("matrix, message", [
    ({"assimilation..N": [4]}, "dotted key path"),
    ({"experiments.retries": [1]}, "cannot be varied"),
    ({"campaign.seed": [1, 1]}, "twice"),
    ({"assimilation.inflation": [{}], "assimilation.inflation.rtps": [0.5]}, "overlap"),
])
def test_experiments_section_is_validated(matrix, message):
    with pytest.raises(ValueError, match=message):
        ExperimentsConfig(matrix=matrix)


def test_policy_defaults_and_limits():
    p = ExperimentsConfig()
    assert (p.retries, p.on_member_failure, p.min_members) == (1, "drop", 2)
    with pytest.raises(ValueError):
        ExperimentsConfig(on_member_failure="ignore")
    with pytest.raises(ValueError):
        ExperimentsConfig(min_members=1)


def test_prepare_is_idempotent_and_refuses_another_campaign(loaded, tmp_path):
    policy = ExperimentsConfig(matrix={"campaign.seed": [1, 2]})
    run = tmp_path / "run"
    dirs = prepare_experiments(loaded, run, policy)
    assert [d.name for d in dirs] == ["seed-1", "seed-2"]
    assert (run / "campaign.yaml").read_text() == CAMPAIGN
    assert prepare_experiments(loaded, run, policy) == dirs
    st = status(run)
    assert [e.state for e in st.experiments] == ["pending", "pending"]
    assert st.experiments[0].n_cycles == 2 and st.experiments[0].n_members == 4
    other = tmp_path / "other.yaml"
    other.write_text(CAMPAIGN.replace("N: 4", "N: 5"))
    with pytest.raises(ConfigError, match=r"different experiment than .*other.yaml expands to \(assimilation.N: 4 "
                                          r"then, 5 now\): continue a run with the campaign file that started it"):
        prepare_experiments(load_campaign(other), run, policy)


def test_a_run_resumes_with_other_resources_and_description_but_not_another_computation(tmp_path, caplog):
    """Found in review: any change of the experiment refused a resume, so a Slurm batch job that ran out of walltime
    could not be run again with a longer one (nor with more workers, nor a new description). Those say how the
    experiment runs, not what it computes: the run resumes, experiment.yaml takes the new values and the log says
    which changed; a change of what it computes is still refused, named past the resources that changed with it."""
    first = tmp_path / "c.yaml"
    first.write_text(CAMPAIGN + "resources: {type: local, workers: 1}\n")
    run = tmp_path / "run"
    (d,) = prepare_experiments(load_campaign(first), run)
    again = tmp_path / "again.yaml"
    again.write_text(CAMPAIGN.replace("seed: 1}", "seed: 1, description: rerun after the walltime}")
                     + "resources: {type: local, workers: 2, launcher: mpiexec}\noutputs: {checkpoint_every: 5}\n")
    with caplog.at_level("INFO", logger="twin.campaign"):
        assert prepare_experiments(load_campaign(again), run) == [d]
    held = load_campaign(layout.config_file(d)).config
    assert held.resources.workers == 2 and held.campaign.description == "rerun after the walltime"
    assert held.outputs.checkpoint_every == 5  # checkpoints more or less often: the same outputs (found by a probe)
    assert ("experiment l96x: how it runs changed since it was set up (resources.workers: 1 then, 2 now); it resumes "
            "with the new values") in caplog.text
    assert (run / "campaign.yaml").read_text() == first.read_text()  # the run's own campaign file stays

    other = tmp_path / "other.yaml"
    other.write_text(CAMPAIGN.replace("N: 4", "N: 5") + "resources: {type: local, workers: 3}\n")
    with pytest.raises(ConfigError, match=r"\(assimilation.N: 4 then, 5 now\): continue a run with the campaign file "
                                          r"that started it \(only resources, campaign.description and "
                                          r"outputs.checkpoint_every / checkpoint_seconds may change\)"):
        prepare_experiments(load_campaign(other), run)
    assert load_campaign(layout.config_file(d)).config.resources.workers == 2


def test_a_refused_run_changes_nothing_and_matrix_json_keeps_every_experiment(loaded, tmp_path):
    """Found by a probe: a run refused (exit 2) because an existing experiment differed had already rewritten
    matrix.json with its own matrix (and made its new experiments' folders): the finished run's twin status then
    named an experiment that never was, and the report lost the real ones' matrix values. A run with another
    compatible matrix adds its experiments to matrix.json instead of replacing the earlier ones."""
    import json

    run = tmp_path / "run"
    prepare_experiments(loaded, run, ExperimentsConfig(matrix={"assimilation.inflation.multiplicative": [1.1, 1.2]}))
    before = (run / "matrix.json").read_bytes()
    changed = tmp_path / "changed.yaml"
    changed.write_text(CAMPAIGN.replace("N: 4", "N: 5"))
    with pytest.raises(ConfigError, match="different experiment"):
        prepare_experiments(load_campaign(changed), run,
                            ExperimentsConfig(matrix={"assimilation.inflation.multiplicative": [1.1, 1.5]}))
    assert (run / "matrix.json").read_bytes() == before
    assert sorted(p.name for p in (run / "experiments").iterdir()) == ["multiplicative-1.1", "multiplicative-1.2"]
    prepare_experiments(loaded, run, ExperimentsConfig(matrix={"assimilation.inflation.multiplicative": [1.3]}))
    assert json.loads((run / "matrix.json").read_text()) == {
        f"multiplicative-{v}": {"assimilation.inflation.multiplicative": v} for v in ("1.1", "1.2", "1.3")}
