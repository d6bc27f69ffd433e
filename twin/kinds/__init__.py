"""The built-in twin kinds, one package each (tumour, shallow water, structure, heat, Lorenz-96, linear
advection-diffusion). They register through the entry-point group ``twin.kinds`` of twin's own ``pyproject.toml``,
exactly as a user's package does (:mod:`twin.core.kinds`, ``docs/kinds.md``); nothing in the general layers imports
them."""
