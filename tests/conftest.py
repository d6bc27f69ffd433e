"""Shared fixtures. PETSc is initialised without options so pytest's own arguments never reach PETSc."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twin.core.petsc import init_petsc  # noqa: E402

init_petsc([])


@pytest.fixture
def comm_world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def comm_self():
    from mpi4py import MPI

    return MPI.COMM_SELF
