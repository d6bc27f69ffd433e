"""Campaign files: valid ones load; a corpus of broken ones each gets clear one-line errors with file:line.

Each broken case is the valid base file with one edit; the test checks the exit status of ``twin validate``, that
every error line names ``file:line``, that the expected words appear on the expected line, and that no traceback is
printed.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from twin.cli import main
from twin.config import load_campaign

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
schema_version: 1
campaign:
  name: corpus
  seed: 3
models:
  plate:
    type: heat
    grid:
      shape: [8, 8]
      extent: [[0.0, 1.0], [0.0, 1.0]]
      units: m
    parameters:
      kappa: {value: 1.0e-3, units: m^2/s}
    initial_condition: {kind: constant, value: 1.0}
    time: {dt: 0.5, units: s}
    solver: {ts_type: beuler}
observations:
  - name: probes
    type: points
    model: plate
    locations: [[0.5, 0.5]]
    every: 1.0
    error_std: 0.1
timeline:
  end: 2.0
  units: s
resources: {type: local, ranks: 1}
"""

# (id, old text, new text, expected line, words expected in the message)
CASES = [
    ("unknown-top-key", "timeline:", "timline:", 24, ["unknown key 'timline'", "did you mean 'timeline'"]),
    ("misspelled-nested", "      shape: [8, 8]", "      shpe: [8, 8]", 9, ["did you mean 'shape'", "allowed keys"]),
    ("wrong-type-list-item", "shape: [8, 8]", "shape: [8, eight]", 9, ["valid integer", "'eight'"]),
    ("wrong-type-scalar", "  seed: 3", "  seed: many", 4, ["valid integer"]),
    ("missing-section", "timeline:\n  end: 2.0\n  units: s\n", "", None, ["missing required key 'timeline'"]),
    ("missing-name", "  name: corpus\n", "", 2, ["missing required key 'name'"]),
    ("bad-units", "units: m^2/s}", "units: m^2/sx}", 13, ["unknown units", "m^2/sx"]),
    # found by trying: pint's AssertionError was all the message said
    ("malformed-units", "units: m^2/s}", "units: m^2/s//}", 13,
     ["unknown units 'm^2/s//' (not a unit expression: unit names and numbers joined by *, / and ^"]),
    ("incompatible-units", "  units: s\nresources", "  units: kg\nresources", 26, ["not a unit of time"]),
    ("parameter-units", "units: m^2/s}", "units: kg}", 13, ["kappa", "m^2/s"]),
    ("yaml-syntax", "shape: [8, 8]", "shape: [8, 8", 10, ["YAML syntax error"]),
    ("tab-indent", "    type: heat", "\ttype: heat", 7, ["YAML syntax error"]),
    ("duplicate-key", "  seed: 3", "  seed: 3\n  seed: 4", 5, ["duplicate key 'seed'", "line 4"]),
    ("python-object-tag", "  seed: 3", "  seed: !!python/object/apply:os.system ['echo pwned']", 4,
     ["tags that construct objects are not allowed"]),
    ("custom-tag", "  seed: 3", "  seed: !include /etc/passwd", 4, ["tags that construct objects are not allowed"]),
    ("unknown-model-type", "type: heat", "type: haet", 7, ["unknown type 'haet'", "did you mean 'heat'"]),
    ("ensemble-size", "resources:", "ensemble: {size: 4}\nresources:", 27, ["ensemble.size", "the ensemble size is assimilation.N: remove ensemble.size"]),
    ("end-before-start", "  end: 2.0", "  start: 5.0\n  end: 2.0", 26, ["must be after start"]),
    ("schema-version", "schema_version: 1", "schema_version: 7", 1, ["schema_version 7 is not supported"]),
    ("shell-injection", "resources: {type: local, ranks: 1}",
     "resources: {type: slurm, partition: 'debug; rm -rf ~'}", 27, ["not allowed", "batch scripts"]),
    ("unknown-observed-model", "    model: plate", "    model: plato", 20, ["'plato'", "models are ['plate']"]),
    ("extent-order", "[[0.0, 1.0], [0.0, 1.0]]", "[[1.0, 0.0], [0.0, 1.0]]", 10, ["hi > lo"]),
    ("solver-option-chars", "ts_type: beuler}", "ts_type: 'beuler`id`'}", 16, ["characters PETSc options never use"]),
    ("walltime-format", "resources: {type: local, ranks: 1}",
     "resources: {type: slurm, partition: debug, walltime: 1 hour}", 27, ["walltime", "hours:minutes:seconds"]),
    ("task-unit", "resources: {type: local, ranks: 1}", "resources: {type: local, ranks: 1, task: experiments}", 27,
     ["resources.task: 'experiments' is not allowed here; did you mean 'experiment'?", "'auto', 'member' or "
      "'experiment'"]),
    ("observation-extra-key", "    error_std: 0.1", "    error_std: 0.1\n    eror: 2", 24, ["unknown key 'eror'"]),
    ("negative-obs-error", "error_std: 0.1", "error_std: -0.1", 23, ["greater than 0"]),
    ("top-level-list", None, "- 1\n- 2\n", 1, ["mapping of sections"]),
    ("empty-file", None, "", 1, ["empty"]),
    # any placeholder but {name} was kept in the path literally (a directory named 'runs/{nam}')
    ("unknown-placeholder", "resources: {type: local, ranks: 1}\n",
     "resources: {type: local, ranks: 1}\noutputs: {directory: 'runs/{nam}'}\n", 28,
     ["directory 'runs/{nam}'", "the one placeholder is {name}"]),
]


def _write(tmp_path, name, text):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_base_is_valid(tmp_path):
    cfg = load_campaign(_write(tmp_path, "base", BASE)).config
    assert cfg.models["plate"].grid.shape == [8, 8]
    assert cfg.timeline.end == 2.0 and cfg.resources.type == "local"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_file_gets_clear_errors(tmp_path, capsys, case):
    name, old, new, line, words = case
    if old is None:
        text = new
    else:
        assert old in BASE, f"test case {name}: {old!r} not in base file"
        text = BASE.replace(old, new, 1)
    path = _write(tmp_path, name, text)
    status = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert lines, "no error printed"
    assert "Traceback" not in err
    for ln in lines:
        assert ln.startswith(f"error: {path}"), ln
    pattern = re.escape(str(path)) + (rf":{line}:\d+:" if line is not None else r"(:\d+:\d+)?:")
    matching = [ln for ln in lines if re.match(r"error: " + pattern, ln)]
    assert matching, f"no error on line {line}: {lines}"
    for w in words:
        assert any(w in ln for ln in matching), f"{w!r} not in {matching}"


def test_all_problems_reported_at_once(tmp_path, capsys):
    text = BASE.replace("shape: [8, 8]", "shpe: [8, 8]").replace("  seed: 3", "  seed: x").replace(
        "timeline:", "timline:")
    assert main(["validate", str(_write(tmp_path, "many", text))]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_every_shipped_config_validates(capsys):
    files = sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    assert files
    assert main(["validate", *files]) == 0
    assert capsys.readouterr().out.count(": ok") == len(files)


def test_cli_prints_no_traceback_in_a_real_process(tmp_path):
    bad = _write(tmp_path, "bad", BASE.replace("  seed: 3", "  seed: !!python/name:os.system"))
    out = subprocess.run([sys.executable, "-m", "twin.cli", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: {bad}:4:")
