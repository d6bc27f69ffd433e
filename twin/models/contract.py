"""Checks of the model contract (:mod:`twin.models.base`) where twin receives what a model produced.

A model class that is not twin's own (a plugin's, a class named by import path) may break the contract: ``from_config``
returns something that is not a model, ``initial_state`` a NumPy array instead of a PETSc vector, ``qoi`` a string, or
one of its methods raises an error of its own (``KeyError``). Without a check these surface far from their cause, as
``'int' object has no attribute 'destroy'``. The checks here run once where the object is produced and say, in one
line (:class:`ContractError`), the component, the method and what the contract expects:

* :func:`checked_model` — what ``from_config`` returned (:func:`twin.models.registry.create_model`);
* :func:`initial_state` — ``model.initial_state()``: a PETSc vector laid out as ``create_state()``'s;
* :func:`qoi` — ``model.qoi(state, t)``: a mapping of QoI name to :class:`~twin.models.base.QoI`;
* :func:`attributed` — around a stretch of twin's code that calls model methods (the nature run, the finalisation):
  an error that is not twin's own (an ``Exception``) and was raised inside a model method becomes one line naming
  the component and the method with its window (``advance(t=0.2 -> 0.3) raised KeyError: 'missing'``);
  :func:`describe` gives that line for an exception already caught (the conformance kit).

Twin's own errors (:class:`~twin.core.errors.TwinError`: a solver's failure, bad input) pass unchanged, and so do
errors raised outside a model's methods.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from twin.config.messages import short
from twin.core.errors import ModelError, TwinError

#: the methods of the contract that twin calls, whose frames name the method in :func:`describe`
METHODS = ("initial_state", "advance", "advance_ensemble", "record", "adjoint", "adjoint_recorded",
           "export_adjoint", "qoi", "exports", "set_import", "set_parameter", "get_parameter", "parameters_changed",
           "create_state", "destroy")


class ContractError(ModelError):
    """A model broke the model contract (:mod:`twin.models.base`): what it returned is not what twin needs, or one
    of its methods raised an error of its own. The message names the component (and its type where no model was
    built), the method and what the contract expects."""

    def __init__(self, component: str, message: str, type_name: str = ""):
        self.component = component
        TwinError.__init__(self, f"model '{component}'{f' ({type_name})' if type_name else ''}: {message}")


def _type_of(obj: Any) -> str:
    cls = type(obj)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _raised(exc: BaseException) -> str:
    """``raised KeyError: 'missing'`` (one line, at most about 300 characters)."""
    from petsc4py import PETSc

    if isinstance(exc, PETSc.Error):
        from twin.models.base import _petsc_error

        text = f"raised {_petsc_error(exc)}"
    else:
        said = " ".join(str(exc).split())
        text = f"raised {type(exc).__name__}" + (f": {said}" if said else "")
    if len(text) > 300:
        text = text[:297] + "..."
    if isinstance(exc, RecursionError):
        text += " (the method calls itself without end: call super()'s method, or the solver, instead)"
    return text


# -- from_config ---------------------------------------------------------------------------------------------------
def checked_model(obj: Any, name: str, type_name: str):
    """``obj``, what ``from_config(name, section, comm)`` of model type ``type_name`` returned, when it is a
    :class:`~twin.models.base.Model`; else :class:`ContractError`."""
    from twin.models.base import Model

    if not isinstance(obj, Model):
        raise ContractError(name, f"from_config returned {_type_of(obj)}, not a twin model (a "
                                  "twin.models.base.Model): return the built model", type_name)
    names, units = getattr(obj, "state_names", None), getattr(obj, "state_units", None)
    if not (isinstance(names, (tuple, list)) and names and all(isinstance(n, str) and n for n in names)):
        raise ContractError(name, f"state_names is {short(names)}, not a tuple of the state variables' names "
                                  "(one or more, e.g. ('x', 'y', 'z')): the outputs and observations name them",
                            type_name)
    if not (isinstance(units, (tuple, list)) and len(units) == len(names)):
        raise ContractError(name, f"state_units is {short(units)}, not a tuple of one unit per state variable "
                                  f"({len(names)}: {', '.join(names)})", type_name)
    return obj


def from_config_error(exc: BaseException, name: str, type_name: str) -> ContractError:
    """The one line for an error of its own that ``from_config`` raised (not twin's)."""
    return ContractError(name, f"from_config {_raised(exc)}", type_name)


# -- initial_state -------------------------------------------------------------------------------------------------
def initial_state(model):
    """``model.initial_state()`` checked: a new PETSc vector laid out as the model's states are (``create_state()``:
    its global size, and this rank's block of it); an error of the model's own inside it is one line naming the method (:class:`ContractError`).
    Collective (as ``initial_state`` is)."""
    from petsc4py import PETSc

    with attributed():
        x = model.initial_state()
    if not isinstance(x, PETSc.Vec):
        raise ContractError(model.name, f"initial_state() returned {_type_of(x)}, not a PETSc Vec of the model's "
                                        "grid: return a new vector (self.create_state() or self.grid.create_global()) "
                                        "holding the initial condition")
    # the layout the model itself gives its states (a coupled system's or a BMI model's is not its grid's)
    ref = model.create_state()
    want, local = int(ref.getSize()), int(ref.getLocalSize())
    ref.destroy()
    size, got_local = int(x.getSize()), int(x.getLocalSize())
    if size != want or got_local != local:
        x.destroy()
        what = f"{size} entries" if size != want else f"{got_local} entries on this rank (the state's block: {local})"
        raise ContractError(model.name, f"initial_state() returned a vector of {what}, not a state of the model "
                                        f"({want} entries, as create_state() makes): create it with "
                                        "self.create_state() or self.grid.create_global()")
    return x


# -- qoi -----------------------------------------------------------------------------------------------------------
def qoi(model, state, t: float) -> dict:
    """``model.qoi(state, t)`` checked: a mapping of QoI name (str) to :class:`~twin.models.base.QoI` (a float
    ``value``, ``units``, ``long_name``); an error of the model's own inside it is one line naming the method
    (:class:`ContractError`). Collective (as ``qoi`` is)."""
    from twin.models.base import QoI

    with attributed():
        q = model.qoi(state, t)
    expects = ("a mapping of QoI name to twin.models.base.QoI (value: float, units, long_name)")
    how = "return e.g. {'energy': QoI(value, '1')}, or {} for none"
    if not isinstance(q, Mapping):
        raise ContractError(model.name, f"qoi(t={t:g}) returned {_type_of(q)}, not {expects}: {how}")
    for name, value in q.items():
        if not isinstance(name, str):
            raise ContractError(model.name, f"qoi(t={t:g}) returned a key {name!r} ({_type_of(name)}), not a QoI "
                                            f"name (str): it must return {expects}: {how}")
        if not isinstance(value, QoI):
            raise ContractError(model.name, f"qoi(t={t:g}) returned {_type_of(value)} for {name!r}, not a "
                                            f"twin.models.base.QoI (value: float, units, long_name): {how}")
        try:
            number = float(value.value)
        except (TypeError, ValueError):
            raise ContractError(model.name, f"qoi(t={t:g}) returned QoI {name!r} with value {value.value!r} "
                                            f"({_type_of(value.value)}), not a number: {how}") from None
        if not math.isfinite(number):  # a NaN went through the posterior into decision.json and broke the report
            raise ContractError(model.name, f"qoi(t={t:g}) returned QoI {name!r} with the value {number}, not a "
                                            "finite number: when it cannot compute one, qoi must raise "
                                            "twin.core.errors.ModelError saying why")
    return dict(q)


# -- advance -------------------------------------------------------------------------------------------------------
def finite_advance(model, before: np.ndarray, after: np.ndarray, t0: float, t1: float, where: str = "") -> None:
    """:class:`ContractError` when ``advance`` over ``[t0, t1]`` turned the finite whole state(s) ``before`` into
    ``after`` with non-finite entries without raising: a model whose solve fails raises
    :class:`~twin.core.errors.SolverError` (the contract of :meth:`~twin.models.base.Model.advance`), which the
    campaigns handle (retries, dropping a member). States that were not finite before are not judged."""
    if not np.all(np.isfinite(before)):
        return
    _refuse_non_finite(model, int(np.count_nonzero(~np.isfinite(after))), np.size(after), t0, t1, where)


def finite_forecast(model, before: np.ndarray, after, t0: float, t1: float, where: str = "") -> None:
    """:func:`finite_advance` for a forecast held in a PETSc Vec ``after`` distributed over the model's ranks (each
    rank counts its own entries; collective on the Vec's communicator), from the whole state ``before`` (the same on
    every rank). A member's forecast that breaks the contract this way is a failed member (:class:`ContractError` is
    a :class:`~twin.core.errors.ModelError`: retried, then dropped or stopping the experiment as the campaign's
    ``on_member_failure`` says), not a NaN in the analysis."""
    if not np.all(np.isfinite(before)):
        return
    local = int(np.count_nonzero(~np.isfinite(after.getArray(readonly=True))))
    bad = after.getComm().tompi4py().allreduce(local) if after.getComm().getSize() > 1 else local
    _refuse_non_finite(model, bad, after.getSize(), t0, t1, where)


def _refuse_non_finite(model, bad: int, size: int, t0: float, t1: float, where: str) -> None:
    if bad:
        raise ContractError(model.name, f"advance(t={t0:g} -> {t1:g}) left {bad} non-finite value(s) of "
                                        f"{size} in the state without raising"
                                        + (f" (in {where})" if where else "") + ": when its solve fails, advance "
                                        "must raise twin.core.errors.SolverError naming the time and the reason")


# -- errors raised inside model methods ----------------------------------------------------------------------------
def _window(method: str, local: Mapping) -> str:
    def num(v):
        try:
            return f"{float(v):g}"
        except (TypeError, ValueError):
            return repr(v)

    if "t0" in local and "t1" in local:
        return f"{method}(t={num(local['t0'])} -> {num(local['t1'])})"
    if method == "qoi" and "t" in local:
        return f"qoi(t={num(local['t'])})"
    if method in ("set_parameter", "get_parameter") and "name" in local:
        return f"{method}({local['name']!r})"
    return f"{method}()"


def describe(exc: BaseException, where: str = "") -> ContractError | None:
    """For an error that is not twin's own, raised inside a method of a model's contract (:data:`METHODS`): the
    :class:`ContractError` naming the component, the method (with its window) and the error; ``None`` for twin's
    own errors and errors raised elsewhere. ``where``: what twin was doing (``"the nature run"``), appended."""
    from twin.models.base import Model

    if isinstance(exc, TwinError) or not isinstance(exc, (Exception, GeneratorExit)):
        return None  # SystemExit too: a signal's handler may raise it (twin check-model), the driver reports it
    found = None
    tb = exc.__traceback__
    # the innermost model method: a coupled model calls its components' (the one that broke), a model's advance
    # its record, and twin's helpers on the way (run_fixed) are not contract methods
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in METHODS and isinstance(frame.f_locals.get("self"), Model):
            found = frame
        tb = tb.tb_next
    if found is None:
        return None
    model = found.f_locals["self"]
    text = f"{_window(found.f_code.co_name, found.f_locals)} {_raised(exc)}"
    return ContractError(getattr(model, "name", "?"), text + (f" (in {where})" if where else ""))


@contextlib.contextmanager
def attributed(where: str = "") -> Iterator[None]:
    """Errors other than twin's raised inside a model's method in the block become one line naming the component
    and the method (:func:`describe`); everything else passes unchanged."""
    try:
        yield
    except (Exception, GeneratorExit) as exc:  # noqa: BLE001 - re-raised, named
        named = describe(exc, where)
        if named is None:
            raise
        raise named from exc
