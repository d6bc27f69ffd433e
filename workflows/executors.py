"""Parsl executors and MPI launch commands built from the typed ``resources`` section.

``LocalResources`` -> a HighThroughputExecutor with a LocalProvider: ``workers`` tasks at once on this machine. With
``launcher: auto`` (the default, resolved by :func:`launcher_for`) a one-rank task runs inside a warm worker itself
(:meth:`Launcher.in_worker`, :mod:`workflows.campaign`) and a task of more ranks is a bash app that starts its own
MPI job with ``mpiexec -n R``; when the campaign sets ``experiments.task_timeout`` every task is such a process
(a time limit can end a process, not a warm worker's long C call). ``launcher: mpiexec`` (or ``srun``, ``none``)
makes every task a process of its own, ``launcher: worker`` runs one-rank tasks in the warm workers whatever the
time limit.

``SlurmResources`` -> a HighThroughputExecutor with a SlurmProvider (partition, account, qos, walltime, nodes per
block, at most ``max_blocks`` blocks, ``modules`` loaded and ``worker_init`` run before the workers start); member
runs are launched with ``srun --ntasks R`` (or ``mpiexec -n R``) from inside the block's allocation, several members
sharing a node. With ``launcher: parsl-mpi`` the executor is Parsl's MPI mode instead (below).

Pitfalls handled, and why the default is not Parsl's ``MPIExecutor``:

* Parsl's MPI mode composes ``mpiexec -n R -ppn P -hosts H`` (MPICH/Hydra syntax, refused by Open MPI) and finds its
  nodes only from Slurm or PBS variables, so it cannot run on a laptop; twin composes the launch command itself
  (:class:`Launcher`) and gives every task it launches its own MPI job (more below). The workflow process never
  imports mpi4py or petsc4py.
* The worker pool of a Slurm block runs in the batch script itself (``SimpleLauncher``), not in an ``srun`` step:
  member runs are ``srun`` steps of their own, and a step cannot be started from inside another step that holds all
  the allocation's CPUs.
* ``cores_per_node`` makes Parsl add ``--cpus-per-task``; it is set to the CPUs the block's workers need
  (``workers * ranks``) with ``exclusive=False`` so a shared node is not requested whole, and never together with a
  ``#SBATCH -n`` line (which clashes with Parsl's own ``--ntasks-per-node``).
* Open MPI counts one slot per Slurm task, or per core on a laptop; more ranks than that needs oversubscription,
  which the launch command enables through the environment (``OMPI_MCA_rmaps_base_oversubscribe=1``, ignored by
  other MPI libraries).
* HTEX workers are capped by ``max_workers_per_node``, not by cores (``cores_per_worker`` tiny): a worker only waits
  for its MPI job, which owns the cores (or runs a one-rank task itself, on one core).
* Start-up (issue 23): a pool is Parsl's own, run as :mod:`workflows.pool` so that its spawned helper processes do
  not import Parsl again (0.3-0.4 s), the interchange, the pool and its workers import only the Parsl modules they
  use (:mod:`workflows.lean`, 0.2 s each), and :func:`load_parsl` has the strategy submit the first block as soon as the
  executor exists (0.2 s); on local resources the interchange and the first block start with the run, before the
  driver imports Parsl, and Parsl is given them (:mod:`workflows.early_interchange`, :mod:`workflows.early_block`);
  ``benchmarks/bench_workflow.py`` measures them.

Parsl's MPI mode (``MPIExecutor``, the HighThroughputExecutor with ``enable_mpi_mode`` on, Parsl 2026.10) composes
the launch prefix (``$PARSL_MPI_PREFIX``) from a task's ``parsl_resource_specification``. It is not the default: its
pool finds nodes only from ``SLURM_NODELIST`` or ``PBS_NODEFILE`` (without them the pool fails to start, so never on
a laptop: ``local`` resources do not offer it); it composes a prefix only for tasks that ask for whole nodes
(``num_nodes``), which it hands out one task per node, while members of a few ranks share a node with ``launcher:
srun``; and its ``mpiexec`` prefix is MPICH/Hydra syntax (``-ppn``, ``-hosts``) that Open MPI 4 refuses.

``launcher: parsl-mpi`` (Slurm only) uses it where it fits, for members that fill whole nodes: the block's executor is
``MPIExecutor(mpi_launcher="srun")`` with ``SimpleLauncher`` (the pool on the block's first node), one worker per
node of the block (``max_workers_per_block = nodes``; ``workers`` is not used) and ``ranks_per_node`` CPUs per node.
Every task (member forecasts on ``ensemble.ranks_per_member`` ranks, the other steps on ``resources.ranks``) asks for
``num_nodes = ceil(R / ranks_per_node)`` whole nodes, ``num_ranks = R`` and ``ranks_per_node = ceil(R /
num_nodes)`` (:meth:`Launcher.resource_spec`), and its command starts with the prefix Parsl composed for the nodes it
gave the task: ``srun --ntasks R --ntasks-per-node P --nodelist H --nodes n`` and :data:`PARSL_MPI_OPTIONS`. What it
costs: a task smaller than a node still takes a whole node, so a one-node block runs its tasks one at a time; a task
that needs more nodes than a block has (``resources.nodes``) could never start and is refused before anything runs.
The site's srun must be able to start the MPI library's ranks (``MpiDefault`` of slurm.conf, or ``SLURM_MPI_TYPE``
such as ``pmix`` in the environment, which the blocks inherit).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Environment every MPI task gets: oversubscription allowed (Open MPI). Python's bytecode cache is the user's
#: environment's choice: forcing PYTHONDONTWRITEBYTECODE made every task of an editable install, or of a user's model
#: module, compile those modules from source again (0.1 s per process for twin's own on the 2-core test machine).
TASK_ENV = {"OMPI_MCA_rmaps_base_oversubscribe": "1"}
#: Variables passed through from the driver's environment when set (Open MPI refuses root without the first two).
PASS_ENV = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "PETSC_DIR", "PETSC_ARCH", "PYTHONPATH")
#: Open MPI settings of tasks on ``local`` resources (one node), ignored by other MPI libraries: the ``ob1``
#: point-to-point layer (shared memory between the ranks of one node) instead of probing UCX/OFI network layers, and
#: a one-process task (``launcher: none`` or ``worker``) as an isolated singleton that starts no ``orted``.
#: Measured on the 2-core test machine: ``MPI_Init`` of a singleton 0.38 s -> 0.06 s, ``mpiexec -n 2`` of an empty
#: MPI program 0.37-0.47 s -> 0.19 s (``benchmarks/bench_workflow.py``). Slurm tasks keep the site's defaults.
LOCAL_MPI_ENV = {"OMPI_MCA_pml": "ob1", "OMPI_MCA_ess_singleton_isolated": "1"}
#: Shell prelude of every task: drop MPI runtime variables inherited from a process that had initialised MPI (an
#: MPI singleton exports PMIX_*/OMPI_* into its environment, and every mpiexec started below it then fails silently
#: with status 1). The root-permission switches stay.
SCRUB_MPI_ENV = ("for v in $(compgen -e); do case $v in OMPI_ALLOW_RUN_AS_ROOT*) ;; "
                 "OMPI_*|PMIX_*|ORTE_*|OPAL_*|PMI_*|HYDRA_*|I_MPI_*) unset \"$v\";; esac; done; ")

#: The Slurm launcher that runs tasks in Parsl's MPI mode (:func:`build_config`, :meth:`Launcher.resource_spec`).
PARSL_MPI = "parsl-mpi"
#: ``launcher_options`` of every task in Parsl's MPI mode, appended to Parsl's srun prefix: one CPU per rank (a
#: block asks ``--cpus-per-task`` = its node's CPUs, which srun of some Slurm versions would inherit per rank), and a
#: rank that fails ends the others instead of leaving them waiting in a collective.
PARSL_MPI_OPTIONS = "--cpus-per-task=1 --kill-on-bad-exit=1"
#: The launch word of a task in Parsl's MPI mode: the prefix Parsl's worker put in the task's environment, left
#: unquoted so that the shell splits it into words; the task fails at once, saying so, if it is not set.
PARSL_MPI_PREFIX = "${PARSL_MPI_PREFIX:?not set: launcher parsl-mpi runs tasks in the MPI mode of Parsl only}"


#: Label of the executor of ``local`` resources (its workers' logs are in ``<run_dir>/runinfo/<label>``).
LOCAL_LABEL = "twin_local"
#: Seconds between the runs of Parsl's scaling strategy. Its first run after the executor starts launches the first
#: block, so the workers started up to this long after the interchange (1.1 s measured with 2 s): 0.25 s for
#: ``local`` resources (a run asks the interchange over a local socket how many tasks are outstanding; the
#: provider's own status polls keep their interval), 2 s for Slurm, where a block waits in the queue anyway.
STRATEGY_PERIOD = {"local": 0.25, "slurm": 2.0}
#: Seconds between the strategy's runs until the first block is submitted (:func:`load_parsl`). Parsl's strategy
#: thread starts with the DataFlowKernel, before the executor (whose interchange takes 0.3 s to start), so with the
#: period above the first block waited for the next run after the executor was added: 0.22 s of every local run,
#: measured. Until then the runs find no executor and do nothing.
STRATEGY_FIRST_PERIOD = 0.01


#: Address space (MiB) every process of a workflow on ``local`` resources needs under a virtual-memory limit: its
#: driver, interchange, worker pool and workers, each with twin's libraries, PETSc and MPI. Measured on the 2-core test
#: machine (Debian's PETSc 3.18, Open MPI 4) with the Lorenz-96 campaign of ``benchmarks/bench_workflow.py`` and two
#: malloc arenas per process (:mod:`twin.core.arenas`): it runs under ``ulimit -v 500000`` (488 MiB); below, a task
#: fails out of memory at 450000, a worker dies at 350000, the run hangs at 420000 (a thread of the worker pool that
#: could not start leaves the pool alive but deaf, :mod:`twin.core.arenas`), the driver fails at 200000. Below this
#: floor :func:`check_address_space` refuses the run before any process starts.
MEMORY_FLOOR_MIB = 512


def check_address_space(resources) -> None:
    """Refuse a workflow on ``local`` resources whose processes could not all start under this process's
    virtual-memory limit (:data:`MEMORY_FLOOR_MIB`), which the interchange, the pool and its workers inherit; one
    line says the limit, the floor and what to do. A Slurm block's processes run under the limits of its node."""
    import resource as _resource

    from twin.core.errors import TooLittleAddressSpace
    from twin.core.memory import memory_limit_words

    soft, _ = _resource.getrlimit(_resource.RLIMIT_AS)
    if resources.type != "local" or soft == _resource.RLIM_INFINITY or soft >= MEMORY_FLOOR_MIB * 2**20:
        return
    raise TooLittleAddressSpace(f"{memory_limit_words()} is below the {MEMORY_FLOOR_MIB} MiB that each process of a "
                                "workflow on local resources needs (its driver, worker pool and workers, with twin's "
                                "libraries): raise it, or run the campaign online (resources.workers: 1, without "
                                "--workflow)")


def scrubbed_environ(environ=None) -> dict:
    """A copy of ``environ`` without MPI runtime variables (see :data:`SCRUB_MPI_ENV`), for subprocesses."""
    env = dict(os.environ if environ is None else environ)
    prefixes = ("OMPI_", "PMIX_", "ORTE_", "OPAL_", "PMI_", "HYDRA_", "I_MPI_")
    return {k: v for k, v in env.items() if not k.startswith(prefixes) or k.startswith("OMPI_ALLOW_RUN_AS_ROOT")}


@dataclass(frozen=True)
class Launcher:
    """How a task's MPI job is started.

    Attributes
    ----------
    kind : {"mpiexec", "srun", "parsl-mpi", "none", "worker"}
        What starts a task that is a process of its own (``resources.launcher: auto`` is resolved by
        :func:`launcher_for`: never a kind). ``parsl-mpi``: the prefix Parsl's MPI mode composed for the task
        (:data:`PARSL_MPI_PREFIX`) from its :meth:`resource_spec`.
    python : str
        The interpreter that runs ``twin.campaign.task`` (the driver's, so the same environment).
    env : dict
        Extra environment of the task.
    private : bool
        A sensitive campaign's task: run under the owner-only umask ``077`` (whatever umask the worker has), so
        every file and directory the task creates is owner-only from creation.
    warm : bool
        One-rank tasks run inside the warm Parsl workers, tasks of more ranks under ``kind`` (``launcher: auto``
        without ``experiments.task_timeout``).
    why : str
        Which launcher the run uses and why, for its log (:func:`launcher_for`).
    ranks_per_node, nodes : int
        ``parsl-mpi``: the ranks a node of the block takes (``resources.ranks_per_node``) and the nodes of a block
        (``resources.nodes``), from which :meth:`resource_spec` counts a task's whole nodes.
    """

    kind: str = "mpiexec"
    python: str = field(default_factory=lambda: sys.executable)
    env: tuple[tuple[str, str], ...] = ()
    private: bool = False
    warm: bool = False
    why: str = field(default="", compare=False)
    ranks_per_node: int = 1
    nodes: int = 1

    def prefix(self, ranks: int) -> list[str]:
        """The words that start a task of ``ranks`` ranks (:data:`PARSL_MPI_PREFIX`, a shell expansion, for
        ``parsl-mpi``: :meth:`command` leaves it unquoted)."""
        ranks = int(ranks)
        if ranks < 1:
            raise ValueError(f"a task needs at least one rank, got {ranks}")
        if self.kind == PARSL_MPI:
            self.resource_spec(ranks)  # a task the block cannot hold is refused here as well
            return [PARSL_MPI_PREFIX]
        if self.kind == "mpiexec":
            return ["mpiexec", "-n", str(ranks)]
        if self.kind == "srun":
            return ["srun", f"--ntasks={ranks}", "--nodes=1", "--cpus-per-task=1", "--exact", "--kill-on-bad-exit=1"]
        if self.kind in ("none", "worker"):
            if ranks != 1:
                raise ValueError(f"launcher '{self.kind}' runs one-rank tasks; {ranks} ranks need mpiexec or srun")
            return []
        raise ValueError(f"unknown launcher {self.kind!r}")

    def resource_spec(self, ranks: int) -> dict:
        """The ``parsl_resource_specification`` of a task of ``ranks`` ranks: for ``parsl-mpi`` the whole nodes
        Parsl's MPI mode gives it, ``num_nodes = ceil(ranks / ranks_per_node)``, with ``num_ranks = ranks``,
        ``ranks_per_node = ceil(ranks / num_nodes)`` (the ranks spread evenly, at most ``ranks_per_node`` per node)
        and :data:`PARSL_MPI_OPTIONS`; ``{}`` (none) for every other launcher. A task of more nodes than a block
        has would wait for them for ever: ``ValueError``."""
        ranks = int(ranks)
        if ranks < 1:
            raise ValueError(f"a task needs at least one rank, got {ranks}")
        if self.kind != PARSL_MPI:
            return {}
        nodes = -(-ranks // self.ranks_per_node)
        if nodes > self.nodes:
            raise ValueError(f"a task of {ranks} ranks needs {nodes} whole nodes of {self.ranks_per_node} ranks "
                             f"(resources.ranks_per_node) with launcher parsl-mpi, but a block has "
                             f"{self.nodes} (resources.nodes): raise resources.nodes or ranks_per_node, or use "
                             f"fewer ranks")
        return {"num_nodes": nodes, "num_ranks": ranks, "ranks_per_node": -(-ranks // nodes),
                "launcher_options": PARSL_MPI_OPTIONS}

    def in_worker(self, ranks: int) -> bool:
        """Whether a task of ``ranks`` ranks runs inside a warm Parsl worker (:func:`twin.campaign.task
        .run_in_worker`) rather than as a process of its own: one rank, and ``launcher: worker`` or a warm launcher
        (``launcher: auto`` without a time limit). MPI tasks are always MPI jobs of their own, and a launcher the
        campaign names (``mpiexec``, ``srun``, ``none``) is used as named."""
        return int(ranks) == 1 and (self.kind == "worker" or self.warm)

    def command(self, ranks: int, args: list[str], registry: str | None = None) -> str:
        """The shell command of a task: environment, launcher, ``python -m twin.campaign.task ARGS`` (quoted).

        ``registry``: the run's :class:`twin.campaign.task.WorkerRegistry` directory when the workers are warm (a run
        of ``launcher: auto`` has warm one-rank tasks and MPI tasks of more ranks in the same workers): the worker
        running the command (the shell's parent) is recorded busy while it runs and idle after, as a warm task
        records itself, so that the driver's watch (:mod:`workflows.warm`) leaves a worker that dies under it to
        Parsl (the task lost) instead of ending the run as for a worker that died idle."""
        env = dict(TASK_ENV)
        env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
        env.update(dict(self.env))
        words = ["env"] + [f"{k}={v}" for k, v in sorted(env.items())]
        # -P: the working directory is not put on sys.path (a run directory named "twin" there would shadow the package)
        words += self.prefix(ranks) + [self.python, "-P", "-m", "twin.campaign.task"] + [str(a) for a in args]
        mark = show = ""
        if self.kind == PARSL_MPI and not self.private:  # the task's stdout names the launch (a sensitive run no host)
            show = 'printf "launch (Parsl MPI mode): %s\\n" "$PARSL_MPI_PREFIX"; '
        if registry is not None:  # the trap keeps the command's exit status
            put = 'printf {0} > "$twin_reg/.$PPID.new" && mv -f "$twin_reg/.$PPID.new" "$twin_reg/$PPID"'
            mark = f"twin_reg={shlex.quote(str(registry))}; {put.format('busy')}; trap '{put.format('idle')}' EXIT; "
        return (("umask 077; " if self.private else "") + mark + SCRUB_MPI_ENV + show
                + " ".join(w if w == PARSL_MPI_PREFIX else shlex.quote(w) for w in words))


def reported_at_end(petsc_options) -> list[str]:
    """The options of ``petsc_options`` (PETSc words) that PETSc answers when it ends
    (:data:`twin.core.petsc.AT_PETSC_END`), which a warm Parsl worker never reaches before the pool is stopped: a
    run that asks for one runs every task as a process of its own."""
    from twin.core.petsc import AT_PETSC_END

    names = [str(w).lstrip("-") for w in petsc_options or [] if str(w).startswith("-")]
    return [f"-{n}" for n in names if n in AT_PETSC_END]


def launcher_for(resources, private: bool = False, task_timeout: float | None = None,
                 petsc_options=()) -> Launcher:
    """The launcher of a run's tasks on ``resources``: the one place where ``launcher: auto`` (the default of local
    resources) is resolved.

    * Without a time limit (``task_timeout`` None, the campaign's ``experiments.task_timeout``): one-rank tasks run
      in the warm Parsl workers (no interpreter start per task, about 1 s; ``benchmarks/bench_workflow.py``), tasks
      of more ranks under ``mpiexec -n R``.
    * With one: every task is a process of its own under ``mpiexec``. Parsl's time limit stops Python code in a warm
      worker, not a long C call (PETSc), while it ends a process whatever it runs.
    * With a PETSc option answered when PETSc ends (``-log_view`` ...; ``petsc_options``, the command line's): every
      task a process of its own as well, whose answer is in its ``.out`` file; a warm worker never ends PETSc.

    Every other launcher (``mpiexec``, ``srun``, ``none``, ``worker``; Slurm's) is used as named; Slurm's
    ``parsl-mpi`` gives each task whole nodes of its block through Parsl's MPI mode (:meth:`Launcher.resource_spec`).
    :attr:`Launcher.why` says which launcher the run uses and why (the workflow logs it once)."""
    env = tuple(sorted(LOCAL_MPI_ENV.items())) if resources.type == "local" else ()
    kind, warm = resources.launcher, False
    at_end = reported_at_end(petsc_options)
    where = "runinfo/tasks/<experiment>/<task>.out"
    if kind == "auto":
        kind, warm = "mpiexec", task_timeout is None and not at_end
        if warm:
            why = ("tasks of one rank run in warm Parsl workers, tasks of more ranks under mpiexec (launcher: auto); "
                   "set resources.launcher: mpiexec for a process per task")
        elif task_timeout is not None:
            why = (f"every task is a process of its own under mpiexec (launcher: auto with experiments.task_timeout "
                   f"{task_timeout:g} s, which cannot stop a warm Parsl worker inside a long C call)")
        else:
            why = (f"every task is a process of its own under mpiexec (launcher: auto with {' '.join(at_end)}, which "
                   f"PETSc answers when it ends, as a warm Parsl worker never does); each task's answer is in {where}")
    elif kind == "worker":
        why = "tasks of one rank run in warm Parsl workers (launcher: worker)" + (
            "" if task_timeout is None else
            f"; experiments.task_timeout ({task_timeout:g} s) stops Python code there, not a long C call") + (
            "" if not at_end else
            f"; {' '.join(at_end)} print nothing from them (PETSc answers when it ends, which a warm worker never "
            "does): set resources.launcher: mpiexec for a process per task")
    elif kind == "none":
        why = "every task is a process of its own, started without an MPI launcher (launcher: none)"
    elif kind == PARSL_MPI:
        why = (f"every task is an srun job on whole nodes of its block ({resources.ranks_per_node} ranks per node), "
               "started with the prefix of Parsl's MPI mode (launcher: parsl-mpi); a task smaller than a node still "
               "takes one")
    else:
        why = f"every task is a process of its own under {kind} (launcher: {kind})"
    nodes = {"ranks_per_node": resources.ranks_per_node, "nodes": resources.nodes} if kind == PARSL_MPI else {}
    return Launcher(kind=kind, env=env, private=private, warm=warm, why=why, **nodes)


#: The module that runs a worker pool (Parsl's pool from a main module that imports nothing: :mod:`workflows.pool`).
POOL_COMMAND_MODULE = "workflows.pool"
#: The module that runs an interchange (Parsl's, with only the Parsl modules it uses: :mod:`workflows.interchange`).
INTERCHANGE_COMMAND_MODULE = "workflows.interchange"


def parsl_commands(python: str | None = None) -> dict:
    """HTEX's interchange and worker-pool commands run by this interpreter as modules: Parsl's defaults are the
    scripts ``interchange.py`` and ``process_worker_pool.py``, found only when the environment's ``bin/`` is on
    ``PATH`` (not so for ``.venv/bin/python -m ...`` without activation, nor on a batch node). The pool runs as
    :mod:`workflows.pool`, Parsl's pool whose spawned helper processes do not import Parsl again as their main module
    (0.3-0.4 s less before the pool registers), and the pool, its workers and the interchange
    (:mod:`workflows.interchange`) import only the Parsl modules they use (:mod:`workflows.lean`: 0.2 s less in
    each)."""
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    return {"interchange_launch_cmd": interchange_command(python),
            "launch_cmd": DEFAULT_LAUNCH_CMD.replace("process_worker_pool.py", pool_command(python), 1)}


def pool_command(python: str | None = None) -> str:
    """The worker pool's command, before its arguments, of a workflow whose driver runs ``python`` (default: this
    interpreter)."""
    return f"{shlex.quote(python or sys.executable)} -m {POOL_COMMAND_MODULE}"


def interchange_command(python: str | None = None) -> list[str]:
    """The interchange command of a workflow whose driver runs the interpreter ``python`` (default: this one)."""
    return [python or sys.executable, "-m", INTERCHANGE_COMMAND_MODULE]


def local_worker_init() -> str:
    """The lines a local block runs before its worker pool: the workers run warm tasks (launcher: auto or worker)
    themselves, so no MPI runtime variables of the driver's environment, the local MPI settings, no bytecode files
    in the tree (as in every task's own environment)."""
    return SCRUB_MPI_ENV + " ".join(f"export {k}={v};" for k, v in sorted({**TASK_ENV, **LOCAL_MPI_ENV}.items()))


def _local_executor(resources, run_dir: Path, label: str, early=None, early_block=None):
    """A local block's executor; its interchange is ``early`` (a :class:`workflows.early_interchange
    .EarlyInterchange`) and its first block ``early_block`` (a :class:`workflows.early_block.EarlyBlock`) when they
    are given."""
    from parsl.launchers import SimpleLauncher

    from workflows.early_block import provider_class
    from workflows.early_interchange import executor_class

    provider = provider_class()(init_blocks=1, min_blocks=1, max_blocks=1, launcher=SimpleLauncher(),
                                cmd_timeout=60, worker_init=local_worker_init())
    provider.early_block = early_block
    executor = executor_class()(label=label, address="127.0.0.1", max_workers_per_node=resources.workers,
                                cores_per_worker=1e-6, provider=provider, encrypted=False,
                                worker_logdir_root=str(run_dir), heartbeat_period=5, heartbeat_threshold=60,
                                poll_period=10, **parsl_commands())
    executor.early_interchange = early
    return executor


def slurm_worker_init(resources, python: str | None = None) -> str:
    """Lines run in a Slurm block before the workers start: module loads, the YAML's ``worker_init`` commands, and
    the driver's interpreter directory on ``PATH`` (so ``process_worker_pool.py`` of the same Parsl is found).
    ``module`` names and ``worker_init`` words were validated by the schema (no shell metacharacters)."""
    lines = [f"module load {shlex.quote(m)}" for m in resources.modules]
    lines += [" ".join(shlex.quote(w) for w in cmd.split()) for cmd in resources.worker_init]
    bindir = str(Path(python or sys.executable).parent)
    lines.append(f"export PATH={shlex.quote(bindir)}:\"$PATH\"")
    return "\n".join(lines)


def _slurm_executor(resources, run_dir: Path, label: str, address: str | None):
    """A Slurm block's executor: an HTEX of ``workers`` workers whose tasks share the block's nodes, or with
    ``launcher: parsl-mpi`` Parsl's MPI mode (``MPIExecutor``, srun prefixes), one worker per node of the block and
    every task on whole nodes (module docstring)."""
    from parsl.addresses import address_by_hostname
    from parsl.executors import HighThroughputExecutor, MPIExecutor
    from parsl.launchers import SimpleLauncher
    from parsl.providers import SlurmProvider

    from twin.config.schema import parsl_walltime

    mpi_mode = resources.launcher == PARSL_MPI
    # MPI mode: a node's CPUs are its ranks' (a task takes the node whole); else the CPUs of the block's workers
    cores = resources.ranks_per_node if mpi_mode else resources.workers * resources.ranks_per_node
    provider = SlurmProvider(partition=resources.partition, account=resources.account, qos=resources.qos,
                             nodes_per_block=resources.nodes, cores_per_node=cores, init_blocks=1, min_blocks=0,
                             max_blocks=resources.max_blocks, walltime=parsl_walltime(resources.walltime),
                             exclusive=False,
                             worker_init=slurm_worker_init(resources), launcher=SimpleLauncher(), cmd_timeout=60)
    if mpi_mode:
        commands = parsl_commands()
        executor = MPIExecutor(label=label, address=address or address_by_hostname(), provider=provider,
                               max_workers_per_block=resources.nodes, mpi_launcher="srun",
                               launch_cmd=commands["launch_cmd"], worker_logdir_root=str(run_dir),
                               heartbeat_period=10, heartbeat_threshold=120, encrypted=True)
        # set after construction: MPIExecutor's signature types it as a string, which Popen would run as one word
        executor.interchange_launch_cmd = commands["interchange_launch_cmd"]
        return executor
    return HighThroughputExecutor(label=label, address=address or address_by_hostname(),
                                  max_workers_per_node=resources.workers, cores_per_worker=1e-6, provider=provider,
                                  worker_logdir_root=str(run_dir), heartbeat_period=10, heartbeat_threshold=120,
                                  **parsl_commands())


def build_config(resources, run_dir, *, retries: int = 0, address: str | None = None, early=None,
                 early_block=None):
    """The Parsl configuration for ``resources``; Parsl's run directory is ``<run_dir>/runinfo``.

    Parameters
    ----------
    resources : LocalResources or SlurmResources
    run_dir : path-like
        The campaign's run directory.
    retries : int
        Parsl retries of a failed task.
    address : str, optional
        Address workers connect back to (Slurm); default: this host's name. Local runs use 127.0.0.1.
    early : workflows.early_interchange.EarlyInterchange, optional
        The interchange process of local resources, started already.
    early_block : workflows.early_block.EarlyBlock, optional
        The first worker pool of local resources, started already.
    """
    from parsl.config import Config

    runinfo = Path(run_dir) / "runinfo"
    runinfo.mkdir(parents=True, exist_ok=True)
    if resources.type == "local":
        executor = _local_executor(resources, runinfo, LOCAL_LABEL, early, early_block)
    elif resources.type == "slurm":
        executor = _slurm_executor(resources, runinfo, "twin_slurm", address)
    else:
        raise ValueError(f"unknown resources type {resources.type!r}")
    return Config(executors=[executor], run_dir=str(runinfo), retries=int(retries), strategy="simple",
                  strategy_period=STRATEGY_FIRST_PERIOD, max_idletime=30.0, initialize_logging=True,
                  usage_tracking=0)


def started_processes(dfk) -> list[tuple[int, bool]]:
    """``(pid, group)`` of the processes Parsl started on this machine for a workflow: each executor's interchange,
    and the blocks of a local provider (each in a process group of its own with its worker pool and workers). A driver killed with
    SIGKILL leaves them running (the interchange keeps the pools alive), so the driver's heartbeat names them
    (:func:`twin.campaign.heartbeat.stop_left_behind`); a Slurm block is a job that ends once its pool loses the
    interchange."""
    from parsl.providers import LocalProvider

    out = []
    for ex in dfk.executors.values():
        proc = getattr(ex, "interchange_proc", None)
        if proc is not None and proc.poll() is None:
            out.append((int(proc.pid), False))
        provider = getattr(ex, "provider", None)
        if isinstance(provider, LocalProvider):
            for job in list(getattr(provider, "resources", {}).values()):
                pid = job.get("remote_pid") if isinstance(job, dict) else None
                if pid and not job.get("cancelled"):
                    out.append((int(pid), True))
    return out


def waiting_blocks(dfk, timeout: float = 15.0) -> list[str]:
    """What Slurm says of the Parsl blocks that are not running, one phrase each (``block 0 is Slurm job 123,
    PENDING (Priority)``), for the driver's log while its tasks wait for workers: a block that waits in the queue
    otherwise looks like a driver that hangs. Empty when every block runs, the provider is not Slurm, or ``squeue``
    does not answer within ``timeout`` s (the note is left out, the campaign goes on)."""
    import subprocess

    from parsl.providers import SlurmProvider

    out = []
    for ex in dfk.executors.values():
        provider = getattr(ex, "provider", None)
        if not isinstance(provider, SlurmProvider):
            continue
        block_of = {str(job): block for block, job in dict(getattr(ex, "blocks_to_job_id", {})).items()}
        jobs = [job for job in block_of if job in provider.resources
                and not provider.resources[job]["status"].terminal]
        if not jobs:
            continue
        cmd = ["squeue", "--noheader", "--format=%i %T %r", "--jobs", ",".join(jobs)]
        if provider.clusters:
            cmd.append(f"--clusters={provider.clusters}")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in r.stdout.splitlines() if r.returncode == 0 else []:
            words = line.split(maxsplit=2)
            if len(words) == 3 and words[0] in block_of and words[1] != "RUNNING":
                reason = "" if words[2] in ("None", "") else f" ({words[2]})"
                out.append(f"block {block_of[words[0]]} is Slurm job {words[0]}, {words[1]}{reason}")
    return out


def load_parsl(config, resources, timeout: float = 5.0):
    """Load the Parsl configuration ``config`` (from :func:`build_config`) and return its DataFlowKernel once the
    strategy has submitted the executor's first block (every :data:`STRATEGY_FIRST_PERIOD` s until then, at most
    ``timeout`` s); from then on the strategy runs every ``STRATEGY_PERIOD[resources.type]`` s."""
    import parsl

    dfk = parsl.load(config)
    deadline = time.monotonic() + timeout
    while any(not ex.blocks_to_job_id for ex in config.executors) and time.monotonic() < deadline:
        time.sleep(STRATEGY_FIRST_PERIOD / 2)
    dfk.job_status_poller.interval = STRATEGY_PERIOD[resources.type]
    return dfk
