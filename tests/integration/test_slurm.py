"""``twin submit`` against a real Slurm (slurmctld + slurmd + munge from the distribution, one node, started here).

The session fixture installs the Debian packages when they are missing and the tests run as root, writes a private
slurm.conf (``SLURM_CONF`` points the client commands at it), starts the daemons, waits for ``sinfo`` to show the node
idle and stops them by their PID files at the end. When Slurm cannot be started the tests are skipped with the
reason; nothing is faked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaign_case import l96_campaign
from twin.campaign import layout

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

#: libpmix-dev: the unversioned libpmix.so that Slurm's mpi/pmix plugin loads, so that srun starts Open MPI's ranks
#: (``srun --mpi=pmix``, launcher parsl-mpi); slurmd loads its plugins when it starts, so it is installed before
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "libpmix-dev"]
#: the library of libpmix-dev (Debian's path, whose Slurm plugin looks for it there)
LIBPMIX = "/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so"

SLURM_CONF = """\
ClusterName=twintest
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmdSpoolDir={d}/spool-slurmd
StateSaveLocation={d}/state
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def _install() -> str | None:
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(p) is None
               and not Path(f"/usr/sbin/{p}").exists()]
    missing += [] if Path(LIBPMIX).exists() or not Path(LIBPMIX).parent.is_dir() else ["libpmix.so"]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing)} missing) and cannot be installed (not root on Debian)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = _run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], env=env, timeout=600)
    if r.returncode != 0:
        _run(["apt-get", "update"], env=env, timeout=600)
        r = _run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], env=env, timeout=600)
    return None if r.returncode == 0 else f"apt-get install {' '.join(PACKAGES)} failed: {r.stderr[-500:]}"


def _drain_queue(env: dict) -> None:
    """Wait up to a minute for the driver job and Parsl's blocks to leave the queue; cancel what is left."""
    for _ in range(60):
        if not _run(["squeue", "-h"], env=env).stdout.strip():
            return
        time.sleep(1)
    _run(["scancel", "-u", "root"], env=env)


def _free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on this machine now (the kernel's choice), so that two test sessions' Slurms (each its
    own slurmctld and slurmd) do not collide, as fixed ports did."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(pidfile: Path) -> None:
    pid = _pid(pidfile)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-node Slurm; yields the environment that points the client commands at it."""
    if os.geteuid() != 0:
        pytest.skip("a test Slurm needs root (slurmd runs jobs as their users)")
    reason = _install()
    if reason:
        print(f"\nSKIP Slurm: {reason}")
        pytest.skip(reason)
    d = Path(tmp_path_factory.mktemp("slurm"))
    for sub in ("spool-slurmd", "state"):
        (d / sub).mkdir()
    conf = d / "slurm.conf"
    ctld_port, d_port = _free_ports(2)
    conf.write_text(SLURM_CONF.format(d=d, ctld_port=ctld_port, d_port=d_port))
    env = dict(os.environ, SLURM_CONF=str(conf))
    started: list[Path] = []
    munge_pid = Path("/run/munge/munged.pid")
    try:
        for p in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(p).mkdir(parents=True, exist_ok=True)
            shutil.chown(p, "munge", "munge")
        if not Path("/etc/munge/munge.key").is_file() or Path("/etc/munge/munge.key").stat().st_size == 0:
            _run(["mungekey", "-c", "-f"])
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        if _run(["munge", "-n"]).returncode != 0:  # no munged running yet: start ours
            r = _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--pid-file", str(munge_pid)])
            if r.returncode != 0:
                pytest.skip(f"munged did not start: {r.stderr.strip()}")
            started.append(munge_pid)
        for cmd, pidfile in ((["/usr/sbin/slurmctld", "-f", str(conf)], d / "slurmctld.pid"),
                             (["/usr/sbin/slurmd", "-f", str(conf), "-N", "localhost"], d / "slurmd.pid")):
            r = _run(cmd, env=env)
            if r.returncode != 0:
                pytest.skip(f"{cmd[0]} did not start: {r.stderr.strip()[-300:]}")
            started.append(pidfile)
        for _ in range(300):
            r = _run(["sinfo", "-h", "-o", "%T"], env=env)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                break
            time.sleep(0.1)
        else:
            log = (d / "slurmctld.log").read_text()[-800:] if (d / "slurmctld.log").exists() else ""
            pytest.skip(f"Slurm started but the node never became idle: {r.stdout} {r.stderr} {log}")
        yield env
    finally:
        for pidfile in reversed(started):
            _stop(pidfile)


CAMPAIGN = l96_campaign("slurmcamp", seed=2, n=20, N=3, da_seed=None, inflation=None, cycles=2, extra="""\
    ensemble: {ranks_per_member: 2}
    resources:
      type: slurm
      partition: debug
      walltime: "00:15:00"
      nodes: 1
      ranks_per_node: 2
      ranks: 1
      workers: 1
      launcher: mpiexec
    """)

SUBMIT = ("import argparse, sys; from twin.cli_campaign import add_submit_parser, add_status_parser, cmd_submit, "
          "cmd_status; p = argparse.ArgumentParser(); s = p.add_subparsers(dest='c'); add_submit_parser(s); "
          "add_status_parser(s); a = p.parse_args(sys.argv[1:]); "
          "sys.exit(cmd_submit(a) if a.c == 'submit' else cmd_status(a))")


def test_submit_runs_a_campaign_through_sbatch(slurm, tmp_path):
    campaign = tmp_path / "c.yaml"
    campaign.write_text(CAMPAIGN)
    run = tmp_path / "run"
    # through the twin command, with a PETSc option (misspelt) that the batch script gives to every task
    r = _run([sys.executable, "-m", "twin.cli", "submit", str(campaign), "-o", str(run), "-l96_ts_rk_typ", "3"],
             env=slurm, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "submitted batch job" in r.stdout
    job = (run / "slurm" / "jobs.txt").read_text().split()[0]
    exp = layout.experiment_dir(run, "slurmcamp")
    deadline = time.time() + 420
    while time.time() < deadline:
        if all((exp / n).is_file() for n in layout.OUTPUTS):
            break
        q = _run(["squeue", "-h", "-j", job, "-o", "%T"], env=slurm)
        if q.returncode == 0 and not q.stdout.strip() and not all((exp / n).is_file() for n in layout.OUTPUTS):
            time.sleep(2)  # the job left the queue: give the last files a moment, then report its log
            if all((exp / n).is_file() for n in layout.OUTPUTS):
                break
            logs = "\n".join(p.read_text()[-3000:] for p in sorted((run / "slurm").glob("*.err")))
            pytest.fail(f"driver job {job} ended without outputs:\n{logs}")
        time.sleep(2)
    else:
        pytest.fail("the campaign did not finish within 7 minutes")
    st = _run([sys.executable, "-c", SUBMIT, "status", str(run)], env=slurm)
    assert st.returncode == 0, st.stderr
    assert "slurmcamp: done, 2/2 cycles" in st.stdout, st.stdout
    forecasts = [rec for rec in layout.read_task_log(exp) if rec["task"] == "forecast" and rec["outcome"] == "done"]
    assert len(forecasts) == 2 * 3 and {rec["ranks"] for rec in forecasts} == {2}
    # the option reached the member tasks (two-rank mpiexec jobs in the Slurm block), which found no solver read it
    assert "PETSc option -l96_ts_rk_typ on the command line changed nothing: the solvers of component 'l96' did not " \
           "read it" in (run / "twin.log").read_text()
    _drain_queue(slurm)


def test_scancel_of_the_driver_job_takes_its_parsl_blocks_with_it(slurm, tmp_path):
    """An operator cancels a running campaign with scancel of its driver job: the driver's signal handler runs
    Parsl's clean-up, which cancels the block jobs, so nothing of the campaign is left in the queue; twin status then
    says the driver is gone (exit 1), and the driver's last word is 'cancelled'."""
    campaign = tmp_path / "c.yaml"
    text = CAMPAIGN.replace("cycles: 2}", "cycles: 20}").replace("name: slurmcamp", "name: cancelled")
    campaign.write_text(text.replace("timeline: {start: 0.0, end: 1.0, units: s}",
                                     "timeline: {start: 0.0, end: 2.0, units: s}"))
    run = tmp_path / "run"
    r = _run([sys.executable, "-c", SUBMIT, "submit", str(campaign), "-o", str(run)], env=slurm, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    driver = (run / "slurm" / "jobs.txt").read_text().split()[0]
    exp = layout.experiment_dir(run, "cancelled")
    deadline = time.time() + 300
    while time.time() < deadline:  # cancel once a member forecast ran on a Parsl block
        if any(rec["task"] == "forecast" for rec in layout.read_task_log(exp)):
            break
        time.sleep(1)
    else:
        pytest.fail("no member forecast ran within 5 minutes")
    jobs = set(_run(["squeue", "-h", "-o", "%i"], env=slurm).stdout.split())
    assert driver in jobs and len(jobs) >= 2, jobs  # the driver and at least one Parsl block
    assert _run(["scancel", driver], env=slurm).returncode == 0
    for _ in range(90):
        if not _run(["squeue", "-h"], env=slurm).stdout.strip():
            break
        time.sleep(1)
    else:
        left = _run(["squeue", "-h", "-o", "%i %j %T"], env=slurm).stdout
        _run(["scancel", "-u", "root"], env=slurm)
        pytest.fail(f"jobs left in the queue 90 s after scancel of the driver {driver}:\n{left}")
    st = _run([sys.executable, "-c", SUBMIT, "status", str(run)], env=slurm)
    assert st.returncode == 1, st.stdout + st.stderr
    state = layout.read_json(run / "driver.json").get("state")
    assert state in ("cancelled", "crashed"), state


#: The campaign of test_submit_runs_a_campaign_through_sbatch with launcher parsl-mpi: members of 2 ranks, as many
#: as a node of the block holds (ranks_per_node 2), so each takes its node whole; online checkpoints every cycle as
#: the workflow does, so every checkpoint is compared.
MPI_MODE = CAMPAIGN.replace("name: slurmcamp", "name: mpimode").replace(
    "launcher: mpiexec", "launcher: parsl-mpi\noutputs: {checkpoint_every: 1}")
#: srun starts Open MPI's ranks through PMIx here (this slurm.conf's MpiDefault is none); the blocks inherit it
SRUN_MPI = {"SLURM_MPI_TYPE": "pmix"}


def test_parsl_mpi_mode_runs_each_member_on_a_whole_node_under_srun(slurm, tmp_path):
    """launcher: parsl-mpi: Parsl's MPI mode gives every task the block's node (num_nodes 1, 2 ranks for a member,
    1 for the other steps) and the task starts under the srun prefix Parsl composed for it ($PARSL_MPI_PREFIX, with
    --nodelist); every member forecast is one MPI job of 2 ranks, and the analysis equals online mode's bit for bit."""
    from mpi4py import MPI

    from campaign_case import arrays, assert_same
    from twin.campaign.experiments import experiments_section
    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    env = dict(slurm, **SRUN_MPI)
    probe = _run(["srun", "-n", "2", sys.executable, "-c", "from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())"],
                 env=env, timeout=120)
    if probe.stdout.split() != ["2", "2"]:
        pytest.skip(f"srun --mpi=pmix cannot start a 2-rank MPI job here: {probe.stderr.strip()[-400:]}")
    campaign = tmp_path / "c.yaml"
    campaign.write_text(MPI_MODE)
    run = tmp_path / "run"
    t0 = time.time()
    r = _run([sys.executable, "-c", SUBMIT, "submit", str(campaign), "-o", str(run)], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job = (run / "slurm" / "jobs.txt").read_text().split()[0]
    exp = layout.experiment_dir(run, "mpimode")
    while not layout.done_marker(exp).is_file() and not layout.stopped_marker(exp).is_file():
        if time.time() - t0 > 240:
            pytest.fail("the campaign did not finish within 4 minutes")
        if not _run(["squeue", "-h", "-j", job, "-o", "%T"], env=env).stdout.strip():
            time.sleep(2)  # the driver left the queue: give the last files a moment, then report its log
            if not layout.done_marker(exp).is_file():
                logs = "\n".join(p.read_text()[-3000:] for p in sorted((run / "slurm").glob("*.err")))
                pytest.fail(f"driver job {job} ended before the campaign was done:\n{logs}")
        time.sleep(1)
    st = _run([sys.executable, "-c", SUBMIT, "status", str(run)], env=env)
    assert "mpimode: done, 2/2 cycles" in st.stdout, st.stdout + st.stderr
    driver_log = (run / "twin.log").read_text()
    assert "launcher: every task is an srun job on whole nodes of its block" in driver_log

    # every member forecast ran as one MPI job of 2 ranks (the task's record of its world), the other steps on 1
    records = [rec for rec in layout.read_task_log(exp) if rec["outcome"] == "done"]
    forecasts = [rec for rec in records if rec["task"] == "forecast"]
    assert len(forecasts) == 2 * 3 and {rec["ranks"] for rec in forecasts} == {2}, forecasts
    assert {rec["ranks"] for rec in records if rec["task"] != "forecast"} == {1}
    # ... under the srun prefix Parsl's MPI mode composed for the node it gave the task
    tasks = run / "runinfo" / "tasks" / "mpimode"
    for base in sorted(tasks.glob("forecast_c*_m*.out")):
        assert "${PARSL_MPI_PREFIX:?" in base.with_suffix(".err").read_text()  # the command as Parsl ran it
        launch = [ln for ln in base.read_text().splitlines() if ln.startswith("launch (Parsl MPI mode): ")]
        assert launch == [("launch (Parsl MPI mode): srun --ntasks 2 --ntasks-per-node 2 --nodelist localhost "
                           "--nodes 1 --cpus-per-task=1 --kill-on-bad-exit=1")], base.read_text()
    assert len(list(tasks.glob("forecast_c*_m*.out"))) == 2 * 3
    init = (tasks / "init.out").read_text()
    assert "srun --ntasks 1 --ntasks-per-node 1 --nodelist localhost --nodes 1" in init
    # Parsl's MPI scheduler provisioned the node for each of the 10 tasks, one at a time on this one-node block
    provisioned = [ln for p in (run / "runinfo").rglob("worker_*.log") for ln in p.read_text().splitlines()
                   if "Launching task on provisioned nodes: ['localhost']" in ln]
    assert len(provisioned) == 1 + 2 * (3 + 1) + 1, provisioned
    seconds = time.time() - t0

    # the analysis equals the same campaign run online (every number, every cycle's checkpoint)
    loaded = load_campaign(campaign)
    run_online(loaded, MPI.COMM_SELF, tmp_path / "online", experiments=experiments_section(loaded.config))
    assert_same(arrays(exp), arrays(layout.experiment_dir(tmp_path / "online", "mpimode")))
    _drain_queue(env)
    print(f"\nparsl-mpi campaign on Slurm: {seconds:.1f} s from twin submit to done")


def test_a_block_waiting_in_the_queue_is_named_in_the_drivers_log(slurm, tmp_path):
    """Another job holds every CPU of the node, so the campaign's Parsl block waits in the queue: the driver (run by
    hand, outside Slurm) says so in its log within a minute, naming the block's job and Slurm's reason, instead of
    looking hung; once the other job is cancelled the block starts and the campaign runs to the end."""
    _drain_queue(slurm)
    blocker = _run(["sbatch", "--parsable", "-n", "4", "-J", "blocker", "-o", "/dev/null", "--wrap", "sleep 600"],
                   env=slurm)
    assert blocker.returncode == 0, blocker.stderr
    blocker_id = blocker.stdout.strip().split(";")[0]
    driver = None
    try:
        for _ in range(60):
            if _run(["squeue", "-h", "-j", blocker_id, "-o", "%T"], env=slurm).stdout.strip() == "RUNNING":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the blocking job did not start")
        (tmp_path / "c.yaml").write_text(CAMPAIGN.replace("name: slurmcamp", "name: queued"))
        driver = subprocess.Popen([sys.executable, "-m", "twin.cli", "run", "c.yaml", "--workflow", "-o", "run"],
                                  env=slurm, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        log, note = tmp_path / "run" / "twin.log", []
        deadline = time.time() + 90
        while not note and time.time() < deadline and driver.poll() is None:
            note = [ln for ln in log.read_text().splitlines() if "is Slurm job" in ln] if log.exists() else []
            time.sleep(1)
        assert note, f"no note on the waiting block within 90 s (driver exit {driver.poll()})"
        queue = _run(["squeue", "-h", "-o", "%i"], env=slurm).stdout.split()
        block = [job for job in queue if job != blocker_id]
        assert len(block) == 1, queue
        assert "INFO twin.workflows: no task has finished for " in note[0], note
        assert note[0].endswith(f" s: block 0 is Slurm job {block[0]}, PENDING (Resources); the tasks run once Slurm "
                                "starts the block"), note
        _run(["scancel", blocker_id], env=slurm)
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err[-3000:]
        assert out.startswith("done:"), out
    finally:
        _run(["scancel", blocker_id], env=slurm)
        if driver is not None and driver.poll() is None:
            driver.kill()
        _drain_queue(slurm)
