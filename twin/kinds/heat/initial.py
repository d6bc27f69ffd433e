"""Initial conditions of the heat model (``initial_condition:`` of :class:`twin.kinds.heat.config.HeatConfig`): a
Gaussian bump, a constant, or the manufactured solution of the verification tests (:func:`manufactured_solution`),
as functions of the cell-centre coordinates in metres."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from twin.kinds.heat.config import GaussianIC, ManufacturedIC


def initial_condition(ic, length: float, dim: int, t0: float, kappa: Callable[[], float]) \
        -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray] | None]:
    """``(initial(*x), exact(*x, t) or None)`` of the section ``ic``; ``length``: metres per grid length unit, ``t0``:
    start time (s), ``kappa``: the current diffusivity (called when the manufactured solution is evaluated)."""
    exact = None
    if isinstance(ic, GaussianIC):
        center = [c * length for c in ic.center]
        width = ic.width * length

        def initial(*x):
            r2 = sum((xa - ca) ** 2 for xa, ca in zip(x, center))
            return ic.background + ic.amplitude * np.exp(-r2 / (2 * width ** 2))
    elif isinstance(ic, ManufacturedIC):
        exact = manufactured_solution(ic.amplitude, [k / length for k in ic.wavenumber],
                                      ic.phase or [0.0] * dim, kappa)

        def initial(*x):
            return exact(*x, t0)
    else:
        def initial(*x):
            return np.full_like(x[0], ic.value)
    return initial, exact


def manufactured_solution(amplitude: float, wavenumber: Sequence[float], phase: Sequence[float],
                          kappa: Callable[[], float]) -> Callable[..., np.ndarray]:
    """``T(x, t) = amplitude exp(-kappa |k|^2 t) prod_a sin(k_a x_a + phase_a)``, exact for ``f = 0``.

    ``kappa`` is called at evaluation time, so the solution follows parameter changes.
    """
    k2 = float(np.sum(np.square(wavenumber)))

    def exact(*args):
        *x, t = args
        out = amplitude * np.exp(-kappa() * k2 * t)
        for xa, ka, pa in zip(x, wavenumber, phase):
            out = out * np.sin(ka * xa + pa)
        return out

    return exact
