"""A model that needs more memory than the process can get (limits raised by hand past the machine) ends the run with
one line naming the component, its grid and the ranks, exit status 1 (not bad input: the same file runs on more
ranks), and no traceback; before, PETSc's allocation traceback and a Python one.

The process's address space is bounded with ``RLIMIT_AS`` (as ``ulimit -v`` does), so PETSc's own allocation fails
for real, without the machine running short: a 40000 x 40000 grid needs 12.8 GB per vector."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
ADDRESS_SPACE = 4 * 2**30


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_a_grid_past_the_memory_is_one_line_naming_the_component(tmp_path):
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    for old, new in (("shape: [64, 64]", "shape: [40000, 40000]"), ("end: 50.0", "end: 2.0"),
                     ("output_every: 10.0", "output_every: 1.0"), ("ranks: 2", "ranks: 1")):
        assert old in text, old
        text = text.replace(old, new)
    text += "limits: {grid_cells: 2000000000, grid_cells_per_rank: 2000000000}\n"
    (tmp_path / "big.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "big.yaml", "-o", "out"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL,
                         preexec_fn=_bounded)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "PetscMallocA" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: model 'heat': out of memory while building its grid 40000 x 40000 on 1 rank(s) (PETSc "
                      "could not allocate): run it on more ranks or nodes, or make the grid smaller"], out.stderr
    assert not list((tmp_path / "out").rglob("*.nc"))
