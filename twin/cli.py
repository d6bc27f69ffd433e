"""The ``twin`` command: ``validate``, ``run``, ``submit``, ``status``, ``report``, ``inspect``, ``info``.

PETSc options may follow the campaign file (``twin run c.yaml -heat_ts_type cn -log_view``); they are handed to
PETSc before any solver exists, and win over the options in the YAML.
"""

from __future__ import annotations

import argparse
import json
import sys

#: exit code of ``twin run`` when the campaign ran but some experiment failed or was stopped (2: bad input)
EXIT_UNFINISHED = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twin", description="Model-centric digital twins on PETSc.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check campaign files; one line per problem")
    v.add_argument("files", nargs="+", metavar="FILE")

    r = sub.add_parser("run", help="run a campaign here (serially, or under mpiexec)",
                       description="Run a campaign in this process (use mpiexec -n N twin run ... for N ranks). "
                                   "Extra -options are PETSc options.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("-o", "--output", metavar="DIR", help="run directory (default: outputs.directory of the file)")
    r.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    r.add_argument("--workflow", action="store_true",
                   help="run an assimilation campaign as a Parsl workflow (default when resources.workers > 1)")

    from twin.cli_campaign import add_status_parser, add_submit_parser

    add_submit_parser(sub)
    add_status_parser(sub)

    from twin.cli_report import add_report_parser

    add_report_parser(sub)

    n = sub.add_parser("inspect", help="summarise an output file or run directory (kind, cycles, provenance, checksums)")
    n.add_argument("path", metavar="FILE_OR_RUN_DIR")

    i = sub.add_parser("info", help="versions of twin, PETSc, MPI, HDF5 (parallel?), netCDF, Parsl; cores")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _errors(exc) -> int:
    for line in exc.lines():
        print(f"error: {line}", file=sys.stderr)
    return 2


def cmd_validate(args) -> int:
    from twin.config import load_campaign
    from twin.core.errors import ConfigError

    status = 0
    for f in args.files:
        try:
            c = load_campaign(f)
        except ConfigError as exc:
            status = _errors(exc)
            continue
        print(f"{f}: ok (campaign '{c.config.campaign.name}', models: {', '.join(c.config.models)})")
    return status


def cmd_run(args, petsc_options: list[str]) -> int:
    from twin.config import load_campaign
    from twin.core.errors import TwinError

    # Load before PETSc and MPI: a campaign run as a Parsl workflow must not initialise MPI in the driver process.
    try:
        loaded = load_campaign(args.file)
    except TwinError as exc:
        return _errors(exc) if _rank() == 0 else 2
    if loaded.config.assimilation is not None:
        from twin.cli_campaign import run_workflow, wants_workflow

        try:
            workflow = wants_workflow(loaded, args.workflow)
            if workflow:
                from twin.driver import run_directory  # imports neither MPI nor PETSc

                result = run_workflow(loaded, run_directory(loaded, args.output))
        except TwinError as exc:
            return _errors(exc)
        if workflow:
            print(f"done: outputs in {result}")
            return 0

    from twin.core.petsc import init_petsc

    init_petsc(petsc_options)
    from mpi4py import MPI

    from twin.driver import run_campaign

    comm = MPI.COMM_WORLD
    try:
        result = run_campaign(loaded, comm, run_dir=args.output, verbose=args.verbose)
    except TwinError as exc:
        if comm.Get_rank() == 0:
            _errors(exc)
        return 2
    if comm.Get_rank() == 0:
        print(f"done: outputs in {result.run_dir}")
        for f in result.files:
            print(f"  {f}")
        for name, reason in result.unfinished:
            print(f"error: experiment {name} {reason}", file=sys.stderr)
        if result.unfinished:
            print(f"error: {len(result.unfinished)} experiment(s) did not finish (twin status {result.run_dir}); "
                  "the others are complete", file=sys.stderr)
    return EXIT_UNFINISHED if result.unfinished else 0


def _rank() -> int:
    """This process's rank as the launcher sees it, without initialising MPI (0 outside mpiexec/srun)."""
    import os

    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def cmd_inspect(args) -> int:
    """Print the summary; exit 1 when a check failed (one ``error:`` line per failed file), 2 for a bad path."""
    from twin.core.errors import TwinError
    from twin.io.inspect import examine

    try:
        result = examine(args.path)
    except TwinError as exc:
        return _errors(exc)
    print(result.text)
    for line in result.failures:
        print(f"error: {line}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_info(args) -> int:
    from twin.info import format_info, stack_info

    from mpi4py import MPI

    info = stack_info()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    bad = [a for a in extra if a.startswith("--")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (PETSc options start with a single '-')")
    if args.command == "validate":
        return cmd_validate(args)
    if args.command == "run":
        return cmd_run(args, extra)
    if args.command == "inspect":
        return cmd_inspect(args)
    if args.command == "report":
        from twin.cli_report import cmd_report

        return cmd_report(args)
    if args.command in ("submit", "status"):
        from twin.cli_campaign import cmd_status, cmd_submit

        return cmd_submit(args) if args.command == "submit" else cmd_status(args)
    return cmd_info(args)


if __name__ == "__main__":
    sys.exit(main())
