"""The campaign commands of ``twin``: ``submit`` and ``status``, and the workflow path of ``run``.

``twin submit FILE``
    Renders a batch script from ``jobscripts/`` for a campaign with ``resources.type: slurm`` and submits it with
    ``sbatch``. ``--mode driver`` (default): a small job runs the Parsl workflow, and Parsl submits the member runs as
    blocks of their own (SlurmProvider). ``--mode single``: one MPI job of ``resources.ranks`` ranks holds the whole
    campaign (online mode). ``--mode array``: one job-array task per experiment, each online. ``--dry-run`` prints
    the script. Submitting again on the same run directory resumes the campaign.

    Pilot jobs instead of a driver job: where compute nodes may not submit jobs, run the driver on the login node,
    ``nohup twin run FILE --workflow &`` (or ``python -m workflows run FILE``); Parsl's SlurmProvider then submits
    pilot jobs (blocks of ``resources.nodes`` nodes, at most ``resources.max_blocks`` at once) whose workers pull the
    member tasks. The driver itself uses little CPU; ``twin status RUN_DIR`` shows progress from anywhere.

``twin status RUN_DIR``
    Per experiment: done, damaged, running, interrupted, failed or pending; cycles done; member forecasts of the
    current cycle; dropped members and why. What a finished experiment claims is verified (its last checkpoint,
    every output its ``done.json`` lists). Exit status 0 complete and verified, 1 the operator must act, 3 still
    running or queued (:mod:`twin.campaign.status`).

``twin run FILE``
    For a campaign with an ``assimilation`` section: the Parsl workflow when ``resources.workers > 1`` or with
    ``--workflow`` (:func:`run_workflow`), otherwise online in the current MPI job (:func:`twin.campaign.online
    .run_online`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def print_errors(exc) -> int:
    """Print a twin error one problem per line (no traceback); returns exit status 2."""
    for line in exc.lines():
        print(f"error: {line}", file=sys.stderr)
    return 2


def wants_workflow(loaded, workflow_flag: bool = False) -> bool:
    """Whether ``twin run`` should go through Parsl: ``--workflow`` or ``resources.workers > 1``.

    Raises
    ------
    ConfigError
        For methods that run online only (4D-Var, ES-MDA) when a workflow is asked for.
    """
    wanted = bool(workflow_flag) or int(loaded.config.resources.workers) > 1
    method = getattr(loaded.config.assimilation, "method", None)
    if wanted and method in ("4dvar", "esmda"):
        from twin.core.errors import ConfigError

        raise ConfigError(f"{loaded.path}: assimilation.method {method!r} runs online only in this version of twin: "
                          "run it without --workflow and with resources.workers: 1 (under mpiexec for more ranks)")
    return wanted


def run_workflow(loaded, run_dir, **kwargs):
    """The campaign as a Parsl workflow (:func:`workflows.campaign.run_workflow`); imports no MPI or PETSc."""
    from workflows.campaign import run_workflow as _run

    return _run(loaded, run_dir, **kwargs)


# -- parsers ---------------------------------------------------------------------------------------------------------
def add_submit_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("submit", help="submit a campaign to Slurm (batch script from jobscripts/ + sbatch)",
                       usage="twin submit [-o DIR] [--mode driver|single|array] [--dry-run] [--allow-outside DIR] "
                             "FILE [PETSc options]",
                       description="Render a batch script for a campaign with resources.type slurm and submit it "
                                   "with sbatch. Submitting again on the same run directory resumes. PETSc options "
                                   "after the file go into the script, to every task of the job.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", metavar="DIR", help="run directory (default: outputs.directory of the file)")
    p.add_argument("--mode", choices=("driver", "single", "array"), default="driver",
                   help="driver: a job runs the Parsl workflow (default); single: one MPI job, online; "
                        "array: one online job per experiment")
    p.add_argument("--dry-run", action="store_true", help="print the batch script and the sbatch command only")
    return p


def add_status_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("status", help="progress of a campaign: experiments, cycles, failures",
                       description="Which experiments and cycles of a campaign are done, running or failed, "
                                   "read from the run directory's files.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def add_assimilate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("assimilate", help="continue a run with observation files that arrived later (a live twin)",
                       description="Continue the filter or 4D-Var campaign in RUN_DIR, observed through files, with newly "
                                   "arrived files of the same layout and variables: they are kept in "
                                   "RUN_DIR/deliveries/ with their SHA-256, the campaign gets the cycles that reach "
                                   "their latest observation, and the posterior, forecast, diagnostics, decision and "
                                   "report are brought up to date. A file assimilated before changes nothing; "
                                   "observations at or before the last analysis are refused. Run the same command "
                                   "again after an interruption.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="observation files (none: complete what an interrupted command started)")
    p.add_argument("--network", metavar="NAME", help="the file network they feed (when the campaign has several)")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, and the final lines")
    p.add_argument("--no-report", action="store_true", help="leave the HTML report as it is")
    return p


# -- commands --------------------------------------------------------------------------------------------------------
def cmd_assimilate(args) -> int:
    """``twin assimilate``: 0 the run is up to date with the files (or was already), 1 an experiment failed or was
    stopped, 2 refused before anything was written (bad input), 3 another command works on the run directory."""
    from twin.campaign.rundir import RunBusy
    from twin.config.confinement import confine
    from twin.core.errors import OutputError, TwinError

    try:
        run_dir = confine(args.run_dir)
    except TwinError as exc:
        return print_errors(exc)
    from twin.core.petsc import init_petsc

    init_petsc([])
    from mpi4py import MPI

    from twin.campaign.live import assimilate

    comm = MPI.COMM_WORLD
    root = comm.Get_rank() == 0
    try:
        result = assimilate(run_dir, args.files, comm, network=args.network, verbose=args.verbose,
                            quiet=args.quiet)
    except RunBusy as exc:
        if root:
            print(f"error: {exc}", file=sys.stderr)
        return 3
    except OutputError as exc:  # the run directory could not be written (full disk ...): run again to complete
        if root:
            print_errors(exc)
        return 1
    except TwinError as exc:
        return print_errors(exc) if root else 2
    except OSError as exc:
        if root:
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"error: {exc.strerror or exc}{where}: the run directory cannot be written; fix that and run the "
                  "same command again to complete the assimilation", file=sys.stderr)
        return 1
    if not root:
        return 1 if result.unfinished else 0
    for d in result.deliveries:
        if d.state == "assimilated":
            print(f"{d.path}: already assimilated (sha256 {d.sha256[:12]}, {d.stored}); nothing to do for it")
        elif d.state == "recorded":
            print(f"{d.path}: accepted earlier (sha256 {d.sha256[:12]}, {d.stored}); its assimilation is complete now")
        else:
            print(f"{d.path}: assimilated (sha256 {d.sha256[:12]}, kept as {d.stored})")
    if not result.ran:
        print(f"nothing to do: {run_dir} is up to date")
        return 0
    for name, reason in result.unfinished:
        print(f"error: experiment {name} {reason}", file=sys.stderr)
    cycles = ", ".join(f"{name} {k} cycles" for name, k in result.cycles.items())
    if result.unfinished:
        print(f"error: {len(result.unfinished)} experiment(s) did not finish (twin status {run_dir}); run the same "
              "command again to resume", file=sys.stderr)
        return 1
    if not args.no_report:
        from twin.report import write_report

        try:
            print(f"report: {write_report(run_dir)}")
        except TwinError as exc:
            print(f"error: the report could not be written: {exc}", file=sys.stderr)
            return 1
    print(f"done: {run_dir} is up to date ({cycles})")
    return 0


def cmd_status(args) -> int:
    """Print the status; the exit status says whether the campaign is complete and verified (0), needs the
    operator (1: failed, damaged, interrupted, driver lost or crashed) or is still to come (3: running, queued);
    2 for a path that is not a run directory (:mod:`twin.campaign.status`)."""
    from twin.campaign.status import NEEDS_ACTION, status, summary

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"error: {run_dir} does not exist{' as a directory' if run_dir.exists() else ''}: give the run "
              "directory of a campaign (twin run -o DIR, or outputs.directory)", file=sys.stderr)
        return 2
    if not (run_dir / "experiments").is_dir():
        forecast = (run_dir / "forecast.nc").is_file() or (run_dir / "qoi.nc").is_file()
        print(f"error: {run_dir} is not a campaign run directory (no experiments/ in it)"
              + ("; it holds a forecast run, which twin status does not follow: its outputs are forecast.nc and "
                 "qoi.nc (twin inspect checks them)" if forecast else ""), file=sys.stderr)
        return 2
    st = status(run_dir)
    if args.json:
        print(json.dumps(summary(st), indent=1))
        return st.exit_status
    print("\n".join(st.lines()))
    for e in st.experiments:
        if e.state in NEEDS_ACTION:
            print(f"error: experiment {e.name} {e.state}" + (f": {e.message}" if e.message else
                  " (no live driver: run the campaign again to resume it)"), file=sys.stderr)
    for line in st.problems():
        print(f"error: {line}", file=sys.stderr)
    return st.exit_status


def cmd_submit(args, petsc_options: list[str] | None = None) -> int:
    from twin.campaign.experiments import all_experiments, check_observation_files, prepare_experiments
    from twin.config.loader import load_campaign
    from twin.config.solver_options import command_line_problems
    from twin.core.errors import ConfigError, TwinError
    from workflows.jobscripts import render

    try:
        problems = command_line_problems(list(petsc_options or []))
        if problems:
            raise ConfigError(problems)
        loaded = load_campaign(args.file)
        cfg = loaded.config
        if cfg.resources.type != "slurm":
            raise ConfigError(f"{loaded.path}: resources.type is {cfg.resources.type!r}; twin submit needs "
                              "'resources: {type: slurm, partition: ...}' (use 'twin run' on this machine)")
        from twin.driver import run_directory

        run_dir = run_directory(loaded, args.output)
        log_dir = run_dir / "slurm"
        from twin.campaign.rundir import check_owner

        check_owner(run_dir, loaded)  # read-only: a dry run refuses another campaign's directory as the submit would
        if args.dry_run:  # writes nothing: the experiments' names from the expansion alone
            experiments = all_experiments(loaded)
            check_observation_files(loaded, experiments)
            names = [e.name for e in experiments]
        else:
            names = [d.name for d in prepare_experiments(loaded, run_dir)]
            log_dir.mkdir(parents=True, exist_ok=True)
        script = render(args.mode.replace("driver", "campaign_driver").replace("single", "single_run").replace(
                            "array", "experiment_array"), cfg.resources, job_name=f"twin-{cfg.campaign.name}",
                        campaign_file=loaded.path, run_dir=run_dir, workdir=Path.cwd().resolve(), log_dir=log_dir,
                        experiment_names=names, petsc_options=petsc_options)
    except TwinError as exc:
        return print_errors(exc)
    path = log_dir / f"{args.mode}.sbatch"
    command = ["sbatch", "--parsable", *script.sbatch_args, str(path)]
    if args.dry_run:
        print(script.text)
        print("# " + " ".join(command) + "   (dry run: nothing was written)")
        return 0
    path.write_text(script.text)
    if shutil.which("sbatch") is None:
        print("error: sbatch is not on PATH: run twin submit on a Slurm login node (or use twin run here)",
              file=sys.stderr)
        return 2
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        print(f"error: sbatch failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
        return 2
    job = proc.stdout.strip().split(";")[0]
    (log_dir / "jobs.txt").open("a").write(f"{job} {args.mode}\n")
    print(f"submitted batch job {job} ({args.mode}); run directory {run_dir}")
    print(f"  follow it with: twin status {run_dir}")
    return 0
