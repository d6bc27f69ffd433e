"""One experiment as every campaign step sees it: its configuration (``<experiment>/experiment.yaml``) and the objects
built from it on one communicator, reused across the steps of a process, and the task log each step appends to.
(:mod:`twin.campaign.experiments` makes the experiments of a campaign from its matrix.)

Build with :func:`setup`; call :meth:`Setup.destroy` at the end (frees the model's PETSc objects).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.campaign import context as ctx
from twin.campaign import layout


#: seconds between the online driver's appends to ``diagnostics.nc`` (appending costs a NetCDF open and close,
#: tens of milliseconds, more than a small model's whole cycle); the checkpoints hold every record meanwhile
DIAGNOSTICS_EVERY = 5.0


def rank_of(comm) -> int:
    """This process's rank in ``comm`` (0 without one)."""
    return comm.Get_rank() if comm is not None else 0


@dataclass
class Setup:
    """An experiment's configuration and the objects built from it on one communicator (reused across steps).

    Build with :func:`setup`; call :meth:`destroy` at the end (frees the model's PETSc objects).
    """

    exp_dir: Path
    loaded: Any
    comm: Any
    model: Any = None
    _obs: Any = field(default=None, repr=False)
    _schedule: Any = field(default=None, repr=False)
    _files_record: Any = field(default=None, repr=False)
    _campaign: Any = field(default=None, repr=False)
    _obs_arrays: Any = field(default=None, repr=False)
    #: diagnostics records not yet in ``diagnostics.nc``, and when it was last appended to (``lazy``: the online
    #: driver appends every :data:`DIAGNOSTICS_EVERY` seconds and at the end, and makes its cycle checkpoints
    #: durable then, before the append: every checkpoint up to the cycles ``diagnostics.nc`` holds is on stable
    #: storage, a newer one may not be after a crash of the machine; a step of its own appends at once)
    pending: list = field(default_factory=list, repr=False)
    #: records of cycles whose checkpoint is not written yet (``outputs.checkpoint_every``): appended after it is,
    #: so that ``diagnostics.nc`` never holds a cycle a resume computes again
    held: list = field(default_factory=list, repr=False)
    lazy: bool = False
    #: a warm Parsl worker's steps (:mod:`twin.campaign.task`), which keep this object between their tasks: an
    #: analysis appends to ``diagnostics.nc`` every :data:`DIAGNOSTICS_EVERY` seconds and at the last cycle, not
    #: every cycle (an append costs a NetCDF open and close, 11 ms of a 30-ms analysis of the Lorenz-96 benchmark
    #: campaign); its checkpoints are durable at once, each holds its cycle's record, and an append takes the
    #: records it lacks from them (:func:`twin.campaign.outputs.append_cycle_records`), whichever worker analysed
    defer_records: bool = False
    #: when ``diagnostics.nc`` is next due (:class:`twin.core.interval.Interval`, rank 0's clock; due at first)
    _appends: Any = field(default=None, repr=False)

    @property
    def cfg(self):
        return self.loaded.config

    @property
    def name(self) -> str:
        return self.exp_dir.name

    def get_model(self):
        if self.model is None:
            self.model = ctx.build_model(self.cfg, self.comm)
        return self.model

    @property
    def schedule(self):
        if self._schedule is None:
            self._schedule = ctx.schedule(self.cfg, self.get_model())
        return self._schedule

    @property
    def observations(self):
        if self._obs is None:
            self._obs = ctx.observations(self.cfg, self.get_model())
        return self._obs

    @property
    def n_members(self) -> int:
        return ctx.ensemble_size(self.cfg)

    @property
    def rank(self) -> int:
        return rank_of(self.comm)

    def provenance(self, parent: Path | None = None, checksum: str = ""):
        """The provenance of an output of this experiment (collective): the run's, the parent checkpoint, and the
        observation files ``observations.h5`` records (with their SHA-256 and QC counts), once it exists."""
        from twin.io.provenance import collect

        return collect(self.comm, config_text=self.loaded.text, sensitive=self.cfg.campaign.sensitive,
                       parent=parent, parent_checksum=checksum, relative_to=self.exp_dir,
                       observation_files=self._observation_files(), campaign_text=self._campaign_text())

    def _campaign_text(self) -> str | None:
        """The campaign file as given (``RUN_DIR/campaign.yaml``, which this experiment's ``experiment.yaml`` was made
        from), read once; ``None`` when the run directory has none."""
        from twin.campaign.rundir import CAMPAIGN_FILE

        if self._campaign is None:
            try:
                self._campaign = ((self.exp_dir.parent.parent / CAMPAIGN_FILE).read_text(encoding="utf-8"),)
            except (OSError, UnicodeDecodeError):
                self._campaign = (None,)
        return self._campaign[0]

    def _observation_files(self) -> list:
        """``observations.h5``'s record of the files read (``meta["files"]``), remembered while the file is
        unchanged (size and modification time); empty before it is written or for a twin experiment. Collective."""
        from twin.campaign.checkpoints import is_valid_checkpoint, reader

        path = layout.observations_file(self.exp_dir)
        key = self._observations_version()
        if key is None:
            return []
        if self._files_record is None or self._files_record[0] != key:
            files = []
            if is_valid_checkpoint(path, self.comm):
                with reader(path, self.comm) as r:
                    files = list(r.meta.get("files", []))
            self._files_record = (key, files)
        return self._files_record[1]

    def _observations_version(self):
        """``observations.h5``'s size and modification time (rank 0's; ``None`` before it exists). Collective."""
        import os

        try:
            st = os.stat(layout.observations_file(self.exp_dir))
            key = (st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if self.comm is not None and self.comm.Get_size() > 1:
            key = self.comm.bcast(key, root=0)
        return key

    def cycle_observations(self, cycle: int):
        """``(truth, values, errors)`` of the observations at the end of cycle ``cycle`` from ``observations.h5``
        (``truth`` ``None`` without a nature run; ``errors`` per observation or one standard deviation for all).

        A file up to :data:`~twin.campaign.checkpoints.PARALLEL_HDF5_BYTES` is read (and verified) once and kept
        while its size and modification time stay (a live twin's delivery rewrites it); a larger one is read per
        cycle. Collective."""
        from twin.campaign.checkpoints import PARALLEL_HDF5_BYTES, reader

        key = self._observations_version()
        if self._obs_arrays is None or self._obs_arrays[0] != key:
            with reader(layout.observations_file(self.exp_dir), self.comm) as r:
                names = r.array_names
                arrays = {"truth": r.read_array("truth") if "truth" in names else None,
                          "observations": r.read_array("observations"),
                          "errors": r.read_array("errors" if "errors" in names else "error_std")}
                per_cycle = "errors" in names
            if key is None or key[0] > PARALLEL_HDF5_BYTES:
                self._obs_arrays = None
                return self._pick(arrays, per_cycle, cycle)
            self._obs_arrays = (key, arrays, per_cycle)
        return self._pick(self._obs_arrays[1], self._obs_arrays[2], cycle)

    @staticmethod
    def _pick(arrays: dict, per_cycle: bool, cycle: int):
        truth = arrays["truth"][cycle + 1] if arrays["truth"] is not None else None
        return truth, arrays["observations"][cycle], arrays["errors"][cycle] if per_cycle else arrays["errors"]

    def add_diagnostics(self, record: dict, last: bool, held: bool = False) -> None:
        """Queue the diagnostics record of a cycle; append the queue to ``diagnostics.nc`` unless :attr:`lazy` and
        appended less than :data:`DIAGNOSTICS_EVERY` seconds ago (``last``: the campaign's last cycle, always).
        ``held``: the cycle's checkpoint was not written; the record waits (:attr:`held`) for the next record of a
        written one, and nothing is appended. Collective."""
        if held:
            self.held.append(record)
            return
        self.pending += self.held + [record]
        self.held = []
        if self._appends is None:
            from twin.core.interval import Interval

            self._appends = Interval(DIAGNOSTICS_EVERY, self.comm, due_at_start=not self.defer_records)
        if not (self.lazy or self.defer_records) or last or self._appends.due():
            self.flush_diagnostics()

    def flush_diagnostics(self) -> None:
        """Append the queued diagnostics records to ``diagnostics.nc`` (collective); with :attr:`lazy`, after
        making the checkpoints written meanwhile durable."""
        from twin.campaign.outputs import append_cycle_records
        from twin.io.atomic import make_durable

        if self.lazy:  # every rank: with parallel HDF5 each node holds its own part of the files
            make_durable()
        records, self.pending = self.pending, []
        if self.defer_records:  # this worker's records need not be consecutive: the checkpoints fill the gaps
            records = records[-1:]
        append_cycle_records(self, records)
        if self._appends is not None:
            self._appends.reset()

    def record(self, task: str, outcome: str, t_start: float, **extra) -> None:
        """Append a line to the experiment's task log (rank 0): the task, its outcome (``done``, ``skipped``), the
        seconds since ``t_start``, the ranks, and ``extra`` (cycle, member)."""
        if self.rank == 0:
            layout.log_task(self.exp_dir, {"task": task, "outcome": outcome, "seconds": time.time() - t_start,
                                           "ranks": self.comm.Get_size() if self.comm is not None else 1, **extra})

    def destroy(self) -> None:
        if self.model is not None:
            self.model.destroy()
            self.model = None


def setup(exp_dir, comm) -> Setup:
    """Load ``<exp_dir>/experiment.yaml`` (validated like a campaign file) for steps on ``comm``."""
    from twin.config.loader import load_campaign

    exp_dir = Path(exp_dir)
    loaded = load_campaign(layout.config_file(exp_dir))
    ctx.assimilation_section(loaded.config)
    return Setup(exp_dir, loaded, comm)
