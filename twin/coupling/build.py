"""Building a coupled model from a campaign, and the outputs a forecast run writes for it.

A campaign with a ``coupling:`` section names its components in ``coupling.components``; each is a section of
``models:`` (every model must be a component: a campaign runs one model, coupled or not). :func:`build_coupled`
builds the components on the job's communicator, each with its PETSc options under its own prefix, and joins them
in a :class:`~twin.coupling.coupled.CoupledModel`.

Outputs: a coupled model writes one forecast file per component (``forecast_<component>.nc``, each on its own grid,
in its own length units; times in the coupled model's time units) — :func:`output_models` and
:func:`gather_outputs` give the writer what it needs for single and coupled models alike — and the per-window
coupling diagnostics (iterations, final relative interface residuals, convergence, seconds per component) as
``coupling.nc`` (:func:`write_coupling_diagnostics`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from twin.core.errors import ConfigError
from twin.core.log import get_logger
from twin.coupling.coupled import CoupledModel
from twin.models.base import Model

log = get_logger("twin.coupling.build")


def build_coupled(loaded, comm, name: str = "coupled") -> CoupledModel:
    """The coupled model of a loaded campaign (``loaded.config.coupling`` must be set) on ``comm``. Collective.

    Raises
    ------
    ConfigError
        If a model of ``models:`` is not a coupling component (components themselves are checked by the schema).
    """
    from twin.models.registry import create_model

    cfg = loaded.config
    coupling = cfg.coupling
    if coupling is None:
        raise ConfigError(f"{loaded.path}: coupling: no coupling section to build a coupled model from")
    unused = [m for m in cfg.models if m not in coupling.components]
    if unused:
        raise ConfigError(f"{loaded.path}: coupling.components: models {unused} are not coupled; list them in "
                          f"coupling.components ({coupling.components}) or remove them from models")
    built: dict[str, Model] = {}
    try:
        for c in coupling.components:
            mcfg = cfg.models[c]
            built[c] = create_model(c, mcfg, comm, getattr(cfg, "limits", None))
        return CoupledModel(name, comm, built, coupling)
    except BaseException:
        for model in built.values():
            model.destroy()
        raise


def output_models(model: Model) -> dict[str, Model]:
    """File stem -> model whose fields go in it: ``{"forecast": model}``, or per component of a coupled model
    ``{"forecast_<component>": component}``."""
    if isinstance(model, CoupledModel):
        return {f"forecast_{c}": m for c, m in model.models.items()}
    return {"forecast": model}


def gather_outputs(model: Model, state) -> dict[str, np.ndarray | None]:
    """File stem -> the fields of ``state`` gathered on rank 0 (``None`` elsewhere), as in :func:`output_models`.
    Collective."""
    if not isinstance(model, CoupledModel):
        return {"forecast": model.grid.gather(state)}
    out = {}
    for c, x in model.split(state).items():
        out[f"forecast_{c}"] = model.models[c].grid.gather(x)
        x.destroy()
    return out


def _safe(name: str) -> str:
    """A NetCDF/CF-friendly variable name (letters, digits, underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def coupling_records(model: CoupledModel, since: int = 0) -> list[tuple[float, dict[str, Any]]]:
    """``(window end time, values)`` of the windows run from diagnostics index ``since``: ``iterations``,
    ``converged`` (1/0), the last relative residual of each measured field, and seconds per component."""
    records = []
    for d in model.diagnostics[since:]:
        values: dict[str, Any] = {"iterations": int(d.iterations), "converged": int(bool(d.converged))}
        for f, rel in d.relative.items():
            values[f"relative_residual_{_safe(f)}"] = float(rel[-1])
        for c, sec in d.seconds.items():
            values[f"seconds_{_safe(c)}"] = float(sec)
        records.append((float(d.t1), values))
    return records


def write_coupling_diagnostics(model: CoupledModel, path: Path, comm, *, provenance=None, time_units: str,
                               time_factor: float = 1.0, sensitive: bool = False, title: str = "") -> Path:
    """Write one record per coupling window run so far into the NetCDF file ``path``. Collective.

    ``time_factor`` converts the coupled model's time to ``time_units`` (CF units such as ``days since ...``).
    """
    from twin.io.netcdf import DiagnosticsFile, VariableMeta

    records = coupling_records(model)
    meta = {"iterations": VariableMeta("coupling iterations in the window", "1"),
            "converged": VariableMeta("window converged (1) or continued unconverged (0)", "1")}
    for _, values in records:
        for key in values:
            if key.startswith("relative_residual_"):
                meta[key] = VariableMeta(f"final relative interface residual of "
                                         f"{key[len('relative_residual_'):]}", "1")
            elif key.startswith("seconds_"):
                meta[key] = VariableMeta(f"wall time of {key[len('seconds_'):]} in the window", "s")
    diag = DiagnosticsFile(path, comm, provenance=provenance, variables=meta, time_units=time_units,
                           sensitive=sensitive, title=title or f"twin coupling diagnostics: {model.name}")
    if records:
        diag.extend([(t * time_factor, values, None) for t, values in records])  # one write, not one per window
        its = [v["iterations"] for _, v in records]
        log.info("%s: %d coupling windows, %.2f iterations per window on average (max %d)", model.name,
                 len(records), float(np.mean(its)), max(its))
    return Path(path)
