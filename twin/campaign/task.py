"""Entry point of one campaign task, run by the workflow under an MPI launcher::

    mpiexec -n R python -m twin.campaign.task forecast EXP_DIR --cycle K --member M
    mpiexec -n R python -m twin.campaign.task analyse  EXP_DIR --cycle K [--min-members 2]
    mpiexec -n R python -m twin.campaign.task online   RUN_DIR --campaign FILE [--experiment NAME]
    python -m twin.campaign.task init     EXP_DIR
    python -m twin.campaign.task finalize EXP_DIR
    python -m twin.campaign.task scan     EXP_DIR          # JSON: what is complete and verified (for resume)

This is the only place where a workflow task meets MPI and PETSc: the Parsl process builds the command line and
never imports mpi4py or petsc4py. The task runs on ``MPI.COMM_WORLD`` of its own launch (the ranks the launcher gave
it). Exit status: 0 done (or already done), 3 the model failed (a SolverError or ModelError: the member diverged), 2
any other twin error, 1 an unexpected exception; the last line on stderr says why (the workflow records it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_MODEL_FAILED = 3
EXIT_TWIN_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m twin.campaign.task", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("init", "forecast", "analyse", "finalize", "scan", "online"))
    p.add_argument("exp_dir", type=Path, help="experiment directory (run directory for 'online')")
    p.add_argument("--campaign", type=Path, help="campaign file ('online')")
    p.add_argument("--experiment", help="run only this experiment ('online')")
    p.add_argument("--cycle", type=int, default=None)
    p.add_argument("--member", type=int, default=None)
    p.add_argument("--min-members", type=int, default=2)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def scan(exp_dir: Path) -> dict:
    """What is complete and verified in an experiment directory (serial): the latest good checkpoint, the verified
    member forecasts of the cycle that follows it, and whether the outputs exist."""
    from twin.campaign import layout
    from twin.campaign.finalize import outputs_complete
    from twin.campaign.checkpoints import is_valid_checkpoint
    from twin.io.checkpoint import latest_good_checkpoint, list_checkpoints

    good = latest_good_checkpoint(exp_dir / "checkpoint") if (exp_dir / "checkpoint").is_dir() else None
    cycle = -1
    if good is not None and is_valid_checkpoint(layout.observations_file(exp_dir), None):
        cycle = next(k for k, p in list_checkpoints(exp_dir / "checkpoint") if p == good)
    members = []
    if cycle >= 0:
        done, _ = layout.member_files(exp_dir, cycle)
        members = [m for m in done if is_valid_checkpoint(layout.forecast_file(exp_dir, cycle, m), None)]
    return {"checkpoint": cycle, "members_done": members, "outputs": outputs_complete(exp_dir)}


def run(args) -> int:
    from twin.core.petsc import init_petsc

    init_petsc([])
    from mpi4py import MPI

    from twin.campaign import finalize as fin
    from twin.campaign import steps
    from twin.core.errors import ModelError, SolverError, TwinError
    from twin.core.log import setup_logging

    comm = MPI.COMM_WORLD
    setup_logging(comm.Get_rank(), comm.Get_size(), args.verbose)
    try:
        if args.step == "scan":
            if comm.Get_rank() == 0:
                print(json.dumps(scan(args.exp_dir)))
            return 0
        need = {"forecast": ("cycle", "member"), "analyse": ("cycle",), "online": ("campaign",)}.get(args.step, ())
        missing = [f"--{n}" for n in need if getattr(args, n) is None]
        if missing:
            raise TwinError(f"task {args.step} needs {' and '.join(missing)}")
        if args.step == "online":
            from twin.campaign.online import run_online
            from twin.config.loader import load_campaign

            run_online(load_campaign(args.campaign), comm, args.exp_dir, only=args.experiment, verbose=args.verbose)
        elif args.step == "init":
            steps.init_experiment(args.exp_dir, comm)
        elif args.step == "forecast":
            steps.forecast_member(args.exp_dir, args.cycle, args.member, comm)
        elif args.step == "analyse":
            steps.analyse(args.exp_dir, args.cycle, comm, min_members=args.min_members)
        else:
            fin.finalize(args.exp_dir, comm)
    except (SolverError, ModelError) as exc:
        print(f"model failed: {exc}", file=sys.stderr, flush=True)
        return EXIT_MODEL_FAILED
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_TWIN_ERROR
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
