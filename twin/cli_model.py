"""``twin check-model``: the conformance kit on a model type (:mod:`twin.conformance`), one line per check; and
``twin new-model NAME``: a new installable package with a model on the contract, from the template shipped in
``twin/templates/new_model``.

Exit codes as the other commands: ``0`` every check passed (or was skipped, with its reason), ``1`` a check failed,
``2`` bad input (an unknown model type, a campaign file that does not validate, no example section; for new-model a
name that is refused or a directory that exists).
"""

from __future__ import annotations

import argparse
import keyword
import math
import os
import re
import sys
from pathlib import Path


def add_check_model_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "check-model", help="check that a model type honours the model contract (one line per check)",
        description="Run the model contract's checks on a model type: checkpoint round trip, bitwise restart, "
                    "a batched forecast equal to advance (when the model offers one), "
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


#: most time steps of the checks' window (each check runs it several times)
MAX_CHECK_STEPS = 10000


def max_check_ranks() -> int:
    """Most ranks ``check-model --ranks`` starts on this machine: 4 per core (oversubscribed, as a laptop test of a
    decomposition is), at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


#: the latest model time ``twin check-model`` runs to (``--steps`` x ``--step``): as far as any grid reaches in space
MAX_CHECK_TIME = 1e15


def cmd_check_model(args) -> int:
    from twin.core.errors import TwinError

    if args.ranks < 1 or args.steps < 2 or not args.rank_rtol > 0 or (args.step is not None and not args.step > 0):
        print("error: check-model: --ranks must be at least 1, --steps at least 2, --rank-rtol and --step positive",
              file=sys.stderr)
        return 2
    if args.step is not None and not (math.isfinite(args.step) and args.step * args.steps <= MAX_CHECK_TIME):
        print(f"error: check-model: --step {args.step:g}: {args.steps} steps of it reach beyond t = {MAX_CHECK_TIME:g} "
              "(model time units); give the model's step, a finite number", file=sys.stderr)
        return 2
    most = max_check_ranks()
    if args.ranks > most or args.steps > MAX_CHECK_STEPS:
        print(f"error: check-model: --ranks {args.ranks} / --steps {args.steps}: at most {most} ranks (4 per core of "
              f"this machine's {os.cpu_count() or 1}) and {MAX_CHECK_STEPS} steps; the check compares a decomposition, "
              "a few ranks show it", file=sys.stderr)
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
    # SIGTERM (kill, a batch system's time limit) ends the check through its clean-up (twin.cli.Terminated): the
    # temporary directory goes, and the ranks check's mpiexec gets SIGTERM with this process's end
    # (twin.core.launcher.die_with_parent)
    report = check_model(subject, ranks=args.ranks, steps=args.steps, rank_rtol=args.rank_rtol)
    print(report.text())
    failed = report.failed()
    for r in failed:
        print(f"error: {r.name}: {r.measured}", file=sys.stderr)
    return 1 if failed else 0


# -- twin new-model ----------------------------------------------------------------------------------------------------
#: a model type / Python package name: lower case, digits and single underscores, starting with a letter
MODEL_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
#: names a new package may not take (twin's own, and what test runners import)
RESERVED = {"twin", "workflows", "test", "tests", "conftest", "setup", "src"}


def add_new_model_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "new-model", help="write a new installable package with a model of your own (a template to edit)",
        description="Write a small installable package: a model class on twin's model contract (a 1-D "
                    "advection-diffusion equation on PETSc TS, to replace with yours), its YAML section, the entry "
                    "point that makes 'type: NAME' known to twin, an ETKF campaign, a README and tests that run the "
                    "conformance kit. Then: pip install --no-deps -e DIR; twin check-model NAME --config "
                    "DIR/campaign.yaml.")
    c.add_argument("name", metavar="NAME", help="the model type and Python package name (lower case, digits, "
                                                "underscores; e.g. glacier_flow)")
    c.add_argument("-o", "--directory", metavar="DIR", help="where to write it (a new directory; default: NAME "
                                                            "with dashes, in the current directory)")
    return c


def check_model_name(name: str) -> None:
    """Refuse a name that is not a clean package name or that twin or Python already uses (``ConfigError``)."""
    import importlib.util

    from twin.core.errors import ConfigError
    from twin.core.kinds import kinds, model_types

    if not MODEL_NAME.fullmatch(name) or len(name) > 40:
        raise ConfigError(f"new-model: name {name!r}: write lower case letters, digits and single underscores, "
                          "starting with a letter, at most 40 characters (e.g. glacier_flow)")
    if keyword.iskeyword(name) or name in RESERVED:
        raise ConfigError(f"new-model: name {name!r} is reserved (a Python keyword or a name twin and pytest use); "
                          "choose another")
    if name in model_types() or name in kinds():
        raise ConfigError(f"new-model: model type or kind {name!r} is already installed (twin info lists them); "
                          "choose another name")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or "built in"
        raise ConfigError(f"new-model: a module named {name!r} is already importable ({where}); a package of that "
                          "name would shadow it or be shadowed: choose another name")


def template_files(name: str) -> dict[str, str]:
    """The new package's files, ``{relative path: text}``, from the template in ``twin/templates/new_model``.

    Placeholders are ``${package}``, ``${kind}``, ``${dist}``, ``${Class}`` and ``${twin_version}``
    (:class:`string.Template`); a template file ``x.tmpl`` becomes ``x``, the directory ``package`` the package's
    name and ``test_package.py`` ``test_<name>.py``.
    """
    from importlib.resources import files
    from string import Template

    from twin import __version__

    words = {"package": name, "kind": name, "dist": name.replace("_", "-"),
             "Class": "".join(w.capitalize() for w in name.split("_")), "twin_version": __version__}
    root = files("twin").joinpath("templates", "new_model")
    out: dict[str, str] = {}

    def walk(node, rel: tuple[str, ...]) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, rel + (name if child.name == "package" else child.name,))
            elif child.name.endswith(".tmpl"):
                target = child.name[:-len(".tmpl")].replace("test_package.py", f"test_{name}.py")
                out["/".join(rel + (target,))] = Template(child.read_text(encoding="utf-8")).substitute(words)

    walk(root, ())
    return out


def write_new_model(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Write the package of model ``name`` into the new directory ``directory`` (default ``./<name-with-dashes>``);
    returns it. Written beside it first and renamed into place, so that a failure leaves nothing half written.

    Raises
    ------
    ConfigError
        A refused name (:func:`check_model_name`), a directory that exists, or a parent that does not.
    """
    import shutil
    import tempfile

    from twin.core.errors import ConfigError

    check_model_name(name)
    target = Path(directory if directory is not None else name.replace("_", "-")).expanduser()
    if target.exists() or target.is_symlink():
        raise ConfigError(f"new-model: {target} exists; twin new-model writes a new directory and never overwrites "
                          "(choose another with -o DIR, or remove it)")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"new-model: the parent directory {parent} does not exist; create it first")
    files = template_files(name)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        for rel, text in files.items():
            path = staging.joinpath(*rel.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o755)
        os.rename(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"new-model: cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def cmd_new_model(args) -> int:
    from twin.core.errors import TwinError

    try:
        target = write_new_model(args.name, args.directory)
    except TwinError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    print(f"wrote {target}: {', '.join(written)}")
    print("next:\n"
          f"  pip install --no-deps -e {target}\n"
          f"  twin check-model {args.name} --config {target / 'campaign.yaml'}\n"
          f"  (cd {target} && pytest)\n"
          f"  twin run {target / 'campaign.yaml'} -o runs/{args.name}")
    return 0
