"""The ``experiments:`` section of a campaign: a matrix of settings that expands one campaign into several experiments,
and how the campaign workflow treats failing tasks.

Example::

    experiments:
      matrix:                                  # dotted key path -> list of values; the Cartesian product is run
        assimilation.inflation: [1.0, 1.05]
        campaign.seed: [1, 2]
      retries: 1                               # a failed task is run again this many times
      on_member_failure: drop                  # drop the member and continue, or stop the experiment
      min_members: 2                           # an experiment with fewer live members stops
      task_timeout: 600                        # seconds; a task running longer fails (never hangs)
      truth: {draw: [k, D_white]}              # twin experiments: each experiment draws these true parameter
                                               # values from their priors with its campaign.seed (one synthetic
                                               # patient per seed); kept in every experiment's experiment.yaml
      replicates: 20                           # repeat every experiment over 20 independent truths (campaign.seed,
                                               # seed+1, ...; every estimable parameter drawn from its prior unless
                                               # truth.draw says which): the report measures calibration over them

Each expanded experiment is a complete campaign, validated like a campaign file (a misspelled path in the matrix is an
error naming the experiment and the key). Experiment names are made from the varied keys and values
(:mod:`twin.campaign.experiments`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from twin.config.common import Strict

#: A dotted key path: names and list indices separated by dots (``observations.0.error_std``).
DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.([A-Za-z_][A-Za-z0-9_-]*|\d+))*$")

#: Sections a matrix may not vary: the schema version, and the matrix itself.
FORBIDDEN_ROOTS = ("schema_version", "experiments")

#: A matrix value: a scalar, or a list or mapping that replaces a whole section (e.g. ``observations.points``).
MatrixValue = Union[bool, int, float, str, list, dict]


class TruthSpec(Strict):
    """The truth of a twin experiment: ``draw`` lists estimable parameters whose true values are drawn from their
    priors (fields such as ``k(x)`` from their Gaussian-field prior) instead of taken from ``value``; the draw
    depends only on ``campaign.seed``, so experiments that differ only in the method see the same truth.
    ``initial_std`` does the same for the nature run's initial state."""

    draw: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    #: draw every estimable parameter that has a prior (what ``replicates`` sets when ``draw`` is not given)
    estimable: bool = False
    #: the nature run starts from the configured initial state plus white noise of this standard deviation (every
    #: state entry, the state's units; random stream TRUTH), the same for every method: experiments that differ
    #: only in the method (and share ``assimilation.seed``, which seeds the synthetic observations too) twin one
    #: system. Unset: an ensemble method adds noise of its ``background_std`` (the distribution its members are
    #: drawn from); 4D-Var draws it from its background covariance (its background is the configured state)
    initial_std: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("draw")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"truth.draw lists a parameter twice: {v}")
        return v


class ExperimentsConfig(Strict):
    """Matrix of settings and the failure policy of a campaign workflow.

    Attributes
    ----------
    matrix : dict of str to list
        ``{dotted.key.path: [values]}``; the experiments are the Cartesian product of the lists, in the order given.
    retries : int
        How many times a failed task (member forecast, analysis) is run again before the policy applies.
    on_member_failure : {"drop", "stop"}
        ``drop``: a member whose forecast keeps failing is removed from the ensemble (named in the log and in
        ``twin status``) and the experiment continues; ``stop``: the experiment stops at that cycle (the others go on).
    min_members : int
        An experiment whose live members fall below this number stops (an ensemble analysis needs at least 2).
    task_timeout : float, optional
        Wall-clock limit of one task in seconds; a task that exceeds it fails (and is retried).
    truth : TruthSpec, optional
        Parameters whose true values each experiment draws from their priors (twin experiments, e.g. a cohort of
        synthetic patients over ``campaign.seed``); see :func:`twin.campaign.experiments.draw_truth`.
    replicates : int
        Repeat every experiment of the matrix over this many independent truths: the matrix gains
        ``campaign.seed: [seed, seed + 1, ...]`` (so it must not vary ``campaign.seed`` itself) and, unless ``truth``
        says otherwise, every estimable parameter's truth is drawn from its prior. ``twin report`` then summarises
        calibration over the replicates (coverage of the truth, rank histograms, CRPS, spread/skill).
    """

    matrix: dict[str, Annotated[list[MatrixValue], Field(min_length=1, max_length=1000)]] = Field(
        default_factory=dict)
    retries: int = Field(default=1, ge=0, le=20)
    on_member_failure: Literal["drop", "stop"] = "drop"
    min_members: int = Field(default=2, ge=2)
    task_timeout: float | None = Field(default=None, gt=0)
    truth: TruthSpec | None = None
    replicates: int = Field(default=1, ge=1, le=1000)

    @field_validator("matrix")
    @classmethod
    def _paths(cls, v: dict[str, list]) -> dict[str, list]:
        total = 1
        for key, values in v.items():
            if not DOTTED.match(key):
                raise ValueError(f"matrix key {key!r} is not a dotted key path such as 'assimilation.inflation' or "
                                 "'observations.0.error_std'")
            if key.split(".")[0] in FORBIDDEN_ROOTS:
                raise ValueError(f"matrix key {key!r}: '{key.split('.')[0]}' cannot be varied by a matrix")
            if len({repr(x) for x in values}) != len(values):
                raise ValueError(f"matrix key {key!r} lists a value twice: {values}")
            total *= len(values)
        keys = list(v)
        for a in keys:
            for b in keys:
                if a != b and b.startswith(a + "."):
                    raise ValueError(f"matrix keys {a!r} and {b!r} overlap: vary one or the other")
        if total > 10_000:
            raise ValueError(f"the matrix expands to {total} experiments; at most 10000 are allowed")
        return v

    @model_validator(mode="after")
    def _replicates(self):
        if self.replicates > 1 and "campaign.seed" in self.matrix:
            raise ValueError("replicates: the matrix varies campaign.seed already; the replicates are seeds: give "
                             "one or the other")
        total = self.replicates
        for values in self.matrix.values():
            total *= len(values)
        if total > 10_000:
            raise ValueError(f"replicates x matrix expand to {total} experiments; at most 10000 are allowed")
        return self

    def full_matrix(self, seed: int) -> dict[str, list]:
        """The matrix with the replicates as its first axis, ``campaign.seed: [seed, seed + 1, ...]``."""
        if self.replicates == 1:
            return dict(self.matrix)
        return {"campaign.seed": [int(seed) + r for r in range(self.replicates)], **self.matrix}
