"""Which failures of a member task are the model's (the failure policy may drop the member) and which are the
infrastructure's (retried, then the experiment stops with the real reason), and which line of a task's stderr says
why it failed."""

from __future__ import annotations

import sysconfig

from parsl.app.errors import BashExitFailure

from twin.campaign.task import EXIT_MODEL_FAILED
from workflows.campaign import _last_line, model_failure

MARKERS = "--> executable follows <--\nmpiexec -n 1 python -m twin.campaign.task forecast ...\n--> end executable <--\n"

OPEN_MPI_BANNER = """--------------------------------------------------------------------------
mpiexec has detected an attempt to run as root.

Running as root is *strongly* discouraged as any mistake (e.g., in
defining TMPDIR) or bug can result in catastrophic damage to the OS
--------------------------------------------------------------------------
"""

#: Open MPI when a rank ends with a non-zero status (not a signal it noticed)
OPEN_MPI_STATUS = """--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpiexec detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[8242,1],1]
  Exit code:    CODE
--------------------------------------------------------------------------
"""
OPEN_MPI_SIGNAL = """--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpiexec noticed that process rank 0 with PID 0 on node vm exited on signal 9 (Killed).
--------------------------------------------------------------------------
"""

TRACEBACK = """Traceback (most recent call last):
  File "twin/io/atomic.py", line 120, in write
    os.write(fd, data)
OSError: [Errno 28] No space left on device
"""

#: Python's fault report (twin.core.crash) of a crash in a model's native code, then PETSc's signal handler
FAULT_REPORT = f"""Fatal Python error: Segmentation fault

Current thread 0x00007f8a31549040 (most recent call first):
  File "{sysconfig.get_paths()['stdlib']}/ctypes/__init__.py", line 519 in string_at
  File "/home/me/model.py", line 42 in update
  File "/work/twin/campaign/steps.py", line 393 in advance_member

Extension modules: mpi4py.MPI, numpy.core._multiarray_umath (total: 2)
"""
PETSC_BANNER = """[0]PETSC ERROR: ------------------------------------------------------------------------
[0]PETSC ERROR: Caught signal number 11 SEGV: Segmentation Violation, probably memory access out of range
[0]PETSC ERROR: configure using --with-debugging=yes, recompile, link, and run
"""


def test_only_the_model_exit_status_is_a_model_failure():
    assert model_failure(BashExitFailure("forecast", EXIT_MODEL_FAILED))
    for code in (-9, 137, 1, 2, 255):  # SIGKILL (the OOM killer), a launcher error, twin errors, lost processes
        assert not model_failure(BashExitFailure("forecast", code))
    assert not model_failure(RuntimeError("worker lost"))


def test_the_line_that_says_why(tmp_path):
    err = tmp_path / "task.err"
    cases = {
        MARKERS + OPEN_MPI_BANNER: "mpiexec has detected an attempt to run as root.",
        MARKERS + TRACEBACK: "OSError: [Errno 28] No space left on device",
        MARKERS + "some warning\nmodel failed: model 'l96': solver failed at t=0.4\n": "model failed: model 'l96': "
                                                                                       "solver failed at t=0.4",
        MARKERS + "Killed\n": "Killed",
        MARKERS + OPEN_MPI_SIGNAL: "rank 0 killed by signal 9 (Killed)",
        MARKERS + OPEN_MPI_STATUS.replace("CODE", "137"): "rank 1 exited with status 137, as one killed by signal 9 "
                                                          "(Killed)",
        MARKERS + OPEN_MPI_STATUS.replace("CODE", "4"): "rank 1 exited with status 4",
        # an exception in the model's code under mpiexec: what it raised, not the launcher's status (a probe's
        # RuntimeError read "rank 0 exited with status 1")
        MARKERS + TRACEBACK.replace("OSError: [Errno 28] No space left on device", "RuntimeError: probe boom")
        + OPEN_MPI_STATUS.replace("CODE", "1"): "RuntimeError: probe boom",
        # a crash in native code: where, from Python's fault report, not PETSc's banner after it
        MARKERS + FAULT_REPORT + PETSC_BANNER: "the process crashed: Segmentation fault in update (/home/me/model.py, "
                                               "line 42)",
    }
    for text, expected in cases.items():
        err.write_text(text)
        assert _last_line(err) == expected
    assert _last_line(tmp_path / "missing.err") == ""
