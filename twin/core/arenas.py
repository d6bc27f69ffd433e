"""Few malloc arenas per process under a virtual-memory limit.

glibc's ``malloc`` gives threads that allocate at the same time arenas of their own, up to 8 per core, and reserves
64 MiB of address space for each arena it creates, whether used or not. Under a virtual-memory limit (``ulimit -v``, a
login node's or batch system's vmem limit) those reservations, not the memory a process uses, are what a process with
threads runs out of first. A Parsl workflow is such a process, several times over: its driver has 10 threads, a worker
pool 8, each worker 5. Their peak address space measured on the 2-core test machine (Lorenz-96 campaign of
``benchmarks/bench_workflow.py``): driver 620 MiB, pool 553 MiB, workers 665-692 MiB; with one arena 237, 107 and
536 MiB. Under ``ulimit -v 550000`` (537 MiB) the workflow hung: a thread of the pool could not start (``RuntimeError:
can't start new thread`` in its log, the pool alive but deaf, the driver waiting for its heartbeat); under 300000 the
driver aborted inside ZeroMQ (``Resource temporarily unavailable (src/thread.cpp:241)``). With two arenas it runs
under 500000 (the floor a local workflow checks before it starts: :data:`workflows.executors.MEMORY_FLOOR_MIB`).

:func:`few_malloc_arenas_under_a_memory_limit` is called first thing by the ``twin`` command and by workflow task
processes, next to :func:`twin.core.blas.one_blas_thread_under_a_memory_limit`. It caps this process's arenas from now
on (``mallopt``) and, through ``MALLOC_ARENA_MAX``, those of every process it starts (read by glibc when a process
starts). Without a limit, when the user has set ``MALLOC_ARENA_MAX``, or without glibc, it does nothing. Threads
then share arenas, which costs lock waits only where several threads allocate at once; twin's compute runs in one
thread per process.
"""

from __future__ import annotations

import os

#: Arenas per process under a limit: one for the main thread and one that the other threads share.
ARENAS = 2
#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX`` (malloc.h).
M_ARENA_MAX = -8


def few_malloc_arenas_under_a_memory_limit() -> bool:
    """Cap malloc's arenas at :data:`ARENAS` in this process and the processes it starts when this process's address
    space is limited and ``MALLOC_ARENA_MAX`` is not set; ``True`` when it did."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or os.environ.get("MALLOC_ARENA_MAX", "").strip():
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(ARENAS)
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is not None and getattr(libc, "gnu_get_libc_version", None) is not None:
            mallopt(M_ARENA_MAX, ARENAS)
    except OSError:  # no C library to ask (the variable still reaches the processes started from here)
        pass
    return True
