"""MPI tests run under ``mpiexec -n 2``; on one rank they are skipped (they need two to mean anything).

A failing assertion on one rank can leave the other waiting in a collective call; the pytest-timeout limit below turns
such a hang into a failure (the timeout kills the rank, and mpiexec the job).
"""

import pytest
from mpi4py import MPI


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.Get_size() < 2:
        skip = pytest.mark.skip(reason="MPI test: run under mpiexec -n 2 (make test does)")
        for item in items:
            item.add_marker(skip)
    for item in items:
        item.add_marker(pytest.mark.timeout(300, method="thread"))
