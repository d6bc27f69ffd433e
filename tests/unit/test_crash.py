"""Python's fault report read back as one line (twin/core/crash.py): the crashing thread's innermost frame outside the
standard library, in a report of one thread and of several, and nothing where there is no report."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from twin.core.crash import crash_line

CRASHER = textwrap.dedent("""\
    import ctypes, faulthandler, sys, threading, time
    faulthandler.enable(all_threads=True)
    if sys.argv[1] == "threads":
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    def update():
        ctypes.string_at(0)
    update()
    """)


def _report(tmp_path, mode: str) -> str:
    script = tmp_path / "model.py"
    script.write_text(CRASHER)
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Fatal Python error: Segmentation fault" in out.stderr, out.stderr
    return out.stderr


def test_a_report_of_one_thread_names_the_models_frame_not_ctypes(tmp_path):
    line = crash_line("some log line\n" + _report(tmp_path, "one"))
    assert line == f"Segmentation fault in update ({tmp_path / 'model.py'}, line 6)"


def test_a_report_of_several_threads_names_the_crashing_thread(tmp_path):
    report = _report(tmp_path, "threads")
    assert report.index("Thread 0x") < report.index("Current thread")  # the other thread is listed first
    assert crash_line(report) == f"Segmentation fault in update ({tmp_path / 'model.py'}, line 6)"


def test_text_without_a_report_has_no_crash_line():
    assert crash_line("Traceback (most recent call last):\n  File \"x.py\", line 1 in f\nValueError: no\n") is None
    assert crash_line("") is None
