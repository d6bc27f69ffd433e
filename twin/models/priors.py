"""Sampling the priors of model parameters (the prior classes of :mod:`twin.config.common`).

Distributions
-------------
``normal``        X ~ N(mean, std^2)
``lognormal``     log X ~ N(log median, sigma^2)
``uniform``       X ~ U(low, high)
``gaussian_field`` a Gaussian random field on a grid with mean ``mean``, pointwise standard deviation ``std`` and
                  squared-exponential covariance ``cov(x, x') = std^2 exp(-|x - x'|^2 / (2 l^2))``, ``l =
                  length_scale`` in the grid's length units; with ``log: true`` the field is ``exp`` of that Gaussian
                  field (a positive field whose log has the stated mean and covariance).

Sampling a field: circulant embedding
-------------------------------------
The covariance matrix of a stationary field on a regular grid is block-Toeplitz; embedded in a periodic grid padded by
at least ``pad * l`` per axis (default 5 length scales, where the squared-exponential covariance has fallen to 4e-6),
it becomes block-circulant and is diagonalised by the FFT: ``C = F^-1 diag(lam) F`` with ``lam = FFT(first row)``.
Then ``x = Re(IFFT(sqrt(lam) FFT(xi)))`` with ``xi`` white noise has covariance ``C`` (``sqrt(C)`` is real symmetric);
the block of the original grid is returned. Tiny negative eigenvalues from round-off and truncation are set to zero.
This is hand-written because no dependency of twin offers grid GRF sampling; its covariance is checked in
``tests/unit/test_priors.py``.

Parallel use
------------
Every function here is deterministic given the state of ``rng`` (a ``numpy.random.Generator``) and uses no MPI: ranks
that call it with generators in the same state get bit-identical whole fields (natural C order, shape
``grid.shape[::-1]``) and consume the same number of draws, so their generators stay in step. The ensemble engine
draws member ``m``'s parameters from ``numpy.random.default_rng([seed, m])`` on every rank of the member's
communicator and copies its owned block with :func:`fill_vec`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.core.errors import ModelError


def _fft_shape(n: int) -> int:
    """The next size >= n with factors 2, 3 and 5 only (fast FFT sizes)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def gaussian_field(rng: np.random.Generator, shape_c: tuple[int, ...], spacing_c: tuple[float, ...],
                   std: float, length_scale: float, size: int | None = None, pad: float = 5.0) -> np.ndarray:
    """Zero-mean stationary Gaussian field(s) with squared-exponential covariance by circulant embedding.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape_c : tuple of int
        Field shape in C order (``(ny, nx)`` or ``(nz, ny, nx)``; 1-D allowed).
    spacing_c : tuple of float
        Grid spacing per axis, C order, in the units of ``length_scale``.
    std, length_scale : float
        Pointwise standard deviation and correlation length.
    size : int, optional
        Number of independent fields; when given, the result has a leading axis of that length.
    pad : float
        Padding of the periodic embedding, in length scales.

    Returns
    -------
    ndarray
        Shape ``shape_c`` (or ``(size, *shape_c)``).
    """
    shape_c = tuple(int(n) for n in shape_c)
    spacing_c = tuple(float(h) for h in spacing_c)
    big = tuple(_fft_shape(n + int(np.ceil(pad * length_scale / h))) for n, h in zip(shape_c, spacing_c))
    # First row of the circulant matrix: covariance at periodic distances on the embedding torus.
    r2 = np.zeros(big)
    for axis, (m, h) in enumerate(zip(big, spacing_c)):
        i = np.arange(m)
        d = np.minimum(i, m - i) * h
        r2 = r2 + (d * d).reshape([-1 if a == axis else 1 for a in range(len(big))])
    first = std * std * np.exp(-0.5 * r2 / (length_scale * length_scale))
    lam = np.fft.rfftn(first).real
    np.maximum(lam, 0.0, out=lam)
    root = np.sqrt(lam)
    n_fields = 1 if size is None else int(size)
    crop = tuple(slice(0, n) for n in shape_c)
    out = np.empty((n_fields, *shape_c))
    for m in range(n_fields):
        xi = rng.standard_normal(big)
        out[m] = np.fft.irfftn(root * np.fft.rfftn(xi), s=big)[crop]
    return out[0] if size is None else out


def sample_prior(prior: Any, rng: np.random.Generator, grid=None, size: int | None = None):
    """Draw from a prior of :mod:`twin.config.common`.

    Parameters
    ----------
    prior : NormalPrior, LogNormalPrior, UniformPrior or GaussianFieldPrior
        The typed prior (``ParameterSpec.prior``).
    rng : numpy.random.Generator
        Source of randomness; see the module docstring for the parallel contract.
    grid : twin.core.grid.Grid, optional
        Required for ``gaussian_field``: the field lives on its cells (lengths in the grid's units).
    size : int, optional
        Number of independent draws; ``None`` for one.

    Returns
    -------
    float or ndarray
        Scalars: a float (``size=None``) or an array of ``size`` floats. Fields: the whole field in natural C order,
        shape ``grid.shape[::-1]`` (or ``(size, *grid.shape[::-1])``).

    Raises
    ------
    ModelError
        For a field prior without a grid, or an unknown distribution.
    """
    dist = getattr(prior, "dist", None)
    if dist == "normal":
        return _scalar(rng.normal(prior.mean, prior.std, size=size), size)
    if dist == "lognormal":
        return _scalar(np.exp(rng.normal(np.log(prior.median), prior.sigma, size=size)), size)
    if dist == "uniform":
        return _scalar(rng.uniform(prior.low, prior.high, size=size), size)
    if dist == "gaussian_field":
        if grid is None:
            raise ModelError("priors", "a gaussian_field prior needs the grid the field lives on")
        field = prior.mean + gaussian_field(rng, tuple(grid.shape[::-1]), tuple(grid.spacing[::-1]), prior.std,
                                            prior.length_scale, size=size)
        return np.exp(field) if prior.log else field
    raise ModelError("priors", f"cannot sample a prior of kind {dist!r}")


def _scalar(x, size):
    return float(x) if size is None else np.asarray(x, dtype=float)


def prior_center(prior: Any) -> float:
    """A central value of a prior: the mean (normal), median (lognormal, and ``exp(mean)`` of a log field), midpoint."""
    dist = prior.dist
    if dist == "normal":
        return float(prior.mean)
    if dist == "lognormal":
        return float(prior.median)
    if dist == "uniform":
        return 0.5 * (prior.low + prior.high)
    if dist == "gaussian_field":
        return float(np.exp(prior.mean)) if prior.log else float(prior.mean)
    raise ModelError("priors", f"unknown prior kind {dist!r}")


def prior_transform(prior: Any) -> str:
    """The space in which assimilation should update a parameter with this prior (``"log"`` or ``"none"``)."""
    if prior is None:
        return "none"
    if prior.dist == "lognormal" or (prior.dist == "gaussian_field" and prior.log):
        return "log"
    return "none"


def fill_vec(grid, field: np.ndarray, vec=None):
    """Copy this rank's block of a whole field (natural C order, known on every rank) into a global vector."""
    vec = vec if vec is not None else grid.create_global()
    return grid.set_global(np.asarray(field, dtype=float), vec)
