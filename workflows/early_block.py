"""The worker pool of a local workflow, started before Parsl asks for it (issue 23).

Parsl's HighThroughputExecutor starts a local block (a worker pool with its workers) only once the DataFlowKernel
has started the executor and its interchange: the executor formats the pool's command line (it holds the port the
interchange bound for its workers), and the first tick of its strategy asks the provider (``LocalProvider``) to run
it as a block: a script of the provider's ``worker_init`` lines and that command, run by ``bash`` in the background,
its exit status written next to it. Only then does the pool's interpreter start and import Parsl's pool module
(0.2-0.25 s on the 2-core test machine), before it connects to the interchange and spawns its workers, on the
critical path of every workflow run (``benchmarks/bench_workflow.py``), while the driver waits.

:class:`EarlyBlock` starts that block at the start of the run, once the run directory is the driver's: the same
kind of script (the provider's ``worker_init``, then the pool program :mod:`workflows.pool`) run the same way (in
the background, in a process group of its own, ``<script>.ec`` holding ``-`` and then its exit status). The pool's
arguments are not known yet, so the pool imports, then waits for them on standard input (``--args-on-stdin``).
When the strategy asks the provider for the first block, the provider (:func:`provider_class`) gives the words
Parsl formatted after the pool command to this pool, instead of starting a new process, for the same pool command
only, and records the block as ``LocalProvider`` records the blocks it starts (the background process's id, the
script's path), so that everything after (the status polls, which read ``<script>.ec``; the cancel at the end,
which kills the block's process group; the driver's heartbeat, which names it) is Parsl's, on this block, as on
one it started itself.

A block Parsl does not ask for (a future Parsl that starts blocks another way, a run refused or with nothing to
do before Parsl starts) is discarded: :meth:`EarlyBlock.discard` closes the pipe, on which the pool ends quietly
(status 0); a driver killed before it gave the arguments closes it as well.
``tests/integration/test_early_block.py`` checks that the run's pool is this block.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from twin.campaign.heartbeat import process_alive
from twin.core.log import get_logger
from workflows.executors import local_worker_init, pool_command
from workflows.pool import ARGS_ON_STDIN

log = get_logger("twin.workflows")

#: Seconds a discarded block is given to end after its standard input is closed, before its group is killed.
DISCARD_WAIT = 5.0
#: Seconds ``bash`` is given to start the block in the background (Parsl's local provider allows ``cmd_timeout``).
LAUNCH_TIMEOUT = 30.0


class EarlyBlock:
    """The first worker pool of a local run, started now, for the run's provider to take (see the module docstring).

    Parameters
    ----------
    script_dir : path-like
        Where the block's script, its output and its exit status go (created).
    job_name : str
        The block's ``JOBNAME`` (Parsl's ``parsl.<executor label>.block-0``, with ``.early``).
    python : str, optional
        The interpreter (default: this one, as the provider's pool command has).

    Attributes
    ----------
    pid : int
        The background process that runs the script (a process group of its own), as ``LocalProvider`` records it.
    script : Path
    claimed : bool
        Whether the provider took it (from then on it is Parsl's to watch and to cancel).
    """

    def __init__(self, script_dir, job_name: str, python: str | None = None):
        self.command = pool_command(python)
        script_dir = Path(script_dir)
        script_dir.mkdir(parents=True, exist_ok=True)
        self.script = script_dir / f"{job_name}.sh"
        self.script.write_text(f"{local_worker_init()}\nexport JOBNAME={job_name}\n{self.command} {ARGS_ON_STDIN}\n")
        self.claimed = False
        read, self._write = os.pipe()
        s = shlex.quote(str(self.script))
        # the provider's own launch (LocalProvider.submit), with the pipe's end as the pool's standard input
        wrap = (f"echo - >{s}.ec && {{ {{ bash {s} 1>{s}.out 2>{s}.err 0<&{read} {read}<&- ; echo $? >{s}.ec ; }} "
                f'>/dev/null 2>&1 & echo "PID:$!" ; }}')
        try:
            out = subprocess.run(["/bin/bash", "-c", wrap], stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, pass_fds=(read,), process_group=0, timeout=LAUNCH_TIMEOUT, check=True)
            self.pid = int(next(line[4:] for line in out.stdout.splitlines() if line.startswith("PID:")))
        except BaseException:
            os.close(self._write)
            raise
        finally:
            os.close(read)

    def claim(self, command: str) -> dict | None:
        """The block, as ``LocalProvider.resources`` records one (without its status), for a provider that would run
        ``command`` (the pool command, then the pool's arguments, which the pool is given now), once; ``None``
        otherwise, or when the block has ended."""
        prefix = shlex.split(self.command)
        words = shlex.split(command)
        if self.claimed or words[:len(prefix)] != prefix or not process_alive(self.pid):
            return None
        try:
            os.write(self._write, (json.dumps(words[len(prefix):]) + "\n").encode())
            os.close(self._write)
        except OSError:
            return None
        self.claimed = True
        log.debug("Parsl's first block is the worker pool started early (process %d)", self.pid)
        return {"job_id": str(self.pid), "remote_pid": self.pid, "script_path": str(self.script)}

    def discard(self) -> None:
        """End the block unless the provider took it: its standard input is closed (the pool ends), then its process
        group is killed if it has not ended within :data:`DISCARD_WAIT` s."""
        if self.claimed:
            return
        try:
            os.close(self._write)
        except OSError:
            pass
        deadline = time.monotonic() + DISCARD_WAIT
        while process_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if process_alive(self.pid):
            try:
                group = os.getpgid(self.pid)  # the group the launching shell made (process_group=0)
                if group != os.getpgrp():  # never this process's own
                    os.killpg(group, signal.SIGKILL)
            except OSError:
                pass


@functools.lru_cache(maxsize=None)
def provider_class():
    """Parsl's LocalProvider whose ``submit`` gives the pool command to its ``early_block`` (an :class:`EarlyBlock`,
    or ``None``: Parsl's own start) instead of starting a process."""
    from parsl.jobs.states import JobState, JobStatus
    from parsl.launchers import SimpleLauncher
    from parsl.providers import LocalProvider

    class EarlyBlockProvider(LocalProvider):
        early_block: EarlyBlock | None = None

        def submit(self, command, tasks_per_node, job_name="parsl.localprovider"):
            job = None
            if self.early_block is not None and type(self.launcher) is SimpleLauncher:  # the command as it is
                job = self.early_block.claim(command)
            if job is None:
                return super().submit(command, tasks_per_node, job_name)
            self.resources[job["job_id"]] = {**job, "status": JobStatus(JobState.RUNNING)}
            return job["job_id"]

    return EarlyBlockProvider
