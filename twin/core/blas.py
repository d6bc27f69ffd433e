"""One OpenBLAS thread per process under a virtual-memory limit.

NumPy and SciPy each load an OpenBLAS that starts a thread per core when it is loaded, each thread with a buffer of
about 32 MB. Under a virtual-memory limit (``ulimit -v``, a login node's or batch system's vmem limit) that buffer
may not fit: OpenBLAS then retries ``mmap`` for ever inside ``dlopen`` (about 50,000 failed calls in 5 s), where no
Python signal handler can run, so ``timeout``'s or ``scancel``'s SIGTERM did not end the run either (found by a
probe; about one run in two on the 2-core test machine with ``ulimit -v 500000``). With one thread the libraries
load, or their loading fails, at once, and the run ends with twin's out-of-memory line naming the limit.

:func:`one_blas_thread_under_a_memory_limit` is called first thing by the ``twin`` command and by workflow task
processes, before NumPy is imported; its setting is inherited by the processes they start (Parsl's workers). Without
a limit, or when the user has set OpenBLAS's thread count, it does nothing, so runs without a limit are unchanged.
"""

from __future__ import annotations

import os

#: OpenBLAS reads its thread count from the first of these that is set.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def one_blas_thread_under_a_memory_limit() -> bool:
    """Set ``OPENBLAS_NUM_THREADS=1`` when this process's address space is limited and no thread count is set;
    ``True`` when it did."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or any(v in os.environ for v in THREAD_VARIABLES):
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True
