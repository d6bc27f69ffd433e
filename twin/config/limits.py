"""Upper bounds that protect the machine, checked when a campaign file is validated (``twin validate``), before
anything is allocated.

A typo such as ``N: 1000000000`` or ``shape: [1000000, 1000000]`` is otherwise found by a ``MemoryError``, a PETSc
allocation failure or an index overflow minutes into a run, or by the machine itself. Each bound is refused with the
number found, the limit and how to raise it:

======================  ==========================================  ================================================
bound                   default                                     override
======================  ==========================================  ================================================
ensemble members        :data:`ENSEMBLE_MEMBERS` (1000)             ``limits: {ensemble_members: N}``
                        (``assimilation.N``)
ensemble states         :data:`ENSEMBLE_GIGABYTES` (8 GB): N x      ``limits: {ensemble_gigabytes: X}``
                        unknowns x 8 bytes, what the analysis
                        holds at least (each within its own limit,
                        ``n: 4000000`` and ``N: 500`` were 16 GB)
grid cells per model    :data:`GRID_CELLS` (2^24 = 16,777,216,      ``limits: {grid_cells: N}``
                        e.g. 4096 x 4096)
grid cells per rank     :data:`GRID_CELLS_PER_RANK` (2^24) of one   ``limits: {grid_cells_per_rank: N}``, or more
                        model run: its cells over the ranks it      ranks per run (``ensemble.ranks_per_member``,
                        runs on                                     ``resources.ranks``)
unknowns per PETSc      2^31 - 1 with 32-bit PETSc indices          a PETSc built with ``--with-64-bit-indices``
vector                                                              (detected; or ``limits: {index_bits: 64}``)
time steps of a model   :data:`TIME_STEPS` (10^7) over the          ``limits: {time_steps: N}``
over the timeline       timeline (``dt``, ``time_step``)
output volume           :data:`OUTPUT_GIGABYTES` (100 GB) of        ``limits: {output_gigabytes: X}``
                        fields: output times x unknowns x 8 bytes
time points             :data:`TIME_POINTS` (10^6) output times,    none: a larger interval
                        observation times (``every``), cycles
                        (``cycle_length``), coupling windows
                        over the timeline and over the decision
                        horizon (``coupling.window``)
cycles in the           ``schedule.cycles`` x ``every`` x the       none: lower the cycles or extend
timeline                model's step (4D-Var: ``cycles`` x          ``timeline.end``
                        ``shift`` x ``obs_interval``) within the
                        timeline
voxels of an image      :data:`IMAGE_VOXELS` (2^28, 2 GiB as        none: crop the image to the region of the
read as observations    float64), from its header, before its       model grid
                        voxels are read
======================  ==========================================  ================================================

The overrides live in the campaign file (``limits:``) rather than in the environment so that they travel with the
campaign: the experiments of a workflow, validated again on other machines and in batch jobs, see the same limits.
Writing one is a deliberate statement that the campaign is meant to be that large.

The index width of PETSc is read from its configuration (``petscconf.h`` or ``petscvariables`` under ``PETSC_DIR``)
without initialising PETSc (validation must not start MPI); when neither is installed it is taken as 32 bits.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Literal

from pydantic import Field

from twin.config.common import Strict
from twin.config.messages import short
from twin.core.units import compatible, convert

#: default largest ensemble
ENSEMBLE_MEMBERS = 1000
#: default largest ensemble of states (N x unknowns x 8 bytes, GB): an analysis holds the whole ensemble and some
#: copies of it, so a campaign past a workstation's memory is refused unless its limits say it is meant
ENSEMBLE_GIGABYTES = 8.0
#: default largest grid of one model (cells)
GRID_CELLS = 2**24
#: default largest share of one model's grid on one rank (cells): a model run that large on too few ranks runs out
#: of memory (its solver's matrices and work vectors) or for days
GRID_CELLS_PER_RANK = 2**24
#: the largest index of a PETSc vector with 32-bit indices
INDEX_32 = 2**31 - 1
#: default largest number of time steps of one model over the timeline
TIME_STEPS = 10**7
#: default largest volume of field outputs (GB)
OUTPUT_GIGABYTES = 100.0
#: largest number of output times, observation times or cycles a timeline may hold
TIME_POINTS = 10**6
#: largest image (voxels, from its header) read as observations: 2 GiB as float64
IMAGE_VOXELS = 2**28


class LimitsConfig(Strict):
    """The ``limits:`` section: raised upper bounds, for campaigns that are meant to be that large.

    Attributes
    ----------
    ensemble_members : int
        Largest ensemble (``assimilation.N``).
    ensemble_gigabytes : float
        Largest ensemble of states, ``N`` x unknowns x 8 bytes, in GB.
    grid_cells : int
        Largest grid of one model, in cells (elements for the structure model; variables for Lorenz-96).
    grid_cells_per_rank : int
        Largest share of one model's grid on one MPI rank of its run, in cells.
    index_bits : {32, 64}, optional
        Index width of the PETSc in use (default: detected from its configuration, 32 when unknown).
    time_steps : int
        Most time steps of one model over the timeline.
    output_gigabytes : float
        Largest volume of field outputs (output times x unknowns x 8 bytes), in GB.
    """

    ensemble_members: int = Field(default=ENSEMBLE_MEMBERS, ge=2)
    ensemble_gigabytes: float = Field(default=ENSEMBLE_GIGABYTES, gt=0)
    grid_cells: int = Field(default=GRID_CELLS, ge=1)
    grid_cells_per_rank: int = Field(default=GRID_CELLS_PER_RANK, ge=1)
    index_bits: Literal[32, 64] | None = None
    time_steps: int = Field(default=TIME_STEPS, ge=1)
    output_gigabytes: float = Field(default=OUTPUT_GIGABYTES, gt=0)


@functools.lru_cache(maxsize=1)
def petsc_index_bits() -> int:
    """Index width of the installed PETSc (64 or 32), from its configuration files; 32 when they are not found."""
    try:
        import petsc4py

        conf = petsc4py.get_config()
    except Exception:  # noqa: BLE001 - no petsc4py or an odd installation: assume the common 32-bit build
        return 32
    base = os.path.join(conf.get("PETSC_DIR", ""), conf.get("PETSC_ARCH", "") or "")
    for rel, marker, wide in (("include/petscconf.h", "PETSC_USE_64BIT_INDICES", None),
                              ("lib/petsc/conf/petscvariables", "PETSC_INDEX_SIZE", "64")):
        try:
            with open(os.path.join(base, rel), encoding="utf-8", errors="replace") as f:
                for line in f:
                    if marker in line:
                        if wide is None:
                            return 64
                        return 64 if line.split("=")[-1].strip() == wide else 32
        except OSError:
            continue
    return 32


def _step(model: Any) -> float | None:
    """A model's fixed step, or ``None`` when it has none or its units are wrong (the schema reports those)."""
    try:
        step = model.fixed_step()
    except ValueError:
        return None
    return step if step is not None and step > 0 else None


def _gigabytes(values: float) -> str:
    return f"{values * 8 / 1e9:.3g} GB"


def check_limits(cfg: Any) -> list[tuple[tuple, str]]:
    """``(key path, message)`` for every bound the campaign ``cfg`` exceeds (empty when within them)."""
    limits: LimitsConfig = getattr(cfg, "limits", None) or LimitsConfig()
    problems: list[tuple[tuple, str]] = []
    problems += _grid_problems(cfg, limits)
    problems += _ensemble_problems(cfg, limits)
    problems += _cycle_problems(cfg)
    problems += _time_problems(cfg, limits)
    problems += _window_problems(cfg)
    return problems


def _grid_problems(cfg: Any, limits: LimitsConfig) -> list[tuple[tuple, str]]:
    bits = limits.index_bits or petsc_index_bits()
    problems = []
    for name, model in cfg.models.items():
        size = model.grid_size()
        path = ("models", name) + size.key
        if size.cells > limits.grid_cells:
            problems.append((path, f"{size.cells} cells exceed the limit of {limits.grid_cells} per model "
                                   f"(limits.grid_cells); one state alone would take {_gigabytes(size.unknowns)}: "
                                   "if you mean it, raise limits.grid_cells in the campaign file"))
        elif bits == 32 and size.unknowns > INDEX_32:
            problems.append((path, f"{size.unknowns} unknowns exceed what PETSc with 32-bit indices can address "
                                   f"({INDEX_32}): use a PETSc built with --with-64-bit-indices (then set "
                                   "limits.index_bits: 64 if twin cannot detect it) or a smaller grid"))
        elif size.cells > limits.grid_cells_per_rank * _ranks_per_run(cfg):
            ranks = _ranks_per_run(cfg)
            need = math.ceil(size.cells / limits.grid_cells_per_rank)
            problems.append((path, f"{size.cells} cells on {ranks} rank(s) per model run are "
                                   f"{math.ceil(size.cells / ranks)} per rank, more than the limit of "
                                   f"{limits.grid_cells_per_rank} (limits.grid_cells_per_rank): run each model on at "
                                   f"least {need} ranks ({_where_ranks(cfg)}), or raise the limit if you mean it"))
    coupling = getattr(cfg, "coupling", None)
    if bits == 32 and coupling is not None and not problems:
        total = sum(cfg.models[c].grid_size().unknowns for c in coupling.components if c in cfg.models)
        if total > INDEX_32:
            problems.append((("coupling", "components"), f"the coupled state has {total} unknowns, more than PETSc "
                                                         f"with 32-bit indices can address ({INDEX_32})"))
    return problems


def _ranks_per_run(cfg: Any) -> int:
    """MPI ranks one model run gets: per member in an assimilation campaign, the job's ranks in a forecast run."""
    if getattr(cfg, "assimilation", None) is not None:
        return int(cfg.ensemble.ranks_per_member)
    return int(getattr(cfg.resources, "ranks", 1))


def _where_ranks(cfg: Any) -> str:
    return "ensemble.ranks_per_member" if getattr(cfg, "assimilation", None) is not None else "resources.ranks"


def _state_values(cfg: Any) -> int:
    coupling = getattr(cfg, "coupling", None)
    names = list(coupling.components) if coupling is not None else list(cfg.models)
    return sum(cfg.models[n].grid_size().unknowns for n in names if n in cfg.models)


def _ensemble_problems(cfg: Any, limits: LimitsConfig) -> list[tuple[tuple, str]]:
    sizes = []
    n = getattr(cfg.assimilation, "N", None)
    if isinstance(n, int):
        sizes.append((("assimilation", "N"), n))
    problems = []
    for path, members in sizes:
        if members > limits.ensemble_members:
            problems.append((path, f"{members} ensemble members exceed the limit of {limits.ensemble_members} "
                                   f"(limits.ensemble_members); their states alone would take "
                                   f"{_gigabytes(float(members) * _state_values(cfg))}: if you mean it, raise "
                                   "limits.ensemble_members in the campaign file"))
        elif members * _state_values(cfg) * 8 / 1e9 > limits.ensemble_gigabytes:
            problems.append((path, f"{members} members of {_state_values(cfg)} values each take "
                                   f"{_gigabytes(float(members) * _state_values(cfg))} (and the analysis holds copies "
                                   f"of them), more than the limit of {limits.ensemble_gigabytes:g} GB "
                                   "(limits.ensemble_gigabytes): use fewer members or a coarser grid, or raise the "
                                   "limit if the machines running the campaign have the memory"))
    return problems


def _timeline_span(cfg: Any, time_units: str) -> tuple[float, str] | None:
    """The timeline's span in a model's time units and the name of those units (``None`` if not convertible)."""
    tl = cfg.timeline
    span = tl.end - tl.start
    if compatible(time_units, "1"):
        return span, "time units"
    try:
        return float(convert(span, tl.units, time_units)), time_units
    except ValueError:
        return None


def _cycle_problems(cfg: Any) -> list[tuple[tuple, str]]:
    a = cfg.assimilation
    if a is None:
        return []
    if getattr(a, "method", None) == "4dvar":
        model = cfg.models.get(a.model)
        if model is None:
            return []
        span = _timeline_span(cfg, model.time_units)
        if span is None:
            return []
        step, what, count, key = a.effective_shift * a.obs_interval, f"{a.effective_shift} x {a.obs_interval:g}", \
            a.cycles, ("assimilation", "cycles")
        kind = "windows shifted by shift x obs_interval"
    else:
        schedule = getattr(a, "schedule", None)
        if schedule is None:
            return []
        coupling = getattr(cfg, "coupling", None)
        if coupling is not None:
            window = _coupling_window(cfg)
            if window is None:
                return []  # no such component, or a window not in its time units (:func:`_window_problems`)
            units, dt = window
        elif len(cfg.models) == 1:
            model = next(iter(cfg.models.values()))
            units, dt = model.time_units, _step(model)
            if dt is None:
                return []
        else:
            return []
        span = _timeline_span(cfg, units)
        if span is None:
            return []
        step, what, count, key = schedule.every * dt, f"{schedule.every} x {dt:g}", schedule.cycles, \
            ("assimilation", "schedule", "cycles")
        kind = "cycles of every x the model's step" if coupling is None else \
            "cycles of every x the coupling window"
    length, units = span
    need = count * step
    if not math.isfinite(need) or need > length * (1 + 1e-9) + 1e-12 * step:
        fit = int(math.floor(length / step * (1 + 1e-9))) if step > 0 else 0
        fix = (f"lower the count to at most {fit} or extend timeline.end" if fit > 0 else
               f"one cycle is longer than the whole timeline: shorten the cycle or extend timeline.end to at least "
               f"{step:g} {units} after timeline.start")
        return [(key, f"{count} {kind} ({what} {units} each) reach {need:g} {units} after timeline.start, beyond "
                      f"timeline.end (the timeline spans {length:g} {units} and holds {fit}): {fix}")]
    return []


def _time_problems(cfg: Any, limits: LimitsConfig) -> list[tuple[tuple, str]]:
    """Time steps of each model, time points of the timeline and observation sets, and the output volume."""
    problems = []
    tl = cfg.timeline
    for name, model in cfg.models.items():
        step = _step(model)
        span = _timeline_span(cfg, model.time_units)
        if step is None or span is None:
            continue
        steps = span[0] / step
        if steps > limits.time_steps:
            problems.append((("models", name) + model.step_key,
                             f"a step of {step:g} {span[1]} takes {steps:.3g} steps over the timeline's {span[0]:g} "
                             f"{span[1]}, more than the limit of {limits.time_steps} (limits.time_steps): take a "
                             "larger step, a shorter timeline, or raise limits.time_steps if you mean it"))
    decision = getattr(cfg, "decision", None)
    coupling = getattr(cfg, "coupling", None)
    first = coupling.components[0] if coupling is not None else next(iter(cfg.models), None)
    model = cfg.models.get(first) if first is not None else None
    step = _step(model) if model is not None else None
    if decision is not None and step is not None and decision.horizon < step * (1 - 1e-9):
        problems.append((("decision", "horizon"), f"a horizon of {decision.horizon:g} (model time units) is shorter "
                                                  f"than one step of model '{first}' ({step:g}): the forecast would "
                                                  f"end {step:g} after the last analysis, not {decision.horizon:g}; "
                                                  f"give at least {step:g}"))
    if decision is not None and step is not None and decision.horizon / step > limits.time_steps:
        problems.append((("decision", "horizon"), f"a horizon of {decision.horizon:g} (model time units) takes "
                                                  f"{decision.horizon / step:.3g} steps of {step:g}, more than the "
                                                  f"limit of {limits.time_steps} (limits.time_steps)"))
    length = tl.end - tl.start
    points = [(("timeline", "output_every"), tl.output_every, "output times"),
              (("timeline", "cycle_length"), tl.cycle_length, "cycles")]
    points += [(("observations", i, "every"), getattr(o, "every", None), "observation times")
               for i, o in enumerate(getattr(cfg, "observations", []) or [])]
    for key, interval, what in points:
        if interval is not None and length / interval > TIME_POINTS:
            problems.append((key, f"an interval of {interval:g} {tl.units} gives {length / interval:.3g} {what} over "
                                  f"the timeline's {length:g} {tl.units}, more than {TIME_POINTS}: take a larger "
                                  "interval"))
    outputs = getattr(cfg, "outputs", None)
    if tl.output_every is not None and getattr(outputs, "fields", False) and not problems:
        times = length / tl.output_every + 2
        gigabytes = times * _state_values(cfg) * 8 / 1e9
        if gigabytes > limits.output_gigabytes:
            problems.append((("timeline", "output_every"), f"{times:.0f} output times of {_state_values(cfg)} values "
                                                           f"write about {gigabytes:.3g} GB of fields, more than the "
                                                           f"limit of {limits.output_gigabytes:g} GB "
                                                           "(limits.output_gigabytes): output less often, set "
                                                           "outputs.fields: false (a forecast run then writes its "
                                                           "QoIs only), or raise the limit if you mean it"))
    return problems


def _coupling_window(cfg: Any) -> tuple[str, float] | None:
    """``(time units, length)`` of the coupling window in the first component's time units, as the coupled model
    converts it when it is built; ``None`` without that component or when the window's units do not convert."""
    coupling = getattr(cfg, "coupling", None)
    first = cfg.models.get(coupling.components[0]) if coupling is not None else None
    if first is None:
        return None
    try:
        return first.time_units, float(coupling.window.to(first.time_units))
    except ValueError:
        return None


def _window_problems(cfg: Any) -> list[tuple[tuple, str]]:
    """The coupling window in the first component's time units (as the coupled model converts it when it is built)
    and the windows it makes over the timeline and over the decision horizon: at most :data:`TIME_POINTS`. (A window
    of 1e-9 days over 10 days asked the coupled model for 10^10 windows: memory ran out before the first step.)"""
    coupling = getattr(cfg, "coupling", None)
    first = cfg.models.get(coupling.components[0]) if coupling is not None else None
    if first is None:
        return []
    window = coupling.window
    found = _coupling_window(cfg)
    if found is None:
        return [(("coupling", "window", "units"), f"units {short(window.units)} are not convertible to the "
                                                  f"time units of component '{coupling.components[0]}' "
                                                  f"({first.time_units}): give the window in units of time")]
    length = found[1]
    if not (math.isfinite(length) and length > 0):
        return []  # the coupling section refuses a window that is not positive
    span = _timeline_span(cfg, first.time_units)
    decision = getattr(cfg, "decision", None)
    spans = [("the timeline's", span[0] if span is not None else None),
             ("the decision horizon's", getattr(decision, "horizon", None))]
    for what, extent in spans:
        if extent is not None and extent / length > TIME_POINTS:
            return [(("coupling", "window", "value"), f"a window of {window.value:g} {window.units} makes "
                                                      f"{extent / length:.3g} coupling windows over {what} {extent:g} "
                                                      f"{first.time_units}, more than {TIME_POINTS}: take a longer "
                                                      "window (substeps refine a component's steps inside it)")]
    return []


__all__ = ["LimitsConfig", "check_limits", "petsc_index_bits", "ENSEMBLE_MEMBERS", "ENSEMBLE_GIGABYTES", "GRID_CELLS",
           "INDEX_32", "TIME_STEPS", "OUTPUT_GIGABYTES", "TIME_POINTS"]
