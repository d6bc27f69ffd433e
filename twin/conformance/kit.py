"""The checks of the model contract (:mod:`twin.models.base`) that every campaign relies on, each a function that
measures one number and says pass or fail.

All checks but the last run serially (``COMM_SELF``) on fresh models built from one :class:`~.subject.Subject`, over
a window of ``steps`` of the model's time step from ``t0 = 0``: ``t1`` after half of them, ``t2`` after all.

========================== =============================================================================================
check                      what must hold, and the number shown
========================== =============================================================================================
builds                     the model builds and its initial state is finite (unknowns, parameters)
checkpoint round trip      state and every parameter (prior draws for estimable ones) written to a twin checkpoint and
                           read into a fresh model are bitwise the same (max difference)
restart is bitwise         ``t0 -> t1``, checkpoint, a fresh model ``t1 -> t2`` equals ``t0 -> t2`` in one model,
                           bitwise (max difference): what resuming a campaign and workflow mode rely on; then, from a
                           checkpoint of a perturbed state, the forecast changes (the state given is the state
                           forecast from: a BMI ``set_value`` that does nothing fails), so does it with each state
                           component and each estimable parameter perturbed alone, and a model that first ran another
                           history to ``t1`` forecasts bitwise what a fresh one does (no hidden prognostic state;
                           :mod:`twin.conformance.restart`)
QoIs finite                every QoI at ``t0`` and ``t2`` is finite (their count; the non-finite ones named)
parameter transforms       for each estimable parameter, its value and prior draws lie in its transform's domain and
invert                     come back through transform and inverse, and through ``set_parameter``/``get_parameter``
                           (max relative error, at most 1e-10)
options prefix honoured    solver options under ``<name>_`` reach the model's solvers (unknown ``ts_type``,
                           ``snes_type``, ``ksp_type`` and ``pc_type`` there are refused), and options without the
                           prefix are not read (the model still runs with them set to unknown types)
adjoint Taylor test        when the model has an adjoint: ``J = |x(t2)|^2 / 2`` of the initial state and the estimable
                           parameters; the Taylor remainder falls as ``h^2`` (rates above 1.9)
1 vs 2 ranks agree         the kit runs the model under ``mpiexec -n 2`` in a child process: the state at ``t2``
                           agrees with the serial one (max relative difference, at most ``rank_rtol``)
========================== =============================================================================================

A check that does not apply is skipped with the reason (no estimable parameter, no adjoint, no PETSc solver, no
``mpiexec``). A check that raises fails with the error's one line; checks after a failed ``builds`` are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from twin.conformance.adjoint import check_adjoint
from twin.conformance.base import (FAIL, PASS, SKIP, CheckResult, Context, Failed, Report, _fail, _g, _model,
                                   _run, _skip, _whole, _whole_param)
from twin.conformance.options import check_options_prefix
from twin.conformance.restart import _read, _write, check_restart
from twin.conformance.subject import Subject
from twin.core.launcher import die_with_parent
from twin.models import contract

#: relative error allowed of a parameter through its transform and back (log/exp round-off, not a bug)
TRANSFORM_RTOL = 1e-10


# -- the checks --------------------------------------------------------------------------------------------------------
def check_builds(ctx: Context) -> str:
    with _model(ctx) as model:
        dt = ctx.subject.fixed_step(model)
        if dt is None or not np.isfinite(dt) or dt <= 0:
            raise _fail("no time step: the model has no 'dt' and its section no fixed step; give one (--step DT)")
        half = max(1, ctx.steps // 2)
        ctx.t1, ctx.t2 = ctx.t0 + half * dt, ctx.t0 + max(ctx.steps, half + 1) * dt
        x = contract.initial_state(model)  # a PETSc vector of the model's state, or the one line saying what it is
        try:
            whole = _whole(model, x)
        finally:
            x.destroy()
        bad = int(np.count_nonzero(~np.isfinite(whole)))
        if bad:
            raise _fail(f"initial state has {bad} non-finite entries of {whole.size}")
        grid = model.grid
        n, est = len(model.parameters), len(model.estimable())
        return (f"{whole.size} unknowns on a {grid.dim}-D grid {list(grid.shape)} (dof {grid.dof}), "
                f"{n} parameter{'s' if n != 1 else ''} ({est} estimable); windows {_g(ctx.t0)} -> {_g(ctx.t1)} -> "
                f"{_g(ctx.t2)} (time units {model.time_units})")


def _draw_parameters(model, gen: np.random.Generator) -> dict[str, Any]:
    """Estimable parameters drawn from their priors as a campaign draws its members' (logistic of a logit-space
    field prior included), set into ``model``."""
    from twin.assimilation.cycle import set_parameter_natural
    from twin.campaign.context import sample_parameter

    drawn = {}
    for p in model.estimable():
        if p.prior is not None:
            drawn[p.name] = sample_parameter(model, p, gen)
            set_parameter_natural(model, p.name, drawn[p.name])
    return drawn


def _parameter_values(model) -> dict[str, np.ndarray]:
    return {p.name: (_whole_param(model, p) if p.is_field else np.array([float(p.value)]))
            for p in model.parameters.values()}


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        if k not in b or a[k].shape != b[k].shape:
            return np.inf, k
        d = float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0
        if not np.isfinite(d) or d > worst or (np.isnan(a[k]).any() != np.isnan(b[k]).any()):
            worst, where = (d if np.isfinite(d) else np.inf), k
    return worst, where


def check_checkpoint(ctx: Context) -> str:
    path = ctx.workdir / "roundtrip.h5"
    with _model(ctx) as model:
        _draw_parameters(model, np.random.default_rng(1))
        x = model.initial_state()
        try:
            x0 = _whole(model, x)
            model.advance(x, ctx.t0, ctx.t1)  # a state the model computed, not only the configured one
            before = {"state": _whole(model, x), **_parameter_values(model)}
            contract.finite_advance(model, x0, before["state"], ctx.t0, ctx.t1)  # NaN without a SolverError
            _write(model, path, x, ctx.t1)
        finally:
            x.destroy()
    with _model(ctx) as fresh:
        y = _read(fresh, path)
        try:
            after = {"state": _whole(fresh, y), **_parameter_values(fresh)}
        finally:
            y.destroy()
    worst, where = _max_difference(before, after)
    n = len(before) - 1
    if worst != 0.0:
        raise _fail(f"max |difference| {_g(worst)} in {where} after writing and reading the state and {n} parameters")
    return f"max |difference| 0 over the state and {n} parameter{'s' if n != 1 else ''}"


def check_batched(ctx: Context) -> str:
    """A model offering ``advance_ensemble`` gives ``advance``'s numbers bitwise for each member (its own state and
    parameters), as the campaigns assume when they use one or the other by layout and mode."""
    from twin.assimilation.cycle import set_parameter_natural

    with _model(ctx) as model:
        x = model.initial_state()
        try:
            x0 = _whole(model, x)
            model.advance(x, ctx.t0, ctx.t1)
            x1 = _whole(model, x)
        finally:
            x.destroy()
        base = {p.name: (_whole_param(model, p) if p.is_field else float(p.value)) for p in model.estimable()}
        drawn = _draw_parameters(model, np.random.default_rng(7))
        for name, value in base.items():
            set_parameter_natural(model, name, value)
        batch = model.advance_ensemble(np.stack([x0, x1]), [{}, drawn], ctx.t0, ctx.t2)
        if batch is None:
            raise _skip("the model offers no batched forecast (advance_ensemble)")
        first = _run(model, x0, ctx.t0, ctx.t2)
        for name, value in drawn.items():
            set_parameter_natural(model, name, value)
        second = _run(model, x1, ctx.t0, ctx.t2)
        for name, value in base.items():
            set_parameter_natural(model, name, value)
    batch = np.asarray(batch, dtype=float)
    for member, ref in enumerate((first, second)):
        got = batch[member].ravel()
        if got.shape != ref.shape or got.tobytes() != ref.tobytes():
            diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else np.inf
            raise _fail(f"member {member}: max |difference| {_g(diff)} between advance_ensemble and advance over "
                        f"{_g(ctx.t0)} -> {_g(ctx.t2)}" + (" (with parameters drawn from the priors)" if member else "")
                        + ": it must give advance's numbers bitwise (the same integrator, operations in the same "
                        "order)")
    return (f"2 members bitwise advance's over {_g(ctx.t0)} -> {_g(ctx.t2)}"
            + (f" (one with {', '.join(sorted(drawn))} drawn from the priors)" if drawn else ""))


def check_qois(ctx: Context) -> str:
    with _model(ctx) as model:
        x = model.initial_state()
        try:
            at0 = contract.qoi(model, x, ctx.t0)  # a mapping of name to QoI, or the one line saying what it is
            model.advance(x, ctx.t0, ctx.t2)
            at2 = contract.qoi(model, x, ctx.t2)
        finally:
            x.destroy()
    if not at0 and not at2:
        raise _skip("the model has no QoIs")
    bad = sorted({f"{k} at t={_g(t)} ({q.value})" for t, qs in ((ctx.t0, at0), (ctx.t2, at2))
                  for k, q in qs.items() if not np.isfinite(q.value)})
    if bad:
        raise _fail(f"{len(bad)} non-finite: {', '.join(bad[:5])}")
    names = ", ".join(sorted(at2)[:6]) + (", ..." if len(at2) > 6 else "")
    return f"{len(at2)} QoIs ({names}) finite at t={_g(ctx.t0)} and t={_g(ctx.t2)}"


def check_transforms(ctx: Context) -> str:
    from twin.assimilation.cycle import set_parameter_natural
    from twin.assimilation.transforms import TRANSFORMS, forward, inverse
    from twin.campaign.context import sample_parameter
    from twin.core.errors import AssimilationError

    gen = np.random.default_rng(2)
    worst, count, names = 0.0, 0, []
    with _model(ctx) as model:
        params = model.estimable()
        if not params:
            raise _skip("no estimable parameter")
        for p in params:
            if p.transform not in TRANSFORMS:
                raise _fail(f"parameter {p.name}: transform {p.transform!r} is not one of {list(TRANSFORMS)}")
            values = [_whole_param(model, p) if p.is_field else np.array([float(p.value)])]
            if p.prior is not None:
                values += [np.atleast_1d(np.asarray(sample_parameter(model, p, gen), dtype=float)).ravel()
                           for _ in range(5)]
            for i, v in enumerate(values):
                what = "its value" if i == 0 else f"prior draw {i}"
                try:
                    back = inverse(forward(v, p.transform, p.name), p.transform, p.name)
                except AssimilationError as exc:
                    raise _fail(f"parameter {p.name}, {what}: {exc} (prior {getattr(p.prior, 'dist', None)} with "
                                f"transform {p.transform})") from None
                scale = np.maximum(np.abs(v), np.finfo(float).tiny)
                worst = max(worst, float(np.max(np.abs(back - v) / scale)))
                set_parameter_natural(model, p.name, back if p.is_field else float(back[0]))
                got = _whole_param(model, p) if p.is_field else np.array([float(model.get_parameter(p.name))])
                if not np.array_equal(got, back):
                    raise _fail(f"parameter {p.name}: set_parameter then get_parameter changed the value by "
                                f"{_g(float(np.max(np.abs(got - back))))}")
                count += v.size
            names.append(f"{p.name} ({p.transform})")
    if worst > TRANSFORM_RTOL:
        raise _fail(f"max relative error {_g(worst)} through transform and inverse (limit {TRANSFORM_RTOL:g})")
    return f"max relative error {_g(worst)} over {count} values of {', '.join(names)}"


#: Variables of a running MPI job or singleton (Open MPI, PMIx, MPICH's PMI and Hydra), dropped from the environment
#: of the ``mpiexec`` the kit starts ...
_MPI_RUNTIME = ("OMPI_", "PMIX_", "ORTE_", "OPAL_", "PMI_", "HYDRA_")
#: ... except the user's switches that no MPI runtime sets (Open MPI as root; more ranks than cores)
_MPI_KEEP = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_MCA_rmaps_base_oversubscribe")


def _fresh_mpi_environ() -> dict:
    """This process's environment without MPI runtime variables, for a child ``mpiexec`` that starts a job of its own.

    A process started by one that had initialised MPI (an Open MPI singleton sets ``OMPI_MCA_ess=singleton``
    and ``PMIX_*``, which every child inherits: a pytest-xdist worker, a script run from Python that imported mpi4py)
    or by ``mpiexec -n 1`` carries them, and ``mpiexec`` then exits with status 1 and no output (or refuses a
    "recursive call")."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_MPI_RUNTIME) or k.startswith(_MPI_KEEP)}


def check_ranks(ctx: Context) -> str:
    if ctx.ranks < 2:
        raise _skip("not asked for (--ranks 1)")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise _skip("no mpiexec on PATH")
    if ctx.final is None:
        raise _skip("no serial result to compare with (the restart check failed)")
    spec = ctx.workdir / "spec.json"
    out = ctx.workdir / "ranks.npy"
    spec.write_text(json.dumps({"subject": ctx.subject.spec(), "t0": ctx.t0, "t2": ctx.t2, "out": str(out)}))
    cmd = [mpiexec, "-n", str(ctx.ranks), sys.executable, "-P", "-m", "twin.conformance.ranks", str(spec)]
    env = _fresh_mpi_environ()
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    try:
        # stdin closed: mpiexec forwards its stdin to rank 0, and ours may belong to someone else (a test runner)
        # the job ends with this process (killed, timed out): its mpiexec and ranks must not run on
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL,
                             preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        raise _fail(f"mpiexec -n {ctx.ranks} did not finish within 600 s") from None
    if run.returncode != 0 or not out.is_file():
        lines = [ln.strip() for ln in (run.stderr + run.stdout).splitlines() if any(c.isalpha() for c in ln)]
        said = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[0] if lines else "no output")
        raise _fail(f"the run on {ctx.ranks} ranks failed (exit {run.returncode}): {said.removeprefix('error: ')}")
    many = np.load(out)
    if many.shape != ctx.final.shape:
        raise _fail(f"the state on {ctx.ranks} ranks has {many.size} entries, on 1 rank {ctx.final.size}")
    scale = float(np.max(np.abs(ctx.final))) or 1.0
    rel = float(np.max(np.abs(many - ctx.final))) / scale
    if not np.isfinite(rel) or rel > ctx.rank_rtol:
        raise _fail(f"max relative difference {_g(rel)} at t={_g(ctx.t2)} between 1 and {ctx.ranks} ranks (limit "
                    f"{ctx.rank_rtol:g}): the result depends on the decomposition")
    return f"max relative difference {_g(rel)} at t={_g(ctx.t2)} between 1 and {ctx.ranks} ranks (limit " \
           f"{ctx.rank_rtol:g})"


def failure_line(exc: BaseException) -> str:
    """The one line of a check that raised: a breach of the model contract as the campaigns report it (the
    component, the method and what the contract expects, :mod:`twin.models.contract`), else the error's type and its
    first line."""
    named = exc if isinstance(exc, contract.ContractError) else contract.describe(exc)
    if named is not None:
        return str(named)[:400]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:400]


#: the checks in the order they run (the first one's windows are used by the others)
CHECKS: tuple[tuple[str, Callable[[Context], str]], ...] = (
    ("builds", check_builds),
    ("checkpoint round trip", check_checkpoint),
    ("restart is bitwise", check_restart),
    ("batched forecast is advance", check_batched),
    ("QoIs finite", check_qois),
    ("parameter transforms invert", check_transforms),
    ("options prefix honoured", check_options_prefix),
    ("adjoint Taylor test", check_adjoint),
    ("1 vs 2 ranks agree", check_ranks),
)


def check_model(subject: Subject, *, ranks: int = 2, steps: int = 4, rank_rtol: float = 1e-8,
                only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> Report:
    """Run the checks on ``subject`` in this process (serially) and, for the last one, under ``mpiexec``.

    Parameters
    ----------
    subject : Subject
        The model (see :mod:`twin.conformance.subject`).
    ranks : int
        Ranks of the child run compared with the serial one (1: skip that check).
    steps : int
        Time steps of the checks' window (at least 2: the restart splits it).
    rank_rtol : float
        Largest relative difference allowed between 1 and ``ranks`` ranks (iterative solvers differ with the
        decomposition up to their tolerance).
    only, skip : tuple of str
        Names of checks to run, or not (``builds`` always runs).
    """
    from mpi4py import MPI

    what = "model type" if subject.section is not None else "model factory"
    label = f"{what} {subject.type_name!r}, component {subject.name!r}"
    ranks_check = "1 vs 2 ranks agree"
    if int(ranks) < 2 or (only and ranks_check not in only) or ranks_check in skip:
        runs = "1 rank only"  # the ranks check is not asked for: no child process runs
    elif shutil.which("mpiexec") is None:
        runs = "1 rank only (no mpiexec on PATH for the run on more)"
    else:
        runs = f"1 rank (and {ranks} in a child process)"
    report = Report(f"twin check-model: {label}; {steps} steps, {runs}")
    ctx = Context(subject, MPI.COMM_SELF, max(2, int(steps)), int(ranks), float(rank_rtol))
    with tempfile.TemporaryDirectory(prefix="twin-check-") as tmp:
        ctx.workdir = Path(tmp)
        for name, check in CHECKS:
            if name != "builds" and ((only and name not in only) or name in skip):
                report.results.append(CheckResult(name, SKIP, "not asked for"))
                continue
            if name != "builds" and report.results and report.results[0].status == FAIL:
                report.results.append(CheckResult(name, SKIP, "the model does not build"))
                continue
            try:
                report.results.append(CheckResult(name, PASS, check(ctx)))
            except Failed as out:
                report.results.append(CheckResult(name, out.status, out.measured))
            except Exception as exc:  # noqa: BLE001 - a check that raises fails, with its one line (not SystemExit:
                # a signal's handler ends the command with it)
                report.results.append(CheckResult(name, FAIL, failure_line(exc)))
    return report
