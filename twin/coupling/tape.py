"""The coupling tape: the coupling data of a coupled model's recorded runs, which its adjoint starts from.

Hidden coupling state
---------------------
The route data (mapped exports, one vector per route, :mod:`twin.coupling.schemes`) are carried from one ``advance``
call to the next, so they are part of the trajectory without being in the state vector. :class:`CouplingTape` keeps,
for the start of each recorded ``advance`` call, the state and the route data (:class:`TapeEntry`); the adjoint
(:mod:`twin.coupling.adjoint`) recomputes a call's forward run from there. The cotangent of the route data at a
call's start is handed to the adjoint of the previous call (matched by time and state, :func:`same_state`), as the
forward hands the data on. At the start of a re-run from an earlier time (4D-Var evaluations, Taylor tests)
:class:`~twin.coupling.coupled.CoupledModel` restores the route data remembered at that time
(:meth:`CouplingTape.routes_at`), so every evaluation sees the same coupling data there: they are fixed inputs of the
4D-Var window, like boundary data, and not controls (their cotangent at the window start is dropped).

For implicit schemes an entry also keeps the converged route data at the end of each window of the call
(:attr:`TapeEntry.windows`: interface fields only) and whether each window converged: the adjoint of a converged
window differentiates the fixed point at those data.

The tape is bounded (a few states per time, a few hundred times), so long 4D-Var campaigns do not fill memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from petsc4py import PETSc

from twin.coupling.schemes import Route


@dataclass
class TapeEntry:
    """The coupled state and every route's data at the start of one ``advance`` call."""

    time: float
    state: PETSc.Vec
    routes: dict[str, PETSc.Vec]
    #: implicit schemes: every route's converged data at the end of each window of the call
    windows: list[dict[str, PETSc.Vec]] = field(default_factory=list)
    #: implicit schemes: whether each window's fixed point converged
    converged: list[bool] = field(default_factory=list)

    def add_window(self, routes: Sequence[Route], converged: bool) -> None:
        """Keep copies of the routes' data at the end of a window (interface fields: small)."""
        self.windows.append({r.name: r.value.copy() for r in routes})
        self.converged.append(bool(converged))

    def destroy(self) -> None:
        self.state.destroy()
        for v in self.routes.values():
            v.destroy()
        for d in self.windows:
            for v in d.values():
                v.destroy()
        self.windows = []


class CouplingTape:
    """Bounded record of the coupling data at the starts of ``advance`` calls (module docstring).

    Parameters
    ----------
    tolerance : float
        Times closer than this are the same time (coupled time units).
    per_time, max_times : int
        At most ``per_time`` states are kept per time (the most recent) and ``max_times`` times (the oldest go).
    """

    def __init__(self, tolerance: float, per_time: int = 4, max_times: int = 256):
        self.tolerance = float(tolerance)
        self.per_time, self.max_times = int(per_time), int(max_times)
        self._entries: dict[float, list[TapeEntry]] = {}
        #: the route data at the start of the latest ``advance`` from each time (interface fields: small)
        self._routes: dict[float, dict[str, PETSc.Vec]] = {}

    def remember_routes(self, t: float, routes: Sequence[Route]) -> None:
        """Keep a copy of the routes' data at ``t`` (replacing an older copy at that time)."""
        key = next((k for k in self._routes if abs(k - t) <= self.tolerance), None)
        if key is not None:
            for v in self._routes.pop(key).values():
                v.destroy()
        self._routes[float(t)] = {r.name: r.value.copy() for r in routes}
        while len(self._routes) > self.max_times:
            for v in self._routes.pop(next(iter(self._routes))).values():
                v.destroy()

    def routes_at(self, t: float) -> dict[str, PETSc.Vec] | None:
        """The route data remembered at ``t`` (the latest run from ``t``), or ``None``."""
        key = next((k for k in self._routes if abs(k - t) <= self.tolerance), None)
        return None if key is None else self._routes[key]

    def _key(self, t: float) -> float | None:
        return next((k for k in self._entries if abs(k - t) <= self.tolerance), None)

    def record(self, t: float, state: PETSc.Vec, routes: Sequence[Route]) -> TapeEntry:
        """Keep copies of ``state`` and the routes' ``value`` at time ``t``; returns the new entry. Collective."""
        key = self._key(t)
        if key is None:
            key = float(t)
            self._entries[key] = []
            while len(self._entries) > self.max_times:
                for e in self._entries.pop(next(iter(self._entries))):
                    e.destroy()
        entries = self._entries[key]
        same = self.find(t, state)
        if same is not None:
            entries.remove(same)
            same.destroy()
        entry = TapeEntry(float(t), state.copy(), {r.name: r.value.copy() for r in routes})
        entries.append(entry)
        while len(entries) > self.per_time:
            entries.pop(0).destroy()
        return entry

    def latest(self, t: float) -> TapeEntry | None:
        """The most recent entry at time ``t``, or ``None``."""
        key = self._key(t)
        return self._entries[key][-1] if key is not None and self._entries[key] else None

    def find(self, t: float, state: PETSc.Vec) -> TapeEntry | None:
        """The most recent entry at ``t`` whose state equals ``state`` (to round-off), or ``None``. Collective."""
        key = self._key(t)
        for e in reversed(self._entries.get(key, []) if key is not None else []):
            if same_state(e.state, state):
                return e
        return None

    def destroy(self) -> None:
        for entries in self._entries.values():
            for e in entries:
                e.destroy()
        self._entries = {}
        for routes in self._routes.values():
            for v in routes.values():
                v.destroy()
        self._routes = {}


def same_state(a: PETSc.Vec, b: PETSc.Vec, rtol: float = 1e-12) -> bool:
    """``|a - b| <= rtol (|b| + tiny)`` in the max norm. Collective."""
    d = a.copy()
    d.axpy(-1.0, b)
    diff = d.norm(PETSc.NormType.NORM_INFINITY)
    d.destroy()
    return bool(diff <= rtol * (b.norm(PETSc.NormType.NORM_INFINITY) + 1e-300))
