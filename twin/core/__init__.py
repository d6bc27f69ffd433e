"""Grids on PETSc DMDA, MPI communicators, units, errors, logging and progress display."""
