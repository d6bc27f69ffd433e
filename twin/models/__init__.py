"""Model types. Importing this package registers the built-in models (see :mod:`twin.models.registry`)."""

from twin.models import heat, linear, lorenz96, shallow_water, structure, tumour  # noqa: F401  (registration by import)
