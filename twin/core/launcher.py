"""A rank's life is bound to its MPI launcher: when ``mpiexec`` dies, its ranks die with it, at once.

Open MPI starts every rank in a process group of its own, so ``kill -9 -PGID`` of an ``mpiexec`` (what an operator,
a batch system without cgroups or a test harness does to stop a run) kills the launcher only. Its ranks noticed the
lost launcher about a second later (measured: both ranks of ``mpiexec -n 2 twin run`` still alive 0.7 s after the
group was killed, gone at 1.7 s) and could write files meanwhile, into a run directory that the operator believes
stopped and may already have handed to a new run.

:func:`bind_to_launcher` asks the Linux kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill this process the moment
its parent exits. It acts only when this process was started by a local MPI launcher (Open MPI's ``mpiexec`` /
``mpirun`` / ``orted`` / ``prted``, MPICH's ``hydra_pmi_proxy``), which start their ranks from their main thread —
the death signal follows the exit of the parent *thread* that forked the child, so a launcher forking from a helper
thread would kill its ranks early; these do not (the whole test suite and the demos run under them with the binding
on). Under Slurm's ``srun`` the job step's cgroup already ends every rank with the step, and a process started from
a shell is left alone (a ``nohup twin run`` must survive its shell). Elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

#: Parent processes that start MPI ranks on this node (the ``comm`` name the kernel reports, 15 characters at most).
LAUNCHERS = frozenset({"mpiexec", "mpirun", "orterun", "orted", "prterun", "prted", "hydra_pmi_proxy"})

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``
_PR_SET_PDEATHSIG = 1

#: environment variables any rank started by an MPI launcher has (Open MPI, PMIx, MPICH's PMI)
_RANK_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK")


def under_launcher() -> bool:
    """Whether an MPI launcher (``mpiexec``, ``srun``, a PMI/PMIx server) started this process: one of the rank
    variables they set is in the environment."""
    return any(v in os.environ for v in _RANK_VARIABLES)


def parent_name(ppid: int) -> str:
    """The kernel's command name of process ``ppid`` (empty when it cannot be read)."""
    try:
        with open(f"/proc/{ppid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def bind_to_launcher() -> bool:
    """Die with the MPI launcher that started this process; ``True`` when bound (see the module docstring).

    Called first thing by the ``twin`` command and by workflow task processes, before MPI is initialised. If the
    launcher is already gone when the binding is made, this process ends itself at once (the kernel would not
    signal a death that happened before the request).
    """
    if not sys.platform.startswith("linux") or not under_launcher():
        return False
    ppid = os.getppid()
    if parent_name(ppid) not in LAUNCHERS:
        return False
    if not _death_signal(signal.SIGKILL):
        return False
    if os.getppid() != ppid:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """For ``subprocess``'s ``preexec_fn`` (runs in the child between fork and exec): the child gets ``signum`` when
    the thread that started it exits, so an ``mpiexec`` a twin command starts does not outlive the command (on
    SIGTERM, mpiexec ends its ranks). Linux only; elsewhere nothing."""
    if sys.platform.startswith("linux"):
        _death_signal(signum)


def _death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` for this process: ``True`` when the kernel took it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
