"""Rendering the sbatch templates of ``jobscripts/`` for a campaign, without letting YAML inject shell commands.

Templates (``string.Template``, ``$$`` is a literal ``$``):

``campaign_driver.sbatch``   one small job that runs the Parsl workflow (``python -m workflows run``); Parsl submits
                             the member runs as blocks of their own from inside it (``resources.type: slurm``);
``single_run.sbatch``        one MPI job holding the whole campaign (online mode);
``experiment_array.sbatch``  a job array, one online MPI job per experiment of the matrix.

Safety, in two layers:

1. Values that go into ``#SBATCH`` directives (partition, account, qos, walltime, job name) are checked against
   :data:`SAFE_TOKEN` / :data:`WALLTIME` here again (the schema already refused them), because sbatch reads directives
   itself and shell quoting does not apply there: :class:`~twin.core.errors.ConfigError` names the key and the bad
   characters. The whole value must match (``fullmatch``: ``$`` alone would let a trailing newline through).
2. Everything in a shell command (paths from ``outputs.directory`` and the command line, module names, ``worker_init``
   words, the interpreter) is passed through :func:`shlex.quote`. Every Slurm-facing value, paths included, is
   refused if it holds a control character: a newline or carriage return would start a new line of the script (and
   ``str.split`` would silently join a ``worker_init`` entry's two lines into one command), a NUL would cut it.
   Output and working-directory options are given to ``sbatch`` as arguments, never written into directives.
"""

from __future__ import annotations

import re
import shlex
import string
import sys
from dataclasses import dataclass
from pathlib import Path

from twin.config import schema
from twin.core.errors import ConfigError, ConfigProblem

SAFE_TOKEN = re.compile(schema.SAFE_TOKEN)
#: [days-]hours:minutes[:seconds], ASCII digits only (``\d`` would take any script's digits)
WALLTIME = re.compile(schema.WALLTIME)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TEMPLATES = ("campaign_driver", "single_run", "experiment_array")


def template_dir() -> Path:
    """``workflows/templates`` (installed with the package; a link to the checkout's ``jobscripts/``)."""
    here = Path(__file__).resolve().parent
    for d in (here / "templates", here.parent / "jobscripts"):
        if (d / "campaign_driver.sbatch").is_file():
            return d
    raise ConfigError("the sbatch templates are missing from this installation (workflows/templates)")


def _no_control(value: str, key: str) -> str:
    if _CONTROL.search(value):
        bad = sorted({repr(c) for c in _CONTROL.findall(value)})
        raise ConfigError([ConfigProblem("<campaign>", None, None, key,
                                         f"{_short(value)} contains control characters ({' '.join(bad)}): a newline "
                                         "or carriage return would start a new line of the batch script")])
    return value


def _short(value: str) -> str:
    return repr(value) if len(value) <= 60 else repr(value[:40]) + f"... ({len(value)} characters)"


def _token(value: str, key: str) -> str:
    _no_control(value, key)
    if not SAFE_TOKEN.fullmatch(value):
        bad = sorted({c for c in value if not SAFE_TOKEN.fullmatch(c)})
        allowed = "only letters, digits and _ . , : / = + @ % -"
        raise ConfigError([ConfigProblem("<campaign>", None, None, key,
                                         f"{_short(value)} contains characters not allowed in a batch script "
                                         f"({' '.join(map(repr, bad))}): {allowed}")])
    return value


def _path(value: str | Path, key: str) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise ConfigError([ConfigProblem("<campaign>", None, None, key,
                                         f"path {_short(text)} contains control characters (e.g. a newline)")])
    return shlex.quote(text)


@dataclass
class RenderedScript:
    """A batch script and the ``sbatch`` arguments that go with it (output files, working directory)."""

    text: str
    sbatch_args: list[str]


def render(kind: str, resources, *, job_name: str, campaign_file: Path, run_dir: Path, workdir: Path,
           log_dir: Path, python: str | None = None, experiment_names: list[str] | None = None,
           petsc_options: list[str] | None = None) -> RenderedScript:
    """Render template ``kind`` for ``resources`` (a ``SlurmResources``); ``petsc_options``, the command line's,
    follow a ``--`` at the end of the job's command (``${petsc_options}``), each word shell-quoted.

    Raises
    ------
    ConfigError
        If a value would not be safe in a batch script (see the module docstring).
    """
    if kind not in TEMPLATES:
        raise ConfigError(f"unknown batch script {kind!r}; known: {', '.join(TEMPLATES)}")
    python = python or sys.executable
    _token(job_name, "campaign.name")
    part = _token(resources.partition, "resources.partition")
    account = _token(resources.account, "resources.account") if resources.account else None
    qos = _token(resources.qos, "resources.qos") if resources.qos else None
    if _CONTROL.search(resources.walltime) or not WALLTIME.fullmatch(resources.walltime):
        raise ConfigError([ConfigProblem("<campaign>", None, None, "resources.walltime",
                                         f"{_short(resources.walltime)} is not a Slurm time such as 01:00:00 or "
                                         "1-12:00:00")])
    env_lines = [f"module load {shlex.quote(_token(m, 'resources.modules'))}" for m in resources.modules]
    for cmd in resources.worker_init:
        _no_control(cmd, "resources.worker_init")
        env_lines.append(" ".join(shlex.quote(_token(w, "resources.worker_init")) for w in cmd.split()))
    env_lines.append("export OMPI_MCA_rmaps_base_oversubscribe=1")
    ranks = max(1, int(resources.ranks))
    # an online job starts its ranks with srun, also when the workflow's tasks would use Parsl's MPI mode (parsl-mpi:
    # its srun prefix, composed by Parsl, exists only inside a Parsl worker)
    launch = ("srun --ntasks=$SLURM_NTASKS" if resources.launcher in ("srun", "parsl-mpi")
              else "mpiexec -n $SLURM_NTASKS")
    names = experiment_names or []
    for n in names:
        _token(n, "experiment name")
    values = {
        "job_name": job_name, "partition": part,
        "account_line": f"#SBATCH --account={account}" if account else "",
        "qos_line": f"#SBATCH --qos={qos}" if qos else "",
        "walltime": resources.walltime, "nodes": str(int(resources.nodes)), "ranks": str(ranks),
        "environment": "\n".join(env_lines), "workdir": _path(workdir, "working directory"),
        "python": _path(python, "python"), "campaign_file": _path(campaign_file, "campaign file"),
        "run_dir": _path(run_dir, "outputs.directory"), "launch": launch,
        "experiment_names": " ".join(shlex.quote(n) for n in names), "last_index": str(max(len(names) - 1, 0)),
        "petsc_options": (" -- " + " ".join(shlex.quote(_no_control(w, "PETSc option")) for w in petsc_options)
                          if petsc_options else ""),
    }
    text = string.Template((template_dir() / f"{kind}.sbatch").read_text()).substitute(values)
    text = re.sub(r"\n{2,}(?=#SBATCH)", "\n", text)
    log_dir = Path(log_dir)
    _path(log_dir, "log directory")
    pattern = "%x-%A_%a" if kind == "experiment_array" else "%x-%j"
    args = [f"--chdir={workdir}", f"--output={log_dir / (pattern + '.out')}", f"--error={log_dir / (pattern + '.err')}"]
    return RenderedScript(text, args)
