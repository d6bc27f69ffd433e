"""What twin needs of a Basic Model Interface class before it runs one: the class found by its import path and checked
for the BMI methods the adapter calls (:data:`REQUIRED`), BMI grids turned into twin grids, and units compared.

Kept apart from the adapter (:mod:`twin.kinds.bmi.adapter`), which drives the model: these are the checks and
translations that make a one-line ``ModelError`` out of a class, a grid or units twin cannot use. The BMI model is
asked through the adapter's ``call(method, *args, want=...)``, which names the method and the class when a call fails
or returns what BMI 2.0 does not allow.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from twin.core.cfunits import check_cf, scaled, to_pint
from twin.core.errors import ModelError
from twin.core.units import convert, parse_units

#: the BMI methods the adapter calls
REQUIRED = ("initialize", "update_until", "finalize", "get_component_name", "get_input_var_names",
            "get_output_var_names", "get_var_grid", "get_var_type", "get_var_units", "get_var_itemsize",
            "get_var_nbytes", "get_value", "set_value", "get_current_time", "get_start_time", "get_end_time",
            "get_time_step", "get_time_units", "get_grid_type", "get_grid_rank", "get_grid_size", "get_grid_shape",
            "get_grid_spacing", "get_grid_origin")

def load_class(path: str, component: str) -> type:
    """The class ``package.module:Class``; ``ModelError`` naming the path if it cannot be imported or is not a BMI."""
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - whatever a third-party import raises, name the class and the cause
        raise ModelError(component, f"bmi_class {path!r} cannot be imported ({type(exc).__name__}: {exc}); install "
                                    "the package that provides it in this environment") from None
    if not isinstance(obj, type):
        raise ModelError(component, f"bmi_class {path!r} is a {type(obj).__name__}, not a class")
    missing = [m for m in REQUIRED if not callable(getattr(obj, m, None))]
    if missing:
        raise ModelError(component, f"bmi_class {path!r} does not implement the Basic Model Interface: it has no "
                                    f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    return obj


def same_units(a: str, b: str) -> bool:
    """Whether units ``a`` and ``b`` are the same (``1/s`` and ``s^-1``); ``False`` when twin cannot read one."""
    try:
        return abs(float(convert(1.0, a, b)) - 1.0) < 1e-12
    except ValueError:
        return False


def readable_units(text: str) -> str | None:
    """BMI units (UDUNITS-2 as BMI 2.0 asks, ``"m2 s-1"``, or pint's ``"m^2/s"``; ``""``, ``"-"``, ``"none"``: none)
    in pint spelling, or ``None`` when twin cannot read them (``"furlongs per fortnight^^2"``, or a UDUNITS scale
    factor such as ``"0.01 m"``, which pint has no spelling for): those are unknown, never written into a CF file as
    if they were units."""
    text = str(text).strip()
    if text.lower() in ("", "1", "-", "none"):
        return "1"
    try:
        parse_units(text)
        return text
    except ValueError:
        pass
    try:
        factor, rest = scaled(text)
        units = check_cf(rest)
    except ValueError:
        return None
    return units if factor == 1.0 else None


def campaign_units(text: str) -> str | None:
    """Units ``text`` (readable, :func:`readable_units`) spelled as a campaign file's ``units:`` accepts them
    (``"m2 s-1"`` -> ``"m**2*s**-1"``), or ``None`` when no such spelling is found. Needed because a parameter's
    error line tells the user which units to write, and the schema (:data:`twin.config.common.Units`) refuses the
    UDUNITS spelling most BMI models give."""
    from pydantic import TypeAdapter, ValidationError

    from twin.config.common import Units

    for spelling in (text, to_pint(text)):
        try:
            TypeAdapter(Units).validate_python(spelling)
            parse_units(spelling)
            return spelling
        except (ValidationError, ValueError):
            continue
    return None


def bmi_grid(call: Callable[..., Any], grid_id: int, component: str, what: str = "the BMI model"
             ) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...], str]:
    """Shape (PETSc order), extent per axis and centering of the twin grid of BMI grid ``grid_id``; ``ModelError``
    for ``component`` (``what`` names the BMI model) when twin cannot map it. ``call(method, *args, want=...)`` asks
    the BMI model (the adapter's, which names a failing method); an array method (``get_grid_shape``) may fill the
    array it is given and return ``None``."""
    kind = call("get_grid_type", grid_id, want="text")
    if kind == "scalar":
        return (1,), ((0.0, 1.0),), "cell"
    where = f"{what}, grid {grid_id}"
    if kind != "uniform_rectilinear":
        raise ModelError(component, f"{where} is of type {kind!r}: twin maps uniform_rectilinear and scalar grids "
                                    "only; choose state variables on such a grid")
    rank = call("get_grid_rank", grid_id, want="integer")
    if not 1 <= rank <= 3:
        raise ModelError(component, f"{where} has rank {rank}; twin grids have 1 to 3 axes")
    shape = call("get_grid_shape", grid_id, np.zeros(rank, dtype=np.int64), want="integers")
    spacing = call("get_grid_spacing", grid_id, np.zeros(rank), want="numbers")
    origin = call("get_grid_origin", grid_id, np.zeros(rank), want="numbers")
    if shape.size != rank or spacing.size != rank or origin.size != rank:
        raise ModelError(component, f"{where} of rank {rank} reports shape {shape.tolist()}, spacing "
                                    f"{spacing.tolist()} and origin {origin.tolist()}: one value per axis expected")
    if np.any(shape < 2) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or \
            not np.all(np.isfinite(origin)):
        raise ModelError(component, f"{where}: shape {shape.tolist()} needs at least 2 nodes per axis and "
                                    f"spacing {spacing.tolist()} must be positive")
    size = call("get_grid_size", grid_id, want="integer")
    if int(np.prod(shape)) != size:
        raise ModelError(component, f"{where}: shape {shape.tolist()} has {int(np.prod(shape))} nodes but "
                                    f"get_grid_size says {size}")
    # BMI gives axes rows first (z, y, x); twin's grids x first, with the same row-major value layout
    extent = tuple((float(o), float(o + (n - 1) * h)) for n, h, o in zip(shape[::-1], spacing[::-1], origin[::-1]))
    return tuple(int(n) for n in shape[::-1]), extent, "node"
