"""The command of a Parsl worker pool: Parsl's ``process_worker_pool`` run from a main module that imports nothing.

``python -m workflows.pool ARGS`` does what ``python -m parsl.executors.high_throughput.process_worker_pool ARGS``
does, with one difference that matters on the critical path of every workflow run (issue 23). The pool starts its
helper processes with the ``spawn`` method, and a spawned child imports its parent's main module again before it
runs. With Parsl's pool module as the main module, the server process of the pool's ``multiprocessing.Manager``
imports Parsl (0.35-0.45 s on the 2-core test machine) before the pool can register with the interchange, and every
worker imports it once more as its main module before it imports it for its task loop. With this module as the main
module a child imports this module (nothing) instead: ``Manager()`` takes 0.08 s instead of 0.40-0.45 s
(``benchmarks/bench_workflow.py``).

How: the pool module is imported as itself (so the worker function the children run is found by its module's name,
as always), and the statements of its ``if __name__ == "__main__":`` block, which are the pool's whole command line
program, are compiled from Parsl's own source and run in that module's namespace. Nothing of Parsl is copied here,
so the pool is whichever Parsl is installed; should a future Parsl have no such block, the pool module is run as the
main module as Parsl runs it (the slower start, same behaviour).
"""

from __future__ import annotations

import ast
import importlib
import runpy

#: The module of Parsl's worker pool (HighThroughputExecutor).
POOL_MODULE = "parsl.executors.high_throughput.process_worker_pool"


def main_block(module) -> ast.Module | None:
    """The statements of ``module``'s ``if __name__ == "__main__":`` block as a module of their own, or ``None``."""
    import inspect

    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value == "__main__" and isinstance(test.ops[0], ast.Eq)):
            return ast.Module(body=node.body, type_ignores=[])
    return None


def run_pool() -> None:
    """Run Parsl's worker pool with this process's command line (``sys.argv[1:]``)."""
    module = importlib.import_module(POOL_MODULE)
    block = main_block(module)
    if block is None:
        runpy.run_module(POOL_MODULE, run_name="__main__", alter_sys=True)
        return
    exec(compile(block, module.__file__, "exec"), vars(module))  # noqa: S102 - Parsl's own source, as Parsl runs it


if __name__ == "__main__":
    run_pool()
