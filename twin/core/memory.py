"""Running out of memory, said as such: the process's virtual-memory limit in words, and the line for an allocation
or a shared library that could not get memory.

A process under a virtual-memory limit (``ulimit -v``, a batch system's vmem limit) meets it in two ways: an
allocation fails (NumPy's ``MemoryError``), or the dynamic loader cannot map a library that an import or PETSc's
start loads (``ImportError: libscipy_openblas.so: failed to map segment from shared object``, which named neither
memory nor the limit: found by a probe, in a workflow's analysis task and in PETSc's start, where it read as a bad
options file). One wording serves online mode, a workflow's tasks and PETSc's start.
"""

from __future__ import annotations

#: the dynamic loader's words when it cannot map a library (no memory left under the process's limit)
LOADER_NO_MEMORY = "failed to map segment"


def memory_limit_words() -> str | None:
    """The process's virtual-memory limit in words, ``None`` without one."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return (f"this process's virtual-memory limit of {soft // 2**20} MiB (ulimit -v {soft // 1024}, or the batch "
            "system's)")


def library_out_of_memory(message: str) -> str | None:
    """The line for the loader's ``<library>: failed to map segment ...`` in ``message``, else ``None``."""
    if LOADER_NO_MEMORY not in message:
        return None
    library = message.split(":", 1)[0].rsplit("/", 1)[-1].strip() or "a shared library"
    limit = memory_limit_words()
    return (f"out of memory while loading {library} (the dynamic loader could not map it): "
            + (f"raise {limit}, too small for twin's libraries and the experiment" if limit else
               "the machine had no memory left for it; run it where more memory is free"))


def out_of_memory(exc: BaseException) -> str | None:
    """The out-of-memory line for ``exc`` (a ``MemoryError``, an ``ImportError`` of the loader's, a thread that could
    not start, or under a limit the interpreter's ``SystemError`` of an allocation that failed without an exception),
    else ``None``."""
    if isinstance(exc, MemoryError):  # NumPy's allocations say nothing (a model's building names its grid)
        limit = memory_limit_words()
        return (f"out of memory ({str(exc) or 'an allocation failed'}): the experiment needs more memory than the "
                "process could get; lower assimilation.N or the grid, run it on more ranks or nodes"
                + (f", or raise {limit}" if limit else ""))
    if isinstance(exc, ImportError):
        return library_out_of_memory(str(exc))
    limit = memory_limit_words()
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):  # its stack found no address space
        return ("out of memory: a thread could not start" + (f"; raise {limit}" if limit else
                " (the machine's memory, or the limit on processes and threads: ulimit -u, or the batch system's)"))
    if isinstance(exc, SystemError) and limit:  # the interpreter's own allocation failed without saying so
        return f"out of memory: the interpreter could not get memory ({exc}); raise {limit}"
    return None


def out_of_memory_carried(exc: BaseException) -> str | None:
    """:func:`out_of_memory` of ``exc``, or of its cause when ``exc`` only carries that cause on (its message is the
    cause's ``Type: message``, as :func:`twin.io.atomic.root_call` says a failure on rank 0 on every rank: an import
    of the outputs' libraries that could not map one of them read ``ImportError: ...: failed to map segment``)."""
    said = out_of_memory(exc)
    cause = exc.__cause__
    if said is None and cause is not None and str(exc) == f"{type(cause).__name__}: {cause}":
        said = out_of_memory(cause)
    return said
