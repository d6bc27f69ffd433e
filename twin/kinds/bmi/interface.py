"""What twin needs of a Basic Model Interface class before it runs one: the class found by its import path and checked
for the BMI methods the adapter calls (:data:`REQUIRED`), BMI grids turned into twin grids, and units compared.

Kept apart from the adapter (:mod:`twin.kinds.bmi.adapter`), which drives the model: these are the checks and
translations that make a one-line ``ModelError`` out of a class or a grid twin cannot use.
"""

from __future__ import annotations

import importlib

import numpy as np

from twin.core.errors import ModelError
from twin.core.units import convert

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


def bmi_grid(bmi, grid_id: int, component: str, what: str = "the BMI model"
             ) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...], str]:
    """Shape (PETSc order), extent per axis and centering of the twin grid of BMI grid ``grid_id``; ``ModelError``
    for ``component`` (``what`` names the BMI model) when twin cannot map it."""
    kind = str(bmi.get_grid_type(grid_id))
    if kind == "scalar":
        return (1,), ((0.0, 1.0),), "cell"
    where = f"{what}, grid {grid_id}"
    if kind != "uniform_rectilinear":
        raise ModelError(component, f"{where} is of type {kind!r}: twin maps uniform_rectilinear and scalar grids "
                                    "only; choose state variables on such a grid")
    rank = int(bmi.get_grid_rank(grid_id))
    if not 1 <= rank <= 3:
        raise ModelError(component, f"{where} has rank {rank}; twin grids have 1 to 3 axes")
    shape = np.asarray(bmi.get_grid_shape(grid_id, np.zeros(rank, dtype=np.int64)), dtype=np.int64).ravel()
    spacing = np.asarray(bmi.get_grid_spacing(grid_id, np.zeros(rank)), dtype=float).ravel()
    origin = np.asarray(bmi.get_grid_origin(grid_id, np.zeros(rank)), dtype=float).ravel()
    if shape.size != rank or spacing.size != rank or origin.size != rank:
        raise ModelError(component, f"{where} of rank {rank} reports shape {shape.tolist()}, spacing "
                                    f"{spacing.tolist()} and origin {origin.tolist()}: one value per axis expected")
    if np.any(shape < 2) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or \
            not np.all(np.isfinite(origin)):
        raise ModelError(component, f"{where}: shape {shape.tolist()} needs at least 2 nodes per axis and "
                                    f"spacing {spacing.tolist()} must be positive")
    if int(np.prod(shape)) != int(bmi.get_grid_size(grid_id)):
        raise ModelError(component, f"{where}: shape {shape.tolist()} has {int(np.prod(shape))} nodes but "
                                    f"get_grid_size says {bmi.get_grid_size(grid_id)}")
    # BMI gives axes rows first (z, y, x); twin's grids x first, with the same row-major value layout
    extent = tuple((float(o), float(o + (n - 1) * h)) for n, h, o in zip(shape[::-1], spacing[::-1], origin[::-1]))
    return tuple(int(n) for n in shape[::-1]), extent, "node"
