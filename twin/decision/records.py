"""JSON records of decisions in a run directory, read by ``twin report``.

``decision.json`` holds one decision record (``kind``: ``oncology``, ``structure``, ``sensors`` or any other, with a
human-readable ``summary`` where the producer gives one; see ``TreatmentDecision.as_dict`` and
``MaintenanceDecision.as_dict``); guardrail flags are kept as JSON lines in ``flags.jsonl``
(:meth:`twin.decision.guardrails.Guardrails.write_flags`). Both live in the run directory, or in an experiment's
directory for campaigns of several experiments. Written by one process (rank 0), atomically (rename).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

DECISION_FILE = "decision.json"
FLAGS_FILE = "flags.jsonl"


def _plain(value: Any) -> Any:
    """JSON-ready copy: NumPy scalars and arrays to Python, non-finite floats to strings ("inf", "nan")."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_decision(directory, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<directory>/decision.json`` (atomically)."""
    path = Path(directory) / DECISION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_plain(record), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_decision(directory) -> dict[str, Any] | None:
    """The decision record of a directory, or ``None`` when there is none (or it is unreadable)."""
    path = Path(directory) / DECISION_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
