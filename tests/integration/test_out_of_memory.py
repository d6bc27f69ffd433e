"""A model that needs more memory than the process can get (limits raised by hand past the machine) ends the run with
one line naming the component, its grid and the ranks, exit status 1 (not bad input: the same file runs on more
ranks), and no traceback; before, PETSc's allocation traceback and a Python one.

The process's address space is bounded with ``RLIMIT_AS`` (as ``ulimit -v`` does), so PETSc's own allocation fails
for real, without the machine running short: a 40000 x 40000 grid needs 12.8 GB per vector."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
ADDRESS_SPACE = 4 * 2**30


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _big(tmp_path, side: int, ranks: int) -> None:
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    for old, new in (("shape: [64, 64]", f"shape: [{side}, {side}]"), ("end: 50.0", "end: 2.0"),
                     ("output_every: 10.0", "output_every: 1.0"), ("ranks: 2", f"ranks: {ranks}")):
        assert old in text, old
        text = text.replace(old, new)
    text += "limits: {grid_cells: 2000000000, grid_cells_per_rank: 2000000000}\n"
    (tmp_path / "big.yaml").write_text(text)


def test_a_grid_past_the_memory_is_one_line_naming_the_component(tmp_path):
    _big(tmp_path, 40000, 1)
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "big.yaml", "-o", "out"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL,
                         preexec_fn=_bounded)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "PetscMallocA" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: model 'heat': out of memory while building its grid 40000 x 40000 on 1 rank(s) (PETSc "
                      "could not allocate): run it on more ranks or nodes, or make the grid smaller"], out.stderr
    assert not list((tmp_path / "out").rglob("*.nc"))


@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec")
def test_one_rank_out_of_memory_ends_the_job_at_once(tmp_path):
    """Rank 1's address space is bounded to 1.5 GB (a 4000 x 4000 grid's half needs more), rank 0's is not."""
    _big(tmp_path, 4000, 2)
    wrapper = tmp_path / "bounded_rank_1.sh"
    wrapper.write_text('#!/bin/sh\nif [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then ulimit -v 1500000; fi\nexec "$@"\n')
    wrapper.chmod(0o755)
    out = subprocess.run([MPIEXEC, "-n", "2", str(wrapper), sys.executable, "-m", "twin.cli", "run", "big.yaml", "-o",
                          "out"], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "PetscMallocA" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("error: model 'heat': out of memory while building its grid 4000 x 4000 on 2 rank(s) "
                                "(rank 1 of 2: "), errors
    assert errors[0].endswith("): run it on more ranks or nodes, or make the grid smaller"), errors
    assert not list((tmp_path / "out").rglob("*.nc"))


def test_a_small_virtual_memory_limit_is_named_with_what_to_raise(tmp_path):
    """Found by a probe: under a batch system's or a login node's vmem limit (``ulimit -v``) the libraries twin loads
    late could not be mapped and the experiment FAILED with the loader's ``ImportError: ... failed to map segment from
    shared object``, and an allocation that failed said nothing of the limit. Both now say out of memory, name the
    limit and that it can be raised. And about one run in two hung for good (SIGTERM could not end it) inside
    OpenBLAS's thread start in ``dlopen``: under a limit twin runs one OpenBLAS thread (:mod:`twin.core.blas`)."""
    from campaign_case import l96_campaign
    from twin.core.blas import THREAD_VARIABLES

    (tmp_path / "c.yaml").write_text(l96_campaign("bench", n=400, N=20, cycles=6))
    limit = 500_000  # KiB: MPI and PETSc start, the libraries of the analysis and the outputs do not all fit

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit * 1024, limit * 1024))

    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "-q", "c.yaml", "-o", "out"], capture_output=True,
                         text=True, env={k: v for k, v in ENV.items() if k not in THREAD_VARIABLES}, cwd=tmp_path,
                         timeout=90, stdin=subprocess.DEVNULL, preexec_fn=bounded)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    failed = [ln for ln in out.stderr.splitlines() if ln.startswith("error: experiment bench FAILED: out of memory")]
    assert len(failed) == 1, out.stderr[-3000:]
    assert f"virtual-memory limit of {limit // 1024} MiB (ulimit -v {limit}, or the batch system's)" in failed[0], failed


def test_a_limit_too_small_for_petscs_libraries_is_out_of_memory_not_bad_input(tmp_path):
    """Found by a probe: under ``ulimit -v 200000`` the loader cannot map one of PETSc's libraries while PETSc starts,
    which read "PETSc could not start: libtrilinos_triutils.so.13.2: failed to map segment from shared object; check
    PETSC_OPTIONS and the PETSc options on the command line", exit status 2 (bad input). It is out of memory: the
    limit is named with what to raise, exit status 1."""
    limit = 200_000  # KiB: Python, NumPy and twin's configuration load; PETSc's libraries do not all map

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit * 1024, limit * 1024))

    (tmp_path / "q.yaml").write_text((ROOT / "configs" / "quickstart.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "q.yaml", "-o", "out"], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL, preexec_fn=bounded)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: PETSc could not start: out of memory while loading "), errors
    assert f"raise this process's virtual-memory limit of {limit // 1024} MiB (ulimit -v {limit}" in errors[0], errors
    assert "PETSC_OPTIONS" not in errors[0]


def test_a_workflow_step_that_cannot_map_a_library_says_out_of_memory():
    """A step in a warm worker or a task process whose import met the limit (a probe's analysis task: "ImportError:
    libscipy_openblas...so: failed to map segment from shared object") gives the out-of-memory line, retried."""
    from twin.campaign.task import EXIT_UNEXPECTED, _failure

    code, line = _failure(ImportError("libscipy_openblas-6cdc3b4a.so: failed to map segment from shared object"))
    assert code == EXIT_UNEXPECTED
    assert line.startswith("error: out of memory while loading libscipy_openblas-6cdc3b4a.so (the dynamic loader "
                           "could not map it): "), line
    code, line = _failure(ImportError("No module named 'nothing'"))
    assert line == "ImportError: No module named 'nothing'"


@pytest.mark.parametrize("given, expect", [({"OPENBLAS_NUM_THREADS": ""}, "1 None"),  # empty: none given
                                           ({"OMP_NUM_THREADS": "2"}, "None 2"), ({}, "1 None")])
def test_blas_threads_under_a_memory_limit(given, expect):
    """Under a virtual-memory limit an unset (or empty) BLAS thread count becomes 1; a user's count above 1 is kept and
    warned about (a later probe saw every such run hang in OpenBLAS's thread start)."""
    from twin.core.blas import THREAD_VARIABLES

    code = ("import os, sys; from twin.core.blas import one_blas_thread_under_a_memory_limit as f; said = f(); "
            "print(os.environ.get('OPENBLAS_NUM_THREADS') or None, os.environ.get('OMP_NUM_THREADS')); "
            "print(said or '', file=sys.stderr)")
    env = {**{k: v for k, v in ENV.items() if k not in THREAD_VARIABLES}, **given}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         preexec_fn=_bounded)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expect
    if "OMP_NUM_THREADS" in given:
        assert out.stderr.startswith("OMP_NUM_THREADS=2 under a virtual-memory limit of 4096 MiB (ulimit -v): OpenBLAS "
                                     "may hang for good"), out.stderr
    else:
        assert out.stderr.strip() == ""


#: the Lorenz-96 workflow of benchmarks/bench_workflow.py (8 members, 6 cycles) in two warm workers, a task per member
WORKFLOW = "resources: {type: local, ranks: 1, workers: 2, launcher: worker, task: member}\n"


def _workflow_under(tmp_path, limit_kib: int, env=None) -> subprocess.CompletedProcess:
    from campaign_case import l96_campaign

    (tmp_path / "wf.yaml").write_text(l96_campaign("bench", N=8, cycles=6, extra=WORKFLOW))

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_kib * 1024, limit_kib * 1024))

    return subprocess.run([sys.executable, "-m", "twin.cli", "run", "-q", "wf.yaml", "-o", "out"], capture_output=True,
                          text=True, env=env or ENV, cwd=tmp_path, timeout=180, stdin=subprocess.DEVNULL,
                          preexec_fn=bounded)


def test_a_workflow_under_a_limit_below_its_floor_is_refused_before_anything_starts(tmp_path):
    """Found by a probe: a workflow on local resources under ``ulimit -v`` 300000-550000 aborted inside ZeroMQ
    (status 134, no line of twin's), ended with a traceback (``RuntimeError: can't start new thread``), lost a worker
    after a minute, or hung until it was killed (a worker pool whose thread could not start). Below the floor its
    processes need (:data:`workflows.executors.MEMORY_FLOOR_MIB`) the run is refused at once, in one line that names
    the limit and what to do, with exit status 1 (out of memory, not bad input), before any Parsl process starts."""
    from workflows.executors import MEMORY_FLOOR_MIB

    out = _workflow_under(tmp_path, 420_000)  # it hung here
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        f"error: this process's virtual-memory limit of 410 MiB (ulimit -v 420000, or the batch system's) is below the "
        f"{MEMORY_FLOOR_MIB} MiB that each process of a workflow on local resources needs (its driver, worker pool and "
        "workers, with twin's libraries): raise it, or run the campaign online (resources.workers: 1, without "
        "--workflow)"], out.stderr
    assert not (tmp_path / "out" / "runinfo").exists()  # no interchange, pool or worker was started


def test_a_workflow_just_above_its_floor_runs_with_few_malloc_arenas(tmp_path):
    """Under ``ulimit -v 530000``, 18 MiB above the floor, the workflow's driver could not start its threads with
    glibc's default arenas (8 per core, 64 MiB of address space reserved each); with two per process
    (:mod:`twin.core.arenas`) it runs to the end. ``MALLOC_ARENA_MAX`` set by the user is kept: with 16, as glibc
    would have on this machine, the driver's thread cannot start, said in one line as out of memory."""
    out = _workflow_under(tmp_path, 530_000)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("done: 56 task(s)"), out.stdout

    (tmp_path / "arenas-16").mkdir()  # a campaign of its own, not inside the first run's directory
    out = _workflow_under(tmp_path / "arenas-16", 530_000, env=dict(ENV, MALLOC_ARENA_MAX="16"))
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: out of memory: "), out.stderr[-3000:]
    assert "raise this process's virtual-memory limit of 517 MiB (ulimit -v 530000" in errors[0], errors


def test_malloc_arenas_under_a_memory_limit():
    """Under a limit an unset ``MALLOC_ARENA_MAX`` becomes 2 for the processes started from here (and this one, through
    ``mallopt``); a user's value is kept; without a limit nothing changes."""
    code = ("import os; from twin.core.arenas import few_malloc_arenas_under_a_memory_limit as f; did = f(); "
            "print(did, os.environ.get('MALLOC_ARENA_MAX'))")
    env = {k: v for k, v in ENV.items() if k != "MALLOC_ARENA_MAX"}
    runs = [({}, _bounded, "True 2"), ({"MALLOC_ARENA_MAX": "4"}, _bounded, "False 4"), ({}, None, "False None")]
    for given, limit, expect in runs:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **given},
                             timeout=60, preexec_fn=limit)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expect, (given, out.stdout)


def test_a_thread_or_the_interpreter_out_of_memory_is_said_so():
    """A thread that could not start is out of memory under a limit, and names the other limits without one; the
    interpreter's ``SystemError`` is out of memory only under a limit; an error that carries an out-of-memory cause
    on (twin.io.atomic.root_call's ``Type: message``) is said by its cause."""
    code = ("from twin.core.memory import out_of_memory as f, out_of_memory_carried as g; "
            "from twin.core.errors import OutputError; "
            "print(f(RuntimeError(\"can't start new thread\"))); print(f(SystemError('error return without exception "
            "set'))); print(f(RuntimeError('other')));\n"
            "cause = ImportError('/x/libz.so.1: failed to map segment from shared object')\n"
            "try:\n    raise OutputError(f'ImportError: {cause}') from cause\nexcept OutputError as e:\n    print(g(e))\n"
            "try:\n    raise OutputError(f'could not write x: {cause}') from cause\nexcept OutputError as e:\n"
            "    print(g(e))\n")
    env = {k: v for k, v in ENV.items() if k != "MALLOC_ARENA_MAX"}
    bounded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                             preexec_fn=_bounded)
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert bounded.returncode == 0 and free.returncode == 0, bounded.stderr + free.stderr
    limit = "raise this process's virtual-memory limit of 4096 MiB (ulimit -v 4194304, or the batch system's)"
    assert bounded.stdout.splitlines() == [
        f"out of memory: a thread could not start; {limit}",
        f"out of memory: the interpreter could not get memory (error return without exception set); {limit}",
        "None",
        "out of memory while loading libz.so.1 (the dynamic loader could not map it): "
        f"{limit}, too small for twin's libraries and the experiment",
        "None"], bounded.stdout
    assert free.stdout.splitlines()[:3] == [
        "out of memory: a thread could not start (the machine's memory, or the limit on processes and threads: ulimit "
        "-u, or the batch system's)", "None", "None"], free.stdout
