"""Owner-only files and directories: what makes a run sensitive on disk.

A sensitive campaign's run directory is owner-only (``0o700``); writers that are not handed the campaign's
``sensitive`` flag (the log, markers, the heartbeat, the task log) tell from :func:`is_private_directory` that their
output must be owner-only (``0o600``) and must name no host or user (:mod:`twin.io.atomic` says more). The property
lives in the file system, so it holds in every process that touches the run.
"""

from __future__ import annotations

import os
import stat

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def is_private_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory that grants nothing to group and others; ``False`` when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0
