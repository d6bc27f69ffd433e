"""Run benchmarks and append their results to benchmarks/RESULTS.md.

Usage: ``python -m benchmarks [NAME ...]`` where NAME is ``stream``, ``tumour`` ... (``bench_<NAME>.py``); all when
none is given.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks.harness import ROOT, append_results, parse


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem[len("bench_"):] for p in ROOT.glob("bench_*.py"))
    records: list[dict] = []
    failed = []
    for name in names:
        print(f"== benchmark {name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}"], capture_output=True, text=True,
                              cwd=ROOT.parent)
        got = parse(proc.stdout)
        for r in got:
            print(f"   {r['metric']}: {r['value']:.4g} {r['units']}", flush=True)
        if proc.returncode:
            failed.append(name)
            print(proc.stderr[-3000:], file=sys.stderr)
        records += got
    if records:
        append_results(records)
        print(f"appended {len(records)} results to {ROOT / 'RESULTS.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
