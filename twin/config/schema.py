"""The typed schema of a campaign YAML file (``schema_version: 1``).

A campaign file has these top-level sections::

    schema_version: 1
    campaign:     name, description, seed, sensitive
    models:       {component name: model section (``type:`` picks the model; see twin/config/models/)}
    coupling:     how components exchange fields (optional; twin/config/coupling.py)
    observations: list of observation sets (optional)
    assimilation: method and its settings (optional; ensemble methods or 4D-Var)
    timeline:     start, end, time units, output interval, assimilation cycle length
    ensemble:     number of members, ranks per member
    resources:    where it runs: ``local`` or ``slurm``
    outputs:      run directory and what is written
    experiments:  a matrix of settings expanding the campaign into experiments; failure policy of workflows
    decision:     quantities of interest, horizon, controls and constraints, risk measure, guardrails
    limits:       raised upper bounds (ensemble members, grid cells) for those who mean them (twin/config/limits.py)

Every section forbids unknown keys. Cross-section rules (e.g. an observation set naming a model that does not exist)
and the resource limits (:func:`twin.config.limits.check_limits`) are checked by :func:`check_references` after the
sections themselves validated. Every value that goes into a batch script (``resources``, ``campaign.name``,
``outputs.directory``) is free of control characters: a newline would start a new command.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    Field,
    PrivateAttr,
    field_serializer,
    field_validator,
    model_validator,
)

from twin.config.common import Strict, Units, _check_units, at
from twin.config.decision import decision_section_type
from twin.config.experiments import ExperimentsConfig
from twin.config.limits import LimitsConfig, check_limits
from twin.config.messages import short
from twin.config.reader import MAX_INT
from twin.config.sections import (
    assimilation_section_type,
    coupling_section_type,
    model_section_type,
    observation_section_type,
)
from twin.core.units import compatible

SCHEMA_VERSION = 1

NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
# Values that end up in batch scripts or shell commands: letters, digits and a few harmless punctuation marks only.
SAFE_TOKEN = r"^[A-Za-z0-9_.,:/=+@%-]+$"
#: a Slurm time limit as twin takes it: [days-]hours:minutes:seconds. Slurm also reads "MM:SS" and "MM" (so "02:00"
#: is 2 minutes there, not 2 hours) and Parsl's SlurmProvider only hours:minutes:seconds: one form, meant one way
#: (ASCII digits: Python's and Rust's \d take any script's digits)
WALLTIME = r"^([0-9]{1,3}-)?[0-9]{1,4}:[0-5][0-9]:[0-5][0-9]$"


def walltime_seconds(walltime: str) -> int:
    """Seconds of a :data:`WALLTIME` text (``"1-12:00:00"`` -> 129600)."""
    days, _, clock = walltime.rpartition("-")
    h, m, sec = (int(x) for x in clock.split(":"))
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec


def parsl_walltime(walltime: str) -> str:
    """A :data:`WALLTIME` as Parsl's SlurmProvider reads it: hours:minutes:seconds, days counted in the hours
    (``"1-12:00:00"`` -> ``"36:00:00"``)."""
    total = walltime_seconds(walltime)
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


_SAFE_CHAR = re.compile(r"[A-Za-z0-9_.,:/=+@%-]")


def _no_control(value: str, what: str) -> str:
    """Refuse control characters: a newline, carriage return or NUL in a batch-script value ends its line there."""
    bad = sorted({c for c in value if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ValueError(f"{what} {short(value)} contains control characters ({' '.join(map(repr, bad))}): a newline "
                         "or carriage return would start a new command in the batch script; write one line")
    return value


def _safe(value: str, what: str) -> str:
    _no_control(value, what)
    if not re.fullmatch(SAFE_TOKEN, value):
        bad = sorted(set(c for c in value if not _SAFE_CHAR.fullmatch(c)))
        raise ValueError(f"{what} {short(value)} contains characters not allowed here "
                         f"({' '.join(map(repr, bad[:10]))}): only letters, digits and _ . , : / = + @ % - (this "
                         "value goes into batch scripts)")
    return value


class CampaignInfo(Strict):
    """``name`` (used for the run directory), free ``description``, RNG ``seed``; ``sensitive: true`` for patient
    data: owner-only files, no user or host names in provenance."""

    name: str = Field(pattern=NAME)
    description: str = ""
    seed: int = Field(default=0, ge=0)
    sensitive: bool = False


class Timeline(Strict):
    """Simulated time span ``[start, end]`` in ``units``; outputs every ``output_every``; assimilation cycles every
    ``cycle_length`` (both in the same units).

    ``start`` may be a calendar instant (ISO 8601, ``2026-03-01T00:00Z``): the model's time then counts from 0 at
    that instant, ``end`` is a number of ``units`` after it or another instant, and every NetCDF file carries CF time
    with that reference date (:attr:`calendar_start`). Without one, time 0 is 1970-01-01T00:00Z in the files (a twin
    experiment has no calendar)."""

    start: float | str = 0.0
    end: float | str
    units: Units = "s"
    output_every: float | None = Field(default=None, gt=0)
    cycle_length: float | None = Field(default=None, gt=0)

    _calendar: Any = PrivateAttr(default=None)

    _check = field_validator("units")(classmethod(lambda cls, v: _check_units(v)))

    @field_validator("units")
    @classmethod
    def _is_time(cls, v: str) -> str:
        if not compatible(v, "s"):
            raise ValueError(f"timeline units {v!r} are not a unit of time (e.g. s, h, day)")
        return v

    @model_validator(mode="after")
    def _calendar_time(self):
        from twin.core.calendar import parse_start
        from twin.core.units import convert

        if isinstance(self.start, str):
            try:
                self._calendar = parse_start(self.start)
            except ValueError:
                raise ValueError(at("start") + f"{short(self.start)} is not a number of {self.units} nor an ISO 8601 "
                                               "date and time such as 2026-03-01T00:00Z") from None
            self.start = 0.0
        if isinstance(self.end, str):
            if self._calendar is None:
                try:
                    parse_start(self.end)
                except ValueError:  # "5.0" (quoted), "5 s": meant as a number
                    raise ValueError(at("end") + f"end {short(self.end)} is not a number of {self.units}: write it as "
                                                 "a plain number, without quotes or units (timeline.units gives them)"
                                     ) from None
                raise ValueError(at("end") + f"end {short(self.end)} is a date, start is not: give start as a date "
                                             f"too, or end as a number of {self.units}")
            try:
                end = parse_start(self.end)
            except ValueError:
                raise ValueError(at("end") + f"{short(self.end)} is not a number of {self.units} nor an ISO 8601 "
                                             "date and time such as 2026-03-31T00:00Z") from None
            self.end = float(convert((end - self._calendar).total_seconds(), "s", self.units))
        return self

    @model_validator(mode="after")
    def _order(self):
        if not self.end > self.start:
            raise ValueError(at("end") + f"end ({self.end}) must be after start ({self.start})")
        span = self.end - self.start
        for key in ("output_every", "cycle_length"):
            v = getattr(self, key)
            if v is not None and v > span:
                raise ValueError(at(key) + f"{key} ({v}) is longer than the run ({span})")
        return self

    @field_serializer("start")
    def _start_as_given(self, value):
        """A calendar start is written back as the instant (experiment.yaml), not as the model's 0."""
        return self._calendar.isoformat().replace("+00:00", "Z") if self._calendar is not None else value

    @property
    def calendar_start(self):
        """The UTC instant of model time 0 (a timezone-aware ``datetime``), or ``None`` without a calendar."""
        return self._calendar


class EnsembleSpec(Strict):
    """How each ensemble member runs: on ``ranks_per_member`` MPI ranks. The ensemble's size is the assimilation
    method's ``N`` (one fact, one place)."""

    ranks_per_member: int = Field(default=1, ge=1, le=4096)

    MOVED = {"size": "the ensemble size is assimilation.N: remove ensemble.size"}


#: most Parsl workers of ``local`` resources per core of this machine
LOCAL_WORKERS_PER_CORE = 4


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, as Slurm or a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


class LocalResources(Strict):
    """Run on this machine: ``ranks`` MPI ranks per model run, ``workers`` parallel tasks (Parsl)."""

    type: Literal["local"]
    ranks: int = Field(default=1, ge=1, le=4096)
    workers: int = Field(default=1, ge=1, le=4096)
    #: how a task starts: under mpiexec or srun, as a plain process (none), or, for one-rank tasks, inside the warm
    #: Parsl workers (worker: no interpreter start per task; workflows/campaign.py says what that gives up). auto, the
    #: default: one-rank tasks in the warm workers, others under mpiexec, and every task under mpiexec when
    #: experiments.task_timeout is set (a warm worker cannot be stopped in a long C call); workflows.executors
    #: .launcher_for resolves it
    launcher: Literal["auto", "mpiexec", "srun", "none", "worker"] = "auto"
    #: what one task of a workflow runs: member (a task per member forecast, analysis, init and outputs: members in
    #: parallel over the workers), experiment (a task per experiment: its cycles as online mode runs them, on ``ranks``
    #: ranks; experiments in parallel), or auto, the default: member tasks, until an experiment's first analysis shows
    #: members too small for a task of their own (workflows.granularity)
    task: Literal["auto", "member", "experiment"] = "auto"

    @field_validator("workers")
    @classmethod
    def _this_machine(cls, v):
        # every worker is a process of this machine holding Python, PETSc and an experiment (about 0.2 GB warm):
        # 1000 of them on 2 cores ran the machine out of memory (the kernel's OOM killer, exit 137, no word)
        cores = _cores()
        if v > LOCAL_WORKERS_PER_CORE * cores:
            raise ValueError(f"{v} workers on this machine's {cores} core(s): at most {LOCAL_WORKERS_PER_CORE} per "
                             f"core ({LOCAL_WORKERS_PER_CORE * cores}); each runs its tasks on this machine and "
                             "holds about 0.2 GB: lower resources.workers, or use Slurm resources for more")
        return v

    @field_validator("launcher", mode="before")
    @classmethod
    def _slurm_only(cls, v):
        if v == "parsl-mpi":  # rather than the bare list of the allowed values
            raise ValueError("parsl-mpi (Parsl's MPI mode, whole nodes per task from srun) runs on Slurm resources "
                             "(resources.type: slurm); on this machine use auto (the default), mpiexec or worker")
        return v


class SlurmResources(Strict):
    """Run on a Slurm cluster. Every string goes into a batch script and is checked for shell metacharacters."""

    type: Literal["slurm"]
    partition: str
    account: str | None = None
    qos: str | None = None
    walltime: str = "01:00:00"
    nodes: int = Field(default=1, ge=1, le=100_000)
    ranks_per_node: int = Field(default=1, ge=1, le=1024)
    ranks: int = Field(default=1, ge=1, le=1_000_000)
    workers: int = Field(default=1, ge=1, le=4096)
    max_blocks: int = Field(default=1, ge=1, le=10_000)
    modules: list[str] = Field(default_factory=list)
    worker_init: list[str] = Field(default_factory=list)
    #: how a task's ranks start inside a block: srun (the default) or mpiexec, several tasks sharing a node; or
    #: parsl-mpi: Parsl's MPI mode gives each task whole nodes of the block (ceil(ranks / ranks_per_node)) and the
    #: srun prefix for them, for members that fill whole nodes. Its cost: a task smaller than a node still takes a
    #: node, so a one-node block runs its tasks one at a time (workers is not used). workflows/executors.py says more
    launcher: Literal["srun", "mpiexec", "parsl-mpi"] = "srun"
    #: what one task runs: member, experiment or auto (as for local resources)
    task: Literal["auto", "member", "experiment"] = "auto"

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, v: str, info) -> str:
        # parsl-mpi: a task of more nodes than a block has would wait for ever (resources.ranks here; the members'
        # ensemble.ranks_per_member is checked when the workflow starts, workflows/campaign.py)
        ranks, per_node, nodes = (info.data.get(k) for k in ("ranks", "ranks_per_node", "nodes"))
        if v == "parsl-mpi" and None not in (ranks, per_node, nodes) and -(-ranks // per_node) > nodes:
            raise ValueError(f"parsl-mpi gives a task whole nodes: resources.ranks ({ranks}) needs "
                             f"{-(-ranks // per_node)} nodes of ranks_per_node ({per_node}), a block has nodes "
                             f"({nodes}); raise resources.nodes or ranks_per_node")
        return v

    @field_validator("partition", "account", "qos")
    @classmethod
    def _token(cls, v: str | None, info) -> str | None:
        return None if v is None else _safe(v, info.field_name)

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        _no_control(v, "walltime")
        if not re.fullmatch(WALLTIME, v):
            raise ValueError(f"walltime {short(v)} is not [days-]hours:minutes:seconds (e.g. \"01:00:00\" or "
                             "\"1-12:00:00\", quoted; Slurm reads \"02:00\" as 2 minutes)")
        if walltime_seconds(v) == 0:
            raise ValueError("walltime \"00:00:00\" is no time at all (Slurm reads it as no limit, which clusters "
                             "refuse or cap): give the time the campaign needs, e.g. \"01:00:00\"")
        return v

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        return [_safe(m, "module name") for m in v]

    @field_validator("worker_init")
    @classmethod
    def _init(cls, v: list[str]) -> list[str]:
        # Each entry is a command of space-separated safe tokens (e.g. "source /opt/site/env.sh"). A newline would
        # split one entry into two commands (str.split() would even hide it by joining them on one line).
        for line in v:
            _no_control(line, "worker_init entry")
            for tok in line.split():
                _safe(tok, "worker_init word")
        return v


Resources = Annotated[Union[LocalResources, SlurmResources], Field(discriminator="type")]


class Outputs(Strict):
    """``directory`` of the run (relative paths are relative to where twin is run; ``{name}`` is the campaign name);
    ``fields: false``: a forecast run writes its QoIs only, no field files (``forecast*.nc``); ``compression``: the
    zlib level (0-9) of the field files (posterior, forecast, decision fields; 0: uncompressed). The default 1: on
    twin's float64 fields a higher level barely shrinks the files and costs more time (level 4 against 1: files
    0.5-1.3 % smaller, written 6-20 % slower, measured on Lorenz-96, structure and atmosphere outputs). Campaigns
    always keep what a restart needs (checkpoints) and the posterior fields the report draws.

    When a filter campaign run online writes its restart checkpoint: after the cycle at which ``checkpoint_seconds``
    of wall-clock time have passed since the last one (default 10; 0: every cycle), or, when ``checkpoint_every`` is
    set, at the cycles that are multiples of it (1: every cycle); always at the last cycle, and earlier when the
    analyses held for a checkpoint would exceed 256 MiB. Each checkpoint also holds the analyses, forecasts and
    diagnostics of the cycles since the one before, so the outputs hold every cycle whatever the interval, a killed
    run resumes from its last checkpoint and computes the cycles after it again (bitwise: at most the interval's
    work is lost), and ``twin status`` shows the progress of the last checkpoint. The default bounds both the work
    lost and the files written: a run of short cycles writes a file per 10 s, not one per cycle (1000 small HDF5
    files cost Lorenz-96 about 2x its run time, benchmarks/RESULTS.md), one of long cycles a file per cycle. Set
    one of the two keys, not both. A workflow (``resources.workers`` > 1) checkpoints every cycle: its tasks
    exchange the states through them.
    """

    directory: str = "runs/{name}"
    fields: bool = True
    compression: int = Field(default=1, ge=0, le=9)
    checkpoint_every: int | None = Field(default=None, ge=1)
    checkpoint_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    #: ``checkpoint_seconds`` when neither key is set
    CHECKPOINT_SECONDS: ClassVar[float] = 10.0

    @model_validator(mode="after")
    def _one_interval(self):
        if self.checkpoint_every is not None and self.checkpoint_seconds is not None:
            raise ValueError("set one of checkpoint_every (cycles) and checkpoint_seconds (wall-clock time), not both")
        return self

    @field_validator("directory")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("directory must be a non-empty path")
        # {name} is the one placeholder; any other brace would be kept in the path literally ('runs/{nam}')
        rest = v.replace("{name}", "")
        if "{" in rest or "}" in rest:
            raise ValueError(f"directory {short(v)}: the one placeholder is {{name}} (the campaign name); remove "
                             "the other braces")
        return _no_control(v, "directory")


def campaign_type():
    """The campaign schema class, with the model, coupling, observation and assimilation sections of this build."""
    ModelSection = model_section_type()
    Coupling = coupling_section_type()
    Observation = observation_section_type()
    Assimilation = assimilation_section_type()
    DecisionConfig = decision_section_type()

    class Campaign(Strict):
        schema_version: Literal[1]
        campaign: CampaignInfo
        models: dict[Annotated[str, Field(pattern=NAME)], ModelSection] = Field(min_length=1)
        coupling: Coupling | None = None
        observations: list[Observation] = Field(default_factory=list)
        assimilation: Assimilation | None = None
        timeline: Timeline
        ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
        resources: Resources = Field(default_factory=lambda: LocalResources(type="local"))
        outputs: Outputs = Field(default_factory=Outputs)
        experiments: ExperimentsConfig | None = None
        decision: DecisionConfig | None = None
        limits: LimitsConfig = Field(default_factory=LimitsConfig)

    Campaign.__name__ = Campaign.__qualname__ = "Campaign"
    return Campaign


def check_references(cfg: Any) -> list[tuple[tuple, str]]:
    """Cross-section consistency and resource limits; returns ``(key path, message)`` pairs (empty when consistent).

    The limits come first: a campaign beyond them is refused before checks whose cost grows with its sizes (e.g.
    4D-Var's observation times per cycle) run.
    """
    problems = check_limits(cfg)
    if problems:
        return problems
    names = set(cfg.models)
    for i, obs in enumerate(cfg.observations):
        model = getattr(obs, "model", None)
        if model is not None and model not in names:
            problems.append((("observations", i, "model"),
                             f"observation set names model {model!r}, but the campaign's models are {sorted(names)}"))
    if cfg.coupling is not None and hasattr(cfg.coupling, "component_names"):
        for path, comp in cfg.coupling.component_names():
            if comp not in names:
                problems.append((("coupling", *path), f"unknown component {comp!r}; models are {sorted(names)}"))
    if cfg.assimilation is not None and hasattr(cfg.assimilation, "check_campaign"):
        problems += cfg.assimilation.check_campaign(cfg)
    if cfg.coupling is not None and hasattr(cfg.coupling, "check_campaign"):
        problems += cfg.coupling.check_campaign(cfg)
    replicates = cfg.experiments.replicates if cfg.experiments is not None else 1
    if cfg.campaign.seed + replicates - 1 > MAX_INT:  # the replicates' seeds are seed, seed + 1, ...
        problems.append((("campaign", "seed"), f"the {replicates} replicates take the seeds {cfg.campaign.seed} to "
                                               f"{cfg.campaign.seed + replicates - 1}, beyond the largest seed "
                                               f"{MAX_INT}: give a seed of at most {MAX_INT - replicates + 1}"))
    members = getattr(cfg.assimilation, "N", None)
    if cfg.experiments is not None and isinstance(members, int) and cfg.experiments.min_members > members:
        problems.append((("experiments", "min_members"), f"min_members ({cfg.experiments.min_members}) exceeds the "
                                                         f"ensemble size assimilation.N ({members}): every experiment "
                                                         "would stop at once"))
    if not problems:
        from twin.config.deep import check_models

        problems += check_models(cfg)
    return problems
