"""What a model section says about the model it builds, without building it: state variables, domain, length units,
parameters and quantities of interest (:class:`ModelMetadata`).

Every model section (:class:`twin.config.common.ModelConfigBase`) answers :meth:`~twin.config.common.ModelConfigBase
.metadata` from its own keys; :mod:`twin.config.deep` checks the rest of the campaign against it when the file is
validated, so that a wrong variable, a point outside the domain or an unknown QoI is refused by ``twin validate``
instead of after work started. ``tests/unit/test_deep_validation.py`` checks, for every shipped campaign, that the
metadata equal what the built model reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.core.box import outside_box


@dataclass(frozen=True)
class ModelMetadata:
    """A model as its section describes it.

    ``extent``: the box ``[(lo, hi), ...]`` per axis in ``length_units``; ``qois``: the names of the model's
    quantities of interest; ``exports`` and ``imports``: the names of the fields it offers to and receives from a
    coupler (:mod:`twin.config.coupling` routes); each ``None`` when the section cannot say.
    """

    type: str
    state_names: tuple[str, ...]
    extent: tuple[tuple[float, float], ...]
    length_units: str
    parameters: tuple[str, ...] = ()
    qois: tuple[str, ...] | None = None
    exports: tuple[str, ...] | None = None
    imports: tuple[str, ...] | None = None

    @property
    def dim(self) -> int:
        return len(self.extent)

    @property
    def dof(self) -> int:
        return len(self.state_names)

    def outside(self, points: np.ndarray) -> np.ndarray:
        """Indices of the ``points`` (``(m, dim)``, length units) outside the domain (:func:`twin.core.box
        .outside_box`)."""
        return np.flatnonzero(outside_box(points, self.extent))
