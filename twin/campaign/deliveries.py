"""The files delivered to a live twin (:mod:`twin.campaign.live`): where they are kept in the run directory
(``deliveries/<sha256[:16]>-<name>``), the record of them (``deliveries.json``: SHA-256, name, origin, time of
arrival, network, the cycles each added), and which of the files given to a command are new.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.campaign import layout
from twin.core.errors import ObservationError

#: the record of every delivered file, in the run directory
RECORD = "deliveries.json"
#: where the delivered files are kept, in the run directory
DELIVERIES = "deliveries"
#: characters of the SHA-256 that prefix a kept file's name
PREFIX = 16

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")



@dataclass
class Delivery:
    """One file given to ``twin assimilate``: its path and SHA-256, and ``state``: ``new`` (kept and assimilated by
    this command), ``recorded`` (kept by an earlier command, its assimilation completed now) or ``assimilated``
    (nothing to do: an earlier command assimilated it, or it is the campaign's own file)."""

    path: Path
    sha256: str
    state: str = "new"
    stored: str = ""


def record_file(run_dir) -> Path:
    return Path(run_dir) / RECORD


def read_record(run_dir) -> list[dict[str, Any]]:
    """The deliveries recorded in ``RUN_DIR/deliveries.json`` (empty before the first)."""
    return list(layout.read_json(record_file(run_dir)).get("deliveries", []))


def stored_name(sha256: str, path) -> str:
    """``deliveries/<sha256[:16]>-<name>``: where a delivered file is kept (relative to the run directory); the name
    keeps the file's suffix (the reader is chosen by it)."""
    name = _UNSAFE.sub("-", Path(path).name).strip("-.") or "observations"
    return f"{DELIVERIES}/{sha256[:PREFIX]}-{name[-100:]}"


def classify(run_dir: Path, files: list[Path], exps) -> list[Delivery]:
    """Every file's SHA-256 and whether it was assimilated before (the record, or a network's own file)."""
    from twin.observations.table import existing_file, file_sha256

    known = {r["sha256"]: r for r in read_record(run_dir)}
    own = {}
    for path in dict.fromkeys(loaded.config.assimilation.observations[i].file for _, loaded, i, _ in exps):
        own[file_sha256(existing_file(path))] = path
    out, seen = [], set()
    for f in files:
        sha = file_sha256(existing_file(f))
        d = Delivery(f, sha)
        if sha in known:
            d.state, d.stored = "recorded", known[sha]["stored"]
        elif sha in own:
            d.state, d.stored = "assimilated", own[sha]
        elif sha in seen:
            d.state = "assimilated"  # the same bytes given twice in one command: once is enough
        seen.add(sha)
        out.append(d)
    return out


def pending(run_dir: Path, exps) -> dict[Path, list[str]]:
    """Per experiment, the recorded files its ``experiment.yaml`` does not list yet (absolute paths, in order)."""
    out = {}
    for d, loaded, i, name in exps:
        listed = set(loaded.config.assimilation.observations[i].deliveries)
        out[d] = [str((run_dir / r["stored"]).resolve()) for r in read_record(run_dir)
                  if r.get("network") == name and str((run_dir / r["stored"]).resolve()) not in listed]
    return out


def keep(run_dir: Path, new: list[Delivery], network: str, plans: list, sensitive: bool) -> None:
    """Copy the new files into ``RUN_DIR/deliveries/`` (each checked against the SHA-256 it was read with), then
    append them to the record (rank 0); ``plans`` say each experiment's cycles before and after. A sensitive run
    records the file's name only, not where it came from (a path names its user)."""
    import shutil

    from twin.io.atomic import atomic_output, make_directory, write_text
    from twin.io.provenance import utc_now
    from twin.observations.table import file_sha256

    make_directory(run_dir / DELIVERIES, private=sensitive)
    for d in new:
        target = run_dir / stored_name(d.sha256, d.path)
        if target.is_file() and file_sha256(target) == d.sha256:
            continue  # kept by a command killed before it recorded the file
        with atomic_output(target, private=sensitive) as tmp:
            shutil.copyfile(d.path, tmp)
            if file_sha256(tmp) != d.sha256:
                raise ObservationError(f"observation file {d.path}: changed while twin assimilate read it (its "
                                       "SHA-256 differs): deliver files whole (write them under another name and "
                                       "rename them when complete) and run the command again")
    records = read_record(run_dir)
    for d in new:
        records.append({"sha256": d.sha256, "name": d.path.name,
                        "source": d.path.name if sensitive else str(d.path.resolve()),
                        "stored": stored_name(d.sha256, d.path), "network": network, "received": utc_now(),
                        "cycles": {p.exp_dir.name: [p.cycles_before, p.cycles_after] for p in plans}})
    import json

    write_text(record_file(run_dir), json.dumps({"deliveries": records}, indent=1, sort_keys=True) + "\n",
               private=sensitive)
