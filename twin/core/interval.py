"""A wall-clock interval read alike by every rank of a communicator.

Some writes are collective and happen "every so many seconds" (a restart checkpoint, ``diagnostics.nc``, a
forecast's ``qoi.nc``): if each rank timed itself, one rank could decide to write while another does not, and the
collective write would hang or tear the file. :class:`Interval` lets rank 0's clock decide and broadcasts its answer,
so every rank takes the same branch.
"""

from __future__ import annotations

import time


class Interval:
    """``seconds`` of wall-clock time, measured by rank 0 of ``comm`` (``None``: this process alone).

    :meth:`due` (collective when ``comm`` has several ranks): whether ``seconds`` have passed since the last
    :meth:`reset` (or since the start; ``due_at_start``: the first call is due whatever the time). :meth:`reset`:
    start counting again (after the write the interval was for)."""

    def __init__(self, seconds: float, comm=None, *, due_at_start: bool = False) -> None:
        self.seconds = float(seconds)
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.since = float("-inf") if due_at_start else time.monotonic()

    def due(self) -> bool:
        late = time.monotonic() - self.since >= self.seconds
        return bool(self.comm.bcast(late, root=0)) if self.comm is not None else late

    def reset(self) -> None:
        self.since = time.monotonic()
