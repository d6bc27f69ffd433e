"""``twin validate``: wall time and peak memory on the shipped campaigns and on worst-case files of at most 4 MiB,
side by side with the same interpreter that only imports twin's command (the floor every command pays).

Worst cases: an alias "billion laughs" (nested anchors whose expansion would be exponential: the reader refuses it
by its alias bounds), nesting 4 MiB deep (``[[[[...]]]]``), and a valid campaign whose one network lists 45,000
observation points (the deep checks convert and test every one against the domain). Goals (issue 20): every file
within 2 s and 200 MB.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT, emit

MiB = 2 ** 20
PROBE = ("import resource, sys, time\n"
         "t0 = time.perf_counter()\n"
         "from twin.cli import main\n"
         "rc = main(['validate', sys.argv[1]]) if len(sys.argv) > 1 else 0\n"
         "print('PROBE', time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)\n")


def _probe(path: Path | None) -> tuple[float, float, int]:
    """Seconds from import to exit, peak RSS in MB and exit code of one ``twin validate`` in a fresh interpreter."""
    args = [sys.executable, "-c", PROBE] + ([str(path)] if path else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    line = next(s for s in out.stdout.splitlines() if s.startswith("PROBE"))
    _, seconds, rss_kb, rc = line.split()
    return float(seconds), float(rss_kb) / 1024, int(rc)


def _worst_cases(tmp: Path) -> dict[str, Path]:
    laughs = ["schema_version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    depth = (4 * MiB - 16) // 2
    campaign = (ROOT.parent / "configs" / "lorenz96_etkf.yaml").read_text()
    n = 45_000  # the reader refuses more than 100,000 values: the largest list of points a file may hold
    points = ", ".join(f"[{(i % 4000) / 100:.2f}]" for i in range(n))
    big = campaign.replace("observations: [{type: all_points, component: 0, error_std: 1.0}]",
                           f"observations: [{{type: points, component: 0, error_std: 1.0, points: [{points}]}}]")
    files = {"alias bomb": "\n".join(laughs) + "\n", "nesting 4 MiB deep": "[" * depth + "]" * depth + "\n",
             f"{n} observation points": big}
    out = {}
    for name, text in files.items():
        assert len(text.encode()) <= 4 * MiB, (name, len(text))
        path = tmp / (name.replace(" ", "_") + ".yaml")
        path.write_text(text)
        out[name] = path
    return out


def main() -> None:
    floor_s, floor_mb, _ = min(_probe(None) for _ in range(3))
    emit("validate", "import floor", floor_s, "s", peak_MB=round(floor_mb, 1))
    with tempfile.TemporaryDirectory() as tmp:
        cases = {p.stem: p for p in sorted((ROOT.parent / "configs").glob("*.yaml"))}
        cases.update(_worst_cases(Path(tmp)))
        for name, path in cases.items():
            seconds, mb, rc = min(_probe(path) for _ in range(3))
            emit("validate", f"twin validate {name}", seconds, "s", peak_MB=round(mb, 1), exit_code=rc,
                 size_KiB=round(path.stat().st_size / 1024, 1), over_import_floor_s=round(seconds - floor_s, 3),
                 goal="<= 2 s and <= 200 MB")


if __name__ == "__main__":
    main()
