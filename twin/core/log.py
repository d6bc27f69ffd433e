"""Rank-aware logging: rank 0 logs at INFO, every line tagged with its rank.

The other ranks log errors, and the warnings that only they can see (a record logged with
``extra={"rank_local": True}``, e.g. a failed forecast of a member they hold): a warning from collective code, which
every rank would print, is printed once, by rank 0. On rank 0 a warning whose message template repeats is printed
the first :data:`REPEATS_SHOWN` times; :func:`log_repeated_warnings` then says how many more there were (e.g. a TAO
iteration limit a campaign sets on purpose, once per 4D-Var window). Python's warnings (NumPy's overflow in a run that
diverges) are log lines too, one each, on the terminal and in twin.log.

Logs of a sensitive run (a log file in an owner-only run directory, see :mod:`twin.io.atomic`) are redacted by
:class:`RedactingFormatter`: paths under the run directory are written relative to it, the home directory as ``~``,
and the user's and the host's names as ``<user>`` and ``<host>``; the log file itself is owner-only (``0o600``).
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import socket
import sys
import warnings

#: user and host names shorter than this are not redacted as words: they would blot out ordinary words ("a", "vm")
MIN_REDACTED_NAME = 3


class RedactingFormatter(logging.Formatter):
    """A formatter that keeps the run directory, the home directory, the user and the host out of the log.

    Parameters
    ----------
    fmt, datefmt : str
        As for :class:`logging.Formatter`.
    root : str
        The run directory: ``<root>/x`` is written ``x`` and ``<root>`` itself ``.`` (as given, absolute and with
        symbolic links resolved).
    """

    def __init__(self, fmt: str, datefmt: str, root: str):
        super().__init__(fmt, datefmt)
        # a path ends where a character that cannot continue a file name follows
        end = r"(?![\w.-])"
        roots = sorted({root, os.path.abspath(root), os.path.realpath(root)} - {"", "/", "."}, key=len,
                       reverse=True)
        subs: list[tuple[re.Pattern, str]] = []
        for r in roots:
            subs.append((re.compile(r"(?<![\w.-])" + re.escape(r.rstrip("/")) + "/"), ""))
            subs.append((re.compile(r"(?<![\w.-])" + re.escape(r.rstrip("/")) + end), "."))
        home = os.path.expanduser("~")
        if home not in ("", "/", "~"):
            subs.append((re.compile(re.escape(home.rstrip("/")) + r"(?=/|" + end + ")"), "~"))
        names = []
        try:
            names.append((getpass.getuser(), "<user>"))
        except (KeyError, OSError):  # no login name (a container without passwd entry): nothing to redact
            pass
        host = socket.gethostname()
        names += [(host, "<host>"), (host.split(".")[0], "<host>")]
        for name, tag in names:
            if len(name) >= MIN_REDACTED_NAME:
                subs.append((re.compile(r"(?<![A-Za-z0-9])" + re.escape(name) + r"(?![A-Za-z0-9])"), tag))
        self._subs = subs

    def redact(self, text: str) -> str:
        for pattern, replacement in self._subs:
            text = pattern.sub(replacement, text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


#: how often one warning (the same logger and message template) is printed before it is only counted
REPEATS_SHOWN = 2


class _NonRootFilter(logging.Filter):
    """Lets through errors and rank-local warnings on ranks other than 0."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or bool(getattr(record, "rank_local", False))


class _RepeatFilter(logging.Filter):
    """Counts warnings by (logger, message template) and lets the first :data:`REPEATS_SHOWN` of each through."""

    def __init__(self):
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}
        self.last: dict[tuple[str, str], str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        # one record passes every handler (terminal, log file): count it once
        decided = getattr(record, "_twin_shown", None)
        if decided is not None:
            return decided
        record._twin_shown = self._count(record)
        return record._twin_shown

    def _count(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] > REPEATS_SHOWN:
            self.last[key] = record.getMessage()
            return False
        return True


def log_repeated_warnings() -> None:
    """Say how many warnings were not printed because they repeated (rank 0; resets the counts)."""
    logger = logging.getLogger("twin")
    filters = {id(f): f for h in logger.handlers for f in h.filters}
    for f in filters.values():
        if isinstance(f, _RepeatFilter):
            for key, n in sorted(f.counts.items()):
                if n > REPEATS_SHOWN:
                    logger.info("%d more warning(s) like this were not printed, the last: %s", n - REPEATS_SHOWN,
                                f.last[key])
            f.counts.clear()
            f.last.clear()


def setup_logging(rank: int = 0, size: int = 1, verbose: bool = False, logfile: str | None = None,
                  quiet: bool = False) -> None:
    """Configure the ``twin`` logger for one MPI rank (idempotent).

    Parameters
    ----------
    rank, size : int
        The rank in, and size of, the job's communicator.
    verbose : bool
        DEBUG on rank 0 instead of INFO.
    logfile : str, optional
        Also write this rank's records to a file (rank 0 only, to keep one log per run). In an owner-only directory
        (a sensitive run) the file is owner-only and every handler redacts (:class:`RedactingFormatter`).
    quiet : bool
        Only warnings and errors on the terminal (the log file still gets everything at INFO).
    """
    from twin.core.private import PRIVATE_FILE_MODE, is_private_directory

    logger = logging.getLogger("twin")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    level = (logging.DEBUG if verbose else logging.INFO) if rank == 0 else logging.WARNING  # see _NonRootFilter
    tag = f"[{rank}/{size}] " if size > 1 else ""
    pattern, datefmt = f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s", "%H:%M:%S"
    directory = (os.path.dirname(logfile) or ".") if logfile else None
    private = directory is not None and is_private_directory(directory)
    fmt = RedactingFormatter(pattern, datefmt, directory) if private else logging.Formatter(pattern, datefmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    if quiet:  # the terminal only: the log file keeps the whole story
        handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    if logfile and rank == 0:
        if os.path.islink(logfile):  # appended to: a link would take the log wherever it points (twin makes none)
            from twin.core.errors import OutputError

            raise OutputError(f"{logfile} is a symbolic link to {os.path.realpath(logfile)}: twin appends its log to a "
                              "regular file in the run directory only; remove the link and run the command again")
        if private:
            # created owner-only before logging opens it (logging would create it with the umask's mode)
            fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
            os.fchmod(fd, PRIVATE_FILE_MODE)
            os.close(fd)
        fh = _LogFile(logfile)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    # on the handlers: a logger's own filters do not see the records of its children
    only = _RepeatFilter() if rank == 0 else _NonRootFilter()
    for h in logger.handlers:
        h.addFilter(only)
    logger.setLevel(level)
    logger.propagate = False
    warnings.showwarning = _warning_line


class _LogFile(logging.FileHandler):
    """The run's log file. When a record cannot be written (the file system is full, the file went read-only), one
    WARNING on the terminal says so and why, and the file is given up: logging's default printed a ``--- Logging
    error ---`` traceback for every record after (found by a probe filling a run's disk; the terminal's lines go on)."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        why = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc is not None else "unknown"
        for logger in (logging.getLogger("twin"), logging.getLogger()):
            if self in logger.handlers:
                logger.removeHandler(self)
        try:
            self.close()
        except OSError:
            pass
        logging.getLogger("twin").warning("%s cannot be written (%s): the log goes on on the terminal only",
                                          self.baseFilename, why)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's warnings (NumPy's ``RuntimeWarning: overflow encountered in multiply`` in a run that diverges, a
    library's deprecation) as one log line each, where they are kept (twin.log), instead of two lines on stderr
    with the source line; Python's filters still show each once per place."""
    here = os.path.relpath(filename)
    here = filename if here.startswith("..") else here
    logging.getLogger("twin.warnings").warning(f"{category.__name__}: {message} ({here}:{lineno})")


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``twin`` hierarchy (``twin.kinds.tumour`` etc.)."""
    return logging.getLogger(name if name.startswith("twin") else f"twin.{name}")
