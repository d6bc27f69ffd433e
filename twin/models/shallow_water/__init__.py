"""Rotating shallow-water atmosphere model (``type: shallow_water``): C-grid, PETSc TS, exact discrete adjoint."""

from twin.models.shallow_water.model import Bump, ShallowWater

__all__ = ["Bump", "ShallowWater"]
