"""The binding of a rank's life to its MPI launcher (twin.core.launcher): only processes an MPI launcher started are
bound (the ranks killed with their launcher are tested in tests/integration/test_runtime_faults.py)."""

import os
import subprocess
import sys

from twin.core.launcher import LAUNCHERS, bind_to_launcher, parent_name


def test_a_process_started_from_a_shell_or_a_test_runner_is_not_bound():
    assert parent_name(os.getppid()) not in LAUNCHERS
    assert bind_to_launcher() is False


def test_a_process_with_rank_variables_but_no_launcher_parent_is_not_bound():
    # an MPI job's environment inherited by a process a shell started (e.g. a user's script under srun) is not enough
    out = subprocess.run([sys.executable, "-c", "from twin.core.launcher import bind_to_launcher as b; print(b())"],
                         env=dict(os.environ, OMPI_COMM_WORLD_SIZE="2"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_the_parent_name_is_the_kernels_command_name():
    # a process of its own: a test runner may retitle its own process (pytest-xdist's workers are "[pytest-xdist ...");
    # the name is read once the child runs Python (until its exec completes it may still carry this process's name)
    child = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "up\n"
        assert parent_name(child.pid) == os.path.basename(sys.executable)[:15]
    finally:
        child.communicate(timeout=60)
    assert parent_name(2 ** 22 + 12345) == ""
