"""Campaign reports: ``write_report(run_dir)`` writes ``<run_dir>/report/index.html`` (self-contained: the PNG
images are embedded as base64 and also kept next to it) from what a run left in its directory (:mod:`.data`), with
the panels of :mod:`.figures`. A panel whose data are absent is replaced by a sentence saying what is missing."""

from twin.report.html import write_report

__all__ = ["write_report"]
