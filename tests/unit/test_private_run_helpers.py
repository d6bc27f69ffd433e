"""The pieces of sensitive mode that work without the campaign's flag: owner-only directories created on the way,
the seal of a finished run, markers and task logs that follow their directory, and the redacting log formatter."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat

from twin.campaign import layout
from twin.core.log import RedactingFormatter
from twin.io.atomic import is_private_directory, make_directory, seal_private


def _mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_private_directories_and_parents(tmp_path):
    old = os.umask(0o022)
    try:
        leaf = make_directory(tmp_path / "a" / "b" / "c", private=True)
        open_dir = make_directory(tmp_path / "open" / "d")
    finally:
        os.umask(old)
    assert [_mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", leaf)] == [0o700] * 3
    assert _mode(open_dir) == 0o755 and _mode(tmp_path / "open") == 0o755
    assert is_private_directory(leaf) and not is_private_directory(open_dir)
    assert not is_private_directory(tmp_path / "missing") and not is_private_directory(tmp_path / "a" / "nope.txt")


def test_seal_makes_a_private_tree_owner_only_and_leaves_others(tmp_path):
    old = os.umask(0o022)
    try:
        run = make_directory(tmp_path / "run", private=True)
        (run / "forecast" / "cycle_0000").mkdir(parents=True)
        (run / "forecast" / "cycle_0000" / "m.h5").write_text("x")
        script = run / "job.sh"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
        outside = tmp_path / "shared.txt"
        outside.write_text("not ours to change")
        (run / "link").symlink_to(outside)
        public = make_directory(tmp_path / "public")
        (public / "f.txt").write_text("y")
    finally:
        os.umask(old)
    assert seal_private(run) == 4  # two directories, one data file, one script
    assert _mode(run / "forecast") == 0o700 and _mode(run / "forecast" / "cycle_0000") == 0o700
    assert _mode(run / "forecast" / "cycle_0000" / "m.h5") == 0o600 and _mode(script) == 0o700
    assert _mode(outside) == 0o644  # a symbolic link is not followed
    assert seal_private(run) == 0
    assert seal_private(public) == 0 and _mode(public / "f.txt") == 0o644  # not a private directory: untouched


def test_markers_and_task_log_follow_their_directory(tmp_path):
    old = os.umask(0o022)
    try:
        private = make_directory(tmp_path / "p", private=True)
        public = make_directory(tmp_path / "q")
        for d in (private, public):
            layout.write_json(d / "done.json", {"time": 1.0})
            layout.log_task(d, {"task": "init"})
    finally:
        os.umask(old)
    assert _mode(private / "done.json") == 0o600 and _mode(private / "tasks.jsonl") == 0o600
    assert _mode(public / "done.json") == 0o644 and _mode(public / "tasks.jsonl") == 0o644
    assert "host" not in json.loads((private / "tasks.jsonl").read_text())
    assert json.loads((public / "tasks.jsonl").read_text())["host"] == socket.gethostname()
    assert json.loads((private / "done.json").read_text()) == {"time": 1.0}


def test_redacting_formatter(tmp_path):
    run = tmp_path / "run"
    fmt = RedactingFormatter("%(message)s", "%H:%M:%S", str(run))
    home = os.path.expanduser("~")

    def say(msg: str) -> str:
        return fmt.format(logging.LogRecord("twin", logging.INFO, __file__, 1, msg, None, None))

    assert say(f"wrote {run}/experiments/a/posterior.nc") == "wrote experiments/a/posterior.nc"
    assert say(f"2 experiment(s) in {run}") == "2 experiment(s) in ."
    other = say(f"{run}2/x.nc is another run")  # a longer name is not the run directory
    assert other.endswith("/run2/x.nc is another run") and not other.startswith(("2/", "./", "x.nc"))
    assert say(f"campaign file {home}/c.yaml") == "campaign file ~/c.yaml"
    host = socket.gethostname()
    if len(host) >= 3:
        assert say(f"rank 1 on {host} failed") == "rank 1 on <host> failed"
