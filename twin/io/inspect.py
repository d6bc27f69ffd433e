"""``twin inspect``: a readable summary of a twin output file or a run directory.

For a checkpoint (``.h5``): cycle, model time, fields (shape, members, grid), parameters, arrays, RNG streams, metadata
keys, provenance, and the checksum status after full verification. For a NetCDF file: its kind (posterior, forecast,
diagnostics, observations), dimensions, variables with units, time range, provenance, and the data-digest status. For
a run directory: every checkpoint with its status (the newest good one marked), then every NetCDF file.

Everything here is serial and read-only: a corrupted file is reported, never modified.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from twin.core.errors import OutputError
from twin.io.checkpoint import CheckpointReader, list_checkpoints
from twin.io.netcdf import CHECKSUM_ATTR, verify_netcdf
from twin.io.provenance import describe

_MAX_META = 12


def inspect(path) -> str:
    """A multi-line summary of a checkpoint, a NetCDF file or a run directory.

    Raises
    ------
    OutputError
        If ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        return _directory(path)
    if not path.exists():
        raise OutputError(f"twin inspect: {path} does not exist")
    if path.suffix in (".h5", ".hdf5"):
        return _checkpoint(path)
    if path.suffix in (".nc", ".nc4"):
        return _netcdf(path)
    if h5py.is_hdf5(path):
        return _checkpoint(path) if _is_checkpoint(path) else _netcdf(path)
    return f"{path}: not a twin output (unknown file type)"


def _is_checkpoint(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == "twin-checkpoint"
    except OSError:
        return False


def _checkpoint_status(path: Path) -> tuple[bool, str]:
    try:
        with CheckpointReader(path, None, verify=True) as r:
            return True, f"ok ({r.checksum}, digest {r.digest})"
    except OutputError as exc:
        return False, f"FAILED: {exc}"


def _checkpoint(path: Path) -> str:
    ok, status = _checkpoint_status(path)
    lines = [f"{path}: twin checkpoint", f"  checksum: {status}"]
    try:
        with h5py.File(path, "r") as f:
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
    except OSError as exc:
        lines.append(f"  (contents unreadable: {exc})")
    return "\n".join(lines)


def _netcdf(path: Path) -> str:
    ok, status = verify_netcdf(path)
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError, RuntimeError) as exc:
        return f"{path}: unreadable NetCDF ({exc})"
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
            lines.append(f"  cycles: {int(ds['cycle'].min())} .. {int(ds['cycle'].max())}")
        lines.append("  variables:")
        for name, var in ds.data_vars.items():
            units = var.attrs.get("units")
            lines.append(f"    {name}({', '.join(map(str, var.dims))}) {var.dtype}" + (f" [{units}]" if units else "")
                         + (f": {var.attrs['long_name']}" if "long_name" in var.attrs else ""))
        prov = {k[len("twin_"):]: v for k, v in ds.attrs.items() if k.startswith("twin_")}
        if "version" in prov:
            prov["twin_version"] = prov.pop("version")
        if prov:
            lines.append("  provenance:")
            lines += describe(prov, indent="    ")
    return "\n".join(lines)


def _directory(path: Path) -> str:
    lines = [f"{path}: run directory"]
    checkpoints = list_checkpoints(path)
    good = None
    rows = []
    for cycle, file in checkpoints:
        ok, status = _checkpoint_status(file)
        if ok:
            good = file
        rows.append((file, status))
    if rows:
        lines.append(f"  checkpoints: {len(rows)}")
        for file, status in rows:
            mark = "  <- latest good" if file == good else ""
            lines.append(f"    {file.name}: {status}{mark}")
    else:
        lines.append("  checkpoints: none")
    for nc in sorted(path.rglob("*.nc")):
        lines.append("")
        lines.append(_netcdf(nc))
    return "\n".join(lines)
