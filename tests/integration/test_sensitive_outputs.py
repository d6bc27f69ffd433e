"""A sensitive campaign (``campaign.sensitive: true``) leaves nothing readable by others and names no host, user or
absolute path: every file twin writes in the run directory is ``0600`` and every directory ``0700``, and neither the
text files (twin.log, driver.json, tasks.jsonl, flags.jsonl, decision.json, the markers, the YAML copies) nor the
attributes and strings of the HDF5 and NetCDF files contain the host name, the user name, the home directory or the
absolute temporary path of the run.

The campaign exercises every kind of output: two experiments (one fails: ``failed.json``), guardrails
(``flags.jsonl``), a decision (``decision.json``), a member dropped by the failure policy (a ``.failed`` marker), the
free run, and a resume of the finished run (which appends to twin.log and the task logs).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import stat
import time
from pathlib import Path

import h5py
import pytest

from campaign_case import l96_campaign
from twin.campaign import layout
from twin.config.experiments import ExperimentsConfig
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(300)

# with seed 5 the prior forcing of member 3 is 123 (its forecast diverges in cycle 0: dropped); the matrix's
# inflation of 1e200 overflows the analysis (the ETKF's eigendecomposition fails: that experiment alone fails,
# failed.json)
CAMPAIGN = l96_campaign("sens", seed=5, forcing="{value: 8.0, prior: {dist: lognormal, median: 8.0, sigma: 1.2}, "
                        "estimable: true}", N=6, every=8, cycles=2, extra="""\
    decision:
      qois: [energy]
      horizon: 0.5
      guardrails: {window: 2, policy: exclude}
    """).replace("campaign: {name: sens, seed: 5}", "campaign: {name: sens, seed: 5, sensitive: true}")
POLICY = ExperimentsConfig(matrix={"assimilation.inflation.multiplicative": [1.05, 1.0e200]}, retries=0,
                           on_member_failure="drop")
GOOD, BAD = "multiplicative-1.05", "multiplicative-1e+200"
TEXT = (".json", ".jsonl", ".log", ".yaml", ".failed")


def _run(loaded, run):
    from mpi4py import MPI

    from twin.campaign.online import run_online

    run_online(loaded, MPI.COMM_SELF, run, experiments=POLICY)


def _word(name: str) -> re.Pattern:
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(name) + r"(?![A-Za-z0-9])")


def _identifying(user: str, host: str) -> list[re.Pattern]:
    """Patterns that name the host, or the user in the ways a user is named (a path component, ``user@``, a value of
    its own): a user name can be an ordinary word ("root" in "root-mean-square error") and is not searched alone."""
    u = re.escape(user)
    return [_word(host), _word(host.split(".")[0]), re.compile(r"[/~]" + u + r"(?![A-Za-z0-9])"),
            re.compile(r"(?<![A-Za-z0-9])" + u + r"[/@]"), re.compile(r"(?:^|[:=]\s*|\"|@)" + u + r"(?:$|\")")]


def _hdf5_strings(path: Path) -> list[str]:
    """Every attribute value and string dataset of an HDF5 (or NetCDF-4) file, as text."""
    out: list[str] = []

    def text(value) -> str:
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if hasattr(value, "dtype") and value.dtype.kind in "OSU":
            return " ".join(text(v) for v in value.ravel())
        return str(value)

    def visit(name, obj):
        out.extend(f"{name}@{k}: {text(v)}" for k, v in obj.attrs.items())
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OSU":
            out.append(f"{name}: {text(obj[()])}")

    with h5py.File(path, "r") as f:
        visit("/", f)
        f.visititems(visit)
    return out


def test_sensitive_run_leaves_nothing_readable_or_identifying(tmp_path):
    path = tmp_path / "sens.yaml"
    path.write_text(CAMPAIGN)
    loaded = load_campaign(path)
    run = tmp_path / "run"
    _run(loaded, run)
    _run(loaded, run)  # a resume: the finished experiment is skipped, the failed one tried again

    good, bad = layout.experiment_dir(run, GOOD), layout.experiment_dir(run, BAD)
    # the campaign did produce every kind of output this test is about
    expected = [run / "twin.log", run / "driver.json", run / "campaign.yaml", good / "done.json",
                good / "decision.json", good / "flags.jsonl", good / "tasks.jsonl", good / "free_run.nc",
                good / "posterior.nc", layout.failed_marker(good, 0, 3), bad / "failed.json", bad / "tasks.jsonl"]
    assert [p for p in expected if not p.is_file()] == []
    assert "Eigenvalues did not converge" in layout.read_json(bad / "failed.json")["reason"]

    host, user, home = socket.gethostname(), getpass.getuser(), os.path.expanduser("~")
    absolute = {str(tmp_path), os.path.realpath(tmp_path)}
    words = _identifying(user, host)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    wrong_mode, leaks, files = [], [], 0
    for dirpath, dirnames, filenames in os.walk(run):
        for name in dirnames:
            p = Path(dirpath) / name
            if stat.S_IMODE(p.stat().st_mode) != 0o700:
                wrong_mode.append(f"{p.relative_to(run)}/ {oct(stat.S_IMODE(p.stat().st_mode))}")
        for name in filenames:
            p = Path(dirpath) / name
            files += 1
            if stat.S_IMODE(p.stat().st_mode) != 0o600:
                wrong_mode.append(f"{p.relative_to(run)} {oct(stat.S_IMODE(p.stat().st_mode))}")
            raw = p.read_bytes()
            # long strings: a byte-level search over binary files as well cannot hit by chance
            leaks += [f"{p.relative_to(run)}: {a}" for a in absolute | {home + "/"} if a.encode() in raw]
            if p.suffix in TEXT:
                texts = [raw.decode("utf-8")]
            elif h5py.is_hdf5(p):
                texts = _hdf5_strings(p)
            else:
                texts = []
            for t in texts:
                leaks += [f"{p.relative_to(run)}: {w.pattern} in {t[max(0, m.start() - 40):m.end() + 40]!r}"
                          for w in words for m in w.finditer(t)]
    assert wrong_mode == []
    assert leaks == []
    assert files > 20  # every kind of file a run writes was searched (one file per cycle online)

    # structured files: no host field at all (not merely a redacted one)
    assert "host" not in json.loads((run / "driver.json").read_text())
    records = [json.loads(line) for line in (good / "tasks.jsonl").read_text().splitlines()]
    assert len(records) > 5 and all("host" not in r for r in records)
    # twin.log names files relative to the run directory
    log = (run / "twin.log").read_text()
    assert "online on 1 rank(s): 2 experiment(s) in ." in log
    assert f"outputs in experiments/{GOOD}" in log and f"experiment {GOOD} finished earlier" in log


def _modes(run: Path) -> list[str]:
    """Every directory below ``run`` that is not ``0700`` and every file that is not ``0600``."""
    wrong = []
    for dirpath, dirnames, filenames in os.walk(run):
        for name, want in [(d, 0o700) for d in dirnames] + [(f, 0o600) for f in filenames]:
            mode = stat.S_IMODE((Path(dirpath) / name).lstat().st_mode)
            if mode != want:
                wrong.append(f"{(Path(dirpath) / name).relative_to(run)} {oct(mode)}")
    return wrong


def test_sensitive_files_are_private_from_creation(tmp_path, monkeypatch):
    """Nothing is made owner-only afterwards: with the final sealing (:func:`twin.io.atomic.seal_private`) disabled
    and a umask of 022, every file and directory the run created (decision.json, checkpoint directories, markers,
    NetCDF and HDF5 files) is still 0600/0700, and while the run goes on no file or directory ever grants anything to
    group or others (a watcher thread looks every few milliseconds, temporary files included)."""
    import threading

    import twin.io.atomic

    monkeypatch.setattr(twin.io.atomic, "seal_private", lambda root: 0)
    path = tmp_path / "sens.yaml"
    path.write_text(CAMPAIGN)
    run = tmp_path / "run"
    seen: dict[str, int] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for dirpath, dirnames, filenames in os.walk(run):
                for name in dirnames + filenames:
                    p = os.path.join(dirpath, name)
                    try:
                        mode = stat.S_IMODE(os.lstat(p).st_mode)
                    except OSError:
                        continue
                    if mode & 0o077:
                        seen.setdefault(os.path.relpath(p, run), mode)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    old = os.umask(0o022)
    try:
        watcher.start()
        _run(load_campaign(path), run)
    finally:
        stop.set()
        watcher.join()
        os.umask(old)
    assert os.umask(old) == old  # the run gave the process its umask back
    good = layout.experiment_dir(run, GOOD)
    assert (good / "decision.json").is_file() and layout.checkpoint_file(good, 2).is_file()
    assert _modes(run) == []
    assert {p: oct(m) for p, m in seen.items()} == {}


def test_a_run_that_is_not_sensitive_keeps_host_and_modes(tmp_path):
    """The same campaign without ``sensitive``: the task log and the heartbeat keep the host (``twin status`` uses it
    to tell a live driver on this host) and files keep the umask's modes."""
    path = tmp_path / "open.yaml"
    path.write_text(CAMPAIGN.replace(", sensitive: true", ""))
    run = tmp_path / "run"
    old = os.umask(0o022)  # the test must not depend on the umask of whoever runs it
    try:
        _run(load_campaign(path), run)
    finally:
        os.umask(old)
    good = layout.experiment_dir(run, GOOD)
    assert json.loads((run / "driver.json").read_text())["host"] == socket.gethostname()
    assert json.loads((good / "tasks.jsonl").read_text().splitlines()[0])["host"] == socket.gethostname()
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    for p in (run / "twin.log", run / "driver.json", good / "done.json", good / "flags.jsonl", good / "tasks.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert str(run) in (run / "twin.log").read_text()
