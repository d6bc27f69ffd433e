"""``twin check-model``: the conformance kit on a model type (:mod:`twin.conformance`), one line per check.

Exit codes as the other commands: ``0`` every check passed (or was skipped, with its reason), ``1`` a check failed,
``2`` bad input (an unknown model type, a campaign file that does not validate, no example section).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_check_model_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "check-model", help="check that a model type honours the model contract (one line per check)",
        description="Run the model contract's checks on a model type: checkpoint round trip, bitwise restart, "
                    "finite QoIs, parameter transforms, PETSc options prefix, the adjoint's Taylor test (when the "
                    "model has one) and 1 vs N ranks (under mpiexec, started by the check itself: run "
                    "'twin check-model' without mpiexec). The model comes from --config, or from the example "
                    "section twin ships for its built-in types.")
    c.add_argument("type", metavar="TYPE", help="a model type (twin info lists the installed kinds and their types)")
    c.add_argument("--config", metavar="FILE", help="a campaign file with a model of TYPE (default: twin's example "
                                                    "for a built-in type)")
    c.add_argument("--component", metavar="NAME", help="which model of TYPE in --config, if it has several")
    c.add_argument("--ranks", type=int, default=2, metavar="N", help="ranks of the run compared with the serial one "
                                                                     "(default 2; 1 skips that check)")
    c.add_argument("--steps", type=int, default=4, metavar="K", help="time steps of the checks' window (default 4)")
    c.add_argument("--step", type=float, metavar="DT", help="time step, for a model that has no fixed one")
    c.add_argument("--rank-rtol", type=float, default=1e-8, metavar="TOL",
                   help="largest relative difference allowed between 1 and N ranks (default 1e-8)")
    return c


def cmd_check_model(args) -> int:
    from twin.core.errors import TwinError

    if args.ranks < 1 or args.steps < 2 or not args.rank_rtol > 0 or (args.step is not None and not args.step > 0):
        print("error: check-model: --ranks must be at least 1, --steps at least 2, --rank-rtol and --step positive",
              file=sys.stderr)
        return 2
    from twin.cli import _rank

    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")) or 1) > 1:
        if _rank() == 0:
            print("error: check-model runs serially and starts 'mpiexec -n N' itself for the ranks check: run it "
                  "without mpiexec", file=sys.stderr)
        return 2
    from twin.conformance import check_model, example_file, subject_from_file

    try:
        path = args.config or example_file(args.type)
        subject = subject_from_file(args.type, path, args.component, step=args.step)
    except TwinError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    from twin.core.petsc import init_petsc

    init_petsc([])
    report = check_model(subject, ranks=args.ranks, steps=args.steps, rank_rtol=args.rank_rtol)
    print(report.text())
    failed = report.failed()
    for r in failed:
        print(f"error: {r.name}: {r.measured}", file=sys.stderr)
    return 1 if failed else 0
