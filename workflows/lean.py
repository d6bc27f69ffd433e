"""Parsl's own processes (the interchange, a worker pool and the pool's workers) with only the Parsl modules they use.

``import parsl.executors.high_throughput.process_worker_pool`` first runs ``parsl/__init__.py``, which imports the
whole library for the driver's sake (the DataFlowKernel, every executor and provider, typeguard, requests,
``unittest.mock`` ...), and ``parsl/executors/__init__.py``, which imports every executor: 0.36 s of the 0.45 s that
the interchange, a pool and each of its workers take to start on the 2-core test machine, with the pool module
itself 5 ms of it. Those processes follow one another on the critical path of every workflow run (interchange ->
pool -> workers -> first task: ``benchmarks/bench_workflow.py``, issue 23), and none of them uses what the package
initialisers import.

:func:`lean_parsl` puts the three packages on the way (``parsl``, ``parsl.executors``,
``parsl.executors.high_throughput``) into ``sys.modules`` as plain package objects over Parsl's own directories,
without running their ``__init__``; importing a module below them then imports that module and what it imports
itself, from the installed Parsl, as always (0.15 s instead of 0.36 s for the pool module, 0.14 s for the
interchange). Nothing of Parsl is copied or changed. Should a future Parsl module need a name that only a package
initialiser defines, its import fails; :func:`import_main_module` then forgets every Parsl module it imported and
imports the module the usual way (the slower start, same behaviour).

Only the processes that run nothing but one of Parsl's programs do this (:mod:`workflows.pool`,
:mod:`workflows.interchange`, and the processes a pool spawns, which import the pool's main module first): the
driver, which uses Parsl's API, imports Parsl whole, through :func:`import_parsl_api`. Parsl decorates its API
(``Config``, the DataFlowKernel's methods ...) with typeguard's ``@typechecked``, which at import time parses the
source of each decorated function's module again, rewrites the function with type checks and compiles it: 0.2 s of
the driver's 0.45 s ``import parsl`` on the 2-core test machine, before the interchange can start, on the critical
path of every workflow run (and a check of every argument on each call of them after). :func:`import_parsl_api`
imports Parsl with that decorator leaving functions as written (as typeguard itself does under ``python -O``) and
gives typeguard its decorator back after; what Parsl is given is built by :mod:`workflows.executors` from validated
settings, and the workflow tests run it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types

#: The packages between ``parsl`` and HTEX's process modules, whose initialisers import the whole library.
PACKAGES = ("parsl", "parsl.executors", "parsl.executors.high_throughput")


def _package(name: str, spec) -> types.ModuleType:
    """A package module over ``spec``'s directories whose initialiser runs only when a name is asked of it that it
    does not have and that is not a submodule (PEP 562's module ``__getattr__``, which ``from parsl import curvezmq``
    asks before it imports the submodule): ``parsl.__version__``, ``from parsl import python_app``."""
    package = types.ModuleType(name)
    package.__spec__, package.__loader__, package.__file__ = spec, spec.loader, spec.origin
    package.__package__, package.__path__ = name, list(spec.submodule_search_locations)

    def complete(attr: str):
        if attr.startswith("__") and attr.endswith("__") and attr not in ("__version__", "__all__"):
            raise AttributeError(attr)  # a probe for a special name (copy, pickle, inspect): not worth the library
        if importlib.util.find_spec(f"{name}.{attr}") is not None:  # from parsl import curvezmq: the submodule
            return importlib.import_module(f"{name}.{attr}")
        del package.__getattr__
        spec.loader.exec_module(package)  # the package's own initialiser, in this module, once
        return getattr(package, attr)

    package.__getattr__ = complete
    return package


def lean_parsl() -> bool:
    """Put :data:`PACKAGES` into ``sys.modules`` without running their initialisers (each runs when a name is asked
    of its package that only it defines); ``False`` (nothing done) when Parsl is imported already or not found."""
    if any(name in sys.modules for name in PACKAGES):
        return False
    for name in PACKAGES:  # a child's spec is found through its parent package, which must be in place first
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            forget_parsl()
            return False
        sys.modules[name] = package = _package(name, spec)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, package)
    return True


def forget_parsl() -> None:
    """Drop every Parsl module from ``sys.modules`` (after a lean import that failed)."""
    for name in [m for m in sys.modules if m == "parsl" or m.startswith("parsl.")]:
        del sys.modules[name]


def import_main_module(name: str) -> types.ModuleType:
    """Import Parsl's module ``name`` through :func:`lean_parsl`, or the usual way when that fails."""
    if lean_parsl():
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a Parsl whose modules need their package initialisers: import it whole
            forget_parsl()
    return importlib.import_module(name)


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


def run_main(name: str) -> None:
    """Run the command line program of Parsl's module ``name`` (the statements of its ``__main__`` block, in the
    namespace of the module imported as itself, so that what its children unpickle is found by the module's name),
    with this process's command line; a module without such a block is run as the main module, as Parsl runs it."""
    import runpy

    module = import_main_module(name)
    block = main_block(module)
    if block is None:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
        return
    exec(compile(block, module.__file__, "exec"), vars(module))  # noqa: S102 - Parsl's own source, as Parsl runs it


def parsl_modules() -> list[str]:
    """The Parsl modules this process has imported (a lean process has no ``parsl.dataflow``: the tests and
    ``benchmarks/bench_workflow.py`` ask a worker)."""
    return sorted(m for m in sys.modules if m == "parsl" or m.startswith("parsl."))


def import_parsl_api() -> types.ModuleType:
    """``import parsl`` for a workflow's driver, Parsl's ``@typechecked`` functions as written (see the module
    docstring); Parsl as it is when it is imported already, or when typeguard is not installed."""
    if "parsl" in sys.modules:
        return importlib.import_module("parsl")
    try:
        import typeguard
    except ImportError:
        return importlib.import_module("parsl")

    def as_written(target=None, **options):  # @typechecked and @typechecked(...) alike
        return as_written if target is None else target

    decorator = typeguard.typechecked
    typeguard.typechecked = as_written
    try:
        return importlib.import_module("parsl")
    finally:
        typeguard.typechecked = decorator
