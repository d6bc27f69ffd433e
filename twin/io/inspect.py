"""``twin inspect``: a readable summary of a twin output file or a run directory.

For a checkpoint (``.h5``): cycle, model time, fields (shape, members, grid), parameters, arrays, RNG streams, metadata
keys, provenance, and the checksum status after full verification. For a NetCDF file: its kind (posterior, forecast,
diagnostics, observations), dimensions, variables with units, time range, provenance, and the data-digest status. For
a run directory: the checkpoints of every ``checkpoint/`` directory in it (the run's own and each experiment's,
``experiments/<name>/checkpoint``) with their status, the newest good one of each marked, then every NetCDF file.

:func:`examine` also says which checks failed (a checkpoint that does not verify, a NetCDF file whose data do not
match its checksum or that cannot be read), so that ``twin inspect`` can exit non-zero; a NetCDF file without a
checksum is reported as such and is not a failure.

Everything here is serial and read-only: a corrupted file is reported, never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from twin.core.errors import OutputError
from twin.io.checkpoint import CheckpointReader, list_checkpoints
from twin.io.checkpoint.reader import oversized_objects
from twin.io.netcdf import CHECKSUM_ATTR, verify_netcdf
from twin.io.provenance import describe

_MAX_META = 12


@dataclass
class Inspection:
    """What :func:`examine` found: the summary text and one line per failed check (``"<file>: <problem>"``)."""

    text: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def inspect(path) -> str:
    """A multi-line summary of a checkpoint, a NetCDF file or a run directory (see :func:`examine`).

    Raises
    ------
    OutputError
        If ``path`` does not exist, or is a directory twin did not write.
    """
    return examine(path).text


#: what a directory twin wrote holds at least one of (a run, an experiment, a checkpoint folder's parent; a checkpoint
#: folder holds cycle_*.h5)
RUN_DIRECTORY_MARKS = ("campaign.yaml", "twin.log", "experiment.yaml", "checkpoint", "experiments")


def examine(path) -> Inspection:
    """The summary of a checkpoint, a NetCDF file or a run directory, and the checks that failed in it.

    Raises
    ------
    OutputError
        If ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        if not any((path / n).exists() for n in RUN_DIRECTORY_MARKS) and not any(path.glob("cycle_*.h5")):
            raise OutputError(f"twin inspect: {path} is not a twin run directory (none of "
                              f"{', '.join(RUN_DIRECTORY_MARKS)} in it): give a run directory or an output file")
        return _directory(path)
    if not path.exists():
        raise OutputError(f"twin inspect: {path} does not exist")
    if not path.is_file():  # a FIFO or a device would be read for ever
        raise OutputError(f"twin inspect: {path} is not a regular file (a pipe, socket or device): give an output "
                          "file or a run directory")
    if path.suffix in (".h5", ".hdf5"):
        if h5py.is_hdf5(path) and not _is_checkpoint(path):  # someone else's HDF5 file: not a failed checkpoint
            return Inspection(f"{path}: HDF5, not written by twin (no format attribute 'twin-checkpoint')")
        return _checkpoint(path)
    if path.suffix in (".nc", ".nc4"):
        return _netcdf(path)
    if h5py.is_hdf5(path):
        return _checkpoint(path) if _is_checkpoint(path) else _netcdf(path)
    if path.name == "decision.json":
        return _decision(path)
    return Inspection(f"{path}: not a twin output (unknown file type)")


def _decision(path: Path) -> Inspection:
    """A decision record (``decision.json``): its kind, time, members, what it decided, and its provenance; a
    record that is not JSON is a failed check."""
    import json

    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Inspection(f"{path}: decision record, unreadable ({exc})", [f"{path}: not a decision record: {exc}"])
    when = rec.get("time_utc") or f"{rec.get('time')} {rec.get('time_units', '')}".rstrip()
    lines = [f"{path}: decision record ({rec.get('kind', 'unknown kind')}) at {when}, "
             f"{rec.get('members', '?')} posterior members"]
    if rec.get("summary"):
        lines.append(f"  {rec['summary']}")
    prov = rec.get("provenance")
    if isinstance(prov, dict):
        lines.append(f"  written by twin {prov.get('twin_version', '?')} (git {prov.get('git_revision', '?')}), "
                     f"{prov.get('ranks', '?')} rank(s), {prov.get('end_time', '')}; campaign file SHA-256 "
                     f"{prov.get('campaign_sha256', '?')}")
    else:
        lines.append("  no provenance (written by an older twin)")
    return Inspection("\n".join(lines))


def _is_checkpoint(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == "twin-checkpoint"
    except OSError as exc:
        if "unable to lock file" in str(exc):  # held open for writing by another process: the reader says so
            return True
        return False


def _checkpoint_status(path: Path) -> tuple[str, str]:
    """``(status line, "")`` for a checkpoint that verifies, ``(status line, the reader's error)`` otherwise."""
    try:
        with CheckpointReader(path, None, verify=True) as r:
            return f"ok ({r.checksum}, digest {r.digest})", ""
    except OutputError as exc:
        return f"FAILED: {exc}", str(exc)


def _checkpoint(path: Path) -> Inspection:
    status, error = _checkpoint_status(path)
    lines = [f"{path}: twin checkpoint", f"  checksum: {status}"]
    try:
        with h5py.File(path, "r") as f:
            if oversized_objects(f, path.stat().st_size):
                # listing would read the objects whose declared sizes the check refused
                lines.append("  (contents not listed: the file declares objects larger than itself)")
                return Inspection("\n".join(lines), [error])
            lines.insert(1, f"  cycle {f.attrs.get('cycle', '?')}, time {f.attrs.get('time', '?')}")
            for group in ("fields", "parameters", "arrays"):
                items = []
                for name, dset in f.get(group, {}).items():
                    desc = f"{name} {dset.dtype} {tuple(dset.shape)}"
                    if "members" in dset.attrs and int(dset.attrs["members"]):
                        desc += f", {int(dset.attrs['members'])} members"
                    if dset.attrs.get("units"):
                        desc += f" [{dset.attrs['units']}]"
                    items.append(desc)
                if items:
                    lines.append(f"  {group}:")
                    lines += [f"    {i}" for i in items]
            rng = {name: g.attrs.get("bit_generator", "?") for name, g in f.get("rng", {}).items()}
            if rng:
                lines.append("  rng: " + ", ".join(f"{k} ({v})" for k, v in rng.items()))
            meta = sorted(f["meta"].attrs.keys()) if "meta" in f else []
            if meta:
                more = f", ... ({len(meta)} keys)" if len(meta) > _MAX_META else ""
                lines.append("  meta: " + ", ".join(meta[:_MAX_META]) + more)
            if "provenance" in f and len(f["provenance"].attrs):
                lines.append("  provenance:")
                lines += describe(dict(f["provenance"].attrs), indent="    ")
    except (OSError, OutputError) as exc:
        lines.append(f"  (contents unreadable: {exc})")
    return Inspection("\n".join(lines), [error] if error else [])


def _netcdf(path: Path) -> Inspection:
    ok, status = verify_netcdf(path)
    failures = [f"NetCDF file {path}: {status}"] if ok is False else []
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError, RuntimeError) as exc:
        # xarray's own words for bytes no backend reads are advice to install more backends: not what is wrong
        why = ("not NetCDF: empty, or not NetCDF/HDF5 bytes" if "IO backends" in str(exc)
               else " ".join(str(exc).split())[:300])
        return Inspection(f"{path}: unreadable NetCDF ({why})", failures or [f"NetCDF file {path}: unreadable ({why})"])
    with ds:
        kind = ds.attrs.get("twin_kind", "NetCDF (not written by twin)")
        lines = [f"{path}: {kind} ({ds.attrs.get('Conventions', 'no Conventions attribute')})",
                 f"  checksum: {status}" if CHECKSUM_ATTR in ds.attrs or ok is False else "  checksum: none"]
        lines.append("  dimensions: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
        if "time" in ds.variables and ds["time"].size:
            t = np.asarray(ds["time"].values, dtype=float)
            lines.append(f"  time: {ds['time'].size} values, {t.min():g} .. {t.max():g} "
                         f"{ds['time'].attrs.get('units', '')}".rstrip())
        if "cycle" in ds.variables and ds["cycle"].size:
            # records of no cycle (a forecast run's, a free run's beyond the last analysis) are the variable's fill
            cycles = np.asarray(ds["cycle"].values, dtype=float)
            cycles = cycles[np.isfinite(cycles)]
            lines.append(f"  cycles: {int(cycles.min())} .. {int(cycles.max())}" if cycles.size else
                         "  cycles: none (no record belongs to an assimilation cycle)")
        lines.append("  variables:")
        for name, var in ds.data_vars.items():
            units = var.attrs.get("units")
            dtype = var.encoding.get("dtype", var.dtype)  # the file's type (xarray reads an integer with a fill as float)
            lines.append(f"    {name}({', '.join(map(str, var.dims))}) {dtype}" + (f" [{units}]" if units else "")
                         + (f": {var.attrs['long_name']}" if "long_name" in var.attrs else ""))
        prov = {k[len("twin_"):]: v for k, v in ds.attrs.items() if k.startswith("twin_")}
        if "version" in prov:
            prov["twin_version"] = prov.pop("version")
        if prov:
            lines.append("  provenance:")
            lines += describe(prov, indent="    ")
    return Inspection("\n".join(lines), failures)


def _checkpoint_directories(path: Path) -> list[Path]:
    """Every directory below ``path`` (``path`` included) that holds checkpoints at their final names: the run's
    own ``checkpoint/`` and each experiment's, found by walking rather than by a campaign layout, so that single
    runs, campaigns and copied experiment directories are all inspected."""
    candidates = [path, *sorted(p for p in path.rglob("checkpoint") if p.is_dir())]
    out: list[Path] = []
    for d in candidates:
        files = list_checkpoints(d)
        if files and files[0][1].parent not in out:
            out.append(files[0][1].parent)
    return out


def _directory(path: Path) -> Inspection:
    lines = [f"{path}: run directory"]
    failures: list[str] = []
    directories = _checkpoint_directories(path)
    for d in directories:
        good, rows = None, []
        for _, file in list_checkpoints(d):
            status, error = _checkpoint_status(file)
            if error:
                failures.append(error)
            else:
                good = file
            rows.append((file, status))
        where = d.relative_to(path).as_posix() if d != path else "."
        lines.append(f"  checkpoints in {where}: {len(rows)}")
        for file, status in rows:
            mark = "  <- latest good" if file == good else ""
            lines.append(f"    {file.name}: {status}{mark}")
    if not directories:
        lines.append("  checkpoints: none")
    for nc in sorted(path.rglob("*.nc")):
        part = _netcdf(nc)
        lines += ["", part.text]
        failures += part.failures
    return Inspection("\n".join(lines), failures)


def verify_checkpoints(paths) -> dict[str, str]:
    """Full verification of each checkpoint in ``paths``: ``{path: ""}`` when it verifies, ``{path: the reader's
    one-line problem}`` otherwise (missing, empty, truncated, bit-flipped ...)."""
    return {str(p): _checkpoint_status(Path(p))[1] for p in paths}


def main(argv: list[str] | None = None) -> int:
    """``python -m twin.io.inspect --verify PATH...``: one JSON object ``{path: problem}`` on stdout (``""`` for a
    checkpoint that verifies). ``twin status`` runs it in a process of its own, because the reader needs PETSc and
    the process asking (a workflow driver, a login node) must not initialise MPI."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m twin.io.inspect", description=main.__doc__.split(":")[0])
    p.add_argument("--verify", nargs="+", required=True, metavar="PATH")
    args = p.parse_args(argv)
    print(json.dumps(verify_checkpoints(args.verify)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
