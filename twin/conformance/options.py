"""The options-prefix check: solver options under ``<name>_`` reach the model's solvers, options without the
prefix are not read (:mod:`twin.conformance.kit`)."""

from __future__ import annotations

import contextlib

from twin.conformance.base import Context, _fail, _model, _skip

#: an option value no PETSc type has
UNKNOWN_TYPE = "twin_check_unknown_type"
SOLVER_KEYS = ("ts_type", "snes_type", "ksp_type", "pc_type")


def _solver_objects(model) -> list:
    """PETSc solvers (TS, SNES, KSP, TAO) the model holds, directly or two levels down its attributes."""
    from petsc4py import PETSc

    kinds = tuple(k for k in (getattr(PETSc, n, None) for n in ("TS", "SNES", "KSP", "TAO")) if k is not None)
    found, seen, todo = [], set(), [model]
    for _ in range(3):
        nxt = []
        for obj in todo:
            values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
            for v in values:
                items = v if isinstance(v, (list, tuple)) else list(v.values()) if isinstance(v, dict) else [v]
                for item in items:
                    if isinstance(item, kinds):
                        found.append(item)
                    elif hasattr(item, "__dict__") and not isinstance(item, (PETSc.Object, type)) \
                            and id(item) not in seen:
                        seen.add(id(item))
                        nxt.append(item)
        todo = nxt
    return found


@contextlib.contextmanager
def _global_options(values: dict[str, str]):
    """Options without a prefix in the PETSc database for the duration (removed after, also on error)."""
    from petsc4py import PETSc

    opts = PETSc.Options()
    before = {k: opts.getString(k) if opts.hasName(k) else None for k in values}
    for k, v in values.items():
        opts.setValue(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                opts.delValue(k)
            else:
                opts.setValue(k, v)


def check_options_prefix(ctx: Context) -> str:
    from petsc4py import PETSc

    bogus = {k: UNKNOWN_TYPE for k in SOLVER_KEYS}
    prefix = f"{ctx.subject.name}_"
    refused = None
    try:
        with _model(ctx, solver=bogus) as model:
            x = model.initial_state()
            try:
                model.advance(x, ctx.t0, ctx.t1)
            finally:
                x.destroy()
            solvers = _solver_objects(model)
    except Exception as exc:  # noqa: BLE001 - any refusal of the unknown types is what is checked for
        refused = exc
    finally:
        from twin.core.petsc import clear_options

        clear_options(prefix)  # also when the model did not build far enough to destroy itself
    if refused is None:
        if not solvers:
            raise _skip(f"the model holds no PETSc solver (TS, SNES, KSP, TAO): nothing reads -{prefix}* options")
        keys = ", ".join(f"-{prefix}{k}" for k in SOLVER_KEYS)
        raise _fail(f"unknown types for {keys} were not refused: its solvers do not read the options under its "
                    f"prefix {prefix!r} (call setOptionsPrefix before setFromOptions)")
    from twin.models import contract

    own = contract.describe(refused)  # the model's own error (a KeyError in advance), not a refusal of the options
    if own is not None:
        raise _fail(str(own))
    how = f"PETSc error {refused.ierr}" if isinstance(refused, PETSc.Error) else type(refused).__name__
    try:
        with _global_options(bogus):
            with _model(ctx) as model:
                x = model.initial_state()
                try:
                    model.advance(x, ctx.t0, ctx.t1)
                finally:
                    x.destroy()
    except Exception as exc:  # noqa: BLE001
        own = contract.describe(exc)
        if own is not None:  # the model's own error, whatever the options
            raise _fail(str(own)) from None
        raise _fail(f"unknown types for -{', -'.join(SOLVER_KEYS)} (no prefix) stopped the model "
                    f"({type(exc).__name__}): one of its solvers has no options prefix; give each the prefix "
                    f"{prefix!r}") from None
    return f"unknown -{prefix}ts_type etc. refused ({how}); the same options without the prefix ignored"
