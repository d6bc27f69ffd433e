"""The command of a Parsl worker pool: Parsl's ``process_worker_pool`` run from a main module that imports nothing.

``python -m workflows.pool ARGS`` does what ``python -m parsl.executors.high_throughput.process_worker_pool ARGS``
does, with two differences that matter on the critical path of every workflow run (issue 23):

* The pool starts its helper processes with the ``spawn`` method, and a spawned child imports its parent's main
  module again before it runs. With Parsl's pool module as the main module, the server process of the pool's
  ``multiprocessing.Manager`` imports Parsl (0.35-0.45 s on the 2-core test machine) before the pool can register
  with the interchange, and every worker imports it once more as its main module before it imports it for its task
  loop. With this module as the main module a child imports this module (nothing) instead: ``Manager()`` takes
  0.08 s instead of 0.40-0.45 s.
* The pool, and every worker it spawns (which imports this module first, as ``__mp_main__``, then the pool module
  to find its worker function), imports only the Parsl modules the pool uses, not the whole library
  (:mod:`workflows.lean`): 0.15 s instead of 0.36 s in each of them.

``benchmarks/bench_workflow.py`` measures both. The pool's program is Parsl's own (:func:`workflows.lean.run_main`).

With the single argument :data:`ARGS_ON_STDIN` the pool imports Parsl's pool module, then reads its arguments from
standard input (a JSON list of words, one line) and runs with them; it ends quietly (status 0) when standard input
closes with none: a local run starts its first block before Parsl knows the pool's arguments
(:mod:`workflows.early_block`).
"""

from __future__ import annotations

from workflows.lean import lean_parsl, run_main

#: The module of Parsl's worker pool (HighThroughputExecutor).
POOL_MODULE = "parsl.executors.high_throughput.process_worker_pool"
#: The pool's only argument when it is to read its arguments from standard input.
ARGS_ON_STDIN = "--args-on-stdin"

if __name__ == "__mp_main__":  # a process the pool spawned: its worker function's module comes next
    lean_parsl()

if __name__ == "__main__":
    import sys

    if sys.argv[1:] == [ARGS_ON_STDIN]:
        import json

        from workflows.lean import import_main_module

        import_main_module(POOL_MODULE)  # while the driver starts Parsl
        given = sys.stdin.readline()
        if not given.strip():
            sys.exit(0)
        sys.argv[1:] = json.loads(given)
    run_main(POOL_MODULE)
