"""The adjoint check: a Taylor test of ``J = |x(t2)|^2 / 2`` in the initial state and the estimable parameters,
whose remainder must fall as ``h^2`` (:mod:`twin.conformance.kit`)."""

from __future__ import annotations

import numpy as np

from twin.conformance.base import (
    Context,
    _fail,
    _g,
    _model,
    _run,
    _skip,
    _whole,
    _whole_param,
)


def _has_adjoint(model) -> bool:
    from twin.models.base import Model

    return type(model).adjoint is not Model.adjoint


class _Functional:
    """``J(c) = |x(t2)|^2 / 2`` over ``c = [x(t0); estimable parameters]`` as sequential PETSc vectors, the face
    :func:`twin.assimilation.verify.taylor_rates` asks of a 4D-Var cost."""

    def __init__(self, model, t0: float, t2: float, names: list[str], sizes: list[int]):
        self.model, self.t0, self.t2, self.names, self.sizes = model, t0, t2, names, sizes
        self.n = model.grid.size * model.grid.dof

    def _split(self, c) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        a = c.getArray(readonly=True)
        out, off = {}, self.n
        for name, size in zip(self.names, self.sizes):
            out[name] = a[off:off + size].copy()
            off += size
        return a[:self.n].copy(), out

    def _set(self, params: dict[str, np.ndarray]) -> None:
        from twin.assimilation.cycle import set_parameter_natural

        for name, v in params.items():
            set_parameter_natural(self.model, name, v if v.size > 1 or self.model.parameters[name].is_field
                                  else float(v[0]))

    def value(self, c) -> float:
        x0, params = self._split(c)
        self._set(params)
        x = _run(self.model, x0, self.t0, self.t2)
        return 0.5 * float(x @ x)

    def gradient(self, c, g) -> float:
        model = self.model
        x0, params = self._split(c)
        self._set(params)
        start = model.grid.set_global(x0, model.create_state())
        lam = start.copy()
        try:
            model.advance(lam, self.t0, self.t2)  # lam = x(t2) = dJ/dx(t2)
            xT = _whole(model, lam)
            grads = model.adjoint(start, self.t0, self.t2, lam, self.names)
            parts = [_whole(model, lam)]
            for name in self.names:
                d = grads[name]
                if hasattr(d, "getArray"):
                    parts.append(np.asarray(model.parameter_grid(name).allgather(d), dtype=float).ravel())
                    d.destroy()
                else:
                    parts.append(np.atleast_1d(float(d)))
        finally:
            start.destroy()
            lam.destroy()
        g.getArray()[...] = np.concatenate(parts)
        return 0.5 * float(xT @ xT)


def check_adjoint(ctx: Context) -> str:
    from petsc4py import PETSc

    from twin.assimilation.verify import taylor_rates
    from twin.core.errors import ModelError

    with _model(ctx) as model:
        if not _has_adjoint(model):
            raise _skip(f"model type {model.type_name!r} has no adjoint (4D-Var refuses it; the ensemble methods "
                        "need none)")
        names = [p.name for p in model.estimable()]
        x = model.initial_state()
        try:
            x0 = _whole(model, x)
        finally:
            x.destroy()
        p0 = [(_whole_param(model, model.parameters[n]) if model.parameters[n].is_field
               else np.array([float(model.parameters[n].value)])) for n in names]
        fn = _Functional(model, ctx.t0, ctx.t2, names, [v.size for v in p0])
        gen = np.random.default_rng(3)
        scale = float(np.sqrt(np.mean(x0 ** 2))) or 1.0
        directions = [0.05 * scale * gen.standard_normal(x0.size)]
        # parameters: 5 % of their size (of 1 where they are 0), so that no step leaves their domain
        directions += [0.05 * np.where(v != 0, np.abs(v), 1.0) * gen.standard_normal(v.size) for v in p0]
        c = PETSc.Vec().createWithArray(np.concatenate([x0, *p0]), comm=PETSc.COMM_SELF)
        dc = PETSc.Vec().createWithArray(np.concatenate(directions), comm=PETSc.COMM_SELF)
        try:
            rates, res = taylor_rates(fn, c, dc)
        except ModelError as exc:
            raise _fail(f"the adjoint raised: {exc}") from None
        finally:
            c.destroy()
            dc.destroy()
    what = "the initial state" + (f" and {', '.join(names)}" if names else "")
    text = f"rates {' '.join(f'{r:.2f}' for r in rates)} (remainders {_g(res[0])} .. {_g(res[-1])}) for {what}"
    if not np.all(np.isfinite(rates)) or rates.min() <= 1.9:
        raise _fail(text + ": the gradient is not the derivative (rate 2 expected, 1 means a wrong adjoint)")
    return text
