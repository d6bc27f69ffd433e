"""Minimisation of a 4D-Var reduced functional with PETSc TAO.

Methods: ``lmvm`` (limited-memory quasi-Newton, L-BFGS; the default for unbounded controls) and ``blmvm`` (its
bound-constrained variant, chosen automatically when a parameter control has bounds); any TAO type can be given. The
solver reads PETSc options under its prefix (``-fourdvar_tao_type``, ``-fourdvar_tao_gatol``, ``-fourdvar_tao_monitor``)
after the defaults are set, so options typed by the user win.

A trial point at which the model diverges (:class:`~twin.core.errors.SolverError`, e.g. a chaotic model pushed far off
its attractor, a forward or adjoint step that fails, or :class:`~twin.core.errors.CouplingError`, an explicit coupling
growing unstable), refuses the state it reaches (:class:`~twin.core.errors.ModelError`, e.g. a shallow-water state
whose gravity waves outrun the fixed time step, checked before a forecast), or where ``J`` or its gradient is not
finite, is given ``J = +inf``: the default More-Thuente line
search (fewest function evaluations on smooth problems) then stops with a line-search failure; :func:`minimise` then
continues from the best point evaluated so far with Armijo backtracking, which shortens the step and carries on
(unless a line search was chosen explicitly, ``-fourdvar_tao_ls_type`` or ``options={"tao_ls_type": ...}``: then the
failure is reported with the model's error).

TAO's converged reason is always checked: a negative reason (maximum iterations, line-search failure, NaN) raises
:class:`~twin.core.errors.AssimilationError` naming the reason, the iteration count and the gradient norm, or, with
``on_failure="warn"``, is logged and returned in :class:`MinimisationResult` (``converged=False``). Any other error
raised inside an objective evaluation stops TAO and is re-raised after it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from petsc4py import PETSc

from twin.core.errors import AssimilationError, CouplingError, ModelError, SolverError
from twin.core.log import get_logger
from twin.core.petsc import reason_name, set_from_options, set_options

log = get_logger(__name__)


@dataclass
class TaoSettings:
    """Settings of the minimiser (defaults; PETSc options under ``prefix`` override them).

    Attributes
    ----------
    method : str
        ``"auto"`` (``lmvm``, or ``blmvm`` when bounds exist), or a TAO type.
    gatol, grtol : float
        Absolute and relative tolerances on the gradient norm (in control space, where the background term is
        ``|c|^2 / 2``, so ``gatol`` is relative to the prior spread).
    max_iterations, max_function_evaluations : int
    prefix : str
        PETSc options prefix, e.g. ``fourdvar_`` (``-fourdvar_tao_monitor``).
    on_failure : {"raise", "warn"}
    options : dict
        Further PETSc options without the prefix (``{"tao_ls_type": "armijo"}``), as from YAML; command-line
        options win.
    """

    method: str = "auto"
    gatol: float = 1e-6
    grtol: float = 1e-10
    max_iterations: int = 200
    max_function_evaluations: int = 1000
    prefix: str = "fourdvar_"
    on_failure: str = "raise"
    options: dict = field(default_factory=dict)


@dataclass
class MinimisationResult:
    """What TAO returned.

    Attributes
    ----------
    control : PETSc.Vec
        The minimiser (owned by the caller).
    value, gradient_norm : float
        ``J`` and ``|grad J|`` at the minimiser.
    initial_value, initial_gradient_norm : float
    iterations, function_evaluations : int
    reason : str
        TAO's converged reason (``CONVERGED_GATOL``, ``DIVERGED_MAXITS`` ...).
    converged : bool
    history : list of (float, float)
        ``(J, |grad J|)`` at each objective-gradient evaluation.
    """

    control: PETSc.Vec
    value: float
    gradient_norm: float
    initial_value: float
    initial_gradient_norm: float
    iterations: int
    function_evaluations: int
    reason: str
    converged: bool
    history: list = field(default_factory=list)


def _petsc_message(exc: PETSc.Error) -> str:
    """The last line of PETSc's error stack (what went wrong), or the error code."""
    stack = getattr(PETSc.Error, "_traceback_", None) or []
    return str(stack[-1]) if stack else f"error code {exc.ierr}"


def minimise(functional, c0: PETSc.Vec | None = None, settings: TaoSettings | None = None) -> MinimisationResult:
    """Minimise ``functional`` (with ``value``/``gradient``/``create_control``/``space``) from ``c0`` with TAO.

    Parameters
    ----------
    functional : FourDVar
    c0 : PETSc.Vec, optional
        Starting control (copied); default zero, i.e. the background.
    settings : TaoSettings, optional

    Returns
    -------
    MinimisationResult

    Raises
    ------
    AssimilationError
        If TAO does not converge and ``settings.on_failure == "raise"``, or the settings are invalid.
    """
    s = settings or TaoSettings()
    if s.on_failure not in ("raise", "warn"):
        raise AssimilationError(f"TAO on_failure must be 'raise' or 'warn', got {s.on_failure!r}")
    for label, v in (("gatol", s.gatol), ("grtol", s.grtol)):
        if not (np.isfinite(v) and v >= 0):
            raise AssimilationError(f"TAO {label} must be non-negative, got {v}")
    if s.max_iterations < 1 or s.max_function_evaluations < 1:
        raise AssimilationError("TAO max_iterations and max_function_evaluations must be >= 1")
    bounds = functional.space.bounds()
    method = s.method
    if method == "auto":
        method = "blmvm" if bounds is not None else "lmvm"
    elif bounds is not None and method == "lmvm":
        raise AssimilationError("parameter bounds need a bound-constrained TAO method (blmvm), not lmvm")

    x = functional.create_control()
    if c0 is not None:
        c0.copy(x)
    g = x.duplicate()
    history: list[tuple[float, float]] = []
    failure: list[BaseException] = []

    diverged: list[Exception] = []
    # the evaluated point with the least finite J: where the Armijo restart starts, so that it never starts where J
    # is not finite (TAO stops with "User provided compute function generated Inf or NaN" there)
    best = x.duplicate()
    x.copy(best)
    best_value = [np.inf]

    def objgrad(tao, X, G):
        try:
            f = functional.gradient(X, G)
            gnorm = G.norm()
            if not (np.isfinite(f) and np.isfinite(gnorm)):
                raise SolverError(functional.name, float("nan"),
                                  f"J = {f:.6g}, |grad J| = {gnorm:.6g} at a trial point (not finite)")
        except (SolverError, CouplingError, ModelError) as exc:
            # A trial point where the model (or an explicit coupling) diverges or refuses the state it reaches, or J
            # or its gradient is not finite, is rejected: +inf makes a backtracking line search shorten the step (More-Thuente gives up instead;
            # see the module docstring).
            diverged.append(exc)
            G.set(0.0)
            return np.inf
        except Exception as exc:  # noqa: BLE001 - petsc4py would swallow it; re-raised after solve
            failure.append(exc)
            G.set(np.nan)
            return np.nan
        history.append((f, gnorm))
        if f < best_value[0]:
            best_value[0] = f
            X.copy(best)
        return f

    def solve(start: PETSc.Vec, line_search: str | None) -> tuple:
        tao = PETSc.TAO().create(comm=functional.comm)
        tao.setOptionsPrefix(s.prefix)
        tao.setType(method)
        tao.setObjectiveGradient(objgrad, g)
        tao.setSolution(start)
        tao.setTolerances(gatol=s.gatol, grtol=s.grtol, gttol=0.0)
        tao.setMaximumIterations(s.max_iterations)
        tao.setMaximumFunctionEvaluations(s.max_function_evaluations)
        if bounds is not None:
            tao.setVariableBounds(bounds)
        set_options(s.prefix, s.options)
        opts = PETSc.Options()
        if line_search is not None:  # petsc4py 3.18 has no TaoLineSearch object: through the database, then gone
            opts.setValue(f"{s.prefix}tao_ls_type", line_search)
        try:
            set_from_options(tao)
            try:
                tao.solve()
            except PETSc.Error as exc:
                if failure:
                    raise failure[0] from None
                last = (f"; the model diverged at {len(diverged)} trial point(s), last: {diverged[-1]}"
                        if diverged else "")
                raise AssimilationError(f"{functional.name}: TAO {method} stopped with PETSc error {exc.ierr} "
                                        f"({_petsc_message(exc)}){last}") from None
            iterations, value, gnorm = tao.getSolutionStatus()[:3]
            return iterations, value, gnorm, tao.getConvergedReason(), tao.getSolution().copy()
        finally:
            if line_search is not None:
                opts.delValue(f"{s.prefix}tao_ls_type")
            tao.destroy()

    try:
        iterations, value, gnorm, reason_code, out = solve(x, None)
        ls_failure = reason_code == PETSc.TAO.Reason.DIVERGED_LS_FAILURE
        user_ls = "tao_ls_type" in s.options or PETSc.Options().hasName(f"{s.prefix}tao_ls_type")
        if ls_failure and diverged and not failure and not user_ls:
            # More-Thuente gives up at the first trial point where the model diverges (J = inf); Armijo
            # backtracking shortens the step instead. Carry on from where the first attempt stopped.
            log.info("%s: the model diverged at a trial point of the line search (%s); continuing with Armijo "
                     "backtracking", functional.name, diverged[-1])
            first = iterations
            if not np.isfinite(best_value[0]):
                raise AssimilationError(f"{functional.name}: the model diverged at the starting point of the "
                                        f"minimisation ({diverged[-1]}); check the background and its parameters")
            iterations, value, gnorm, reason_code, again = solve(best, "armijo")
            out.destroy()
            out = again
            iterations += first
    finally:
        g.destroy()
        x.destroy()
        best.destroy()
        if bounds is not None:
            for b in bounds:
                b.destroy()
    if failure:
        out.destroy()
        raise failure[0]
    reason = reason_name(PETSc.TAO.Reason, reason_code)
    result = MinimisationResult(out, value, gnorm, history[0][0] if history else value,
                                history[0][1] if history else gnorm, iterations, len(history) + len(diverged), reason,
                                reason_code > 0, history)
    if reason_code <= 0:
        msg = (f"{functional.name}: TAO {method} did not converge: {reason} after {iterations} iterations, "
               f"J = {value:.6g}, |grad J| = {gnorm:.3g} (initial {result.initial_gradient_norm:.3g}); raise "
               f"-{s.prefix}tao_max_it or loosen -{s.prefix}tao_gatol")
        if diverged:
            msg += f"; the model diverged at {len(diverged)} trial point(s), last: {diverged[-1]}"
        if s.on_failure == "raise":
            out.destroy()
            raise AssimilationError(msg)
        log.warning(msg)
    else:
        log.debug("%s: TAO %s %s in %d iterations, J %.6g -> %.6g, |g| %.3g -> %.3g", functional.name, method,
                  reason, iterations, result.initial_value, value, result.initial_gradient_norm, gnorm)
    return result
