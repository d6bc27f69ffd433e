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

# pytest-xdist (make test runs the serial suite with -n 2): the controller process loads this file too, and its MPI
# singleton sets Open MPI's runtime variables (OMPI_MCA_ess=singleton, PMIX_* naming the controller's job) in the
# environment that its workers inherit. A worker must start MPI as a singleton of its own, and an `mpiexec` that a test
# starts with this environment would take itself for part of the controller's job and exit 1 with no output: drop them
# before this worker initialises MPI. (Never under mpiexec, where they are this rank's identity: tests/mpi.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in [k for k in os.environ if k.startswith(("OMPI_", "PMIX_", "ORTE_", "OPAL_", "PMI_", "HYDRA_"))
                  and not k.startswith(("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_MCA_rmaps_base_oversubscribe"))]:
        del os.environ[_name]

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
