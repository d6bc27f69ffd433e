"""Provenance records: configuration hash, versions, git revision (never failing), sensitive redaction."""

import hashlib
import os
import stat

from twin.io.provenance import FIELDS, Provenance, collect, describe, git_revision, prepare_run_directory

CONFIG = "campaign:\n  name: demo\n  seed: 3\n"


def test_collect_records_config_versions_and_git(comm_self):
    p = collect(comm_self, config_text=CONFIG)
    assert p.config == CONFIG
    assert p.config_sha256 == hashlib.sha256(CONFIG.encode()).hexdigest()
    assert p.petsc_version.count(".") == 2 and p.hdf5_version[0].isdigit() and p.netcdf_version[0].isdigit()
    assert p.mpi_library != "unknown" and p.ranks == 1 and p.sensitive == 0
    assert p.host not in ("", "redacted") and p.start_time.endswith("Z")
    rev = git_revision()
    assert rev == "unknown" or len(rev.split("+")[0]) == 40
    attrs = p.finished().attrs()
    assert set(attrs) == set(FIELDS) and attrs["end_time"] >= attrs["start_time"]
    assert Provenance.from_attrs(attrs) == p.finished(attrs["end_time"])


def test_the_command_lines_petsc_options_are_recorded_and_paths_redacted_when_sensitive(comm_self, monkeypatch):
    from twin.core import petsc

    monkeypatch.setattr(petsc, "_COMMAND_LINE_WORDS", ["-heat_ksp_rtol", "1e-8", "-log_view", ":/home/ana/log.txt",
                                                       "-heat_ksp_monitor"])
    assert collect(comm_self).petsc_options == "-heat_ksp_rtol 1e-8 -log_view :/home/ana/log.txt -heat_ksp_monitor"
    assert collect(comm_self, sensitive=True).petsc_options == "-heat_ksp_rtol 1e-8 -log_view redacted " \
                                                               "-heat_ksp_monitor"
    monkeypatch.setattr(petsc, "_COMMAND_LINE_WORDS", ["-x", "a b"])
    assert collect(comm_self).petsc_options == "-x 'a b'"  # one line a shell reads back as the same words


def test_git_revision_never_fails(tmp_path, monkeypatch):
    from twin.io import provenance

    assert git_revision(tmp_path) == "unknown"  # not a checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    provenance._own_revision.cache_clear()
    try:
        assert git_revision() == "unknown"
    finally:
        provenance._own_revision.cache_clear()


def test_the_twin_sources_revision_is_looked_up_once_per_process(tmp_path, monkeypatch):
    first = git_revision()
    monkeypatch.setenv("PATH", str(tmp_path))  # git gone: the revision recorded at the start of the run stays
    assert git_revision() == first


def test_sensitive_records_no_user_or_host_and_relative_parent(tmp_path, comm_self):
    import getpass
    import socket

    run = prepare_run_directory(tmp_path / "patient-run", sensitive=True)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE((run / "checkpoint").stat().st_mode) == 0o700
    parent = run / "checkpoint" / "cycle_0002.h5"
    p = collect(comm_self, config_text=CONFIG, sensitive=True, parent=parent, parent_checksum="sha256:ab",
                relative_to=run)
    text = "\n".join(f"{k}={v}" for k, v in p.attrs().items())
    assert p.host == p.user == "redacted" and p.sensitive == 1
    assert p.parent_checkpoint == os.path.join("checkpoint", "cycle_0002.h5")
    assert socket.gethostname() not in text.replace("redacted", "")
    assert str(tmp_path) not in text and getpass.getuser() not in p.host + p.user
    assert "sensitive: yes" in "\n".join(describe(p.attrs()))
