"""The restart check (:mod:`twin.conformance.kit`): what resuming a campaign, and an ensemble forecast whose members
run on whichever model instance is free, rely on.

From one serial run ``t0 -> t2`` and checkpoints written at ``t1``, in this order (the first that does not hold is the
check's one FAIL line, naming the model and what to change):

1. **resumed**: ``t0 -> t1``, checkpoint, a fresh model ``t1 -> t2`` equals ``t0 -> t2`` in one model, bitwise;
2. **the state reaches the forecast**: a fresh model restarted from a checkpoint of a *perturbed* state forecasts
   something else than from the unperturbed one (else the state it is given is not the state it forecasts from: a
   BMI whose ``set_value`` does nothing; a model that keeps its own copy); with several state components, each
   component perturbed alone changes the forecast;
3. **the parameters reach the forecast**: each estimable parameter perturbed alone changes the forecast;
4. **no hidden state**: from that perturbed checkpoint, a fresh model and a model that first ran another history to
   ``t1`` (a perturbed initial state and perturbed parameters) forecast bitwise the same. A model that keeps
   prognostic variables outside its state vector (a velocity, a soil store, a multistep history) fails here: in a
   campaign members continue on instances other members used (online) or on fresh ones (workflow), and the two would
   differ.

Perturbations shrink each value by a random fraction of at most :data:`PERTURBATION` (signs, zeros and bounds such as
a density in [0, 1] or a positive depth are kept; an all-zero component gets that much added instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from twin.conformance.base import Context, _fail, _g, _model, _run, _whole, _whole_param
from twin.models import contract

#: relative size of the kit's perturbations of a state or a parameter (large enough to change any forecast that
#: depends on them, small enough to stay where the model is valid)
PERTURBATION = 1e-2


def _write(model, path: Path, state, t: float) -> None:
    from twin.io.checkpoint import write_checkpoint

    params = {}
    for p in model.parameters.values():
        params[p.name] = (model.parameter_grid(p.name), p.value) if p.is_field else float(p.value)
    write_checkpoint(path, model.comm, cycle=0, time=t, fields={model.name: (model.grid, state)},
                     parameters=params, parallel=False)


def _read(model, path: Path):
    """The state of the checkpoint as a new vector; its parameters set into ``model``."""
    from twin.io.checkpoint import CheckpointReader

    vec = model.create_state()
    with CheckpointReader(path, model.comm) as r:
        r.load(model.name, model.grid, vec)
        scalars = r.scalar_parameters
        for p in list(model.parameters.values()):
            if p.is_field:
                pv = model.parameter_grid(p.name).create_global()
                try:
                    r.load(p.name, model.parameter_grid(p.name), pv, group="parameters")
                    model.set_parameter(p.name, pv)
                finally:
                    pv.destroy()
            else:
                model.set_parameter(p.name, scalars[p.name])
    return vec


def _perturbed(values: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """``values`` each shrunk by a random fraction of at most :data:`PERTURBATION` (all zero: that much added)."""
    u = gen.random(values.shape)
    out = values * (1.0 - PERTURBATION * u)
    return out if not np.array_equal(out, values) else values + PERTURBATION * u


def _perturbed_state(whole: np.ndarray, dof: int, gen: np.random.Generator, component: int | None = None):
    """The natural-order state ``whole`` (components interleaved) with every component perturbed, or only one."""
    out = whole.reshape(-1, dof).copy()
    for j in range(dof) if component is None else (component,):
        out[:, j] = _perturbed(out[:, j], gen)
    return out.ravel()


def _estimable_values(model) -> dict[str, Any]:
    return {p.name: (_whole_param(model, p) if p.is_field else float(p.value)) for p in model.estimable()}


def _set(model, values: dict[str, Any]) -> None:
    from twin.assimilation.cycle import set_parameter_natural

    for name, value in values.items():
        set_parameter_natural(model, name, value)


def _perturbed_parameters(base: dict[str, Any], gen: np.random.Generator) -> dict[str, Any]:
    return {name: (_perturbed(np.asarray(v, dtype=float), gen) if np.ndim(v) else
                   float(_perturbed(np.array([v]), gen)[0])) for name, v in base.items()}


def _who(model) -> str:
    """The model as the FAIL line names it: the component, and the class a BMI model runs."""
    cls = getattr(model, "cls_path", None)
    return f"model {model.name!r}" + (f" (BMI {cls})" if cls else "")


def _setter(model) -> str:
    return "its set_value ignored?" if getattr(model, "cls_path", None) else \
        "does advance start from the state it is given?"


def _forecast(model, whole: np.ndarray, t0: float, t1: float) -> np.ndarray:
    out = _run(model, whole, t0, t1)
    contract.finite_advance(model, whole, out, t0, t1)  # NaN without a SolverError: the contract's line
    return out


def _resumed(model, path: Path, t1: float, t2: float) -> np.ndarray:
    """The whole state ``model`` forecasts to ``t2`` from the checkpoint ``path`` (its state and parameters at ``t1``)."""
    y = _read(model, path)
    try:
        model.advance(y, t1, t2)
        return _whole(model, y)
    finally:
        y.destroy()


def _bitwise(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else np.inf


def check_restart(ctx: Context) -> str:
    path, moved = ctx.workdir / "restart.h5", ctx.workdir / "perturbed.h5"
    gen = np.random.default_rng(3)
    t0, t1, t2 = ctx.t0, ctx.t1, ctx.t2
    with _model(ctx) as model:
        x = model.initial_state()
        try:
            x0 = _whole(model, x)
            model.advance(x, t0, t2)
            straight = _whole(model, x)
            contract.finite_advance(model, x0, straight, t0, t2)  # NaN without a SolverError
        finally:
            x.destroy()
    with _model(ctx) as first:
        dof = first.grid.dof
        names = list(getattr(first, "state_names", ())) if len(getattr(first, "state_names", ())) == dof else \
            [f"component {j}" for j in range(dof)]
        x = first.initial_state()
        try:
            first.advance(x, t0, t1)
            x1 = _whole(first, x)
            _write(first, path, x, t1)
            x1p = _perturbed_state(x1, dof, gen)
            first.grid.set_global(x1p, x)
            _write(first, moved, x, t1)
        finally:
            x.destroy()

    # 1. resumed from the checkpoint: the uninterrupted run's numbers
    with _model(ctx) as second:
        resumed = _resumed(second, path, t1, t2)
    ctx.final = straight
    diff = float(np.max(np.abs(straight - resumed)))
    scale = float(np.max(np.abs(straight))) or 1.0
    if not (diff == 0.0 and np.array_equal(np.isnan(straight), np.isnan(resumed))):
        raise _fail(f"max |difference| {_g(diff)} (relative {_g(diff / scale)}) between {_g(t0)} -> "
                    f"{_g(t1)}, checkpoint, a fresh model -> {_g(t2)} and one run {_g(t0)} -> "
                    f"{_g(t2)}: a resumed campaign would differ from an uninterrupted one")

    # 2. and 3. a perturbed state, each component and each estimable parameter change the forecast
    with _model(ctx) as fresh:
        from_moved = _resumed(fresh, moved, t1, t2)
        contract.finite_advance(fresh, x1p, from_moved, t1, t2)
        if _bitwise(from_moved, resumed):
            raise _fail(f"{_who(fresh)}: restarted at t={_g(t1)} from a state perturbed by up to "
                        f"{PERTURBATION:g} (relative), it forecasts bitwise what it forecasts from the unperturbed "
                        f"state: the state given to the model is not the state it forecasts from ({_setter(fresh)}); "
                        "every analysis would be thrown away")
        for j in range(dof) if dof > 1 else ():
            one = _forecast(fresh, _perturbed_state(x1, dof, gen, component=j), t1, t2)
            if _bitwise(one, resumed):
                raise _fail(f"{_who(fresh)}: state variable {names[j]!r} perturbed alone at t={_g(t1)} does not "
                            f"change the forecast to t={_g(t2)}: the model does not forecast from the "
                            f"{names[j]!r} it is given ({_setter(fresh)}); its analysis would be thrown away")
        base = _estimable_values(fresh)
        for name in base:
            _set(fresh, _perturbed_parameters({name: base[name]}, gen))
            try:
                one = _forecast(fresh, x1p, t1, t2)  # from the perturbed state: x1 may be a rest state
            finally:
                _set(fresh, {name: base[name]})
            if _bitwise(one, from_moved):
                raise _fail(f"{_who(fresh)}: estimable parameter {name!r} perturbed by up to {PERTURBATION:g} "
                            f"(relative) does not change the forecast {_g(t1)} -> {_g(t2)}: the value given to the "
                            "model does not reach its forecast (set_parameter/parameters_changed, or a BMI's "
                            "set_value of it, ignored?); nothing can be learnt about it")

    # 4. the same restart on a model that ran another history first: no state outside the state vector
    with _model(ctx) as used:
        _set(used, _perturbed_parameters(_estimable_values(used), gen))
        other = _perturbed_state(x0, dof, gen)
        _forecast(used, other, t0, t1)  # its history: another state and other parameters up to t1
        after_history = _resumed(used, moved, t1, t2)  # the checkpoint's state and parameters
    if not _bitwise(after_history, from_moved):
        d = _max_diff(after_history, from_moved)
        raise _fail(f"{_who(used)}: restarted from one checkpoint at t={_g(t1)}, a model that first ran another "
                    f"history to t={_g(t1)} (a perturbed state and parameters) forecasts differently from a fresh one "
                    f"(max |difference| {_g(d)} at t={_g(t2)}): it keeps prognostic state the state vector does not "
                    "hold (hidden state), so members differ by the instance that runs them and online and workflow "
                    "runs differ; hold every prognostic variable in the state (BMI: list it in state:) or reset it "
                    "in advance")
    what = "a perturbed state" + (f" (each of its {dof} components)" if dof > 1 else "") + \
        (f" and each of {len(base)} estimable parameters" if len(base) > 1 else
         " and the estimable parameter" if base else "")
    return (f"max |difference| 0 between a run resumed from a checkpoint at t={_g(t1)} and one run, and after "
            f"another history (no hidden state); the forecast changes with {what}")
