"""What a run directory holds, read with :mod:`twin.io` for the report.

Two layouts are recognised:

* a forecast run of ``twin run`` (no assimilation): ``forecast.nc`` (fields, one member) and ``qoi.nc`` (QoI time
  series) in the run directory;
* an assimilation campaign: ``experiments/<name>/`` with ``posterior.nc``, ``forecast.nc``, ``diagnostics.nc``,
  ``observations.h5`` (truth of twin experiments) and ``checkpoint/cycle_NNNN.h5`` (parameter ensembles), see
  :mod:`twin.campaign.layout`.

Either may also hold ``decision.json`` and ``flags.jsonl`` (:mod:`twin.decision.records`). Every file is optional:
what is missing or unreadable is recorded in :attr:`RunData.missing` (with the reason), and the report skips the
panels that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.core.log import get_logger

log = get_logger("twin.report")


@dataclass
class RunData:
    """The data of one experiment (or of a forecast run) that the report plots.

    Attributes
    ----------
    name : str
    directory : Path
    posterior, forecast, diagnostics, qoi : xarray.Dataset or None
    component_forecasts : dict
        ``component -> xarray.Dataset`` of a coupled model's forecast run (``forecast_<component>.nc``: one file
        per component, each on its own grid), which writes no ``forecast.nc``.
    horizon : xarray.Dataset or None
        ``horizon.nc``: ensemble mean and spread of the fields over the decision's forecast horizon.
    truth : ndarray (time, ...) or None
        True states at the posterior times (twin experiments), shaped like one member of the posterior variable
        (with a trailing variable axis when the model has several); for a coupled model, whose components' variables
        lie on different grids, the whole states ``(time, n_state)`` in natural order. Read a variable's truth with
        :meth:`RunData.truth_of`.
    truths : dict
        ``variable -> (time, ...)`` truth of each state variable of ``posterior.nc``, shaped like one member of it
        (empty without a truth).
    parameters : dict
        ``cycle -> {name: samples}`` of scalar parameters from the checkpoints, one value per member of the
        ensemble (NaN for a member dropped by the failure policy, so that the member axis means the same in every
        cycle).
    parameter_spreads : dict
        ``cycle -> {name: standard deviation}`` of the Laplace samples (``samples_<name>``) of a checkpoint that holds
        one analysis value per parameter (4D-Var): its spread, which its single value has none of.
    posterior_parameters : dict
        ``name -> samples`` of each scalar parameter's posterior at the last checkpoint: the ensemble's members
        (filters, ES-MDA) or the Laplace samples (4D-Var, ``samples_<name>``), NaN members left out.
    decision : dict or None
    flags : list of dict
    observation_files : list of dict
        The observation files a campaign of measured data read (``observations.h5``): network, file, SHA-256 and
        quality-control counts.
    missing : dict
        ``what -> why`` for every input that was not found or could not be read.
    damaged : dict
        ``path -> why`` for every file of the run that is there but cannot be read (truncated, not JSON, ...): the
        report leaves out what needs it and says so at its top, and ``twin report`` exits 1.
    """

    name: str
    directory: Path
    posterior: Any = None
    forecast: Any = None
    diagnostics: Any = None
    qoi: Any = None
    horizon: Any = None
    truth: np.ndarray | None = None
    truths: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    parameter_times: dict[int, float] = field(default_factory=dict)
    parameter_spreads: dict[int, dict[str, float]] = field(default_factory=dict)
    posterior_parameters: dict[str, np.ndarray] = field(default_factory=dict)
    decision: dict | None = None
    flags: list[dict] = field(default_factory=list)
    observation_files: list[dict] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    damaged: dict[Path, str] = field(default_factory=dict)
    component_forecasts: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "assimilation experiment" if self.posterior is not None or self.diagnostics is not None else "forecast"

    def concatenated(self, var: str) -> bool:
        """Whether ``var`` is a coupled model's state (its components one after another on different grids): no
        field to draw and no domain mean with a meaning."""
        from twin.campaign.finalize import CONCATENATED

        ds = self.posterior if self.posterior is not None else self.forecast
        return ds is not None and var in ds and str(ds[var].attrs.get("long_name", "")).startswith(CONCATENATED)

    def truth_of(self, var: str) -> np.ndarray | None:
        """The truth ``(time, ...)`` of state variable ``var`` at the posterior times, or ``None``."""
        return self.truths.get(var)

    def first_analysis(self) -> int:
        """Index of the first record of ``posterior.nc`` that is an analysis: a filter's file starts with the prior
        ensemble at ``t_0``, which no forecast reaches (its forecasts start at ``t_1``), while a smoother's or
        4D-Var's posterior records all have forecasts at the same times. Without ``forecast.nc``: 1 when there are
        several records (the filters' layout), else 0."""
        if self.posterior is None:
            return 0
        t = np.asarray(self.posterior["time"].values, dtype=float)
        if self.forecast is not None and "time" in self.forecast.coords and self.forecast.sizes.get("time", 0):
            return int(np.sum(t < float(np.min(self.forecast["time"].values))))
        return 1 if t.size > 1 else 0

    def state_variables(self) -> list[str]:
        """Data variables with a member and a time dimension (model fields)."""
        ds = self.posterior if self.posterior is not None else self.forecast
        if ds is None:
            return []
        return [v for v in ds.data_vars if {"member", "time"} <= set(ds[v].dims)]


#: the most a report reads of one NetCDF file into memory (bytes, uncompressed); a larger file's panels are left out
#: with the reason, rather than the report running the machine out of memory
READ_LIMIT = 2 * 2**30


def _open(path: Path, what: str, data: RunData):
    import xarray as xr

    if not path.is_file():
        data.missing[what] = f"{path.name} not found"
        return None
    try:
        with xr.open_dataset(path, decode_times=False) as ds:
            size = sum(v.size * v.dtype.itemsize for v in ds.variables.values())
            if size > READ_LIMIT:
                data.missing[what] = (f"{path.name} holds {size / 2**30:.3g} GiB, more than the report reads "
                                      f"({READ_LIMIT / 2**30:g} GiB); the panels that need it are left out (read it "
                                      "with xarray, a time or member at a time)")
                log.warning("report: %s", data.missing[what])
                return None
            return ds.load()
    except (OSError, ValueError, RuntimeError) as exc:
        data.missing[what] = f"{path.name} unreadable ({exc})"
        data.damaged[path] = one_line(exc)
        log.warning("report: cannot read %s: %s", path, exc)
        return None


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An error's text on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_decision_file(directory: Path, data: RunData | None) -> dict | None:
    """``decision.json`` of ``directory`` (a JSON object), or ``None``; one that is there but cannot be read (not
    JSON, not an object) is recorded in ``data.damaged`` (when ``data`` is given) and gives ``None``."""
    import json

    from twin.decision.records import DECISION_FILE

    path = Path(directory) / DECISION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        why = f"not JSON: {one_line(exc)}" if isinstance(exc, ValueError) else one_line(exc.strerror or exc)
    else:
        if isinstance(record, dict):
            return record
        why = "not a JSON object"
    if data is not None:
        data.damaged[path] = why
    log.debug("report: cannot read %s: %s", path, why)
    return None


def _truth(directory: Path, data: RunData) -> None:
    from twin.core.errors import OutputError
    from twin.io.checkpoint import CheckpointReader

    path = directory / "observations.h5"
    if not path.is_file():
        data.missing["truth"] = "observations.h5 not found (not a twin experiment)"
        return
    try:
        with CheckpointReader(path) as r:
            data.observation_files = list(r.meta.get("files", []))
            if "truth" not in r.array_names:
                data.missing["truth"] = "observations.h5 holds no truth"
                return
            truth = r.read_array("truth")
            times = r.read_array("times") if "times" in r.array_names else None
    except (OutputError, OSError) as exc:
        data.missing["truth"] = f"observations.h5 unreadable ({exc})"
        data.damaged[path] = one_line(exc)
        return
    var = data.state_variables()
    if data.posterior is not None and var:
        blocks = state_blocks(data.posterior, var)
        if truth.shape[0] != data.posterior.sizes["time"] and times is not None:
            truth = _at_posterior_times(truth, times, data.posterior["time"].values)
        if truth is not None and truth.shape[0] == data.posterior.sizes["time"] and \
                blocks[-1].entries.stop == truth[0].size:
            truth = truth.reshape(truth.shape[0], -1)
            data.truths = {name: part for b in blocks for name, part in b.split(truth).items()}
            if len(blocks) == 1:  # one grid: the variables' truths on a trailing axis
                shape = data.posterior[var[0]].shape[2:]
                data.truth = truth.reshape((truth.shape[0],) + tuple(shape) + ((len(var),) if len(var) > 1 else ()))
            else:
                data.truth = truth
            return
    data.missing["truth"] = "the truth in observations.h5 does not match the posterior's shape"


def state_blocks(ds, variables: list[str]) -> list:
    """The blocks of the natural-order state that the state ``variables`` of an ensemble file ``ds`` hold, as
    :class:`twin.campaign.outputs.FieldBlock` (whose ``split`` wrote them): consecutive variables on the same
    spatial dimensions are one block (the model's grid, or a coupled model's component on its own coordinates,
    in the order of the state vector), its variables the block's dofs in order."""
    from types import SimpleNamespace

    from twin.campaign.outputs import FieldBlock

    groups: list[tuple[tuple, list[str]]] = []
    for v in variables:
        dims = tuple(ds[v].dims[2:])
        if not groups or groups[-1][0] != dims:
            groups.append((dims, []))
        groups[-1][1].append(v)
    blocks, start = [], 0
    for dims, names in groups:
        shape = tuple(ds[names[0]].shape[2:])
        n = int(np.prod(shape)) * len(names)
        # FieldBlock.shape reverses the grid's (x-first) shape into the file's order
        grid = SimpleNamespace(shape=shape[::-1], dof=len(names))
        component = dims[0].rsplit("_", 1)[0] if len(groups) > 1 and dims else None
        blocks.append(FieldBlock(component, slice(start, start + n), grid, tuple(names),
                                 tuple(str(ds[v].attrs.get("units", "")) for v in names), dims, ""))
        start += n
    return blocks


def _at_posterior_times(truth: np.ndarray, times: np.ndarray, posterior_times: np.ndarray) -> np.ndarray | None:
    """The truth's rows at the posterior's times (4D-Var writes one posterior per window end, the nature run has
    every observation time), or ``None`` when they are not among the truth's. The posterior's CF times are the model
    times times a unit factor, taken from the last time (the end of the last window is the last observation time)."""
    t = np.asarray(times, dtype=float)
    tp = np.asarray(posterior_times, dtype=float)
    if t.size == 0 or tp.size == 0 or t[-1] == 0:
        return None
    scaled = t * (tp[-1] / t[-1])
    idx = np.clip(np.searchsorted(scaled, tp), 0, t.size - 1)
    tol = 1e-9 * max(1.0, float(np.max(np.abs(scaled))))
    for shift in (0, -1):  # searchsorted lands on the match or just past it
        j = np.clip(idx + shift, 0, t.size - 1)
        ok = np.abs(scaled[j] - tp) <= tol
        idx = np.where(ok, j, idx)
    if not np.all(np.abs(scaled[idx] - tp) <= tol):
        return None
    return truth[idx]


def _parameters(directory: Path, data: RunData) -> None:
    from twin.core.errors import OutputError
    from twin.io.checkpoint import CheckpointReader

    ck = directory / "checkpoint"
    files = sorted(ck.glob("cycle_*.h5")) if ck.is_dir() else []
    if not files:
        data.missing["parameters"] = "no checkpoints with parameter ensembles"
        return
    for path in files:
        try:
            with CheckpointReader(path, verify=False) as r:
                alive = (r.read_array("alive").astype(bool) if "alive" in r.array_names else None)
                params = {}
                for name, value in r.scalar_parameters.items():
                    v = np.atleast_1d(np.asarray(value, dtype=float))
                    if alive is not None and alive.size == v.size:
                        # keep the member axis: a drop must not shorten one cycle's samples (fans need equal sizes)
                        v = np.where(alive, v, np.nan)
                    params[name] = v
                data.parameters[r.cycle] = params
                data.parameter_times[r.cycle] = r.time
                # a single analysis (4D-Var's MAP) has its spread in its Laplace samples
                data.parameter_spreads[r.cycle] = {
                    n: float(np.std(s[np.isfinite(s)], ddof=1)) for n in params
                    if f"samples_{n}" in r.array_names and np.isfinite(
                        s := np.ravel(r.read_array(f"samples_{n}")).astype(float)).sum() > 1}
                if path == files[-1]:  # the posterior: Laplace samples where the checkpoint has them, else members
                    data.posterior_parameters = {
                        name: v[np.isfinite(v)] for name, v in
                        ((n, np.ravel(r.read_array(f"samples_{n}")).astype(float) if f"samples_{n}" in r.array_names
                          else params[n]) for n in params)}
        except (OutputError, OSError, KeyError) as exc:
            data.damaged[path] = one_line(exc)
            log.warning("report: skipping checkpoint %s: %s", path, exc)
    if not any(data.parameters.values()):
        data.missing["parameters"] = "the checkpoints hold no scalar parameters"


def load_run(directory, name: str | None = None) -> RunData:
    """Read everything the report uses from one experiment directory (or a forecast run directory)."""
    from twin.campaign.decide import HORIZON_FILE
    from twin.decision.guardrails import read_flags
    from twin.decision.records import FLAGS_FILE

    directory = Path(directory)
    data = RunData(name or directory.name, directory)
    data.posterior = _open(directory / "posterior.nc", "posterior", data)
    data.forecast = _open(directory / "forecast.nc", "forecast", data)
    parts = sorted(directory.glob("forecast_*.nc"))
    if data.forecast is None and parts:  # a coupled model's forecast run: one file per component, on its own grid
        data.missing.pop("forecast", None)
        for p in parts:
            ds = _open(p, p.stem, data)
            if ds is not None:
                data.component_forecasts[p.stem[len("forecast_"):]] = ds
    data.diagnostics = _open(directory / "diagnostics.nc", "diagnostics", data)
    data.qoi = _open(directory / "qoi.nc", "qoi", data)
    data.horizon = _open(directory / HORIZON_FILE, "horizon", data)
    _truth(directory, data)
    _parameters(directory, data)
    data.decision = read_decision_file(directory, data)
    if data.decision is None:
        data.missing["decision"] = "no decision.json"
    try:
        data.flags = [vars(f) for f in read_flags(directory / FLAGS_FILE)]
    except (OSError, ValueError, TypeError) as exc:
        data.missing["flags"] = f"{FLAGS_FILE} unreadable ({exc})"
        data.damaged[directory / FLAGS_FILE] = (f"not JSON lines: {one_line(exc)}" if isinstance(exc, ValueError)
                                                else one_line(exc))
    _promised(directory, data)
    return data


def _promised(directory: Path, data: RunData) -> None:
    """The outputs a finished experiment's ``done.json`` lists that are missing, empty or not the size it recorded
    (what ``twin status`` calls damaged, :func:`twin.campaign.status.damaged_outputs`): damage the report names, as
    an unreadable file (a report of a run with its posterior deleted said nothing and exited 0)."""
    from twin.campaign.status import damaged_outputs

    for name, why in damaged_outputs(directory).items():
        data.damaged.setdefault(directory / name, why)


def discover(run_dir) -> list[RunData]:
    """The experiments of a campaign run directory, or the run directory itself for a forecast run."""
    from twin.campaign.layout import experiment_dirs

    run_dir = Path(run_dir)
    dirs = experiment_dirs(run_dir)
    if not dirs:
        exp_root = run_dir / "experiments"
        dirs = sorted(p for p in exp_root.iterdir() if p.is_dir()) if exp_root.is_dir() else []
    runs = [load_run(d) for d in dirs] if dirs else [load_run(run_dir, run_dir.name)]
    if dirs:
        # decisions and flags written next to the experiments apply to the whole run
        probe = RunData(run_dir.name, run_dir)
        top = read_decision_file(run_dir, probe)
        for r in runs:
            if r.decision is None and top is not None:
                r.decision = top
                r.missing.pop("decision", None)
            elif r.decision is None and probe.damaged:
                r.damaged.update(probe.damaged)  # the run's decision, which would have applied to this experiment
        if probe.damaged and not any(set(probe.damaged) <= set(r.damaged) for r in runs):
            runs[0].damaged.update(probe.damaged)  # said once, even where every experiment has a decision of its own
    return runs
