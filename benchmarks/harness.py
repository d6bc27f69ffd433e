"""Shared plumbing of the benchmarks: result records, machine description, MPI launching, RESULTS.md.

A benchmark is a module ``benchmarks/bench_<name>.py`` with ``main()``; it prints its results with :func:`emit`, one JSON
record per line prefixed ``BENCH``. Benchmarks that need several ranks launch themselves with :func:`mpirun`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "BENCH "
ROOT = Path(__file__).resolve().parent


def emit(benchmark: str, metric: str, value: float, units: str, **context) -> None:
    """Print one result record (collected by the harness)."""
    rec = {"benchmark": benchmark, "metric": metric, "value": float(value), "units": units, **context}
    print(PREFIX + json.dumps(rec), flush=True)


def mpirun(module: str, ranks: int, *args: str, timeout: float = 1800) -> list[dict]:
    """Run ``python -m <module> args`` under ``mpiexec -n ranks``; return the records printed by rank 0."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), sys.executable, "-m", module, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT.parent)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return parse(out.stdout)


def parse(text: str) -> list[dict]:
    return [json.loads(line[len(PREFIX):]) for line in text.splitlines() if line.startswith(PREFIX)]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = ""
    try:
        load = f", load average {os.getloadavg()[0]:.1f} at the end"
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}{load}"


def append_results(records: list[dict], path: Path = ROOT / "RESULTS.md") -> None:
    """Append a dated section with a table of ``records`` to RESULTS.md."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"\n## {stamp} — {machine()}\n", "| benchmark | metric | value | units | context |",
             "|---|---|---|---|---|"]
    for r in records:
        ctx = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("benchmark", "metric", "value", "units"))
        lines.append(f"| {r['benchmark']} | {r['metric']} | {r['value']:.4g} | {r['units']} | {ctx} |")
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by `make bench` (`python -m benchmarks`); newest last.\n")
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
