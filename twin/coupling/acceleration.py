"""Fixed-point acceleration of implicit coupling: constant relaxation, Aitken, IQN-ILS with QR filter and reuse.

An implicit window solves the interface fixed point ``x = H(x)``: ``x`` are the received data, ``x~ = H(x)`` what the
partners send back after advancing through the window with ``x``, and ``r = x~ - x`` the residual. Each method maps
``(x_k, x~_k)`` to the next iterate ``x_{k+1}``:

* constant:  ``x_{k+1} = x_k + w r_k``;
* Aitken:    ``w_k = -w_{k-1} r_{k-1}.(r_k - r_{k-1}) / |r_k - r_{k-1}|^2`` (``w_0`` the initial relaxation in each
  window), ``x_{k+1} = x_k + w_k r_k`` (Irons-Tuck / Kuettler-Wall);
* IQN-ILS:   with ``V = [r_{i+1} - r_i]``, ``W = [x~_{i+1} - x~_i]`` (newest first, from this window and the last
  ``reuse`` windows), ``alpha = argmin |V alpha + r_k|`` by a QR factorisation, ``x_{k+1} = x~_k + W alpha``;
  without columns, a constant relaxation step (Degroote et al. 2009). The QR filter drops columns whose orthogonal
  part is below ``filter`` times their norm (nearly linearly dependent; Haelterman et al. 2016).

The data are the owned parts of distributed vectors concatenated in a NumPy array; dot products are reduced over the
communicator. The QR is classical Gram-Schmidt applied twice (CGS2): two reductions per column, stable to round-off.
Hand-written because PETSc has no interface quasi-Newton for partitioned coupling (SNESQN works on one residual
function, not on a window fixed point of two solvers with history reuse and filtering).

Every method exports its state (history columns, relaxation, previous residual) as plain arrays and JSON values so a
restart continues bit-for-bit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from twin.core.errors import CouplingError


class Acceleration(ABC):
    """Base of the acceleration methods. ``comm`` reduces dot products; arrays are the owned parts."""

    kind = ""

    def __init__(self, comm, relaxation: float = 0.5):
        self.comm = comm
        self.relaxation = float(relaxation)
        self.iteration = 0

    def dot(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self.comm.allreduce(float(np.dot(a, b))))

    def norm(self, a: np.ndarray) -> float:
        return float(np.sqrt(self.dot(a, a)))

    def start_window(self) -> None:
        """Called before the first iteration of every window."""
        self.iteration = 0

    def step(self, x: np.ndarray, xt: np.ndarray) -> np.ndarray:
        """The next iterate from the current one ``x`` and its image ``xt = H(x)``."""
        out = self._step(x, xt)
        self.iteration += 1
        return out

    @abstractmethod
    def _step(self, x: np.ndarray, xt: np.ndarray) -> np.ndarray:
        ...

    def end_window(self) -> None:
        """Called when a window is accepted."""

    # -- checkpointing -------------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Owned-part arrays (``columns x owned`` for histories) and JSON-serialisable values."""
        return {}, {"kind": self.kind, "iteration": self.iteration}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if meta.get("kind") != self.kind:
            raise CouplingError(f"cannot restore {meta.get('kind')!r} acceleration state into {self.kind!r}")
        self.iteration = int(meta["iteration"])


class ConstantRelaxation(Acceleration):
    kind = "constant"

    def _step(self, x, xt):
        return x + self.relaxation * (xt - x)


class Aitken(Acceleration):
    kind = "aitken"

    def __init__(self, comm, relaxation: float = 0.5):
        super().__init__(comm, relaxation)
        self.omega = self.relaxation
        self.previous: np.ndarray | None = None

    def start_window(self):
        super().start_window()
        self.previous = None
        self.omega = self.relaxation

    def _step(self, x, xt):
        r = xt - x
        if self.previous is not None:
            dr = r - self.previous
            denom = self.dot(dr, dr)
            if denom > 0:
                self.omega = -self.omega * self.dot(self.previous, dr) / denom
        self.previous = r
        return x + self.omega * r

    def state(self):
        arrays, meta = super().state()
        meta["omega"] = self.omega
        if self.previous is not None:
            arrays["previous"] = self.previous[None, :]
        return arrays, meta

    def restore(self, arrays, meta):
        super().restore(arrays, meta)
        self.omega = float(meta["omega"])
        self.previous = arrays["previous"][0].copy() if "previous" in arrays else None


class IQNILS(Acceleration):
    """Interface quasi-Newton, inverse Jacobian by least squares (module docstring)."""

    kind = "iqn_ils"

    def __init__(self, comm, relaxation: float = 0.5, reuse: int = 0, filter: float = 1e-10, max_columns: int = 50):
        super().__init__(comm, relaxation)
        self.reuse = int(reuse)
        self.filter = float(filter)
        self.max_columns = int(max_columns)
        # columns of this window and of past windows (newest first), owned parts
        self.V: list[np.ndarray] = []
        self.W: list[np.ndarray] = []
        self.window_columns: list[int] = []   # number of columns contributed by each kept past window, newest first
        self.new_columns = 0
        self.previous_r: np.ndarray | None = None
        self.previous_xt: np.ndarray | None = None
        self.filtered = 0

    def start_window(self):
        super().start_window()
        self.previous_r = self.previous_xt = None
        self.new_columns = 0

    def end_window(self):
        self.window_columns.insert(0, self.new_columns)
        keep = sum(self.window_columns[: self.reuse])
        self.window_columns = self.window_columns[: self.reuse]
        self.V, self.W = self.V[:keep], self.W[:keep]
        self.new_columns = 0

    def _qr(self) -> tuple[np.ndarray, np.ndarray]:
        """Filtered QR of V (CGS2); drops dependent columns from V and W. Returns Q (owned rows) and R."""
        while True:
            q_cols: list[np.ndarray] = []
            R = np.zeros((len(self.V), len(self.V)))
            dropped = None
            for j, v in enumerate(self.V):
                w = v.copy()
                norm_v = self.norm(v)
                for _ in range(2):
                    if q_cols:
                        Q = np.stack(q_cols, axis=1)
                        h = np.asarray(self.comm.allreduce(Q.T @ w))
                        w -= Q @ h
                        R[: len(q_cols), j] += h
                rjj = self.norm(w)
                if norm_v == 0 or rjj < self.filter * norm_v:
                    dropped = j
                    break
                R[j, j] = rjj
                q_cols.append(w / rjj)
            if dropped is None:
                return (np.stack(q_cols, axis=1) if q_cols else np.zeros((0, 0))), R
            self._drop(dropped)

    def _drop(self, j: int) -> None:
        del self.V[j], self.W[j]
        self.filtered += 1
        if j < self.new_columns:
            self.new_columns -= 1
            return
        k = j - self.new_columns
        for w in range(len(self.window_columns)):
            if k < self.window_columns[w]:
                self.window_columns[w] -= 1
                return
            k -= self.window_columns[w]

    def _step(self, x, xt):
        r = xt - x
        if self.previous_r is not None:
            self.V.insert(0, r - self.previous_r)
            self.W.insert(0, xt - self.previous_xt)
            self.new_columns += 1
            if len(self.V) > self.max_columns:
                self._drop(len(self.V) - 1)
        self.previous_r, self.previous_xt = r, xt
        if not self.V:
            return x + self.relaxation * r
        Q, R = self._qr()
        if not self.V:
            return x + self.relaxation * r
        rhs = -np.asarray(self.comm.allreduce(Q.T @ r))
        alpha = np.linalg.solve(np.triu(R), rhs) if R.shape[0] else np.zeros(0)
        return xt + np.stack(self.W, axis=1) @ alpha

    def state(self):
        arrays, meta = super().state()
        if self.V:
            arrays["V"] = np.stack(self.V)
            arrays["W"] = np.stack(self.W)
        if self.previous_r is not None:
            arrays["previous_r"] = self.previous_r[None, :]
            arrays["previous_xt"] = self.previous_xt[None, :]
        meta.update(window_columns=list(self.window_columns), new_columns=self.new_columns, filtered=self.filtered)
        return arrays, meta

    def restore(self, arrays, meta):
        super().restore(arrays, meta)
        self.V = [row.copy() for row in arrays["V"]] if "V" in arrays else []
        self.W = [row.copy() for row in arrays["W"]] if "W" in arrays else []
        self.previous_r = arrays["previous_r"][0].copy() if "previous_r" in arrays else None
        self.previous_xt = arrays["previous_xt"][0].copy() if "previous_xt" in arrays else None
        self.window_columns = [int(c) for c in meta["window_columns"]]
        self.new_columns = int(meta["new_columns"])
        self.filtered = int(meta["filtered"])


#: acceleration methods by name (the ``acceleration.kind`` key)
ACCELERATIONS = {"constant": ConstantRelaxation, "aitken": Aitken, "iqn_ils": IQNILS}


def make_acceleration(spec, comm) -> Acceleration:
    """Build from an :class:`~twin.config.coupling.AccelerationSpec`."""
    if spec.kind == "iqn_ils":
        return IQNILS(comm, spec.relaxation, spec.reuse, spec.filter, spec.max_columns)
    return ACCELERATIONS[spec.kind](comm, spec.relaxation)
