"""Progress display for long runs: one nested display campaign -> experiment k/n -> cycle k/n -> members k/n, with
elapsed time and ETA, on rank 0 only.

:func:`campaign_progress` opens the display of a campaign (its experiments); inside it, :func:`progress` (the cycles,
ES-MDA iterations or 4D-Var windows of one experiment) becomes its second level and :meth:`Progress.members` /
:meth:`Progress.member_done` its third. Outside a campaign, :func:`progress` is a display of its own (a forecast run).

Where it shows:

* an interactive terminal (standard output is a TTY, and under ``mpiexec`` the launcher's standard output too), not
  ``--quiet``: a rich progress display on rank 0; log lines are printed above it (the terminal log handler writes through the display's console while it is shown);
* otherwise (batch jobs, CI, pipes): no display, and at most one plain log line per cycle (at most every
  ``log_every`` seconds, and at the last), which ``--quiet`` silences with the rest of the INFO lines;
* other ranks: nothing.

What is counted lives in :class:`Counts` (plain numbers, no terminal), which the tests check.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from twin.core.log import get_logger

log = get_logger("twin.progress")


@dataclass
class Level:
    """One level of the display: ``done`` of ``total`` steps, a label, and when it started."""

    label: str = ""
    done: int = 0
    total: int = 0
    started: float = 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the mean pace so far (``None`` before the first step)."""
        if self.done <= 0 or self.total <= self.done:
            return None if self.done <= 0 else 0.0
        return (now - self.started) / self.done * (self.total - self.done)


class Counts:
    """What a campaign display counts: experiments, cycles of the current experiment, members of the current cycle
    (the members this rank's group forecasts). Pure bookkeeping: no terminal, no MPI."""

    def __init__(self, name: str, experiments: int, clock=time.monotonic):
        self.clock = clock
        self.campaign = Level(name, 0, int(experiments), clock())
        self.experiment = Level()
        self.cycle = Level()
        self.member = Level()
        self.index = 0  # 1-based number of the current experiment (0 before the first)

    def start_experiment(self, index: int, name: str) -> None:
        """Experiment ``index`` (0-based) of the campaign starts; the experiments before it are done."""
        self.index = int(index) + 1
        self.campaign.done = int(index)
        self.experiment = Level(name, 0, 0, self.clock())
        self.cycle, self.member = Level(), Level()

    def finish_experiment(self) -> None:
        self.campaign.done = max(self.campaign.done, self.index)

    def start_cycles(self, label: str, total: int, done: int = 0) -> None:
        self.cycle = Level(label, int(done), int(total), self.clock())
        self.member = Level()

    def advance_cycle(self, n: int = 1) -> None:
        self.cycle.done = min(self.cycle.done + int(n), self.cycle.total) if self.cycle.total else self.cycle.done + n
        self.member = Level()

    def start_members(self, total: int) -> None:
        self.member = Level("members", 0, int(total), self.clock())

    def member_done(self) -> None:
        self.member.done += 1

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """``level -> (k, n)``: the experiment being run (1-based) and how many, cycles done, members done."""
        return {"experiment": (self.index, self.campaign.total), "cycle": (self.cycle.done, self.cycle.total),
                "members": (self.member.done, self.member.total)}

    def line(self) -> str:
        """One plain line: ``campaign c: experiment 1/2 (a): cycles 3/24, 12 s, ETA 1.2 min``."""
        now = self.clock()
        parts = [f"campaign {self.campaign.label}: experiment {self.index}/{self.campaign.total}"
                 + (f" ({self.experiment.label})" if self.experiment.label else "")]
        if self.cycle.total:
            eta = self.cycle.eta(now)
            parts.append(f"{self.cycle.label} {self.cycle.done}/{self.cycle.total}, {_span(now - self.cycle.started)}"
                         + (f", ETA {_span(eta)}" if eta is not None else ""))
        return ": ".join(parts)


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def terminal_quiet() -> bool:
    """Whether the ``twin`` terminal log handler shows warnings only (``--quiet``)."""
    return any(type(h) is logging.StreamHandler and h.level > logging.INFO
               for h in logging.getLogger("twin").handlers)


def interactive_terminal() -> bool:
    """A progress display shows only on an interactive terminal (standard output a TTY, and under ``mpiexec`` the
    launcher's too: :func:`launcher_output_is_terminal`) without ``--quiet``."""
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stdout
        return False
    return tty and launcher_output_is_terminal() is not False and not terminal_quiet()


def launcher_output_is_terminal() -> bool | None:
    """Under Open MPI's ``mpiexec``, whether the launcher's own standard output is a terminal; ``None`` outside it
    or where that cannot be seen.

    Open MPI gives every rank a pseudo-terminal as standard output, whether ``mpiexec``'s output is a terminal or a
    file (``mpiexec -n 2 twin run ... > run.log``): the rank's ``isatty`` cannot tell, and the progress display's
    escape codes went into the file, hundreds of lines of them. A local rank is a child of ``mpiexec``, whose
    standard output ``/proc`` shows (Linux); a rank started by a remote daemon sees the daemon's, not a terminal, and
    shows no display, as a batch job's."""
    import os

    if "OMPI_COMM_WORLD_SIZE" not in os.environ:
        return None
    try:
        target = os.readlink(f"/proc/{os.getppid()}/fd/1")
    except OSError:
        return None
    return target.startswith(("/dev/pts/", "/dev/tty"))


class _Display:
    """The rich side of a campaign display: three tasks (experiments, cycles, members) on one live console, the
    terminal log handler writing above it while it runs."""

    def __init__(self, counts: Counts):
        from rich.console import Console
        from rich.file_proxy import FileProxy
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.counts = counts
        console = Console(file=sys.stdout)
        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                transient=False)
        self.tasks = [self.bar.add_task(f"campaign {counts.campaign.label}", total=counts.campaign.total),
                      self.bar.add_task("  cycles", total=None, visible=False),
                      self.bar.add_task("    members", total=None, visible=False)]
        self._cycles_started: float | None = None
        self._members_started: float | None = None
        self._streams = []
        for h in logging.getLogger("twin").handlers:
            if type(h) is logging.StreamHandler and not getattr(h.stream, "closed", False):
                old = h.stream
                try:
                    h.setStream(FileProxy(console, old))  # flushes the old stream first
                except (OSError, ValueError):  # a stream closed under us: that handler writes nothing anyway
                    continue
                self._streams.append((h, old))
        self.bar.start()

    def refresh(self) -> None:
        c = self.counts
        campaign, cycles, members = self.tasks
        self.bar.update(campaign, completed=c.campaign.done, total=c.campaign.total,
                        description=f"campaign {c.campaign.label}: experiment {c.index}/{c.campaign.total} "
                                    f"{c.experiment.label}".rstrip())
        if c.cycle.total:
            if c.cycle.started != self._cycles_started:  # a new experiment's cycles: restart the clock and ETA
                self._cycles_started = c.cycle.started
                self.bar.reset(cycles, total=c.cycle.total, completed=c.cycle.done, visible=True,
                               description=f"  {c.cycle.label}")
            else:
                self.bar.update(cycles, completed=c.cycle.done)
        else:
            self.bar.update(cycles, visible=False)
        if c.member.total:
            if c.member.started != self._members_started:
                self._members_started = c.member.started
                self.bar.reset(members, total=c.member.total, completed=c.member.done, visible=True)
            else:
                self.bar.update(members, completed=c.member.done)
        else:
            self.bar.update(members, visible=False)

    def close(self) -> None:
        self.refresh()
        self.bar.stop()
        for h, stream in self._streams:
            h.setStream(stream)


class CampaignProgress:
    """The display of one campaign (see the module docstring); :func:`campaign_progress` makes one."""

    def __init__(self, name: str, experiments: int, *, rank: int = 0, interactive: bool | None = None,
                 log_every: float = 10.0, clock=time.monotonic, on_change=None):
        self.counts = Counts(name, experiments, clock)
        self.rank, self.log_every, self.clock = rank, log_every, clock
        #: called on rank 0 with :attr:`counts` whenever an experiment starts or ends and after every step (the
        #: online driver records its progress in its heartbeat for ``twin status``)
        self.on_change = on_change if rank == 0 else None
        self._last_log = clock()
        if interactive is None:
            interactive = interactive_terminal()
        self._display = _Display(self.counts) if rank == 0 and interactive else None

    # -- the levels -----------------------------------------------------------------------------------------------
    def experiment(self, index: int, name: str) -> None:
        self.counts.start_experiment(index, name)
        self._show()
        self._changed()

    def experiment_done(self) -> None:
        self.counts.finish_experiment()
        self._show()
        self._changed()

    def cycles(self, label: str, total: int, done: int = 0) -> None:
        self.counts.start_cycles(label, total, done)
        self._show()
        self._changed()

    def advance(self, n: int = 1, status: str = "") -> None:
        self.counts.advance_cycle(n)
        self._show()
        self._changed()
        if self.rank == 0 and self._display is None and n > 0:
            now = self.clock()
            if now - self._last_log >= self.log_every or self.counts.cycle.done >= self.counts.cycle.total:
                self._last_log = now
                log.info("%s", self.counts.line() + (f" ({status})" if status else ""))

    def members(self, total: int) -> None:
        self.counts.start_members(total)
        self._show()

    def member_done(self) -> None:
        self.counts.member_done()
        self._show()

    def _show(self) -> None:
        if self._display is not None:
            self._display.refresh()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.counts)

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
            self._display = None


_ACTIVE: ContextVar[CampaignProgress | None] = ContextVar("twin_campaign_progress", default=None)


@contextmanager
def campaign_progress(name: str, experiments: int, **kwargs) -> Iterator[CampaignProgress]:
    """The display of a campaign of ``experiments`` experiments; :func:`progress` inside it nests under it."""
    p = CampaignProgress(name, experiments, **kwargs)
    token = _ACTIVE.set(p)
    try:
        yield p
    finally:
        _ACTIVE.reset(token)
        p.close()


class Progress:
    """Tracks ``total`` steps of a named task. Use as ``with progress(...) as p: p.advance()``.

    Inside :func:`campaign_progress` it is the campaign display's cycle level (``description`` names the steps:
    cycles, iterations, windows); outside, a display of its own: a rich bar on an interactive terminal of rank 0,
    else a log line at most every ``log_every`` seconds and at the end."""

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
        self._campaign = _ACTIVE.get()
        if self._campaign is not None:
            # "<experiment>: cycles" -> "cycles": the experiment is on the level above
            self._campaign.cycles(description.rpartition(": ")[2], self.total)
            return
        if interactive is None:
            interactive = interactive_terminal()
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
        if self._campaign is not None:
            self._campaign.advance(n, status)
            return
        if self.rank != 0:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n,
                             description=f"{self.description} {status}".strip())
        elif time.monotonic() - self._last_log >= self.log_every or self.done >= self.total:
            self._last_log = time.monotonic()
            log.info("%s: %d/%d %s(%.1f s)", self.description, self.done, self.total,
                     f"{status} " if status else "", self._last_log - self._start)

    def resize(self, total: int) -> None:
        """The number of steps changed (a workflow's experiment became one task instead of a task per member)."""
        self.total = int(total)
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def members(self, total: int) -> None:
        """The members of the current step start (``total`` of them on this rank's group)."""
        if self._campaign is not None:
            self._campaign.members(total)

    def member_done(self) -> None:
        if self._campaign is not None:
            self._campaign.member_done()

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
