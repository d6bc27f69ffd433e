"""Units as CF files write them (UDUNITS-2 syntax) in the pint terms of :mod:`twin.core.units`.

CF files write ``"m s-1"``, ``"km h-1"``, ``"kg m-2 s-1"``, ``"m.s-1"``, ``"m2"`` or ``"degrees_Celsius"`` where pint
wants ``"m * s**-1"``, ``"m**2"`` or ``"degC"``. :func:`to_pint` rewrites the UDUNITS forms (an integer exponent
written right after a symbol, ``^`` or ``**`` before it; a space or a ``.`` for a product) and leaves pint syntax as it
is, so ``"km/h"`` and ``"m/s**2"`` work too. Nothing is guessed: a unit pint does not know stays unknown and
:func:`convert_cf` says so.

A leading number is a scale factor, as UDUNITS-2 reads it: ``"1e-6"`` (a strain in microstrain), ``"0.01 m"``,
``"1.0e3 Pa"``; pint does not parse those, so the factor is taken off first and multiplies the values.

Values convert with their offset (``degC`` -> ``K`` adds 273.15); differences such as a standard error convert with
the scale alone (:func:`convert_cf_difference`).
"""

from __future__ import annotations

import re

import numpy as np

from twin.core.units import convert, parse_units

_ALIASES = {"degrees_celsius": "degC", "degree_celsius": "degC", "celsius": "degC", "degree_c": "degC",
            "degrees_c": "degC", "%": "percent", "-": "1", "": ""}
# a symbol (not part of a number such as 1e-3) followed by an integer exponent: m2, s-1, m^2, s**-1
_POWER = re.compile(r"(?<![\d.])([A-Za-z_]+)(?:\^|\*\*)?([+-]?\d+)(?![\d.])")
_PRODUCT_SPACE = re.compile(r"(?<=[\w)])\s+(?=[\w(])")
_PRODUCT_DOT = re.compile(r"(?<=[A-Za-z_\d)])\.(?=[A-Za-z_(])")
# a leading number followed by a space, a '*' or nothing: a UDUNITS scale factor ("1e-6", "0.01 m"), not "1/s"
_SCALE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:\s*\*\s*|\s+|$)(.*)$")


def to_pint(text: str) -> str:
    """``text`` (UDUNITS-2 or pint syntax) in pint syntax; ``""`` stays ``""`` (no units)."""
    s = str(text).strip()
    alias = _ALIASES.get(s.lower())
    if alias is not None:
        return alias
    s = _PRODUCT_DOT.sub("*", s)
    s = _POWER.sub(lambda m: f"{m.group(1)}**{m.group(2)}", s)
    return _PRODUCT_SPACE.sub("*", s)


def scaled(text: str) -> tuple[float, str]:
    """``text`` split into its UDUNITS scale factor and the units after it: ``"1e-6"`` -> ``(1e-06, "1")``,
    ``"0.01 m"`` -> ``(0.01, "m")``; text without a leading number -> ``(1.0, text)``."""
    m = _SCALE.match(str(text))
    if m is None:
        return 1.0, str(text)
    return float(m.group(1)), m.group(2).strip() or "1"


def check_cf(text: str) -> str:
    """``text`` (without a scale factor, :func:`scaled`) in pint syntax, or ``ValueError`` if it is empty or pint
    does not know it."""
    units = to_pint(text)
    if not units:
        raise ValueError("no units")
    try:
        parse_units(units)
    except ValueError:
        raise ValueError(f"unknown units {text!r}") from None
    return units


def convert_cf(values, cf_units: str, to_units: str) -> np.ndarray:
    """``values`` in ``cf_units`` (CF/UDUNITS spelling, a leading scale factor allowed) expressed in ``to_units``
    (pint spelling), as float64.

    Raises
    ------
    ValueError
        If ``cf_units`` is empty or unknown, or the dimensions differ.
    """
    factor, rest = scaled(cf_units)
    src = check_cf(rest)
    values = np.asarray(values, dtype=np.float64)
    if factor != 1.0:
        values = values * factor
    return np.asarray(convert(values, src, to_units), dtype=np.float64)


def convert_cf_difference(values, cf_units: str, to_units: str) -> np.ndarray:
    """Like :func:`convert_cf` for a difference or a spread (no offset: 1 degC of error is 1 K of error)."""
    factor, rest = scaled(cf_units)
    src = check_cf(rest)
    scale = float(convert(1.0, src, to_units)) - float(convert(0.0, src, to_units))
    values = np.asarray(values, dtype=np.float64)
    if factor != 1.0:
        values = values * factor
    return values * scale


__all__ = ["to_pint", "scaled", "check_cf", "convert_cf", "convert_cf_difference"]
