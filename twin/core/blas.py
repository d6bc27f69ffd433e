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


def one_blas_thread_under_a_memory_limit() -> str | None:
    """Set ``OPENBLAS_NUM_THREADS=1`` when this process's address space is limited and no thread count is set (an
    empty value is none: OpenBLAS then starts a thread per core). Returns a warning to print when the user set a
    count above 1 under a limit (kept: the user asked for it; a later probe saw every such run hang), else ``None``."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    given = next(((v, os.environ[v].strip()) for v in THREAD_VARIABLES if os.environ.get(v, "").strip()), None)
    if given is None:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        return None
    if given[1] == "1":
        return None
    return (f"{given[0]}={given[1]} under a virtual-memory limit of {soft // 2**20} MiB (ulimit -v): OpenBLAS may "
            f"hang for good while it starts its threads (SIGTERM cannot end it); set {given[0]}=1 or raise the limit")
