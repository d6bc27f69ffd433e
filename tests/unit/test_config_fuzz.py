"""Fuzzing the campaign loader with Hypothesis: every shipped campaign with one thing broken is either valid or
refused with one clear :class:`~twin.core.errors.ConfigError`, never another exception, each within two seconds.

Three kinds of one-thing-broken, drawn from the shipped ``configs/*.yaml``:

* a value replaced (at any key path, containers included) by another: numbers at their limits, NaN, infinity,
  text with control characters, YAML 1.1 look-alikes, long strings, small lists and mappings;
* a number replaced by a number of the same type at the edges (0, negative, 2^31, 2^63 - 1, 1e308, 5e-324);
* a key deleted, or an unknown key added;
* the text of one line changed after its ``key:`` (plain scalars YAML 1.1 reads otherwise, aliases, tags, brackets).

"Clear" means: every problem names the file, a line and a column, and fits on a line; no "internal error" (the
loader's last guard against a validator's bug). The examples are derandomised (the same on every run) and the whole
test stays well within a minute.
"""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from twin.config.loader import load_campaign  # noqa: E402
from twin.config.reader import read_yaml  # noqa: E402
from twin.config.writer import dump_yaml  # noqa: E402
from twin.core.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TEXTS = {p.name: p.read_text() for p in CONFIGS}
DATA = {name: read_yaml(text, name)[0] for name, text in TEXTS.items()}
WORK = Path(tempfile.mkdtemp(prefix="twin-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)

SPECIAL_TEXT = ["yes", "on", "off", "010", "12:00:00", "1e3", "1_000", "0o17", "0x1F", ".nan", "-.inf", "", " ",
                "../../etc", "/etc", "a\nb", "a\rb", "a\x00b", "\t", "x" * 5000, "é" * 100, "$(reboot)", "`id`",
                "debug; rm -rf ~", "{name}", "m^2/s", "9^9^9^9", "kg/m^3", "1/s", "true", "null", "~", "-", "*a",
                "&a", "!!python/name:os.system", "letkf", "points", "heat", "s", "day"]
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, 1, 2, -1, 2**31, 2**31 - 1, 2**63, 10**9, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5, 1.5, 1e9]),
    st.text(max_size=20),
    st.sampled_from(SPECIAL_TEXT),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=3), max_size=3),
    st.dictionaries(st.sampled_from(["type", "value", "units", "name", "x", "kind", "method"]), SCALARS,
                    max_size=3),
)
RAW = ["yes", "on", "No", "010", "0o17", "0b101", "1_000", "12:00:00", "1:30", ".nan", ".inf", "-.inf", "1e999",
       "&a [*a]", "*undefined", "!!python/object/apply:os.system ['true']", "!include other.yaml", "!!binary eA==",
       "[[[[", "]]", "{a: 1, a: 2}", "|", ">", "'unclosed", "\"esc \\x00 ape\"", "- a\n- b", "[1, 2, 3]",
       "{}", "[]", "~", "", "- - - -", "? [a]\n: b", "\t1", "@reserved", "`backtick`", "%TAG ! tag:x,2000:"]


def _paths(data, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


PATHS = {name: _paths(data) for name, data in DATA.items()}


def _parent(data, path):
    for p in path[:-1]:
        data = data[p]
    return data


def _number_at(data, path) -> bool:
    v = _parent(data, path)[path[-1]]
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: the numbers of each campaign, and values at the edges of what numbers can be (same type: int stays int)
NUMBER_PATHS = {name: [p for p in PATHS[name] if _number_at(DATA[name], p)] for name in DATA}
EDGE_INTS = st.one_of(st.sampled_from([0, -1, 1, 2, 2**31 - 1, 2**31, 2**53, 2**63 - 1, -2**63, 10**9]),
                      st.integers(min_value=-2**63, max_value=2**63 - 1))
EDGE_FLOATS = st.one_of(st.sampled_from([0.0, -0.0, -1.0, 1e-308, 5e-324, 1e308, -1e308, 1.7976931348623157e308,
                                         1e-9, 1e9, 0.999999, 1.000001]),
                        st.floats(allow_nan=False, allow_infinity=False))
KEY_LINES = {name: [i for i, ln in enumerate(text.splitlines()) if ": " in ln and not ln.lstrip().startswith("#")]
             for name, text in TEXTS.items()}



def _mutated(data_strategy) -> tuple[str, str]:
    """(description, campaign text) with one thing broken."""
    draw = data_strategy.draw
    name = draw(st.sampled_from(sorted(TEXTS)), label="config")
    kind = draw(st.sampled_from(["set", "set", "number", "delete", "add", "raw"]), label="mutation")
    if kind == "raw":
        lines = TEXTS[name].splitlines()
        i = draw(st.sampled_from(KEY_LINES[name]), label="line")
        key, _, _ = lines[i].partition(": ")
        raw = draw(st.sampled_from(RAW), label="raw")
        lines[i] = f"{key}: {raw}"
        return f"{name} line {i + 1}: {lines[i][:80]!r}", "\n".join(lines) + "\n"
    data = copy.deepcopy(DATA[name])
    paths = NUMBER_PATHS[name] if kind == "number" else PATHS[name]
    path = draw(st.sampled_from(paths), label="path")
    parent = _parent(data, path)
    if kind == "number":
        parent[path[-1]] = draw(EDGE_INTS if isinstance(parent[path[-1]], int) else EDGE_FLOATS, label="number")
    elif kind == "set":
        parent[path[-1]] = draw(VALUES, label="value")
    elif kind == "delete":
        del parent[path[-1]]
    else:
        target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
        if not isinstance(target, dict):
            target = data
        target[draw(st.sampled_from(["extra", "N", "type", "units", "cycles", "shape", "x" * 300]), label="key")] = \
            draw(VALUES, label="value")
    return f"{name} {kind} {path}", dump_yaml(data)


def _check(description: str, text: str) -> None:
    path = WORK / "campaign.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    t0 = time.perf_counter()
    try:
        load_campaign(path)
    except ConfigError as exc:
        lines = exc.lines()
        assert lines, description
        for problem, line in zip(exc.problems, lines):
            assert problem.file == str(path), (description, line)
            assert problem.line is not None and problem.column is not None, (description, line)
            assert "internal error" not in line, (description, line)
            assert "\n" not in line and len(line) < 1200, (description, len(line))
    seconds = time.perf_counter() - t0
    assert seconds < 2.0, (description, seconds)


@settings(max_examples=400, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(st.data())
def test_one_field_broken_is_valid_or_one_clear_config_error(data):
    description, text = _mutated(data)
    _check(description, text)


def test_the_fuzzer_starts_from_valid_campaigns():
    for name in TEXTS:
        load_campaign(ROOT / "configs" / name)
    assert sum(len(p) for p in PATHS.values()) > 500
