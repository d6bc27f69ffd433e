"""Progress display for long runs: a rich progress bar on an interactive terminal (rank 0 only), periodic log lines
otherwise (batch jobs, CI), nothing on the other ranks.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from twin.core.log import get_logger

log = get_logger("twin.progress")


class Progress:
    """Tracks ``total`` steps of a named task. Use as ``with progress(...) as p: p.advance()``."""

    def __init__(self, description: str, total: int, *, rank: int = 0, interactive: bool | None = None,
                 log_every: float = 10.0):
        self.description = description
        self.total = int(total)
        self.done = 0
        self.rank = rank
        self.log_every = log_every
        self._last_log = time.monotonic()
        self._start = self._last_log
        self._bar = None
        self._task = None
        if interactive is None:
            interactive = sys.stderr.isatty()
        if rank == 0 and interactive:
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(description, total=self.total)

    def advance(self, n: int = 1, status: str = "") -> None:
        self.done += n
        if self.rank != 0:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n,
                             description=f"{self.description} {status}".strip())
        elif time.monotonic() - self._last_log >= self.log_every or self.done >= self.total:
            self._last_log = time.monotonic()
            log.info("%s: %d/%d %s(%.1f s)", self.description, self.done, self.total,
                     f"{status} " if status else "", self._last_log - self._start)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def progress(description: str, total: int, **kwargs) -> Iterator[Progress]:
    p = Progress(description, total, **kwargs)
    try:
        yield p
    finally:
        p.close()
