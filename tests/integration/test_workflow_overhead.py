"""What a workflow run no longer spends time on (issue 23, goal 2; the times are in benchmarks/bench_workflow.py):
an experiment without a checkpoint is not scanned by a process of its own (there is nothing to verify), one with a
checkpoint still is; a warm run warms every worker up, and its result is online mode's, bit for bit."""

from __future__ import annotations

import pytest
from campaign_case import arrays, assert_same, l96_campaign

from twin.campaign import layout
from twin.campaign.experiments import prepare_experiments
from twin.campaign.task import WorkerRegistry
from twin.config.loader import load_campaign

pytestmark = pytest.mark.timeout(300)

#: online runs of these campaigns checkpoint every cycle as the workflow does, so every checkpoint is compared
#: a task per member in every cycle (resources.task auto would run the rest of these tiny experiments as one task)
WARM = "resources: {type: local, ranks: 1, workers: 2, launcher: worker, task: member}\noutputs: {checkpoint_every: 1}\n"


def test_only_experiments_with_a_checkpoint_are_scanned(tmp_path):
    from workflows.campaign import FRESH_SCAN, _Scans

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("scan", extra=WARM))
    fresh = prepare_experiments(load_campaign(path), tmp_path / "run")
    scans = _Scans(fresh)
    assert scans.procs == {} and scans.results() == {fresh[0]: FRESH_SCAN}

    # a checkpoint that does not verify (zeros): scanned, found bad (the experiment starts at init again), untouched
    ck = layout.checkpoint_file(fresh[0], 0)
    ck.parent.mkdir(parents=True, exist_ok=True)
    ck.write_bytes(bytes(4096))
    scans = _Scans(fresh)
    assert list(scans.procs) == fresh
    assert scans.results()[fresh[0]]["checkpoint"] == -1
    assert ck.read_bytes() == bytes(4096)


def test_a_warm_run_warms_every_worker_and_gives_the_online_analysis(tmp_path):
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from workflows.campaign import run_workflow

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("warmup", N=6, cycles=4, extra=WARM))
    loaded = load_campaign(path)
    result = run_workflow(loaded, tmp_path / "wf", interactive=False)
    assert result.ok, result
    assert result.tasks_run == 1 + 4 * (6 + 1) + 1  # the warm-ups are not campaign tasks
    # both workers recorded themselves (warm-up or step) and no step left one busy (a warm-up for the outputs, which
    # runs while nothing else waits, may be cut short by the end of the run: workflows.warm)
    states = WorkerRegistry(tmp_path / "wf" / "runinfo" / "workers").states()
    assert len(states) == 2 and set(states.values()) <= {WorkerRegistry.IDLE, WorkerRegistry.WARMING}
    exp = layout.experiment_dir(tmp_path / "wf", "warmup")
    assert {r["pid"] for r in layout.read_task_log(exp)} <= set(states)

    run_online(loaded, MPI.COMM_SELF, tmp_path / "online")
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "warmup")))


def test_the_pool_command_is_parsls_own_pool_program():
    """``python -m workflows.pool`` runs the statements of Parsl's pool module's ``__main__`` block (its command line
    program, compiled from Parsl's source), with that module imported as itself."""
    import ast
    import subprocess
    import sys

    import parsl.executors.high_throughput.process_worker_pool as pwp

    from workflows.lean import main_block

    block = main_block(pwp)
    assert block is not None
    assert ast.unparse(block.body[0]) == "parser = get_arg_parser()"
    assert any("Manager(" in ast.unparse(node) for node in ast.walk(block) if isinstance(node, ast.Try))
    out = subprocess.run([sys.executable, "-P", "-m", "workflows.pool", "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "--max_workers_per_node" in out.stdout and "--hb_period" in out.stdout


#: A process importing Parsl's pool or interchange module the lean way (workflows.lean), then asking its package for
#: what only the package's initialiser defines
LEAN_PROBE = """
import sys
from workflows.lean import import_main_module, parsl_modules
import_main_module(sys.argv[1])
lean = parsl_modules()
import parsl
from parsl import python_app
from parsl.version import VERSION
print(repr(("parsl.dataflow.dflow" in lean, "parsl.executors.threads" in lean, parsl.__version__ == VERSION,
            callable(python_app), "parsl.dataflow.dflow" in sys.modules)))
"""


@pytest.mark.parametrize("module", ["parsl.executors.high_throughput.process_worker_pool",
                                    "parsl.executors.high_throughput.interchange"])
def test_parsls_processes_import_only_the_modules_they_use(module):
    """The pool and the interchange import their module without the package initialisers' whole library (the
    DataFlowKernel, every executor), and a name only an initialiser defines is still there when asked for: the
    initialiser runs then."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-P", "-c", LEAN_PROBE, module], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    dflow_lean, threads_lean, version, app, dflow_after = ast.literal_eval(out.stdout.strip())
    assert (dflow_lean, threads_lean) == (False, False)
    assert version and app and dflow_after


def test_a_lean_import_that_fails_is_done_the_usual_way():
    """A module that cannot be imported the lean way is imported again with Parsl whole (here it does not exist,
    so the usual way fails as well, with Python's own error), and no package of the lean attempt is left behind."""
    import subprocess
    import sys

    probe = ("import sys\nfrom workflows.lean import import_main_module\ntry:\n"
             "    import_main_module('parsl.no_such_module')\nexcept ModuleNotFoundError as exc:\n"
             "    print(exc.name, '__getattr__' in vars(sys.modules['parsl']), 'parsl.dataflow.dflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["parsl.no_such_module", "False", "True"]


TYPECHECK_PROBE = """
import sys, typeguard
decorator = typeguard.typechecked
if sys.argv[1] == "api":
    from workflows.lean import import_parsl_api
    parsl = import_parsl_api()
else:
    import parsl
from parsl.config import Config
from parsl.dataflow.dflow import DataFlowKernel
checked = [f.__code__.co_names.count("check_argument_types_internal") > 0 for f in (Config.__init__, DataFlowKernel.__init__)]
print(checked, typeguard.typechecked is decorator, callable(parsl.python_app))
"""


def test_the_driver_imports_parsl_without_typeguards_instrumentation():
    """``import_parsl_api`` gives Parsl's API with its ``@typechecked`` functions as written and typeguard its
    decorator back; a plain ``import parsl`` instruments them (what the probe tells apart)."""
    import ast
    import subprocess
    import sys

    seen = {}
    for way in ("api", "plain"):
        out = subprocess.run([sys.executable, "-P", "-c", TYPECHECK_PROBE, way], capture_output=True, text=True,
                             timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        seen[way] = out.stdout.split("]")[0] + "]", out.stdout.split("]")[1].split()
    assert ast.literal_eval(seen["plain"][0]) == [True, True]
    assert ast.literal_eval(seen["api"][0]) == [False, False]
    assert seen["api"][1] == seen["plain"][1] == ["True", "True"]


def test_parsl_is_loaded_with_its_first_block_submitted_and_the_strategy_slowed(tmp_path):
    import parsl

    from twin.config.schema import LocalResources
    from workflows.executors import (
        INTERCHANGE_COMMAND_MODULE,
        POOL_COMMAND_MODULE,
        STRATEGY_FIRST_PERIOD,
        STRATEGY_PERIOD,
        build_config,
        load_parsl,
        scrubbed_environ,
    )
    from workflows.lean import parsl_modules

    resources = LocalResources(type="local", workers=1)
    config = build_config(resources, tmp_path)
    assert config.strategy_period == STRATEGY_FIRST_PERIOD < STRATEGY_PERIOD["local"]
    assert f"-m {POOL_COMMAND_MODULE} " in config.executors[0].launch_cmd
    assert config.executors[0].interchange_launch_cmd[1:] == ["-m", INTERCHANGE_COMMAND_MODULE]
    dfk = load_parsl(config, resources)
    try:
        assert len(config.executors[0].blocks_to_job_id) == 1
        assert dfk.job_status_poller.interval == STRATEGY_PERIOD["local"]
        # the pool runs tasks (a function of an installed module: the worker imports it by name)
        task = parsl.python_app(scrubbed_environ)({"HOME": "/h", "OMPI_COMM_WORLD_RANK": "0"})
        assert task.result(timeout=120) == {"HOME": "/h"}
        # the worker (spawned by the pool, which imports workflows.pool first) holds only what the pool uses
        held = parsl.python_app(parsl_modules)().result(timeout=60)
        assert "parsl.executors.high_throughput.process_worker_pool" in held
        assert "parsl.dataflow.dflow" not in held and "parsl.providers" not in held
    finally:
        dfk.cleanup()
        parsl.clear()


def test_a_task_process_imports_xarray_only_for_the_outputs_of_finalize(tmp_path):
    """A step in a process of its own (``launcher: mpiexec``, Slurm tasks) imports xarray and pandas (0.3 s on the
    2-core test machine) only where a dataset is built: init (observations.nc is written with netCDF4), the forecasts
    and the analyses (diagnostics.nc is appended with netCDF4) leave them out; finalize writes its CF files through
    xarray."""
    import json
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("lean", N=4, cycles=1, extra=WARM))
    exp, = prepare_experiments(load_campaign(path), tmp_path / "run")
    probe = ("import json, runpy, sys\n"
             "sys.argv = ['twin.campaign.task'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_module('twin.campaign.task', run_name='__main__')\n"
             "except SystemExit as exc:\n"
             "    status = exc.code\n"
             "print(json.dumps([status, 'xarray' in sys.modules, 'pandas' in sys.modules]))\n")
    steps = [["init"]] + [["forecast", "--cycle", "0", "--member", str(m)] for m in range(4)] + \
        [["analyse", "--cycle", "0"], ["finalize"]]
    seen = {}
    for step in steps:
        out = subprocess.run([sys.executable, "-c", probe, step[0], str(exp), *step[1:]], capture_output=True,
                             text=True, timeout=240)
        status, xarray, pandas = json.loads(out.stdout.strip().splitlines()[-1])
        assert status in (0, None), out.stderr[-2000:]
        seen.setdefault(step[0], set()).add((xarray, pandas))
    assert seen == {"init": {(False, False)}, "forecast": {(False, False)}, "analyse": {(False, False)},
                    "finalize": {(True, True)}}
    assert (exp / "observations.nc").is_file() and (exp / "diagnostics.nc").is_file()
    assert (exp / "posterior.nc").is_file()


def test_warm_analyses_append_the_diagnostics_every_few_seconds_and_give_the_online_file(tmp_path):
    """A warm worker's analysis no longer appends its record to ``diagnostics.nc`` every cycle (a NetCDF open and
    close, 11 ms of a 30-ms analysis): every :data:`twin.campaign.experiment.DIAGNOSTICS_EVERY` seconds and at the
    last cycle, the records it lacks taken from the checkpoints. Two workers' setups take turns, as Parsl hands out
    the analyses: the file holds no record before the last cycle, every record after it, and equals a run that
    appended every cycle, bit for bit."""
    import shutil

    from mpi4py import MPI

    from twin.campaign import steps
    from twin.campaign.experiment import setup
    from twin.campaign.outputs import diagnostics_count
    from twin.campaign.task import run_in_worker

    path = tmp_path / "c.yaml"
    cycles = 5
    path.write_text(l96_campaign("records", N=4, cycles=cycles, extra=WARM))
    deferred = prepare_experiments(load_campaign(path), tmp_path / "run")[0]
    run_in_worker(["init", str(deferred)])
    each = tmp_path / "each"
    shutil.copytree(deferred, each)
    workers = [setup(deferred, MPI.COMM_SELF), setup(deferred, MPI.COMM_SELF)]
    for s in workers:
        s.defer_records = True
    plain = setup(each, MPI.COMM_SELF)  # a step of its own appends at once
    try:
        for k in range(cycles):
            for exp, s in ((deferred, workers[k % 2]), (each, plain)):
                for m in range(4):
                    steps.forecast_member(exp, k, m, MPI.COMM_SELF, s)
                steps.analyse(exp, k, MPI.COMM_SELF, s)
            assert diagnostics_count(each / "diagnostics.nc", None) == k + 1
            assert diagnostics_count(deferred / "diagnostics.nc", None) == (cycles if k == cycles - 1 else -1)
    finally:
        for s in [*workers, plain]:
            s.destroy()
    import xarray as xr

    with xr.open_dataset(deferred / "diagnostics.nc") as a, xr.open_dataset(each / "diagnostics.nc") as b:
        assert sorted(a.data_vars) == sorted(b.data_vars) and a.sizes == b.sizes
        for name in a.data_vars:
            assert a[name].values.tobytes() == b[name].values.tobytes(), name


def test_an_experiment_its_policy_stops_leaves_every_earlier_record_in_the_diagnostics(tmp_path):
    """A warm worker's analysis that stops its experiment (too few members left) first brings ``diagnostics.nc`` up to
    the cycle before, as online mode does when it stops: the file does not stay behind the checkpoints of an
    experiment that no later analysis will append to."""
    from mpi4py import MPI

    from twin.campaign import steps
    from twin.campaign.experiment import setup
    from twin.campaign.outputs import diagnostics_count
    from twin.campaign.task import run_in_worker
    from twin.core.errors import WorkflowError

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("stops", N=4, cycles=5, extra=WARM))
    exp = prepare_experiments(load_campaign(path), tmp_path / "run")[0]
    run_in_worker(["init", str(exp)])
    s = setup(exp, MPI.COMM_SELF)
    s.defer_records = True
    try:
        for k in range(3):
            for m in range(4):
                steps.forecast_member(exp, k, m, MPI.COMM_SELF, s)
            steps.analyse(exp, k, MPI.COMM_SELF, s)
        assert diagnostics_count(exp / "diagnostics.nc", None) == -1  # nothing due yet
        for m in range(1, 4):
            steps.forecast_member(exp, 3, m, MPI.COMM_SELF, s)
        layout.write_json(layout.failed_marker(exp, 3, 0), {"cycle": 3, "member": 0, "reason": "diverged"})
        with pytest.raises(WorkflowError, match="only 3 live member"):
            steps.analyse(exp, 3, MPI.COMM_SELF, s, min_members=4)
    finally:
        s.destroy()
    assert diagnostics_count(exp / "diagnostics.nc", None) == 3


def test_the_steps_warm_up_leaves_xarray_to_the_warm_up_for_the_outputs(tmp_path):
    """A worker's warm-up for the steps builds the setup without xarray (0.3 s that held the first forecasts back);
    the warm-up for the outputs imports it; both record the worker warming, then idle."""
    import json
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    path.write_text(l96_campaign("warmth", N=3, cycles=1, extra=WARM))
    exp, = prepare_experiments(load_campaign(path), tmp_path / "run")
    probe = ("import json, sys\nfrom twin.campaign.task import WorkerRegistry, warm_up\n"
             "warm_up([sys.argv[1]], sys.argv[2], [])\nsteps = 'xarray' in sys.modules\n"
             "warm_up([sys.argv[1]], sys.argv[2], [], for_finalize=True)\n"
             "print(json.dumps([steps, 'xarray' in sys.modules, WorkerRegistry(sys.argv[2]).states()]))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(exp), str(tmp_path / "reg")], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    steps, outputs, states = json.loads(out.stdout.strip().splitlines()[-1])
    assert (steps, outputs, list(states.values())) == (False, True, [WorkerRegistry.IDLE])


def test_parsl_runs_a_task_of_a_higher_priority_number_after_the_others(tmp_path):
    """What the warm-ups for the outputs rely on (workflows.warm): with the one worker busy, tasks queued with
    Parsl's priority 1 run after those with priority 0, whatever the order they were submitted in (the campaign's
    own bash app, each task writing when it ran)."""
    import time

    import parsl

    from twin.config.schema import LocalResources
    from workflows.campaign import _task
    from workflows.executors import build_config, load_parsl

    resources = LocalResources(type="local", workers=1)
    dfk = load_parsl(build_config(resources, tmp_path), resources)
    app = parsl.bash_app(_task)

    def stamp(name: str, seconds: float, priority: int):
        return app(f"sleep {seconds}; date +%s.%N", stdout=str(tmp_path / f"{name}.out"),
                   parsl_resource_specification={"priority": priority})

    try:
        stamp("up", 0, 0).result(timeout=120)  # the worker is up
        first = stamp("first", 1, 0)  # holds the worker while the rest queue
        time.sleep(0.3)
        futures = [stamp(f"later{i}", 0, 1) for i in range(2)] + [stamp(f"sooner{i}", 0, 0) for i in range(2)]
        for fut in [first, *futures]:
            fut.result(timeout=120)
    finally:
        dfk.cleanup()
        parsl.clear()
    ran = {p.stem: float(p.read_text()) for p in tmp_path.glob("*.out")}
    assert ran["first"] < min(ran["sooner0"], ran["sooner1"])
    assert max(ran["sooner0"], ran["sooner1"]) < min(ran["later0"], ran["later1"])
