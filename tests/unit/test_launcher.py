"""The binding of a rank's life to its MPI launcher (twin.core.launcher): only processes an MPI launcher started are
bound (the ranks killed with their launcher are tested in tests/integration/test_runtime_faults.py). And the launcher
of workflow tasks (workflows.executors.launcher_for): ``launcher: auto``, the default of local resources, runs
one-rank tasks in the warm Parsl workers and tasks of more ranks under mpiexec, every task under mpiexec when the
campaign sets experiments.task_timeout; named launchers keep their meaning (runs: tests/integration/
test_warm_workers.py)."""

import os
import shlex
import subprocess
import sys

import pytest

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


# -- the launcher of workflow tasks (workflows.executors.launcher_for): launcher: auto, the default ------------------
def _resources(**kw):
    from twin.config.schema import LocalResources

    return LocalResources(type="local", **kw)


def test_the_default_runs_one_rank_tasks_warm_and_mpi_tasks_under_mpiexec():
    from workflows.executors import launcher_for

    assert _resources().launcher == "auto"
    launcher = launcher_for(_resources(workers=2))
    assert launcher.in_worker(1) and not launcher.in_worker(2)
    words = shlex.split(launcher.command(2, ["forecast", "/r/e", "--cycle", 0, "--member", 1]).split("; done; ", 1)[1])
    assert words[words.index("mpiexec"):words.index("mpiexec") + 3] == ["mpiexec", "-n", "2"]
    assert "warm Parsl workers" in launcher.why and "launcher: auto" in launcher.why
    assert "resources.launcher: mpiexec for a process per task" in launcher.why


def test_the_default_with_a_task_timeout_runs_every_task_under_mpiexec():
    from workflows.executors import launcher_for

    launcher = launcher_for(_resources(), task_timeout=600.0)
    assert not launcher.in_worker(1) and not launcher.in_worker(4)
    for ranks in (1, 3):
        words = shlex.split(launcher.command(ranks, ["init", "/r/e"]).split("; done; ", 1)[1])
        assert words[words.index("mpiexec"):words.index("mpiexec") + 3] == ["mpiexec", "-n", str(ranks)]
    assert "process of its own under mpiexec" in launcher.why and "task_timeout 600 s" in launcher.why


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_named_launchers_keep_their_meaning(timeout):
    from workflows.executors import launcher_for

    mpiexec = launcher_for(_resources(launcher="mpiexec"), task_timeout=timeout)
    assert not mpiexec.in_worker(1) and mpiexec.prefix(1) == ["mpiexec", "-n", "1"]
    assert mpiexec.why == "every task is a process of its own under mpiexec (launcher: mpiexec)"
    none = launcher_for(_resources(launcher="none"), task_timeout=timeout)
    assert not none.in_worker(1) and none.prefix(1) == []
    with pytest.raises(ValueError, match="launcher 'none' runs one-rank tasks"):
        none.prefix(2)
    srun = launcher_for(_resources(launcher="srun"), task_timeout=timeout)
    assert not srun.in_worker(1) and srun.prefix(2)[:2] == ["srun", "--ntasks=2"]
    worker = launcher_for(_resources(launcher="worker"), task_timeout=timeout)
    assert worker.in_worker(1) and not worker.in_worker(2)  # a time limit or not: as named
    with pytest.raises(ValueError, match="launcher 'worker' runs one-rank tasks"):
        worker.command(2, ["analyse", "/r/e"])
    assert ("stops Python code there, not a long C call" in worker.why) == (timeout is not None)


def test_slurm_resources_are_unchanged():
    from twin.config.schema import SlurmResources
    from workflows.executors import launcher_for

    for kind in ("srun", "mpiexec"):
        launcher = launcher_for(SlurmResources(type="slurm", partition="debug", launcher=kind))
        assert launcher.kind == kind and not launcher.in_worker(1) and launcher.env == ()
    assert SlurmResources(type="slurm", partition="debug").launcher == "srun"
    with pytest.raises(ValueError):
        SlurmResources(type="slurm", partition="debug", launcher="auto")


def test_an_mpi_task_of_a_warm_run_records_its_worker_busy_and_keeps_its_exit_status(tmp_path):
    """In a run whose one-rank tasks are warm, a task of more ranks is a shell command run by a warm worker: the
    worker (the shell's parent) is recorded busy while it runs, idle after, and the command's status is kept."""
    from twin.campaign.task import WorkerRegistry
    from workflows.executors import Launcher

    registry = tmp_path / "it's workers"
    registry.mkdir()
    fake = tmp_path / "python"  # stands for the interpreter: shows the registry, then fails as a task may
    fake.write_text(f"#!/bin/sh\ncat {shlex.quote(str(registry))}/*\nexit 3\n")
    fake.chmod(0o755)
    cmd = Launcher(kind="none", python=str(fake), warm=True).command(1, ["forecast", "/r/e"], registry=str(registry))
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == "busy", out.stderr
    assert WorkerRegistry(registry).states() == {os.getpid(): WorkerRegistry.IDLE}
    assert sorted(p.name for p in registry.iterdir()) == [str(os.getpid())]
