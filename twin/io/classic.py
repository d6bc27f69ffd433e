"""NetCDF classic files (CDF-1, CDF-2 "64-bit offset", CDF-5 "64-bit data"): the size a complete file has.

The netCDF library reads a classic file that was cut short without an error: the missing bytes read as zeros (or
fill values), which a reader would take for data. A complete file extends at least to the end of its last variable,
and the header says where each variable begins, so :func:`complete_size` parses the header (format specification:
https://docs.unidata.ucar.edu/netcdf-c/current/file_format_specifications.html) and returns that end::

    header  = magic numrecs dim_list gatt_list var_list
    var     = name ndims [dimid ...] vatt_list nc_type vsize begin

Counts are 4 bytes (8 in CDF-5), ``begin`` 4 bytes in CDF-1 and 8 in CDF-2/CDF-5, names and attribute values padded
to 4 bytes; a variable whose first dimension has length 0 in the header is a record variable, stored once per record
(``numrecs`` records of ``recsize`` bytes each, the sum of the padded per-record sizes, unpadded when there is a
single record variable). HDF5-based NetCDF-4 files need none of this: the HDF5 library refuses a truncated file.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

_MAGIC = {b"CDF\x01": 1, b"CDF\x02": 2, b"CDF\x05": 5}
# nc_type -> bytes per value (NC_BYTE ... NC_UINT64)
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
_DIMENSION, _VARIABLE, _ATTRIBUTE = 0x0A, 0x0B, 0x0C


class _Header:
    """Sequential big-endian reads from the start of a file."""

    def __init__(self, f, version: int):
        self.f = f
        self.count = 8 if version == 5 else 4
        self.offset = 4 if version == 1 else 8

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("the header is cut short")
        return data

    def uint(self, size: int) -> int:
        return struct.unpack(">Q" if size == 8 else ">I", self.take(size))[0]

    def name(self) -> None:
        n = self.uint(self.count)
        self.take(-(-n // 4) * 4)

    def listing(self, tag: int) -> int:
        """Number of elements of a dimension, attribute or variable list (0 when absent)."""
        found, n = self.uint(4), self.uint(self.count)
        if found not in (0, tag) or (found == 0 and n != 0):
            raise ValueError(f"expected list tag {tag:#x}, found {found:#x}")
        return n

    def attributes(self) -> None:
        for _ in range(self.listing(_ATTRIBUTE)):
            self.name()
            nc_type, n = self.uint(4), self.uint(self.count)
            if nc_type not in _TYPE_SIZE:
                raise ValueError(f"unknown attribute type {nc_type}")
            self.take(-(-n * _TYPE_SIZE[nc_type] // 4) * 4)


def complete_size(path: str | Path) -> int | None:
    """The number of bytes up to the end of the last variable of a classic NetCDF file.

    Returns
    -------
    int or None
        ``None`` if the file is not a classic NetCDF file (e.g. NetCDF-4/HDF5) or streams its records (the header
        does not say how many).

    Raises
    ------
    ValueError
        If the header itself is cut short or malformed.
    """
    with open(path, "rb") as f:
        version = _MAGIC.get(f.read(4))
        if version is None:
            return None
        h = _Header(f, version)
        numrecs = h.uint(h.count)
        dims = []
        for _ in range(h.listing(_DIMENSION)):
            h.name()
            dims.append(h.uint(h.count))
        h.attributes()
        variables = []
        for _ in range(h.listing(_VARIABLE)):
            h.name()
            ids = [h.uint(h.count) for _ in range(h.uint(h.count))]
            h.attributes()
            nc_type = h.uint(4)
            h.uint(h.count)  # vsize: overflows for large variables in CDF-2, so sizes are recomputed from the dims
            begin = h.uint(h.offset)
            if nc_type not in _TYPE_SIZE or any(i >= len(dims) for i in ids):
                raise ValueError("a variable has an unknown type or dimension")
            record = bool(ids) and dims[ids[0]] == 0
            size = math.prod(dims[i] for i in ids[record:]) * _TYPE_SIZE[nc_type]
            variables.append((begin, size, record))
    end = max((b + s for b, s, r in variables if not r), default=0)
    records = [(b, s) for b, s, r in variables if r]
    if records:
        if numrecs == (1 << (8 * h.count)) - 1:  # streaming: the record count is not written
            return None
        recsize = records[0][1] if len(records) == 1 else sum(-(-s // 4) * 4 for _, s in records)
        if numrecs:
            end = max(end, max(b + (numrecs - 1) * recsize + s for b, s in records))
    return end


__all__ = ["complete_size"]
