"""The structure component: 2-D linear elasticity with a damage field (static and dynamic), on PETSc."""

from twin.models.structure.model import Material, StructureModel

__all__ = ["Material", "StructureModel"]
