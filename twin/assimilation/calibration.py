"""Parameter calibration of a model over a time window by ES-MDA: the glue between the model contract and
:mod:`twin.assimilation.esmda`.

Given estimable parameters ``p`` (scalars and fields) with priors, observations ``y_k = H_k(x(t_k)) + e_k``,
``e_k ~ N(0, R_k)``, ``R_k = diag(error_std_k^2)``, at times ``t0 <= t_1 < ... <= t1`` of one model run from the
model's initial state, the forward map of ES-MDA is::

    g(m) = [H_1(x(t_1; p)), ..., H_K(x(t_K; p))],      m = T(p)

with ``T`` each parameter's transform (``log`` for positive quantities, ``logit`` for (0, 1); see
:mod:`twin.assimilation.transforms`), so every posterior member respects the bounds (a positive ``k(x)`` stays
positive). Members are run one after the other on the model's own communicator (domain decomposition inside each run);
each rank holds its owned block of every field and all the scalars of every member, and the ES-MDA update (a linear
combination of members with the same coefficients on every rank) is applied blockwise without gathering the fields.
Prior draws are made on whole fields in natural order (:func:`twin.models.priors.sample_prior`), so the result does
not depend on the number of ranks. Each iteration is :meth:`twin.assimilation.esmda.ESMDA.update`, the one an ES-MDA
campaign runs (:func:`twin.campaign.smoother.update`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from twin.assimilation.esmda import ESMDA
from twin.assimilation.fourdvar import Observation
from twin.assimilation.inflation import Inflation
from twin.assimilation.transforms import forward, inverse
from twin.core.errors import AssimilationError, SolverError
from twin.core.log import get_logger
from twin.core.units import convert
from twin.models.base import Model
from twin.models.priors import sample_prior

log = get_logger(__name__)


def draw_prior(model: Model, names: Sequence[str], n_members: int, rng: np.random.Generator,
               prior_units: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Draw ``n_members`` values of each named parameter from its prior (``model.parameters[name].prior``).

    Parameters
    ----------
    model : Model
    names : sequence of str
        Parameters with a prior.
    n_members : int
    rng : numpy.random.Generator
        Seeded identically on every rank (the draws are then identical).
    prior_units : mapping, optional
        Units in which a prior is written (as in YAML), converted to the parameter's internal units; default: the
        internal units.

    Returns
    -------
    dict
        Physical values in internal units: scalars of shape ``(n_members,)``, fields of shape
        ``(n_members, *grid.shape[::-1])`` (whole fields, natural C order).
    """
    prior_units = dict(prior_units or {})
    out = {}
    for name in names:
        param = _parameter(model, name)
        if param.prior is None:
            raise AssimilationError(f"ES-MDA: parameter '{name}' of model '{model.name}' has no prior to draw from")
        scale = convert(1.0, prior_units.get(name, param.units), param.units)
        draw = sample_prior(param.prior, rng, model.grid if param.is_field else None, size=int(n_members))
        out[name] = np.asarray(draw, dtype=float) * scale
    return out


@dataclass
class CalibrationResult:
    """Posterior ensemble of an ES-MDA calibration.

    Attributes
    ----------
    parameters : dict
        Physical values (internal units) of each member: scalars ``(N,)``, fields ``(N, *grid.shape[::-1])`` (whole
        fields, natural C order, on every rank).
    misfit : list of float
        ``mean_j |R^-1/2 (y - g(m_j))|^2 / n_obs`` before each iteration and after the last.
    forward_runs : int
        Model runs spent.
    """

    parameters: dict[str, np.ndarray]
    misfit: list[float] = field(default_factory=list)
    forward_runs: int = 0

    def quantiles(self, name: str, q: Sequence[float]) -> np.ndarray:
        """Member quantiles of a parameter, shape ``(len(q), ...)``."""
        return np.quantile(self.parameters[name], np.asarray(q, dtype=float), axis=0)


def _parameter(model: Model, name: str):
    if name not in model.parameters:
        raise AssimilationError(f"ES-MDA: model '{model.name}' has no parameter '{name}'; known: "
                                f"{sorted(model.parameters)}")
    return model.parameters[name]


class _Layout:
    """Rows of the control block on this rank: owned block of each field, then every scalar."""

    def __init__(self, model: Model, names: Sequence[str], transforms: Mapping[str, str] | None):
        self.model = model
        self.rows: dict[str, tuple[int, int]] = {}
        self.transforms: dict[str, str] = {}
        self.fields = [n for n in names if _parameter(model, n).is_field]
        self.scalars = [n for n in names if not _parameter(model, n).is_field]
        n_local = int(np.prod(model.grid.local_shape)) if self.fields else 0
        off = 0
        for name in self.fields + self.scalars:
            size = n_local if name in self.fields else 1
            self.rows[name] = (off, off + size)
            off += size
            self.transforms[name] = (transforms or {}).get(name, _parameter(model, name).transform)
        self.size = off

    def pack(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Physical member values -> control block ``(size, N)``."""
        grid = self.model.grid
        cols = None
        blocks = []
        for name in self.fields + self.scalars:
            v = np.asarray(values[name], dtype=float)
            if name in self.fields:
                v = v[(slice(None),) + grid.owned_slices].reshape(v.shape[0], -1).T
            else:
                v = v.reshape(1, -1)
            if cols is not None and v.shape[1] != cols:
                raise AssimilationError(f"ES-MDA: parameter '{name}' has {v.shape[1]} members, others {cols}")
            cols = v.shape[1]
            blocks.append(forward(v, self.transforms[name], f"ES-MDA prior of '{name}'"))
        return np.vstack(blocks)

    def local_context(self, locations: np.ndarray):
        """The localisation context of this block (:class:`twin.assimilation.letkf.LocalContext`): each field entry
        at its grid point (natural order), scalars at none; ``locations`` the positions of the data."""
        from twin.assimilation.letkf import Geometry, LocalContext

        grid = self.model.grid
        index = np.full(self.size, -1)
        if self.fields:
            owned = np.arange(grid.size).reshape(grid.shape[::-1])[grid.owned_slices].ravel()
            for name in self.fields:
                lo, hi = self.rows[name]
                index[lo:hi] = owned
        return LocalContext(index, Geometry.from_grid(grid), locations)

    def set_member(self, M: np.ndarray, j: int) -> None:
        """Put member ``j`` of the control block into the model."""
        for name, (lo, hi) in self.rows.items():
            value = inverse(M[lo:hi, j], self.transforms[name], name)
            self.model.set_parameter(name, value if name in self.fields else float(value[0]))

    def unpack(self, M: np.ndarray) -> dict[str, np.ndarray]:
        """Control block -> physical values: fields gathered whole on every rank (collective)."""
        grid = self.model.grid
        out = {}
        vec = grid.create_global() if self.fields else None
        for name in self.fields:
            lo, hi = self.rows[name]
            phys = inverse(M[lo:hi], self.transforms[name], name)
            members = []
            for j in range(M.shape[1]):
                vec.getArray()[...] = phys[:, j]
                members.append(grid.allgather(vec))
            out[name] = np.array(members)
        for name in self.scalars:
            lo, _ = self.rows[name]
            out[name] = inverse(M[lo], self.transforms[name], name)
        if vec is not None:
            vec.destroy()
        return out


def predict(model: Model, t0: float, observations: Sequence[Observation]) -> np.ndarray:
    """Run the model from its initial state at ``t0`` through the observation times; the stacked ``H_k(x(t_k))``
    (observations in time order, every rank). Collective."""
    x = model.initial_state()
    t, out = float(t0), []
    try:
        for ob in observations:
            if ob.time > t:
                model.advance(x, t, ob.time)
                t = ob.time
            out.append(ob.operator.apply(x))
    finally:
        x.destroy()
    return np.concatenate(out)


def esmda_calibrate(model: Model, t0: float, observations: Sequence[Observation], prior: Mapping[str, np.ndarray],
                    alphas: Sequence[float], rng: np.random.Generator,
                    transforms: Mapping[str, str] | None = None, radius: float | None = None,
                    parameter_rtps: float = 0.0) -> CalibrationResult:
    """Calibrate parameters of ``model`` by ES-MDA from observations of one run starting at ``t0``.

    Parameters
    ----------
    model : Model
        Any model honouring the contract; its parameter values are restored on return.
    t0 : float
        Start of the run (model time units); the initial state is ``model.initial_state()``.
    observations : sequence of Observation
        At times ``>= t0``; values the same on every rank.
    prior : mapping
        Prior ensemble in physical units (e.g. from :func:`draw_prior`): name -> ``(N,)`` or ``(N, *shape_c)``.
    alphas : sequence of float
        ES-MDA coefficients (``sum 1/alpha = 1``).
    rng : numpy.random.Generator
        Seeded identically on every rank (data perturbations).
    transforms : mapping, optional
        Transform per parameter; default the parameter's own (``log`` for a log-normal or log-Gaussian-field prior).
    radius : float, optional
        Localise the update (Gaspari-Cohn half-width in the grid's length units,
        :func:`twin.assimilation.esmda.esmda_local_update`); the observation operators must give their data's
        positions.
    parameter_rtps : float
        Relaxation of the scalar parameters' spread after each update (``inflation.parameter_rtps`` of
        :class:`twin.assimilation.esmda.ESMDA`), in [0, 1].

    Returns
    -------
    CalibrationResult

    Raises
    ------
    AssimilationError
        For unknown parameters, observations before ``t0``, inconsistent ensembles, or a member whose run diverges
        (naming the member, the iteration and the solver's error).
    """
    obs = sorted(observations, key=lambda o: o.time)
    if not obs:
        raise AssimilationError("ES-MDA: no observations to calibrate against")
    if obs[0].time < t0:
        raise AssimilationError(f"ES-MDA: observation '{obs[0].operator.name}' at t={obs[0].time:g} lies before the "
                                f"start of the run t0={t0:g}")
    layout = _Layout(model, list(prior), transforms)
    M0 = layout.pack(prior)
    method = ESMDA(M0.shape[1], tuple(alphas), name="esmda calibration", radius=radius,
                   inflation=Inflation(parameter_rtps=parameter_rtps))
    y = np.concatenate([ob.values for ob in obs])
    r = np.concatenate([ob.operator.error_std for ob in obs])
    local = None
    if radius is not None:
        where = [ob.operator.locations for ob in obs]
        if any(w is None for w in where):
            raise AssimilationError("ES-MDA: a localised calibration needs the positions of the data; observation "
                                    f"operator '{obs[[w is None for w in where].index(True)].operator.name}' has none")
        local = layout.local_context(np.concatenate([np.atleast_2d(w) for w in where]))
    saved = {n: (p.value.copy() if p.is_field else p.value) for n, p in model.parameters.items() if n in layout.rows}
    calls = [0]

    def forward_map(M: np.ndarray) -> np.ndarray:
        Y = np.empty((y.size, M.shape[1]))
        for j in range(M.shape[1]):
            layout.set_member(M, j)
            try:
                Y[:, j] = predict(model, t0, obs)
            except SolverError as exc:
                raise AssimilationError(f"ES-MDA: member {j} diverged in forward run {calls[0] + 1} "
                                        f"({exc})") from exc
        calls[0] += 1
        log.info("ES-MDA %s: forward pass %d of %d done", model.name, calls[0], len(method.alphas) + 1)
        return Y

    try:
        result = method.run(M0, forward_map, y, r, rng, local)
    finally:
        for name, value in saved.items():
            model.set_parameter(name, value)
            if not np.isscalar(value):
                value.destroy()
    return CalibrationResult(layout.unpack(result.ensemble), result.misfit, calls[0] * M0.shape[1])
