"""PETSc is initialised without options so that pytest's own arguments never reach it; run directories go under the
temporary directory, which twin allows through TWIN_OUTPUT_ROOT (subprocesses inherit it)."""

import os
import tempfile

from twin.core.petsc import init_petsc

init_petsc([])
os.environ.setdefault("TWIN_OUTPUT_ROOT", tempfile.gettempdir())
