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


def test_options_petsc_answers_when_it_ends_run_every_task_as_a_process_of_its_own():
    """-log_view and the like print when PETSc ends, which a warm worker never does before the pool is stopped (a
    workflow run with -log_view printed nothing): the default launcher then starts a process per task and says
    where each answer is; launcher: worker, as named, says they will print nothing."""
    from workflows.executors import launcher_for

    auto = launcher_for(_resources(workers=2), petsc_options=["-l96_ts_type", "rk", "-log_view"])
    assert not auto.in_worker(1) and auto.prefix(1) == ["mpiexec", "-n", "1"]
    assert "launcher: auto with -log_view, which PETSc answers when it ends" in auto.why
    assert "runinfo/tasks/<experiment>/<task>.out" in auto.why
    assert launcher_for(_resources(workers=2), petsc_options=["-l96_ts_monitor"]).in_worker(1)
    worker = launcher_for(_resources(launcher="worker"), petsc_options=["-options_left"])
    assert worker.in_worker(1) and "-options_left print nothing from them" in worker.why


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


# -- Slurm's launcher parsl-mpi: Parsl's MPI mode gives each task whole nodes (runs: tests/integration/test_slurm.py) --
def _mpi_mode(**kw):
    from twin.config.schema import SlurmResources
    from workflows.executors import launcher_for

    return launcher_for(SlurmResources(type="slurm", partition="debug", launcher="parsl-mpi", **kw))


@pytest.mark.parametrize("ranks, per_node, nodes, spec", [
    (1, 2, 1, (1, 1, 1)),  # a one-rank step still takes a whole node
    (2, 2, 1, (1, 2, 2)),
    (2, 4, 1, (1, 2, 2)),  # smaller than a node: the node's other ranks stay idle
    (4, 2, 2, (2, 4, 2)),
    (5, 4, 2, (2, 5, 3)),  # spread evenly over the nodes it needs, at most ranks_per_node on each
    (6, 4, 3, (2, 6, 3)),
    (9, 4, 3, (3, 9, 3)),
    (64, 32, 2, (2, 64, 32)),
])
def test_parsl_mpi_asks_for_whole_nodes(ranks, per_node, nodes, spec):
    launcher = _mpi_mode(ranks_per_node=per_node, nodes=nodes)
    assert launcher.kind == "parsl-mpi" and not launcher.in_worker(1) and launcher.env == ()
    got = launcher.resource_spec(ranks)
    assert (got["num_nodes"], got["num_ranks"], got["ranks_per_node"]) == spec
    assert got["launcher_options"] == "--cpus-per-task=1 --kill-on-bad-exit=1"
    assert "whole nodes" in launcher.why and "launcher: parsl-mpi" in launcher.why


def test_parsl_mpi_refuses_a_task_of_more_nodes_than_a_block_has():
    """Parsl would keep such a task waiting for nodes for ever: refused, naming the keys."""
    launcher = _mpi_mode(ranks_per_node=4, nodes=2)
    with pytest.raises(ValueError, match=r"9 ranks needs 3 whole nodes .* a block has 2 \(resources.nodes\)"):
        launcher.resource_spec(9)
    with pytest.raises(ValueError, match="whole nodes"):
        launcher.command(9, ["forecast", "/r/e"])


def test_other_launchers_ask_for_no_resources():
    from twin.config.schema import SlurmResources
    from workflows.executors import launcher_for

    for kind in ("auto", "mpiexec", "srun", "none", "worker"):
        assert launcher_for(_resources(launcher=kind)).resource_spec(1) == {}
    for kind in ("srun", "mpiexec"):
        assert launcher_for(SlurmResources(type="slurm", partition="debug", launcher=kind)).resource_spec(3) == {}


def test_parsl_mpi_commands_start_under_parsls_prefix(tmp_path):
    """The command runs the task under $PARSL_MPI_PREFIX, the prefix Parsl's worker puts in the task's environment
    (split into words by the shell), prints it on the task's stdout, and fails at once, saying so, without it."""
    launcher = _mpi_mode(ranks_per_node=2, nodes=1)
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho \"python $*\"\n")
    fake_python.chmod(0o755)
    fake_srun = tmp_path / "srun"  # stands for srun: shows its options, then runs the command
    fake_srun.write_text("#!/bin/sh\nwhile [ \"${1#--}\" != \"$1\" ]; do echo \"option $1\"; shift; done\nexec \"$@\"\n")
    fake_srun.chmod(0o755)
    from dataclasses import replace

    cmd = replace(launcher, python=str(fake_python)).command(2, ["forecast", "/r/it's", "--cycle", 0])
    assert "${PARSL_MPI_PREFIX:?" in cmd and "srun" not in cmd
    prefix = f"{fake_srun} --ntasks-per-node=2 --nodes=1 --kill-on-bad-exit=1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PARSL_MPI_PREFIX=prefix))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"launch (Parsl MPI mode): {prefix}", "option --ntasks-per-node=2",
                                       "option --nodes=1", "option --kill-on-bad-exit=1",
                                       "python -P -m twin.campaign.task forecast /r/it's --cycle 0"]
    env = {k: v for k, v in os.environ.items() if k != "PARSL_MPI_PREFIX"}
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0 and "python" not in out.stdout
    assert "PARSL_MPI_PREFIX: not set: launcher parsl-mpi runs tasks in the MPI mode of Parsl only" in out.stderr
    # a sensitive campaign's task names no host: the prefix (its --nodelist) is not printed
    private = replace(launcher, python=str(fake_python), private=True).command(1, ["init", "/r/e"])
    assert private.startswith("umask 077; ") and "printf" not in private and "${PARSL_MPI_PREFIX:?" in private


def test_parsl_mpi_builds_parsls_mpi_mode_executor(tmp_path):
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SimpleLauncher

    from twin.config.schema import SlurmResources
    from workflows.executors import build_config

    res = SlurmResources(type="slurm", partition="debug", launcher="parsl-mpi", nodes=3, ranks_per_node=8,
                         workers=5)
    ex = build_config(res, tmp_path).executors[0]
    assert isinstance(ex, HighThroughputExecutor) and ex.enable_mpi_mode and ex.mpi_launcher == "srun"
    assert isinstance(ex.provider.launcher, SimpleLauncher)  # the pool in the batch script, not an srun step
    assert ex.max_workers_per_node == 3  # one task per node of the block at most (workers is not used)
    assert ex.provider.nodes_per_block == 3 and ex.provider.cores_per_node == 8 and not ex.provider.exclusive
    assert ex.interchange_launch_cmd[1:] == ["-m", "workflows.interchange"]
    assert "-m workflows.pool" in ex.launch_cmd and ex.encrypted
    ex.validate_resource_spec(_mpi_mode(ranks_per_node=8, nodes=3).resource_spec(12))  # Parsl accepts the spec
    # the other Slurm launchers keep the plain executor, whose tasks share the nodes
    plain = build_config(SlurmResources(type="slurm", partition="debug", ranks_per_node=8, workers=5),
                         tmp_path).executors[0]
    assert not plain.enable_mpi_mode and plain.max_workers_per_node == 5 and plain.provider.cores_per_node == 40


def test_the_workflow_refuses_members_larger_than_a_block_before_it_submits_anything():
    from types import SimpleNamespace

    from twin.core.errors import WorkflowError
    from workflows.campaign import CampaignWorkflow

    wf = SimpleNamespace(launcher=_mpi_mode(ranks_per_node=2, nodes=1), resources=SimpleNamespace(ranks=1, task="auto"))
    CampaignWorkflow._check_launch(wf, "exp-1", 2)
    with pytest.raises(WorkflowError, match=r"experiment exp-1: ensemble.ranks_per_member \(4\): a task of 4 ranks "
                                            r"needs 2 whole nodes"):
        CampaignWorkflow._check_launch(wf, "exp-1", 4)
