"""The command of a HighThroughputExecutor's interchange: Parsl's interchange program with only the Parsl modules it
uses (:mod:`workflows.lean`; 0.14 s instead of 0.36 s of imports before it binds its ports, on the critical path of
every workflow run, issue 23). ``python -m workflows.interchange`` does what ``python -m
parsl.executors.high_throughput.interchange`` does: it reads its configuration from standard input."""

from __future__ import annotations

from workflows.lean import run_main

#: The module of HTEX's interchange.
INTERCHANGE_MODULE = "parsl.executors.high_throughput.interchange"

if __name__ == "__main__":
    run_main(INTERCHANGE_MODULE)
