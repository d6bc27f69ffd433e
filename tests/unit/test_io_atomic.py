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


def test_a_file_larger_than_the_process_may_write_is_refused_before_writing(tmp_path):
    """Past the file size limit (``ulimit -f``) a write fails with EFBIG in the middle of the file, and HDF5 then
    crashed in its clean-up with a segmentation fault (found by trying a run under ``ulimit -f``): a writer that says
    its size is refused first, in one line, and nothing is left behind."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(OutputError, match=r"cannot write big\.h5 in .*: it needs about 4 MiB \(and 0\.25 MiB to "
                                              r"spare\) and this process may write files of at most 1 MiB \(its file "
                                              r"size limit, ulimit -f\); raise the limit"):
            with atomic_output(tmp_path / "big.h5", reserve=4 << 20):
                pass
        with atomic_output(tmp_path / "small.h5", reserve=1 << 10) as tmp:
            tmp.write_bytes(b"x" * 1024)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.h5"]
