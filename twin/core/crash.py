"""Crashes in native code (a user's compiled model, a library): where they happened, in one line.

A segmentation fault, a bus error or an illegal instruction cannot be caught in Python: the process ends. What it
can leave is Python's own fault report (:mod:`faulthandler`): ``Fatal Python error: Segmentation fault`` and the
Python frames of every thread, most recent call first, which name the model's method that called into the crashing
code. PETSc's signal handler, which catches the signal first otherwise, printed only its banner ("Caught signal
number 11 SEGV ... configure using --with-debugging=yes, recompile, link, and run") and aborted with status 59,
naming neither the model nor the line (found by a probe with a crashing BMI model).

:func:`report_crashes` turns Python's report on once PETSc has started (its handlers are in place then, and Python's
handler passes each signal on to the one it replaced, so PETSc's banner and abort still follow); a warm Parsl worker
points it at the log of the step it runs while the step runs, so that the driver finds it there;
:func:`crash_line` reads a report back as the one line the driver and the workflow's failure messages give.
"""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path

#: faulthandler's first line of a report: ``Fatal Python error: Segmentation fault``
_FATAL = re.compile(r"^Fatal Python error: (?P<what>.+)$")
#: a frame of its report: ``  File "/path/model.py", line 42 in update``
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def report_crashes(file=None, *, anew: bool = False) -> None:
    """Python's fault report on, to ``file`` (an open file; the process's standard error by default), on top of the
    signal handlers installed before it (PETSc's); called again, the report goes to the new file from then on.

    ``anew`` (right after PETSc's start): a report turned on before (``PYTHONFAULTHANDLER``, ``-X faulthandler``) had
    its handlers replaced by PETSc's, which pass nothing on; it is turned off first (which puts back the handlers it
    found, the defaults) and on again, so that the report is written (without PETSc's banner after it)."""
    import faulthandler
    import sys

    try:
        if anew and faulthandler.is_enabled():
            faulthandler.disable()
        faulthandler.enable(file=file if file is not None else sys.__stderr__, all_threads=True)
    except (ValueError, OSError, AttributeError, RuntimeError):  # no usable file (a closed or captured stream)
        faulthandler.disable()  # never a report into a file descriptor that another file may have by then


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[key]).resolve()) for key in ("stdlib", "platstdlib") if key in paths)


def crash_line(text: str) -> str | None:
    """The last fault report in ``text`` as one line (``Segmentation fault in update (/path/model.py, line 42)``:
    the innermost frame of the crashing thread outside Python's standard library, which called into the native code),
    or ``None`` when ``text`` has none."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if _FATAL.match(ln.strip())]
    if not starts:
        return None
    first = starts[-1]
    what = _FATAL.match(lines[first].strip()).group("what")
    # the report lists every thread, each headed "Thread 0x... (most recent call first):", the crashing one "Current
    # thread 0x..." (or "Stack (most recent call first):" with one thread), and ends its frames with a blank line
    rest = lines[first + 1:]
    heads = [i for i, ln in enumerate(rest) if ln.startswith("Current thread")] or \
        [i for i, ln in enumerate(rest) if ln.rstrip().endswith("(most recent call first):")]
    frames = []
    for ln in rest[heads[0] + 1:] if heads else []:
        m = _FRAME.match(ln)
        if not m:
            break
        frames.append(m)
    if not frames:
        return what
    stdlib = _stdlib_dirs()
    own = next((m for m in frames if not str(Path(m.group("file")).resolve()).startswith(stdlib)), frames[0])
    return f"{what} in {own.group('func')} ({own.group('file')}, line {own.group('line')})"
