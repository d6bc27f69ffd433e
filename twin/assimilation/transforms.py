"""Transforms for bounded quantities and the joint state-parameter control vector.

Ensemble analyses are linear updates, so a positive quantity (a rate, a diffusivity, a forcing) or a fraction in
(0, 1) is assimilated in a space where it is unbounded, and mapped back afterwards so the posterior respects the
bounds:

* ``log``:   ``z = log(p)``,            ``p = exp(z)``           for ``p > 0``;
* ``logit``: ``z = log(p / (1 - p))``,   ``p = 1 / (1 + exp(-z))`` for ``0 < p < 1``;
* ``none``:  ``z = p``.

The joint control vector of a member stacks its state entries (natural order) and then every estimable parameter in
transformed space: a scalar as one entry, a field as its entries. Observations see only the state part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.core.errors import AssimilationError

TRANSFORMS = ("none", "log", "logit")


def forward(values, transform: str, name: str = "parameter") -> np.ndarray:
    """Physical values -> control space; refuses values outside the transform's domain."""
    p = np.asarray(values, dtype=float)
    if transform == "none":
        return p.copy()
    if transform == "log":
        if np.any(p <= 0) or not np.all(np.isfinite(p)):
            raise AssimilationError(f"{name}: a log-transformed quantity must be positive and finite "
                                    f"(min {np.min(p):g})")
        return np.log(p)
    if transform == "logit":
        if np.any(p <= 0) or np.any(p >= 1):
            raise AssimilationError(f"{name}: a logit-transformed quantity must lie strictly in (0, 1) "
                                    f"(range [{np.min(p):g}, {np.max(p):g}])")
        return np.log(p) - np.log1p(-p)
    raise AssimilationError(f"{name}: unknown transform {transform!r}; known: {list(TRANSFORMS)}")


def inverse(z, transform: str, name: str = "parameter") -> np.ndarray:
    """Control space -> physical values (always inside the bounds)."""
    z = np.asarray(z, dtype=float)
    if transform == "none":
        return z.copy()
    if transform == "log":
        with np.errstate(over="ignore"):  # an overflow gives inf, which the callers refuse (a failed trial point)
            return np.exp(z)
    if transform == "logit":
        # Written with exp(-|z|) so large |z| neither overflows nor rounds to exactly 0 or 1 too early.
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    raise AssimilationError(f"{name}: unknown transform {transform!r}; known: {list(TRANSFORMS)}")


@dataclass(frozen=True)
class ControlParameter:
    """An estimable parameter in the control vector.

    Attributes
    ----------
    name : str
    size : int
        1 for a scalar, the number of entries for a field.
    transform : {"none", "log", "logit"}
    """

    name: str
    size: int = 1
    transform: str = "none"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise AssimilationError(f"parameter '{self.name}': unknown transform {self.transform!r}; "
                                    f"known: {list(TRANSFORMS)}")
        if self.size < 1:
            raise AssimilationError(f"parameter '{self.name}': size must be >= 1, got {self.size}")


class ControlVector:
    """Packs member states and estimable parameters into columns of a joint control array, and back.

    Parameters
    ----------
    n_state : int
        State entries per member (natural order).
    parameters : sequence of ControlParameter
    """

    def __init__(self, n_state: int, parameters=()):
        self.n_state = int(n_state)
        self.parameters = tuple(parameters)
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise AssimilationError(f"estimable parameters listed twice: {names}")
        self.offsets = {}
        off = self.n_state
        for p in self.parameters:
            self.offsets[p.name] = (off, off + p.size)
            off += p.size
        self.size = off

    def pack(self, states: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """Columns ``[state; transformed parameters]`` for states (n_state, k) and physical parameter values
        (``params[name]`` of shape (k,) for scalars or (size, k) for fields)."""
        states = np.asarray(states, dtype=float).reshape(self.n_state, -1)
        k = states.shape[1]
        out = np.empty((self.size, k))
        out[: self.n_state] = states
        for p in self.parameters:
            lo, hi = self.offsets[p.name]
            out[lo:hi] = forward(np.asarray(params[p.name], dtype=float).reshape(p.size, k), p.transform, p.name)
        return out

    def unpack(self, control: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Inverse of :meth:`pack`: states and physical parameter values (scalars as (k,), fields as (size, k))."""
        states = control[: self.n_state]
        params = {}
        for p in self.parameters:
            lo, hi = self.offsets[p.name]
            v = inverse(control[lo:hi], p.transform, p.name)
            params[p.name] = v[0] if p.size == 1 else v
        return states, params
