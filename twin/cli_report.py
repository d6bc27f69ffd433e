"""The ``twin report RUN_DIR`` command: an HTML report of a finished (or running) campaign.

Wired into :mod:`twin.cli` with ``add_report_parser(sub)`` in the parser and ``cmd_report(args)`` for
``args.command == "report"``. Imports neither MPI nor PETSc until the run directory's checkpoints are read (through
h5py), so it runs on a login node next to a campaign in progress.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path


def add_report_parser(subparsers) -> None:
    """Add ``report`` to the ``twin`` sub-commands."""
    p = subparsers.add_parser("report", help="write an HTML report (fields, RMSE/spread, rank histograms, QoI fans, "
                                             "decision, flags, what changed) of a run directory",
                              description="Write RUN_DIR/report/index.html with its PNG figures, from the files the "
                                          "run left behind; panels whose data are absent are skipped with a note.")
    p.add_argument("run_dir", metavar="RUN_DIR")


def cmd_report(args) -> int:
    """Run ``twin report``; prints each experiment's answer (its verdict in one line) and the path of the HTML report.
    Returns the exit status: 0 written from readable files of a finished campaign; 1 written, but some file of the
    run is there and cannot be read, or some experiment has not finished (interrupted, not run yet, still running:
    one ``error:`` line each, naming it; the report says so at its top, leaves out what needs a damaged file and
    compares no unfinished experiment); 2 on a twin error (no report); 3 when the campaign is still running and
    nothing has been written to report on yet."""
    from twin.campaign.rundir import RunBusy
    from twin.core.errors import TwinError
    from twin.report import write_report

    try:
        path = write_report(args.run_dir)
    except TwinError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 3 if isinstance(exc, RunBusy) else 2
    except OSError as exc:  # the report's folder cannot be written (permissions, a full or read-only file system)
        where = f": {exc.filename}" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free space on the file system of {args.run_dir} and run the same command again"
        else:
            fix = (f"make {args.run_dir}/report writable, or copy the run directory somewhere you may write and "
                   "report it there")
        print(f"error: the report cannot be written ({exc.strerror or exc}{where}); {fix}", file=sys.stderr)
        return 2
    import json

    try:
        verdicts = json.loads((path.parent / "verdicts.json").read_text())
    except (OSError, ValueError):
        verdicts = []
    damaged: dict[str, str] = {}
    unfinished = {v["experiment"]: v["unfinished"] for v in verdicts if v.get("unfinished")}
    for v in verdicts:  # the answer of each experiment, then where the whole story is
        bad = v.get("damaged") or {}
        for name, why in bad.items():
            damaged.setdefault(name, why)
        flag = f"DAMAGED ({', '.join(Path(n).name for n in bad)}): " if bad else ""
        line = f"{v['experiment']}: {flag}{v['answer']}"  # a failed or stopped one's answer says so
        print(line + (f" ({v['number']})" if v.get("number") and v["number"] not in line else ""))
    print(f"report: {path}")
    campaign = (Path(args.run_dir) / "experiments").is_dir()
    for name, why in damaged.items():
        print(f"error: {Path(args.run_dir) / name} cannot be read ({why}); the report leaves it out: run the "
              + (f"campaign again to write it again (twin status {args.run_dir} says what it finds damaged)"
                 if campaign else "forecast again to write it again"), file=sys.stderr)
    for name, how in unfinished.items():
        if campaign and how.startswith("still running"):  # its driver works on it: running it again is refused
            print(f"error: experiment {name} has not finished ({how}): the report shows what it wrote so far; run "
                  f"twin report again when it has finished (twin status {args.run_dir} follows "
                  "it)", file=sys.stderr)
        elif campaign:
            print(f"error: experiment {name} has not finished ({how}): the report shows what it wrote so far; run the "
                  f"campaign again to finish it (twin status {args.run_dir} follows it)", file=sys.stderr)
        else:
            print(f"error: the forecast in {args.run_dir} has not finished ({how}): the report shows the quantities "
                  "of interest it wrote so far; run the campaign again to compute it (it starts over)",
                  file=sys.stderr)
    return 1 if damaged or unfinished else 0
