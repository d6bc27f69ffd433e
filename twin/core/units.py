"""Physical units: parse the unit strings of YAML files and convert to a model's internal units (pint).

The registry is built from pint's definitions parsed once per pint version and kept in pint's own disk cache
(``pint.UnitRegistry(cache_folder=":auto:")``, the user's cache directory, ``~/.cache/pint`` on Linux): parsing the
definitions file took 0.15 s of every ``twin`` command, loading the parsed copy 0.02 s. The cache only saves time:
where it cannot be written (a read-only home) or read (a copy another process is writing at that moment), the
registry is parsed as before, with the same definitions.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import pint

log = logging.getLogger(__name__)


def build_registry(cache_folder=":auto:") -> pint.UnitRegistry:
    """A unit registry of pint's default definitions, loaded from the parsed copy in ``cache_folder`` (``":auto:"``:
    the user's cache directory; ``None``: no cache) and parsed from the definitions file when that fails."""
    if cache_folder is not None:
        try:
            return pint.UnitRegistry(cache_folder=cache_folder)
        except Exception as exc:  # a partly written copy, an unwritable directory: the cache only saves time
            log.debug("pint's definitions cache in %s not used (%s: %s)", cache_folder, type(exc).__name__, exc)
    return pint.UnitRegistry()


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    return build_registry()


def parse_units(text: str) -> pint.Unit:
    """Parse a unit string (``"mm^2/day"``, ``"Gy"``, ``"1"``); raises ``ValueError`` with a readable message."""
    try:
        return registry().Unit(text.replace("^", "**"))
    except Exception as exc:  # pint raises several unrelated types for bad input (AssertionError for "m//s")
        why = (str(exc) if type(exc).__name__ == "UndefinedUnitError" else
               "not a unit expression: unit names and numbers joined by *, / and ^, e.g. mm^2/day")
        raise ValueError(f"unknown units {text!r} ({why})") from None


def convert(value, from_units: str, to_units: str):
    """``value`` in ``from_units`` expressed in ``to_units``; ``ValueError`` if the dimensions differ."""
    ureg = registry()
    src, dst = parse_units(from_units), parse_units(to_units)
    if src.dimensionality != dst.dimensionality:
        raise ValueError(f"units {from_units!r} are not convertible to {to_units!r} "
                         f"({src.dimensionality} vs {dst.dimensionality})")
    return ureg.Quantity(value, src).to(dst).magnitude


def compatible(units: str, reference: str) -> bool:
    try:
        return parse_units(units).dimensionality == parse_units(reference).dimensionality
    except ValueError:
        return False


def duration_text(value: float, unit: str) -> str:
    """A time span as its readers say it: ``value`` in ``unit`` (``s``, ``day``, ``seconds``, ...) shown in seconds,
    minutes, hours or days, whichever reads best (``21600 s`` -> ``6 h``); dimensionless model time as the number."""
    try:
        s = float(convert(float(value), unit, "s")) if unit and unit.strip() != "1" else None
    except ValueError:
        s = None
    if s is None:
        return f"{value:g}" + (f" {unit}" if unit and unit.strip() != "1" else " (model time units)")
    if s >= 2 * 86400 or (s >= 86400 and s % 86400 == 0):
        return f"{s / 86400:g} days"
    if s >= 2 * 3600 or (s >= 3600 and s % 3600 == 0):
        return f"{s / 3600:g} h"
    if s >= 120:
        return f"{s / 60:g} min"
    return f"{s:g} s"
