"""Checking a reduced functional's gradient: the Taylor test.

For a functional ``J`` with gradient ``g = dJ/dc`` at ``c`` and a direction ``dc``, the remainder

    r(h) = | J(c + h dc) - J(c) - h g . dc |

falls as ``h^2`` when ``g`` is the exact derivative of the discrete ``J`` and only as ``h`` otherwise; the observed
rates ``log2(r(h_i) / r(h_{i+1}))`` for halving steps are the standard check of an adjoint (Farrell et al., "Automated
derivation of the adjoint of high-level transient finite element programs", 2013, section 5). Use it on a
:class:`~twin.assimilation.fourdvar.FourDVar` (or anything with ``value``/``gradient``) after changing a model's
adjoint.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def taylor_rates(functional, c, dc, hs: Sequence[float] = (0.1, 0.05, 0.025, 0.0125)) -> tuple[np.ndarray, np.ndarray]:
    """Observed convergence rates of the first-order Taylor remainder of ``functional`` at ``c`` along ``dc``.

    Parameters
    ----------
    functional : object with ``value(c)`` and ``gradient(c, g) -> J``
    c, dc : PETSc.Vec
        The point and the direction (control vectors of ``functional``); not modified.
    hs : sequence of float
        Decreasing step sizes, each half the previous one for rates near 2.

    Returns
    -------
    rates : ndarray, shape (len(hs) - 1,)
    remainders : ndarray, shape (len(hs),)
    """
    g = c.duplicate()
    j0 = functional.gradient(c, g)
    slope = g.dot(dc)
    res = []
    for h in hs:
        cp = c.copy()
        cp.axpy(h, dc)
        res.append(abs(functional.value(cp) - j0 - h * slope))
        cp.destroy()
    g.destroy()
    res = np.array(res)
    return np.log2(res[:-1] / res[1:]), res
