"""Where a campaign may write: its run directory stays below the working directory, or below a root allowed
explicitly on the command line.

A campaign file names its run directory (``outputs.directory``, or ``-o DIR`` on the command line). Without a bound,
``outputs.directory: ../../etc`` writes into ``/etc`` (as root, it can), and a symbolic link inside the working
directory can lead anywhere. So the run directory, with every symbolic link in it followed
(:meth:`pathlib.Path.resolve`), must lie below an allowed root:

* the working directory (where twin is run), always;
* each directory given with ``--allow-outside DIR`` (``twin validate``, ``twin run``, ``twin submit``);
* each directory listed in the environment variable :data:`OUTPUT_ROOT_ENV` (``TWIN_OUTPUT_ROOT``, separated by
  ``:``). The command line sets it for the processes it starts (MPI ranks, Parsl workers, batch jobs inherit it),
  so that every process of a campaign applies the same rule.

Refused with the directory as written, where it leads, the roots and how to allow it. The path arithmetic is here;
the run directory is named by :func:`twin.driver.run_directory` and created by
:func:`twin.io.provenance.prepare_run_directory`, which refuses a run directory or checkpoint folder that is a
symbolic link leading out of its parent.
"""

from __future__ import annotations

import os
from pathlib import Path

from twin.config.messages import short
from twin.core.errors import ConfigError, ConfigProblem

#: environment variable listing further allowed roots of run directories (``os.pathsep``-separated)
OUTPUT_ROOT_ENV = "TWIN_OUTPUT_ROOT"


def allowed_roots(extra: list[str | os.PathLike] | tuple = (), environ=None) -> list[Path]:
    """The working directory, the roots in :data:`OUTPUT_ROOT_ENV` and ``extra``, each resolved."""
    environ = os.environ if environ is None else environ
    roots = [Path.cwd()]
    roots += [Path(p) for p in environ.get(OUTPUT_ROOT_ENV, "").split(os.pathsep) if p.strip()]
    roots += [Path(p) for p in extra]
    out: list[Path] = []
    for r in roots:
        r = r.expanduser().resolve()
        if r not in out:
            out.append(r)
    return out


def is_within(path: Path, root: Path) -> bool:
    """Whether the resolved ``path`` is ``root`` or lies below it (both already resolved)."""
    return path == root or root in path.parents


def outside_message(written: str | os.PathLike, roots: list[Path], what: str = "run directory") -> str | None:
    """Why ``written`` may not be a run directory, or ``None`` when it lies below one of ``roots``."""
    path = Path(written)
    resolved = path.resolve()
    if any(is_within(resolved, r) for r in roots):
        return None
    lexical = Path(os.path.normpath(Path.cwd() / path))
    via = " through a symbolic link" if lexical != resolved else ""
    where = roots[0] if len(roots) == 1 else ", ".join(str(r) for r in roots)
    return (f"{what} {short(str(written))} leads{via} to {short(str(resolved), 120)}, outside the working directory"
            f"{'' if len(roots) == 1 else ' and the allowed roots'} ({where}): write a directory below it, or allow "
            f"a root explicitly with --allow-outside DIR (or {OUTPUT_ROOT_ENV}=DIR)")


def confine(written: str | os.PathLike, roots: list[Path] | None = None, what: str = "run directory") -> Path:
    """``written`` resolved (symbolic links followed), if it lies below an allowed root.

    Raises
    ------
    ConfigError
        Naming the directory, where it leads and how to allow it.
    """
    roots = allowed_roots() if roots is None else roots
    message = outside_message(written, roots, what)
    if message is not None:
        raise ConfigError([ConfigProblem("", None, None, "", message)])
    return Path(written).resolve()


def output_problems(loaded, roots: list[Path] | None = None) -> list[ConfigProblem]:
    """Problems of a loaded campaign's ``outputs.directory`` (file, line, column), empty when it is allowed."""
    cfg = loaded.config
    written = cfg.outputs.directory.replace("{name}", cfg.campaign.name)
    message = outside_message(written, allowed_roots() if roots is None else roots, "outputs.directory")
    return [] if message is None else [loaded.problem(("outputs", "directory"), message)]


__all__ = ["OUTPUT_ROOT_ENV", "allowed_roots", "is_within", "outside_message", "confine", "output_problems"]
