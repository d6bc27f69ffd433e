"""Ready-made coupled problems for verification, benchmarks and documentation.

Partitioned heat conduction
---------------------------
The heat equation (:mod:`twin.kinds.heat.model`) on ``[0, 1]^2`` with ``T = 0`` on the outer boundary, split at
``x = split / nx`` into a *left* component (Dirichlet data ``T_in`` on its right side, the interface temperature) and
a *right* component (Neumann data ``q_in`` on its left side, the inward heat flux). Left sends its inward flux,
sign-reversed, to right; right sends its face temperature back (Dirichlet-Neumann coupling). At convergence of every
window the pair reproduces the monolithic finite-volume scheme on the whole square.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.config.coupling import CouplingConfig
from twin.coupling.coupled import CoupledModel
from twin.kinds.heat.config import HeatConfig
from twin.kinds.heat.model import HeatModel

MANUFACTURED = {"kind": "manufactured", "wavenumber": [np.pi, np.pi]}


def heat_model(name: str, comm, shape, extent, *, kappa: float, dt: float, initial: dict | None = None,
               boundary: dict | None = None, solver: dict | None = None) -> HeatModel:
    """A heat model from a configuration dict (SI units)."""
    cfg = HeatConfig.model_validate({
        "type": "heat", "grid": {"shape": list(shape), "extent": [list(e) for e in extent]},
        "parameters": {"kappa": {"value": kappa, "units": "m^2/s"}},
        "initial_condition": initial or MANUFACTURED, "boundary": boundary or {}, "time": {"dt": dt},
        "solver": solver or {}})
    return HeatModel.from_config(name, cfg, comm)


def partitioned_heat(comm, *, tag: str = "", nx: int = 16, ny: int = 8, split: int = 6, kappa: float = 1.0,
                     dt: float = 0.1, initial: dict | None = None, scheme: dict[str, Any] | None = None,
                     substeps: dict[str, int] | None = None, window: float | None = None) -> CoupledModel:
    """The partitioned heat problem (module docstring); components are named ``left<tag>`` and ``right<tag>``.

    ``scheme`` overrides keys of the default scheme (implicit serial, IQN-ILS, relative tolerance 1e-10 on the
    interface temperature). Names carry ``tag`` because PETSc options of a component name are process-wide.
    """
    left, right = f"left{tag}", f"right{tag}"
    xs = split / nx
    models = {
        left: heat_model(left, comm, (split, ny), ((0, xs), (0, 1)), kappa=kappa, dt=dt, initial=initial,
                         boundary={"x_hi": {"type": "dirichlet", "import": "T_in"}}),
        right: heat_model(right, comm, (nx - split, ny), ((xs, 1), (0, 1)), kappa=kappa, dt=dt, initial=initial,
                          boundary={"x_lo": {"type": "neumann", "import": "q_in"}}),
    }
    sch = {"kind": "implicit_serial", "order": [left, right], "max_iterations": 100,
           "convergence": [{"field": f"{left}.T_in", "kind": "relative", "limit": 1e-10}],
           "acceleration": {"kind": "iqn_ils", "relaxation": 0.5}}
    sch.update(scheme or {})
    cfg = CouplingConfig.model_validate({
        "components": [left, right], "window": {"value": window or dt, "units": "s"},
        "routes": [{"from": f"{left}.heat_flux_x_hi", "to": f"{right}.q_in", "scale": -1.0},
                   {"from": f"{right}.temperature_x_lo", "to": f"{left}.T_in"}],
        "scheme": sch, "substeps": substeps or {}})
    return CoupledModel(f"heat_pair{tag}", comm, models, cfg)


def gather_partitioned(model: CoupledModel, state) -> np.ndarray:
    """The whole temperature field of a partitioned heat state, ``(ny, nx)``, on every rank."""
    parts = model.split(state)
    out = np.concatenate([model.models[c].grid.allgather(parts[c]) for c in model.models], axis=1)
    for v in parts.values():
        v.destroy()
    return out
