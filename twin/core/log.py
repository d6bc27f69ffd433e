"""Rank-aware logging: rank 0 logs at INFO, the other ranks at WARNING, every line tagged with its rank."""

from __future__ import annotations

import logging
import sys


def setup_logging(rank: int = 0, size: int = 1, verbose: bool = False, logfile: str | None = None) -> None:
    """Configure the ``twin`` logger for one MPI rank (idempotent).

    Parameters
    ----------
    rank, size : int
        The rank in, and size of, the job's communicator.
    verbose : bool
        DEBUG on rank 0 instead of INFO.
    logfile : str, optional
        Also write this rank's records to a file (rank 0 only, to keep one log per run).
    """
    logger = logging.getLogger("twin")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    level = (logging.DEBUG if verbose else logging.INFO) if rank == 0 else logging.WARNING
    tag = f"[{rank}/{size}] " if size > 1 else ""
    fmt = logging.Formatter(f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    logger.addHandler(handler)
    if logfile and rank == 0:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.setLevel(level)
    logger.propagate = False


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``twin`` hierarchy (``twin.models.tumour`` etc.)."""
    return logging.getLogger(name if name.startswith("twin") else f"twin.{name}")
