"""Quantities of interest of the tumour model.

* burden ``B(t) = integral of N dx`` (cells; midpoint rule over cells of volume ``h^d`` mm^3);
* detected volume ``V(t) = h^d #{cells with N / theta > threshold}`` (mm^3), what a segmentation of an image sees;
* time to progression: the first time ``B(t) >= factor * B(t_0)`` (days), found along a forecast and located between
  checks by linear interpolation of ``B``; ``inf`` when the burden stays below within the horizon.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.grid import Grid


def total_cells(grid: Grid, state: PETSc.Vec) -> float:
    """Total cell count ``sum N_i h^d`` (collective)."""
    return float(grid.integrate(state))


def detected_volume(grid: Grid, state: PETSc.Vec, theta: float, threshold: float) -> float:
    """Volume (mm^3) of the cells whose cellularity ``N/theta`` exceeds ``threshold`` (collective)."""
    count = int(np.count_nonzero(state.getArray(readonly=True) > threshold * theta))
    return float(grid.comm_mpi().allreduce(count)) * grid.cell_volume


def time_to_progression(model, state: PETSc.Vec, t0: float, t_end: float, factor: float | None = None,
                        check_every: float = 1.0) -> float:
    """First time (days) after ``t0`` at which the burden reaches ``factor`` times its value at ``t0``.

    The model is advanced on a copy of ``state`` in steps of ``check_every`` days (the model's own time step still
    applies inside); the crossing is located by linear interpolation of the burden between checks. Collective.

    Returns
    -------
    float
        The time of progression, or ``inf`` if the burden stays below the threshold until ``t_end``.
    """
    factor = model.progression_factor if factor is None else float(factor)
    x = state.copy()
    try:
        baseline = total_cells(model.grid, x)
        target = factor * baseline
        t, b = t0, baseline
        n = max(1, int(np.ceil((t_end - t0) / check_every - 1e-9)))
        times = np.linspace(t0, t_end, n + 1)
        for t_next in times[1:]:
            model.advance(x, t, t_next)
            b_next = total_cells(model.grid, x)
            if b_next >= target:
                return float(t + (target - b) / (b_next - b) * (t_next - t)) if b_next > b else float(t_next)
            t, b = t_next, b_next
        return float("inf")
    finally:
        x.destroy()
