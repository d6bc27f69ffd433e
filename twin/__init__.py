"""twin: multiscale, model-centric digital twins on PETSc.

The package is layered (see ``shared/ARCHITECTURE.md``): ``core`` (grids, communicators, errors) at the bottom, then
``config``, ``io``, ``models``, ``coupling``, ``observations``, ``assimilation``, ``decision`` and the ``cli``.
"""

__version__ = "0.1.0"
