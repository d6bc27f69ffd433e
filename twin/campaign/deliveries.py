"""The files delivered to a live twin (:mod:`twin.campaign.live`): where they are kept in the run directory
(``deliveries/<sha256[:16]>-<name>``), the record of them (``deliveries.json``: SHA-256, name, origin, time of
arrival, network, the cycles each added), and which of the files given to a command are new.

A file that names other files (a visit table naming its images: the network type's ``companions``,
:class:`twin.core.kinds.NetworkType`) is delivered with them: its SHA-256 is that of its bytes followed by the hex
SHA-256 of each file it names, in order (a changed image is a new delivery), and it is kept as a folder,
``deliveries/<sha256[:16]>-<stem>/<name>`` with the files it names at the same places relative to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
    #: the files ``path`` names, kept with it (a visit table's images)
    companions: list[Path] = field(default_factory=list)


def record_file(run_dir) -> Path:
    return Path(run_dir) / RECORD


def read_record(run_dir) -> list[dict[str, Any]]:
    """The deliveries recorded in ``RUN_DIR/deliveries.json`` (empty before the first)."""
    return list(layout.read_json(record_file(run_dir)).get("deliveries", []))


def stored_name(sha256: str, path, bundle: bool = False) -> str:
    """``deliveries/<sha256[:16]>-<name>``: where a delivered file is kept (relative to the run directory); the name
    keeps the file's suffix (the reader is chosen by it). A ``bundle`` (a file kept with the files it names) is
    ``deliveries/<sha256[:16]>-<stem>/<name>``."""
    name = _UNSAFE.sub("-", Path(path).name).strip("-.") or "observations"
    if bundle:
        stem = _UNSAFE.sub("-", Path(path).stem).strip("-.") or "observations"
        return f"{DELIVERIES}/{sha256[:PREFIX]}-{stem[-100:]}/{name[-100:]}"
    return f"{DELIVERIES}/{sha256[:PREFIX]}-{name[-100:]}"


def companions_of(spec, path) -> list[Path]:
    """The files ``path`` (a file of network ``spec``) names (:class:`twin.core.kinds.NetworkType` ``companions``;
    none for most networks)."""
    from twin.core.kinds import network_types

    declared = network_types().get(getattr(spec, "type", None))
    if declared is None or declared.companions is None:
        return []
    return [Path(p) for p in declared.companions(path)]


def delivery_sha256(path, companions) -> str:
    """The SHA-256 of a delivery: of the file's bytes, or with ``companions`` of the bytes followed by the hex SHA-256
    of each (the module docstring)."""
    import hashlib

    from twin.observations.table import file_sha256

    if not companions:
        return file_sha256(Path(path))
    h = hashlib.sha256(Path(path).read_bytes())
    for c in companions:
        h.update(file_sha256(Path(c)).encode())
    return h.hexdigest()


def classify(run_dir: Path, files: list[Path], exps) -> list[Delivery]:
    """Every file's SHA-256 and whether it was assimilated before (the record, or a network's own file)."""
    from twin.observations.table import existing_file

    known = {r["sha256"]: r for r in read_record(run_dir)}
    own = {}
    specs = {loaded.config.assimilation.observations[i].file: loaded.config.assimilation.observations[i]
             for _, loaded, i, _ in exps}
    for path, spec in specs.items():
        own[delivery_sha256(existing_file(path), companions_of(spec, path))] = path
    spec = next(iter(specs.values()))
    out: list[Delivery] = []
    seen: dict[str, str] = {}
    for f in files:
        companions = companions_of(spec, existing_file(f))
        sha = delivery_sha256(f, companions)
        d = Delivery(f, sha, companions=companions)
        if sha in known:
            d.state, d.stored = "recorded", known[sha]["stored"]
        elif sha in own:
            d.state, d.stored = "assimilated", own[sha]
        elif sha in seen:  # the same bytes given twice in one command: once is enough
            d.state, d.stored = "assimilated", f"given before in this command as {seen[sha]}"
        seen.setdefault(sha, str(f))
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

    make_directory(run_dir / DELIVERIES, private=sensitive)
    for d in new:
        target = run_dir / stored_name(d.sha256, d.path, bool(d.companions))
        kept = [target.parent / Path(c).resolve().relative_to(d.path.resolve().parent) for c in d.companions]
        if target.is_file() and all(k.is_file() for k in kept) and delivery_sha256(target, kept) == d.sha256:
            continue  # kept by a command killed before it recorded the file
        if d.companions:
            make_directory(target.parent, private=sensitive)
        # the files it names first, the file last: a file kept whole names files kept whole
        for source, copy in [*zip(d.companions, kept), (d.path, target)]:
            copy.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(copy, private=sensitive) as tmp:
                shutil.copyfile(source, tmp)
        if delivery_sha256(target, kept) != d.sha256:
            raise ObservationError(f"observation file {d.path}: changed while twin assimilate read it (its "
                                   "SHA-256 differs): deliver files whole (write them under another name and "
                                   "rename them when complete) and run the command again")
    records = read_record(run_dir)
    for d in new:
        records.append({"sha256": d.sha256, "name": d.path.name,
                        "source": d.path.name if sensitive else str(d.path.resolve()),
                        "stored": stored_name(d.sha256, d.path, bool(d.companions)), "network": network,
                        "received": utc_now(),
                        "cycles": {p.exp_dir.name: [p.cycles_before, p.cycles_after] for p in plans}})
    import json

    write_text(record_file(run_dir), json.dumps({"deliveries": records}, indent=1, sort_keys=True) + "\n",
               private=sensitive)
