"""Observation files read before anything runs.

``twin validate``, ``twin run`` and ``twin submit`` read every file of a campaign's ``type: file`` networks (``file``
and each of its ``deliveries``) with the reader its experiments use (:func:`twin.observations.files
.read_network_file`), for every experiment of the matrix, before the first experiment starts. A file that is empty,
truncated, not NetCDF or CSV, lacks a variable the network maps or every value of one, has units that do not
convert to the model's, or gives positions with another number of coordinates than the model's grid (a CSV without
its ``y`` column on a 2-D grid) is refused at its key in the campaign file, in one line naming the file; without this
check it stopped its experiment at that experiment's start, after the experiments before it had run (and a campaign
submitted to Slurm only once its job started). So is a network none of whose observations lies both inside the
campaign's timeline and the model's domain (positions in km on a grid in m, times of another year): the experiment
would stop at its start with nothing to assimilate, so the line gives the times and positions found and the span and
domain they miss. Some observations outside is normal and left to the quality control, which flags them.

What reading checks is what is checked here. A kind's network that reads its own files is checked by its ``check``
(:class:`twin.core.kinds.NetworkType`): the tumour's visit tables (dates, images and masks from their headers), the
structure's gauge readings (read in full: they need the structure's units and box only). What needs the built model
is checked when an experiment builds its observations: the quality control, the observations' place in the cycles
(which lie inside the timeline), and what a kind reads on the model's grid (the cells inside a visit's image and
mask, the values there). The domain is the one the model section describes (:meth:`~twin.config.common.ModelConfigBase
.metadata`, the built grid's extent). Each file is read once per call, however many experiments name it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from twin.core.box import outside_box
from twin.core.errors import ObservationError

Problems = list[tuple[tuple, str]]


def _reading_model(cfg, net) -> SimpleNamespace | None:
    """What a file of ``net`` is read on, as :func:`twin.observations.networks.reading_model` gives it: the observed
    model's length units and grid (``dim``, ``extent``, from its section's metadata) and the campaign clock's time
    units; ``None`` when the network's model cannot describe itself before it is built (checked then)."""
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
    extent = tuple(tuple(e) for e in meta.extent)
    return SimpleNamespace(time_units=getattr(clock, "time_units", "s"), length_units=meta.length_units,
                           grid=SimpleNamespace(dim=meta.dim, extent=extent,
                                                contains=lambda points: ~outside_box(points, extent)))


def file_problems(cfg: Any, seen: dict | None = None) -> Problems:
    """``(key path, message)`` for every observation file of the campaign ``cfg`` (a validated campaign or
    experiment) that cannot be read for it, and for every network none of whose observations lies inside the
    campaign's timeline and the model's domain (:func:`_nothing_usable`); ``seen`` (``{key: message, or the times
    and positions read}``) carries what was read before, so that the experiments of one matrix read a file they
    share once."""
    seen = {} if seen is None else seen
    problems: Problems = []
    for i, net in enumerate(getattr(cfg.assimilation, "observations", None) or []):
        check = _kind_check(net)
        if getattr(net, "type", None) != "file" and check is None:  # read on the built model, at the start
            continue
        model = _reading_model(cfg, net)
        if model is None:
            continue
        read = []
        for j, path in enumerate(net.files()):
            key = (str(path), net.model_dump_json(), model.time_units, model.length_units, model.grid.dim,
                   str(model.grid.extent), str(cfg.timeline.calendar_start))
            if key not in seen:
                seen[key] = (_read(net, path, model, cfg.timeline.calendar_start) if check is None
                             else _checked(check, net, path, model, cfg.timeline.calendar_start))
            if isinstance(seen[key], str):
                where = ("assimilation", "observations", i, "file") if j == 0 else \
                    ("assimilation", "observations", i, "deliveries", j - 1)
                problems.append((where, seen[key]))
            else:
                read.append(seen[key])
        if check is None and len(read) == len(net.files()):  # every file read: is any observation usable?
            message = _nothing_usable(read, cfg, model)
            if message is not None:
                problems.append((("assimilation", "observations", i, "file"), message))
    return problems


def _kind_check(net):
    """The ``check`` of a kind's network that reads measured observations from files (:class:`twin.core.kinds
    .NetworkType`), or ``None``."""
    from twin.core.kinds import network_types

    declared = network_types().get(getattr(net, "type", None))
    return None if declared is None or declared.read is None else declared.check


def _checked(check, net, path, model, start) -> str | None:
    """The message of a kind's file that its network's ``check`` refuses, else ``None``."""
    try:
        check(net, path, model, start)
    except ObservationError as exc:
        return str(exc)
    return None


def _read(net, path, model, start) -> str | SimpleNamespace:
    """The message of a file that cannot be read, or the source, times and positions of its observations (not the
    whole table: a matrix keeps what it read of every file until the last experiment is checked)."""
    from twin.observations.files import read_network_file

    try:
        table = read_network_file(net, path, model, start)  # refuses a file without observations of a variable
    except ObservationError as exc:
        return str(exc)
    return SimpleNamespace(source=table.source, time=table.time, position=table.position)


def _nothing_usable(read: list, cfg, model) -> str | None:
    """The message for a network whose files (``read``: :func:`_read` of each) hold no observation inside both the
    campaign's timeline ``(start, end]`` (in the clock's time units, as the cycles count) and the model's domain,
    giving the times and positions found and the span and domain they miss; ``None`` when some observation lies
    inside both. The timeline holds every cycle (``twin.config.limits``), so a network refused here has nothing to
    assimilate in any cycle; observations after the last cycle but inside the timeline are left to the quality
    control (``outside_time``), as are networks with only some observations outside."""
    from twin.core.units import compatible, convert
    from twin.observations import qc

    tl = cfg.timeline
    if compatible(model.time_units, "1"):  # as twin.campaign.context.schedule places the cycles
        start, end = float(tl.start), float(tl.end)
    else:
        try:
            start, end = (float(convert(t, tl.units, model.time_units)) for t in (tl.start, tl.end))
        except ValueError:  # the schema reports units that do not convert
            return None
    time = np.concatenate([r.time for r in read])
    position = np.concatenate([r.position for r in read], axis=0)
    # the timeline's end widened by round-off: refuse only what no cycle can use
    in_time = ~qc.outside_time(time, start, end + 1e-9 * abs(end - start))
    in_domain = ~qc.outside_domain(position, model.grid.extent)
    if np.any(in_time & in_domain):
        return None
    sources = list(dict.fromkeys(r.source for r in read))
    files = f"observation file {sources[0]}" if len(sources) == 1 else f"observation files {', '.join(sources)}"
    units = "" if compatible(model.time_units, "1") else f" {model.time_units}"
    found_time = f"model times {_span(time)}{units}, the timeline ({start:g}, {end:g}]{units}"
    box = ", ".join(f"{a} [{lo:g}, {hi:g}]" for a, (lo, hi) in zip("xyz", model.grid.extent))
    axes = ", ".join(f"{a} {_span(position[:, k])}" for k, a in zip(range(position.shape[1]), "xyz"))
    found_place = f"positions {axes} {model.length_units}, the domain {box} {model.length_units}"
    if not in_time.any() and in_domain.any():
        what, fix = found_time, "check the times and time_units"
    elif not in_domain.any() and in_time.any():
        what, fix = found_place, "check the positions and their units"
    else:
        what, fix = f"{found_time}; {found_place}", "check the times, positions and their units"
    their = "its" if len(sources) == 1 else "their"
    none = f"none of {their} {time.size} observations lies" if time.size > 1 else \
        f"{their} one observation does not lie"
    return f"{files}: {none} inside both the campaign's timeline and the model's domain ({what}): {fix}"


def _span(values: np.ndarray) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"
