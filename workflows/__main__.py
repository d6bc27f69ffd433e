"""``python -m workflows run FILE [-o DIR] [-- PETSc options]``: run or resume a campaign as a Parsl workflow in
this process; PETSc options after ``--`` go to every task.

This is what the campaign-driver batch script (``jobscripts/campaign_driver.sbatch``) runs, and what ``twin run
--workflow`` calls; the process imports neither mpi4py nor petsc4py.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from twin.core.arenas import few_malloc_arenas_under_a_memory_limit

    few_malloc_arenas_under_a_memory_limit()  # this driver's threads, and Parsl's processes (twin.core.arenas)
    p = argparse.ArgumentParser(prog="python -m workflows", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run or resume a campaign as a Parsl workflow")
    r.add_argument("file")
    r.add_argument("-o", "--output", metavar="DIR", help="run directory (default: outputs.directory of the file)")
    r.add_argument("--address", help="address Slurm workers connect back to (default: this host's name)")
    r.add_argument("-v", "--verbose", action="store_true")
    from twin.campaign.task import split_petsc  # imports neither MPI nor PETSc

    words, petsc = split_petsc(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(words)

    from twin.config.loader import load_campaign
    from twin.core.errors import TwinError
    from twin.driver import run_directory
    from workflows.campaign import run_workflow

    try:
        loaded = load_campaign(args.file)
        result = run_workflow(loaded, run_directory(loaded, args.output), address=args.address,
                              verbose=args.verbose, petsc_options=petsc)
    except TwinError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    print(f"{'done' if result.ok else 'finished with failures'}: {result.tasks_run} task(s) in "
          f"{result.seconds:.1f} s; outputs in {result.run_dir}")
    for name, state in result.states.items():
        print(f"  {name}: {state}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
