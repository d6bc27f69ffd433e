"""The ``twin`` command: ``validate``, ``run``, ``submit``, ``status``, ``assimilate``, ``report``, ``inspect``,
``info``, ``check-model``, ``new-model``.

PETSc options follow the campaign file (``twin run c.yaml -heat_ts_type cn -log_view``); they are handed to
PETSc before any solver exists (in a workflow, to every task), and win over the options in the YAML. ``twin submit
c.yaml -heat_ts_type cn`` writes them into the batch script's command, by the same rules with ``submit``'s options.

How ``twin run`` tells its own options from PETSc's (PETSc options begin with one ``-`` and are words, so argparse's
short-option rules would read ``-options_left`` as ``-o ptions_left`` and refuse ``-vec_type`` as a bad ``-v``):

* before the campaign file only twin's options may appear, each a whole word (``-o DIR``, ``-v``, ``--output=DIR``);
  anything else beginning with ``-`` is an error that says PETSc options go after the file;
* after the campaign file twin's options are recognised only as the exact words ``-o DIR``, ``--output DIR``
  (``--output=DIR``), ``-v``, ``--verbose``, ``--workflow``, ``--allow-outside DIR``, ``-h``; every other word is
  PETSc's, in order (an option and its value: ``-ts_dt -0.1``);
* ``--`` after the campaign file ends twin's options: every word after it is PETSc's;
* long options are never abbreviated (``--out`` is not ``--output``) by any command.

Run directories stay below the working directory (:mod:`twin.config.confinement`); ``--allow-outside DIR`` (of
``validate``, ``run`` and ``submit``) allows another root for this command and the processes it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from pathlib import Path

#: exit code of ``twin run`` when the campaign ran but some experiment failed or was stopped (2: bad input)
EXIT_UNFINISHED = 1
#: another command works on the run directory: run again later (twin run, twin assimilate)
EXIT_BUSY = 3


#: ``twin run``'s own options, and whether each takes a value: after the campaign file only these exact words are
#: twin's (see the module docstring)
RUN_OPTIONS = {"-o": True, "--output": True, "-v": False, "--verbose": False, "-q": False, "--quiet": False,
               "--workflow": False, "--allow-outside": True, "-h": False, "--help": False}
#: ``twin submit``'s, by the same rules: its PETSc options go into the batch script, to every task of the job
SUBMIT_OPTIONS = {"-o": True, "--output": True, "--mode": True, "--dry-run": False, "--allow-outside": True,
                  "-h": False, "--help": False}

_ALLOW_HELP = ("allow run directories below DIR besides the working directory (repeatable; also "
               "$TWIN_OUTPUT_ROOT)")


def _parser() -> argparse.ArgumentParser:
    # No abbreviations anywhere: '--out' must not silently become '--output' (nor a PETSc word a twin option).
    Parser = functools.partial(argparse.ArgumentParser, allow_abbrev=False)
    p = Parser(prog="twin", description="Model-centric digital twins on PETSc.")
    from twin import __version__

    p.add_argument("--version", action="version", version=f"twin {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    v = sub.add_parser("validate", help="check campaign files; one line per problem")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--allow-outside", action="append", metavar="DIR", default=[], help=_ALLOW_HELP)

    r = sub.add_parser("run", help="run a campaign here (serially, or under mpiexec)",
                       usage="twin run [-o DIR] [-v | -q] [--workflow] [--allow-outside DIR] FILE [PETSc options]",
                       description="Run a campaign in this process (use mpiexec -n N twin run ... for N ranks). "
                                   "Words after FILE beginning with '-' are PETSc options, except exactly -o DIR, "
                                   "--output DIR, -v, --verbose, -q, --quiet, --workflow, --allow-outside DIR; "
                                   "everything after "
                                   "'--' is PETSc's.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("-o", "--output", metavar="DIR", help="run directory (default: outputs.directory of the file)")
    loud = r.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, and the final lines")
    r.add_argument("--workflow", action="store_true",
                   help="run an assimilation campaign as a Parsl workflow (default when resources.workers > 1)")
    r.add_argument("--allow-outside", action="append", metavar="DIR", default=[], help=_ALLOW_HELP)

    from twin.cli_campaign import add_assimilate_parser, add_status_parser, add_submit_parser

    s = add_submit_parser(sub)
    s.add_argument("--allow-outside", action="append", metavar="DIR", default=[], help=_ALLOW_HELP)
    add_status_parser(sub)
    add_assimilate_parser(sub).add_argument("--allow-outside", action="append", metavar="DIR", default=[],
                                            help=_ALLOW_HELP)

    from twin.cli_report import add_report_parser

    add_report_parser(sub)

    from twin.cli_model import add_check_model_parser, add_new_model_parser

    add_check_model_parser(sub)
    add_new_model_parser(sub)

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
    from twin.campaign.experiments import all_experiments, check_observation_files
    from twin.config import load_campaign
    from twin.config.confinement import output_problems
    from twin.core.errors import ConfigError

    status = 0
    for f in args.files:
        try:
            c = load_campaign(f)
            outside = output_problems(c)
            if outside:
                raise ConfigError(outside)
            # every experiment of the matrix is a campaign of its own: validated now, not when it starts
            experiments = all_experiments(c)
            check_observation_files(c, experiments)  # read now, not when their experiment starts
            n = len(experiments)
        except ConfigError as exc:
            status = _errors(exc)
            continue
        print(f"{f}: ok (campaign '{c.config.campaign.name}', models: {', '.join(c.config.models)}"
              + (f"; {n} experiments" if n > 1 else "") + ")")
    return status


def cmd_run(args, petsc_options: list[str]) -> int:
    from twin.config import load_campaign
    from twin.core.errors import TwinError

    # Load before PETSc and MPI: a campaign run as a Parsl workflow must not initialise MPI in the driver process.
    try:
        loaded = load_campaign(args.file)
    except TwinError as exc:
        return _errors(exc) if _rank() == 0 else 2
    from twin.campaign.rundir import RunBusy

    if loaded.config.assimilation is not None:
        from twin.cli_campaign import run_workflow, wants_workflow

        try:
            workflow = wants_workflow(loaded, args.workflow)
            if workflow:
                from twin.driver import run_directory  # imports neither MPI nor PETSc

                result = run_workflow(loaded, run_directory(loaded, args.output), verbose=args.verbose,
                                      petsc_options=petsc_options)
        except RunBusy as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BUSY
        except TwinError as exc:
            status = _errors(exc)
            # a driver stopped by a signal exits as the signal ended it (130 for Ctrl-C), not as bad input (2)
            return int(getattr(exc, "exit_status", status))
        if workflow:
            print(f"{'done' if result.ok else 'finished with failures'}: {result.tasks_run} task(s) in "
                  f"{result.seconds:.1f} s; outputs in {result.run_dir}")
            from twin.campaign import layout

            bad = {name: state for name, state in result.states.items() if state != "done"}
            for name, state in bad.items():  # as online mode says them: why, and for a stopped one what to do
                exp = layout.experiment_dir(result.run_dir, name)
                found = layout.failure(exp)
                line = (f"FAILED: {layout.to_try_again(found[1])}" if found and found[0] == "failed" else
                        f"stopped: {found[1]}; {layout.to_run_again(exp)}" if found else
                        f"{state} (twin status {result.run_dir} says why)")
                print(f"error: experiment {name} {line}", file=sys.stderr)
            return EXIT_UNFINISHED if bad else 0

    from twin.core.petsc import init_petsc

    init_petsc(petsc_options)
    from mpi4py import MPI

    from twin.driver import run_campaign

    comm = MPI.COMM_WORLD
    try:
        result = run_campaign(loaded, comm, run_dir=args.output, verbose=args.verbose, quiet=args.quiet)
    except RunBusy as exc:
        if comm.Get_rank() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except TwinError as exc:
        if comm.Get_rank() == 0:
            _errors(exc)
        return int(getattr(exc, "exit_status", 2))  # 2 bad input; 1 out of memory (twin.core.errors.OutOfMemory)
    except OSError as exc:  # the file system refused the run directory itself (full, read-only, permissions)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}: the run directory cannot be written; fix that and run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_UNFINISHED
    if comm.Get_rank() == 0:
        print(f"{'finished with failures' if result.unfinished else 'done'}: outputs in {result.run_dir}")
        for f in result.files:
            print(f"  {f}")
        for name, reason in result.unfinished:
            print(f"error: experiment {name} {reason}", file=sys.stderr)
        if result.unfinished:
            others = result.experiments - len(result.unfinished)
            print(f"error: {len(result.unfinished)} experiment(s) did not finish (twin status {result.run_dir})"
                  + (f"; the other {others} are complete" if others > 1 else
                     "; the other one is complete" if others == 1 else ""), file=sys.stderr)
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
    # a campaign's finished experiments: the outputs done.json promises and that are gone or cut (what twin status
    # calls damaged; inspect alone checks the files that are there)
    missing = _promised_but_damaged(Path(args.path))
    for line in [*result.failures, *missing]:
        print(f"error: {line}", file=sys.stderr)
    return 0 if result.ok and not missing else 1


def _promised_but_damaged(path: Path) -> list[str]:
    from twin.campaign.status import damaged_outputs

    experiments = path / "experiments"
    if not experiments.is_dir() or experiments.is_symlink():
        return []
    lines = []
    for exp in sorted(experiments.iterdir()):
        if exp.is_dir() and not exp.is_symlink():
            lines += [f"{exp / name}: {why}, though the run finished with it (run the campaign again to write it)"
                      for name, why in damaged_outputs(exp).items()]
    return lines


def cmd_info(args) -> int:
    from twin.core.petsc import start_mpi
    from twin.info import format_info, stack_info

    start_mpi()  # as a run starts it (an isolated singleton without a launcher)
    from mpi4py import MPI

    info = stack_info()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def _options_first(words: list[str], with_value: set[str]) -> list[str]:
    """``words`` with the options (and the value of those in ``with_value``) before the positional words, each group
    in its order; everything after ``--`` stays positional."""
    options: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            positional += words[i:]
            break
        if word.startswith("-") and word != "-":
            options.append(word)
            if word in with_value and i + 1 < len(words):
                options.append(words[i + 1])
                i += 1
        else:
            positional.append(word)
        i += 1
    return options + positional


def _split_run(words: list[str], options: dict[str, bool] = RUN_OPTIONS) -> tuple[list[str], list[str]]:
    """twin's words and PETSc's among the words after ``twin run`` (or ``twin submit``, with its ``options``; rules
    in the module docstring).

    Raises
    ------
    ValueError
        For a word beginning with ``-`` before the campaign file that is not one of twin's options.
    """
    ours: list[str] = []
    petsc: list[str] = []
    seen_file = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--" and seen_file:
            petsc += words[i + 1:]
            break
        name = word.split("=", 1)[0] if word.startswith("--") else word
        if name in options:
            ours.append(word)
            if options[name] and "=" not in word and i + 1 < len(words):
                ours.append(words[i + 1])
                i += 1
        elif word.startswith("-") and len(word) > 1 and word != "--":
            if not seen_file:
                if word.startswith("--"):
                    ours.append(word)  # argparse names the unknown long option
                else:
                    raise ValueError(f"unrecognised option {word}: PETSc options go after the campaign file, and "
                                     "twin's own short options are whole words (-o DIR, -v)")
            else:
                petsc.append(word)
        elif not seen_file:
            ours.append(word)
            seen_file = word != "--"
        elif petsc:
            petsc.append(word)  # the value of the PETSc option before it
        else:
            ours.append(word)  # a second file: argparse reports it
        i += 1
    return ours, petsc


@contextlib.contextmanager
def _allow_outside(roots: list[str]):
    """Add ``roots`` to the allowed roots of run directories for this command and the processes it starts."""
    from pathlib import Path

    from twin.config.confinement import OUTPUT_ROOT_ENV

    if not roots:
        yield
        return
    before = os.environ.get(OUTPUT_ROOT_ENV)
    added = [str(Path(r).expanduser().resolve()) for r in roots]
    os.environ[OUTPUT_ROOT_ENV] = os.pathsep.join(([before] if before else []) + added)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(OUTPUT_ROOT_ENV, None)
        else:
            os.environ[OUTPUT_ROOT_ENV] = before


#: commands that start PETSc wherever a module they call first imports it (``run`` starts it with the command
#: line's options; ``validate``, ``submit`` and a workflow's driver do not start it)
STARTS_PETSC_LATE = ("inspect", "info", "status", "report", "assimilate", "check-model")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``scancel``, a batch system's time limit; ``mpiexec`` passes it, and Ctrl-C, on to its
    ranks as SIGTERM), SIGHUP (the terminal or ssh session closed) or SIGQUIT: raised in the main thread and handled
    as Ctrl-C is, so the run stops through its clean-up; ``signum`` says which."""

    def __init__(self, signum: int = 15):
        super().__init__(signum)
        self.signum = signum


def _terminated(signum, frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    """The ``twin`` command; returns its exit status. Ctrl-C (SIGINT), SIGTERM, SIGHUP and SIGQUIT end it with one
    line and status 130, 143, 129 or 131 (128 + the signal's number, as a shell reports it): everything written so far is complete, the same command
    resumes (under ``mpiexec`` rank 0 says it when the signal finds it outside an MPI call; a rank waiting inside
    one for a rank that stopped is ended by mpiexec; mpiexec's own status is Open MPI's: 1). Under ``mpiexec`` each
    rank dies with its launcher (:mod:`twin.core.launcher`). Output whose reader stopped reading (``twin status RUN |
    head -1``) ends the command quietly with status 141, as a shell reports a process that SIGPIPE ended."""
    import signal

    from twin.core.arenas import few_malloc_arenas_under_a_memory_limit
    from twin.core.blas import one_blas_thread_under_a_memory_limit
    from twin.core.launcher import bind_to_launcher
    from twin.core.petsc import keep_broken_pipes_quiet, keep_signal_handlers, leave_after_failed_start

    few_malloc_arenas_under_a_memory_limit()  # before threads start allocating
    said = one_blas_thread_under_a_memory_limit()  # before NumPy is imported
    if said:
        print(f"warning: {said}", file=sys.stderr)
    bind_to_launcher()
    keep_broken_pipes_quiet()
    keep_signal_handlers({signal.SIGTERM: _terminated, signal.SIGHUP: _terminated, signal.SIGQUIT: _terminated})
    status = _guarded(argv)
    leave_after_failed_start(status)  # PETSc did not start on every rank: MPI cannot be finished
    return status


def _guarded(argv: list[str] | None) -> int:
    """:func:`_main`, with what ends a command without its own handling said in one line (see :func:`main`)."""
    import signal

    from twin.core.errors import TwinError
    from twin.core.memory import out_of_memory  # imported now: under a tiny memory limit an import may fail later

    try:
        status = _main(argv)
        sys.stdout.flush()  # a reader that went away is found here, not in the interpreter's exit
        return status
    except BrokenPipeError:  # the output's reader stopped reading (twin status RUN | head -1): end quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            what, status = signal.Signals(exc.signum).name, 128 + exc.signum
        else:
            what, status = "Ctrl-C", 130
        command = (list(sys.argv[1:] if argv is None else argv) or [""])[0]
        again = {"report": "write the report", "validate": "check the file", "status": "see the status",
                 "inspect": "check the files"}.get(command, "resume")
        if "mpi4py.MPI" not in sys.modules or sys.modules["mpi4py.MPI"].COMM_WORLD.Get_rank() == 0:
            print(f"interrupted ({what}): every file written so far is complete; run the same command again to "
                  f"{again}", file=sys.stderr)
        return status
    except TwinError as exc:  # raised outside a command's own handling (PETSc refusing to start: PetscStartError)
        if "mpi4py.MPI" not in sys.modules or sys.modules["mpi4py.MPI"].COMM_WORLD.Get_rank() == 0:
            _errors(exc)
        return int(getattr(exc, "exit_status", 2))
    except MemoryError as exc:  # NumPy's allocations; a model's building says which model (twin.models.registry)
        print(f"error: out of memory ({str(exc) or 'an allocation failed'}): this run needs more memory than the "
              "process could get; run it on more ranks or nodes, or make grids or ensembles smaller; every file "
              "written so far is complete, and the same command resumes", file=sys.stderr)
        return EXIT_UNFINISHED
    except (RuntimeError, SystemError) as exc:  # a thread that could not start, an import under a tiny limit
        line = out_of_memory(exc)
        if line is None:
            raise
        print(f"error: {line}; every file written so far is complete, and the same command resumes", file=sys.stderr)
        return EXIT_UNFINISHED


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    petsc: list[str] = []
    if argv[:1] in (["run"], ["submit"]):
        try:
            ours, petsc = _split_run(argv[1:], RUN_OPTIONS if argv[0] == "run" else SUBMIT_OPTIONS)
        except ValueError as exc:
            parser.error(str(exc))
        argv = [argv[0], *ours]
    if argv[:1] == ["assimilate"]:  # RUN_DIR --network NAME FILE: argparse took FILE for an unknown argument
        argv = ["assimilate", *_options_first(argv[1:], {"--network"})]
    args = parser.parse_args(argv)
    if getattr(args, "output", None) == "":  # an unset shell variable (-o "$RUN"): not the YAML's directory
        parser.error("-o/--output is empty: give the run directory's name, or leave -o out to use outputs.directory")
    bad = [a for a in petsc if a.startswith("--")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (PETSc options start with a single '-')")
    if petsc:
        from twin.config.solver_options import too_many_options

        many = too_many_options(petsc)  # more than PETSc can start with (its traceback): refused here
        if many is not None:
            from twin.core.errors import ConfigError

            return _errors(ConfigError([many]))
    if args.command in STARTS_PETSC_LATE:
        from twin.core.petsc import init_petsc, options_files_in_play

        if options_files_in_play():  # a broken .petscrc: one line now, not PETSc's traceback wherever it starts
            init_petsc([])
    with _allow_outside(getattr(args, "allow_outside", None) or []):
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "run":
            return cmd_run(args, petsc)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "report":
            from twin.cli_report import cmd_report

            return cmd_report(args)
        if args.command == "check-model":
            from twin.cli_model import cmd_check_model

            return cmd_check_model(args)
        if args.command == "new-model":
            from twin.cli_model import cmd_new_model

            return cmd_new_model(args)
        if args.command == "assimilate":
            from twin.cli_campaign import cmd_assimilate

            return cmd_assimilate(args)
        if args.command in ("submit", "status"):
            from twin.cli_campaign import cmd_status, cmd_submit

            return cmd_submit(args, petsc) if args.command == "submit" else cmd_status(args)
        return cmd_info(args)


if __name__ == "__main__":
    sys.exit(main())
