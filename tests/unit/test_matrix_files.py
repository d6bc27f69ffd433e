"""Observation files named inside ``experiments.matrix`` values are relative to the campaign file, like those of
``assimilation.observations`` (each experiment's copy of the campaign lives in its own directory)."""

from pathlib import Path

import pytest
import yaml

from twin.config.loader import load_campaign
from twin.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _campaign(tmp_path: Path, second: str) -> Path:
    (tmp_path / "data").mkdir()
    for name in ("a.nc", "b.nc"):
        (tmp_path / "data" / name).write_bytes(b"")
    net = {"type": "file", "file": "data/a.nc", "variables": {"x": {"name": "x_obs", "units": "1"}}}
    data = yaml.safe_load((ROOT / "configs" / "lorenz96_etkf.yaml").read_text())
    data["assimilation"]["observations"] = [net]
    data["assimilation"]["background_std"] = 1.0
    data["decision"].pop("guardrails", None)
    other = dict(data["assimilation"], observations=[dict(net, file=second)], N=24)
    data["experiments"] = {"matrix": {"assimilation": [data["assimilation"], other]}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_matrix_observation_files_resolve_against_the_campaign_file(tmp_path):
    loaded = load_campaign(_campaign(tmp_path, "data/b.nc"))
    values = loaded.config.experiments.matrix["assimilation"]
    assert [v["observations"][0]["file"] for v in values] == [str(tmp_path / "data" / n) for n in ("a.nc", "b.nc")]


def test_a_missing_matrix_observation_file_is_one_line_naming_its_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_campaign(_campaign(tmp_path, "data/gone.nc"))
    (line,) = str(info.value).splitlines()
    assert "experiments.matrix.assimilation[1].observations[0].file: observation file" in line
    assert str(tmp_path / "data" / "gone.nc") in line and "relative to the campaign file" in line
