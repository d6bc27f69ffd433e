"""The stable time step of explicit stepping for the shallow-water model.

Linear gravity waves on the C-grid have purely imaginary eigenvalues ``i omega`` with ``|omega|`` at most
``lambda = |f|_max + 2 sqrt(g h_max) sqrt(1/dx^2 + 1/dy^2) + 2 (|u|_max / dx + |v|_max / dy)`` [1/s]: for a state at
rest with ``f = 0`` the middle term is the exact spectral radius of the discrete gravity-wave operator; rotation and
the flow add at most their own largest frequencies. An explicit method with stability function ``R`` is stable for
them while ``omega dt`` stays inside its imaginary stability interval ``|R(i y)| <= 1 for 0 < y <= y_max``, hence
``dt_max = y_max / lambda``.

``y_max`` is measured, not tabulated: one step of the chosen PETSc method on the oscillator ``x' = [[0, -1], [1, 0]] x``
multiplies ``|x|`` by ``|R(i dt)|``. Measuring keeps the check right for every ``-<name>_ts_rk_type`` PETSc offers
(``4``: ``2 sqrt 2``, ``3`` and ``3bs``: ``sqrt 3``, ``2a`` and ``1fe``: none).
"""

from __future__ import annotations

import math

import numpy as np
from petsc4py import PETSc

from twin.core.petsc import set_from_options

#: TS types whose stability interval is measured; other types (implicit, multistep) are not CFL-limited here
EXPLICIT_ONE_STEP = ("rk", "euler")
_TOL = 1e-12
_PREFIX = "twin_stability_probe_"


def _amplification(ts: PETSc.TS, x: PETSc.Vec, y: float) -> float:
    x.setValues([0, 1], [1.0, 0.0])
    x.assemble()
    ts.setTime(0.0)
    ts.setStepNumber(0)
    ts.setTimeStep(y)
    ts.setMaxTime(y)
    ts.setMaxSteps(1)
    ts.solve(x)
    return float(x.norm())


def imaginary_stability_limit(ts_type: str, rk_type: str | None = None, y_max: float = 8.0) -> float:
    """``y_max`` of the method: the largest ``y`` with ``|R(i s)| <= 1`` for all ``0 < s <= y`` (``inf`` beyond
    ``y_max`` or for types not in :data:`EXPLICIT_ONE_STEP`)."""
    if ts_type not in EXPLICIT_ONE_STEP:
        return math.inf
    A = PETSc.Mat().createDense((2, 2), comm=PETSc.COMM_SELF)
    A.setUp()
    A.setValues([0, 1], [0, 1], [0.0, -1.0, 1.0, 0.0])
    A.assemble()
    x = A.createVecRight()
    ts = PETSc.TS().create(comm=PETSc.COMM_SELF)
    try:
        ts.setProblemType(PETSc.TS.ProblemType.LINEAR)
        ts.setType(ts_type)
        if ts_type == "rk" and rk_type:
            ts.setRKType(rk_type)
        ts.setRHSFunction(lambda ts, t, u, f: A.mult(u, f))
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        # petsc4py 3.18 has no TSAdapt object: fix the step through a private options prefix.
        ts.setOptionsPrefix(_PREFIX)
        PETSc.Options().setValue(f"{_PREFIX}ts_adapt_type", "none")
        set_from_options(ts)
        stable, step = 0.0, 0.05
        y = step
        while y <= y_max and _amplification(ts, x, y) <= 1.0 + _TOL:
            stable, y = y, y + step
        if y > y_max:
            return math.inf
        lo, hi = stable, y
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if _amplification(ts, x, mid) <= 1.0 + _TOL:
                lo = mid
            else:
                hi = mid
        return lo
    finally:
        ts.destroy()
        x.destroy()
        A.destroy()


def max_frequency(h_max: float, u_max: float, v_max: float, f_max: float, gravity: float, dx: float,
                  dy: float) -> float:
    """``lambda`` of the module docstring [1/s]."""
    c = math.sqrt(gravity * max(h_max, 0.0))
    return abs(f_max) + 2.0 * c * math.sqrt(dx ** -2 + dy ** -2) + 2.0 * (u_max / dx + v_max / dy)


def stable_dt(limit: float, frequency: float) -> float:
    """``y_max / lambda`` (``inf`` when either is infinite or the frequency vanishes)."""
    if math.isinf(limit) or frequency <= 0 or not np.isfinite(frequency):
        return math.inf
    return limit / frequency
