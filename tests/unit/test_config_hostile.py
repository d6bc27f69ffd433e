"""Hostile and careless campaign files: each is refused up front with one clear line per problem, fast.

The classes of issue 20: files that broke the validator itself (NUL byte, recursive alias, deep nesting, "billion
laughs", devices and pipes), silent coercion (YAML 1.1 booleans and octals, quoted numbers, NaN and infinity, an
unquoted walltime), sizes that would exhaust the machine (ensemble, grid, PETSc index width, cycles past the
timeline), a deflating inflation, run directories outside the working directory, newlines in batch-script values, and
PETSc options swallowed by twin's own short flags.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from twin.cli import RUN_OPTIONS, _parser, _split_run, main
from twin.config.limits import LimitsConfig, check_limits
from twin.config.loader import MAX_BYTES, load_campaign
from twin.config.messages import MESSAGE_CHARS
from twin.config.sections import model_configs
from twin.core.errors import ConfigError, OutputError

ROOT = Path(__file__).resolve().parents[2]

HEAT = textwrap.dedent("""\
    schema_version: 1
    campaign:
      name: hostile
      seed: 3
      description: a plate
      sensitive: false
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
    """)

L96_ETKF = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
MECHANICS = (ROOT / "configs" / "tumour_mechanics.yaml").read_text()
L96 = textwrap.dedent("""\
    schema_version: 1
    campaign: {name: l96x, seed: 1}
    models:
      l96: {type: lorenz96, n: 40, dt: 0.05}
    timeline: {start: 0.0, end: 10.0, units: s}
    assimilation:
      method: etkf
      N: 20
      inflation: {multiplicative: 1.02}
      schedule: {every: 2, cycles: 50}
      observations: [{type: all_points, component: 0, error_std: 1.0}]
    """)

FOURDVAR = textwrap.dedent("""\
    schema_version: 1
    campaign: {name: var, seed: 1}
    models:
      l96: {type: lorenz96, n: 40, dt: 0.05}
    timeline: {start: 0.0, end: 2.0, units: s}
    assimilation:
      method: 4dvar
      model: l96
      obs_interval: 0.1
      window: 2
      shift: 2
      cycles: 8
      background_covariance: {kind: diagonal, std: 1.0}
      observations: [{type: all_points, component: 0, error_std: 1.0}]
    """)

SLURM = "resources: {type: slurm, partition: debug, walltime: \"00:20:00\"}"


def _validate(tmp_path, capsys, text: str, name: str = "c") -> tuple[int, list[str], float, Path]:
    """``twin validate`` on ``text``: exit status, error lines, seconds, the file."""
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    t0 = time.perf_counter()
    status = main(["validate", str(path)])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, [ln for ln in err.splitlines() if ln.strip()], seconds, path


def _refused(tmp_path, capsys, text, line: int | None, words: list[str], name: str = "c") -> list[str]:
    """Assert one clear refusal: exit 2, every line ``error: file:line:col: ...`` (at ``line``), ``words`` in it."""
    status, lines, seconds, path = _validate(tmp_path, capsys, text, name)
    assert status == 2 and lines, lines
    where = rf":{line}:\d+: " if line is not None else r"(:\d+:\d+)?: "
    for ln in lines:
        assert ln.startswith(f"error: {path}"), ln
        assert len(ln) < MESSAGE_CHARS + 300, f"{len(ln)} characters"
    hits = [ln for ln in lines if re.match("error: " + re.escape(str(path)) + where, ln)]
    assert hits, f"no error on line {line}: {lines}"
    for w in words:
        assert any(w in ln for ln in hits), f"{w!r} not in {hits}"
    assert seconds < 2.0, f"validate took {seconds:.2f} s"
    return hits


# -- the validator itself never breaks -------------------------------------------------------------------------------
LAUGHS = "lol: &a [" + ", ".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi"))
WIDE_LAUGHS = "a: &a [" + ",".join(["x"] * 60) + "]\n" + "".join(
    f"{c}: &{c} [" + ",".join([f"*{p}"] * 60) + "]\n" for p, c in zip("abc", "bcd"))

BREAKERS = [
    ("nul-byte", HEAT.replace("  seed: 3", "  se\x00ed: 3"), 4, ["U+0000", "NUL"]),
    ("control-char", HEAT.replace("a plate", "a \x1b[31mplate"), 5, ["U+001B"]),
    ("self-alias", HEAT.replace("  seed: 3", "  seed: 3\n  loop: &a [*a]"), 5, ["*a", "inside the node it names"]),
    ("deep-nesting", HEAT.replace("  seed: 3", "  seed: " + "[" * 5000 + "]" * 5000), 4,
     ["nesting deeper than 64"]),
    ("deep-block-nesting", HEAT.replace("  seed: 3", "  seed:\n" + "".join("  " * (i + 2) + f"k{i}:\n"
                                                                             for i in range(200))), None,
     ["nesting deeper than 64"]),
    ("billion-laughs", LAUGHS, 6, ["aliases nested 5 deep"]),
    ("wide-laughs", WIDE_LAUGHS, 3, ["expanding the aliases gives more than"]),
    ("undefined-alias", HEAT.replace("  seed: 3", "  seed: *nothing"), 4, ["no anchor"]),
    ("two-documents", HEAT + "---\nschema_version: 1\n", 30, ["one YAML document"]),
    ("complex-key", HEAT.replace("  seed: 3", "  [a, b]: 3"), 4, ["plain names"]),
    ("binary-tag", HEAT.replace("a plate", "!!binary aGVsbG8="), 5, ["tags that construct objects are not allowed"]),
    ("set-tag", HEAT.replace("  seed: 3", "  seed: !!set {a, b}"), 4, ["tags that construct objects"]),
    ("not-utf8", HEAT.encode().replace(b"a plate", b"a pl\xe4te"), 5, ["not UTF-8"]),
    ("top-level-scalar", "just text\n", 1, ["mapping of sections"]),
    ("tab-indent", HEAT.replace("  name: hostile", "\tname: hostile"), 3,
     ["cannot start any token (a tab: YAML indents with spaces only)"]),
    ("tab-inside", HEAT.replace("  seed: 3", "\tseed: 3"), 4, ["a tab character that violates indentation"]),
]


@pytest.mark.parametrize("case", BREAKERS, ids=[c[0] for c in BREAKERS])
def test_files_that_broke_the_validator_get_one_clear_error(tmp_path, capsys, case):
    _, text, line, words = case
    _refused(tmp_path, capsys, text, line, words)


def test_worst_case_files_of_four_megabytes_are_refused_within_two_seconds(tmp_path, capsys):
    m = MAX_BYTES - 4096
    cases = {
        "flat-list": ("x: [" + "1," * (m // 2 - 4) + "1]", "more than 100000 values"),
        "brackets": ("x: " + "[" * (m // 2 - 4) + "]" * (m // 2 - 4), "nesting deeper"),
        "dashes": ("x:\n" + "- " * (m // 2 - 4) + "x", None),
        "keys": ("".join(f"k{i}: {i}\n" for i in range(m // 16)), "more than 100000 values"),
        "long-line": ("x: " + "a" * (m - 10) + "\n", None),
        "long-key": ("k" * (m - 10) + ": 1\n", None),
        "wrong-values": (HEAT.replace("locations: [[0.5, 0.5]]",
                                      "locations: [" + ",".join(["[a, b]"] * 33000) + "]"), "more problems"),
    }
    for name, (text, word) in cases.items():
        assert len(text.encode()) <= MAX_BYTES, name
        status, lines, seconds, _ = _validate(tmp_path, capsys, text, name)
        assert status == 2 and lines, name
        assert seconds < 2.0, f"{name}: {seconds:.2f} s"
        assert len(lines) <= 52, name
        if word:
            assert any(word in ln for ln in lines), (name, lines[:3])


def test_devices_pipes_and_large_files_are_refused_without_reading(tmp_path, capsys):
    status, lines, _, _ = _validate_path(capsys, "/dev/zero")
    assert status == 2 and "character device" in lines[0] and "regular files" in lines[0]
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    status, lines, _, _ = _validate_path(capsys, str(link))
    assert status == 2 and "character device" in lines[0]
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    status, lines, _, _ = _validate_path(capsys, str(big))
    assert status == 2 and "larger than" in lines[0]
    status, lines, _, _ = _validate_path(capsys, str(tmp_path))
    assert status == 2 and "is a directory" in lines[0]


def _validate_path(capsys, path: str):
    t0 = time.perf_counter()
    status = main(["validate", path])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err.splitlines(), time.perf_counter() - t0, path


def test_a_fifo_without_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "campaign.yaml"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-m", "twin.cli", "validate", str(fifo)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {fifo}: is a pipe (FIFO)"), out.stderr
    assert "Traceback" not in out.stderr


# -- strict types ----------------------------------------------------------------------------------------------------
STRICT = [
    ("yaml11-on", HEAT, "  seed: 3", "  seed: on", 4, ["campaign.seed", "boolean true in YAML 1.1", "quote it"]),
    ("yaml11-yes-for-N", L96, "N: 20", "N: yes", 8, ["assimilation.N", "YAML 1.1", "write true"]),
    ("octal", HEAT, "  seed: 3", "  seed: 010", 4, ["leading zero", "octal number 8", "YAML 1.2 as 10"]),
    ("quoted-number", HEAT, "  seed: 3", "  seed: \"1e3\"", 4,
     ["valid integer", "the text '1e3'", "remove the quotes"]),
    ("quoted-float", HEAT, "dt: 0.5", "dt: '0.5'", 17, ["valid number", "the text '0.5'", "remove the quotes"]),
    ("float-for-int", L96, "N: 20", "N: 1e3", 8, ["valid integer", "the number 1000.0", "whole number 1000"]),
    ("bool-for-int", L96, "N: 20", "N: true", 8, ["valid integer", "the boolean true", "not numbers"]),
    ("number-for-bool", HEAT, "sensitive: false", "sensitive: 1", 6, ["valid boolean", "write true or false"]),
    ("number-for-text", HEAT, "description: a plate", "description: 5", 5, ["valid string", "quote it"]),
    ("schema-version-text", HEAT, "schema_version: 1", "schema_version: \"1\"", 1,
     ["schema_version is the number 1", "the text '1'", "without quotes"]),
    ("schema-version-bool", HEAT, "schema_version: 1", "schema_version: true", 1, ["the boolean true"]),
    ("end-infinite", HEAT, "  end: 2.0", "  end: .inf", 27, ["timeline.end", "finite number", "infinity (.inf)"]),
    ("dt-nan", HEAT, "dt: 0.5", "dt: .nan", 17, ["models.plate.time.dt", "not-a-number (.nan)"]),
    ("std-nan", HEAT, "error_std: 0.1", "error_std: .nan", 25, ["observations[0].error_std", "finite"]),
    ("size-overflow", HEAT, "  end: 2.0", "  end: 1e400", 27, ["finite number"]),
    ("list-of-nan", L96, "error_std: 1.0", "error_std: [.nan, 1.0]", 11, ["error_std[0]", "finite number"]),
    ("union-text", L96, "error_std: 1.0", "error_std: x", 11, ["a number, a list or a mapping", "'x'"]),
    ("walltime-sexagesimal", HEAT, "resources: {type: local, ranks: 1}",
     "resources: {type: slurm, partition: debug, walltime: 12:00:00}", 29,
     ["resources.walltime", "base 60", "(43200)", "quote it (\"12:00:00\")"]),
    ("walltime-unicode-digits", HEAT, "resources: {type: local, ranks: 1}",
     "resources: {type: slurm, partition: debug, walltime: \"\u0661\u0662:00:00\"}", 29, ["walltime", "hours:minutes:seconds"]),
    ("digit-groups", HEAT, "  seed: 3", "  seed: 1_000", 4, ["digit groups", "write 1000"]),
    ("huge-integer", HEAT, "  seed: 3", "  seed: 123456789012345678901234567890", 4, ["too large"]),
    ("units-power-tower", HEAT, "units: m^2/s}", "units: 9^9^9^9}", 15, ["kappa.units", "exponent"]),
]


@pytest.mark.parametrize("case", STRICT, ids=[c[0] for c in STRICT])
def test_no_silent_coercion(tmp_path, capsys, case):
    _, base, old, new, line, words = case
    assert old in base
    hits = _refused(tmp_path, capsys, base.replace(old, new, 1), line, words)
    assert len(hits) == 1, hits  # one value, one line (end: 1e400 of float | str said a second, 'valid string')


def test_quoted_walltime_and_yaml12_numbers_are_read_as_meant(tmp_path):
    text = (HEAT.replace("resources: {type: local, ranks: 1}", SLURM.replace('"00:20:00"', '"12:00:00"'))
            .replace("1.0e-3", "1e-3").replace("dt: 0.5", "dt: !!float 1"))
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    cfg = load_campaign(path).config
    assert cfg.resources.walltime == "12:00:00"
    assert cfg.models["plate"].parameters["kappa"].value == 1e-3
    assert cfg.models["plate"].time.dt == 1.0


def test_long_values_are_cut_in_messages(tmp_path, capsys):
    long = "x" * 100_000
    hits = _refused(tmp_path, capsys, HEAT.replace("  name: hostile", f"  name: {long}"), 3,
                    ["campaign.name", "(100000 characters)"])
    assert all(len(h) < 400 for h in hits)
    hits = _refused(tmp_path, capsys, HEAT.replace("  seed: 3", "  seed: 3\n  " + "k" * 1000 + ": 1"), 5,
                    ["unknown key", "allowed keys"], name="key")
    assert all(len(h) < MESSAGE_CHARS + 200 for h in hits)
    _refused(tmp_path, capsys, HEAT.replace("ts_type: beuler", "ts_type: '" + "a;" * 50_000 + "'"), 18,
             ["characters PETSc options never use", "characters)"], name="solver")


# -- upper bounds -----------------------------------------------------------------------------------------------------
LIMITS = [
    ("ensemble-N", L96, "N: 20", "N: 1000000000", 8,
     ["assimilation.N", "1000000000 ensemble members exceed the limit of 1000", "limits.ensemble_members"]),
    ("ranks-per-member-twice", L96, "  N: 20", "  N: 20\n  ranks_per_member: 2", 9,
     ["assimilation.ranks_per_member", "ensemble.ranks_per_member: move it there"]),
    ("grid-40000", HEAT, "shape: [8, 8]", "shape: [40000, 40000]", 11,
     ["models.plate.grid.shape", "1600000000 cells exceed the limit of 16777216", "limits.grid_cells"]),
    ("grid-index-width", HEAT + "limits: {grid_cells: 1000000000000, index_bits: 32}\n", "shape: [8, 8]",
     "shape: [50000, 50000]", 11,
     ["32-bit indices", "2147483647", "--with-64-bit-indices"]),
    ("cycles-past-end", L96, "cycles: 50", "cycles: 5000", 10,
     ["assimilation.schedule.cycles", "5000 cycles", "holds 100", "extend timeline.end"]),
    ("4dvar-cycles-past-end", FOURDVAR, "cycles: 8", "cycles: 1000000000", 12,
     ["assimilation.cycles", "holds 10"]),
    ("one-cycle-past-the-timeline", L96, "schedule: {every: 2, cycles: 50}", "schedule: {every: 1000, cycles: 5}",
     10, ["holds 0): one cycle is longer than the whole timeline: shorten the cycle or extend timeline.end to at "
          "least 50 time units"]),
    ("deflating-inflation", L96, "multiplicative: 1.02", "multiplicative: 0.5", 9,
     ["at least 1", "got 0.5", "collapses"]),
    ("time-steps", HEAT, "dt: 0.5", "dt: 1.0e-7", 17,
     ["models.plate.time.dt", "takes 2e+07 steps", "limit of 10000000 (limits.time_steps)"]),
    ("output-volume", HEAT.replace("shape: [8, 8]", "shape: [4096, 4096]"), "  end: 2.0",
     "  end: 2.0\n  output_every: 0.001", 28, ["timeline.output_every", "GB of fields", "limits.output_gigabytes"]),
    ("observation-times", HEAT, "every: 1.0", "every: 1.0e-9", 24, ["observation times", "more than 1000000"]),
    ("swath-points", L96, "observations: [{type: all_points, component: 0, error_std: 1.0}]",
     "observations: [{type: swath, start: [0, 0], heading: 0, length: 1.0e12, spacing: 1, variables: [x]}]", 11,
     ["swath has 1e+12 x 1 points", "larger spacing"]),
    ("min-members", L96 + "experiments: {min_members: 50}\n", "N: 20", "N: 20", 12,
     ["experiments.min_members", "min_members (50) exceeds the ensemble size"]),
    ("tao-iterations", FOURDVAR, "cycles: 8", "cycles: 8\n  tao: {max_iterations: 2147483648}", 13,
     ["assimilation.tao.max_iterations", "less than or equal to 1000000"]),
    ("solver-options", HEAT, "solver: {ts_type: beuler}",
     "solver: {" + ", ".join(f"x{i}: 1" for i in range(600)) + "}", 18,
     ["models.plate.solver", "600 PETSc options, more than the 100 a component may set", "512 options in all"]),
    # found by trying: each passed validate, then the run gave a traceback (OverflowError), an internal error or a
    # refusal without file and line
    ("grid-extent-overflows", HEAT, "extent: [[0.0, 1.0], [0.0, 1.0]]", "extent: [[0.0, 1.0e308], [0.0, 1.0]]", 12,
     ["models.plate.grid.extent[0]", "reaches beyond 1e+15 m"]),
    ("grid-units-not-a-length", HEAT, "      units: m\n", "      units: s\n", 13,
     ["models.plate.grid.units", "grid units 's' are not a length"]),
    ("negative-diffusivity", HEAT, "kappa: {value: 1.0e-3, units: m^2/s}", "kappa: {value: -1, units: m^2/s}", 15,
     ["models.plate.parameters.kappa.value", "diffusivity kappa must be positive, got -1 m^2/s"]),
    ("negative-lognormal-value", L96, "l96: {type: lorenz96, n: 40, dt: 0.05}",
     "l96: {type: lorenz96, n: 40, dt: 0.05, forcing: {value: -8.0, prior: {dist: lognormal, median: 8.0, "
     "sigma: 0.1}}}", 4, ["value -8 is not positive, but the lognormal prior gives positive values only"]),
    # found by a probe (2026-12-07): each passed validate, then the run ran out of memory (the kernel killed it)
    ("coupling-windows", MECHANICS, "window: {value: 5, units: day}",
     "window: {value: 1.0e-9, units: day}", 50,
     ["coupling.window.value", "makes 6e+10 coupling windows over the timeline's 60 day, more than 1000000"]),
    ("coupling-window-units", MECHANICS, "window: {value: 5, units: day}", "window: {value: 5, units: kg}", 50,
     ["coupling.window.units", "units 'kg' are not convertible to the time units of component 'tumour' (day)"]),
    ("ensemble-gigabytes", L96.replace("N: 20", "N: 500"), "n: 40,", "n: 4000000,", 8,
     ["assimilation.N", "500 members of 4000000 values each take 16 GB", "limit of 8 GB (limits.ensemble_gigabytes)"]),
    ("replicate-seeds", L96 + "experiments: {replicates: 2}\n", "seed: 1}", "seed: 9223372036854775807}", 2,
     ["campaign.seed", "take the seeds 9223372036854775807 to 9223372036854775808", "at most 9223372036854775806"]),
    # found by a second probe (2026-12-07): each validated, then the decision was for another horizon than stated,
    # a "0 % interval", or no decision at all without a word
    ("horizon-below-a-step", L96_ETKF, "horizon: 1.0 ", "horizon: 0.01 ", 43,
     ["decision.horizon", "a horizon of 0.01 (model time units) is shorter than one step of model 'l96' (0.05)"]),
    ("credible-levels-twice", L96_ETKF, "credible_levels: [0.05, 0.5, 0.95]", "credible_levels: [0.5, 0.5, 0.5]", 44,
     ["decision.credible_levels", "increasing, each given once"]),
    ("qois-twice", L96_ETKF, "qois: [mean, energy]", "qois: [energy, energy, mean]", 42,
     ["decision.qois", "['energy'] listed more than once"]),
    ("limits-without-qois", L96_ETKF, "qois: [mean, energy]", "qois: []", 45,
     ["decision.exceedance_limits", "limits for ['energy'], but qois lists no QoI to predict"]),
    ("structure-dt-units", (ROOT / "configs" / "wind_structure.yaml").read_text(),
     "time: {dt: {value: 0.02, units: s}, initial: rest}", "time: {dt: {value: 0.02}, initial: rest}", 45,
     ["models.mast.time.dt.units", "not a time"]),
]


@pytest.mark.parametrize("case", LIMITS, ids=[c[0] for c in LIMITS])
def test_sizes_that_would_exhaust_the_machine_are_refused(tmp_path, capsys, case):
    _, base, old, new, line, words = case
    assert old in base
    _refused(tmp_path, capsys, base.replace(old, new, 1), line, words)


def test_limits_can_be_raised_by_those_who_mean_it(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(L96.replace("N: 20", "N: 2000") + "limits: {ensemble_members: 5000}\n")
    assert load_campaign(path).config.assimilation.N == 2000
    path.write_text(HEAT.replace("shape: [8, 8]", "shape: [5000, 5000]") + "limits: {grid_cells: 25000000}\n")
    with pytest.raises(ConfigError, match=r"25000000 cells on 1 rank\(s\) per model run are 25000000 per rank, more "
                                          r"than the limit of 16777216 \(limits.grid_cells_per_rank\): run each model "
                                          r"on at least 2 ranks \(resources.ranks\)"):
        load_campaign(path)
    path.write_text(HEAT.replace("shape: [8, 8]", "shape: [5000, 5000]")
                    + "limits: {grid_cells: 25000000, grid_cells_per_rank: 25000000}\n")
    assert load_campaign(path).config.models["plate"].grid.cells == 25_000_000
    path.write_text(L96.replace("N: 20", "N: 500").replace("n: 40,", "n: 4000000,")
                    + "limits: {ensemble_gigabytes: 20}\n")
    assert load_campaign(path).config.limits.ensemble_gigabytes == 20
    path.write_text(L96.replace("multiplicative: 1.02", "multiplicative: 1.0").replace("cycles: 50", "cycles: 100"))
    load_campaign(path)  # exactly as many cycles as the timeline holds, no inflation


def test_every_model_section_says_its_size_and_time_step():
    from twin.models.registry import model_types

    classes = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in model_configs()}
    for name, model in model_types().items():
        cfg = classes[name]
        assert cfg.time_units == model.time_units, name
        assert "grid_size" in cfg.__dict__ and "fixed_step" in cfg.__dict__, name
        assert cfg.step_key, name
    shipped = sorted((ROOT / "configs").glob("*.yaml"))
    for f in shipped:
        cfg = load_campaign(f).config
        assert check_limits(cfg) == [], f
        for m in cfg.models.values():
            size = m.grid_size()
            assert size.unknowns >= size.cells >= 1
    assert LimitsConfig().ensemble_members == 1000


# -- output confinement ------------------------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("TWIN_OUTPUT_ROOT", raising=False)
    return work


def test_outputs_directory_outside_the_working_directory_is_refused(workdir, tmp_path, capsys):
    text = HEAT + "outputs: {directory: ../../etc}\n"
    hits = _refused(workdir, capsys, text, 30, ["outputs.directory", "'../../etc'", "outside the working directory",
                                                 "--allow-outside"])
    assert str(tmp_path.parent / "etc") in hits[0]
    path = workdir / "c.yaml"
    assert main(["validate", str(path), "--allow-outside", str(tmp_path.parent)]) == 0
    capsys.readouterr()
    assert "TWIN_OUTPUT_ROOT" not in os.environ  # the allowance lasts for the command only


def test_run_directory_is_confined_and_symlinks_out_are_refused(workdir, tmp_path, monkeypatch):
    from twin.driver import run_directory

    path = workdir / "c.yaml"
    path.write_text(HEAT)
    loaded = load_campaign(path)
    assert run_directory(loaded) == (workdir / "runs" / "hostile").resolve()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ConfigError, match="outside the working directory"):
        run_directory(loaded, str(outside))
    with pytest.raises(ConfigError, match="outside the working directory"):
        run_directory(loaded, "../elsewhere/run")
    (workdir / "runs").symlink_to(outside)
    with pytest.raises(ConfigError) as err:
        run_directory(loaded)
    assert "through a symbolic link" in str(err.value) and str(path) in str(err.value)
    monkeypatch.setenv("TWIN_OUTPUT_ROOT", str(outside))
    assert run_directory(loaded) == (outside / "hostile").resolve()
    assert run_directory(loaded, str(outside / "x")) == (outside / "x").resolve()


def test_prepare_run_directory_refuses_links_that_leave_it(workdir, tmp_path):
    from twin.io.provenance import prepare_run_directory

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = workdir / "run"
    run.mkdir()
    (run / "checkpoint").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link"):
        prepare_run_directory(run)
    experiment = workdir / "run2" / "experiments" / "e1"
    experiment.parent.mkdir(parents=True)
    experiment.symlink_to(outside)
    with pytest.raises(OutputError, match="outside"):
        prepare_run_directory(experiment)
    assert list(outside.iterdir()) == []
    inside = workdir / "real"
    inside.mkdir()
    (workdir / "alias").symlink_to(inside)
    assert prepare_run_directory(workdir / "alias").is_dir()  # a link within the same folder is harmless


def test_twin_run_writes_nothing_outside(workdir, tmp_path, capsys):
    path = workdir / "c.yaml"
    path.write_text(HEAT)
    assert main(["run", str(path), "-o", "../outside-run"]) == 2
    err = capsys.readouterr().err
    assert "outside the working directory" in err and "Traceback" not in err
    assert not (tmp_path / "outside-run").exists()


def test_a_run_directory_name_that_is_not_utf8_is_refused_before_anything_is_made(workdir, capsys):
    """Found by a probe: ``-o $'runs/bad\\xffbyte'`` started, logging tracebacks followed, then UnicodeEncodeError."""
    path = workdir / "c.yaml"
    path.write_text(HEAT)
    assert main(["run", str(path), "-o", "bad\udcffbyte"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: {path}: run directory {workdir}/bad\\xffbyte is not valid UTF-8 (twin writes it into its logs and "
        "files as UTF-8): choose a name of UTF-8 characters (-o)"]
    assert sorted(p.name for p in workdir.iterdir()) == ["c.yaml"]


def test_a_horizon_between_steps_is_recorded_as_forecast(workdir):
    """decision.json said the horizon asked for while the forecast went a whole number of steps: 0.07 with steps of
    0.05 is one step. The record says the horizon forecast and the one asked for, and the log says so."""
    import json

    path = workdir / "c.yaml"
    path.write_text(L96_ETKF.replace("cycles: 30}", "cycles: 3}").replace("horizon: 1.0 ", "horizon: 0.07 "))
    assert main(["run", str(path), "-o", "run", "--quiet"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (workdir / "run").rglob("decision.json")]
    assert record["horizon"] == pytest.approx(0.05) and record["horizon_requested"] == 0.07
    assert record["fans"]["energy"]["times"][-1] == pytest.approx(record["time"] + 0.05)
    assert "WARNING twin.campaign: decision.horizon 0.07 is 1.4 model steps of 0.05: the prediction is for 0.05 " \
           "after the last analysis" in (workdir / "run" / "twin.log").read_text()


def test_experiment_folders_that_became_links_out_are_refused_on_resume(workdir, tmp_path, capsys):
    """A finished run's experiment folder, or its checkpoint/, moved elsewhere and replaced by a link: the rerun
    refuses in one line and writes nothing there (found by a probe: posterior.nc and new checkpoints were written
    through the link, exit 0; only new experiment folders were checked)."""
    import shutil

    path = workdir / "c.yaml"
    path.write_text(L96.replace("cycles: 50", "cycles: 3"))
    assert main(["run", str(path), "-o", "run"]) == 0
    exp = workdir / "run" / "experiments" / "l96x"
    for link, holder in ((exp, exp.parent), (exp / "checkpoint", exp)):
        outside = tmp_path / f"moved-{link.name}"
        shutil.move(link, outside)
        link.symlink_to(outside)
        (outside / "posterior.nc").unlink(missing_ok=True)
        before = sorted(outside.rglob("*"))
        capsys.readouterr()
        assert main(["run", str(path), "-o", "run"]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert err == [f"error: {link} is a symbolic link to {outside}, outside {holder}: twin does not write "
                       "through links that leave the run directory; remove the link or give the real directory "
                       "(allowed with --allow-outside)"], err
        assert sorted(outside.rglob("*")) == before
        link.unlink()
        shutil.move(outside, link)


# -- batch-script values ----------------------------------------------------------------------------------------------
CONTROL = [
    ("worker-init-newline", 'worker_init: ["source /opt/site/env.sh\\nrm -rf /scratch/shared"]', "'\\n'"),
    ("worker-init-cr", 'worker_init: ["source /opt/site/env.sh\\rrm -rf /scratch"]', "'\\r'"),
    ("partition-newline", 'partition: "debug\\n#SBATCH --uid=0"', "'\\n'"),
    ("account-nul", 'account: "proj\\0x"', "'\\x00'"),
    ("module-tab", 'modules: ["gcc\\t12"]', "'\\t'"),
    ("walltime-newline", 'walltime: "01:00:00\\n"', "'\\n'"),
]


@pytest.mark.parametrize("case", CONTROL, ids=[c[0] for c in CONTROL])
def test_control_characters_in_batch_script_values_are_refused(tmp_path, capsys, case):
    _, entry, shown = case
    given = "" if entry.startswith("partition") else "  partition: debug\n"
    text = HEAT.replace("resources: {type: local, ranks: 1}", "resources:\n  type: slurm\n" + given + "  " + entry)
    _refused(tmp_path, capsys, text, None, ["resources.", "control characters", shown])


def test_outputs_directory_with_a_newline_is_refused(tmp_path, capsys):
    _refused(tmp_path, capsys, HEAT + 'outputs: {directory: "runs/a\\nrm -rf ~"}\n', 30,
             ["outputs.directory", "control characters"])


def test_render_refuses_control_characters_from_any_source(tmp_path):
    from workflows.jobscripts import render

    res = SimpleNamespace(partition="debug", account=None, qos=None, walltime="00:10:00", modules=[],
                          worker_init=["source /opt/site/env.sh\nrm -rf /scratch/shared"], ranks=1, nodes=1,
                          launcher="srun")
    kwargs = dict(job_name="x", campaign_file=Path("c.yaml"), run_dir=tmp_path, workdir=tmp_path, log_dir=tmp_path)
    with pytest.raises(ConfigError, match="control characters"):
        render("single_run", res, **kwargs)
    res.worker_init, res.partition = [], "debug\n"
    with pytest.raises(ConfigError, match="control characters"):
        render("single_run", res, **kwargs)
    res.partition, res.walltime = "debug", "00:10:00\n"
    with pytest.raises(ConfigError, match="walltime"):
        render("single_run", res, **kwargs)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shipped_cluster_configs_render_scripts_that_bash_accepts(tmp_path):
    from twin.campaign.experiments import expand, experiments_section
    from workflows.jobscripts import TEMPLATES, render

    clusters = sorted((ROOT / "configs").glob("*_cluster.yaml"))
    assert clusters
    for f in clusters:
        loaded = load_campaign(f)
        cfg = loaded.config
        assert cfg.resources.type == "slurm", f
        names = [e.name for e in expand(cfg, experiments_section(cfg).matrix, filename=str(f))]
        for kind in TEMPLATES:
            script = render(kind, cfg.resources, job_name=f"twin-{cfg.campaign.name}", campaign_file=loaded.path,
                            run_dir=tmp_path / "run", workdir=tmp_path, log_dir=tmp_path / "slurm",
                            experiment_names=names)
            check = subprocess.run(["bash", "-n"], input=script.text, text=True, capture_output=True)
            assert check.returncode == 0, (f.name, kind, check.stderr)
            assert "#SBATCH --partition=" in script.text


# -- PETSc options after the campaign file ----------------------------------------------------------------------------
@pytest.mark.parametrize("words, ours, petsc", [
    (["c.yaml", "-options_left"], ["c.yaml"], ["-options_left"]),
    (["c.yaml", "-vec_type", "standard", "-o", "out"], ["c.yaml", "-o", "out"], ["-vec_type", "standard"]),
    (["-o", "out", "-v", "c.yaml", "-log_view", "-ts_dt", "-0.1"], ["-o", "out", "-v", "c.yaml"],
     ["-log_view", "-ts_dt", "-0.1"]),
    (["c.yaml", "--output=out", "-help"], ["c.yaml", "--output=out"], ["-help"]),
    (["c.yaml", "--", "-o", "x", "-v"], ["c.yaml"], ["-o", "x", "-v"]),
    (["c.yaml", "-verbose_flag", "-output_prefix", "p"], ["c.yaml"], ["-verbose_flag", "-output_prefix", "p"]),
])
def test_petsc_options_are_never_taken_for_twin_flags(words, ours, petsc):
    assert _split_run(words) == (ours, petsc)
    args = _parser().parse_args(["run", *ours])
    assert args.file == "c.yaml"
    assert args.output in (None, "out")


def test_petsc_options_before_the_file_and_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "-options_left", "c.yaml"])
    assert exit_.value.code == 2
    assert "PETSc options go after the campaign file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "c.yaml", "--out", "x"])
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", "--allow", "x", "c.yaml"])
    assert set(RUN_OPTIONS) >= {"-o", "--output", "-v", "--verbose", "--workflow", "--allow-outside"}


def test_petsc_options_reach_petsc_in_a_real_run(tmp_path):
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    env.pop("TWIN_OUTPUT_ROOT", None)
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", str(ROOT / "configs" / "quickstart.yaml"),
                          "-o", "run", "-options_left", "-vec_type", "standard"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done: outputs in" in out.stdout
    assert (tmp_path / "run").is_dir() and not (tmp_path / "ptions_left").exists()
    assert "-options_left" in out.stdout + out.stderr  # PETSc's option table lists it


def test_submit_output_outside_is_refused_before_anything_is_written(workdir, tmp_path, capsys):
    path = workdir / "c.yaml"
    path.write_text(HEAT.replace("resources: {type: local, ranks: 1}", SLURM))
    assert main(["submit", str(path), "-o", str(tmp_path / "elsewhere"), "--dry-run"]) == 2
    assert "outside the working directory" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()
    path.write_text(path.read_text() + "outputs: {directory: ../elsewhere}\n")
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert f"{path}:30:" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_submit_dry_run_writes_nothing(workdir, capsys):
    """``twin submit --dry-run`` prints the script of every experiment and creates no run directory (it created the
    run directory and one folder per experiment)."""
    path = workdir / "c.yaml"
    path.write_text(HEAT.replace("resources: {type: local, ranks: 1}", SLURM))
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["submit", str(path), "-o", "run", "--mode", "array", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH" in out and out.rstrip().endswith("(dry run: nothing was written)")
    assert sorted(p.name for p in workdir.iterdir()) == before
    # a run directory of another campaign: the dry run refuses it as the submit does (it printed the script)
    (workdir / "theirs").mkdir()
    (workdir / "theirs" / "campaign.yaml").write_text("schema_version: 1\ncampaign: {name: someone_else}\n")
    assert main(["submit", str(path), "-o", "theirs", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "holds campaign 'someone_else'" in err and "choose another run directory" in err, err
    assert sorted(p.name for p in (workdir / "theirs").iterdir()) == ["campaign.yaml"]


# -- positions through aliases, and files twin writes itself -----------------------------------------------------------
def test_a_problem_inside_an_aliased_node_points_at_the_anchor(tmp_path, capsys):
    text = HEAT.replace("    time: {dt: 0.5, units: s}", "    time: &t {dt: 0.5, units: s}").replace(
        "timeline:\n  end: 2.0\n  units: s", "timeline: *t")
    _refused(tmp_path, capsys, text, 17, ["timeline.dt", "unknown key 'dt'"])


@pytest.mark.parametrize("walltime, words", [
    ("02:00", ["is not [days-]hours:minutes:seconds", "Slurm reads \"02:00\" as 2 minutes"]),
    ("1-99:99:99", ["is not [days-]hours:minutes:seconds"]),
    ("1-12:00", ["is not [days-]hours:minutes:seconds"]),
    ("00:00:00", ["no time at all"]),
])
def test_walltime_is_one_form_meant_one_way(tmp_path, capsys, walltime, words):
    """Slurm reads "02:00" as 2 minutes and Parsl's SlurmProvider only hours:minutes:seconds ("02:00" and
    "1-12:00:00" crashed it when the workflow submitted a block): [days-]hours:minutes:seconds only."""
    line = HEAT.splitlines().index("resources: {type: local, ranks: 1}") + 1
    text = HEAT.replace("resources: {type: local, ranks: 1}", SLURM.replace('"00:20:00"', f'"{walltime}"'))
    _refused(tmp_path, capsys, text, line, ["walltime", *words])


@pytest.mark.parametrize("walltime, minutes", [("00:20:00", 20), ("1-12:00:00", 36 * 60), ("100:30:30", 6030.5)])
def test_walltime_as_parsl_reads_it(tmp_path, capsys, walltime, minutes):
    from parsl.utils import wtime_to_minutes

    from twin.config.schema import parsl_walltime

    text = HEAT.replace("resources: {type: local, ranks: 1}", SLURM.replace('"00:20:00"', f'"{walltime}"'))
    status, lines, _, _ = _validate(tmp_path, capsys, text)
    assert status == 0, lines
    assert wtime_to_minutes(parsl_walltime(walltime)) == int(minutes)


def test_campaign_text_written_by_twin_reads_back_equal(tmp_path):
    from twin.campaign.experiments import expand, experiments_section
    from twin.config.reader import read_yaml
    from twin.config.writer import dump_yaml

    tricky = {"walltime": ["01:00:00", "12:00:00", "1:30"], "text": ["1e3", "08", "1.0e5", "yes", "on", "010",
                                                                        "0o17", "1_000", ".inf", "true", "", "~"],
              "numbers": [1, -2, 0.5, 1e-300, 1e300], "flags": [True, False, None]}
    assert read_yaml(dump_yaml(tricky), "t")[0] == tricky
    for f in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_campaign(f).config
        for e in expand(cfg, experiments_section(cfg).matrix, filename=str(f)):
            out = tmp_path / "experiment.yaml"
            out.write_text(e.text)
            load_campaign(out)  # experiment.yaml as the workflow writes it validates again on the workers


def test_an_empty_output_directory_is_refused_not_replaced(tmp_path, capsys):
    """``-o "$RUN"`` with ``RUN`` unset: the run went to the YAML's directory without a word (found by trying)."""
    path = tmp_path / "c.yaml"
    path.write_text(HEAT)
    for command in (["run", str(path), "-o", ""], ["submit", str(path), "--dry-run", "--output", ""]):
        with pytest.raises(SystemExit) as stop:
            main(command)
        assert stop.value.code == 2
        assert "-o/--output is empty: give the run directory's name" in capsys.readouterr().err


def test_local_workers_are_bounded_by_this_machines_cores():
    """Found by a probe: ``resources: {type: local, workers: 1000}`` on 2 cores validated, and the workflow's 1000
    warm workers (about 0.2 GB each) ran the machine out of memory: the kernel's OOM killer, exit 137, no word."""
    from pydantic import ValidationError

    from twin.config.schema import LOCAL_WORKERS_PER_CORE, LocalResources, _cores

    most = LOCAL_WORKERS_PER_CORE * _cores()
    assert LocalResources(type="local", workers=most).workers == most
    with pytest.raises(ValidationError, match=rf"{most + 1} workers on this machine's {_cores()} core\(s\): at most "
                                              rf"{LOCAL_WORKERS_PER_CORE} per core \({most}\)"):
        LocalResources(type="local", workers=most + 1)
