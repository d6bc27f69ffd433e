"""The control vector of variational assimilation: initial-state and parameter controls in whitened variables.

A control vector ``c`` is one parallel PETSc vector on the model's communicator holding, on each rank, in order:

1. ``v``, the state control (``x0 = xb + B^{1/2} v``), the rank's owned block of the state layout (when ``B`` given);
2. ``w_f`` for each field parameter (``T(p_f) = T(pb_f) + Bp_f^{1/2} w_f``), the owned block of the field;
3. ``w_s`` for the scalar parameters (``T(p_s) = T(pb_s) + sigma_s w_s``), all on rank 0 (so that inner products
   count each entry once).

``T`` is the parameter's transform (``none``, ``log``, ``logit``; :mod:`twin.assimilation.transforms`), ``pb`` the
prior mean and ``sigma``/``Bp`` the prior standard deviation/covariance in transformed space. :meth:`to_natural`
and :meth:`from_natural` map a control vector to and from one array in a rank-independent order (natural grid order),
so results and random draws do not depend on the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.assimilation.covariance import CovarianceOperator, squared_exponential
from twin.assimilation.transforms import TRANSFORMS, forward, inverse
from twin.core.errors import AssimilationError, SolverError
from twin.models.base import Model


@dataclass
class ParameterControl:
    """An estimable model parameter as a 4D-Var control.

    Attributes
    ----------
    name : str
        The model parameter's name.
    std : float, optional
        Prior standard deviation of a scalar in transformed space; default from the parameter's prior (``normal``:
        ``std``; ``lognormal``: ``sigma``; ``uniform``: ``(high - low) / sqrt(12)``).
    covariance : CovarianceOperator, optional
        Prior covariance of a field parameter in transformed space; default from a ``gaussian_field`` prior (its
        squared-exponential covariance of the prior's ``std`` and ``length_scale``, as a diffusion operator:
        :func:`twin.assimilation.covariance.squared_exponential`).
    transform : {"none", "log", "logit"}, optional
        Default: ``log`` for a log-normal or log-Gaussian-field prior, else the model parameter's transform.
    background : float or PETSc.Vec, optional
        Prior mean ``pb`` (physical units); default from the prior (mean, median, centre), else the current value.
    bounds : (float, float), optional
        Physical bounds of a scalar; the minimiser then uses a bound-constrained method (TAO BLMVM).
    """

    name: str
    std: float | None = None
    covariance: CovarianceOperator | None = None
    transform: str | None = None
    background: Any = None
    bounds: tuple[float, float] | None = None


def _derivative(theta: np.ndarray, transform: str) -> np.ndarray:
    """``d theta / d eta`` of ``theta = T^{-1}(eta)``."""
    if transform == "log":
        return theta
    if transform == "logit":
        return theta * (1.0 - theta)
    return np.ones_like(theta)


class _Field:
    def __init__(self, name, transform, cov, eta_b, offset, size):
        self.name, self.transform, self.cov, self.eta_b = name, transform, cov, eta_b
        self.offset, self.size = offset, size


class ControlSpace:
    """Layout of the control vector and the maps between controls and model inputs (see the module docstring).

    Parameters
    ----------
    model : Model
    B : CovarianceOperator or None
        Background covariance of the initial state (``None``: the state is not a control).
    parameters : sequence of ParameterControl
    name : str
        Used in messages and option prefixes.
    """

    def __init__(self, model: Model, B: CovarianceOperator | None, parameters: Sequence[ParameterControl],
                 name: str = "fourdvar"):
        self.model = model
        self.B = B
        self.name = name
        self.comm = model.grid.da.getComm()
        self.rank = self.comm.getRank()
        names = [p.name for p in parameters]
        if len(set(names)) != len(names):
            raise AssimilationError(f"{name}: parameter controls listed twice: {names}")
        probe = model.create_state()
        self.n_state = probe.getLocalSize() if B is not None else 0
        self.n_state_global = probe.getSize() if B is not None else 0
        probe.destroy()
        self.fields: list[_Field] = []
        self.scalars: list[tuple[str, str, float, float, tuple[float, float] | None]] = []
        self._owned_covs: list[CovarianceOperator] = []
        offset = self.n_state
        for pc in parameters:
            if pc.name not in model.parameters:
                raise AssimilationError(f"{name}: model '{model.name}' has no parameter '{pc.name}'; known: "
                                        f"{sorted(model.parameters)}")
            param = model.parameters[pc.name]
            prior = param.prior
            transform = pc.transform or ("log" if getattr(prior, "dist", None) == "lognormal"
                                         or (getattr(prior, "dist", None) == "gaussian_field" and prior.log)
                                         else param.transform)
            if transform not in TRANSFORMS:
                raise AssimilationError(f"{name}: parameter '{pc.name}': unknown transform {transform!r}; known: "
                                        f"{list(TRANSFORMS)}")
            if param.is_field:
                field = self._field_control(pc, param, transform, offset)
                self.fields.append(field)
                offset += field.size
            else:
                self.scalars.append(self._scalar_control(pc, param, transform))
        self.n_scalar = len(self.scalars)
        self.local_size = offset + (self.n_scalar if self.rank == 0 else 0)
        self.parameter_names = [f.name for f in self.fields] + [s[0] for s in self.scalars]

    # -- construction --------------------------------------------------------------------------------------------------
    def _scalar_control(self, pc: ParameterControl, param, transform: str):
        prior = param.prior
        dist = getattr(prior, "dist", None)
        std, mean, bounds = pc.std, pc.background, pc.bounds
        if dist == "normal":
            if transform != "none" and std is None:
                raise AssimilationError(f"{self.name}: parameter '{pc.name}' has a normal prior but is controlled in "
                                        f"{transform} space: give a lognormal prior or ParameterControl(std=...)")
            std = prior.std if std is None else std
            mean = prior.mean if mean is None else mean
        elif dist == "lognormal":
            if transform != "log" and std is None:
                raise AssimilationError(f"{self.name}: parameter '{pc.name}' has a lognormal prior: control it in log "
                                        "space (transform='log') or give ParameterControl(std=...)")
            std = prior.sigma if std is None else std
            mean = prior.median if mean is None else mean
        elif dist == "uniform":
            std = (prior.high - prior.low) / np.sqrt(12.0) if std is None else std
            mean = 0.5 * (prior.low + prior.high) if mean is None else mean
            bounds = (prior.low, prior.high) if bounds is None else bounds
        if std is None:
            raise AssimilationError(f"{self.name}: parameter '{pc.name}' needs a prior standard deviation: give it a "
                                    "prior in the configuration or ParameterControl(std=...)")
        if not (np.isfinite(std) and std > 0):
            raise AssimilationError(f"{self.name}: parameter '{pc.name}': prior std must be positive and finite, "
                                    f"got {std}")
        mean = float(param.value if mean is None else mean)
        eta_b = float(forward(mean, transform, f"{self.name}: parameter '{pc.name}' background"))
        if bounds is not None:
            lo, hi = (float(b) for b in bounds)
            if not hi > lo:
                raise AssimilationError(f"{self.name}: parameter '{pc.name}': bounds need high > low, got {bounds}")
            bounds = (lo, hi)
        return (pc.name, transform, float(std), eta_b, bounds)

    def _field_control(self, pc: ParameterControl, param, transform: str, offset: int) -> _Field:
        prior = param.prior
        if pc.bounds is not None:
            raise AssimilationError(f"{self.name}: bounds on the field parameter '{pc.name}' are not supported; "
                                    "use a log or logit transform to keep it in range")
        cov = pc.covariance
        if cov is None:
            if getattr(prior, "dist", None) != "gaussian_field":
                raise AssimilationError(f"{self.name}: field parameter '{pc.name}' needs a covariance: give a "
                                        "gaussian_field prior or ParameterControl(covariance=...)")
            if self.model.grid.dof != 1:
                raise AssimilationError(f"{self.name}: field parameter '{pc.name}' on a grid with dof > 1 needs an "
                                        "explicit ParameterControl(covariance=...)")
            # the prior's own squared-exponential covariance, approximated by diffusion (not order 1 with l = L)
            cov = squared_exponential(self.model.grid, prior.std, prior.length_scale,
                                      prefix=f"{self.name}_{pc.name}_", name=f"{self.name}:{pc.name}")
            self._owned_covs.append(cov)
        eta_b = cov.create_vec()
        if pc.background is not None:
            bg = pc.background
        elif getattr(prior, "dist", None) == "gaussian_field":
            bg = float(inverse(prior.mean, transform))
        else:
            bg = param.value
        if isinstance(bg, PETSc.Vec):
            eta_b.getArray()[...] = forward(bg.getArray(readonly=True), transform, f"parameter '{pc.name}'")
        else:
            eta_b.set(float(forward(float(bg), transform, f"parameter '{pc.name}'")))
        if eta_b.getLocalSize() != param.value.getLocalSize():
            raise AssimilationError(f"{self.name}: covariance of field '{pc.name}' has {eta_b.getSize()} entries, "
                                    f"the field {param.value.getSize()}")
        return _Field(pc.name, transform, cov, eta_b, offset, eta_b.getLocalSize())

    # -- vectors ----------------------------------------------------------------------------------------------------------
    def create_vec(self) -> PETSc.Vec:
        """A zero control vector (background state, prior-mean parameters)."""
        v = PETSc.Vec().createMPI((self.local_size, PETSc.DETERMINE), comm=self.comm)
        v.set(0.0)
        return v

    @property
    def size(self) -> int:
        return self.n_state_global + sum(f.eta_b.getSize() for f in self.fields) + self.n_scalar

    def get_state(self, c: PETSc.Vec, out: PETSc.Vec) -> None:
        """Copy the state control ``v`` into ``out`` (a state-shaped vector)."""
        out.getArray()[...] = c.getArray(readonly=True)[:self.n_state]

    def scalar_controls(self, c: PETSc.Vec) -> np.ndarray:
        """The scalar controls ``w_s`` on every rank. Collective."""
        local = c.getArray(readonly=True)[c.getLocalSize() - self.n_scalar:].copy() if self.rank == 0 else None
        return self.comm.tompi4py().bcast(local, root=0)

    def parameter_values(self, c: PETSc.Vec) -> dict[str, Any]:
        """Physical parameter values of ``c``: floats for scalars, new vectors for fields. Collective."""
        out: dict[str, Any] = {}
        arr = c.getArray(readonly=True)
        for f in self.fields:
            w = f.cov.create_vec()
            w.getArray()[...] = arr[f.offset:f.offset + f.size]
            eta = f.cov.create_vec()
            f.cov.sqrt_mult(w, eta)
            eta.axpy(1.0, f.eta_b)
            eta.getArray()[...] = inverse(eta.getArray(readonly=True), f.transform, f.name)
            out[f.name] = eta
            w.destroy()
        ws = self.scalar_controls(c)
        for (name, transform, std, eta_b, _), wi in zip(self.scalars, ws):
            out[name] = float(inverse(eta_b + std * wi, transform, name))
        for name, v in out.items():
            finite = np.all(np.isfinite(v.getArray(readonly=True))) if isinstance(v, PETSc.Vec) else np.isfinite(v)
            # every rank decides alike (a field is finite on some ranks' blocks and not on others')
            if not self.comm.tompi4py().allreduce(bool(finite), op=MPI.LAND):
                # exp() of a far trial point overflows: a point where the model cannot run, which the minimiser
                # must reject like a diverging one (twin.assimilation.tao), not an error of the campaign
                for w in out.values():
                    if isinstance(w, PETSc.Vec):
                        w.destroy()
                raise SolverError(name, float("nan"), "the control gives a non-finite parameter value (its "
                                  "transform overflows at this trial point)")
        return out

    def assemble_gradient(self, c: PETSc.Vec, lam: PETSc.Vec | None, dp: dict[str, Any], g: PETSc.Vec) -> None:
        """``g = c + (B^{T/2} lam, Bp^{T/2}(dT^-1 * dJ/dp_f), sigma dT^-1 * dJ/dp_s)``: the gradient in control space."""
        c.copy(g)
        garr = g.getArray()
        values = self.parameter_values(c)
        if self.B is not None and lam is not None:
            tmp = self.B.create_vec()
            self.B.sqrt_mult_transpose(lam, tmp)
            garr[:self.n_state] += tmp.getArray(readonly=True)
            tmp.destroy()
        for f in self.fields:
            theta = values[f.name]
            dfield = dp[f.name]
            chain = f.cov.create_vec()
            chain.getArray()[...] = (dfield.getArray(readonly=True)
                                     * _derivative(theta.getArray(readonly=True), f.transform))
            out = f.cov.create_vec()
            f.cov.sqrt_mult_transpose(chain, out)
            garr[f.offset:f.offset + f.size] += out.getArray(readonly=True)
            for v in (chain, out, theta):
                v.destroy()
        if self.rank == 0 and self.n_scalar:
            base = g.getLocalSize() - self.n_scalar
            for i, (name, transform, std, _, _) in enumerate(self.scalars):
                theta = np.asarray(values[name])
                garr[base + i] += std * float(_derivative(theta, transform)) * float(dp[name])

    def bounds(self) -> tuple[PETSc.Vec, PETSc.Vec] | None:
        """Lower and upper bounds of the controls for bound-constrained minimisation, or ``None`` if unbounded."""
        if not any(s[4] is not None for s in self.scalars):
            return None
        lo, hi = self.create_vec(), self.create_vec()
        lo.set(PETSc.NINFINITY)
        hi.set(PETSc.INFINITY)
        if self.rank == 0:
            base = lo.getLocalSize() - self.n_scalar
            la, ha = lo.getArray(), hi.getArray()
            for i, (name, transform, std, eta_b, b) in enumerate(self.scalars):
                if b is None:
                    continue
                for arr, value, inf in ((la, b[0], PETSc.NINFINITY), (ha, b[1], PETSc.INFINITY)):
                    inside = (transform == "none" or (transform == "log" and value > 0)
                              or (transform == "logit" and 0 < value < 1))
                    arr[base + i] = (float(forward(value, transform, name)) - eta_b) / std if inside else inf
        return lo, hi

    # -- rank-independent order -----------------------------------------------------------------------------------------
    def to_natural(self, c: PETSc.Vec) -> np.ndarray:
        """The whole control vector on every rank in a rank-independent order. Collective."""
        grid = self.model.grid
        parts = []
        arr = c.getArray(readonly=True)
        if self.B is not None:
            x = self.model.create_state()
            x.getArray()[...] = arr[:self.n_state]
            parts.append(grid.allgather(x).ravel())
            x.destroy()
        for f in self.fields:
            x = f.eta_b.duplicate()
            x.getArray()[...] = arr[f.offset:f.offset + f.size]
            parts.append(grid.allgather(x).ravel())
            x.destroy()
        parts.append(self.scalar_controls(c))
        return np.concatenate(parts)

    def from_natural(self, full: np.ndarray, c: PETSc.Vec) -> PETSc.Vec:
        """Fill ``c`` from a whole control array in the order of :meth:`to_natural` (same on every rank)."""
        full = np.asarray(full, dtype=float).ravel()
        if full.size != self.size:
            raise AssimilationError(f"{self.name}: control array has {full.size} entries, the control space "
                                    f"{self.size}")
        grid = self.model.grid
        arr = c.getArray()
        pos = 0
        if self.B is not None:
            x = self.model.create_state()
            grid.set_global(full[pos:pos + self.n_state_global], x)
            arr[:self.n_state] = x.getArray(readonly=True)
            pos += self.n_state_global
            x.destroy()
        for f in self.fields:
            x = f.eta_b.duplicate()
            n = x.getSize()
            grid.set_global(full[pos:pos + n], x)
            arr[f.offset:f.offset + f.size] = x.getArray(readonly=True)
            pos += n
            x.destroy()
        if self.rank == 0 and self.n_scalar:
            arr[c.getLocalSize() - self.n_scalar:] = full[pos:]
        return c

    def destroy(self) -> None:
        for f in self.fields:
            f.eta_b.destroy()
        for cov in self._owned_covs:
            cov.destroy()
