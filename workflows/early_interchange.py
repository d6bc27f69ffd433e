"""The interchange of a local workflow, started before the driver imports Parsl (issue 23).

Parsl's HighThroughputExecutor starts its interchange when the DataFlowKernel is loaded: it runs the interchange
command (:mod:`workflows.interchange`) and writes the interchange's configuration (the driver's ports, the log
directory ...) to its standard input, then waits until the interchange has bound its ports. The interchange's
interpreter start and imports (0.25-0.3 s on the 2-core test machine) come after the driver's own ``import parsl``
and preparation, one after the other on the critical path of every workflow run (``benchmarks/bench_workflow.py``),
while the second core waits.

:class:`EarlyInterchange` starts the same command at the start of a local run, before the driver imports Parsl: the
process starts and imports while the driver imports Parsl and prepares the experiments, then waits for its
configuration on standard input. When the DataFlowKernel starts the executor, the executor's interchange start
(Parsl's ``HighThroughputExecutor._start_local_interchange_process``, which runs ``subprocess.Popen`` on its
``interchange_launch_cmd`` with a pipe as standard input) is given this process instead of a new one, for the same
command only; everything after (the configuration written, the ports asked for, the process terminated at the end
and watched for an early death by :func:`workflows.campaign.stop_parsl`) is Parsl's, on this process, as on one it
started itself. The ``Popen`` of Parsl's executor module is replaced for the length of that one call only.

Should a future Parsl start its interchange some other way, the early process is never asked for: Parsl starts
its own as before, and :meth:`EarlyInterchange.discard` ends the early one (it closes its standard input, on which
:mod:`workflows.interchange` ends quietly, status 0), as it does when the run ends before Parsl starts (bad input,
a resumed run with nothing to do). A driver killed before it configured the interchange closes that pipe as well.
``tests/integration/test_early_interchange.py`` checks that the run's interchange is the early process.
"""

from __future__ import annotations

import functools
import subprocess

from twin.core.log import get_logger
from workflows.executors import interchange_command

log = get_logger("twin.workflows")

#: Seconds a discarded early interchange is given to end after its standard input is closed, before it is killed.
DISCARD_WAIT = 5.0


class EarlyInterchange:
    """An interchange process started now, for the executor of the run to take (see the module docstring).

    Attributes
    ----------
    proc : subprocess.Popen
        The process, its standard input a pipe on which it waits for its configuration.
    claimed : bool
        Whether an executor took it (from then on it is Parsl's to configure and to stop).
    """

    def __init__(self, command: list[str] | None = None):
        self.command = list(command or interchange_command())
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE)
        self.claimed = False

    def claim(self, command, **popen_kwargs) -> subprocess.Popen | None:
        """The process, for an executor that would start ``command`` with ``popen_kwargs`` (a pipe as standard input,
        nothing else), once; ``None`` otherwise, or when it has ended."""
        if (self.claimed or list(command) != self.command or popen_kwargs != {"stdin": subprocess.PIPE}
                or self.proc.poll() is not None):
            return None
        self.claimed = True
        log.debug("Parsl's interchange is the one started early (process %d)", self.proc.pid)
        return self.proc

    def discard(self) -> None:
        """End the process unless an executor took it: its standard input is closed (it ends quietly), then it is
        killed if it has not ended within :data:`DISCARD_WAIT` s."""
        if self.claimed:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=DISCARD_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _PopenGives:
    """Parsl's executor module's ``subprocess`` for the length of its interchange start: ``Popen`` of the early
    interchange's command gives the early process, anything else is the real module's."""

    def __init__(self, early: EarlyInterchange):
        self._early = early

    def Popen(self, args, **kwargs):  # noqa: N802 - subprocess.Popen's name, as Parsl calls it
        proc = self._early.claim(args, **kwargs)
        return proc if proc is not None else subprocess.Popen(args, **kwargs)

    def __getattr__(self, name):
        return getattr(subprocess, name)


@functools.lru_cache(maxsize=None)
def executor_class():
    """Parsl's HighThroughputExecutor whose interchange start takes its ``early_interchange`` (an
    :class:`EarlyInterchange`, or ``None``: Parsl's own start) instead of starting a process."""
    from parsl.executors import HighThroughputExecutor
    from parsl.executors.high_throughput import executor as htex_module

    class EarlyInterchangeExecutor(HighThroughputExecutor):
        early_interchange: EarlyInterchange | None = None

        def _start_local_interchange_process(self) -> None:
            if self.early_interchange is None or getattr(htex_module, "subprocess", None) is not subprocess:
                return super()._start_local_interchange_process()
            htex_module.subprocess = _PopenGives(self.early_interchange)
            try:
                return super()._start_local_interchange_process()
            finally:
                htex_module.subprocess = subprocess

    return EarlyInterchangeExecutor
