"""Observations of one component of a coupled model: an operator on the component's state applied to the coupled
state through the component's block (:meth:`~twin.coupling.coupled.CoupledModel.component_view`), so that
assimilation observes a coupled twin with the operators of its components."""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.observations.base import ObservationOperator


class ComponentObservation(ObservationOperator):
    """An observation operator of one component applied to the coupled state (through the component's block).

    Parameters
    ----------
    model : CoupledModel
    component : str
    operator : ObservationOperator
        On the component's state (e.g. a :class:`~twin.observations.base.LinearObservationOperator` on its grid);
        not owned.
    """

    def __init__(self, model, component: str, operator: ObservationOperator, name: str | None = None):
        if component not in model.models:
            raise ModelError(model.name, f"observations of unknown component '{component}'; components are "
                                         f"{sorted(model.models)}")
        super().__init__(operator.error_std, operator.n_obs, operator.locations, name or f"{component}.{operator.name}")
        self.model, self.component, self.operator = model, component, operator

    def apply(self, state: PETSc.Vec) -> np.ndarray:
        view = self.model.component_view(state, self.component)
        try:
            return self.operator.apply(view)
        finally:
            self.model.restore_view(state, self.component, view)

    def apply_adjoint(self, state: PETSc.Vec, dy: np.ndarray, out: PETSc.Vec) -> None:
        view = self.model.component_view(state, self.component)
        target = self.model.component_view(out, self.component)
        try:
            self.operator.apply_adjoint(view, dy, target)
        finally:
            self.model.restore_view(out, self.component, target)
            self.model.restore_view(state, self.component, view)
