"""Atomic writes: the final name appears only complete; failures leave the previous file and no temporary file."""

import os
import stat

import pytest

from twin.core.errors import OutputError
from twin.io.atomic import atomic_output, is_temporary, make_directory, write_text


def test_success_renames_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_output(target) as tmp:
        assert is_temporary(tmp) and tmp.parent == tmp_path
        assert not target.exists()
        tmp.write_text("complete")
    assert target.read_text() == "complete"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failure_keeps_previous_file_and_removes_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_refuses_overwrite_and_missing_directory(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        with atomic_output(target, overwrite=False):
            pass
    with pytest.raises(OutputError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "b.txt"):
            pass
    assert target.read_text() == "old"


def test_private_files_and_directories_are_owner_only(tmp_path):
    d = make_directory(tmp_path / "run" / "sub", private=True)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    old = os.umask(0o000)  # the most permissive umask must not widen a private file
    try:
        f = write_text(d / "x.txt", "secret", private=True)
        g = write_text(d / "y.txt", "public")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(g.stat().st_mode) == 0o666
