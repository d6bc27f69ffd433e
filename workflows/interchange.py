"""The command of a HighThroughputExecutor's interchange: Parsl's interchange program, in a session of its own, with
only the Parsl modules it uses. ``python -m workflows.interchange`` does what ``python -m
parsl.executors.high_throughput.interchange`` does (it reads its configuration from standard input), with two
differences:

* It leaves the driver's process group first (``os.setsid``): a terminal's Ctrl-C, ``timeout`` or ``kill -- -PGID``
  signal the whole foreground group, which killed the interchange beside the driver (a ``KeyboardInterrupt``
  traceback on the terminal), after which the driver's clean-up waited for ever for its answer. The driver alone
  gets the signal now, and stops the interchange itself (:mod:`workflows.campaign`), as Parsl does, with SIGTERM. The
  worker pools of local blocks are in process groups of their own already (Parsl's local provider).
* It imports only the Parsl modules it uses (:mod:`workflows.lean`; 0.14 s instead of 0.36 s of imports before it
  binds its ports, on the critical path of every workflow run, issue 23).
* It imports them before it reads its configuration, and ends quietly (status 0) when standard input closes with
  none: the driver starts it before it imports Parsl (:mod:`workflows.early_interchange`) and closes that pipe when
  the run ends before Parsl takes the process (or the driver is killed).
"""

from __future__ import annotations

import io
import os
import sys

from workflows.lean import import_main_module, run_main

#: The module of HTEX's interchange.
INTERCHANGE_MODULE = "parsl.executors.high_throughput.interchange"

if __name__ == "__main__":
    try:
        os.setsid()
    except OSError:  # a process group leader already (started so by hand): it keeps its group
        pass
    import_main_module(INTERCHANGE_MODULE)
    configuration = sys.stdin.buffer.read()  # Parsl closes the pipe once it has written the configuration
    if not configuration:
        sys.exit(0)
    sys.stdin = io.TextIOWrapper(io.BytesIO(configuration))  # Parsl's program reads it from there
    run_main(INTERCHANGE_MODULE)
