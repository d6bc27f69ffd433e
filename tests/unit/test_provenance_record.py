"""A checkpoint's provenance is one JSON attribute (``/provenance`` ``record``); checkpoints written before, with one
attribute per field, still read and verify; a damaged record is refused with one line."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from twin.core.errors import OutputError
from twin.io.checkpoint import CheckpointReader, CheckpointWriter, write_checkpoint
from twin.io.inspect import inspect
from twin.io.provenance import FIELDS, RECORD, Provenance, collect


def _provenance() -> Provenance:
    return collect(None, config_text="schema_version: 1\n", parent="ck/cycle_0003.h5",
                   parent_checksum="sha256:" + "ab" * 32, observation_files=[{"network": "n", "file": "o.nc",
                                                                              "sha256": "cd" * 32, "qc": {}}])


def test_a_checkpoint_keeps_its_provenance_as_one_attribute_that_reads_back_equal(tmp_path):
    prov = _provenance()
    path = tmp_path / "c.h5"
    write_checkpoint(path, cycle=4, time=0.2, arrays={"a": np.arange(3.0)}, provenance=prov)
    with h5py.File(path, "r") as f:
        assert list(f["provenance"].attrs) == [RECORD]
    with CheckpointReader(path) as r:
        back = r.provenance
    assert back.end_time >= prov.start_time != ""
    for name in FIELDS:
        if name != "end_time":
            assert getattr(back, name) == getattr(prov, name), name
    assert back.ranks == 1 and back.parent_checkpoint == "ck/cycle_0003.h5"


def test_a_checkpoint_with_one_attribute_per_field_still_reads_and_verifies(tmp_path):
    """The layout of checkpoints written before the record: 18 attributes of /provenance, covered by the manifest."""
    prov = _provenance().finished()
    path = tmp_path / "old.h5"
    with CheckpointWriter(path, cycle=1, time=0.05) as w:  # no provenance of its own: the old attributes instead
        w.add_array("a", np.ones(2))
        w._set_attrs(w._file.require_group("/provenance"), "/provenance", prov.attrs())
    with h5py.File(path, "r") as f:
        assert sorted(f["provenance"].attrs) == sorted(FIELDS)
    with CheckpointReader(path, verify=True) as r:
        assert r.provenance == prov
    assert "config_sha256: " + prov.config_sha256 in inspect(path)


def test_a_record_that_is_not_json_is_refused_with_one_line():
    with pytest.raises(OutputError, match="provenance record is not JSON"):
        Provenance.from_attrs({RECORD: "{not json"})
    with pytest.raises(OutputError, match="not a JSON object of provenance fields"):
        Provenance.from_attrs({RECORD: "[1, 2]"})
