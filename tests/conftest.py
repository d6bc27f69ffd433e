"""Shared fixtures. PETSc is initialised without options so pytest's own arguments never reach PETSc."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twin.core.petsc import init_petsc  # noqa: E402

init_petsc([])

# Run directories must lie below the working directory or an allowed root (twin.config.confinement); the tests write
# theirs under the temporary directory, which they allow the documented way (subprocesses inherit it).
os.environ.setdefault("TWIN_OUTPUT_ROOT", tempfile.gettempdir())


@pytest.fixture
def comm_world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def comm_self():
    from mpi4py import MPI

    return MPI.COMM_SELF
