"""Observation files read before anything runs.

``twin validate``, ``twin run`` and ``twin submit`` read every file of a campaign's ``type: file`` networks (``file``
and each of its ``deliveries``) with the reader its experiments use (:func:`twin.observations.files
.read_network_file`), for every experiment of the matrix, before the first experiment starts. A file that is empty,
truncated, not NetCDF or CSV, lacks a variable the network maps or every value of one, or has units that do not
convert to the model's is refused at its key in the campaign file, in one line naming the file; without this check it
stopped its experiment at that experiment's start, after the experiments before it had run (and a campaign submitted
to Slurm only once its job started).

What reading checks is what is checked here. What needs the built model is checked when an experiment builds its
observations: positions inside the grid the model makes, the quality control, the observations' place in the cycles,
and the networks of a kind that reads its own files (such as the tumour's visits, whose images are resampled onto the
model's grid). Each file is read once per call, however many experiments name it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twin.core.errors import ObservationError

Problems = list[tuple[tuple, str]]


def _reading_units(cfg, net) -> SimpleNamespace | None:
    """The time and length units a file of ``net`` is read in (as :func:`twin.observations.networks.reading_model`
    gives them: the observed model's length units, the campaign clock's time units), or ``None`` when the network's
    model cannot describe itself before it is built (checked then)."""
    from twin.config.deep import observed_model

    section = cfg.models.get(observed_model(cfg, net))
    if section is None:
        return None
    try:
        meta = section.metadata()
    except NotImplementedError:
        return None
    # a coupled model keeps the clock of the first of coupling.components (twin.coupling.coupled.CoupledModel)
    coupling = getattr(cfg, "coupling", None)
    clock = cfg.models.get(coupling.components[0], section) if coupling is not None else section
    return SimpleNamespace(time_units=getattr(clock, "time_units", "s"), length_units=meta.length_units)


def file_problems(cfg: Any, seen: dict | None = None) -> Problems:
    """``(key path, message)`` for every observation file of the campaign ``cfg`` (a validated campaign or
    experiment) that cannot be read for it; ``seen`` (``{key: message or None}``) carries what was read before, so
    that the experiments of one matrix read a file they share once."""
    seen = {} if seen is None else seen
    problems: Problems = []
    for i, net in enumerate(getattr(cfg.assimilation, "observations", None) or []):
        if getattr(net, "type", None) != "file":  # a kind's networks read their files on the built model
            continue
        units = _reading_units(cfg, net)
        if units is None:
            continue
        for j, path in enumerate(net.files()):
            key = (str(path), net.model_dump_json(), units.time_units, units.length_units,
                   str(cfg.timeline.calendar_start))
            if key not in seen:
                seen[key] = _read(net, path, units, cfg.timeline.calendar_start)
            if seen[key] is not None:
                where = ("assimilation", "observations", i, "file") if j == 0 else \
                    ("assimilation", "observations", i, "deliveries", j - 1)
                problems.append((where, seen[key]))
    return problems


def _read(net, path, units, start) -> str | None:
    from twin.observations.files import read_network_file

    try:
        read_network_file(net, path, units, start)  # refuses a file without observations of a variable it maps
    except ObservationError as exc:
        return str(exc)
    return None
