"""The model contract (:mod:`.base`), priors (:mod:`.priors`) and the model registry (:mod:`.registry`). The models
themselves live in the twin kinds (``twin/kinds/<kind>/``), found through entry points (:mod:`twin.core.kinds`)."""
